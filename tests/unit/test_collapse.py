"""collapse(): the largest nodes kept, the rest grouped per hook point into display-only markers."""

from __future__ import annotations

import networkx as nx
import pytest

from sfc_core import viz as V
from sfc_core.collapse import collapse, filter_view, is_marker, marker_id
from sfc_core.errors import InputError
from sfc_core.nodes import parse_id

H1, H3 = "blocks.1.hook_resid_post", "blocks.3.hook_resid_post"


def _add(G, hook, layer, site, feature, effect):
    nid = f"{hook}/{feature}"
    G.add_node(nid, hook_name=hook, layer=layer, site=site, feature=feature, position=None, effect=effect,
               activation=1.0)
    return nid


def hand_graph() -> nx.DiGraph:
    """Two sites of 4 nodes each; effects chosen so that the top 3 by |effect| are a1, b1, b2."""
    G = nx.DiGraph()
    G.graph.update({"model": "tiny", "metric": "logit_diff", "n_layers": 4})
    G.add_node("embed", hook_name="hook_embed", layer=-1, site=-1, feature="embed", position=None, effect=None)
    G.add_node("metric", hook_name="metric", layer=4, site=2, feature="metric", position=None, effect=None)
    a1 = _add(G, H1, 1, 0, 3, -2.0)      # kept
    a2 = _add(G, H1, 1, 0, 7, 0.5)       # grouped at L1
    a3 = _add(G, H1, 1, 0, 9, -0.25)     # grouped at L1
    ae = _add(G, H1, 1, 0, "error", 0.125)  # grouped at L1 (error nodes count as nodes)
    b1 = _add(G, H3, 3, 1, 11, 1.5)      # kept
    _add(G, H3, 3, 1, 12, -1.0)          # kept (b2)
    b3 = _add(G, H3, 3, 1, 13, 0.75)     # grouped at L3
    b4 = _add(G, H3, 3, 1, 14, -0.0625)  # grouped at L3
    for u, v, w in [("embed", a1, 0.3), ("embed", a2, 0.2), ("embed", a3, -0.1),   # embed → m1: 0.1
                    (a1, b1, 0.4), (a1, b3, 0.25), (a1, b4, 0.5),                   # a1 → m3: 0.75
                    (a2, b1, 0.125), (a3, b1, -0.5), (ae, b1, 1.0),                 # m1 → b1: 0.625
                    (a2, b3, 0.5), (a3, b4, 0.25), (ae, b3, -0.125),               # m1 → m3: 0.625
                    (b1, "metric", 1.0), (b3, "metric", 0.5), (b4, "metric", 0.25)]:  # m3 → metric: 0.75
        G.add_edge(u, v, weight=w)
    return G


def test_collapse_keeps_top_and_sums():
    G = hand_graph()
    C = collapse(G, max_nodes=3)
    m1, m3 = marker_id(H1), marker_id(H3)
    kept = {f"{H1}/3", f"{H3}/11", f"{H3}/12"}
    assert set(C.nodes) == kept | {"embed", "metric", m1, m3}
    for n in kept:  # kept nodes keep their attributes
        assert C.nodes[n] == G.nodes[n]
    d1, d3 = C.nodes[m1], C.nodes[m3]
    assert d1["collapsed"] and d3["collapsed"] and is_marker(C, m1) and not is_marker(C, f"{H1}/3")
    assert d1["n_members"] == 3 and set(d1["members"]) == {f"{H1}/7", f"{H1}/9", f"{H1}/error"}
    assert d1["members"][0] == f"{H1}/7"  # largest |effect| first
    assert d1["n_errors"] == 1 and d1["label"] == "other 3 nodes at L1"
    assert d3["n_members"] == 2 and d3["n_errors"] == 0 and d3["label"] == "other 2 latents at L3"
    assert d1["effect"] == pytest.approx(0.5 - 0.25 + 0.125)
    assert d1["abs_effect"] == pytest.approx(0.5 + 0.25 + 0.125)
    assert d3["effect"] == pytest.approx(0.75 - 0.0625)
    assert (d1["hook_name"], d1["layer"], d1["site"], d1["position"]) == (H1, 1, 0, None)
    w = {(u, v): d["weight"] for u, v, d in C.edges(data=True)}
    assert w[("embed", m1)] == pytest.approx(0.1)
    assert w[(f"{H1}/3", m3)] == pytest.approx(0.75)
    assert w[(m1, f"{H3}/11")] == pytest.approx(0.625)
    assert w[(m1, m3)] == pytest.approx(0.625)
    assert w[(m3, "metric")] == pytest.approx(0.75)
    assert C.edges[m1, m3]["n_edges"] == 3
    assert w[("embed", f"{H1}/3")] == 0.3 and w[(f"{H1}/3", f"{H3}/11")] == 0.4  # kept ↔ kept unchanged
    # total edge weight is conserved (no edge inside a marker here)
    assert sum(w.values()) == pytest.approx(sum(d["weight"] for _, _, d in G.edges(data=True)))
    assert C.graph["collapsed"] == {"max_nodes": 3, "n_kept": 3, "n_grouped": 5, "n_markers": 2}
    assert "collapsed" not in G.graph and marker_id(H1) not in G  # G untouched


