"""Exports of a circuit graph and its figure: GraphML, CSV, standalone HTML, PNG/SVG, Neuronpedia JSON, and
the readers that bring GraphML, CSV and Neuronpedia JSON back to a circuit graph.

Labels and supernodes (:mod:`sfc_core.annotations`) travel in every format: GraphML and CSV carry per node
``label``, ``auto_label`` and ``supernode`` (its supernode's name); GraphML's ``metadata`` also holds the
ordered ``supernodes`` list; Neuronpedia JSON carries a node's label as ``clerp`` and supernodes as
``qParams.supernodes`` (``[[name, node_id, …]]``, circuit-tracer's frontend format); the HTML figure shows
labels as node text and supernodes as one marker each. Each reader checks what it reads as
:func:`~sfc_core.circuit.from_json` does.

All export functions return the file content (``bytes`` / ``str`` / ``dict``) and never write files themselves, so
the app can hand them to ``st.download_button`` and the CLI to ``Path.write_*``; :func:`safe_filename`
makes a download name. No Streamlit import.

Static images (:func:`to_image`) go through kaleido 1.x, which drives a Chrome/Chromium browser; where none
is installed an :class:`~sfc_core.errors.ExportError` says so (HTML export always works offline). A static image
has no hover, so every node's text (its label, else a short id like ``L12/123``, ``ε −7.1`` for an error node)
is written next to it (:func:`sfc_core.viz.with_node_text`).
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil

import networkx as nx
import pandas as pd

from . import hooks
from .annotations import check_annotations, display_label, supernode_of, supernodes
from .errors import ExportError, InputError
from .nodes import kind_of
from .viz import with_node_text

_BROWSER_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome",
                       "/usr/bin/google-chrome-stable")
_NO_BROWSER = ("static image export needs Chromium (apt install chromium) or Chrome for kaleido; "
               "use the HTML export instead")


# ------------------------------------------------------------------ helpers
def _scalar(v):
    """A GraphML-writable scalar (str/int/float/bool) or ``None`` to drop the attribute."""
    if v is None:
        return None
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return None if math.isnan(v) else float(v)
    if hasattr(v, "item") and callable(v.item):  # numpy / torch scalars
        try:
            return _scalar(v.item())
        except (TypeError, ValueError):
            pass
    if isinstance(v, str):
        return v
    return json.dumps(v, default=str)


def _jsonable(v):
    return json.loads(json.dumps(v, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


# ------------------------------------------------------------------ GraphML / CSV
def to_graphml(G: nx.DiGraph) -> bytes:
    """GraphML of ``G``. ``None`` attributes are dropped, ``feature`` is always written as a string (it mixes
    ints and ``"error"``/``"embed"``/``"metric"``), other non-scalars as JSON text, and the whole
    ``G.graph`` metadata dict (supernodes included) as one JSON string graph attribute ``metadata``; a node in
    a supernode gets its name as ``supernode``."""
    H = nx.DiGraph()
    H.graph["metadata"] = json.dumps(_jsonable(dict(G.graph)))
    for key in ("model", "method", "metric"):
        if isinstance(G.graph.get(key), str):
            H.graph[key] = G.graph[key]
    for n, d in G.nodes(data=True):
        attrs = {}
        for k, v in d.items():
            v = str(v) if k == "feature" and v is not None else _scalar(v)
            if v is not None:
                attrs[k] = v
        if supernode_of(G, n) is not None:
            attrs["supernode"] = supernode_of(G, n)
        H.add_node(str(n), **attrs)
    for u, v, d in G.edges(data=True):
        attrs = {k: s for k, s in ((k, _scalar(x)) for k, x in d.items()) if s is not None}
        if "weight" in attrs and not isinstance(attrs["weight"], bool):
            attrs["weight"] = float(attrs["weight"])
        H.add_edge(str(u), str(v), **attrs)
    buf = io.BytesIO()
    nx.write_graphml(H, buf, encoding="utf-8", prettyprint=True)
    return buf.getvalue()


_NODE_COLUMNS = ("id", "hook_name", "layer", "site", "feature", "position", "effect", "activation", "label",
                 "auto_label", "supernode")


def to_csv(G: nx.DiGraph) -> tuple[str, str]:
    """``(nodes_csv, edges_csv)``: one row per node (``id, hook_name, layer, site, feature, position, effect,
    activation, label, auto_label, supernode`` then any extra attributes) and per edge (``source, target,
    weight`` then extras); effects and weights in metric units, as in ``G``. ``supernode`` is the name of the
    node's supernode (empty when none); supernodes keep the order in which their first node appears."""
    rows = [{"id": n, **{k: d.get(k) for k in _NODE_COLUMNS[1:-1]}, "supernode": supernode_of(G, n),
             **{k: _scalar(v) for k, v in d.items() if k not in _NODE_COLUMNS}} for n, d in G.nodes(data=True)]
    nodes = pd.DataFrame(rows, columns=None if rows else list(_NODE_COLUMNS))
    if rows:
        extra = [c for c in nodes.columns if c not in _NODE_COLUMNS]
        nodes = nodes[list(_NODE_COLUMNS) + extra]
    erows = [{"source": u, "target": v, "weight": d.get("weight"),
              **{k: _scalar(x) for k, x in d.items() if k != "weight"}} for u, v, d in G.edges(data=True)]
    edges = pd.DataFrame(erows, columns=None if erows else ["source", "target", "weight"])
    return nodes.to_csv(index=False), edges.to_csv(index=False)


