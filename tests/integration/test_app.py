"""The Streamlit app through ``streamlit.testing.v1.AppTest``: explorer, Feature, Evaluate, Model and SAEs, Tour.

Every test uses the bundled model and SAEs (``integration``). The model loads once per process
(``st.cache_resource`` and the engine's own cache), so the first test pays the load and the rest
reuse it. Bad inputs must give ``st.error`` / ``st.warning`` — never an exception in the page.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 600  # a cold model load is ~25 s, a first circuit tens of seconds on a busy 2-core CPU
N_PAIRS = 6
BEFORE_AFTER = re.compile(r"-?\d+\.\d+ → -?\d+\.\d+")


def _app(page: str = "app.py"):
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(ROOT / page), default_timeout=TIMEOUT)


def _texts(at) -> list[str]:
    return [m.value for m in at.markdown]


def _ok(at) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _press(at, label: str) -> None:
    """Click the first button labelled ``label`` and rerun the script."""
    [b for b in at.button if b.label == label][0].click().run()


def _errors(at) -> str:
    return " | ".join([e.value for e in at.error] + [w.value for w in at.warning])


def _metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _figure(at, key: str) -> dict:
    """The Plotly figure of the chart with widget key ``key``, as its JSON dict."""
    charts = [c for c in at.get("plotly_chart") if key in (c.proto.id or "")]
    assert len(charts) == 1, [c.proto.id for c in at.get("plotly_chart")]
    return json.loads(charts[0].proto.spec)


def _shown(text: str, value: float) -> bool:
    """``text`` is ``value`` at the app's display precision (3 decimals)."""
    return abs(float(text) - value) <= 5e-4 + 1e-6


def _explorer(n: int = N_PAIRS):
    at = _app()
    at.run()
    _ok(at)
    if at.number_input(key="task_n").value != n:
        at.number_input(key="task_n").set_value(n).run()
        _ok(at)
    return at


@pytest.fixture(scope="module")
def found():
    """The explorer after Find circuit on the IOI preset (6 pairs, AtP)."""
    at = _explorer()
    at.button(key="find_circuit").click().run()
    _ok(at)
    assert not at.error, _errors(at)
    return at


# ------------------------------------------------------------------ explorer
def test_explorer_loads_with_ioi_preselected():
    from sfc_core import methods as registry
    from sfc_core.ablation import ABLATIONS
    from sfc_core.saes import bundled_sae_dirs

    at = _explorer()
    assert at.title[0].value.startswith("Sparse feature circuit explorer")
    assert at.selectbox(key="task_preset").value == "ioi"
    table = at.data_editor[0]
    assert table.editing_mode == "dynamic"
    assert list(table.value.columns) == ["clean", "corrupted", "answer", "wrong_answer", "template"]
    assert table.value["template"].notna().all()  # built-in pairs keep their template ids (positions group by them)
    assert len(table.value) == N_PAIRS
    hooks = [w for w in at.multiselect if w.label == "SAE hook points"][0]
    assert hooks.value == list(bundled_sae_dirs())
    assert at.selectbox(key="method").value == "atp"
    assert at.selectbox(key="method").options == [registry.label(n) for n in registry.names()]
    assert {o.split(" ")[0] for o in at.selectbox(key="method").options} >= {"AtP", "IG", "exact"}
    assert at.toggle(key="aggregate").value is True
    assert at.selectbox(key="ablation").value == "mean"
    assert at.selectbox(key="ablation").options == list(ABLATIONS)
    assert [b.label for b in at.button if b.key == "find_circuit"] == ["Find circuit"]
    assert len(at.file_uploader) == 2  # pairs (JSONL) and a saved circuit
    assert any("Tokenization and validity" in e.label for e in at.expander)
    assert not at.error


