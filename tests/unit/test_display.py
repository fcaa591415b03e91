"""The app's display helpers (pages/_shared/display.py): pure functions, no model and no Streamlit needed."""

from __future__ import annotations

import json
import math
import re

import networkx as nx
import pandas as pd
import pytest

from pages._shared import display as S
from sfc_core.ablation import ABLATIONS
from sfc_core.errors import InputError
from sfc_core.pairs import PromptPair

P = [PromptPair("When Mary and John went out, John gave it to", "When Mary and John went out, Mary gave it to",
                " Mary", " John"),
     PromptPair("The keys to the cabinet", "The key to the cabinet", " are", " is")]


def test_table_round_trip_and_empty_rows():
    df = S.table_from_pairs(P)
    assert list(df.columns) == ["clean", "corrupted", "answer", "wrong_answer", "template"]
    df.loc[len(df)] = [None, float("nan"), None, "", None]  # a fresh editor row
    pairs = S.pairs_from_table(df)
    assert [p.to_record() for p in pairs] == [p.to_record() for p in P]
    assert S.pairs_from_table(S.records_from_table(df)) == pairs


def test_table_keeps_template_ids():
    """Built-in tasks' template ids survive the editor table, as ints (positions group by them)."""
    from sfc_core.pairs import PromptPair

    pairs = [PromptPair("a b", "a c", " x", " y", {"template": 3}), PromptPair("d e", "d f", " x", " y")]
    df = S.table_from_pairs(pairs)
    assert df["template"].tolist()[0] == "3" and df["template"].isna().tolist()[1]
    back = S.pairs_from_table(df)
    assert back[0].meta == {"template": 3} and back[1].meta == {}
    df.loc[1, "template"] = "abba"
    assert S.pairs_from_table(df)[1].meta == {"template": "abba"}


@pytest.mark.parametrize("rows, needle", [
    ([], "no prompt pairs"),
    ([{"clean": "", "corrupted": "x", "answer": " a", "wrong_answer": " b"}], "row 1: empty clean"),
    ([{"clean": "x", "corrupted": "y", "answer": None, "wrong_answer": " b"}], "row 1: missing key(s) answer"),
])
def test_bad_tables_name_the_problem(rows, needle):
    with pytest.raises(InputError, match=re.escape(needle)):
        S.pairs_from_table(pd.DataFrame(rows, columns=list(S.PAIR_COLUMNS)))


def test_upload_reads_both_spellings():
    ours = json.dumps(P[0].to_record())
    theirs = json.dumps({"clean_prefix": "The keys to the cabinet", "patch_prefix": "The key to the cabinet",
                         "clean_answer": " are", "patch_answer": " is", "case": "plural"})
    pairs = S.parse_pairs_upload(f"{ours}\n\n{theirs}\n".encode())
    assert pairs[0] == P[0] and pairs[1].corrupted == "The key to the cabinet" and pairs[1].meta == {"case": "plural"}


@pytest.mark.parametrize("data, needle", [
    (b"\xff\xfe\x00garbage", "not UTF-8"),
    (b"clean,corrupted\nfoo,bar\n", "line 1: not valid JSON"),
    (b'{"clean": "x"}\n', "missing key(s)"),
    (b"\n\n", "no prompt pairs"),
    (b"[1, 2]\n", "expected a JSON object"),
])
def test_upload_errors_say_what_to_fix(data, needle):
    with pytest.raises(InputError, match=re.escape(needle)):
        S.parse_pairs_upload(data, "pairs.jsonl")


def test_input_key_is_stable_and_sensitive():
    a = S.input_key(pairs=[p.to_record() for p in P], cfg={"method": "atp"})
    assert a == S.input_key(cfg={"method": "atp"}, pairs=[p.to_record() for p in P])
    assert a != S.input_key(pairs=[p.to_record() for p in P], cfg={"method": "ig"})


def test_node_info_reads_ids_through_the_node_model():
    """Nodes without attributes (as in a hand-written circuit) are read from their ids by sfc_core.nodes."""
    G = nx.DiGraph()
    G.add_nodes_from(["blocks.7.hook_resid_post/1234", "blocks.7.hook_resid_post/error@5", "embed"])
    info = S.node_info(G, "blocks.7.hook_resid_post/1234")
    assert (info["hook_name"], info["feature"], info["position"], info["kind"]) == (
        "blocks.7.hook_resid_post", 1234, None, "feature")
    info = S.node_info(G, "blocks.7.hook_resid_post/error@5")
    assert (info["hook_name"], info["feature"], info["position"], info["kind"]) == (
        "blocks.7.hook_resid_post", "error", 5, "error")
    assert S.node_info(G, "embed")["kind"] == "embed"
    assert S.ranked_node_ids(G) == ["blocks.7.hook_resid_post/1234", "blocks.7.hook_resid_post/error@5"]
    assert S.circuit_hooks(G) == ["blocks.7.hook_resid_post"]
    assert "ε @5" in S.node_label(G, "blocks.7.hook_resid_post/error@5")
    for bad in ("nonsense", "blocks.7/abc", "blocks.7/3@x"):
        with pytest.raises(InputError):
            S.node_info(G, bad)