# ------------------------------------------------------------------ HTML / images
def to_html(fig) -> str:
    """A standalone HTML page of ``fig`` with plotly.js inlined (works offline, no CDN script)."""
    return fig.to_html(include_plotlyjs=True, full_html=True,
                       config={"displaylogo": False, "responsive": True})


def _find_browser() -> str | None:
    """Path of a Chrome/Chromium kaleido can drive, or ``None``."""
    env = os.environ.get("BROWSER_PATH")
    if env and os.path.isfile(env) and os.access(env, os.X_OK):
        return env
    for path in _BROWSER_CANDIDATES:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    try:  # a Chrome fetched with `plotly_get_chrome` / `kaleido.get_chrome_sync()`
        from choreographer.browsers.chromium import Chromium

        found = Chromium.find_browser(skip_local=False)  # type: ignore[attr-defined]
        if found and os.path.isfile(str(found)):
            return str(found)
    except Exception:  # noqa: BLE001 - optional, version-dependent lookup
        pass
    return None


def to_image(fig, fmt: str = "png", width: int | None = None, height: int | None = None,
             scale: float = 2.0) -> bytes:
    """PNG or SVG bytes of ``fig`` via kaleido (``width`` / ``height`` in pixels; ``scale`` multiplies them for
    PNG only). Node points (traces with ``customdata``, as :func:`sfc_core.viz.circuit_figure` draws them) get
    their text written next to them in the rendered copy (:func:`~sfc_core.viz.with_node_text`); ``fig`` itself
    is not changed.

    Raises:
        ExportError: unknown format, no Chrome/Chromium found, or kaleido failed.
    """
    fmt = (fmt or "").lower().lstrip(".")
    if fmt not in ("png", "svg"):
        raise ExportError(f"image format must be png or svg, not {fmt!r}")
    browser = _find_browser()
    if browser is None:
        raise ExportError(_NO_BROWSER)
    if not os.path.isfile(os.environ.get("BROWSER_PATH") or ""):
        os.environ["BROWSER_PATH"] = browser
    static = with_node_text(fig)
    try:
        data = static.to_image(format=fmt, width=width, height=height, scale=scale if fmt == "png" else 1)
    except Exception as exc:  # noqa: BLE001 - kaleido/choreographer raise many kinds
        msg = str(exc).strip().splitlines()
        first = next((line for line in msg if line.strip()), type(exc).__name__)
        raise ExportError(f"static image export failed ({first.strip()}); {_NO_BROWSER}") from None
    return data if isinstance(data, bytes) else str(data).encode()


