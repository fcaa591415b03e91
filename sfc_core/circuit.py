"""Circuits: node selection from an :class:`~sfc_core.attribution.Attribution`, the
``networkx.DiGraph`` they live in, statistics, and the ``sfc-circuit/2`` JSON format (``/1`` still read).

Graph contract: node ids are :attr:`sfc_core.nodes.Node.id` strings (``"{hook_name}/{feature}"``,
``".../error"`` for ε, ``"@{position}"`` when positions are kept, ``"embed"`` and ``"metric"`` end
points at layers −1 and ``n_layers``). Node attributes: ``hook_name, layer, site, feature, position,
effect, activation`` (:func:`sfc_core.nodes.node_attrs`); edge attribute ``weight`` (metric units).
Optional node attributes ``label`` (the user's) and ``auto_label`` (from the feature index), and
``G.graph["supernodes"]``: see :mod:`sfc_core.annotations`. ``G.graph`` holds the metadata and, once
evaluated, ``scores``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import networkx as nx

from .annotations import check_annotations
from .attribution import Attribution
from .errors import InputError
from .nodes import EMBED, METRIC, Node, NodeSpace, from_fields, is_end_id, node_attrs

SCHEMA = "sfc-circuit/2"
#: Schemas :func:`from_json` reads: ``/1`` is ``/2`` without labels and supernodes.
READ_SCHEMAS = ("sfc-circuit/1", SCHEMA)


# ------------------------------------------------------------------ selection
def select_nodes(attr: Attribution, node_threshold: float | None = None, top_k: int | None = None,
                 top_k_per_layer: int | None = None) -> list[Node]:
    """Nodes by ``|effect| ≥ node_threshold``, by the ``top_k`` largest ``|effect|`` overall, or by
    the ``top_k_per_layer`` largest at each site (exactly one rule). Nodes with effect 0 are never kept.

    Returns nodes sorted by ``|effect|``, largest first (ties: shallower site, then lower index).
    Raises:
        InputError: no rule or several rules, a negative threshold or a non-positive k.
    """
    rules = [r for r in (node_threshold, top_k, top_k_per_layer) if r is not None]
    if len(rules) != 1:
        raise InputError("choose exactly one of node threshold, top-k or top-k per layer")
    if node_threshold is not None and (node_threshold < 0 or math.isnan(node_threshold)):
        raise InputError(f"node threshold must be ≥ 0, not {node_threshold}")
    if (top_k is not None and top_k <= 0) or (top_k_per_layer is not None and top_k_per_layer <= 0):
        raise InputError("top-k must be a positive integer")
    return attr.space.ranked(attr.effects, threshold=node_threshold, per_site=top_k_per_layer, limit=top_k)


# ------------------------------------------------------------------ graph
def build_graph(attr: Attribution, nodes: list[Node], edges: dict[tuple, float] | None = None,
                edge_threshold: float = 0.0, metadata: dict | None = None, n_layers: int | None = None) -> nx.DiGraph:
    """The circuit as a ``DiGraph``: ``nodes`` with their effects and activations, edges with
    ``|weight| ≥ edge_threshold`` between kept nodes (and ``embed`` / ``metric``).

    Node ``effect`` (metric units) and ``activation`` come from ``attr``'s per-site ``[d_sae + 1]`` /
    ``[pos, d_sae + 1]`` tensors.

    Args:
        edges: ``{(source Node, target Node): weight}`` in metric units (:func:`~sfc_core.edges.edge_effects`).
        n_layers: the metric end point's layer (default ``metadata["n_layers"]``).

    Raises:
        InputError: a negative edge threshold, or a node at a hook point without an SAE in ``attr`` or with a
            latent index out of range.
    """
    if edge_threshold < 0 or math.isnan(edge_threshold):
        raise InputError(f"edge threshold must be ≥ 0, not {edge_threshold}")
    space = attr.space
    G = nx.DiGraph()
    G.graph.update(metadata or {})
    for node in nodes:
        G.add_node(node.id, **node_attrs(node, space), effect=space.value(attr.effects, node),
                   activation=space.value(attr.activations, node))
    kept = set(G.nodes)
    n_layers = n_layers if n_layers is not None else G.graph.get("n_layers", 0)
    for (u, v), w in (edges or {}).items():
        su, sv = u.id, v.id
        if abs(w) < edge_threshold or (su not in kept and u != EMBED) or (sv not in kept and v != METRIC):
            continue
        for end in (u, v):
            if end.is_end and end.id not in G:
                G.add_node(end.id, **node_attrs(end, space, n_layers), effect=None, activation=None)
        G.add_edge(su, sv, weight=float(w))
    return G


def circuit_stats(G: nx.DiGraph, n_hubs: int = 5) -> dict:
    """Nodes, edges, density, nodes per layer, top in/out-degree hubs, weakly connected components
    (embedding and metric end-points excluded from node counts)."""
    inner = [n for n in G.nodes if not is_end_id(n)]
    per_layer: dict[int, int] = {}
    for n in inner:
        per_layer[G.nodes[n]["layer"]] = per_layer.get(G.nodes[n]["layer"], 0) + 1
    n_err = sum(1 for n in inner if G.nodes[n]["feature"] == "error")
    return {
        "nodes": len(inner),
        "features": len(inner) - n_err,
        "error_nodes": n_err,
        "edges": G.number_of_edges(),
        "density": nx.density(G) if G.number_of_nodes() > 1 else 0.0,
        "nodes_per_layer": dict(sorted(per_layer.items())),
        "in_degree_hubs": sorted(G.in_degree, key=lambda t: -t[1])[:n_hubs],
        "out_degree_hubs": sorted(G.out_degree, key=lambda t: -t[1])[:n_hubs],
        "weakly_connected_components": nx.number_weakly_connected_components(G) if G.number_of_nodes() else 0,
    }


# ------------------------------------------------------------------ sfc-circuit/2
_NODE_FIELDS = ("id", "hook_name", "layer", "site", "feature", "position", "effect", "activation")
#: Node fields ``/2`` adds, written only where set.
_LABEL_FIELDS = ("label", "auto_label")
_NOT_METADATA = ("scores", "supernodes")


def to_json(G: nx.DiGraph) -> dict:
    """The ``sfc-circuit/2`` document of ``G``: ``schema``, ``metadata``, ``nodes`` (the contract's fields, plus
    ``label`` / ``auto_label`` where set), ``edges``, ``scores`` and ``supernodes`` (``[{"name", "nodes"}]``)."""
    meta = {k: v for k, v in G.graph.items() if k not in _NOT_METADATA}
    nodes = []
    for n in G.nodes:
        d = G.nodes[n]
        nodes.append({"id": n, **{f: d.get(f) for f in _NODE_FIELDS[1:]},
                      **{f: d[f] for f in _LABEL_FIELDS if d.get(f)}})
    edges = [{"source": u, "target": v, "weight": d["weight"]} for u, v, d in G.edges(data=True)]
    return {"schema": SCHEMA, "metadata": meta, "nodes": nodes, "edges": edges, "scores": G.graph.get("scores", {}),
            "supernodes": list(G.graph.get("supernodes") or [])}


def from_json(doc: dict) -> nx.DiGraph:
    """Inverse of :func:`to_json` (exact round trip); also reads ``sfc-circuit/1``.

    Raises:
        InputError: not an ``sfc-circuit/1`` or ``/2`` document, a node/edge lacks a field, or a label or
            supernode breaks the rules of :mod:`sfc_core.annotations` (e.g. names an unknown node).
    """
    if not isinstance(doc, dict) or doc.get("schema") not in READ_SCHEMAS:
        raise InputError(f"not a circuit file: expected \"schema\": \"{SCHEMA}\" (or \"{READ_SCHEMAS[0]}\")")
    G = nx.DiGraph()
    G.graph.update({k: v for k, v in (doc.get("metadata") or {}).items() if k not in _NOT_METADATA})
    if doc.get("scores"):
        G.graph["scores"] = doc["scores"]
    try:
        for node in doc["nodes"]:
            G.add_node(node["id"], **{f: node.get(f) for f in _NODE_FIELDS[1:]},
                       **{f: node[f] for f in _LABEL_FIELDS if node.get(f) is not None})
        for edge in doc["edges"]:
            if edge["source"] not in G or edge["target"] not in G:
                raise InputError(f"edge {edge['source']} -> {edge['target']} names a node not in the circuit")
            G.add_edge(edge["source"], edge["target"], weight=float(edge["weight"]))
    except (KeyError, TypeError) as exc:
        raise InputError(f"circuit file is missing a field: {exc}") from None
    if doc.get("supernodes"):
        G.graph["supernodes"] = doc["supernodes"]
    check_annotations(G)
    return G


def save_circuit(G: nx.DiGraph, path: str | Path) -> None:
    """Write ``G`` as ``sfc-circuit/2`` JSON (atomically: nothing half-written on error).

    Raises:
        OSError: the file cannot be written.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(to_json(G), indent=1))
    tmp.replace(path)


