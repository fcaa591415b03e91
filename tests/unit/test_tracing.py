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
    cells = fig.data[1]  # transparent markers: Streamlit's on_select gets points from them, not from the heatmap
    assert cells.type == "scatter" and len(cells.x) == 6 and cells.y[0] == "L1" and cells.text[4] == fig.data[0].text[0][4]
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


# ----------------------------------------------------------------------------- CLI: sfc trace
@pytest.fixture
def tiny_internals(monkeypatch):
    """``sfc trace`` / ``lens`` / ``heads`` on a 2-layer model with a tiny byte-level BPE tokenizer."""
    from sfc_core import cli
    from tests.tiny import tiny_bpe_model

    model = tiny_bpe_model(n_layers=2).eval()
    monkeypatch.setattr(cli, "_internals_model", lambda name: model)
    return model


def write_pairs(tmp_path, records) -> str:
    import json

    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


PAIRS = [{"clean": "When John talked to", "corrupted": "When Mary talked to", "answer": " the", "wrong_answer": " Mary"},
         {"clean": "When Mary talked to", "corrupted": "When John talked to", "answer": " Mary", "wrong_answer": " the"}]


def cli_run(*args):
    from typer.testing import CliRunner

    from sfc_core.cli import app

    return CliRunner().invoke(app, list(args))


def test_cli_trace_writes_json(tiny_internals, tmp_path):
    import json

    out = tmp_path / "t.json"
    r = cli_run("trace", "--pairs", write_pairs(tmp_path, PAIRS), "--direction", "both", "--out", str(out))
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    n_tok = len(doc["denoise"]["tokens"])
    assert doc["schema"] == "sfc-trace/1" and doc["noise"]["normalisation"] == "(m_clean - m) / (m_clean - m_corr)"
    assert len(doc["denoise"]["sites"]["mlp_out"]["normalised"]) == 2
    assert len(doc["denoise"]["sites"]["mlp_out"]["normalised"][0]) == n_tok
    assert len(doc["denoise"]["sites"]["resid_pre"]["per_pair"]) == 2


@pytest.mark.parametrize("args,message", [
    (["--layers", "2"], "error: layer 2 does not exist: the model has layers 0 to 1"),
    (["--sites", "resid_post"], "error: unknown site kind 'resid_post'; choose from resid_pre, attn_out, mlp_out"),
    (["--chunk", "0"], "error: --chunk must be between 1 and 4096"),
    (["--direction", "up"], ("error: the patching direction is 'denoise' (clean into corrupted) or 'noise' "
                             "(corrupted into clean), not 'up'")),
])
def test_cli_trace_bad_options_exit_2(tiny_internals, tmp_path, args, message):
    out = tmp_path / "t.json"
    r = cli_run("trace", "--pairs", write_pairs(tmp_path, PAIRS), "--out", str(out), *args)
    assert r.exit_code == 2 and r.output.strip().splitlines()[-1] == message
    assert not out.exists() and not (tmp_path / "t.json.tmp").exists()


def test_cli_trace_refuses_unaligned_pairs(tiny_internals, tmp_path):
    out = tmp_path / "t.json"
    uneven = [PAIRS[0], {"clean": "When the friend and John talked to", "corrupted": "When the friend and Mary talked to",
                         "answer": " the", "wrong_answer": " Mary"}]
    r = cli_run("trace", "--pairs", write_pairs(tmp_path, uneven), "--out", str(out))
    assert r.exit_code == 2 and r.output.strip().endswith("(fix: --template-group largest)"), r.output
    assert not out.exists()
    r = cli_run("trace", "--pairs", write_pairs(tmp_path, uneven), "--out", str(out), "--template-group", "largest")
    assert r.exit_code == 0 and "warning: 1 of 2 pairs left out" in r.output
    mism = [{"clean": "When John talked to", "corrupted": "The friend and John talked to", "answer": " the",
             "wrong_answer": " Mary"}]
    r = cli_run("trace", "--pairs", write_pairs(tmp_path, mism), "--out", str(tmp_path / "m.json"))
    assert r.exit_code == 2 and r.output.strip().endswith("(fix: --length-mismatch align_last)")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    r = cli_run("trace", "--pairs", str(empty), "--out", str(tmp_path / "e.json"))
    assert r.exit_code == 2 and r.output.strip().startswith("error: no prompt pairs in")


def test_nearest_sae_hook():
    from sfc_core.tracing import nearest_sae_hook

    bundled = (3, 7, 11, 15, 19, 23, 27)
    assert nearest_sae_hook("resid_pre", 8, bundled) == ("blocks.7.hook_resid_post", 7)  # resid_post of block 7
    assert nearest_sae_hook("mlp_out", 9, bundled) == ("blocks.7.hook_resid_post", 7)  # tie 7/11 -> earlier
    assert nearest_sae_hook("attn_out", 29, bundled) == ("blocks.27.hook_resid_post", 27)
    assert nearest_sae_hook("resid_pre", 0, bundled) == ("blocks.3.hook_resid_post", 3)
    with pytest.raises(InputError):
        nearest_sae_hook("resid_pre", 3, [])