# ------------------------------------------------------------------ Neuronpedia
def _slugify(text: str) -> str:
    s = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return re.sub(r"-{2,}", "-", s)[:60].strip("-") or "sfc-circuit"


def to_neuronpedia(G: nx.DiGraph, slug: str | None = None) -> dict:
    """``G`` in the circuit-tracer / Neuronpedia attribution-graph JSON format.

    Top level: ``metadata`` (``slug, scan`` = model, ``prompt, prompt_tokens, node_threshold,
    schema_version`` 1, ``info`` with creator and method), ``qParams``, ``nodes``, ``links``.

    Node choices (documented here because SAE circuits differ from transcoder graphs):

    * ``layer`` is a **string** as in circuit-tracer: ``"7"`` for features and error nodes, ``"E"`` for the
      embedding, and ``str(n_layers + 1)`` for the metric (circuit-tracer puts logit nodes one past the
      last layer).
    * ``feature_type``: ``"sae feature"``, ``"sae error"``, ``"embedding"``, ``"logit"`` (the metric).
    * ``node_id`` = ``"{layer}_{feature}_{ctx_idx}"`` (``feature`` = ``"error"`` for ε, ``0`` for embed and
      metric); where a layer has several hook points the feature part is qualified with the hook's short
      name (``"7_mlp_out.12_0"``) to stay unique. ``jsNodeId`` is the same with ``-`` before ``ctx_idx``.
      ``sfc_id`` keeps the original graph id.
    * ``ctx_idx`` = the node's position, or 0 (the metric: the last prompt token when positions are known).
    * ``influence`` = the signed indirect effect in metric units (``None`` for embed / metric); ``activation``
      as in ``G``.
    * ``clerp`` = the node's label (:func:`~sfc_core.annotations.display_label`: the user's, else the
      automatic one), else ``""``; ``sfc_auto_label`` keeps the automatic label apart so a re-import knows
      which labels the user gave.
    * ``qParams.supernodes`` = ``[[name, node_id, …], …]`` (circuit-tracer's frontend format).
    """
    meta = dict(G.graph)
    n_layers = int(meta.get("n_layers") or 0)
    method = meta.get("method") or ""
    model = str(meta.get("model") or "")
    prompt_tokens = list(meta.get("prompt_tokens") or [])
    positions = [d.get("position") for _, d in G.nodes(data=True) if d.get("position") is not None]
    last_ctx = len(prompt_tokens) - 1 if prompt_tokens else (max(positions) if positions else 0)

    kinds = {n: kind_of(n, d) for n, d in G.nodes(data=True)}
    hooks_per_layer: dict[int, set] = {}
    for n, d in G.nodes(data=True):
        if kinds[n] not in ("embed", "metric"):
            hooks_per_layer.setdefault(d.get("layer"), set()).add(d.get("hook_name"))

    id_map: dict[str, str] = {}
    nodes = []
    used: set[str] = set()
    for n, d in G.nodes(data=True):
        feat = d.get("feature")
        pos = d.get("position")
        if kinds[n] == "embed":
            layer, ftype, fval, fpart = "E", "embedding", 0, "0"
            ctx = int(pos) if pos is not None else 0
        elif kinds[n] == "metric":
            layer, ftype, fval, fpart = str(n_layers + 1), "logit", 0, "0"
            ctx = int(pos) if pos is not None else int(last_ctx)
        else:
            layer = str(d.get("layer"))
            is_error = kinds[n] == "error"
            ftype = "sae error" if is_error else "sae feature"
            fval = -1 if is_error else int(feat)
            fpart = "error" if is_error else str(int(feat))
            if len(hooks_per_layer.get(d.get("layer"), ())) > 1:
                fpart = f"{hooks.short_kind(str(d.get('hook_name') or ''))}.{fpart}"
            ctx = int(pos) if pos is not None else 0
        nid = f"{layer}_{fpart}_{ctx}"
        base, k = nid, 1
        while nid in used:  # never expected, but ids must be unique
            nid = f"{base}.{k}"
            k += 1
        used.add(nid)
        id_map[n] = nid
        effect, act = d.get("effect"), d.get("activation")
        nodes.append({
            "node_id": nid,
            "feature": fval,
            "layer": layer,
            "ctx_idx": ctx,
            "feature_type": ftype,
            "jsNodeId": f"{layer}_{fpart}-{ctx}" + nid[len(base):],
            "clerp": display_label(G, n) or str(d.get("clerp") or ""),
            "sfc_auto_label": d.get("auto_label"),
            "influence": None if ftype in ("embedding", "logit") or effect is None else float(effect),
            "activation": None if act is None else float(act),
            "is_target_logit": ftype == "logit",
            "token_prob": 0.0,
            "run_idx": 0,
            "sfc_id": n,
        })
    links = [{"source": id_map[u], "target": id_map[v], "weight": float(d.get("weight") or 0.0)}
             for u, v, d in G.edges(data=True)]
    info = {
        "creator": "SFC Explorer",
        "creator_name": "SFC Explorer",
        "method": method,
        "metric": meta.get("metric") or "logit_diff",
        "generator": {"name": "SFC Explorer", "version": "1"},
    }
    for key in ("saes", "n_pairs", "aggregation", "edge_threshold", "scores"):
        if meta.get(key) is not None:
            info[key] = _jsonable(meta[key])
    return {
        "metadata": {
            "slug": _slugify(slug) if slug else _slugify(f"sfc-{model}-{method}"),
            "scan": model,
            "prompt": str(meta.get("prompt", "")),
            "prompt_tokens": [str(t) for t in prompt_tokens],
            "node_threshold": meta.get("node_threshold"),
            "schema_version": 1,
            "info": info,
        },
        "qParams": {"pinnedIds": [], "linkType": "both", "clickedId": "", "sparsityThreshold": None,
                    "supernodes": [[s["name"], *(id_map[n] for n in s["nodes"] if n in id_map)]
                                   for s in supernodes(G)]},
        "nodes": nodes,
        "links": links,
    }


