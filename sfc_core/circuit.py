"""Circuits: node selection from an :class:`~sfc_core.attribution.Attribution`, the
``networkx.DiGraph`` they live in, statistics, and the ``sfc-circuit/1`` JSON format.

Graph contract: node ids are ``"{hook_name}/{feature}"`` (``feature`` an int, or
``"error"`` for the error node ε), suffixed ``"@{position}"`` when positions are kept;
the embedding and the metric are the nodes ``"embed"`` (layer −1) and ``"metric"``
(layer ``n_layers``). Node attributes: ``hook_name, layer, feature, position, effect,
activation, site``; edge attribute ``weight`` (metric units). ``G.graph`` holds the
metadata and, once evaluated, ``scores``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import networkx as nx
import torch

from .attribution import Attribution, NodeKey
from .edges import EMBED, METRIC
from .errors import InputError

SCHEMA = "sfc-circuit/1"


# ------------------------------------------------------------------ selection
def select_nodes(attr: Attribution, node_threshold: float | None = None, top_k: int | None = None,
                 top_k_per_layer: int | None = None) -> list[NodeKey]:
    """Nodes by ``|effect| ≥ node_threshold``, by the ``top_k`` largest ``|effect|`` overall, or by
    the ``top_k_per_layer`` largest at each site (exactly one rule). Nodes with effect 0 are never kept.

    Returns nodes sorted by ``|effect|``, largest first.
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
    per_site = []
    for i, e in enumerate(attr.effects):
        flat = e.abs().flatten()
        k = int((flat > 0).sum()) if top_k_per_layer is None else min(top_k_per_layer, int((flat > 0).sum()))
        vals, idx = torch.topk(flat, k) if k else (flat[:0], flat[:0].long())
        for v, j in zip(vals.tolist(), idx.tolist()):
            if node_threshold is not None and v < node_threshold:
                break
            per_site.append((v, i, j))
    per_site.sort(key=lambda t: (-t[0], t[1], t[2]))
    if top_k is not None:
        per_site = per_site[:top_k]
    return [_key(attr, i, j) for _, i, j in per_site]


def _key(attr: Attribution, site: int, flat_index: int) -> NodeKey:
    if attr.aggregation == "sum":
        return NodeKey(site, flat_index)
    pos, feat = divmod(flat_index, attr.d_sae[site] + 1)
    return NodeKey(site, feat, pos)


def node_value(values: list[torch.Tensor], node: NodeKey) -> float:
    """The entry of per-site ``[d_sae+1]`` / ``[pos, d_sae+1]`` tensors at ``node``."""
    t = values[node.site]
    if node.position is None:
        return float(t[..., node.feature].sum())  # a whole-prompt node on per-position values: their sum
    return float(t[node.position, node.feature])


# ------------------------------------------------------------------ graph
def node_id(hook_name: str, feature: int | str, position: int | None = None) -> str:
    """``"blocks.7.hook_resid_post/1234"``, ``".../error"``, with ``"@5"`` for position 5."""
    base = f"{hook_name}/{feature}"
    return base if position is None else f"{base}@{position}"


def _layer(hook_name: str) -> int:
    parts = hook_name.split(".")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else -1


def key_id(attr: Attribution, node: NodeKey | str) -> str:
    """Graph id of a :class:`NodeKey` (or ``"embed"`` / ``"metric"``)."""
    if isinstance(node, str):
        return node
    hook = attr.hook_names[node.site]
    feat = "error" if node.feature == attr.d_sae[node.site] else node.feature
    return node_id(hook, feat, node.position)


def build_graph(attr: Attribution, nodes: list[NodeKey], edges: dict[tuple, float] | None = None,
                edge_threshold: float = 0.0, metadata: dict | None = None, n_layers: int | None = None) -> nx.DiGraph:
    """The circuit as a ``DiGraph``: ``nodes`` with their effects and activations, edges with
    ``|weight| ≥ edge_threshold`` between kept nodes (and ``embed`` / ``metric``).

    Raises:
        InputError: a negative edge threshold.
    """
    if edge_threshold < 0 or math.isnan(edge_threshold):
        raise InputError(f"edge threshold must be ≥ 0, not {edge_threshold}")
    G = nx.DiGraph()
    G.graph.update(metadata or {})
    for node in nodes:
        hook = attr.hook_names[node.site]
        is_err = node.feature == attr.d_sae[node.site]
        G.add_node(key_id(attr, node), hook_name=hook, layer=_layer(hook), site=node.site,
                   feature="error" if is_err else int(node.feature), position=node.position,
                   effect=node_value(attr.effects, node), activation=node_value(attr.activations, node))
    kept = set(G.nodes)
    n_layers = n_layers if n_layers is not None else G.graph.get("n_layers", 0)
    for (u, v), w in (edges or {}).items():
        su, sv = key_id(attr, u), key_id(attr, v)
        if abs(w) < edge_threshold or (su not in kept and su != EMBED) or (sv not in kept and sv != METRIC):
            continue
        for end in (su, sv):
            if end == EMBED and end not in G:
                G.add_node(EMBED, hook_name="hook_embed", layer=-1, site=-1, feature="embed", position=None,
                           effect=None, activation=None)
            if end == METRIC and end not in G:
                G.add_node(METRIC, hook_name="metric", layer=n_layers, site=len(attr.hook_names),
                           feature="metric", position=None, effect=None, activation=None)
        G.add_edge(su, sv, weight=float(w))
    return G


