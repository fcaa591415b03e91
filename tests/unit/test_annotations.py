"""Node labels and supernodes: the editing rules, and round trips through every circuit format."""

from __future__ import annotations

import json

import pytest

from sfc_core import annotations as A
from sfc_core import circuit as C
from sfc_core import export as X
from sfc_core import viz as V
from sfc_core.collapse import collapse
from sfc_core.errors import InputError
from tests.unit.test_viz_export import small_graph

H1, H3 = "blocks.1.hook_resid_post", "blocks.3.hook_resid_post"


def annotated():
    G = small_graph()
    A.attach_auto_labels(G, lambda hook, f: {3: "' Mary'|' John'", 7: "after ' the'\n"}.get(f, ""))
    A.set_label(G, f"{H3}/11", "name mover (S-inhibition?)")
    A.add_supernode(G, "names", [f"{H1}/3", f"{H1}/7"])
    A.add_supernode(G, "late", [f"{H3}/11"])
    return G


def view(G):
    """What must survive a round trip: labels, automatic labels and supernodes."""
    labels = {n: (d.get("label"), d.get("auto_label")) for n, d in G.nodes(data=True)}
    return labels, A.supernodes(G)


def test_labels_and_display():
    G = annotated()
    assert G.nodes[f"{H1}/3"]["auto_label"] == "' Mary'|' John'"
    assert G.nodes[f"{H1}/7"]["auto_label"] == "after ' the'\\n"  # control characters written as escapes
    assert A.display_label(G, f"{H3}/11") == "name mover (S-inhibition?)"
    assert A.display_label(G, f"{H1}/3") == "' Mary'|' John'"
    assert A.display_label(G, f"{H1}/error") == ""
    A.set_label(G, f"{H1}/3", "Mary or John")
    assert A.display_label(G, f"{H1}/3") == "Mary or John"
    A.set_label(G, f"{H1}/3", "  ")  # a blank rename goes back to the automatic label
    assert A.display_label(G, f"{H1}/3") == "' Mary'|' John'"
    with pytest.raises(InputError, match="is empty"):
        A.check_label(" \t ")
    assert A.supernode_of(G, f"{H1}/7") == "names" and A.supernode_of(G, f"{H1}/error") is None


@pytest.mark.parametrize("label, message", [
    ("x" * 201, "201 characters"), ("bad\x07bell", "control character"), (3, "must be text")])
def test_bad_labels_are_refused_and_change_nothing(label, message):
    G = annotated()
    before = view(G)
    with pytest.raises(InputError, match=message):
        A.set_label(G, f"{H1}/3", label)
    assert view(G) == before


def test_a_label_of_200_characters_is_fine():
    G = small_graph()
    A.set_label(G, f"{H1}/3", "y" * 200)
    assert len(A.display_label(G, f"{H1}/3")) == 200


@pytest.mark.parametrize("name, members, message", [
    ("empty", [], "has no nodes"),
    ("names", [f"{H1}/error"], "two supernodes are named 'names'"),
    ("again", [f"{H1}/3"], "is in both supernode 'names' and 'again'"),
    ("ghost", ["blocks.2.hook_resid_post/f9"], "not a node of this circuit"),
    ("x" * 300, [f"{H1}/error"], "300 characters"),
])
def test_bad_supernodes_are_refused_and_change_nothing(name, members, message):
    G = annotated()
    before = view(G)
    with pytest.raises(InputError, match=message):
        A.add_supernode(G, name, members)
    assert view(G) == before


def test_remove_supernode():
    G = annotated()
    A.remove_supernode(G, "names")
    assert [s["name"] for s in A.supernodes(G)] == ["late"]
    with pytest.raises(InputError, match="no supernode named 'names'"):
        A.remove_supernode(G, "names")


def test_sfc_circuit_2_round_trip_and_reading_1():
    G = annotated()
    doc = C.to_json(G)
    assert doc["schema"] == "sfc-circuit/2"
    assert doc["supernodes"] == [{"name": "names", "nodes": [f"{H1}/3", f"{H1}/7"]},
                                 {"name": "late", "nodes": [f"{H3}/11"]}]
    H = C.load_circuit(json.dumps(doc))
    assert view(H) == view(G) and "supernodes" not in H.graph.get("metadata", {})
    assert sorted(H.edges(data=True)) == sorted(G.edges(data=True))
    old = dict(doc, schema="sfc-circuit/1")
    for key in ("supernodes",):
        old.pop(key)
    old["nodes"] = [{k: v for k, v in n.items() if k not in ("label", "auto_label")} for n in doc["nodes"]]
    H1_ = C.from_json(old)
    assert A.supernodes(H1_) == [] and all(A.display_label(H1_, n) == "" for n in H1_)


