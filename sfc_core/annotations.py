"""A circuit's annotations: node labels and named supernodes, as a user edits them and files keep them.

Where they live in a circuit graph (the :mod:`sfc_core.circuit` contract):

* ``G.nodes[n]["auto_label"]``: the automatic short label of a bundled latent (from its feature index,
  :meth:`~sfc_core.feature_index.FeatureIndex.label`), set by :func:`attach_auto_labels`;
* ``G.nodes[n]["label"]``: the user's name for the node (a rename), which wins over the automatic one;
* ``G.graph["supernodes"]``: a list of ``{"name": str, "nodes": [node ids]}``, in creation order. A node
  belongs to at most one supernode (as in circuit-tracer's graph frontend, where a supernode is drawn in
  place of its members).

Rules, checked by :func:`check_annotations` whenever a file is read and by every editing function: a label
or supernode name is 1–200 characters after stripping, without control characters; supernode names are
unique; a supernode has at least one node; labels and supernodes name only nodes of the circuit. Every
editing function validates before it changes anything, so a bad edit loses nothing.
"""

from __future__ import annotations

import unicodedata

from .errors import InputError
from .nodes import graph_node

#: Longest label or supernode name, in characters.
MAX_LABEL_CHARS = 200


def check_label(text, what: str = "label") -> str:
    """``text`` stripped, once checked as a label (or supernode name when ``what`` says so).

    Raises:
        InputError: not a string, empty, longer than :data:`MAX_LABEL_CHARS`, or holding a control character.
    """
    if not isinstance(text, str):
        raise InputError(f"{what} must be text, not {type(text).__name__}")
    text = text.strip()
    if not text:
        raise InputError(f"{what} is empty")
    if len(text) > MAX_LABEL_CHARS:
        raise InputError(f"{what} is {len(text)} characters long; at most {MAX_LABEL_CHARS} are allowed")
    bad = next((c for c in text if unicodedata.category(c) == "Cc"), None)
    if bad is not None:
        raise InputError(f"{what} {text[:40]!r} holds a control character ({bad!r})")
    return text


def _check_node(G, node_id: str, where: str) -> None:
    if node_id not in G:
        raise InputError(f"{where} names {node_id!r}, which is not a node of this circuit")


def display_label(G, node_id: str) -> str:
    """What a node is called on screen: the user's label, else its automatic label, else ``""``."""
    d = G.nodes[node_id] if node_id in G else {}
    return str(d.get("label") or d.get("auto_label") or "")


def set_label(G, node_id: str, label: str | None) -> None:
    """Rename node ``node_id`` of ``G`` to ``label``; ``None`` or ``""`` removes the rename (the automatic label
    shows again).

    Raises:
        InputError: an unknown node or a bad label (see :func:`check_label`).
    """
    _check_node(G, node_id, "the rename")
    if label is None or not str(label).strip():
        G.nodes[node_id].pop("label", None)
        return
    G.nodes[node_id]["label"] = check_label(label)


def supernodes(G) -> list[dict]:
    """``G``'s supernodes: ``[{"name": str, "nodes": [ids]}]`` (a copy, creation order)."""
    return [{"name": s["name"], "nodes": list(s["nodes"])} for s in G.graph.get("supernodes") or []]


def supernode_of(G, node_id: str) -> str | None:
    """The name of the supernode holding ``node_id``, or ``None``."""
    return next((s["name"] for s in G.graph.get("supernodes") or [] if node_id in s["nodes"]), None)


def _checked_supernodes(G, groups) -> list[dict]:
    """``groups`` (``[{"name", "nodes"}]``) validated against ``G`` and normalised.

    Raises:
        InputError: see the module rules.
    """
    if not isinstance(groups, list):
        raise InputError("supernodes must be a list of {\"name\", \"nodes\"} objects")
    out, names, owner = [], set(), {}
    for i, group in enumerate(groups):
        if not isinstance(group, dict) or "name" not in group or "nodes" not in group:
            raise InputError(f"supernode {i + 1} must be an object with \"name\" and \"nodes\"")
        name = check_label(group["name"], what=f"supernode {i + 1}'s name")
        if name in names:
            raise InputError(f"two supernodes are named {name!r}; supernode names must be unique")
        members = group["nodes"]
        if not isinstance(members, list) or not members:
            raise InputError(f"supernode {name!r} has no nodes")
        members = [str(n) for n in members]
        for n in members:
            _check_node(G, n, f"supernode {name!r}")
            if n in owner:
                raise InputError(f"node {n!r} is in both supernode {owner[n]!r} and {name!r}; a node belongs to "
                                 "at most one supernode")
            owner[n] = name
        names.add(name)
        out.append({"name": name, "nodes": list(dict.fromkeys(members))})
    return out


