"""Held-out scoring of a circuit (sfc_core/generalisation.py) on a tiny model: the same numbers as evaluate()."""

from __future__ import annotations

import pytest

from sfc_core import attribution as A
from sfc_core.circuit import build_graph, select_nodes
from sfc_core.discovery import evaluate
from sfc_core.errors import InputError
from sfc_core.generalisation import heldout_scores, heldout_split
from tests.tiny import tiny_batch, tiny_setup


@pytest.fixture(scope="module")
def setup():
    model, saes, batch = tiny_setup()
    inside = A.prepare_runs(model, saes, batch)
    other = A.prepare_runs(model, saes, tiny_batch(n=5, seed=7))
    attr = A.atp(inside)
    G = build_graph(attr, select_nodes(attr, top_k=6), {}, 0.0, {}, 3)
    return G, inside, other


@pytest.mark.parametrize("ablation", ["mean", "zero"])
def test_each_side_is_evaluate_on_its_own_runs(setup, ablation):
    G, inside, other = setup
    got = heldout_scores(G, inside, other, ablation, by="seed")
    for side, runs in (("in_sample", inside), ("heldout", other)):
        want = evaluate(runs, G, None, ablation)
        assert got[side]["faithfulness"] == pytest.approx(want["faithfulness"], abs=1e-12)
        assert got[side]["completeness"] == pytest.approx(want["completeness"], abs=1e-12)
        assert got[side]["m_full"] == pytest.approx(want["m_full"], abs=1e-12)
    assert got["in_sample"]["n_pairs"] == 4 and got["heldout"]["n_pairs"] == 5 and got["n_nodes"] == 6
    assert got["drop"] == pytest.approx(got["in_sample"]["faithfulness"] - got["heldout"]["faithfulness"])
    same = heldout_scores(G, inside, inside, ablation)
    assert same["drop"] == 0.0


def test_positional_circuits_are_refused_across_templates(setup):
    _, inside, other = setup
    attr = A.atp(inside, aggregation="none")
    G = build_graph(attr, select_nodes(attr, top_k=4), {}, 0.0, {}, 3)
    with pytest.raises(InputError, match="position-resolved circuit cannot be scored on other templates"):
        heldout_scores(G, inside, other, by="templates")


def test_bad_split_options():
    with pytest.raises(InputError, match="held-out split must be one of names, templates, seed"):
        heldout_split(None, "ioi", 4, by="colour")
    with pytest.raises(InputError, match="positive integer"):
        heldout_split(None, "ioi", 0, by="names")
