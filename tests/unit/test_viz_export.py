"""Circuit figures, selection parsing, curve figures and exports (GraphML, CSV, HTML, images, Neuronpedia)."""

from __future__ import annotations

import io
import json
import os
import random
import re
import time

import networkx as nx
import pandas as pd
import pytest

from sfc_core import export as X
from sfc_core import viz as V
from sfc_core.errors import ExportError, SFCError


def _add(G, hook, layer, site, feature, effect, activation, position=None):
    nid = f"{hook}/{feature}" + ("" if position is None else f"@{position}")
    G.add_node(nid, hook_name=hook, layer=layer, site=site, feature=feature, position=position,
               effect=effect, activation=activation)
    return nid


def small_graph(positions: bool = False) -> nx.DiGraph:
    G = nx.DiGraph()
    G.graph.update({"model": "tiny-model", "method": "atp", "metric": "logit_diff", "n_layers": 4,
                    "saes": [{"hook_name": "blocks.1.hook_resid_post", "source": "test", "d_sae": 16}],
                    "node_threshold": 0.1, "scores": {"faithfulness": 0.8, "completeness": 0.1},
                    "prompt": "When Mary and John", "prompt_tokens": ["When", " Mary", " and", " John"]})
    p = (lambda i: i) if positions else (lambda i: None)
    a = _add(G, "blocks.1.hook_resid_post", 1, 0, 3, -0.9, 2.5, p(1))
    b = _add(G, "blocks.1.hook_resid_post", 1, 0, 7, 0.4, 1.0, p(3))
    e1 = _add(G, "blocks.1.hook_resid_post", 1, 0, "error", -0.2, 0.7, p(3))
    c = _add(G, "blocks.3.hook_resid_post", 3, 1, 11, -0.6, 3.0, p(3))
    e3 = _add(G, "blocks.3.hook_resid_post", 3, 1, "error", 0.05, None, p(3))
    G.add_node("embed", hook_name="hook_embed", layer=-1, site=-1, feature="embed", position=None,
               effect=None, activation=None)
    G.add_node("metric", hook_name="metric", layer=4, site=2, feature="metric", position=None,
               effect=None, activation=None)
    for u, v, w in [("embed", a, 0.3), ("embed", b, -0.1), (a, c, -0.5), (b, c, 0.2), (e1, c, -0.05),
                    (c, "metric", -0.6), (e3, "metric", 0.05), (a, "metric", -0.3)]:
        G.add_edge(u, v, weight=w)
    return G


def _node_points(fig):
    """node id -> (trace, index) for every node point (customdata present)."""
    out = {}
    for tr in fig.data:
        if tr.customdata is None:
            continue
        for i, cd in enumerate(tr.customdata):
            out[cd[0]] = (tr, i)
    return out


@pytest.mark.parametrize("positions", [False, True])
def test_circuit_figure_contract(positions):
    G = small_graph(positions)
    label_node = next(n for n in G if n.endswith(("/3", "/3@1")))
    fig = V.circuit_figure(G, feature_labels={label_node: "top logits: Mary, she"}, height=500)
    pts = _node_points(fig)
    assert set(pts) == set(G.nodes)
    assert len(fig.data) < 20
    assert fig.layout.height == 500
    assert fig.layout.clickmode == "event+select"
    # error nodes: own trace with a distinct symbol; embed/metric squares
    for n in G:
        tr, _ = pts[n]
        feat = G.nodes[n]["feature"]
        if feat == "error":
            assert tr.marker.symbol == "diamond"
        elif feat in ("embed", "metric"):
            assert tr.marker.symbol == "square"
        else:
            assert tr.marker.symbol == "circle"
    # symmetric diverging colour scale with the sign convention in its title
    ca = fig.layout.coloraxis
    assert ca.cmin == pytest.approx(-ca.cmax) and ca.cmax > 0
    assert "carries clean behaviour" in ca.colorbar.title.text
    assert "logit diff" in ca.colorbar.title.text
    # hover: hook point, feature, effect and the label
    tr, i = pts[label_node]
    assert "top logits: Mary, she" in tr.hovertext[i]
    assert "blocks.1.hook_resid_post" in tr.hovertext[i] and "-0.9" in tr.hovertext[i]
    # columns ordered by layer: embed left, metric right
    x = {n: pts[n][0].x[pts[n][1]] for n in G}
    assert x["embed"] < x[label_node] < x["blocks.3.hook_resid_post/11" + ("@3" if positions else "")] < x["metric"]
    if not positions:  # within a column, the most negative effect at the top
        y = {n: pts[n][0].y[pts[n][1]] for n in G}
        assert y["blocks.1.hook_resid_post/3"] > y["blocks.1.hook_resid_post/error"] > y["blocks.1.hook_resid_post/7"]
    else:  # position bands labelled with the prompt's tokens, quoted so that a leading space shows
        assert list(fig.layout.yaxis.ticktext) == ["1: ' Mary'", "3: ' John'"]
    assert ca.colorbar.title.text.startswith("feature effect (logit diff)")