# ------------------------------------------------------------------ readers (back to a circuit graph)
def _field(v):
    """A cell read back from CSV / GraphML: ``None`` for blanks and NaN, ints kept int."""
    if v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip()):
        return None
    return v.item() if hasattr(v, "item") else v


def _feature(v):
    """``feature`` as the contract has it: an ``int`` latent index or a kind's word."""
    v = _field(v)
    if isinstance(v, str) and v.lstrip("-").isdigit():
        return int(v)
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _as_int(v):
    v = _field(v)
    return None if v is None else int(v)


def _groups_from_column(owner: dict) -> list[dict]:
    """Supernodes from a per-node ``supernode`` name, in the order their first node appears."""
    groups: dict[str, list] = {}
    for n, name in owner.items():
        if name is not None:
            groups.setdefault(str(name), []).append(n)
    return [{"name": k, "nodes": v} for k, v in groups.items()]


def from_graphml(data: bytes | str) -> nx.DiGraph:
    """The circuit graph of a :func:`to_graphml` file: metadata (scores and supernodes included), node and edge
    attributes, labels.

    Raises:
        InputError: not GraphML, or a label / supernode breaks the rules of :mod:`sfc_core.annotations`.
    """
    raw = data.encode() if isinstance(data, str) else data
    try:
        H = nx.read_graphml(io.BytesIO(raw))
        meta = json.loads(H.graph.get("metadata") or "{}")
    except Exception as exc:  # noqa: BLE001 - networkx / XML parsers raise many kinds
        raise InputError(f"not a GraphML circuit file ({type(exc).__name__})") from None
    G = nx.DiGraph()
    G.graph.update(meta if isinstance(meta, dict) else {})
    owner = {}
    for n, d in H.nodes(data=True):
        d = dict(d)
        owner[n] = d.pop("supernode", None)
        d["feature"] = _feature(d.get("feature"))
        for key in ("hook_name", "layer", "site", "position", "effect", "activation"):
            d.setdefault(key, None)
        G.add_node(n, **d)
    for u, v, d in H.edges(data=True):
        G.add_edge(u, v, **dict(d))
    if "supernodes" not in G.graph and any(owner.values()):
        G.graph["supernodes"] = _groups_from_column(owner)
    check_annotations(G)
    return G