@pytest.mark.parametrize("change, message", [
    (lambda d: d["supernodes"].append({"name": "names", "nodes": [d["nodes"][2]["id"]]}), "two supernodes"),
    (lambda d: d["supernodes"].append({"name": "none", "nodes": []}), "has no nodes"),
    (lambda d: d["supernodes"].append({"name": "ghost", "nodes": ["blocks.2.hook_resid_post/f1"]}),
     "not a node of this circuit"),
    (lambda d: d["nodes"][0].update(label="a\nb"), "control character"),
    (lambda d: d["nodes"][0].update(label="z" * 250), "250 characters"),
])
def test_bad_annotations_in_a_file_are_refused(change, message):
    doc = C.to_json(annotated())
    change(doc)
    with pytest.raises(InputError, match=message):
        C.load_circuit(json.dumps(doc))


def test_graphml_round_trip():
    G = annotated()
    H = X.from_graphml(X.to_graphml(G))
    assert view(H) == view(G)
    assert {n: H.nodes[n]["feature"] for n in H} == {n: G.nodes[n]["feature"] for n in G}
    assert H.graph["scores"] == G.graph["scores"]


def test_csv_round_trip():
    G = annotated()
    nodes_csv, edges_csv = X.to_csv(G)
    assert "name mover (S-inhibition?)" in nodes_csv and ",names" in nodes_csv
    H = X.from_csv(nodes_csv, edges_csv)
    assert view(H) == view(G)
    assert {n: H.nodes[n]["feature"] for n in H} == {n: G.nodes[n]["feature"] for n in G}
    assert {(u, v): round(d["weight"], 9) for u, v, d in H.edges(data=True)} == \
        {(u, v): round(d["weight"], 9) for u, v, d in G.edges(data=True)}


def test_neuronpedia_labels_supernodes_and_round_trip():
    G = annotated()
    doc = X.to_neuronpedia(G)
    by_sfc = {n["sfc_id"]: n for n in doc["nodes"]}
    assert by_sfc[f"{H3}/11"]["clerp"] == "name mover (S-inhibition?)"
    assert by_sfc[f"{H1}/3"]["clerp"] == "' Mary'|' John'"
    assert doc["qParams"]["supernodes"] == [["names", by_sfc[f"{H1}/3"]["node_id"], by_sfc[f"{H1}/7"]["node_id"]],
                                            ["late", by_sfc[f"{H3}/11"]["node_id"]]]
    H = C.load_circuit(json.dumps(doc))
    assert view(H) == view(G)
    doc["qParams"]["supernodes"].append(["ghost", "99_1_0"])
    with pytest.raises(InputError, match="'99_1_0', which is not a node"):
        X.from_neuronpedia(doc)


def test_html_and_figure_show_labels_and_supernodes():
    G = annotated()
    drawn = collapse(G, 60)
    markers = [n for n, d in drawn.nodes(data=True) if d.get("supernode")]
    assert len(markers) == 2 and {drawn.nodes[m]["label"] for m in markers} == {"names", "late"}
    names = next(m for m in markers if drawn.nodes[m]["label"] == "names")
    assert drawn.nodes[names]["effect"] == pytest.approx(-0.9 + 0.4)
    assert drawn.has_edge(names, "metric") and drawn.edges[names, "metric"]["weight"] == pytest.approx(-0.3)
    assert drawn.has_edge("embed", names) and drawn.edges["embed", names]["weight"] == pytest.approx(0.3 - 0.1)
    labels = {n: A.display_label(drawn, n) for n in drawn if A.display_label(drawn, n)}
    html = X.to_html(V.circuit_figure(drawn, feature_labels=labels))
    assert "names" in html and "late" in html and "supernode" in html


def test_apply_annotations_to_another_selection():
    G = annotated()
    saved = A.annotations_of(G)
    smaller = G.copy()
    smaller.remove_node(f"{H1}/7")
    smaller.remove_node(f"{H3}/11")
    for n in smaller:
        smaller.nodes[n].pop("label", None)
    smaller.graph.pop("supernodes")
    A.apply_annotations(smaller, saved)
    assert A.supernodes(smaller) == [{"name": "names", "nodes": [f"{H1}/3"]}]


def test_merge_annotations_keeps_what_a_smaller_selection_does_not_show():
    G = annotated()
    saved = A.annotations_of(G)
    smaller = G.copy()
    smaller.remove_node(f"{H1}/7")
    A.apply_annotations(smaller, saved)
    A.set_label(smaller, f"{H1}/3", "Mary or John")
    A.remove_supernode(smaller, "late")
    merged = A.merge_annotations(saved, smaller)
    assert merged["labels"] == {f"{H3}/11": "name mover (S-inhibition?)", f"{H1}/3": "Mary or John"}
    assert merged["supernodes"] == [{"name": "names", "nodes": [f"{H1}/3", f"{H1}/7"]}]
