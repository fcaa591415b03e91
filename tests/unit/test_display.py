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
    # key columns first (a narrow panel cuts the last column, never the numbers), short headers
    assert list(table.columns) == ["pair", "before", "after", "change", "prompt"]
    # the mean row was blank on screen: its only text cell (the prompt) was empty and its numbers were cut off
    # at the right; now every cell of it has a value
    mean = table.iloc[-1].to_dict()
    assert mean == {"pair": "mean", "before": 2.0, "after": 0.75, "change": -1.25, "prompt": "mean of 2 pairs"}
    assert table.iloc[0]["prompt"] == P[0].clean and table.iloc[0]["change"] == -2.0
    odd = dict(res, before=[1.23456], after=[0.5], mean_before=1.23456, mean_after=0.5)
    assert S.ablation_table(odd).iloc[0]["before"] == 1.235  # rounded to 3 decimals
    assert S.ablation_table(odd).iloc[0]["prompt"] == ""     # no pairs given: no prompt, still the column
    changes = S.token_change_table(res)
    assert list(changes.columns) == ["more likely", "Δ up", "less likely", "Δ down"] and len(changes) == 1
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


# ------------------------------------------------------------------ the words of the screen
def test_screen_message_words_a_fix_as_the_apps_control():
    from sfc_core.errors import InputError, Notice

    exc = InputError("multi-token answers in row 3: ' Christopher' -> 2 tokens", fix=("multi_token", "truncate"))
    assert S.screen_message(exc) == ("multi-token answers in row 3: ' Christopher' -> 2 tokens. Fix: in the "
                                     "sidebar, set *Answers longer than one token* to *use the first token*.")
    warn = Notice("row 2 skipped: lengths differ", fix=("length_mismatch", "align_last"))
    assert S.screen_message(warn, where=None).endswith(
        "Fix: set *Pairs whose prompts differ in token length* to *align at the last token*.")
    agg = InputError("position-resolved nodes need one template", fix=("aggregation", "sum"))
    assert S.screen_message(agg).endswith("Fix: in the sidebar, switch *Aggregate over positions* on.")
    # no control for the option, or none on this page, or no fix: the bare message, never a dead instruction
    assert S.screen_message(InputError("bad metric", fix=("metric", "logit_diff"))) == "bad metric"
    assert S.screen_message(exc, controls=()) == str(exc)
    assert S.screen_message(exc, controls=["length_mismatch"]) == str(exc)
    assert S.screen_message(InputError("plain.")) == "plain."
    assert S.screen_message("a string") == "a string"


def test_ui_controls_cover_the_engines_choices():
    """Every choice the engine accepts has the app's words, in the order the engine lists them."""
    import typing

    from sfc_core.pairs import LengthMismatch, MultiToken

    assert list(S.UI_CONTROLS["multi_token"][1]) == list(typing.get_args(MultiToken))
    assert list(S.UI_CONTROLS["length_mismatch"][1]) == list(typing.get_args(LengthMismatch))
    from sfc_core.discovery import AGGREGATIONS

    assert set(S.UI_CONTROLS["aggregation"][1]) == set(AGGREGATIONS)
    assert S.UI_CONTROLS["length_mismatch"][0] == "Pairs whose prompts differ in token length"


def test_report_table_and_problems_show_what_aligning_drops():
    report = [
        {"row": 1, "clean_tokens": ["A", " b"], "corrupted_tokens": ["A", " c"], "answer_tokens": [" x"],
         "wrong_tokens": [" y"], "valid": True, "problem": None, "align_drop": None},
        {"row": 2, "clean_tokens": [" to", " the"], "corrupted_tokens": ["The", " key", " to", " the"],
         "answer_tokens": [" is"], "wrong_tokens": [" are"], "valid": False,
         "problem": "length mismatch: clean 2 tokens, corrupted 4",
         "align_drop": {"prompt": "corrupted", "tokens": ["The", " key"]}},
    ]
    table = S.report_table(report)
    assert list(table["aligning drops"]) == ["", "corrupted: 'The', ' key'"]
    assert list(table.columns)[-1] == "aligning drops"
    assert S.report_problems(report) == ["row 2: length mismatch: clean 2 tokens, corrupted 4 (aligning at the last "
                                         "token drops the corrupted prompt's 'The', ' key')"]
    old = [dict(report[1])]
    del old[0]["align_drop"]  # a report without the field still renders
    assert S.report_table(old)["aligning drops"].tolist() == [""]


