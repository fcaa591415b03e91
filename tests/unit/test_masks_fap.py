"""Mask optimisation (continuous sparsification) and FAP / FAP-Synergy on tiny models."""

from __future__ import annotations

import pytest
import torch

from sfc_core import attribution as A
from sfc_core import fap as P
from sfc_core import masks as M
from sfc_core.errors import InputError
from sfc_core.ablation import ablation_values
from sfc_core.nodes import latent
from tests.tiny import tiny_batch, tiny_model, tiny_sae


@pytest.fixture(scope="module")
def runs():
    model = tiny_model()
    hook = "blocks.2.hook_resid_post"
    sae = tiny_sae(hook=hook, seed=5)
    batch = tiny_batch()
    first = A.prepare_runs(model, {hook: sae}, batch)
    # the "irrelevant" latent writes nothing; the "carrier" has the largest mean-ablation effect
    active = torch.nonzero(((first.clean[0].f * first.mask[..., None]) > 0).any(0).any(0)).flatten().tolist()
    imp = P.ablation_importance(first, [[first.space.node_at(0, k)] for k in active])
    carrier = active[int(torch.argmax(imp))]
    irrelevant = next(k for k in active if k != carrier)
    with torch.no_grad():
        sae.W_dec[irrelevant] = 0
    A._DECODERS.pop(sae, None)
    out = A.prepare_runs(model, {hook: sae}, batch)
    out.carrier, out.irrelevant = carrier, irrelevant
    return out


def test_mask_keeps_the_carrier_and_prunes_the_irrelevant(runs):
    res = M.train_mask(runs, M.MaskConfig(lam=1e-3, steps=150, lr=0.1, t_max=100.0))
    cand = res.candidates[0].tolist()
    theta = dict(zip(cand, res.theta[0].tolist()))
    assert theta[runs.carrier] > 0
    assert theta[runs.irrelevant] <= 0
    assert res.losses[-1] < res.losses[0]
    nodes = res.nodes(runs)
    hook = runs.sites[0].hook_name
    assert latent(hook, runs.carrier) in nodes and runs.space.errors()[0] in nodes
    assert res.n_latents() == sum(1 for n in nodes if not n.is_error)


def test_lambda_sweep_shrinks_and_reports_nesting(runs):
    results = M.lambda_sweep(runs, [1e-3, 1.0], M.MaskConfig(steps=60, t_max=50.0))
    assert results[0].n_latents() >= results[1].n_latents()
    table = M.nesting(results, runs)
    assert len(table) == 2 and table[0][0] in (1.0, None)


@pytest.mark.parametrize("bad", [{"lam": 0.0}, {"lam": -1.0}, {"t_max": 1.0}, {"steps": 0}, {"loss": "l2"}])
def test_mask_bad_inputs(runs, bad):
    with pytest.raises(InputError):
        M.train_mask(runs, M.MaskConfig(**bad))


def test_synergy_formula_and_greedy():
    assert P.synergy(3.0, 1.0, 1.0) == 1.0
    assert P.synergy(1.0, 1.0, 1.0) == 0.0
    a, b, c = latent("h0", 1), latent("h0", 2), latent("h1", 3)
    score = {a: 1.0, b: -0.9, c: 0.5}
    assert P.greedy_synergy([a, b, c], score, {}, 2) == [a, b]
    assert P.greedy_synergy([a, b, c], score, {(a, c): 1.0}, 2) == [a, c]


def test_ablation_importance_matches_hooked_run(runs):
    model, site = runs.model, runs.sites[0]
    k = runs.carrier
    mean = ablation_values(runs).f[0][..., k]
    W = A.effective_decoder(site.sae)

    def hook(act, hook):  # noqa: ARG001
        f = site.sae.encode(act)[..., k]
        return act + ((mean - f) * runs.mask)[..., None] * W[k]

    b = runs.batch
    logits = model.run_with_hooks(b.clean_tokens, fwd_hooks=[(site.hook_name, hook)])
    rows = torch.arange(b.n)
    last = logits[rows, b.last_pos]
    m = (last[rows, b.answer_ids] - last[rows, b.wrong_ids]).mean()
    got = P.ablation_importance(runs, [[runs.space.node_at(0, k)]])[0]
    assert float(got) == pytest.approx(abs(float(runs.m_clean.mean() - m)), abs=1e-9)


def test_fap_and_budget_errors(runs):
    scores = P.fap_scores(runs)
    assert scores[0].shape == (runs.sites[0].d_sae,)
    assert float(scores[0][runs.irrelevant]) == 0.0
    sel = P.fap_select(runs, 3, scores)
    assert len(sel.nodes) == 3
    syn = P.fap_synergy_select(runs, 3, synergy_pool=4, scores=scores)
    assert len(syn.nodes) == 3 and len(syn.synergy) == 6
    # the pool straddles the budget boundary (ranks 1..4 for K=3, P=4), not the top ranks
    ranked = P.ranked_latents(runs, scores)
    pooled = {n for pair in syn.synergy for n in pair}
    assert pooled == set(ranked[1:5]) and ranked[0] in syn.nodes
    n_cand = len(P.ranked_latents(runs, scores))
    for k in (0, n_cand + 1):
        with pytest.raises(InputError):
            P.fap_select(runs, k, scores)
        with pytest.raises(InputError):
            P.fap_synergy_select(runs, k, scores=scores)


def test_compare_scores_every_method_at_the_mask_sizes(runs):
    from sfc_core.compare import compare_methods

    report = compare_methods(runs, ["atp", "fap", "mask"], [1, 2], lambdas=[1e-3, 1.0],
                             mask_cfg=M.MaskConfig(steps=40, t_max=50.0))
    mask = report["methods"]["mask"]
    assert len(mask["n_latents"]) == 2 and mask["lambdas"] == [1e-3, 1.0]
    expected = sorted({1, 2} | {n for n in mask["n_latents"] if n > 0})
    assert report["sizes"] == expected
    for name in ("atp", "fap"):
        row = report["methods"][name]
        # a ranking scores n latents, or all it has when fewer are non-zero
        assert len(row["n_latents"]) == len(expected)
        assert all(got <= n for got, n in zip(row["n_latents"], expected))
        assert row["n_latents"][:2] == [1, 2]
    # the atp row is the score of AtP's top latents plus every error node
    from sfc_core.evaluation import score_circuits

    ranked = runs.space.ranked(A.atp(runs).effects, kind="latent")
    direct = score_circuits(runs, [ranked[:n] + runs.space.errors() for n in expected])
    assert report["methods"]["atp"]["faithfulness"] == pytest.approx([d.faithfulness for d in direct], abs=1e-12)
    assert report["random"]["sizes"] == expected


def test_compare_rejects_unknown_methods_and_bad_sizes(runs):
    from sfc_core.compare import compare_methods

    with pytest.raises(InputError):
        compare_methods(runs, ["atp", "magic"], [1])
    with pytest.raises(InputError):
        compare_methods(runs, ["atp"], [0])
