"""A readable view of a large circuit: supernodes as one marker each, the largest other nodes individually,
the rest grouped per hook point; and a display filter hiding error nodes and disconnected nodes.

Circuits that reach a useful faithfulness have hundreds or thousands of nodes; drawing every one is a tangle.
:func:`collapse` keeps the ``max_nodes`` nodes of largest ``|effect|`` and replaces the others of each hook
point (site) by one **marker** node, "other k latents at L7". The result is for display only: markers are
not nodes of the model (their ids are rejected by :func:`sfc_core.nodes.parse_id`), scores are computed on
the full circuit, and circuit files, GraphML, CSV and Neuronpedia exports are written from the full graph.

:func:`filter_view` is the other display step: a copy of the circuit without its error nodes and/or without the
nodes no edge connects to the rest. Apply it to the full circuit first and collapse its result, so that hidden
nodes free room among the ``max_nodes`` drawn; faithfulness and completeness stay those of the whole circuit.
"""

from __future__ import annotations

import math

import networkx as nx

from .errors import InputError
from .nodes import END_KINDS, graph_node, kind_of

#: Default number of nodes drawn individually.
MAX_NODES = 60
#: Id prefix of a marker: ``"other@" + hook_name`` (no ``/``, so never a node id).
MARKER_PREFIX = "other@"
#: Id prefix of a supernode's marker: ``"supernode#" + its index`` (no ``/``, so never a node id).
SUPERNODE_PREFIX = "supernode#"


def _effect(data: dict) -> float:
    try:
        v = float(data.get("effect"))
    except (TypeError, ValueError):
        return 0.0
    return v if math.isfinite(v) else 0.0


def _hook(node_id: str, data: dict) -> str:
    try:
        return graph_node(node_id, data).hook_name
    except InputError:
        return str(data.get("hook_name") or "")


def marker_id(hook_name: str) -> str:
    """The id of the marker grouping the collapsed nodes of ``hook_name`` (never a valid node id)."""
    return f"{MARKER_PREFIX}{hook_name}"


def is_marker(G, node_id: str) -> bool:
    """Whether ``node_id`` is a collapsed-group marker of ``G`` (a display-only node)."""
    return node_id in G and bool(G.nodes[node_id].get("collapsed"))


def inner_nodes(G) -> list[str]:
    """The nodes of ``G`` other than the embedding / metric end points (latents, error nodes, markers)."""
    return [n for n, d in G.nodes(data=True) if kind_of(n, d) not in END_KINDS]


def supernode_marker_id(i: int) -> str:
    """The id of the marker drawing supernode number ``i`` (never a valid node id, whatever its name)."""
    return f"{SUPERNODE_PREFIX}{i}"