def test_report_table_from_a_real_pair_report():
    """pair_report on a real tokenizer feeds report_table: the column names the tokens align_last drops."""
    from sfc_core.pairs import pair_report
    from tests.unit.test_pairs import make_tiny_tokenizer

    tok = make_tiny_tokenizer()
    pair = PromptPair("When John talked to", "The friend and John talked to", " the", " Mary")
    assert S.report_table(pair_report(tok, [pair]))["aligning drops"].tolist() == ["corrupted: 'The', ' friend'"]


@pytest.mark.parametrize("f, n, want", [
    (0.0812, 30, "0.08: the 30 nodes alone recover 8 % of the clean-vs-corrupted logit difference; the rest of the "
                 "behaviour (92 %) runs through nodes outside them."),
    (0.8, 1268, "0.80: the 1,268 nodes alone recover 80 % of the clean-vs-corrupted logit difference; the rest of the "
                "behaviour (20 %) runs through nodes outside them."),
    (-0.03, 60, "-0.03: the 60 nodes alone do worse than ablating every node"),
    (1.25, 5, "1.25: the 5 nodes alone overshoot the full model by 25 %"),
    (0.97, 1, "0.97: the 1 node alone recovers 97 %"),
    (0.5, 1, "0.50: the 1 node alone recovers 50 % of the clean-vs-corrupted logit difference; the rest of the "
             "behaviour (50 %) runs through nodes outside it."),
    (-0.5, 1, "-0.50: the 1 node alone does worse than ablating every node: it pushes"),
    (None, 5, "Faithfulness is undefined here"),
    (-0.002, 5, "0.00: the 5 nodes alone recover none of the clean-vs-corrupted logit difference"),
])
def test_faithfulness_sentence_reads_the_number(f, n, want):
    assert S.faithfulness_sentence(f, n).startswith(want)


def test_completeness_sentence():
    assert S.completeness_sentence(0.12, 30) == ("0.12: with these 30 nodes ablated and every other node intact, the "
                                                 "model keeps 12 % of the behaviour, so the circuit holds most of what "
                                                 "matters.")
    assert "other routes outside the circuit" in S.completeness_sentence(0.5, 30)
    assert "none of the behaviour" in S.completeness_sentence(-0.1, 30)


def test_atp_exact_sentences_read_the_factor_from_the_data():
    rows = [("blocks.7.hook_resid_post/error", -0.3, -1.2), ("blocks.3.hook_resid_post/12", -0.5, -0.45),
            ("blocks.11.hook_resid_post/5", 0.1, -0.05)]
    out = S.atp_exact_sentences(rows)
    assert out[0] == "AtP gets the sign right for 2 of 3 nodes."
    assert out[1] == ("The largest miss is **ε at L7**: AtP's linear approximation misses it by a factor 4.0 "
                      "(-0.300 against an exact -1.200).")
    assert out[2].startswith("It is an error node.") and "4.0× more important than it looks" in out[2]
    # the error node is not the largest miss: it is still named, with its own factor
    rows2 = [("blocks.7.hook_resid_post/error", -0.1, -0.25), ("blocks.3.hook_resid_post/12", 2.0, -1.0)]
    out2 = S.atp_exact_sentences(rows2)
    assert out2[1] == "The largest miss is **L3 #12**: AtP gets its sign wrong (+2.000 against an exact -1.000)."
    assert out2[2].startswith("The error node **ε at L7** is underrated too: AtP misses it by a factor 2.5")
    # AtP overstating, error nodes well estimated
    out3 = S.atp_exact_sentences([("blocks.7.hook_resid_post/error", -1.0, -1.1), ("blocks.3.hook_resid_post/2", -2.0, -0.5)])
    assert "AtP overstates it by a factor 4.0" in out3[1]
    assert out3[2] == "AtP does not underrate any error node here by a factor of 1.5 or more."
    assert S.atp_exact_sentences([]) == []


