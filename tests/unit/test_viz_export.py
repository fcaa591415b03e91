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
    label_node = next(n for n in G if n.endswith("/3") or n.endswith("/3@1"))
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
    else:
        assert list(fig.layout.yaxis.ticktext) == ["1:  Mary", "3:  John"]


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
    print(f"\ncircuit_figure: 100 nodes / 500 edges rendered in {dt * 1000:.1f} ms, {len(fig.data)} traces")
    assert len(fig.data) < 20
    assert len(_node_points(fig)) == 100


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
                     "completeness": [None, None]}}
    fig = V.curve_figure(curves, title="IOI")
    by_name = {tr.name: tr for tr in fig.data}
    assert list(by_name["atp faithfulness"].x) == [5, 20]
    assert by_name["atp faithfulness"].line.dash == "solid"
    assert by_name["atp completeness"].line.dash == "dash"
    assert by_name["random faithfulness (atp)"].line.dash == "dot"
    assert "ig completeness" not in by_name and "random faithfulness (ig)" not in by_name
    assert fig.layout.title.text == "IOI"


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