def test_marker_ids_are_not_node_ids():
    C = collapse(hand_graph(), max_nodes=2)
    markers = [n for n in C if is_marker(C, n)]
    assert markers
    for n in markers:
        with pytest.raises(InputError):
            parse_id(n)


def test_small_graph_unchanged_and_ends_always_kept():
    G = hand_graph()
    for k in (8, 100):
        C = collapse(G, max_nodes=k)
        assert C is not G and nx.utils.graphs_equal(C, G)
    C = collapse(G, max_nodes=0)
    assert {"embed", "metric"} <= set(C.nodes)
    assert all(is_marker(C, n) for n in C if n not in ("embed", "metric"))
    assert sum(C.nodes[n]["n_members"] for n in C if is_marker(C, n)) == 8
    with pytest.raises(InputError):
        collapse(G, max_nodes=-1)


def test_figure_draws_markers_and_labels():
    G = hand_graph()
    C = collapse(G, max_nodes=3)
    labels = {f"{H1}/3": "promotes: ' Mary', ' John', ' she'", f"{H3}/11": "short"}
    fig = V.circuit_figure(C, feature_labels=labels)
    assert len(fig.data) < 12
    pts = {}
    for tr in fig.data:
        for i, cd in enumerate(tr.customdata if tr.customdata is not None else []):
            pts[cd[0]] = (tr, i)
    assert set(pts) == set(C.nodes)
    tr, i = pts[marker_id(H1)]
    assert tr.marker.symbol == "circle-open" and tr.name == "other nodes (grouped)"
    assert tr.text[i] == "other 3"
    assert "3 nodes" in tr.hovertext[i] and "summed effect: 0.375" in tr.hovertext[i]
    tr, i = pts[f"{H1}/3"]
    assert tr.marker.symbol == "circle" and "text" in tr.mode
    assert tr.text[i] == "' Mary', ' John',…"  # "promotes: " dropped, cut to 18 characters
    assert "' she'" in tr.hovertext[i]  # the full label stays in the hover
    assert tr.text[pts[f"{H3}/11"][1]] == "short" and tr.text[pts[f"{H3}/12"][1]] == ""
    # the marker sits below the kept nodes of its column; colour range from real nodes only
    y = {n: t.y[j] for n, (t, j) in pts.items()}
    assert y[marker_id(H3)] < min(y[f"{H3}/11"], y[f"{H3}/12"])
    assert fig.layout.coloraxis.cmax == pytest.approx(2.0)
    # edges to / from markers: the thinnest bin
    widths = {t.line.width for t in fig.data if t.mode == "lines"}
    assert min(widths) == 1.0
    # without labels no text is drawn on the feature trace
    plain = V.circuit_figure(C)
    feat = next(t for t in plain.data if t.name == "features")
    assert feat.mode == "markers"


def test_figure_positional_markers_below_bands():
    G = hand_graph()
    for n in list(G):
        if n not in ("embed", "metric"):
            G.nodes[n]["position"] = 1 if n.endswith(("3", "11")) else 2
    C = collapse(G, max_nodes=3)
    fig = V.circuit_figure(C)
    assert "grouped" in list(fig.layout.yaxis.ticktext)
    mk = next(t for t in fig.data if t.name == "other nodes (grouped)")
    others = [y for t in fig.data if t.customdata is not None and t.name != "other nodes (grouped)" for y in t.y]
    assert max(mk.y) < min(others)


def test_edges_inside_a_marker_are_dropped():
    G = hand_graph()
    G.add_edge(f"{H1}/7", f"{H1}/9", weight=9.0)  # both grouped into the L1 marker
    C = collapse(G, max_nodes=3)
    assert not C.has_edge(marker_id(H1), marker_id(H1))
    assert C.number_of_edges() == collapse(hand_graph(), max_nodes=3).number_of_edges()