def test_find_circuit_shows_graph_and_stats(found):
    from sfc_core.circuit import circuit_stats

    at = found
    assert at.radio(key="sel_mode").value == "target faithfulness"  # the selection controls sit above the graph
    assert len(at.get("plotly_chart")) >= 1
    labels = _metrics(at)
    d = at.session_state["results"][at.session_state["current_key"]]
    # the default selection: the smallest top-n reaching faithfulness 0.8, straight from the engine
    default = d.select(target_faithfulness=0.8, ablation="mean")
    stats = circuit_stats(default)
    search = default.graph["target_search"]
    assert int(labels["nodes"]) == stats["nodes"] == search["n_nodes"]
    assert int(labels["edges"]) == stats["edges"] > 0
    assert (int(labels["features"]), int(labels["error nodes"])) == (stats["features"], stats["error_nodes"])
    # the graph never comes without how much of the behaviour it explains: the engine's own figures
    from sfc_core.discovery import evaluate

    want = evaluate(d.runs, default, ablation="mean")
    assert labels["faithfulness"] == f"{want['faithfulness']:.3f}"
    assert labels["completeness"] == f"{want['completeness']:.3f}"
    assert search["reached"] and want["faithfulness"] >= 0.8, search
    # drawn readable: at most the collapse limit of markers, each latent with a label as text
    from sfc_core.collapse import MAX_NODES

    fig = _figure(at, "circuit_graph")
    drawn = [t for t in fig["data"] if t.get("customdata") and t.get("name") != "embed / metric"]
    assert 0 < sum(len(t["customdata"]) for t in drawn) <= MAX_NODES + len(d.runs.sites)
    features = [t for t in fig["data"] if t.get("name") == "features"][0]
    assert all(features["text"]), "a latent drawn without a label"
    assert any(e.label.startswith(f"Circuit statistics — {stats['nodes']} nodes") for e in at.expander)
    shown = [t for t in _texts(at) if t.startswith("metric clean → corrupted")]
    assert len(shown) == 1 and BEFORE_AFTER.search(shown[0])
    assert (f"**{d.metadata['metric_clean']:.3f} → {d.metadata['metric_corrupted']:.3f}** "
            f"(logit difference, mean over {N_PAIRS} pairs)") in shown[0]
    assert {b.label for b in at.get("download_button")} >= {
        "Circuit JSON (sfc-circuit/2)", "GraphML", "Nodes CSV", "Edges CSV", "Standalone HTML", "Neuronpedia JSON"}


def test_sliders_reselect_without_recompute(found):
    at = found
    results = dict(at.session_state["results"])
    at.radio(key="sel_mode").set_value("top-k").run()
    at.slider(key="top_k").set_value(12).run()
    _ok(at)
    assert int({m.label: m.value for m in at.metric}["nodes"]) == 12
    from sfc_core.discovery import evaluate

    d = at.session_state["results"][at.session_state["current_key"]]
    assert _metrics(at)["faithfulness"] == f"{evaluate(d.runs, d.select(top_k=12))['faithfulness']:.3f}"
    at.radio(key="sel_mode").set_value("target faithfulness").run()
    _ok(at)
    search = d.target_search(0.8, "mean")
    assert int(_metrics(at)["nodes"]) == search.n_nodes
    assert _metrics(at)["faithfulness"] == f"{search.scores.faithfulness:.3f}"
    from sfc_core.collapse import MAX_NODES

    grouped = [i.value for i in at.info if f"the {MAX_NODES} largest are drawn" in i.value]
    assert bool(grouped) == (search.n_nodes > MAX_NODES), grouped  # the figure is collapsed, the scores are not
    if search.reached:
        assert any(f"reached with {search.n_nodes} of {search.pool} nodes" in c.value for c in at.caption)
    else:
        assert any("No top-n of the" in w.value for w in at.warning)
    at.radio(key="sel_mode").set_value("threshold").run()
    _ok(at)
    assert int(_metrics(at)["features"]) > 0  # the default threshold shows features, not only error nodes
    thr = [s for s in at.slider if s.label.startswith("Nodes: |effect|")][0]
    thr.set_value(thr.max).run()  # the largest threshold keeps at most a node or two
    _ok(at)
    assert int({m.label: m.value for m in at.metric}["nodes"]) <= 2
    edge = [s for s in at.slider if s.label.startswith("Edges:")][0]
    edge.set_value(edge.max).run()
    _ok(at)
    assert set(at.session_state["results"]) == set(results)  # nothing recomputed
    at.radio(key="sel_mode").set_value("top-k").run()
    at.slider(key="top_k").set_value(30).run()
    _ok(at)


