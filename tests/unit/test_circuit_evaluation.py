"""Circuit selection, graph, sfc-circuit/2 round trip, and faithfulness/completeness on tiny models."""

from __future__ import annotations

import json

import pytest
import torch

from sfc_core import attribution as A
from sfc_core import circuit as C
from sfc_core import evaluation as E
from sfc_core.ablation import ablation_values, circuit_metric
from sfc_core.edges import edge_effects
from sfc_core.errors import InputError
from tests.tiny import tiny_setup


@pytest.fixture(scope="module")
def runs():
    model, saes, batch = tiny_setup()
    return A.prepare_runs(model, saes, batch)


def test_select_rules(runs):
    attr = A.atp(runs)
    flat = torch.cat([e.abs() for e in attr.effects])
    top = C.select_nodes(attr, top_k=5)
    assert len(top) == 5
    got = sorted((abs(attr.space.value(attr.effects, n)) for n in top), reverse=True)
    assert got == pytest.approx(torch.sort(flat, descending=True).values[:5].tolist())
    thr = float(torch.sort(flat, descending=True).values[7])
    assert len(C.select_nodes(attr, node_threshold=thr)) == int((flat >= thr).sum())
    per = C.select_nodes(attr, top_k_per_layer=3)
    assert sorted(attr.space.site(n) for n in per) == [0, 0, 0, 1, 1, 1]
    for bad in ({}, {"top_k": 3, "node_threshold": 0.1}, {"top_k": 0}, {"node_threshold": -1.0}):
        with pytest.raises(InputError):
            C.select_nodes(attr, **bad)


def test_graph_stats_and_json_round_trip(runs, tmp_path):
    attr = A.atp(runs)
    nodes = C.select_nodes(attr, top_k=8)
    effects = {n: attr.space.value(attr.effects, n) for n in nodes}
    edges, _ = edge_effects(runs, nodes, effects)
    G = C.build_graph(attr, nodes, edges, edge_threshold=0.0, metadata={"model": "tiny", "method": "atp"}, n_layers=3)
    stats = C.circuit_stats(G)
    assert stats["nodes"] == 8
    assert stats["edges"] == G.number_of_edges() > 0
    assert sum(stats["nodes_per_layer"].values()) == 8
    G.graph["scores"] = {"faithfulness": 0.5, "completeness": 0.1}
    path = tmp_path / "c.json"
    C.save_circuit(G, path)
    doc = json.loads(path.read_text())
    assert doc["schema"] == "sfc-circuit/2" and doc["metadata"]["model"] == "tiny"
    G2 = C.load_circuit(path)
    assert C.to_json(G2) == C.to_json(G)
    sites = {n["id"]: n["site"] for n in doc["nodes"]}  # the file keeps every node field, site included
    assert all(sites[node.id] == attr.space.site(node) for node in nodes)
    keys = C.circuit_nodes(G2, attr.space)
    assert keys == [n for n in nodes]  # same nodes, same order
    # thresholded edges are a subset
    G3 = C.build_graph(attr, nodes, edges, edge_threshold=1e9)
    assert G3.number_of_edges() == 0


