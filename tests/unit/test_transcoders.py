"""Transcoders as engine sites (sfc_core.transcoders) and PIE's protocol on them (sfc_core.pie), on a tiny
TransformerLens model with random transcoders built in the test; every number against a hand-written hooked run."""

from __future__ import annotations

import math

import pytest
import torch

from sfc_core import attribution as A
from sfc_core import nodes as N
from sfc_core import pie
from sfc_core.errors import IncompatibleSAEError, InputError
from sfc_core.splice import make_sites
from sfc_core.transcoders import (
    TranscoderBuildConfig,
    input_hook,
    load_transcoder_dir,
    output_hook,
    save_transcoder,
    to_sae_lens,
    train_transcoder,
    transcoder_sites,
)
from tests.tiny import tiny_batch, tiny_model, tiny_sae, tiny_transcoder

LAYERS = (0, 1, 2)


@pytest.fixture(scope="module")
def setup():
    model = tiny_model(n_layers=3)
    tcs = {L: tiny_transcoder(L, seed=L) for L in LAYERS}
    batch = tiny_batch(4, 7, equal_length=True)
    runs = A.prepare_runs(model, transcoder_sites(model, tcs), batch)
    return model, tcs, batch, runs


def _metric(logits, batch) -> torch.Tensor:
    rows = torch.arange(batch.n)
    last = logits[rows, batch.last_pos]
    return last[rows, batch.answer_ids] - last[rows, batch.wrong_ids]


def _features(model, tcs, tokens):
    _, cache = model.run_with_cache(tokens)
    f = {L: tcs[L].encode(cache[input_hook(L)]) for L in tcs}
    for L in f:
        f[L][:, 0] = 0  # BOS is never a node
    return f, cache


# ------------------------------------------------------------------ the spliced model
def test_spliced_transcoders_reproduce_the_model_with_error_kept(setup):
    model, tcs, batch, runs = setup
    with torch.no_grad():
        logits = model(batch.clean_tokens)
    assert torch.allclose(runs.m_clean, _metric(logits, batch), atol=1e-10)
    _, cache = model.run_with_cache(batch.clean_tokens)
    for i, L in enumerate(LAYERS):
        rec = runs.clean[i]
        recon = tcs[L](cache[input_hook(L)])  # f·W_dec + b_dec + skip
        expected_err = cache[output_hook(L)] - recon
        assert torch.allclose(rec.err[:, 1:], expected_err[:, 1:], atol=1e-10)  # ε = mlp_out − ŷ
        rest = cache[f"blocks.{L}.hook_resid_mid"] + tcs[L].b_dec + cache[input_hook(L)] @ tcs[L].W_skip.T
        assert torch.allclose(rec.f @ tcs[L].W_dec + rec.err + rest, rec.x, atol=1e-10)


def test_exact_patching_of_a_transcoder_feature_equals_a_hooked_patch(setup):
    model, tcs, batch, runs = setup
    f_clean, _ = _features(model, tcs, batch.clean_tokens)
    f_corr, _ = _features(model, tcs, batch.corrupted_tokens)
    L, k = 1, int((f_clean[1] - f_corr[1]).abs().sum((0, 1)).argmax())
    node = N.latent(output_hook(L), k)
    got = float(A.exact_effects(runs, [node])[0])
    mask = batch.valid_mask.to(torch.float64)
    delta = ((f_corr[L][..., k] - f_clean[L][..., k]) * mask)[..., None] * tcs[L].W_dec[k]

    def hook(act, hook):
        return act + delta

    with torch.no_grad():
        patched = model.run_with_hooks(batch.clean_tokens, fwd_hooks=[(output_hook(L), hook)])
        clean = model(batch.clean_tokens)
    want = float((_metric(patched, batch) - _metric(clean, batch)).mean())
    assert got == pytest.approx(want, abs=1e-9)
    assert abs(want) > 1e-4


def test_atp_and_ig_rank_transcoder_features_and_error_nodes(setup):
    _, _, _, runs = setup
    for method in ("atp", "ig"):
        attr = A.attribute(runs, method)
        assert [e.shape[-1] for e in attr.effects] == [25, 25, 25]  # 24 features + ε
        assert all(torch.isfinite(e).all() for e in attr.effects)