def test_node_panel_sections(found):
    at = found
    from sfc_core.nodes import parse_id

    pick = at.selectbox(key="node_pick")
    ids = [o.rsplit("·", 1)[-1].strip() for o in pick.options[1:]]  # labels end with "· <node id>"
    feature_nodes = [n for n in ids if parse_id(n).is_latent]
    assert feature_nodes, "the circuit has no feature node"
    pick.set_value(feature_nodes[0]).run()
    _ok(at)
    texts = _texts(at)
    for head in ("#### Top activating examples", "#### Activation histogram", "#### Logit effects", "#### Ablation",
                 "#### Steering"):
        assert head in texts, head
    assert sum('class="sfc-example"' in t for t in texts) >= 1
    assert any(BEFORE_AFTER.search(t) and "ablation" in t for t in texts)
    # the latent says what it is: its automatic label and description from the shipped index
    from sfc_core.feature_index import load_feature_index

    node = parse_id(feature_nodes[0])
    index = load_feature_index(node.hook_name)
    assert any(t.startswith("**Automatic label:**") for t in texts)
    assert index.description(node.index) in [t.value for t in at.text]
    # mean ablation recomputes the panel's before → after
    kind = [r for r in at.radio if r.label == "Ablate to"][0]
    kind.set_value("mean").run()
    _ok(at)
    assert any("mean ablation" in t and BEFORE_AFTER.search(t) for t in _texts(at))
    # steering: a normal α works, NaN and huge α are refused with a message
    alpha = [w for w in at.text_input if w.label.startswith("α")][0]
    alpha.set_value("4").run()
    _press(at, "Steer")
    _ok(at)
    assert not at.error, _errors(at)
    assert any(t.startswith("**Greedy continuation without steering:**") for t in _texts(at))
    assert any(list(df.value.columns)[:3] == ["rank", "before", "p before"] and len(df.value) == 10
               for df in at.dataframe)
    for bad in ("nan", "1e9", "-inf", "strong"):
        alpha = [w for w in at.text_input if w.label.startswith("α")][0]
        alpha.set_value(bad).run()
        _press(at, "Steer")
        _ok(at)
        assert any("steering strength" in e.value for e in at.error), (bad, _errors(at))


def test_scores(found):
    """The scores shown are the engine's own for the same pairs, selection and ablation."""
    from pages._shared.display import curve_sizes
    from sfc_core.discovery import evaluate

    at = found
    assert at.slider(key="top_k").value == 30 and at.selectbox(key="ablation").value == "mean"
    at.button(key="compute_scores").click().run()
    _ok(at)
    assert not at.error, _errors(at)
    labels = _metrics(at)
    d = at.session_state["results"][at.session_state["current_key"]]
    want = evaluate(d.runs, d.select(top_k=30), sizes=curve_sizes(30), ablation="mean")
    assert want["n_nodes"] == 30
    for label, field in (("faithfulness", "faithfulness"), ("completeness", "completeness"),
                         ("m(full model)", "m_full"), ("m(all ablated)", "m_empty")):
        assert want[field] is not None and _shown(labels[label], want[field]), (label, labels[label], want[field])
    # the full spliced model is the model: its metric is the clean metric of the statistics panel
    assert _shown(labels["m(full model)"], d.metadata["metric_clean"])
    # the curve plots the engine's top-n scores; its last point is the whole circuit
    traces = {t["name"]: t for t in _figure(at, "score_curve")["data"]}
    faith = traces["atp faithfulness"]
    assert list(faith["x"]) == want["curve"]["n_nodes"] == curve_sizes(30)
    assert faith["y"] == pytest.approx(want["curve"]["faithfulness"], abs=1e-5)
    assert faith["y"][-1] == pytest.approx(want["faithfulness"], abs=1e-5)
    assert traces["atp completeness"]["y"] == pytest.approx(want["curve"]["completeness"], abs=1e-5)


