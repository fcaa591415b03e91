"""Template-aware positions (sfc_core.alignment): per-position means within template groups, the one-group
case unchanged, and position-resolved nodes refused over several groups (tiny model, constructed pairs)."""

from __future__ import annotations

import networkx as nx
import pytest
import torch

from sfc_core import attribution as A
from sfc_core.ablation import ablation_values, circuit_metric, latent_sets_metric, soft_masked_resid
from sfc_core.alignment import check_position_resolved, template_groups
from sfc_core.discovery import DiscoverConfig, discover, evaluate
from sfc_core.errors import InputError
from sfc_core.masks import candidate_latents
from sfc_core.nodes import is_end_id
from sfc_core.pairs import PairBatch, PromptPair
from tests.tiny import tiny_model, tiny_sae

# Two templates over a toy vocabulary: each role sits at a different raw position in each template.
#   template 0: BOS S  V  O  .  N  end       (name N at 5, verb V at 2)
#   template 1: BOS X  X  S  V  N  end       (name N at 5, verb V at 4)
# Rows 0-2: template 0, 7 tokens; rows 3-4: template 1, 7 tokens; row 5: template 0 with one filler token
# fewer (6 tokens: a third group). Corrupted prompts change the name N.
ROLES = {0: {"S": 1, "V": 2, "O": 3, "N": 5, "end": 6}, 1: {"S": 3, "V": 4, "N": 5, "end": 6}}
TEMPLATES = [0, 0, 0, 1, 1, 0]
GROUPS = [0, 0, 0, 1, 1, 2]


def _pairs_batch() -> PairBatch:
    g = torch.Generator().manual_seed(3)
    n, width = len(TEMPLATES), 7
    clean = torch.randint(1, 23, (n, width), generator=g)
    clean[:, 0] = 0
    corr = clean.clone()
    corr[:, 5] = (clean[:, 5] + 7) % 22 + 1
    last = torch.full((n,), width - 1)
    last[5] = width - 2  # row 5 is one token shorter (right padding after it)
    corr[5, 4] = (clean[5, 4] + 7) % 22 + 1
    clean[5, 6] = corr[5, 6] = 0
    valid = (torch.arange(width)[None] <= last[:, None]) & (torch.arange(width)[None] > 0)
    pairs = [PromptPair("c", "k", " a", " b", {"template": t}) for t in TEMPLATES]
    return PairBatch(clean, corr, last, torch.randint(0, 23, (n,), generator=g),
                     torch.randint(0, 23, (n,), generator=g), valid, pairs)


@pytest.fixture(scope="module")
def setup():
    model = tiny_model()
    saes = {f"blocks.{L}.hook_resid_post": tiny_sae(kind=k, hook=f"blocks.{L}.hook_resid_post", seed=L)
            for L, k in zip((0, 1), ("standard", "topk"))}
    batch = _pairs_batch()
    return model, saes, batch, A.prepare_runs(model, saes, batch)


def _old_rule(runs, site: int):
    """Mean ablation before template groups: one per-position mean over every pair ``[pos, d]``."""
    rec = runs.corrupted[site]
    m = runs.mask[..., None].to(rec.f.dtype)
    count, per_pos = m.sum(), m.sum(0)
    f_all, e_all = (rec.f * m).sum((0, 1)) / count, (rec.err * m).sum((0, 1)) / count
    seen = per_pos > 0
    return (torch.where(seen, (rec.f * m).sum(0) / per_pos.clamp(min=1), f_all),
            torch.where(seen, (rec.err * m).sum(0) / per_pos.clamp(min=1), e_all))


def test_groups_are_template_and_length(setup):
    *_, batch, _ = setup
    group, keys = template_groups(batch)
    assert group.tolist() == GROUPS
    assert keys == [("0", 7), ("1", 7), ("0", 6)]
    # no template ids: length alone groups
    bare = PairBatch(batch.clean_tokens, batch.corrupted_tokens, batch.last_pos, batch.answer_ids,
                     batch.wrong_ids, batch.valid_mask, [])
    assert template_groups(bare)[0].tolist() == [0, 0, 0, 0, 0, 1]