def test_transcoder_sites_are_typed():
    model = tiny_model(n_layers=3)
    with pytest.raises(InputError, match="transcoders"):
        make_sites(model, {output_hook(0): tiny_sae()})
    with pytest.raises(InputError):
        make_sites(model, {"blocks.0.hook_resid_post": transcoder_sites(model, {0: tiny_transcoder(0)})[output_hook(0)]})
    with pytest.raises(IncompatibleSAEError):
        transcoder_sites(model, {0: tiny_transcoder(0, d_model=8)})
    with pytest.raises(InputError, match="outside"):
        transcoder_sites(model, {5: tiny_transcoder(0)})


# ------------------------------------------------------------------ PIE
def _hooked_removal_kl(model, tcs, batch, keep_sets: dict, mode: str):
    """Hand-written PIE removal: per prompt, every occurrence not in ``keep_sets[b]`` (a set of (L, pos, k)) has
    its write shifted to its target value by a hook at hook_mlp_out; KL of the last token vs clean."""
    f_clean, _ = _features(model, tcs, batch.clean_tokens)
    f_corr, _ = _features(model, tcs, batch.corrupted_tokens)
    hooks = []
    for L in tcs:
        target = f_corr[L] if mode == "corrupted" else torch.zeros_like(f_clean[L])
        patch = torch.zeros(batch.clean_tokens.shape + (tcs[L].W_dec.shape[1],), dtype=torch.float64)
        for b in range(batch.n):
            for p in range(1, int(batch.last_pos[b]) + 1):
                for k in range(tcs[L].cfg.d_sae):
                    a, t = float(f_clean[L][b, p, k]), float(target[b, p, k])
                    if (a != 0 or t != 0) and (L, p, k) not in keep_sets[b]:
                        patch[b, p] += (a - t) * tcs[L].W_dec[k]
        hooks.append((output_hook(L), lambda act, hook, P=patch: act - P))
    with torch.no_grad():
        clean = model(batch.clean_tokens)
        patched = model.run_with_hooks(batch.clean_tokens, fwd_hooks=hooks)
    rows = torch.arange(batch.n)
    lc = torch.log_softmax(clean[rows, batch.last_pos], -1)
    lp = torch.log_softmax(patched[rows, batch.last_pos], -1)
    return (lc.exp() * (lc - lp)).sum(-1)


@pytest.mark.parametrize("mode", pie.MODES)
def test_pie_removal_equals_a_hand_written_hooked_computation(setup, mode):
    model, tcs, batch, runs = setup
    occ = pie.occurrences(runs, mode)
    for k in (3, 20):
        keep = pie.fap_keep(occ, k)
        got = pie.evaluate_keeps(runs, occ, [keep])[0]
        keep_sets = [{(LAYERS[runs.space.site(n)], n.position, n.index) for n in pie.kept_nodes(runs, keep[b])}
                     for b in range(batch.n)]
        assert all(len(s) == k for s in keep_sets)
        kl = _hooked_removal_kl(model, tcs, batch, keep_sets, mode)
        assert got["kl"] == pytest.approx(float(kl.mean()), abs=1e-9)
        assert got["fidelity"] == pytest.approx(1 - min(float(kl.mean()), 1.0))
    everything = pie.evaluate_keeps(runs, occ, [occ.flat_scores() > -math.inf])[0]
    assert everything["kl"] == pytest.approx(0.0, abs=1e-10) and everything["pred_change"] == 0.0


def test_fap_scores_are_gradient_times_write_difference(setup):
    model, tcs, batch, runs = setup
    occ = pie.occurrences(runs, "corrupted")
    f_clean, _ = _features(model, tcs, batch.clean_tokens)
    f_corr, _ = _features(model, tcs, batch.corrupted_tokens)
    acts = {}

    def keep(act, hook):
        act.retain_grad()
        acts[hook.name] = act
        return act

    with torch.enable_grad():
        logits = model.run_with_hooks(batch.clean_tokens, fwd_hooks=[(output_hook(L), keep) for L in LAYERS])
        _metric(logits, batch).sum().backward()
    for i, L in enumerate(LAYERS):
        grad = acts[output_hook(L)].grad
        want = (grad @ tcs[L].W_dec.T) * (f_clean[L] - f_corr[L]) * batch.valid_mask[..., None]
        assert torch.allclose(occ.scores[i], want, atol=1e-9)