def circuit_stats(G: nx.DiGraph, n_hubs: int = 5) -> dict:
    """Nodes, edges, density, nodes per layer, top in/out-degree hubs, weakly connected components
    (embedding and metric end-points excluded from node counts)."""
    inner = [n for n in G.nodes if n not in (EMBED, METRIC)]
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


# ------------------------------------------------------------------ sfc-circuit/1
_NODE_FIELDS = ("id", "hook_name", "layer", "feature", "position", "effect", "activation")


def to_json(G: nx.DiGraph) -> dict:
    """The ``sfc-circuit/1`` document of ``G`` (metadata, nodes, edges, scores)."""
    meta = {k: v for k, v in G.graph.items() if k != "scores"}
    nodes = [{"id": n, **{f: G.nodes[n].get(f) for f in _NODE_FIELDS[1:]}} for n in G.nodes]
    edges = [{"source": u, "target": v, "weight": d["weight"]} for u, v, d in G.edges(data=True)]
    return {"schema": SCHEMA, "metadata": meta, "nodes": nodes, "edges": edges, "scores": G.graph.get("scores", {})}


def from_json(doc: dict) -> nx.DiGraph:
    """Inverse of :func:`to_json` (exact round trip).

    Raises:
        InputError: not an ``sfc-circuit/1`` document, or a node/edge lacks a field.
    """
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise InputError(f"not a circuit file: expected \"schema\": \"{SCHEMA}\"")
    G = nx.DiGraph()
    G.graph.update(doc.get("metadata") or {})
    if doc.get("scores"):
        G.graph["scores"] = doc["scores"]
    try:
        for node in doc["nodes"]:
            G.add_node(node["id"], **{f: node.get(f) for f in _NODE_FIELDS[1:]})
        for edge in doc["edges"]:
            if edge["source"] not in G or edge["target"] not in G:
                raise InputError(f"edge {edge['source']} -> {edge['target']} names a node not in the circuit")
            G.add_edge(edge["source"], edge["target"], weight=float(edge["weight"]))
    except (KeyError, TypeError) as exc:
        raise InputError(f"circuit file is missing a field: {exc}") from None
    return G


def save_circuit(G: nx.DiGraph, path: str | Path) -> None:
    """Write ``G`` as ``sfc-circuit/1`` JSON (atomically: nothing half-written on error)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(to_json(G), indent=1))
    tmp.replace(path)


def load_circuit(path_or_text: str | Path) -> nx.DiGraph:
    """Read an ``sfc-circuit/1`` file (path) or JSON text.

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
    return from_json(doc)


def circuit_nodes(G: nx.DiGraph, hook_names: list[str], d_saes: list[int]) -> list[NodeKey]:
    """:class:`NodeKey` s of a graph's feature and error nodes, for sites ``hook_names`` of widths ``d_saes``.

    Raises:
        InputError: a node sits at a hook point not among ``hook_names`` or names a feature out of range.
    """
    index = {h: i for i, h in enumerate(hook_names)}
    keys = []
    for n, data in G.nodes(data=True):
        if n in (EMBED, METRIC):
            continue
        hook = data.get("hook_name")
        if hook not in index:
            raise InputError(f"circuit node {n} is at {hook}, which has no SAE loaded")
        site = index[hook]
        feat = data["feature"]
        feat = d_saes[site] if feat == "error" else int(feat)
        if not 0 <= feat <= d_saes[site]:
            raise InputError(f"circuit node {n}: feature {feat} is out of range for d_sae={d_saes[site]}")
        keys.append(NodeKey(site, feat, data.get("position")))
    return keys