def test_static_image_export(found):
    """PNG/SVG render through kaleido + Chromium (``make test`` installs it); without a browser the page warns
    instead of failing. Each branch is asserted on its own: the test cannot pass by either."""
    from sfc_core.export import _find_browser

    at = found
    at.button(key="render_images").click().run()
    _ok(at)
    labels = {b.label for b in at.get("download_button")}
    warned = any("PNG/SVG export is unavailable" in w.value for w in at.warning)
    if _find_browser() is not None:
        assert {"PNG", "SVG"} <= labels and not warned, (labels, _errors(at))
    else:
        assert warned and not ({"PNG", "SVG"} & labels)


def test_saved_circuit_upload_round_trip(found, tmp_path):
    from sfc_core.circuit import to_json

    d = found.session_state["results"][found.session_state["current_key"]]
    doc = json.dumps(to_json(d.select(top_k=10)), default=float).encode()
    at = _explorer()
    at.file_uploader(key="circuit_upload").upload("circuit.json", doc, "application/json").run()
    _ok(at)
    assert not at.error, _errors(at)
    assert len(at.get("plotly_chart")) >= 1
    assert int({m.label: m.value for m in at.metric}["nodes"]) == 10


def test_rename_and_supernodes(found):
    """Rename a node and group nodes into a supernode; bad names are refused with a message and lose nothing."""
    at = found
    from sfc_core.annotations import display_label, supernodes
    from sfc_core.circuit import to_json

    at.radio(key="sel_mode").set_value("top-k").run()
    pick = at.selectbox(key="node_pick")
    ids = [o.rsplit("·", 1)[-1].strip() for o in pick.options[1:]]
    node = ids[0]
    pick.set_value(node).run()
    at.text_input(key=f"rename_{node}").set_value("my mover").run()
    at.button(key=f"rename_btn_{node}").click().run()
    _ok(at)
    G = at.session_state["_shown_graph"]
    assert display_label(G, node) == "my mover"
    assert any("my mover" in o for o in at.selectbox(key="node_pick").options)
    fig = _figure(at, "circuit_graph")
    assert any("my mover" in str(t.get("text")) for t in fig["data"])
    # a control character is refused; the old label stays
    at.text_input(key=f"rename_{node}").set_value("bad\x07name").run()
    at.button(key=f"rename_btn_{node}").click().run()
    _ok(at)
    assert any("control character" in e.value for e in at.error), _errors(at)
    assert display_label(at.session_state["_shown_graph"], node) == "my mover"
    # a supernode of two nodes, drawn as one hexagon; a second with the same name is refused
    at.multiselect(key="supernode_members").set_value(ids[1:3]).run()
    at.text_input(key="supernode_name").set_value("movers").run()
    at.button(key="add_supernode").click().run()
    _ok(at)
    assert not at.error, _errors(at)
    G = at.session_state["_shown_graph"]
    assert supernodes(G) == [{"name": "movers", "nodes": ids[1:3]}]
    hexagons = [t for t in _figure(at, "circuit_graph")["data"] if t.get("name") == "supernode"]
    assert len(hexagons) == 1 and hexagons[0]["text"] == ["movers"]
    doc = to_json(G)
    assert doc["schema"] == "sfc-circuit/2" and doc["supernodes"][0]["name"] == "movers"
    at.multiselect(key="supernode_members").set_value(ids[3:4]).run()
    at.text_input(key="supernode_name").set_value("movers").run()
    at.button(key="add_supernode").click().run()
    assert any("two supernodes are named 'movers'" in e.value for e in at.error), _errors(at)
    at.multiselect(key="supernode_members").set_value([]).run()
    at.text_input(key="supernode_name").set_value("empty").run()
    at.button(key="add_supernode").click().run()
    assert any("has no nodes" in e.value for e in at.error), _errors(at)
    # a new slider selection keeps them; dissolving and a blank rename undo them
    at.slider(key="top_k").set_value(20).run()
    G = at.session_state["_shown_graph"]
    assert display_label(G, node) == "my mover" and supernodes(G)[0]["name"] == "movers"
    at.button(key="dissolve_0").click().run()
    at.text_input(key=f"rename_{node}").set_value("").run()
    at.button(key=f"rename_btn_{node}").click().run()
    at.slider(key="top_k").set_value(30).run()
    _ok(at)
    G = at.session_state["_shown_graph"]
    assert supernodes(G) == [] and not G.nodes[node].get("label")