def test_per_position_mean_is_the_mean_over_role_aligned_tokens(setup):
    *_, runs = setup
    values = ablation_values(runs, "mean")
    for site in range(len(runs.sites)):
        rec = runs.corrupted[site]
        assert values.f[site].shape == rec.f.shape and values.err[site].shape == rec.err.shape  # per pair
        for i, t in enumerate(TEMPLATES):
            for role, p in ROLES[t].items():
                if p > int(runs.batch.last_pos[i]):
                    continue
                # the same role in every pair of i's group (same template, same length)
                same = [j for j in range(len(TEMPLATES)) if GROUPS[j] == GROUPS[i]]
                want_f = torch.stack([rec.f[j, ROLES[TEMPLATES[j]][role]] for j in same]).mean(0)
                want_e = torch.stack([rec.err[j, ROLES[TEMPLATES[j]][role]] for j in same]).mean(0)
                torch.testing.assert_close(values.f[site][i, p], want_f, rtol=0, atol=1e-12)
                torch.testing.assert_close(values.err[site][i, p], want_e, rtol=0, atol=1e-12)
        # the verb of template 0 (position 2) never mixes with template 1's filler at position 2
        assert not torch.allclose(values.f[site][0, 2], values.f[site][3, 2])
        # row 5 is a group of its own: its mean is its own corrupted value; its padding takes its token mean
        torch.testing.assert_close(values.f[site][5, 1:6], rec.f[5, 1:6], rtol=0, atol=1e-12)
        torch.testing.assert_close(values.f[site][5, 6], rec.f[5, 1:6].mean(0), rtol=0, atol=1e-12)
    # mean_all, zero and patch ignore groups
    assert ablation_values(runs, "mean_all").f[0].dim() == 1 and ablation_values(runs, "zero").f[0].dim() == 1


def test_one_group_is_bit_identical_to_the_old_rule(setup):
    model, saes, batch, _ = setup
    one = A.prepare_runs(model, saes, batch.subset([0, 1, 2]))
    values = ablation_values(one, "mean")
    for site in range(len(one.sites)):
        f, err = _old_rule(one, site)
        assert values.f[site].shape == f.shape  # one [pos, d] shared by every pair, as before
        assert torch.equal(values.f[site], f) and torch.equal(values.err[site], err)


def _group_runs(setup):
    model, saes, batch, runs = setup
    return runs, [(rows, A.prepare_runs(model, saes, batch.subset(rows))) for rows in ([0, 1, 2], [3, 4], [5])]


def test_ablated_passes_take_each_groups_means(setup):
    """Circuit metric, latent-set metric and the soft-masked pass over all groups equal the same passes run on
    each group alone (where the mean is the old single [pos, d] one), pair by pair."""
    runs, groups = _group_runs(setup)
    K = runs.space.node_at
    keep = [runs.space.keep_masks([K(0, 1), K(0, 4), K(1, runs.sites[1].d_sae)])]
    sets = [[K(0, 2)], [K(0, 5), K(1, 3)]]
    values = ablation_values(runs, "mean")
    whole = float(circuit_metric(runs, keep, values)[0]) * runs.n
    parts = sum(float(circuit_metric(g, keep, ablation_values(g, "mean"))[0]) * g.n for _, g in groups)
    assert whole == pytest.approx(parts, abs=1e-9)
    whole = latent_sets_metric(runs, sets, values) * runs.n
    parts = sum(latent_sets_metric(g, sets, ablation_values(g, "mean")) * g.n for _, g in groups)
    torch.testing.assert_close(whole, parts, rtol=0, atol=1e-9)
    cands = candidate_latents(runs)
    soft = [torch.full((len(c),), 0.4, dtype=torch.float64) for c in cands]
    got = runs.metric_from_resid(soft_masked_resid(runs, cands, soft, values, "mean"))
    for rows, g in groups:
        want = g.metric_from_resid(soft_masked_resid(g, cands, soft, ablation_values(g, "mean"), "mean"))
        torch.testing.assert_close(got[rows], want, rtol=0, atol=1e-9)


def test_position_resolved_nodes_refused_over_several_groups(setup):
    model, saes, batch, runs = setup
    with pytest.raises(InputError, match=r"one template and length: these 6 pairs come from 3 groups.*aggregate over "
                                         r"positions$") as info:
        discover(model, saes, batch, DiscoverConfig(aggregation="none", top_k=5, edges=False))
    assert info.value.fix == ("aggregation", "sum")  # the CLI words it --aggregate sum, the app as its toggle
    check_position_resolved(batch.subset([3, 4]))  # one group: fine
    d = discover(model, saes, batch.subset([0, 1, 2]), DiscoverConfig(aggregation="none", top_k=5, edges=False))
    assert all(d.graph.nodes[n]["position"] is not None for n in d.graph.nodes if not is_end_id(n))
    # a position-resolved circuit cannot be scored on pairs of several groups either
    G = nx.DiGraph()
    node = runs.space.node_at(0, 1, 2)
    G.add_node(node.id, hook_name=node.hook_name, feature=1, position=2, effect=1.0)
    with pytest.raises(InputError, match="one template and length"):
        evaluate(runs, G)
    assert evaluate(d.runs, G)["n_nodes"] == 1
    # whole-prompt nodes over several groups are fine
    assert discover(model, saes, batch, DiscoverConfig(top_k=5, edges=False)).graph.graph["scores"]["n_nodes"] == 5