def test_error_nodes_are_grey_and_off_the_colour_scale():
    G = small_graph()
    err = "blocks.1.hook_resid_post/error"
    G.nodes[err]["effect"] = -7.1
    fig = V.circuit_figure(G)
    pts = _node_points(fig)
    # the colour range is the features' (−0.9 … 0.9), not the error node's −7.1
    assert fig.layout.coloraxis.cmax == pytest.approx(0.9) and fig.layout.coloraxis.cmin == pytest.approx(-0.9)
    tr, i = pts[err]
    assert tr.name == "error nodes (ε)" and tr.marker.symbol == "diamond"
    assert tr.marker.color == "#c8c8c8" and tr.marker.coloraxis is None
    assert tr.text[i] == "ε −7.1" and tr.text[pts["blocks.3.hook_resid_post/error"][1]] == "ε 0.05"
    assert "effect: -7.1" in tr.hovertext[i]
    # sizes share one scale over features and error nodes: the error node is the largest
    assert tr.marker.size[i] == pytest.approx(30.0)
    ftr, j = pts["blocks.1.hook_resid_post/3"]
    assert ftr.marker.coloraxis == "coloraxis" and ftr.marker.color[j] == pytest.approx(-0.9)
    assert ftr.marker.size[j] == pytest.approx(7.0 + 23.0 * (0.9 / 7.1) ** 0.5)


def _y_by_column(fig, G):
    cols: dict = {}
    for n, (tr, i) in _node_points(fig).items():
        cols.setdefault((tr.x[i], G.nodes[n].get("position")), []).append((tr.y[i], n))
    return cols