def collapse(G, max_nodes: int = MAX_NODES) -> nx.DiGraph:
    """The circuit ``G`` with each supernode drawn as one marker and at most ``max_nodes`` markers and nodes
    drawn individually, the rest grouped per hook point.

    Contract (shapes n/a; ``effect`` and ``weight`` in the metric's units, as in ``G``):

    * **supernodes** (``G.graph["supernodes"]``, :mod:`sfc_core.annotations`): supernode ``i``'s members are
      drawn as one marker, id ``"supernode#i"``, ``label`` = its name, ``supernode=True``; they count
      against ``max_nodes`` first.
    * **kept**: the ``max_nodes − (number of supernodes)`` other inner nodes (latents and error nodes alike)
      of largest ``|effect|`` (ties: smaller id first; a missing or non-finite effect counts as 0), with all
      their attributes, and the ``embed`` / ``metric`` end points always.
    * **markers**: every other inner node of a hook point goes into that hook point's one marker, id
      ``"other@<hook_name>"`` (rejected by :func:`~sfc_core.nodes.parse_id`), ``label``
      ``"other k latents at L7"`` (``"nodes"`` when an error node is among them).
    * every marker has ``collapsed=True``, ``members`` (the ids, largest ``|effect|`` first), ``n_members``,
      ``n_errors`` (error nodes among them), ``effect`` = the sum of the members' effects, ``abs_effect`` =
      the sum of their ``|effect|``, ``hook_name`` / ``layer`` / ``site`` of its first member (a supernode
      spanning layers sits at its largest member's column), ``position=None``, ``feature=None``.
    * **edges**: each edge ``u → v`` of ``G`` becomes ``rep(u) → rep(v)`` (``rep`` = the node itself or its
      marker); parallel edges are merged with ``weight`` = the sum of their weights (a missing weight counts
      as 0) and ``n_edges`` = how many were merged. Edges inside one marker are dropped.
    * ``graph`` attributes: a copy of ``G.graph`` plus ``collapsed = {"max_nodes", "n_kept", "n_grouped",
      "n_markers"}`` (``n_grouped`` counts the nodes in "other" markers, not in supernodes).

    A graph with no supernodes and ``≤ max_nodes`` inner nodes is returned unchanged (a copy, no ``collapsed``
    attribute). The result is for drawing only: never write it to a circuit file or score it.

    Args:
        G: a circuit ``networkx.DiGraph`` in the :mod:`sfc_core.circuit` contract.
        max_nodes: markers and inner nodes drawn individually (≥ 0).

    Returns:
        A new ``networkx.DiGraph``.

    Raises:
        InputError: a negative ``max_nodes``.
    """
    if max_nodes < 0:
        raise InputError(f"max_nodes must be ≥ 0, not {max_nodes}")
    inner = [n for n, d in G.nodes(data=True) if kind_of(n, d) not in END_KINDS]
    groups_in = [s for s in G.graph.get("supernodes") or [] if any(n in G for n in s["nodes"])]
    if len(inner) <= max_nodes and not groups_in:
        return G.copy()
    ranked = sorted(inner, key=lambda n: (-abs(_effect(G.nodes[n])), str(n)))
    rep: dict = {}
    groups: dict[str, list] = {}
    labels: dict[str, str] = {}
    for i, s in enumerate(groups_in):
        m = supernode_marker_id(i)
        labels[m] = s["name"]
        members = set(s["nodes"])
        for n in ranked:
            if n in members:
                rep[n] = m
                groups.setdefault(m, []).append(n)
    rest = [n for n in ranked if n not in rep]
    budget = max(0, max_nodes - len(groups))
    kept = set(rest[:budget])
    n_grouped = 0
    for n in rest[budget:]:
        m = marker_id(_hook(n, G.nodes[n]))
        rep[n] = m
        groups.setdefault(m, []).append(n)
        n_grouped += 1

    H = nx.DiGraph()
    H.graph.update(dict(G.graph))
    H.graph["collapsed"] = {"max_nodes": int(max_nodes), "n_kept": len(kept), "n_grouped": n_grouped,
                            "n_markers": len(groups)}
    for n, d in G.nodes(data=True):  # kept nodes and end points, in G's order
        if n not in rep:
            H.add_node(n, **dict(d))
    for m, members in groups.items():
        d0 = G.nodes[members[0]]
        hook = _hook(members[0], d0)
        layer = d0.get("layer")
        n_errors = sum(kind_of(n, G.nodes[n]) != "latent" for n in members)
        where = f"L{layer}" if layer is not None else hook
        label = labels.get(m) or f"other {len(members)} {'nodes' if n_errors else 'latents'} at {where}"
        H.add_node(m, collapsed=True, supernode=m in labels, members=list(members), n_members=len(members),
                   n_errors=n_errors, effect=sum(_effect(G.nodes[n]) for n in members),
                   abs_effect=sum(abs(_effect(G.nodes[n])) for n in members),
                   hook_name=hook, layer=layer, site=d0.get("site"), position=None, feature=None,
                   activation=None, label=label)
    for u, v, d in G.edges(data=True):
        a, b = rep.get(u, u), rep.get(v, v)
        if a == b and (u in rep or v in rep):
            continue
        try:
            w = float(d.get("weight"))
            w = w if math.isfinite(w) else 0.0
        except (TypeError, ValueError):
            w = 0.0
        if u not in rep and v not in rep:
            H.add_edge(a, b, **dict(d))
            H.edges[a, b].setdefault("n_edges", 1)
        elif H.has_edge(a, b):
            e = H.edges[a, b]
            e["weight"] = float(e.get("weight") or 0.0) + w
            e["n_edges"] = int(e.get("n_edges", 1)) + 1
        else:
            H.add_edge(a, b, weight=w, n_edges=1)
    return H


def filter_view(G, *, hide_errors: bool = False, hide_disconnected: bool = False) -> nx.DiGraph:
    """A copy of circuit ``G`` for drawing, without its error nodes and/or its disconnected inner nodes.

    Contract:

    * ``hide_errors``: every error node (ε, kind ``"error"``) goes, with its edges. A collapse marker grouping
      error nodes stays (it is a marker, not an error node).
    * ``hide_disconnected``: an inner node (a latent, an error node or a marker: anything but ``embed`` /
      ``metric``) is **disconnected** when no edge joins it to another node of the view, i.e. it has no edge
      to or from another inner node nor to or from ``embed`` / ``metric`` (a self-loop does not count). This
      is judged after the error nodes are hidden, so a latent whose only edges went to error nodes is
      disconnected in a view without them. Removing such nodes removes no edge, so one pass suffices.
      Edges are computed among the largest nodes only (:meth:`sfc_core.discovery.Discovery.select`), so a
      large circuit can have many.
    * ``embed`` and ``metric`` are always kept, connected or not; node and edge attributes are kept as they are.
    * ``graph``: a copy of ``G.graph`` (scores, metadata), with ``supernodes`` cut to the nodes kept (a supernode
      left empty is dropped), plus ``hidden = {"errors": n, "disconnected": m}`` (counts of nodes hidden).

    Display only: the scores in ``graph`` are the whole circuit's, never the view's; never write the view to
    a circuit file or score it.

    Args:
        G: a circuit ``networkx.DiGraph`` (or a collapsed view of one).
        hide_errors: drop the error nodes.
        hide_disconnected: drop the inner nodes without an edge to another node.

    Returns:
        A new ``networkx.DiGraph``; ``G`` is not changed.
    """
    H = G.copy()
    H.graph = dict(G.graph)
    errors = [n for n, d in H.nodes(data=True) if hide_errors and not is_marker(H, n) and kind_of(n, d) == "error"]
    H.remove_nodes_from(errors)
    lone = [n for n in inner_nodes(H) if hide_disconnected
            and not any(m != n for m in H.predecessors(n)) and not any(m != n for m in H.successors(n))]
    H.remove_nodes_from(lone)
    if G.graph.get("supernodes"):
        kept = [{**s, "nodes": [n for n in s["nodes"] if n in H]} for s in G.graph["supernodes"]]
        H.graph["supernodes"] = [s for s in kept if s["nodes"]]
    H.graph["hidden"] = {"errors": len(errors), "disconnected": len(lone)}
    return H
