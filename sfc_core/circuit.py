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

import math
from pathlib import Path

import networkx as nx

from . import bounds
from .annotations import check_annotations
from .attribution import Attribution
from .errors import InputError
from .jsonio import load_json, write_json_atomic
from .nodes import EMBED, KINDS, METRIC, Node, NodeSpace, from_fields, is_end_id, node_attrs

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
        InputError: no rule or several rules, or a threshold or k outside its :data:`~sfc_core.bounds.BOUNDS`
            (a negative or NaN threshold, a k that is not a whole number from 1 to 100000).
    """
    rules = [r for r in (node_threshold, top_k, top_k_per_layer) if r is not None]
    if len(rules) != 1:
        raise InputError("choose exactly one of node threshold, top-k or top-k per layer")
    bounds.check("node_threshold", node_threshold)
    bounds.check("top_k", top_k, "top-k")
    bounds.check("top_k_per_layer", top_k_per_layer, "top-k per layer")
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
    bounds.check("edge_threshold", edge_threshold)
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


def _number(v, where: str, allow_none: bool = True) -> float | None:
    """``v`` as a finite float (``None`` kept where allowed).

    Raises:
        InputError: not a number (booleans and text included), NaN or ±inf.
    """
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise InputError(f"{where} must be a finite number, not {v!r}")
    return float(v)


def _check_metadata(meta) -> dict:
    """The circuit file's ``metadata`` once its typed fields are checked (absent: ``{}``).

    Raises:
        InputError: not an object; ``saes`` not a list of objects with a text ``hook_name`` (and a positive integer
            ``d_sae``, a text ``source`` where given); ``n_pairs`` not a positive integer; ``model``, ``method``,
            ``metric`` or ``task`` not text.
    """
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise InputError(f"circuit file: metadata must be an object, not {type(meta).__name__}")
    for key in ("model", "method", "metric", "task", "aggregation", "ablation"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise InputError(f"circuit file: metadata.{key} must be text, not {meta[key]!r}")
    if meta.get("n_pairs") is not None:
        bounds.check("n", meta["n_pairs"], "circuit file: metadata.n_pairs")
    saes = meta.get("saes")
    if saes is not None:
        if not isinstance(saes, list):
            raise InputError(f"circuit file: metadata.saes must be a list, not {type(saes).__name__}")
        for i, sae in enumerate(saes):
            where = f"circuit file: metadata.saes[{i}]"
            if not isinstance(sae, dict) or not isinstance(sae.get("hook_name"), str):
                raise InputError(f"{where} must be an object with a text hook_name, not {sae!r:.80}")
            if sae.get("source") is not None and not isinstance(sae["source"], str):
                raise InputError(f"{where}.source must be text, not {sae['source']!r}")
            d = sae.get("d_sae")
            if d is not None and (isinstance(d, bool) or not isinstance(d, int) or d < 1):
                raise InputError(f"{where}.d_sae must be a positive integer, not {d!r}")
    return meta


def _checked_node(node, d_sae: dict[str, int]) -> dict:
    """One ``nodes`` entry of a circuit file, checked; returns its graph attributes.

    Raises:
        InputError: naming the node: not an object, no text ``id``, a ``feature`` that is not an index or a kind's
            word, an index below 0 or ≥ its SAE's ``d_sae``, a bad ``position``, or a non-finite ``effect`` /
            ``activation``.
    """
    if not isinstance(node, dict):
        raise InputError(f"circuit file: a node must be an object, not {node!r:.80}")
    nid = node.get("id")
    if not isinstance(nid, str) or not nid:
        raise InputError(f"circuit file: a node has no text id ({node!r:.80})")
    where = f"circuit node {nid}"
    if node.get("hook_name") is not None and not isinstance(node["hook_name"], str):
        raise InputError(f"{where}: hook_name must be text, not {node['hook_name']!r}")
    attrs = {f: node.get(f) for f in _NODE_FIELDS[1:]}
    if not is_end_id(nid):
        if "feature" not in node:
            raise InputError(f"{where}: no feature field (a latent index or 'error')")
        parsed = from_fields(node.get("hook_name"), node["feature"], node.get("position"), where=where)
        if parsed.index < -1 or (KINDS[parsed.kind].indexed and parsed.index < 0):
            raise InputError(f"{where}: feature index must not be negative, not {node['feature']!r}")
        width = d_sae.get(parsed.hook_name)
        if parsed.kind == "latent" and width is not None and parsed.index >= width:
            raise InputError(f"{where}: latent {parsed.index} does not exist (the SAE at {parsed.hook_name} has "
                             f"d_sae = {width}: latents 0 to {width - 1})")
        if attrs["layer"] is None:  # read from the hook point, as the engine writes it
            attrs["layer"] = parsed.layer
    if attrs["layer"] is not None and (isinstance(attrs["layer"], bool) or not isinstance(attrs["layer"], int)):
        raise InputError(f"{where}: layer must be an integer, not {attrs['layer']!r}")
    for f in ("effect", "activation"):
        attrs[f] = _number(node.get(f), f"{where}: {f}")
    attrs.update({f: node[f] for f in _LABEL_FIELDS if node.get(f) is not None})
    return attrs


def _check_structure(G: nx.DiGraph) -> None:
    """A circuit runs from the embedding to the metric and has no loop.

    Raises:
        InputError: a self-loop, an edge into the embedding or out of the metric, or a cycle (named).
    """
    for u, v in G.edges:
        if u == v:
            raise InputError(f"circuit file: edge {u} -> {v} is a self-loop")
        if v == EMBED.id:
            raise InputError(f"circuit file: edge {u} -> {v} goes into the embedding")
        if u == METRIC.id:
            raise InputError(f"circuit file: edge {u} -> {v} leaves the metric")
    try:
        cycle = nx.find_cycle(G)
    except nx.NetworkXNoCycle:
        return
    raise InputError("circuit file: the edges form a cycle (" + " -> ".join(u for u, _ in cycle)
                     + f" -> {cycle[0][0]}); a circuit's edges run from shallower to deeper nodes")


def from_json(doc: dict) -> nx.DiGraph:
    """Inverse of :func:`to_json` (exact round trip); also reads ``sfc-circuit/1``. Every field is checked.

    Accepted on purpose: ``effect`` / ``activation`` ``null`` (end points, imported graphs), a node without
    ``position`` (the whole prompt), unknown extra keys (ignored), no edges.

    Raises:
        InputError: not an ``sfc-circuit/1`` or ``/2`` document; ``metadata``, a node or an edge of the wrong type
            (:func:`_check_metadata`, :func:`_checked_node`: the node is named); a latent index ≥ its SAE's ``d_sae``;
            ``position`` on only some nodes; duplicate node ids or edges; an edge weight that is not a finite
            number or names a node not in the circuit; self-loops, cycles, edges into the embedding or out of
            the metric (:func:`_check_structure`); or a label or supernode that breaks the rules of
            :mod:`sfc_core.annotations` (e.g. names an unknown node).
    """
    if not isinstance(doc, dict) or doc.get("schema") not in READ_SCHEMAS:
        raise InputError(f"not a circuit file: expected \"schema\": \"{SCHEMA}\" (or \"{READ_SCHEMAS[0]}\")")
    meta = _check_metadata(doc.get("metadata"))
    nodes, edges = doc.get("nodes"), doc.get("edges", [])
    if not isinstance(nodes, list) or not isinstance(edges, list):
        raise InputError("circuit file: 'nodes' and 'edges' must be lists")
    if doc.get("scores") is not None and not isinstance(doc["scores"], dict):
        raise InputError(f"circuit file: scores must be an object, not {type(doc['scores']).__name__}")
    d_sae = {s["hook_name"]: s["d_sae"] for s in meta.get("saes") or [] if s.get("d_sae") is not None}
    G = nx.DiGraph()
    G.graph.update({k: v for k, v in meta.items() if k not in _NOT_METADATA})
    if doc.get("scores"):
        G.graph["scores"] = doc["scores"]
    for node in nodes:
        attrs = _checked_node(node, d_sae)
        if node["id"] in G:
            raise InputError(f"circuit file: node id {node['id']} appears twice")
        G.add_node(node["id"], **attrs)
    resolved = {G.nodes[n]["position"] is not None for n in G.nodes if not is_end_id(n)}
    if len(resolved) > 1:
        raise InputError("circuit file: some nodes have a position and others do not; a circuit is either "
                         "resolved by position or not")
    for edge in edges:
        if not isinstance(edge, dict) or not all(isinstance(edge.get(k), str) for k in ("source", "target")):
            raise InputError(f"circuit file: an edge must be an object with text source and target, not {edge!r:.80}")
        u, v = edge["source"], edge["target"]
        if u not in G or v not in G:
            raise InputError(f"edge {u} -> {v} names a node not in the circuit")
        if G.has_edge(u, v):
            raise InputError(f"circuit file: edge {u} -> {v} appears twice")
        G.add_edge(u, v, weight=_number(edge.get("weight"), f"circuit file: edge {u} -> {v}: weight",
                                         allow_none=False))
    _check_structure(G)
    if doc.get("supernodes"):
        G.graph["supernodes"] = doc["supernodes"]
    check_annotations(G)
    return G


def save_circuit(G: nx.DiGraph, path: str | Path) -> None:
    """Write ``G`` as ``sfc-circuit/2`` JSON (atomically: nothing half-written on error).

    Raises:
        OSError: the file cannot be written.
    """
    write_json_atomic(to_json(G), path)


def load_circuit(path_or_text: str | Path | bytes) -> nx.DiGraph:
    """Read an ``sfc-circuit/2`` (or ``/1``) file (path), JSON text (a leading BOM is dropped) or UTF-8 bytes; an
    attribution-graph JSON in the Neuronpedia schema (a document without ``schema`` but with ``qParams`` or
    ``links``: exported by this project or written by circuit-tracer) is read by
    :func:`~sfc_core.export.from_neuronpedia`.

    Raises:
        InputError: missing file, not UTF-8, invalid or too deep/large JSON (:func:`~sfc_core.jsonio.parse_json`),
            or not a valid circuit (:func:`from_json`, :func:`~sfc_core.export.from_neuronpedia`).
    """
    doc = load_json(path_or_text, "circuit file")
    if isinstance(doc, dict) and "schema" not in doc and ("qParams" in doc or "links" in doc):
        from .export import from_neuronpedia  # ours or circuit-tracer's

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