def from_csv(nodes_csv: str, edges_csv: str) -> nx.DiGraph:
    """The circuit graph of :func:`to_csv`'s two tables (CSV carries no graph metadata).

    Raises:
        InputError: a table is not CSV or lacks the ``id`` / ``source, target, weight`` columns, or a label /
            supernode breaks the rules of :mod:`sfc_core.annotations`.
    """
    try:
        nodes = pd.read_csv(io.StringIO(nodes_csv), dtype={"feature": str, "label": str, "auto_label": str,
                                                            "supernode": str, "id": str, "hook_name": str})
        edges = pd.read_csv(io.StringIO(edges_csv), dtype={"source": str, "target": str})
    except Exception as exc:  # noqa: BLE001 - pandas raises many kinds
        raise InputError(f"not a circuit CSV ({type(exc).__name__})") from None
    missing = [c for c in ("id",) if c not in nodes.columns] + [c for c in ("source", "target", "weight")
                                                               if c not in edges.columns]
    if missing:
        raise InputError(f"circuit CSV lacks the column(s) {', '.join(missing)}")
    G = nx.DiGraph()
    owner = {}
    for row in nodes.to_dict("records"):
        n = str(row["id"])
        owner[n] = _field(row.get("supernode"))
        attrs = {"hook_name": _field(row.get("hook_name")), "layer": _as_int(row.get("layer")),
                 "site": _as_int(row.get("site")), "feature": _feature(row.get("feature")),
                 "position": _as_int(row.get("position")), "effect": _field(row.get("effect")),
                 "activation": _field(row.get("activation"))}
        attrs.update({k: str(_field(row[k])) for k in ("label", "auto_label") if _field(row.get(k)) is not None})
        G.add_node(n, **attrs)
    for row in edges.to_dict("records"):
        u, v = str(row["source"]), str(row["target"])
        if u not in G or v not in G:
            raise InputError(f"edge {u} -> {v} names a node not in the nodes table")
        G.add_edge(u, v, weight=float(row["weight"]))
    if any(owner.values()):
        G.graph["supernodes"] = _groups_from_column(owner)
    check_annotations(G)
    return G


