"""Pair batches (issue 16 point 6): attribution and circuit scores streamed over pair batches equal the one-batch
results to 1e-5, for every attribution method, both aggregations, every ablation and several template groups."""

from __future__ import annotations

import pytest
import torch

from sfc_core import attribution as A
from sfc_core.ablation import ablation_values, circuit_metric
from sfc_core.batching import attribute_pairs, batch_slices, circuit_metric_pairs, pair_batch_size
from sfc_core.errors import InputError
from sfc_core.pairs import PairBatch, PromptPair
from tests.tiny import tiny_batch, tiny_model, tiny_sae

HOOKS = ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post")


def _setup(n: int = 9, templates=("a", "a", "b")):
    model = tiny_model()
    saes = {h: tiny_sae(hook=h, seed=i, kind=k) for i, (h, k) in enumerate(zip(HOOKS, ("standard", "topk")))}
    raw = tiny_batch(n=n, length=8, seed=3)
    raw.last_pos[3] = 5  # a third length: three template groups with the templates below
    mask = torch.arange(8)[None] <= raw.last_pos[:, None]
    mask[:, 0] = False
    pairs = [PromptPair("c", "d", " e", " f", {"template": templates[i % len(templates)]}) for i in range(n)]
    batch = PairBatch(raw.clean_tokens, raw.corrupted_tokens, raw.last_pos, raw.answer_ids, raw.wrong_ids, mask,
                      pairs)
    return model, saes, batch


@pytest.mark.parametrize("method", ["atp", "atp_star", "ig", "exact"])
@pytest.mark.parametrize("aggregation", ["sum", "none"])
def test_attribution_in_pair_batches_equals_one_batch(method, aggregation):
    model, saes, batch = _setup()
    whole = A.attribute(A.prepare_runs(model, saes, batch), method, aggregation, steps=4)
    for size in (1, 2, 4):
        got = attribute_pairs(model, saes, batch, method, aggregation, steps=4, pair_batch=size)
        assert got.timings_s["batches"] == len(batch_slices(batch.n, size)) > 1
        for e, w in zip(got.effects, whole.effects):
            assert e.shape == w.shape
            torch.testing.assert_close(e, w, atol=1e-5, rtol=1e-5)
        for a, w in zip(got.activations, whole.activations):
            torch.testing.assert_close(a, w, atol=1e-5, rtol=1e-5)
        assert got.m_clean == pytest.approx(whole.m_clean, abs=1e-5)
        assert got.m_corrupted == pytest.approx(whole.m_corrupted, abs=1e-5)
        assert got.n_pairs == batch.n and got.hook_names == whole.hook_names


@pytest.mark.parametrize("ablation", ["mean", "mean_all", "zero", "patch"])
@pytest.mark.parametrize("templates", [("a",), ("a", "a", "b")])
def test_circuit_metric_in_pair_batches_equals_one_batch(ablation, templates):
    model, saes, batch = _setup(templates=templates)
    runs = A.prepare_runs(model, saes, batch)
    g = torch.Generator().manual_seed(0)
    keeps = [[torch.ones(25, dtype=torch.bool)] * 2, [torch.zeros(25, dtype=torch.bool)] * 2]
    keeps += [[torch.rand(25, generator=g) > 0.5 for _ in HOOKS] for _ in range(3)]
    whole = circuit_metric(runs, keeps, ablation_values(runs, ablation))
    for size in (2, 4):
        got = circuit_metric_pairs(model, saes, batch, keeps, ablation, pair_batch=size)
        torch.testing.assert_close(got, whole.double(), atol=1e-5, rtol=1e-5)


def test_position_resolved_keeps_in_pair_batches():
    model, saes, batch = _setup(templates=("a",))
    batch = batch.subset([i for i in range(batch.n) if int(batch.last_pos[i]) == 7])  # one group, one length
    runs = A.prepare_runs(model, saes, batch)
    g = torch.Generator().manual_seed(1)
    keeps = [[torch.rand(batch.pos, 25, generator=g) > 0.4 for _ in HOOKS] for _ in range(2)]
    whole = circuit_metric(runs, keeps, ablation_values(runs, "mean"))
    torch.testing.assert_close(circuit_metric_pairs(model, saes, batch, keeps, "mean", pair_batch=2),
                               whole.double(), atol=1e-5, rtol=1e-5)
    with pytest.raises(InputError, match="span the batch"):
        circuit_metric_pairs(model, saes, batch, [[k[:3] for k in keeps[0]]], "mean", pair_batch=2)


