"""Head patching, attention patterns and path patching (sfc_core.heads) against hand-written computations on tiny
TransformerLens models, one with grouped-query attention (4 query heads, 2 KV heads)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sfc_core.errors import InputError
from tests.tiny import tiny_model
from tests.unit.test_tracing import equal_batch, metric, tiny_internals  # noqa: F401 (fixture)


def gqa_model(n_layers: int = 3, attn_only: bool = True, seed: int = 0):
    """4 query heads sharing 2 KV heads (heads 0, 1 read KV 0; heads 2, 3 read KV 1), float64."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from tests.tiny import scaled

    torch.manual_seed(seed)
    cfg = HookedTransformerConfig(n_layers=n_layers, d_model=16, n_heads=4, d_head=4, n_key_value_heads=2,
                                  d_mlp=None if attn_only else 32, attn_only=attn_only, act_fn="gelu", d_vocab=23,
                                  n_ctx=16, normalization_type="LN", dtype=torch.float64, seed=seed)
    return scaled(HookedTransformer(cfg))


def test_gqa_model_shapes():
    from sfc_core.heads import kv_head, n_kv_heads

    model = gqa_model()
    _, cache = model.run_with_cache(torch.zeros(1, 3, dtype=torch.long))
    assert cache["blocks.0.attn.hook_k"].shape[2] == 2 and cache["blocks.0.attn.hook_q"].shape[2] == 4
    assert n_kv_heads(model) == 2 and [kv_head(model, h) for h in range(4)] == [0, 0, 1, 1]


@pytest.mark.parametrize("positions", ["all", "last"])
def test_head_patching_equals_hand_written(positions):
    from sfc_core.heads import head_patching

    model = gqa_model(n_layers=2, attn_only=False)
    batch = equal_batch()
    res = head_patching(model, batch, positions=positions, chunk=5)
    assert res.patched.shape == (3, 2, 4)
    for r in range(3):
        _, cache = model.run_with_cache(batch.clean_tokens[r:r + 1])
        for L in range(2):
            for h in range(4):
                def put(z, hook, h=h, cache=cache):
                    z = z.clone()
                    sl = slice(None) if positions == "all" else slice(5, 6)
                    z[0, sl, h] = cache[hook.name][0, sl, h]
                    return z

                logits = model.run_with_hooks(batch.corrupted_tokens[r:r + 1],
                                              fwd_hooks=[(f"blocks.{L}.attn.hook_z", put)])
                want = float(logits[0, 5, batch.answer_ids[r]] - logits[0, 5, batch.wrong_ids[r]])
                assert res.patched[r, L, h].item() == pytest.approx(want, abs=1e-9)
    m_clean = np.array([metric(model, batch.clean_tokens, batch, r) for r in range(3)])
    m_corr = np.array([metric(model, batch.corrupted_tokens, batch, r) for r in range(3)])
    want = (res.patched.double().mean(0).numpy() - m_corr.mean()) / (m_clean.mean() - m_corr.mean())
    np.testing.assert_allclose(res.normalised(), want, atol=1e-9)
    assert res.top_heads(1)[0]["effect"] == pytest.approx(want.ravel()[np.abs(want).argmax()])


def _hand_path(model, batch, r, sender, receiver, inp):
    """Path patching of one pair by hand on an attention-only model: the residual stream entering the receiver's
    layer is linear in head outputs, so step 2's input is the clean one plus the sender's change through W_O; the
    receiver's new output is recomputed from its q, k, v (softmax attention, causal mask) and put in a clean run."""
    (ls, hs), (lr, hr) = sender, receiver
    _, clean = model.run_with_cache(batch.clean_tokens[r:r + 1])
    _, corr = model.run_with_cache(batch.corrupted_tokens[r:r + 1])
    attn = model.blocks[lr].attn
    delta = (corr[f"blocks.{ls}.attn.hook_z"][0, :, hs] - clean[f"blocks.{ls}.attn.hook_z"][0, :, hs]) @ \
        model.blocks[ls].attn.W_O[hs]
    resid = clean[f"blocks.{lr}.hook_resid_pre"][0] + delta  # [pos, d_model]
    x_new = model.blocks[lr].ln1(resid[None])[0]
    x_clean = clean[f"blocks.{lr}.ln1.hook_normalized"][0]
    q = (x_new if inp == "q" else x_clean) @ attn.W_Q[hr] + attn.b_Q[hr]
    k = (x_new if inp == "k" else x_clean) @ attn.W_K[hr] + attn.b_K[hr]
    v = (x_new if inp == "v" else x_clean) @ attn.W_V[hr] + attn.b_V[hr]
    scores = q @ k.T / math.sqrt(model.cfg.d_head)
    n = scores.shape[0]
    scores = scores.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf"))
    z_new = torch.softmax(scores, dim=-1) @ v  # [pos, d_head]

    def put(z, hook):
        z = z.clone()
        z[0, :, hr] = z_new
        return z

    logits = model.run_with_hooks(batch.clean_tokens[r:r + 1], fwd_hooks=[(f"blocks.{lr}.attn.hook_z", put)])
    last = int(batch.last_pos[r])
    return float(logits[0, last, batch.answer_ids[r]] - logits[0, last, batch.wrong_ids[r]])