def add_supernode(G, name: str, node_ids) -> None:
    """Group ``node_ids`` of ``G`` into a new supernode called ``name``.

    Raises:
        InputError: a bad or already used name, no nodes, a node not in ``G`` or already in a supernode.
    """
    G.graph["supernodes"] = _checked_supernodes(G, supernodes(G) + [{"name": name, "nodes": list(node_ids)}])


def remove_supernode(G, name: str) -> None:
    """Dissolve supernode ``name`` (its nodes stay in the circuit).

    Raises:
        InputError: no supernode has that name.
    """
    kept = [s for s in supernodes(G) if s["name"] != name]
    if len(kept) == len(supernodes(G)):
        raise InputError(f"there is no supernode named {name!r}")
    G.graph["supernodes"] = kept


def check_annotations(G) -> None:
    """Check ``G``'s labels and supernodes against the module rules (for a circuit read from a file).

    Raises:
        InputError: the first rule broken, in one line.
    """
    for n, d in G.nodes(data=True):
        for key in ("label", "auto_label"):
            if d.get(key) is not None:
                d[key] = check_label(d[key], what=f"node {n}'s {key.replace('_', ' ')}")
    if G.graph.get("supernodes") is not None:
        G.graph["supernodes"] = _checked_supernodes(G, G.graph["supernodes"])


def annotations_of(G) -> dict:
    """The user's annotations of ``G`` as plain data, ``{"labels": {id: label}, "supernodes": [...]}``, to
    carry over to another selection of the same circuit (:func:`apply_annotations`)."""
    labels = {n: d["label"] for n, d in G.nodes(data=True) if d.get("label")}
    return {"labels": labels, "supernodes": supernodes(G)}


def apply_annotations(G, annotations: dict | None) -> None:
    """Make ``annotations`` (from :func:`annotations_of`) ``G``'s user labels and supernodes (replacing those it
    had), ``G`` being a new selection of the same circuit: labels and supernode members that are not in ``G``
    are left out, and a supernode none of whose nodes is in ``G`` is left out (it comes back when they do)."""
    if annotations is None:
        return
    for n in G.nodes:
        G.nodes[n].pop("label", None)
    for n, label in (annotations.get("labels") or {}).items():
        if n in G:
            G.nodes[n]["label"] = label
    groups = []
    for s in annotations.get("supernodes") or []:
        members = [n for n in s["nodes"] if n in G]
        if members:
            groups.append({"name": s["name"], "nodes": members})
    G.graph["supernodes"] = groups


def merge_annotations(saved: dict | None, G) -> dict:
    """``saved`` (from :func:`annotations_of` of a larger selection) updated with ``G``'s annotations, ``G``
    being a smaller selection of the same circuit after an edit: what ``G`` says wins for its nodes; labels
    of nodes outside ``G`` stay; a supernode keeps its members outside ``G``; a supernode dissolved in ``G``
    is dissolved."""
    saved = saved or {"labels": {}, "supernodes": []}
    now = annotations_of(G)
    labels = {n: t for n, t in saved.get("labels", {}).items() if n not in G}
    labels.update(now["labels"])
    outside = {s["name"]: [n for n in s["nodes"] if n not in G] for s in saved.get("supernodes", [])}
    had_members_in_g = {s["name"] for s in saved.get("supernodes", []) if any(n in G for n in s["nodes"])}
    groups = [{"name": s["name"], "nodes": s["nodes"] + outside.get(s["name"], [])} for s in now["supernodes"]]
    names = {s["name"] for s in groups}
    groups += [{"name": k, "nodes": v} for k, v in outside.items()
               if v and k not in names and k not in had_members_in_g]
    return {"labels": labels, "supernodes": groups}


def attach_auto_labels(G, label_of) -> int:
    """Set ``auto_label`` on every latent node of ``G`` that ``label_of(hook_name, feature) -> str`` names
    (a lookup that fails or answers ``""`` leaves the node without one). Returns how many were set."""
    n_set = 0
    for n, d in G.nodes(data=True):
        try:
            node = graph_node(n, d)
            text = label_of(node.hook_name, node.index) if node.is_latent else ""
        except Exception:  # noqa: BLE001 - a missing label is never worth an error
            text = ""
        text = printable(str(text or "")).strip()[:MAX_LABEL_CHARS]
        if text:
            d["auto_label"] = text
            n_set += 1
    return n_set


def printable(text: str) -> str:
    """``text`` with every control character written as its escape (a token ``"\\n"`` shows as ``\\n``)."""
    return "".join(c.encode("unicode_escape").decode() if unicodedata.category(c) == "Cc" else c for c in text)