# ------------------------------------------------------------------ explorer: bad inputs
def _edit(at, edits: dict) -> None:
    key = at.data_editor[0].key
    at.session_state[key] = {"edited_rows": edits, "added_rows": [], "deleted_rows": []}
    at.run()


def test_control_extremes_keep_the_app_usable(found):
    """Threshold 0 draws a collapsed graph with a note; top-k at the slider's end, the edge threshold at its end
    and both view toggles leave a usable page (issue 13, bad input). (That threshold mode starts on features is
    checked where it is first opened, in test_sliders_reselect_without_recompute.)"""
    from sfc_core.collapse import MAX_NODES

    at = found
    at.radio(key="sel_mode").set_value("threshold").run()
    _ok(at)
    thr = [s for s in at.slider if s.label.startswith("Nodes: |effect|")][0]
    thr.set_value(0.0).run()
    _ok(at)
    n_nodes = int(_metrics(at)["nodes"])
    assert n_nodes > MAX_NODES
    assert any(f"{n_nodes} nodes are too many to draw one by one" in i.value for i in at.info)
    fig = _figure(at, "circuit_graph")
    drawn = [t for t in fig["data"] if t.get("customdata") and t.get("name") != "embed / metric"]
    assert sum(len(t["customdata"]) for t in drawn) <= MAX_NODES + 7  # never a tangle of every node
    at.radio(key="sel_mode").set_value("top-k").run()
    top = at.slider(key="top_k")
    top.set_value(top.max).run()
    _ok(at)
    edge = [s for s in at.slider if s.label.startswith("Edges:")][0]
    edge.set_value(edge.max).run()
    at.toggle(key="hide_errors").set_value(True).run()
    at.toggle(key="hide_disconnected").set_value(True).run()
    _ok(at)
    assert not at.error, _errors(at)
    names = {t.get("name") for t in _figure(at, "circuit_graph")["data"]}
    assert "error nodes (ε)" not in names
    assert any(c.value.startswith("Hidden from the drawing (not from the scores)") for c in at.caption)
    edge.set_value(0.0).run()
    at.toggle(key="hide_errors").set_value(False).run()
    at.toggle(key="hide_disconnected").set_value(False).run()
    top.set_value(30).run()
    _ok(at)


def test_pairs_and_choices_survive_other_pages():
    """Uploaded pairs, the method and the found circuit outlive a visit to every other page; going back to the
    offline default with nothing changed keeps the circuit (issue 13, point 2)."""
    at = _explorer()
    rows = [{"clean": "When Anna and Tom went to the park, Tom gave a ball to",
             "corrupted": "When Anna and Tom went to the park, Anna gave a ball to", "answer": " Anna",
             "wrong_answer": " Tom"}] * 2
    _upload_pairs(at, rows)
    at.selectbox(key="method").set_value("atp_star").run()
    at.button(key="find_circuit").click().run()
    _ok(at)
    key = at.session_state["current_key"]
    for page in ("pages/1_Feature.py", "pages/2_Evaluate.py", "pages/3_Model_and_SAEs.py", "pages/4_Tour.py"):
        at.switch_page(page).run()
        _ok(at)
        if page == "pages/3_Model_and_SAEs.py":
            at.button(key="reset_default").click().run()
            _ok(at)
            assert any("nothing changed, the circuit is kept" in i.value for i in at.info)
    at.switch_page("app.py").run()
    _ok(at)
    assert at.selectbox(key="task_preset").value.startswith("(custom")
    assert at.data_editor[0].value["clean"].tolist() == [r["clean"] for r in rows]
    assert at.selectbox(key="method").value == "atp_star"
    assert at.session_state["current_key"] == key and at.get("plotly_chart")
    assert not any("inputs changed" in i.value for i in at.info)  # the same inputs: the same circuit