def from_neuronpedia(doc: dict) -> nx.DiGraph:
    """The circuit graph of a :func:`to_neuronpedia` document written by this project (its nodes carry
    ``sfc_id``): nodes, effects (``influence``), links, labels (``clerp``) and supernodes.

    Raises:
        InputError: not attribution-graph JSON, a node without ``sfc_id`` (a graph from another tool), a link
            or supernode naming an unknown node, a weight that is not a number, or anything
            :func:`~sfc_core.circuit.from_json` refuses in an ``sfc-circuit`` file (non-finite numbers, cycles,
            bad labels or supernodes).
    """
    from .nodes import graph_node, node_attrs

    if not isinstance(doc, dict) or not isinstance(doc.get("nodes"), list) or not isinstance(doc.get("links"), list):
        raise InputError("not a Neuronpedia graph: expected \"nodes\" and \"links\" lists")
    meta, q = doc.get("metadata") or {}, doc.get("qParams") or {}
    info = meta.get("info") or {} if isinstance(meta, dict) else None
    if not isinstance(meta, dict) or not isinstance(info, dict) or not isinstance(q, dict):
        raise InputError("not a Neuronpedia graph: metadata, metadata.info and qParams must be objects")
    if not isinstance(q.get("supernodes") or [], list):
        raise InputError("not a Neuronpedia graph: qParams.supernodes must be a list of [name, node_id, …]")
    G = nx.DiGraph()
    G.graph.update({k: info[k] for k in ("method", "metric", "saes", "n_pairs", "aggregation", "edge_threshold",
                                         "scores") if info.get(k) is not None})
    G.graph.update(model=meta.get("scan"), node_threshold=meta.get("node_threshold"),
                   prompt_tokens=list(meta.get("prompt_tokens") or []))
    np_to_sfc = {}
    for i, node in enumerate(doc["nodes"]):
        sfc_id = node.get("sfc_id") if isinstance(node, dict) else None
        if not sfc_id or not isinstance(sfc_id, str):
            raise InputError(f"Neuronpedia node {i + 1} has no sfc_id: only graphs exported by SFC Explorer can be "
                             "read back")
        attrs = node_attrs(graph_node(sfc_id))
        attrs.update(effect=node.get("influence"), activation=node.get("activation"))
        if node.get("sfc_auto_label"):
            attrs["auto_label"] = node["sfc_auto_label"]
        if node.get("clerp") and node["clerp"] != node.get("sfc_auto_label"):
            attrs["label"] = node["clerp"]
        G.add_node(sfc_id, **attrs)
        if not isinstance(node.get("node_id"), str):
            raise InputError(f"Neuronpedia node {i + 1} ({sfc_id}) has no text node_id")
        np_to_sfc[node["node_id"]] = sfc_id
    for link in doc["links"]:
        try:
            u, v = np_to_sfc[link["source"]], np_to_sfc[link["target"]]
        except (KeyError, TypeError):
            raise InputError(f"Neuronpedia link {str(link)[:80]} names a node not in the graph") from None
        weight = link.get("weight") or 0.0
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise InputError(f"Neuronpedia link {u} -> {v}: weight must be a number, not {weight!r:.40}")
        G.add_edge(u, v, weight=float(weight))
    groups = []
    for entry in q.get("supernodes") or []:
        if not isinstance(entry, list) or not entry:
            raise InputError(f"a Neuronpedia supernode must be [name, node_id, …], not {entry!r}")
        unknown = [x for x in entry[1:] if x not in np_to_sfc]
        if unknown:
            raise InputError(f"supernode {entry[0]!r} names {unknown[0]!r}, which is not a node of this graph")
        groups.append({"name": entry[0], "nodes": [np_to_sfc[x] for x in entry[1:]]})
    if groups:
        G.graph["supernodes"] = groups
    from .circuit import from_json, to_json

    return from_json(to_json(G))  # every field checked as in an sfc-circuit file (numbers, ids, cycles, labels)


# ------------------------------------------------------------------ file names
def safe_filename(name: str, ext: str) -> str:
    """A download file name from ``name``: characters outside ``[A-Za-z0-9._-]`` become ``_``, no leading
    dots, at most 80 characters including ``.ext``, never empty (``"circuit"``)."""
    ext = re.sub(r"[^A-Za-z0-9]", "", str(ext or ""))[:10]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name or ""))
    stem = re.sub(r"\.{2,}", ".", stem).lstrip("._-")
    if ext and stem.lower().endswith("." + ext.lower()):
        stem = stem[: -len(ext) - 1]
    stem = stem.rstrip(".") or "circuit"
    room = 80 - (len(ext) + 1 if ext else 0)
    stem = stem[:room].rstrip(".") or "circuit"
    return f"{stem}.{ext}" if ext else stem
