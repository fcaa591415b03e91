"""No behaviour change across the issue-11 refactor (one node model, one ablation module, one registry).

``data/regression_main.{json,safetensors}`` were recorded on the bundled model with the engine of commit
d393d65 (before the refactor), 20 pairs of IOI and of SVA: AtP, IG and exact effects, the AtP circuit with
its edges, faithfulness curves under every ablation, ``evaluate`` of a circuit, a 10-step mask, FAP and
FAP-Synergy selections, and the feature panel's ablation. This test recomputes each with today's engine
and asserts equality to 1e-6 (relative and absolute), node for node.

The one intended change: the feature panel's ``mean`` ablation was a single mean over all corrupted tokens;
it is now the per-position mean that ``mean`` means everywhere else, and the old figure is ``mean_all``'s.

Re-recorded for template-aware positions (issue 12, point 5; ``data/record_regression.py``, which first
reproduced the d393d65 files exactly): mean ablation now averages each position within the pair's template
group (template id + token length, :mod:`sfc_core.alignment`), and these 20 IOI pairs form 6 groups, the SVA
pairs 2. So the figures that ablate to ``mean`` moved, on both tasks: ``curve_mean`` (max |diff| 1.32 IOI,
0.139 SVA), ``evaluate_graph`` (1.78, 1.93), ``mask10.losses`` (0.385, 0.666; same mask nodes) and the
FAP-Synergy synergies (0.0039, 0.094; same selection); the panel's ``mean`` is a new figure. Every other
figure (runs, AtP / IG / exact effects, activations, FAP scores, the AtP circuit and its edges, the zero,
patch and mean_all curves, the zero and mean_all panel) is unchanged to the bit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

pytestmark = pytest.mark.integration

DATA = Path(__file__).parent / "data" / "regression_main"
TOL = {"rel": 1e-6, "abs": 1e-6}


@pytest.fixture(scope="module")
def recorded():
    return json.loads(DATA.with_suffix(".json").read_text()), load_file(str(DATA.with_suffix(".safetensors")))


@pytest.fixture(scope="module")
def bundled():
    from sfc_core.model import load_model
    from sfc_core.saes import load_bundled_saes

    model = load_model()
    return model, load_bundled_saes(model)


@pytest.fixture(scope="module", params=["ioi", "sva"])
def task(request, bundled):
    from sfc_core.discovery import DiscoverConfig, discover
    from sfc_core.tasks import get_task_pairs

    model, saes = bundled
    pairs = get_task_pairs(model, request.param, n=20)
    return request.param, discover(model, saes, pairs, DiscoverConfig(method="atp", top_k=30, edges=True))


@pytest.fixture(scope="module")
def ig(task):
    from sfc_core.attribution import attribute

    return attribute(task[1].runs, "ig", steps=10)


def _close(got, want, what):
    assert got == pytest.approx(want, **TOL), what


def test_runs_and_node_effects(task, recorded, ig):
    from sfc_core.attribution import exact_effects
    from sfc_core.nodes import parse_id

    name, d = task
    doc, tensors = recorded[0][name], recorded[1]
    runs = d.runs
    _close(runs.m_clean.tolist(), doc["m_clean"], "m(clean)")
    _close(runs.m_corrupted.tolist(), doc["m_corrupted"], "m(corrupted)")
    for i in range(len(runs.sites)):
        for key, got in (("atp", d.attribution.effects[i]), ("act", d.attribution.activations[i]), ("ig", ig.effects[i])):
            _close(got.tolist(), tensors[f"{name}.{key}.{i}"].tolist(), f"{key} at site {i}")
    ids = list(doc["exact_top50"])
    exact = exact_effects(runs, [parse_id(i) for i in ids])
    _close(exact.tolist(), [doc["exact_top50"][i] for i in ids], "exact patching")


def test_circuit_and_edges(task, recorded):
    from sfc_core.circuit import to_json

    name, d = task
    want = recorded[0][name]["atp_graph"]
    got = to_json(d.graph)
    assert [n["id"] for n in got["nodes"]] == [n["id"] for n in want["nodes"]]
    for g, w in zip(got["nodes"], want["nodes"]):
        for field in ("hook_name", "layer", "feature", "position"):
            assert g[field] == w[field], (g["id"], field)
        for field in ("effect", "activation"):
            if w[field] is None:
                assert g[field] is None
            else:
                _close(g[field], w[field], (g["id"], field))
    assert [(e["source"], e["target"]) for e in got["edges"]] == [(e["source"], e["target"]) for e in want["edges"]]
    _close([e["weight"] for e in got["edges"]], [e["weight"] for e in want["edges"]], "edge weights")


@pytest.mark.parametrize("ablation", ["mean", "zero", "patch", "mean_all"])
def test_faithfulness_curves(task, recorded, ig, ablation):
    from sfc_core.evaluation import faithfulness_curve

    name, d = task
    want = recorded[0][name][f"curve_{ablation}"]
    got = faithfulness_curve(d.runs, ig.effects, [5, 10, 20, 50], ablation)
    assert got.keys() == want.keys()
    for key in want:
        if key in ("sizes", "n_nodes", "ablation"):
            assert got[key] == want[key]
        else:
            _close(got[key], want[key], key)


def test_evaluate_and_selections(task, recorded):
    from sfc_core.discovery import evaluate
    from sfc_core.fap import fap_scores, fap_select, fap_synergy_select
    from sfc_core.masks import MaskConfig, train_mask

    name, d = task
    doc, tensors = recorded[0][name], recorded[1]
    runs = d.runs
    got = evaluate(runs, d.graph, sizes=[5, 10], ablation="mean")
    want = doc["evaluate_graph"]
    for key in ("faithfulness", "completeness", "m_circuit", "m_complement", "m_empty", "m_full"):
        _close(got[key], want[key], key)
    for key in ("faithfulness", "completeness", "random_faithfulness", "random_completeness"):
        _close(got["curve"][key], want["curve"][key], key)

    mask = train_mask(runs, MaskConfig(steps=10))
    assert [n.id for n in mask.nodes(runs)] == doc["mask10"]["nodes"]
    _close(mask.losses, doc["mask10"]["losses"], "mask losses")

    scores = fap_scores(runs)
    for i, s in enumerate(scores):
        _close(s.tolist(), tensors[f"{name}.fap.{i}"].tolist(), f"FAP at site {i}")
    assert [n.id for n in fap_select(runs, 20, scores).nodes] == doc["fap20"]
    syn = fap_synergy_select(runs, 10, synergy_pool=6, scores=scores)
    assert [n.id for n in syn.nodes] == doc["fap_synergy10"]["nodes"]
    got_syn = {f"{a.id}|{b.id}": v for (a, b), v in syn.synergy.items()}
    assert got_syn.keys() == doc["fap_synergy10"]["synergy"].keys()
    _close(list(got_syn.values()), list(doc["fap_synergy10"]["synergy"].values()), "synergies")


def test_feature_panel_ablation(task, recorded):
    from sfc_core.features import ablate_feature
    from sfc_core.nodes import parse_id

    name, d = task
    doc = recorded[0][name]["ablate_feature"]
    node = parse_id(doc["node"])
    site, k = d.runs.space.site(node), d.runs.space.column(node)
    zero = ablate_feature(d.runs, site, k, "zero")
    _close(zero["after"], doc["zero"]["after"], "zero ablation")
    # the panel's old "mean" (one mean over every corrupted token) is what "mean_all" means everywhere
    _close(ablate_feature(d.runs, site, k, "mean_all")["after"], doc["mean_all"]["after"], "mean_all ablation")
    _close(ablate_feature(d.runs, site, k, "mean")["after"], doc["mean"]["after"], "mean ablation")