def test_empty_prompt_is_reported():
    at = _explorer()
    _edit(at, {0: {"clean": ""}})
    _ok(at)
    assert any("row 1: empty clean prompt" in e.value for e in at.error), _errors(at)
    at.button(key="find_circuit").click().run()
    _ok(at)
    assert any("Cannot find a circuit" in e.value for e in at.error)
    assert not at.get("plotly_chart")


def _upload_pairs(at, records: list[dict] | bytes, name: str = "pairs.jsonl") -> None:
    data = records if isinstance(records, bytes) else "\n".join(json.dumps(r) for r in records).encode()
    at.file_uploader(key="pairs_upload").upload(name, data, "application/octet-stream").run()


def test_mismatched_lengths_and_multi_token_answers():
    at = _explorer()
    good = {"clean": "When Mary and John went to the store, John gave a drink to",
            "corrupted": "When Mary and John went to the store, Mary gave a drink to", "answer": " Mary",
            "wrong_answer": " John"}
    mismatch = {"clean_prefix": "The keys to the old wooden cabinet", "patch_prefix": "The key to the cabinet",
                "clean_answer": " are", "patch_answer": " is"}
    _upload_pairs(at, [good, mismatch])
    _ok(at)
    assert at.selectbox(key="task_preset").value.startswith("(custom")
    assert len(at.data_editor[0].value) == 2
    assert any("length mismatch" in w.value for w in at.warning), _errors(at)
    multi = {**good, "answer": " Maryanne-Christabel"}
    _upload_pairs(at, [multi])
    _ok(at)
    assert any("tokens" in w.value for w in at.warning), _errors(at)
    at.button(key="find_circuit").click().run()
    _ok(at)
    assert any("multi-token answers" in e.value for e in at.error), _errors(at)


def test_bad_pair_file_and_bad_circuit_file():
    at = _explorer()
    _upload_pairs(at, b"clean,corrupted,answer\nfoo,bar,baz\n", "pairs.csv")
    _ok(at)
    assert any("not valid JSON" in e.value for e in at.error), _errors(at)
    _upload_pairs(at, b"\x89PNG\r\n\x1a\n\x00\x00binary", "image.png")
    _ok(at)
    assert any("not UTF-8" in e.value for e in at.error), _errors(at)
    assert len(at.data_editor[0].value) == N_PAIRS  # the table is untouched
    for data in (b'{"hello": "world"}', b"not json at all", b'{"schema": "sfc-circuit/1", "nodes": [{"x": 1}]}'):
        at.file_uploader(key="circuit_upload").upload("c.json", data, "application/json").run()
        _ok(at)
        assert any("circuit" in e.value for e in at.error), _errors(at)


def test_no_hook_point_selected():
    at = _explorer()
    [w for w in at.multiselect if w.label == "SAE hook points"][0].set_value([]).run()
    at.button(key="find_circuit").click().run()
    _ok(at)
    assert any("Select at least one SAE hook point" in e.value for e in at.error), _errors(at)