def load_circuit(path_or_text: str | Path) -> nx.DiGraph:
    """Read an ``sfc-circuit/2`` (or ``/1``) file (path) or JSON text; a Neuronpedia graph JSON exported by this
    project (:func:`~sfc_core.export.from_neuronpedia`) is read too.

    Raises:
        InputError: missing file, invalid JSON or not a circuit.
    """
    text = str(path_or_text)
    if not text.lstrip().startswith("{"):
        path = Path(text)
        if not path.is_file():
            raise InputError(f"circuit file not found: {path}")
        text = path.read_text()
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"circuit file is not valid JSON (line {exc.lineno})") from None
    if isinstance(doc, dict) and "qParams" in doc and "schema" not in doc:
        from .export import from_neuronpedia  # a Neuronpedia graph this project exported

        return from_neuronpedia(doc)
    return from_json(doc)


def circuit_nodes(G: nx.DiGraph, space: NodeSpace) -> list[Node]:
    """The latent and error nodes of a graph (in ``G.nodes`` order, end points left out), checked against ``space``.

    Raises:
        InputError: a node sits at a hook point without an SAE, names a latent outside ``0..d_sae−1``, or has
            a feature field that is neither an integer nor ``"error"``.
    """
    out = []
    for n, data in G.nodes(data=True):
        if is_end_id(n):
            continue
        node = from_fields(data.get("hook_name"), data.get("feature"), data.get("position"), where=f"circuit node {n}")
        if node.is_end:
            continue
        space.column(node)  # raises on an unknown hook point or an out-of-range latent
        out.append(node)
    return out