@pytest.mark.parametrize("inp", ["q", "k", "v"])
@pytest.mark.parametrize("sender,receiver", [((0, 1), (2, 0)), ((1, 3), (2, 2))])
def test_path_patching_equals_hand_written(inp, sender, receiver):
    from sfc_core.heads import path_patch

    model = gqa_model(n_layers=3)
    batch = equal_batch()
    res = path_patch(model, batch, sender, receiver, inp)
    want = [_hand_path(model, batch, r, sender, receiver, inp) for r in range(3)]
    np.testing.assert_allclose(res.m_patched.numpy(), want, atol=1e-9)
    m_clean = np.array([metric(model, batch.clean_tokens, batch, r) for r in range(3)])
    m_corr = np.array([metric(model, batch.corrupted_tokens, batch, r) for r in range(3)])
    assert res.effect == pytest.approx(np.mean(want) - m_clean.mean(), abs=1e-9)
    assert res.normalised == pytest.approx((m_clean.mean() - np.mean(want)) / (m_clean.mean() - m_corr.mean()),
                                           abs=1e-9)
    assert abs(res.effect) > 1e-6  # the path moves the metric on this model


@pytest.mark.parametrize("inp", ["q", "k"])
def test_path_patching_denoise_is_noise_with_the_runs_swapped(inp):
    """Denoising path patching = noising with clean and corrupted prompts swapped (same answers, so the metric is
    the same function); normalised by the unswapped clean/corrupted metrics."""
    from types import SimpleNamespace

    from sfc_core.heads import path_patch

    model = gqa_model(n_layers=3)
    batch = equal_batch()
    swapped = SimpleNamespace(**{**vars(batch), "clean_tokens": batch.corrupted_tokens,
                                 "corrupted_tokens": batch.clean_tokens})
    den = path_patch(model, batch, (0, 1), (2, 0), inp, direction="denoise")
    mirror = path_patch(model, swapped, (0, 1), (2, 0), inp, direction="noise")
    np.testing.assert_allclose(den.m_patched.numpy(), mirror.m_patched.numpy(), atol=1e-12)
    m_clean, m_corr = float(den.m_clean.mean()), float(den.m_corr.mean())
    assert den.effect == pytest.approx(float(den.m_patched.mean()) - m_corr, abs=1e-12)
    assert den.normalised == pytest.approx((float(den.m_patched.mean()) - m_corr) / (m_clean - m_corr), abs=1e-12)


def test_path_patching_mha_model_and_errors():
    """Without grouped-query attention (tests.tiny: 2 heads, MLPs) k/v are per query head; bad inputs refused."""
    from sfc_core.heads import path_patch

    model = tiny_model(n_layers=3)
    batch = equal_batch()
    res = path_patch(model, batch, (0, 0), (1, 1), "v")
    assert res.m_patched.shape == (3,)
    with pytest.raises(InputError, match="earlier layer"):
        path_patch(model, batch, (1, 0), (1, 1))
    with pytest.raises(InputError, match="head 2 does not exist"):
        path_patch(model, batch, (0, 2), (1, 1))
    with pytest.raises(InputError, match="layer 3 does not exist"):
        path_patch(model, batch, (0, 0), (3, 1))
    with pytest.raises(InputError, match="'q', 'k' or 'v'"):
        path_patch(model, batch, (0, 0), (1, 1), "z")


def test_attention_pattern():
    from sfc_core.heads import attention_pattern, pattern_heatmap

    model = gqa_model(n_layers=2)
    tokens = equal_batch().clean_tokens[0]
    pattern, toks = attention_pattern(model, tokens, 1, 3)
    _, cache = model.run_with_cache(tokens[None])
    np.testing.assert_allclose(pattern, cache["blocks.1.attn.hook_pattern"][0, 3].detach().numpy())
    np.testing.assert_allclose(pattern.sum(-1), 1.0, atol=1e-12)
    assert np.all(np.triu(pattern, 1) == 0) and len(toks) == 6
    assert pattern_heatmap(pattern, toks, 1, 3).data[0].z.shape == (6, 6)
    with pytest.raises(InputError, match="head 4 does not exist"):
        attention_pattern(model, tokens, 1, 4)


def test_cli_heads(tmp_path, tiny_internals):
    import json

    from tests.unit.test_tracing import PAIRS, cli_run, write_pairs

    out = tmp_path / "h.json"
    pairs = write_pairs(tmp_path, PAIRS)
    r = cli_run("heads", "--pairs", pairs, "--out", str(out), "--pattern", "1.2", "--path", "0.1>1.3",
                "--receiver-input", "k")
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert len(doc["patching"]["normalised"]) == 2 and len(doc["patching"]["normalised"][0]) == 4
    assert len(doc["pattern"]["pattern"]) == len(doc["pattern"]["tokens"]) == 5
    assert doc["path"]["sender"] == [0, 1] and doc["path"]["receiver_input"] == "k"
    for args, msg in ((["--pattern", "1.4"], "error: head 4 does not exist: layer 1 has heads 0 to 3"),
                      (["--pattern", "2.0"], "error: layer 2 does not exist: the model has layers 0 to 1"),
                      (["--path", "1.0>1.1"], ("error: --path: the sender L1.H0 must sit in an earlier layer than the "
                                               "receiver L1.H1")),
                      (["--path", "1.0"], "error: --path is SENDER>RECEIVER (e.g. 9.6>10.7), not '1.0'"),
                      (["--pattern", "x"], "error: --pattern is a head as LAYER.HEAD (e.g. 9.6), not 'x'"),
                      (["--positions", "first"], "error: --positions must be all or last, not 'first'"),
                      (["--no-patching"], "error: nothing to do: give --pattern or --path with --no-patching"),
                      (["--path-direction", "up"], "error: --path-direction must be noise or denoise, not 'up'"),
                      (["--n", "0"], "error: --n must be 1-100000, not 0")):
        r = cli_run("heads", "--pairs", pairs, "--out", str(tmp_path / "x.json"), *args)
        assert r.exit_code == 2 and r.output.strip() == msg, (args, r.output)
        assert not (tmp_path / "x.json").exists()
    r = cli_run("heads", "--help")
    assert r.exit_code == 0 and "--receiver-input" in r.output