@pytest.mark.parametrize("positions", [False, True])
def test_y_order_is_signed_effect_within_each_column(positions):
    rng = random.Random(3)
    G = nx.DiGraph()
    for i in range(60):  # features and error nodes interleaved, several per (column, position) cell
        layer = i % 3
        feat = "error" if i % 20 == 0 else i
        _add(G, f"blocks.{layer}.hook_resid_post", layer, layer, feat, rng.uniform(-5, 5), 1.0,
             (i // 3) % 2 if positions else None)
    fig = V.circuit_figure(G)
    cells = _y_by_column(fig, G)
    assert len(cells) == (6 if positions else 3)
    for cell in cells.values():
        top_down = [n for _, n in sorted(cell, reverse=True)]
        effects = [G.nodes[n]["effect"] for n in top_down]
        assert effects == sorted(effects) and len({y for y, _ in cell}) == len(cell)


def test_position_bands_fall_back_to_pos_i():
    G = small_graph(positions=True)
    G.graph["prompt_tokens"] = ["<bos>", "\n"]  # too short for position 3; a newline shown escaped
    assert list(V.circuit_figure(G).layout.yaxis.ticktext) == ["1: '\\n'", "pos 3"]
    del G.graph["prompt_tokens"]
    assert list(V.circuit_figure(G).layout.yaxis.ticktext) == ["pos 1", "pos 3"]


def test_legend_names_kinds_and_one_entry_per_edge_sign():
    fig = V.circuit_figure(small_graph())
    assert fig.layout.legend.orientation == "h" and fig.layout.legend.y < 0 and fig.layout.legend.yanchor == "top"
    shown = [tr for tr in fig.data if tr.showlegend is not False]
    assert [tr.name for tr in shown] == ["negative weight", "positive weight", "features", "error nodes (ε)",
                                         "embed / metric"]
    edges = [tr for tr in fig.data if tr.mode == "lines"]
    # weights −0.6 … 0.3: negative edges fill all three width bins, positive ones two; one legend entry each
    assert sorted((tr.legendgroup, tr.line.width) for tr in edges) == [
        ("edges+", 1.0), ("edges+", 2.5), ("edges-", 1.0), ("edges-", 2.5), ("edges-", 4.5)]
    legend_edges = {tr.legendgroup: tr.line for tr in shown if tr.mode == "lines"}
    assert legend_edges["edges+"].width == 2.5 and legend_edges["edges+"].color == "rgba(33,102,172,0.5)"
    assert legend_edges["edges-"].width == 4.5 and legend_edges["edges-"].color == "rgba(178,24,43,0.75)"


def _segments(tr):
    """(x0, y0, x1, y1) of each line segment of an edge trace (points separated by None/NaN)."""
    xs, ys = list(tr.x), list(tr.y)
    return [(xs[k], ys[k], xs[k + 1], ys[k + 1]) for k in range(0, len(xs), 3)]


def test_highlight_keeps_the_neighbourhood_and_fades_the_rest():
    G = small_graph()
    c = "blocks.3.hook_resid_post/11"
    fig = V.circuit_figure(G, highlight=c)
    pts = _node_points(fig)
    near = {c, "blocks.1.hook_resid_post/3", "blocks.1.hook_resid_post/7", "blocks.1.hook_resid_post/error",
            "metric"}
    for n, (tr, i) in pts.items():
        assert tr.marker.opacity[i] == (1.0 if n in near else 0.15), n
        assert (i in tr.selectedpoints) == (n in near)
        assert tr.marker.line.width[i] == (3.0 if n == c else tr.marker.line.width[i])
    assert pts[c][0].marker.line.width[pts[c][1]] == 3.0
    xy = {n: (tr.x[i], tr.y[i]) for n, (tr, i) in pts.items()}
    edges = [tr for tr in fig.data if tr.mode == "lines"]
    bold = {seg for tr in edges if tr.line.color.endswith(",0.95)") for seg in _segments(tr)}
    faint = {seg for tr in edges if tr.line.color.endswith(",0.15)") for seg in _segments(tr)}
    assert len(bold) + len(faint) == sum(len(_segments(tr)) for tr in edges) == G.number_of_edges()
    assert bold == {(*xy[u], *xy[v]) for u, v in G.in_edges(c)} | {(*xy[u], *xy[v]) for u, v in G.out_edges(c)}
    # an emphasised edge is 1.5 px wider than its width bin: a → c (−0.5) is in the widest bin
    a_c = (*xy["blocks.1.hook_resid_post/3"], *xy[c])
    assert next(tr.line.width for tr in edges if a_c in _segments(tr)) == 6.0
    # one legend entry per sign still
    assert sorted(tr.legendgroup for tr in edges if tr.showlegend) == ["edges+", "edges-"]
    # an unknown id (or None) highlights nothing
    plain = V.circuit_figure(G).to_json()
    assert V.circuit_figure(G, highlight="blocks.9.hook_resid_post/1").to_json() == plain
    assert V.circuit_figure(G, None, 600, highlight=None).to_json() == plain


def test_circuit_figure_empty_and_odd_values():
    fig = V.circuit_figure(nx.DiGraph())
    assert len(fig.data) == 0
    G = small_graph()
    G.nodes["blocks.1.hook_resid_post/7"]["effect"] = None
    G.nodes["blocks.1.hook_resid_post/3"]["effect"] = float("nan")
    fig = V.circuit_figure(G)
    assert set(_node_points(fig)) == set(G.nodes)


def test_render_time_100_nodes_500_edges():
    rng = random.Random(0)
    G = nx.DiGraph()
    G.graph.update({"n_layers": 12, "metric": "logit_diff"})
    ids = []
    for i in range(100):
        layer = i % 10
        feat = "error" if i % 17 == 0 else rng.randrange(4096)
        nid = f"blocks.{layer}.hook_resid_post/{feat}"
        if nid in G:
            nid = f"blocks.{layer}.hook_resid_post/{feat}x{i}"
        G.add_node(nid, hook_name=f"blocks.{layer}.hook_resid_post", layer=layer, site=layer, feature=feat,
                   position=None, effect=rng.uniform(-1, 1), activation=rng.uniform(0, 5))
        ids.append(nid)
    while G.number_of_edges() < 500:
        u, v = rng.sample(ids, 2)
        if G.nodes[u]["layer"] < G.nodes[v]["layer"]:
            G.add_edge(u, v, weight=rng.uniform(-0.5, 0.5))
    V.circuit_figure(G)  # warm-up (imports, validators)
    t0 = time.perf_counter()
    fig = V.circuit_figure(G)
    dt = time.perf_counter() - t0
    t0 = time.perf_counter()
    hl = V.circuit_figure(G, highlight=ids[1])
    dt_hl = time.perf_counter() - t0
    print(f"\ncircuit_figure: 100 nodes / 500 edges built in {dt * 1000:.1f} ms ({len(fig.data)} traces), "
          f"with a highlight {dt_hl * 1000:.1f} ms ({len(hl.data)} traces)")
    assert len(fig.data) <= 12 and len(hl.data) <= 18
    assert len(_node_points(fig)) == len(_node_points(hl)) == 100
    assert dt_hl < 0.3  # the app redraws on every slider move: ≤ 300 ms even on a loaded 2-core machine


def test_node_id_from_selection():
    ev = {"selection": {"points": [{"curve_number": 7, "point_number": 2, "x": 1, "y": 0,
                                    "customdata": ["blocks.1.hook_resid_post/3"]}],
                        "point_indices": [2], "box": [], "lasso": []}}
    assert V.node_id_from_selection(ev) == "blocks.1.hook_resid_post/3"
    assert V.node_id_from_selection({"selection": {"points": [{"customdata": "embed"}]}}) == "embed"
    two = {"selection": {"points": [{"customdata": ["a/1"]}, {"customdata": ["b/2"]}, {"customdata": ["a/1"]}]}}
    assert V.node_ids_from_selection(two) == ["a/1", "b/2"]
    for bad in (None, {}, [], "x", 3, {"selection": None}, {"selection": {"points": None}},
                {"selection": {"points": [{}]}}, {"selection": {"points": [{"customdata": []}]}},
                {"selection": {"points": [{"x": 1}]}}, {"selection": {"points": "oops"}}):
        assert V.node_id_from_selection(bad) is None


def test_curve_figure():
    curves = {"atp": {"sizes": [5, 10, 20], "n_nodes": [5, 10, 20], "faithfulness": [0.2, None, 0.9],
                      "completeness": [0.7, 0.4, 0.1], "random_faithfulness": [0.0, 0.05, 0.1],
                      "random_completeness": [0.9, 0.9, None]},
              "ig": {"sizes": [5, 10], "n_nodes": [5, 10], "faithfulness": [0.3, 0.6],
                     "completeness": [None, None], "random_faithfulness": [0.5, 0.05]}}
    fig = V.curve_figure(curves, title="IOI")
    by_name = {tr.name: tr for tr in fig.data}
    assert [tr.name for tr in fig.data] == [
        "atp", "atp faithfulness", "atp completeness", "ig", "ig faithfulness", "random nodes", "random faithfulness",
        "random completeness", "faithfulness (solid)", "completeness (dashed)"]
    assert list(by_name["atp faithfulness"].x) == [5, 20] and list(by_name["atp faithfulness"].y) == [0.2, 0.9]
    # one colour per method, solid faithfulness and dashed completeness, one legend entry for the group
    entry, faith, comp = by_name["atp"], by_name["atp faithfulness"], by_name["atp completeness"]
    assert faith.line.dash == "solid" and comp.line.dash == "dash"
    assert entry.line.color == faith.line.color == comp.line.color != by_name["ig faithfulness"].line.color
    assert entry.legendgroup == faith.legendgroup == comp.legendgroup == "method:atp"
    assert entry.showlegend is not False and faith.showlegend is False and comp.showlegend is False
    assert list(entry.x) == [None] and "atp completeness" in comp.hovertemplate
    # one random baseline, not one per method: merged by size, averaged where two methods give one size
    rnd = by_name["random faithfulness"]
    assert list(rnd.x) == [5, 10, 20] and list(rnd.y) == pytest.approx([0.25, 0.05, 0.1])
    assert list(by_name["random completeness"].x) == [5, 10] and by_name["random completeness"].line.dash == "dash"
    assert [tr.name for tr in fig.data if "random" in tr.name and tr.showlegend is not False] == ["random nodes"]
    # a horizontal legend below the plot: 2 methods + random + 2 style keys
    assert fig.layout.legend.orientation == "h" and fig.layout.legend.y < 0
    assert [tr.name for tr in fig.data if tr.showlegend is not False] == [
        "atp", "ig", "random nodes", "faithfulness (solid)", "completeness (dashed)"]
    assert fig.layout.title.text == "IOI"


def test_curve_figure_legend_for_four_methods():
    curve = {"sizes": [5, 10], "n_nodes": [5, 10], "faithfulness": [0.1, 0.2], "completeness": [0.9, 0.8],
             "random_faithfulness": [0.0, 0.01], "random_completeness": [1.0, 0.99]}
    fig = V.curve_figure({m: dict(curve) for m in ("atp", "ig", "exact", "mask")})
    # was 16 entries (4 methods × 2 scores + a random pair per method); now 4 + 1 + 2
    assert sum(1 for tr in fig.data if tr.showlegend is not False) == 7
    assert [tr.name for tr in fig.data if tr.name.startswith("random ")] == [
        "random nodes", "random faithfulness", "random completeness"]
    assert [tr.name for tr in V.curve_figure({}).data] == ["faithfulness (solid)", "completeness (dashed)"]


# ------------------------------------------------------------------ exports
def test_graphml_round_trip():
    G = small_graph(positions=True)
    data = X.to_graphml(G)
    assert isinstance(data, bytes)
    H = nx.read_graphml(io.BytesIO(data))
    assert set(H.nodes) == set(G.nodes)
    assert set(H.edges) == set(G.edges)
    for u, v, d in G.edges(data=True):
        assert H.edges[u, v]["weight"] == pytest.approx(d["weight"])
    assert H.nodes["blocks.1.hook_resid_post/error@3"]["feature"] == "error"
    assert "position" not in H.nodes["embed"] and "effect" not in H.nodes["metric"]
    meta = json.loads(H.graph["metadata"])
    assert meta["model"] == "tiny-model" and meta["saes"][0]["d_sae"] == 16


def test_csv():
    G = small_graph()
    nodes_csv, edges_csv = X.to_csv(G)
    nodes = pd.read_csv(io.StringIO(nodes_csv))
    edges = pd.read_csv(io.StringIO(edges_csv))
    assert len(nodes) == G.number_of_nodes() and len(edges) == G.number_of_edges()
    assert list(nodes.columns[:8]) == ["id", "hook_name", "layer", "site", "feature", "position", "effect",
                                       "activation"]
    assert list(edges.columns) == ["source", "target", "weight"]
    assert set(nodes["id"]) == set(G.nodes)
    assert edges["weight"].sum() == pytest.approx(sum(d["weight"] for _, _, d in G.edges(data=True)))
    empty_nodes, empty_edges = X.to_csv(nx.DiGraph())
    assert empty_nodes.startswith("id,") and empty_edges.startswith("source,target,weight")


def test_html_standalone():
    html = X.to_html(V.circuit_figure(small_graph()))
    assert "plotly" in html.lower() and "<html" in html.lower()
    # no external script: plotly.js is inlined (the bundle itself mentions cdn.plot.ly only as the
    # default topojson URL for geo maps, which a circuit figure never loads)
    assert not re.search(r"<script[^>]*\bsrc=", html)
    assert '<script src="https://cdn.plot.ly' not in html
    assert "hook_resid_post" in html and "carries clean behaviour" in html


def test_neuronpedia():
    for positions in (False, True):
        G = small_graph(positions)
        G.nodes[next(iter(G))]["label"] = "names"
        doc = X.to_neuronpedia(G, slug="IOI test / run 1")
        json.dumps(doc)  # serialisable
        md = doc["metadata"]
        assert md["slug"] == "ioi-test-run-1" and md["scan"] == "tiny-model"
        assert md["prompt"] == "When Mary and John" and md["schema_version"] == 1
        assert md["prompt_tokens"] == ["When", " Mary", " and", " John"] and md["node_threshold"] == 0.1
        assert md["info"]["creator"] == "SFC Explorer" and md["info"]["method"] == "atp"
        assert doc["qParams"] == {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "",
                                  "sparsityThreshold": None}
        keys = {"node_id", "feature", "layer", "ctx_idx", "feature_type", "jsNodeId", "clerp", "influence",
                "activation", "is_target_logit"}
        ids = set()
        for node in doc["nodes"]:
            assert keys <= set(node)
            assert isinstance(node["layer"], str) and isinstance(node["ctx_idx"], int)
            assert node["feature_type"] in ("sae feature", "sae error", "embedding", "logit")
            ids.add(node["node_id"])
        assert len(ids) == G.number_of_nodes()
        by_sfc = {n["sfc_id"]: n for n in doc["nodes"]}
        assert by_sfc["embed"]["layer"] == "E" and by_sfc["metric"]["layer"] == "5"
        assert by_sfc["metric"]["is_target_logit"] and by_sfc["metric"]["feature_type"] == "logit"
        err = by_sfc["blocks.1.hook_resid_post/error" + ("@3" if positions else "")]
        assert err["feature_type"] == "sae error" and err["ctx_idx"] == (3 if positions else 0)
        assert by_sfc[next(iter(G))]["clerp"] == "names"
        assert len(doc["links"]) == G.number_of_edges()
        for link in doc["links"]:
            assert {"source", "target", "weight"} <= set(link)
            assert link["source"] in ids and link["target"] in ids
    assert X.to_neuronpedia(small_graph())["metadata"]["slug"] == "sfc-tiny-model-atp"


def test_neuronpedia_multi_hook_layer_ids_unique():
    G = nx.DiGraph()
    _add(G, "blocks.2.hook_resid_post", 2, 1, 5, 0.1, 1.0)
    _add(G, "blocks.2.hook_mlp_out", 2, 0, 5, 0.2, 1.0)
    doc = X.to_neuronpedia(G)
    ids = [n["node_id"] for n in doc["nodes"]]
    assert len(set(ids)) == 2 and "2_mlp_out.5_0" in ids


def test_safe_filename():
    assert X.safe_filename("../../etc/passwd", "json") == "etc_passwd.json"
    assert X.safe_filename("", "csv") == "circuit.csv"
    assert X.safe_filename("a b/c?.json", "json") == "a_b_c_.json"
    assert X.safe_filename("...", "") == "circuit"
    long = X.safe_filename("x" * 300, "graphml")
    assert len(long) <= 80 and long.endswith(".graphml")
    for name in ("../../etc/passwd", "", "a b/c?.json", "ünïcödé name", ".hidden"):
        out = X.safe_filename(name, "png")
        assert out and not out.startswith(".") and re.fullmatch(r"[A-Za-z0-9._-]+", out) and len(out) <= 80


# ------------------------------------------------------------------ static images
def test_to_image_with_browser():
    if not os.path.exists("/usr/bin/chromium") and X._find_browser() is None:
        pytest.skip("no Chromium/Chrome installed: static image export unavailable here")
    fig = V.circuit_figure(small_graph())
    png = X.to_image(fig, "png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    svg = X.to_image(fig, "svg")
    assert svg.lstrip()[:4] == b"<svg" or svg.lstrip()[:5] == b"<?xml"


def test_with_node_text_writes_every_node():
    G = small_graph()
    fig = V.circuit_figure(G, feature_labels={"blocks.1.hook_resid_post/7": "promotes: ' she'"})
    static = V.with_node_text(fig)
    before = {tr.name: (tr.mode, tr.text) for tr in fig.data}
    text = {}
    for tr in static.data:
        if tr.customdata is not None:
            assert tr.mode == "markers+text"
            text.update({cd[0]: t for cd, t in zip(tr.customdata, tr.text)})
    assert text == {"blocks.1.hook_resid_post/3": "L1/3", "blocks.1.hook_resid_post/7": "' she'",
                    "blocks.3.hook_resid_post/11": "L3/11", "blocks.1.hook_resid_post/error": "ε −0.2",
                    "blocks.3.hook_resid_post/error": "ε 0.05", "embed": "embed", "metric": "metric"}
    assert {tr.name: (tr.mode, tr.text) for tr in fig.data} == before  # the figure itself is unchanged
    assert [tr.to_json() for tr in static.data if tr.customdata is None] == \
        [tr.to_json() for tr in fig.data if tr.customdata is None]  # edges untouched
    assert V.node_short_id("blocks.12.hook_resid_post/123@4") == "L12/123"
    assert V.node_short_id("blocks.2.hook_resid_post/error") == "ε" and V.node_short_id("other@x") == "other@x"


def test_to_image_renders_the_figure_with_node_text(monkeypatch):
    import plotly.graph_objects as go

    captured = {}

    def fake_to_image(self, format, width=None, height=None, scale=None):  # plotly's parameter names
        captured.update(fig=self, format=format, scale=scale)
        return b"image"

    monkeypatch.setattr(X, "_find_browser", lambda: "/bin/true")
    monkeypatch.setenv("BROWSER_PATH", "/bin/true")
    monkeypatch.setattr(go.Figure, "to_image", fake_to_image)
    fig = V.circuit_figure(small_graph())
    assert X.to_image(fig, "svg") == b"image"
    sent = captured["fig"]
    assert sent is not fig and captured["format"] == "svg" and captured["scale"] == 1
    feats = next(tr for tr in sent.data if tr.name == "features")
    assert feats.mode == "markers+text" and list(feats.text) == ["L1/3", "L1/7", "L3/11"]
    assert next(tr for tr in fig.data if tr.name == "features").mode == "markers"


def test_to_image_without_browser(monkeypatch):
    fig = V.circuit_figure(small_graph())
    if not os.path.exists("/usr/bin/chromium") and X._find_browser() is None:
        with pytest.raises(ExportError, match="Chromium"):  # the real environment
            X.to_image(fig, "png")
    monkeypatch.setattr(X, "_find_browser", lambda: None)
    with pytest.raises(ExportError, match=r"needs Chromium \(apt install chromium\)") as info:
        X.to_image(fig, "svg")
    assert isinstance(info.value, SFCError) and "\n" not in str(info.value)
    with pytest.raises(ExportError):
        X.to_image(fig, "gif")
