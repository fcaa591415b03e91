"""Causal tracing (sfc_core.tracing) against hand-written patched runs on a tiny TransformerLens model."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sfc_core.errors import InputError
from tests.tiny import tiny_model


def equal_batch(n: int = 3, length: int = 6, d_vocab: int = 23, seed: int = 1):
    """``n`` pairs of ``length`` tokens (BOS 0 first), corrupted = clean with position 3 changed (and 4 in row 1)."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(1, d_vocab, (n, length), generator=g)
    clean[:, 0] = 0
    corr = clean.clone()
    corr[:, 3] = (clean[:, 3] + 5) % (d_vocab - 1) + 1
    corr[1, 4] = (clean[1, 4] + 2) % (d_vocab - 1) + 1
    return SimpleNamespace(clean_tokens=clean, corrupted_tokens=corr, last_pos=torch.full((n,), length - 1),
                           answer_ids=torch.tensor([1, 2, 3][:n]), wrong_ids=torch.tensor([4, 5, 6][:n]),
                           valid_mask=torch.ones(n, length, dtype=torch.bool), n=n, pos=length, warnings=[])


def hand_patched(model, batch, hook, row, pos, direction):
    """One pair, one patch, TransformerLens run_with_hooks: the patched logit difference."""
    src_tokens, dst_tokens = ((batch.clean_tokens, batch.corrupted_tokens) if direction == "denoise"
                              else (batch.corrupted_tokens, batch.clean_tokens))
    _, cache = model.run_with_cache(src_tokens[row:row + 1])

    def put(act, hook):
        act = act.clone()
        act[0, pos] = cache[hook.name][0, pos]
        return act

    logits = model.run_with_hooks(dst_tokens[row:row + 1], fwd_hooks=[(hook, put)])
    last = int(batch.last_pos[row])
    return float(logits[0, last, batch.answer_ids[row]] - logits[0, last, batch.wrong_ids[row]])


def metric(model, tokens, batch, row):
    logits = model(tokens[row:row + 1])
    last = int(batch.last_pos[row])
    return float(logits[0, last, batch.answer_ids[row]] - logits[0, last, batch.wrong_ids[row]])


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_trace_equals_hand_written_patches(direction):
    from sfc_core.tracing import SITES, causal_trace

    model = tiny_model(n_layers=3)
    batch = equal_batch()
    res = causal_trace(model, batch, direction=direction, chunk=5)  # chunk 5: copies of several pairs per pass
    assert res.layers == [0, 1, 2] and res.patched["resid_pre"].shape == (3, 3, 6)
    for site, template in SITES.items():
        for L in range(3):
            for r in range(3):
                for p in range(6):
                    want = hand_patched(model, batch, template.format(L=L), r, p, direction)
                    assert res.patched[site][r, L, p].item() == pytest.approx(want, abs=1e-9), (site, L, r, p)
    m_clean = np.array([metric(model, batch.clean_tokens, batch, r) for r in range(3)])
    m_corr = np.array([metric(model, batch.corrupted_tokens, batch, r) for r in range(3)])
    np.testing.assert_allclose(res.m_clean.numpy(), m_clean, atol=1e-9)
    # Normalisation of the means; per pair by each pair's own metrics.
    mean = res.patched["mlp_out"].double().mean(0).numpy()
    if direction == "denoise":
        want = (mean - m_corr.mean()) / (m_clean.mean() - m_corr.mean())
        want_pp = (res.patched["mlp_out"].double().numpy() - m_corr[:, None, None]) / (m_clean - m_corr)[:, None, None]
    else:
        want = (m_clean.mean() - mean) / (m_clean.mean() - m_corr.mean())
        want_pp = (m_clean[:, None, None] - res.patched["mlp_out"].double().numpy()) / (m_clean - m_corr)[:, None, None]
    np.testing.assert_allclose(res.normalised("mlp_out"), want, atol=1e-5)
    np.testing.assert_allclose(res.per_pair("mlp_out"), want_pp, atol=1e-5)
    # Positions before the
    # first difference are identical activations: normalised exactly 0 there.
    assert np.all(res.normalised("resid_pre")[:, :3] == 0)
    # resid_pre at layer 0, the only differing position of rows 0 and 2, restores their metric fully.
    pp = res.per_pair("resid_pre")
    assert pp[0, 0, 3] == pytest.approx(1.0, abs=1e-4) and pp[2, 0, 3] == pytest.approx(1.0, abs=1e-4)


def test_trace_figure_and_dict():
    from sfc_core.tracing import causal_trace, heatmap

    model = tiny_model(n_layers=2)
    res = causal_trace(model, equal_batch(), sites=["attn_out"], layers=[1])
    fig = heatmap(res, "attn_out")
    assert fig.data[0].z.shape == (1, 6) and len(fig.data[0].x) == 6
    assert "per pair" in fig.data[0].text[0][4]
    doc = res.to_dict()
    assert doc["sites"]["attn_out"]["hook"] == "blocks.{L}.hook_attn_out"
    assert len(doc["sites"]["attn_out"]["per_pair"]) == 3
    with pytest.raises(InputError, match="not traced"):
        heatmap(res, "mlp_out")


def test_trace_bad_inputs():
    from sfc_core.tracing import causal_trace

    model = tiny_model(n_layers=2)
    batch = equal_batch()
    with pytest.raises(InputError, match="layer 5 does not exist"):
        causal_trace(model, batch, layers=[5])
    with pytest.raises(InputError, match="unknown site kind"):
        causal_trace(model, batch, sites=["resid_post"])
    with pytest.raises(InputError, match="direction"):
        causal_trace(model, batch, direction="sideways")
    uneven = equal_batch()
    uneven.last_pos = torch.tensor([5, 4, 5])  # two token lengths: two template groups
    with pytest.raises(InputError, match="one template and token length") as exc:
        causal_trace(model, uneven)
    assert exc.value.fix == ("template_group", "largest")
    empty = equal_batch()
    empty.last_pos = torch.zeros(0, dtype=torch.long)
    with pytest.raises(InputError, match="no prompt pairs"):
        causal_trace(model, empty)