def _graph():
    G = nx.DiGraph(n_layers=30, method="atp")
    G.add_node("blocks.3.hook_resid_post/5", hook_name="blocks.3.hook_resid_post", layer=3, site=0, feature=5,
               position=None, effect=-0.5, activation=1.0)
    G.add_node("blocks.7.hook_resid_post/error", hook_name="blocks.7.hook_resid_post", layer=7, site=1,
               feature="error", position=None, effect=0.9, activation=2.0)
    G.add_node("metric", hook_name="metric", layer=30, site=2, feature="metric", position=None, effect=None,
               activation=None)
    G.add_edge("blocks.3.hook_resid_post/5", "blocks.7.hook_resid_post/error", weight=0.1)
    return G


def test_node_helpers():
    G = _graph()
    assert S.ranked_node_ids(G) == ["blocks.7.hook_resid_post/error", "blocks.3.hook_resid_post/5"]
    assert S.node_info(G, "blocks.3.hook_resid_post/5")["kind"] == "feature"
    assert S.node_info(G, "blocks.7.hook_resid_post/error")["kind"] == "error"
    assert S.node_info(G, "metric")["kind"] == "metric"
    info = S.node_info(G, "blocks.3.hook_resid_post/5")
    assert (info["hook_name"], info["feature"], info["position"], info["effect"], info["activation"]) == (
        "blocks.3.hook_resid_post", 5, None, -0.5, 1.0)
    assert S.inner_node_ids(G) == ["blocks.3.hook_resid_post/5", "blocks.7.hook_resid_post/error"]
    assert S.circuit_hooks(G) == ["blocks.3.hook_resid_post", "blocks.7.hook_resid_post"]
    assert "L3 #5" in S.node_label(G, "blocks.3.hook_resid_post/5")
    labels = S.feature_labels(G, lambda hook, f: [" Mary", " John"])
    assert labels == {"blocks.3.hook_resid_post/5": "promotes: ' Mary', ' John'"}
    assert S.feature_labels(G, lambda hook, f: 1 / 0) == {}  # a failing lookup never breaks the graph


def test_highlight_html_alpha_is_proportional_and_escaped():
    out = S.highlight_html(["<b>", " a", "\n"], [0.0, 2.0, 1.0], max_activation=2.0, mark=1)
    alphas = [float(a) for a in re.findall(r"rgba\(255, 127, 14, ([0-9.]+)\)", out)]
    assert alphas == [0.0, 1.0, 0.5]
    assert "&lt;b&gt;" in out and "<b>" not in out and "↵" in out
    assert out.count('class="sfc-tok"') == 3 and "border-bottom" in out


def test_ablation_and_steering_tables():
    res = {"metric": "logit_diff", "ablation": "zero", "before": [3.0, 1.0], "after": [1.0, 0.5],
           "mean_before": 2.0, "mean_after": 0.75, "promoted": [(" a", 0.2)], "suppressed": [(" b", -0.3)]}
    text = S.ablation_summary(res)
    assert re.search(r"-?\d+\.\d+ → -?\d+\.\d+", text) and "2.000 → 0.750" in text
    assert text == "logit difference: 2.000 → 0.750 (change -1.250; mean over 2 pairs, zero ablation)"
    table = S.ablation_table(res, P)
    assert list(table["pair"]) == ["1", "2", "mean"] and table["change"].iloc[-1] == -1.25
    assert len(S.token_change_table(res)) == 1
    steer = {"before": [(" x", 0.5)], "after": [(" y", 0.7)]}
    assert S.steering_table(steer).iloc[0]["after"] == "' y'"


def test_ablation_help_names_every_kind():
    text = S.ablation_help(ABLATIONS, "lead:", "tail.")
    assert text.startswith("lead: ") and text.endswith(" tail.")
    assert all(f"{k}: " in text for k in ABLATIONS)
    assert "mean: mean over the corrupted prompts at each position" in text


def test_sizes_layers_steps():
    assert S.parse_sizes("10, 5,5;20") == [5, 10, 20]
    for bad in ("", "a,b", "0,5", ",".join(["1"] * 3) + ",-2"):
        with pytest.raises(InputError):
            S.parse_sizes(bad)
    assert S.parse_layers("11, 3") == [3, 11]
    with pytest.raises(InputError):
        S.parse_layers("x")
    assert S.curve_sizes(30) == [1, 2, 5, 10, 20, 30]
    step = S.nice_step(3.7)
    assert step in (0.01, 0.02, 0.05) and S.round_up(3.7, step) >= 3.7
    assert math.isclose(S.nice_step(1.0), 0.005)


def test_quality_table_and_links():
    manifest = {"quality": {"blocks.3.hook_resid_post": {"fve": 0.9, "ce_recovered": 0.95, "l0": 48, "dead_frac": 0.01},
                            "blocks.7.hook_resid_post": {"fve": 0.5, "ce_recovered": 0.6, "l0": 48, "dead_frac": 0.5}}}
    df = S.quality_table(manifest)
    assert list(df["passes bar"]) == ["yes", "no"] and "FVE" in df.attrs["bar"]
    assert S.neuronpedia_url("gpt2-small/0-res-jb", 12) == "https://www.neuronpedia.org/gpt2-small/0-res-jb/12"
    assert S.neuronpedia_url(None, 12) is None