def _view_graph() -> nx.DiGraph:
    """hand_graph plus: a lone latent, a latent whose only edge goes to an error node, a self-looped latent, and
    scores and supernodes in the metadata."""
    G = hand_graph()
    _add(G, H3, 3, 1, 20, -3.0)                      # no edge at all
    only_err = _add(G, H3, 3, 1, 21, 0.5)
    G.add_edge(f"{H1}/error", only_err, weight=0.2)  # its only edge comes from an error node
    loop = _add(G, H3, 3, 1, 22, 0.1)
    G.add_edge(loop, loop, weight=1.0)               # a self-loop joins it to nothing else
    G.graph["scores"] = {"faithfulness": 0.8, "completeness": 0.1}
    G.graph["supernodes"] = [{"name": "movers", "nodes": [f"{H1}/3", f"{H3}/20"]},
                             {"name": "gone", "nodes": [f"{H3}/20"]}]
    return G


def test_filter_view_hides_errors_and_disconnected_nodes():
    G = _view_graph()
    before = nx.node_link_data(G, edges="links")
    inner = {n for n in G if n not in ("embed", "metric")}
    # nothing asked: the same graph, with an empty count
    V0 = filter_view(G)
    assert set(V0.nodes) == set(G.nodes) and set(V0.edges) == set(G.edges)
    assert V0.graph["hidden"] == {"errors": 0, "disconnected": 0}
    # error nodes only (with their edges)
    E = filter_view(G, hide_errors=True)
    assert set(E.nodes) == set(G.nodes) - {f"{H1}/error"} and E.graph["hidden"] == {"errors": 1, "disconnected": 0}
    assert not any(f"{H1}/error" in e for e in E.edges)
    # disconnected only: hand_graph's edgeless b2 (H3/12), the lone latent and the self-looped one; the error
    # node's target keeps its edge
    D = filter_view(G, hide_disconnected=True)
    assert inner - set(D.nodes) == {f"{H3}/12", f"{H3}/20", f"{H3}/22"}
    assert D.graph["hidden"] == {"errors": 0, "disconnected": 3}
    # both: disconnected is judged on the view without error nodes, so H3/21 goes too
    B = filter_view(G, hide_errors=True, hide_disconnected=True)
    assert inner - set(B.nodes) == {f"{H1}/error", f"{H3}/12", f"{H3}/20", f"{H3}/21", f"{H3}/22"}
    assert B.graph["hidden"] == {"errors": 1, "disconnected": 4}
    for n in B:  # attributes and the remaining edges as they were
        assert B.nodes[n] == G.nodes[n]
    assert {(u, v): d for u, v, d in B.edges(data=True)} == {
        (u, v): d for u, v, d in G.edges(data=True) if u in B and v in B}
    # metadata kept; supernodes cut to what is shown, an emptied one dropped
    assert B.graph["scores"] == {"faithfulness": 0.8, "completeness": 0.1} and B.graph["model"] == "tiny"
    assert B.graph["supernodes"] == [{"name": "movers", "nodes": [f"{H1}/3"]}]
    assert nx.node_link_data(G, edges="links") == before and "hidden" not in G.graph  # G untouched


def test_filter_view_keeps_lone_end_points_and_collapses_after():
    G = nx.DiGraph()
    G.add_node("embed", hook_name="hook_embed", layer=-1, site=-1, feature="embed", position=None, effect=None)
    G.add_node("metric", hook_name="metric", layer=4, site=2, feature="metric", position=None, effect=None)
    a = _add(G, H1, 1, 0, 3, -1.0)
    b = _add(G, H1, 1, 0, 4, 0.5)
    G.add_edge(a, "metric", weight=0.3)  # a reaches the metric; b and embed have no edge
    V = filter_view(G, hide_disconnected=True)
    assert set(V.nodes) == {"embed", "metric", a} and V.graph["hidden"]["disconnected"] == 1
    assert b not in V
    # the count survives a collapse of the view (collapse copies the metadata)
    assert collapse(V, max_nodes=0).graph["hidden"] == {"errors": 0, "disconnected": 1}


def test_filter_view_keeps_markers_of_error_nodes():
    C = collapse(hand_graph(), max_nodes=3)  # the L1 marker groups an error node among its members
    V = filter_view(C, hide_errors=True)
    assert marker_id(H1) in V and V.graph["hidden"]["errors"] == 0