def test_batch_sizes():
    assert [(s.start, s.stop) for s in batch_slices(100, 50)] == [(0, 50), (50, 100)]
    assert [(s.start, s.stop) for s in batch_slices(100, 40)] == [(0, 33), (33, 67), (67, 100)]
    assert batch_slices(3, 10) == [slice(0, 3)]
    model, saes, _ = _setup()
    small, large = pair_batch_size(model, saes, 64, budget_gb=2.0), pair_batch_size(model, saes, 8, budget_gb=2.0)
    assert 1 <= small < large
    with pytest.raises(InputError, match="memory budget"):
        pair_batch_size(model, saes, 8, budget_gb=0.01)
    with pytest.raises(InputError, match="pairs per batch"):
        attribute_pairs(model, saes, _setup()[2], pair_batch=0)


def test_discovery_streams_when_pairs_need_several_batches():
    """discover() on pairs over one batch streams: the same nodes, effects, edges and scores as one batch."""
    from sfc_core.batching import PairStream
    from sfc_core.discovery import DiscoverConfig, discover, evaluate, verify

    model, saes, batch = _setup(templates=("a",))
    cfg = DiscoverConfig(top_k=6, edges=True)
    whole = discover(model, saes, batch, cfg)
    streamed = discover(model, saes, batch, cfg, pair_batch=3)
    assert isinstance(streamed.runs, PairStream) and not isinstance(whole.runs, PairStream)
    assert list(streamed.graph.nodes) == list(whole.graph.nodes)
    for n in whole.graph.nodes:
        for key in ("effect", "activation"):
            a, b = whole.graph.nodes[n][key], streamed.graph.nodes[n][key]
            assert (a is None and b is None) or a == pytest.approx(b, abs=1e-5)
    assert set(streamed.graph.edges) == set(whole.graph.edges)
    for u, v, w in whole.graph.edges(data="weight"):
        assert streamed.graph.edges[u, v]["weight"] == pytest.approx(w, abs=1e-5)
    for key in ("faithfulness", "completeness", "m_full", "m_empty"):
        assert streamed.graph.graph["scores"][key] == pytest.approx(whole.graph.graph["scores"][key], abs=1e-5)
    curve_w = evaluate(whole.runs, whole.graph, [1, 3], "mean")["curve"]
    curve_s = evaluate(streamed.runs, streamed.graph, [1, 3], "mean")["curve"]
    for key in ("faithfulness", "random_faithfulness", "completeness"):
        assert curve_s[key] == pytest.approx(curve_w[key], abs=1e-5)
    assert [r["exact"] for r in verify(streamed.runs, streamed.graph)["nodes"]] == pytest.approx(
        [r["exact"] for r in verify(whole.runs, whole.graph)["nodes"]], abs=1e-5)
    t_w = whole.target_search(0.5)
    t_s = streamed.target_search(0.5)
    assert (t_s.n_nodes, t_s.reached) == (t_w.n_nodes, t_w.reached)


def test_selection_methods_refuse_pairs_beyond_one_batch():
    from sfc_core.discovery import DiscoverConfig, discover

    model, saes, batch = _setup()
    with pytest.raises(InputError, match="runs every pair in one batch"):
        discover(model, saes, batch, DiscoverConfig(method="mask", mask_steps=2), pair_batch=3)


def test_open_runs_and_head():
    """open_runs gives one PairRuns when the pairs fit one batch, else a PairStream whose head() is its first batch."""
    from sfc_core.attribution import PairRuns
    from sfc_core.batching import PairStream, open_runs

    model, saes, batch = _setup()
    assert isinstance(open_runs(model, saes, batch), PairRuns)  # 9 tiny pairs fit the default budget
    stream = open_runs(model, saes, batch, pair_batch=4)
    assert isinstance(stream, PairStream) and stream.n == batch.n and len(stream.slices) == 3
    head = stream.head()
    assert isinstance(head, PairRuns) and head.n == 3 and stream.head() is head
    torch.testing.assert_close(head.m_clean, A.prepare_runs(model, saes, batch.subset(slice(0, 3))).m_clean)