# ------------------------------------------------------------------ pages
def test_feature_page_shows_examples():
    at = _app("pages/1_Feature.py")
    at.run()
    _ok(at)
    texts = _texts(at)
    assert "#### Top activating examples" in texts
    assert sum('class="sfc-example"' in t for t in texts) >= 1
    assert "#### Logit effects" in texts and "#### Ablation" in texts
    assert any(BEFORE_AFTER.search(t) for t in texts)
    from sfc_core.feature_index import load_feature_index

    shown_id = int([w for w in at.number_input if w.label.startswith("Feature id")][0].value)
    flags = load_feature_index(at.selectbox(key="feature_hook").value).flags(shown_id)
    assert any("Degenerate latent" in w.value for w in at.warning) == bool(flags)  # warned exactly when flagged
    fid = [w for w in at.number_input if w.label.startswith("Feature id")][0]
    fid.set_value(fid.max).run()  # any id in range works, dead or alive
    _ok(at)
    assert not at.error, _errors(at)
    # L11/240 peaks at ~1,770 on the first token after BOS in every top context: flagged, with the reason
    at.selectbox(key="feature_hook").set_value("blocks.11.hook_resid_post").run()
    [w for w in at.number_input if w.label.startswith("Feature id")][0].set_value(240).run()
    _ok(at)
    flagged = [w.value for w in at.warning if "Degenerate latent" in w.value]
    assert len(flagged) == 1 and "**massive**" in flagged[0] and "**positional**" in flagged[0]


def test_model_page_quality_table_and_offline_errors():
    from sfc_core.model import hub_reachable
    from sfc_core.saes import bundled_sae_dirs

    at = _app("pages/3_Model_and_SAEs.py")
    at.run()
    _ok(at)
    tables = [df.value for df in at.dataframe]
    quality = [t for t in tables if "FVE" in t.columns][0]
    assert list(quality["hook point"]) == list(bundled_sae_dirs())
    assert quality["FVE"].notna().all()

    at.text_input(key="model_name_input").set_value("definitely-not-a-model")
    _press(at, "Load model")
    _ok(at)
    assert any("unknown model" in e.value for e in at.error), _errors(at)

    at.radio(key="sae_kind").set_value("SAE Lens release").run()
    at.text_input(key="sae_release").set_value("no-such-release")
    at.text_input(key="sae_layers").set_value("3")
    _press(at, "Load SAEs")
    _ok(at)
    assert any("unknown SAE Lens release" in e.value for e in at.error), _errors(at)

    at.radio(key="sae_kind").set_value("local SAE folder").run()
    at.text_input(key="sae_path").set_value("/nonexistent/sae")
    _press(at, "Load SAEs")
    _ok(at)
    assert any("SAE folder not found" in e.value for e in at.error), _errors(at)

    if hub_reachable():
        pytest.skip("the model hub is reachable here: the offline errors for real names cannot be checked")
    at.text_input(key="model_name_input").set_value("gpt2-small")
    _press(at, "Load model")
    _ok(at)
    assert any("not available offline" in e.value for e in at.error), _errors(at)
    at.radio(key="sae_kind").set_value("SAE Lens release").run()
    at.text_input(key="sae_release").set_value("gpt2-small-res-jb")
    at.text_input(key="sae_layers").set_value("3")
    _press(at, "Load SAEs")
    _ok(at)
    assert any("not available offline" in e.value for e in at.error), _errors(at)
    assert at.session_state["model_name"] != "gpt2-small"  # a failed load changes nothing


def test_evaluate_page_curves():
    from pages._shared.display import records_from_table, table_from_pairs
    from sfc_core.discovery import evaluate
    from sfc_core.model import load_model
    from sfc_core.tasks import get_task_pairs

    at = _app("pages/2_Evaluate.py")
    at.session_state["current_records"] = records_from_table(table_from_pairs(get_task_pairs(load_model(), "ioi", N_PAIRS)))
    at.run()
    _ok(at)
    at.text_input(key="eval_sizes").set_value("five")
    at.button(key="eval_run").click().run()
    _ok(at)
    assert any("circuit sizes must be integers" in e.value for e in at.error), _errors(at)
    at.text_input(key="eval_sizes").set_value("5, 20")
    at.button(key="eval_run").click().run()
    _ok(at)
    assert not at.error, _errors(at)
    assert len(at.get("plotly_chart")) == 1
    table = [df.value for df in at.dataframe][-1]
    assert list(table["method"]) == ["atp", "atp"] and list(table["size"]) == [5, 20]
    # the same curve from the engine: AtP on these pairs, its top 20 nodes re-selected, scored at 5 and 20
    [d] = at.session_state["results"].values()
    want = evaluate(d.runs, d.select(top_k=20), sizes=[5, 20], ablation="mean")["curve"]
    assert list(table["faithfulness"]) == pytest.approx(want["faithfulness"], abs=1e-6)
    assert list(table["completeness"]) == pytest.approx(want["completeness"], abs=1e-6)
    low = table["faithfulness"].max() < 0.3
    assert low == any("hundreds of nodes" in i.value for i in at.info)
    at.selectbox(key="eval_ablation").set_value("patch")
    at.button(key="eval_run").click().run()
    _ok(at)
    assert not at.error, _errors(at)
    table = [df.value for df in at.dataframe][-1]
    want = evaluate(d.runs, d.select(top_k=20), sizes=[5, 20], ablation="patch")["curve"]
    assert list(table["faithfulness"]) == pytest.approx(want["faithfulness"], abs=1e-6)