def test_metric_and_sae_and_circuit_sentences():
    text = S.metric_sentence([3.0, 1.0], [-2.0, -1.0])
    assert text.startswith("On average m(clean) = +2.00: on the clean prompts the model prefers the answer by 2.00 "
                           "logits (odds of about 7.4 to 1 between the two tokens).")
    assert "It is right on 2 of 2 clean prompts (m > 0) and 2 of 2 corrupted ones (m < 0)." in text
    assert "this whole gap of 3.50 logits" in text
    assert "do not test the behaviour" in S.metric_sentence([-1.0], [0.5])
    assert S.sae_sentence(34, 4096, 0.93, 576) == (
        "34 of the SAE's 4,096 features are active at the last token (1 % of them): the SAE writes this 576-number "
        "vector as a sum of 34 learned directions. Over the prompt's tokens they explain 93 % of the residual's "
        "variance; the other 7 % is the error node ε.")
    effects = {"blocks.7.hook_resid_post/error": -1.0, "blocks.3.hook_resid_post/12": -0.5,
               "blocks.11.hook_resid_post/error": 0.5}
    assert S.error_nodes_sentence(effects, "SVA") == (
        "2 of the 3 nodes are error nodes (ε), with 75 % of the circuit's total |effect|: that share of what these "
        "nodes do for SVA passes through directions the SAEs have not learned, at L7, L11.")
    assert S.error_share(effects) == (2, 0.75)
    latents = {"blocks.3.hook_resid_post/1": 3.0, "blocks.3.hook_resid_post/error": 1.0}
    assert S.error_comparison_sentence(("SVA", latents), ("IOI", effects)) == (
        "Error nodes carry 25 % of SVA's |effect| against 75 % of IOI's: IOI leans more on what the SAEs have not "
        "learned than SVA does.")
    assert S.error_comparison_sentence(("A", effects), ("B", effects)).startswith("Error nodes carry about the same")
    assert S.error_nodes_sentence({"blocks.3.hook_resid_post/1": 1.0}).startswith("The one node is not an error node")
    assert S.error_nodes_sentence({"blocks.3.hook_resid_post/1": 1.0, "blocks.3.hook_resid_post/2": 1.0}).startswith(
        "None of the 2 nodes is an error node: at this size")
    assert S.layers_sentence({3: 6, 7: 4, 11: 5}) == "Most nodes sit at L3 (6 of 15); the circuit spans L3–L11."
    assert S.next_token_sentence([(" Mary", 0.43), (" John", 0.2)], " Mary") == (
        "The model's first choice is the expected answer ' Mary', with 43 % of the probability; the runner-up "
        "' John' gets 20 %.")
    assert "choice number 2 (20 %)" in S.next_token_sentence([(" the", 0.43), (" Mary", 0.2)], " Mary")
    assert S.short_node("blocks.7.hook_resid_post/12@3") == "L7 #12 @3"
    assert S.pct(0.004) == "<1 %" and S.pct(0.5) == "50 %"
    assert S.num(-0.002) == "0.00" and S.num(-0.02) == "-0.02" and S.num(0.1234, 3) == "0.123"


def test_evaluate_page_sentences():
    assert S.baseline_sentence(3.2, 0.1).startswith("m(full) = 3.200 and m(∅) = 0.100 (logit difference): "
                                                    "faithfulness 1 means a circuit alone brings m back to 3.200")
    text = S.curve_sentence("atp", [5, 20], [0.1, 0.45], [0.0, 0.01])
    assert text.startswith("**atp**, top 20 nodes: 0.45: the 20 nodes alone recover 45 %")
    assert text.endswith("Random circuits of 20 nodes reach 0.01.")
    assert S.curve_sentence("ig", [5], [None]) == "ig: no size could be scored."
