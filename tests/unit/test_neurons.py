"""MLP neurons as nodes (sfc_core.neurons): ids, the neuron site's layout, AtP = exact where the metric is linear in
the neurons, and engine ablation / patching of neurons equal hand-written TransformerLens hooked runs."""

from __future__ import annotations

import pytest
import torch

from sfc_core import attribution as A
from sfc_core import hooks
from sfc_core import nodes as N
from sfc_core.ablation import ablation_values, latent_sets_metric
from sfc_core.errors import InputError
from sfc_core.evaluation import (
    faithfulness_curve,
    random_nodes,
    score_circuits,
    smallest_faithful,
)
from sfc_core.neurons import NeuronDictionary, neuron_sites, prepare_neuron_runs
from sfc_core.splice import make_sites
from tests.tiny import tiny_batch, tiny_model, tiny_sae

H0, H1 = "blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post"


def _linear_tail_model(seed: int = 0):
    """Two blocks, no final norm: the metric is linear in block 1's neurons (logits = resid_post_1 @ W_U + b_U)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(seed)
    cfg = HookedTransformerConfig(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32, d_vocab=23, n_ctx=16,
                                  act_fn="gelu", normalization_type=None, dtype=torch.float64, seed=seed)
    model = HookedTransformer(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(4.0)
    return model.eval()


def _batch(n: int = 4, length: int = 7, d_vocab: int = 23, seed: int = 0):
    """Equal-length pairs (one template group): corrupted = clean with positions 2 and length−2 changed."""
    return tiny_batch(n, length, d_vocab, seed, equal_length=True)


def _hooked_metric(model, batch, replace: dict) -> float:
    """Mean logit difference of the clean prompts with ``replace[hook](post) -> post`` applied at MLP hook_post
    points by TransformerLens hooks (the reference the engine's ablation must equal)."""
    def hook_of(fn):
        return lambda act, hook: fn(act)

    hooks_ = [(h, hook_of(fn)) for h, fn in replace.items()]
    logits = model.run_with_hooks(batch.clean_tokens, fwd_hooks=hooks_)
    rows = torch.arange(batch.n)
    last = logits[rows, batch.last_pos]
    return float((last[rows, batch.answer_ids] - last[rows, batch.wrong_ids]).mean())


# ------------------------------------------------------------------ ids and layout
def test_neuron_ids_round_trip_and_fields():
    node = N.neuron(H1, 17)
    assert node.id == "blocks.1.mlp.hook_post/n17"
    assert N.parse_id("blocks.1.mlp.hook_post/n17@3") == N.neuron(H1, 17, 3)
    assert N.parse_id(node.id).kind == "neuron" and node.layer == 1 and node.feature == 17
    assert N.from_fields(H1, 17) == node and N.from_fields("blocks.1.hook_resid_post", 17).kind == "latent"
    assert N.unit_kind(H1) == "neuron" and N.unit_kind("blocks.1.hook_resid_post") == "latent"
    assert hooks.mlp_post(3) == "blocks.3.mlp.hook_post" and hooks.is_neuron_hook("blocks.3.mlp.hook_post")
    assert not hooks.is_neuron_hook("blocks.3.hook_mlp_out")
    assert hooks.blocks_before("blocks.3.mlp.hook_post", 30) == 4


def test_neuron_site_layout_has_no_error_node():
    space = N.NodeSpace(("blocks.0.hook_resid_post", H1), (3, 4), n_positions=2)
    assert space.column(N.neuron(H1, 2)) == 2
    with pytest.raises(InputError, match="no error node"):
        space.column(N.error(H1))
    with pytest.raises(InputError, match="holds neurons"):
        space.column(N.latent(H1, 1))
    with pytest.raises(InputError, match="out of range"):
        space.column(N.neuron(H1, 4))
    assert space.errors() == [N.error("blocks.0.hook_resid_post")]
    assert [n.id for n in space.all_nodes() if n.hook_name == H1] == [f"{H1}/n{k}" for k in range(4)]
    # column d of a neuron site (the rest of the stream) is kept in every mask, never ranked
    keep = space.keep_masks([N.neuron(H1, 1)])
    assert keep[1].tolist() == [False, True, False, False, True] and keep[0].tolist() == [False] * 4
    comp = space.keep_masks([N.neuron(H1, 1)], complement=True)
    assert comp[1].tolist() == [True, False, True, True, True] and comp[0].tolist() == [True] * 4
    assert space.keep_masks([])[1].tolist() == [False] * 4 + [True]
    eff = [torch.tensor([0.0, 0.0, 0.0, 5.0]), torch.tensor([1.0, -3.0, 0.0, 0.0, 9.0])]
    assert [n.id for n in space.ranked(eff)] == ["blocks.0.hook_resid_post/error", f"{H1}/n1", f"{H1}/n0"]
    assert [n.id for n in space.ranked(eff, kind="neuron")] == [f"{H1}/n1", f"{H1}/n0"]
    with pytest.raises(InputError, match="no error node"):
        space.node_at(1, 4)


def test_neuron_sites_refuse_saes_and_encodes_outside_their_block():
    model = tiny_model(n_layers=2)
    with pytest.raises(InputError, match="neuron sites"):
        make_sites(model, {H0: tiny_sae(hook=H0)})
    with pytest.raises(InputError, match="outside"):
        NeuronDictionary(model, 2)
    d = neuron_sites(model, ["blocks.0.hook_resid_post", 1])
    assert list(d) == [H0, H1] and d[H0].cfg.d_sae == 32 and d[H0].cfg.d_in == 16
    with pytest.raises(InputError, match="started after block 0"):
        d[H0].encode(torch.zeros(1, 3, 16, dtype=torch.float64))
    batch = _batch()
    runs = prepare_neuron_runs(model, [0, 1], batch)
    # a run that would start past block 1 starts at the embedding instead (ablation._start), so FAP-Synergy's
    # ablated sets work on neurons: equal to a hooked run with neuron 0 of block 1 at its ablation value
    values = ablation_values(runs)
    got = float(latent_sets_metric(runs, [[N.neuron(H1, 0)]], values)[0])
    mask = runs.mask

    def set_neuron(post):
        post = post.clone()
        post[..., 0] = torch.where(mask, values.f[1][..., 0].expand_as(mask), post[..., 0])
        return post

    assert got == pytest.approx(_hooked_metric(model, batch, {H1: set_neuron}), abs=1e-9)


# ------------------------------------------------------------------ AtP vs exact, engine vs hooks
def test_neuron_atp_equals_exact_where_the_metric_is_linear_in_the_neurons():
    """Block 1 is the last block and the model has no final norm, so m is linear in block 1's neurons: AtP (and
    IG) equal exact patching there to float64 rounding. Block 0's neurons feed block 1 nonlinearly."""
    model = _linear_tail_model()
    batch = _batch()
    runs = prepare_neuron_runs(model, [0, 1], batch)
    atp = A.attribute(runs, "atp")
    ex = A.attribute(runs, "exact")
    ig = A.attribute(runs, "ig", steps=3)
    assert atp.effects[1].shape == (33,) and float(atp.effects[1][-1]) == 0.0 and float(ex.effects[1][-1]) == 0.0
    assert torch.allclose(atp.effects[1], ex.effects[1], atol=1e-10, rtol=0)
    assert torch.allclose(ig.effects[1], ex.effects[1], atol=1e-10, rtol=0)
    assert float(ex.effects[1].abs().max()) > 0.1  # the statement is not about zeros
    assert not torch.allclose(atp.effects[0], ex.effects[0], atol=1e-3)
    # position-resolved: each (neuron, position) as well
    atp_p = A.attribute(runs, "atp", aggregation="none")
    ex_p = A.exact(runs, aggregation="none", nodes=[N.neuron(H1, k, p) for k in (0, 5, 31) for p in (2, 6)])
    for k in (0, 5, 31):
        for p in (2, 6):
            assert float(atp_p.effects[1][p, k]) == pytest.approx(float(ex_p.effects[1][p, k]), abs=1e-10)


def test_neuron_exact_patching_equals_a_hooked_run():
    model = tiny_model(n_layers=2)
    batch = _batch()
    runs = prepare_neuron_runs(model, [0, 1], batch)
    _, cache = model.run_with_cache(batch.corrupted_tokens)
    corr = cache[H0]
    m_clean = _hooked_metric(model, batch, {})
    assert float(runs.m_clean.mean()) == pytest.approx(m_clean, abs=1e-10)

    def patch(post):
        post = post.clone()
        post[:, 1:, 7] = corr[:, 1:, 7]
        return post

    got = float(A.exact_effects(runs, [N.neuron(H0, 7)])[0])
    assert got == pytest.approx(_hooked_metric(model, batch, {H0: patch}) - m_clean, abs=1e-10)
    assert abs(got) > 1e-3


def test_neuron_mean_ablation_equals_a_hooked_run():
    """m(C), m(complement), m(∅) and m(M) of a neuron circuit under mean ablation: every neuron of the sites outside
    C takes the corrupted prompts' mean at its position (BOS passes through), exactly as TransformerLens hooks
    that overwrite hook_post give."""
    model = tiny_model(n_layers=2)
    batch = _batch()
    runs = prepare_neuron_runs(model, [0, 1], batch)
    _, cache = model.run_with_cache(batch.corrupted_tokens)
    means = {h: cache[h].mean(0) for h in (H0, H1)}  # [pos, d_mlp]
    circuit = [N.neuron(H0, 3), N.neuron(H0, 11), N.neuron(H1, 0), N.neuron(H1, 20)]
    kept = {H0: [3, 11], H1: [0, 20]}

    def ablate(h, inside: bool):
        def fn(post):
            out = post.clone()
            keep = torch.zeros(post.shape[-1], dtype=torch.bool)
            keep[kept[h]] = True
            drop = ~keep if inside else keep
            out[:, 1:, drop] = means[h][None, 1:, drop].expand(post.shape[0], -1, -1)
            return out
        return fn

    def everything(h):
        return lambda post: torch.cat([post[:, :1], means[h][None, 1:].expand(post.shape[0], -1, -1)], 1)

    sc = score_circuits(runs, [circuit], "mean")[0]
    assert sc.m_circuit == pytest.approx(_hooked_metric(model, batch, {h: ablate(h, True) for h in kept}), abs=1e-10)
    assert sc.m_complement == pytest.approx(_hooked_metric(model, batch, {h: ablate(h, False) for h in kept}),
                                            abs=1e-10)
    assert sc.m_empty == pytest.approx(_hooked_metric(model, batch, {h: everything(h) for h in kept}), abs=1e-10)
    assert sc.m_full == pytest.approx(_hooked_metric(model, batch, {}), abs=1e-10)
    assert sc.faithfulness == pytest.approx((sc.m_circuit - sc.m_empty) / (sc.m_full - sc.m_empty), abs=1e-12)
    assert abs(sc.m_empty - sc.m_full) > 0.1


def test_neuron_curves_random_pool_and_target_search():
    model = tiny_model(n_layers=2)
    runs = prepare_neuron_runs(model, [0, 1], _batch())
    atp = A.attribute(runs, "atp")
    curve = faithfulness_curve(runs, atp.effects, [1, 4, 64], random_seeds=2)
    assert curve["n_nodes"] == [1, 4, 64]
    assert curve["faithfulness"][-1] == pytest.approx(1.0, abs=1e-9)  # every neuron kept: the full model
    assert curve["completeness"][-1] == pytest.approx(0.0, abs=1e-9)
    pool = random_nodes(runs, 1000, seed=0)
    assert len(pool) == 64 and {n.kind for n in pool} == {"neuron"}
    ranked = runs.space.ranked(atp.effects)
    tried: dict = {}
    s5 = smallest_faithful(runs, ranked, 0.5, tried=tried)
    n_eval = len(tried)
    s8 = smallest_faithful(runs, ranked, 0.8, tried=tried)
    assert s5.reached and s8.reached and s5.n_nodes <= s8.n_nodes
    assert s8.scores.faithfulness >= 0.8 and s8.tried[s8.n_nodes - 1] < 0.8 and len(tried) >= n_eval


def test_neurons_vs_features_on_a_tiny_model():
    from sfc_core.compare import neurons_vs_features

    model = tiny_model(n_layers=2)
    saes = {f"blocks.{L}.hook_resid_post": tiny_sae(hook=f"blocks.{L}.hook_resid_post", seed=L) for L in (0, 1)}
    out = neurons_vs_features(model, saes, _batch(), sizes=[1, 4, 16, 64], targets=(0.5, 0.8))
    assert set(out["curves"]) == {"features", "neurons"} and out["layers"] == [0, 1] and out["n_pairs"] == 4
    assert out["pool"]["neurons"] == 64
    for unit in ("features", "neurons"):
        c = out["curves"][unit]
        assert c["sizes"] == [1, 4, 16, 64] and len(c["faithfulness"]) == 4
        for t in ("0.5", "0.8"):
            s = out["searches"][unit][t]
            assert out["n_for"][unit][t] == (s["n_nodes"] if s["reached"] else None)
            if s["reached"]:
                assert s["faithfulness"] >= float(t)
    with pytest.raises(InputError):
        neurons_vs_features(model, saes, _batch(), sizes=[0])
    with pytest.raises(InputError):
        neurons_vs_features(model, saes, _batch(), targets=(2.0,))


def test_residual_basis_shares_the_features_cut_and_matches_a_hooked_run():
    """The residual stream's basis directions at an SAE's hook point: ids ``…hook_resid_post/nK``, no error node,
    m(∅) and m(M) equal to the SAE circuit's (mean-ablating every direction is mean-ablating the residual), and a
    circuit's m(C) equal to a hooked run that mean-ablates the other directions."""
    from sfc_core.compare import neurons_vs_features
    from sfc_core.neurons import ResidualBasis, residual_sites

    model = tiny_model(n_layers=2)
    batch = _batch()
    R = "blocks.0.hook_resid_post"
    with pytest.raises(InputError):
        ResidualBasis(model, H0)
    runs = A.prepare_runs(model, residual_sites(model, [R]), batch)
    assert runs.space.units == ("neuron",) and runs.space.errors() == []
    atp = A.attribute(runs, "atp")
    assert atp.space.node_at(0, 3).id == f"{R}/n3" and float(atp.effects[0][-1]) == 0.0
    feat = A.prepare_runs(model, {R: tiny_sae(hook=R)}, batch)
    s_res = score_circuits(runs, [[N.neuron(R, 1), N.neuron(R, 5)]])[0]
    s_feat = score_circuits(feat, [[]])[0]
    assert s_res.m_empty == pytest.approx(s_feat.m_empty, abs=1e-10)
    assert s_res.m_full == pytest.approx(s_feat.m_full, abs=1e-10)
    _, cache = model.run_with_cache(batch.corrupted_tokens)
    mean = cache[R].mean(0)

    def ablate(x):
        out = x.clone()
        drop = torch.ones(x.shape[-1], dtype=torch.bool)
        drop[[1, 5]] = False
        out[:, 1:, drop] = mean[None, 1:, drop].expand(x.shape[0], -1, -1)
        return out

    assert s_res.m_circuit == pytest.approx(_hooked_metric(model, batch, {R: ablate}), abs=1e-10)
    out = neurons_vs_features(model, {R: tiny_sae(hook=R)}, batch, sizes=[2, 16], units=("resid", "neurons"))
    assert list(out["curves"]) == ["resid", "neurons"] and out["pool"]["resid"] == 16
    with pytest.raises(InputError, match="units"):
        neurons_vs_features(model, {R: tiny_sae(hook=R)}, batch, units=("heads",))
