"""Scores on every circuit, the target-faithfulness search, and the KL metric's ranking rule (tiny models)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from sfc_core import attribution as A
from sfc_core import evaluation as E
from sfc_core.discovery import DiscoverConfig, discover
from sfc_core.errors import InputError
from sfc_core.pairs import PairBatch
from tests.tiny import tiny_setup


@pytest.fixture(scope="module")
def setup():
    model, saes, b = tiny_setup()
    batch = PairBatch(b.clean_tokens, b.corrupted_tokens, b.last_pos, b.answer_ids, b.wrong_ids, b.valid_mask, [])
    return model, saes, batch


@pytest.fixture(scope="module")
def runs(setup):
    model, saes, batch = setup
    return A.prepare_runs(model, saes, batch)


def _faith(runs, nodes):
    return E.score_circuits(runs, [nodes])[0].faithfulness


@pytest.mark.parametrize("target", [0.3, 0.6, 0.9])
def test_search_returns_a_crossing_size(runs, target):
    ranked = runs.space.ranked(A.atp(runs).effects)
    res = E.smallest_faithful(runs, ranked, target)
    n = res.n_nodes
    assert res.reached and res.pool == len(ranked)
    assert _faith(runs, ranked[:n]) == pytest.approx(res.scores.faithfulness, abs=1e-12)
    assert res.scores.faithfulness >= target
    assert res.tried[n] == pytest.approx(res.scores.faithfulness, abs=1e-12)
    if n > 1:  # the size just below was evaluated and misses the target
        assert res.tried[n - 1] < target and _faith(runs, ranked[:n - 1]) < target
    assert all(v < target for k, v in res.tried.items() if k < n)  # no smaller size tried reaches it


def test_unreachable_target_reports_the_best(runs):
    ranked = runs.space.ranked(A.atp(runs).effects)[:3]
    res = E.smallest_faithful(runs, ranked, 1.5)
    assert not res.reached
    best = max(v for v in res.tried.values() if v is not None)
    assert res.scores.faithfulness == pytest.approx(best, abs=1e-12) and res.tried[res.n_nodes] == best
    for bad in (0, -0.1, 1.6, float("nan"), "x"):
        with pytest.raises(InputError, match="target faithfulness"):
            E.smallest_faithful(runs, ranked, bad)
    with pytest.raises(InputError, match="no node has a non-zero effect"):
        E.smallest_faithful(runs, [], 0.5)


def test_discover_scores_its_circuit_and_grows_to_a_target(setup, runs):
    model, saes, batch = setup
    d = discover(model, saes, batch, DiscoverConfig(top_k=5, edges=False))
    nodes = runs.space.ranked(d.attribution.effects)[:5]
    s = d.graph.graph["scores"]
    want = E.score_circuits(d.runs, [nodes])[0]
    assert (s["faithfulness"], s["completeness"], s["ablation"], s["n_nodes"]) == \
        (pytest.approx(want.faithfulness), pytest.approx(want.completeness), "mean", 5)
    assert d.scores(d.select(top_k=5), "zero")["faithfulness"] == \
        pytest.approx(E.score_circuits(d.runs, [nodes], "zero")[0].faithfulness)

    t = discover(model, saes, batch, DiscoverConfig(top_k=None, target_faithfulness=0.7, edges=True))
    search = t.graph.graph["target_search"]
    assert search["reached"] and t.graph.graph["scores"]["faithfulness"] >= 0.7
    assert t.graph.graph["scores"]["n_nodes"] == search["n_nodes"] == len(t.graph) - 2 * ("embed" in t.graph)
    assert t.select(target_faithfulness=0.7).graph["target_search"] == search  # cached, same answer
    with pytest.raises(InputError, match="choose exactly one"):
        t.select(top_k=3, target_faithfulness=0.7)


def test_option_checks_need_no_model():
    with pytest.raises(InputError, match="chooses its own circuit"):
        DiscoverConfig(method="mask", target_faithfulness=0.8).check()
    with pytest.raises(InputError, match=r"in \(0, 1.5\]"):
        DiscoverConfig(target_faithfulness=2.0).check()
    for method in ("atp", "fap", "fap-synergy"):
        with pytest.raises(InputError, match="zero gradient"):
            DiscoverConfig(method=method, metric="kl").check()
    for method in ("ig", "exact", "mask"):
        DiscoverConfig(method=method, metric="kl").check()


def test_kl_ranking_is_not_identically_zero(setup):
    """Under −KL the clean-run gradient vanishes (so AtP is refused), but IG's path gradient does not."""
    model, saes, batch = setup
    runs = A.prepare_runs(model, saes, batch, metric="kl")
    assert max(float(e.abs().max()) for e in A.atp(runs).effects) < 1e-6
    ig = A.ig(runs, steps=5)
    assert max(float(e.abs().max()) for e in ig.effects) > 1e-3


def test_cli_target_checks_fail_fast(tmp_path):
    from sfc_core.cli import app

    out = tmp_path / "c.json"
    r = CliRunner().invoke(app, ["discover", "--task", "ioi", "--target-faithfulness", "2", "--out", str(out)])
    assert r.exit_code == 2 and r.output.strip() == "error: target faithfulness must be in (0, 1.5], not 2.0"
    r = CliRunner().invoke(app, ["discover", "--task", "ioi", "--top-k", "5", "--target-faithfulness", "0.8",
                                 "--out", str(out)])
    assert r.exit_code == 2 and "choose one of" in r.output
    r = CliRunner().invoke(app, ["discover", "--task", "ioi", "--method", "atp", "--metric", "kl", "--out", str(out)])
    assert r.exit_code == 2 and "zero gradient" in r.output
    r = CliRunner().invoke(app, ["discover", "--task", "ioi", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "is a folder" in r.output
    assert not out.exists()