def test_tour_runs_every_step():
    from sfc_core.features import next_tokens
    from sfc_core.model import load_model
    from sfc_core.tasks import get_task_pairs

    at = _app("pages/4_Tour.py")
    at.run()
    _ok(at)
    steps = at.radio(key="tour_step").options
    assert len(steps) >= 5
    tables = {}
    for step in steps:
        at.radio(key="tour_step").set_value(step).run()
        _ok(at)
        assert not at.error, (step, _errors(at))
        tables[step[0]] = [df.value for df in at.dataframe]
        if step[0] == "2":
            assert _metrics(at)["variance explained on this prompt"].endswith("%")
    assert len(at.get("plotly_chart")) >= 1  # the SVA circuit of the last step
    # step 1: the model's own next-token table for the first IOI prompt
    prompt = get_task_pairs(load_model(), "ioi", 4)[0].clean
    top = next_tokens(load_model(), prompt, 8)
    table = tables["1"][0]
    assert list(table["next token"]) == [repr(t) for t, _ in top]
    assert list(table["probability"]) == [round(p, 4) for _, p in top]
    # step 4: AtP's top 10 nodes beside their exact effects (discovery.verify)
    table = tables["4"][0]
    assert list(table.columns) == ["node", "AtP effect", "exact effect"] and len(table) == 10
    assert table["exact effect"].notna().all()


def test_two_sessions_computing_at_once_get_their_own_results():
    """What two browser sessions do at once (discover, ablate, steer on the one cached model, in two
    threads) gives exactly what each gives alone: the engine keeps no per-call state on the model."""
    import threading

    import torch

    from sfc_core.discovery import DiscoverConfig, discover
    from sfc_core.features import ablate_feature, steer
    from sfc_core.model import load_model
    from sfc_core.saes import load_bundled_saes
    from sfc_core.tasks import get_task_pairs

    m = load_model()
    saes = load_bundled_saes(m)
    cfg = DiscoverConfig(top_k=20)
    hook = list(saes)[len(saes) // 2]

    def work(task: str) -> dict:
        d = discover(m, saes, get_task_pairs(m, task, 4), cfg, edge_pool=30)
        site = list(saes).index(hook)
        feat = int(d.attribution.effects[site][:-1].abs().argmax())
        return {"effects": [e.clone() for e in d.attribution.effects], "edges": dict(d.edges),
                "ablation": ablate_feature(d.runs, site, feat, "zero")["after"],
                "steer": steer(m, saes[hook], feat, 8.0, d.runs.batch.pairs[0].clean, max_new_tokens=4)}

    alone = {task: work(task) for task in ("ioi", "sva")}
    together: dict = {}
    errors: list = []

    def run(task: str) -> None:
        try:
            together[task] = work(task)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(task,)) for task in ("ioi", "sva")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for task in ("ioi", "sva"):
        a, b = alone[task], together[task]
        assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(a["effects"], b["effects"])), task
        assert a["edges"].keys() == b["edges"].keys()
        assert max(abs(a["edges"][k] - b["edges"][k]) for k in a["edges"]) < 1e-4
        assert a["ablation"] == pytest.approx(b["ablation"], abs=1e-4)
        assert a["steer"]["continuation_after"] == b["steer"]["continuation_after"]