def test_fap_synergy_keeps_k_per_prompt_and_the_core(setup):
    _, _, batch, runs = setup
    occ = pie.occurrences(runs, "corrupted")
    cfg = pie.SynergyConfig(boundary_cap=6, partners=4, partners_per_candidate=2)
    keep = pie.fap_synergy_keep(runs, occ, 10, cfg)
    assert keep.sum(1).tolist() == [10] * batch.n
    core = pie.fap_keep(occ, 10 - round(0.5 * 10 * 0.5))
    assert bool((keep | ~core).all())


def test_pie_compare_report_and_bad_input(setup):
    model, _, batch, runs = setup
    report = pie.pie_compare(runs, budgets=(2, 5), methods=("fap", "random"), draws=2)
    assert report["budgets"] == [2, 5]
    assert set(report["methods"]) == {"fap", "random"}
    assert all(0 <= f <= 1 for f in report["methods"]["fap"]["fidelity"])
    with pytest.raises(InputError, match="larger than"):
        pie.pie_compare(runs, budgets=(10 ** 6,))
    with pytest.raises(InputError, match="mode"):
        pie.occurrences(runs, "mean")
    sae_runs = A.prepare_runs(model, {"blocks.0.hook_resid_post": tiny_sae()}, batch)
    with pytest.raises(InputError, match="transcoder"):
        pie.pie_compare(sae_runs, budgets=(2,))


# ------------------------------------------------------------------ training and format
def test_training_learns_a_sparse_map_and_the_threshold_sets_l0():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6000, 16, generator=g)
    dirs = torch.randn(64, 16, generator=g)
    y = torch.relu(x @ dirs.T - 1.0) @ torch.randn(64, 16, generator=g) * 0.3 + x @ torch.randn(16, 16, generator=g) * 0.2
    cfg = TranscoderBuildConfig(d_sae=64, k=8, epochs=20, batch_tokens=256, lr=3e-3, dead_tokens=2000)
    w = train_transcoder(x, y, cfg)
    pre = x @ w["W_enc"] + w["b_enc"]
    f = pre * (pre > w["threshold"])
    y_hat = f @ w["W_dec"] + w["b_dec"] + x @ w["W_skip"].T
    fve = 1 - (y - y_hat).pow(2).sum() / (y - y.mean(0)).pow(2).sum()
    X = torch.cat([x, torch.ones(len(x), 1)], 1)
    linear = X @ torch.linalg.lstsq(X, y).solution  # the best the skip term alone can do: FVE 0.665
    fve_linear = 1 - (y - linear).pow(2).sum() / (y - y.mean(0)).pow(2).sum()
    assert fve > fve_linear + 0.1
    assert 4 < (f > 0).sum(-1).float().mean() < 16


def test_sae_lens_format_round_trip(tmp_path):
    tc = tiny_transcoder(1)
    save_transcoder(tc, tmp_path / "L1_transcoder")
    back = load_transcoder_dir(tmp_path / "L1_transcoder", dtype=torch.float64)
    x = torch.randn(3, 5, 16, dtype=torch.float64)
    assert torch.allclose(back(x), tc(x))
    assert back.cfg.metadata.hook_name == input_hook(1)
    assert back.cfg.metadata.hook_name_out == output_hook(1)
    from sfc_core.errors import AssetError

    with pytest.raises(AssetError):
        load_transcoder_dir(tmp_path / "missing")
    with pytest.raises(AssetError, match="expected blocks.2.ln2.hook_normalized"):
        load_transcoder_dir(tmp_path / "L1_transcoder", layer=2)
    assert load_transcoder_dir(tmp_path / "L1_transcoder", layer=1) is not None