def test_load_circuit_bad_input(tmp_path):
    with pytest.raises(InputError, match="not found"):
        C.load_circuit(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        C.load_circuit(tmp_path / "bad.json")
    with pytest.raises(InputError, match="not a circuit"):
        C.load_circuit('{"schema": "other"}')
    with pytest.raises(InputError, match="names a node"):
        C.load_circuit('{"schema": "sfc-circuit/1", "nodes": [], "edges": [{"source": "a", "target": "b", "weight": 1}]}')


def test_faithfulness_end_points(runs):
    every = runs.space.all_nodes()
    scores = E.score_circuits(runs, [every, []])
    full, empty = scores
    assert full.faithfulness == pytest.approx(1.0, abs=1e-9)
    assert full.completeness == pytest.approx(0.0, abs=1e-9)
    assert empty.faithfulness == pytest.approx(0.0, abs=1e-9)
    assert empty.completeness == pytest.approx(1.0, abs=1e-9)
    assert full.m_full == pytest.approx(float(runs.m_clean.mean()), abs=1e-9)


def test_mean_ablation_is_the_corrupted_mean(runs):
    """With one site and only ε kept, the site's features are replaced by their corrupted-token means."""
    rec = runs.corrupted[0]
    m = runs.mask[..., None].double()
    ref = (rec.f * m).sum((0, 1)) / m.sum()
    torch.testing.assert_close(ablation_values(runs, "mean_all").f[0], ref)
    per_pos = ablation_values(runs, "mean").f[0]
    # row 0 is one token shorter, so it is a template group of its own (sfc_core.alignment): values per pair
    assert per_pos.shape == rec.f.shape
    torch.testing.assert_close(per_pos[1:, 3], rec.f[1:, 3].mean(0).expand(3, -1))
    torch.testing.assert_close(per_pos[0, 3], rec.f[0, 3])
    ref_rows = (rec.f[1:] * m[1:]).sum((0, 1)) / m[1:].sum()
    torch.testing.assert_close(per_pos[1, 0], ref_rows)  # BOS: no real token there, the group's all-token mean
    zero = ablation_values(runs, "zero")
    assert float(zero.f[1].abs().sum()) == 0.0
    with pytest.raises(InputError):
        ablation_values(runs, "resample")


def test_patch_ablation_is_activation_patching(runs):
    """Patch ablation gives each pair its own corrupted values: ablating every node reproduces
    the corrupted run, and ablating one node alone is exact activation patching of it."""
    patch = ablation_values(runs, "patch")
    assert patch.f[0].shape == runs.corrupted[0].f.shape
    empty = E.score_circuits(runs, [[]], "patch")[0]
    assert empty.m_empty == pytest.approx(float(runs.m_corrupted.mean()), abs=1e-9)
    every = runs.space.all_nodes()
    for node in (runs.space.node_at(0, 3), runs.space.node_at(1, runs.sites[1].d_sae)):
        rest = [n for n in every if n != node]
        score = E.score_circuits(runs, [rest], "patch")[0]
        exact = float(A.exact_effects(runs, [node])[0])
        assert score.m_circuit - score.m_full == pytest.approx(exact, abs=1e-9)


def test_ablated_metric_matches_hooked_reference(runs):
    """Keep two features at site 0 and everything at site 1; compare with a hand-written TL hook run."""
    model = runs.model
    means = ablation_values(runs, "mean")
    site0 = runs.sites[0]
    keep_feats = [0, 3]
    K = runs.space.node_at
    nodes = [K(0, k) for k in keep_feats] + [K(1, k) for k in range(runs.sites[1].d_sae + 1)]
    got = circuit_metric(runs, [runs.space.keep_masks(nodes)], means)[0]

    def hook(act, hook):  # noqa: ARG001
        f = site0.sae.encode(act)
        f = torch.cat([torch.zeros_like(f[:, :1]), f[:, 1:]], 1)
        keep = torch.zeros(f.shape[-1], dtype=torch.bool)
        keep[keep_feats] = True
        new = site0.sae.decode(torch.where(keep, f, means.f[0])) + means.err[0]
        return torch.cat([act[:, :1], new[:, 1:]], 1)

    b = runs.batch
    logits = model.run_with_hooks(b.clean_tokens, fwd_hooks=[(site0.hook_name, hook)])
    rows = torch.arange(b.n)
    last = logits[rows, b.last_pos]
    ref = (last[rows, b.answer_ids] - last[rows, b.wrong_ids]).mean()
    assert float(got) == pytest.approx(float(ref), abs=1e-9)


def test_curve_and_random_baseline(runs):
    attr = A.atp(runs)
    curve = E.faithfulness_curve(runs, attr.effects, [1, 5, 50])
    assert curve["sizes"] == [1, 5, 50]
    assert len(curve["random_faithfulness"]) == 3
    ranked = runs.space.ranked(attr.effects)
    direct = E.score_circuits(runs, [ranked[:n] for n in (1, 5, 50)])
    assert curve["faithfulness"] == pytest.approx([s.faithfulness for s in direct], abs=1e-12)
    assert curve["completeness"] == pytest.approx([s.completeness for s in direct], abs=1e-12)
    assert curve["faithfulness"][-1] == pytest.approx(1.0, abs=1e-9)  # 50 nodes ⊇ every node with an effect
    with pytest.raises(InputError):
        E.faithfulness_curve(runs, attr.effects, [])


def test_circuit_file_latent_index_d_sae_is_not_an_error_node(runs):
    """A file naming latent d_sae is rejected (it used to be read silently as the error node ε)."""
    import networkx as nx

    hook, d = runs.sites[0].hook_name, runs.sites[0].d_sae
    G = nx.DiGraph()
    G.add_node(f"{hook}/{d}", hook_name=hook, feature=d, position=None)
    with pytest.raises(InputError, match=f"feature {d} is out of range"):
        C.circuit_nodes(G, runs.space)
    G = nx.DiGraph()
    G.add_node(f"{hook}/error", hook_name=hook, feature="error", position=None)
    assert C.circuit_nodes(G, runs.space) == [runs.space.errors()[0]]
    G.add_node("x/abc", hook_name=hook, feature="abc", position=None)
    with pytest.raises(InputError, match="feature must be an integer or 'error'"):
        C.circuit_nodes(G, runs.space)
