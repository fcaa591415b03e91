"""Exports of a circuit graph and its figure: GraphML, CSV, standalone HTML, PNG/SVG, Neuronpedia JSON, and
the readers that bring GraphML, CSV and Neuronpedia-schema graph JSON back to a circuit graph. The one reader of
Neuronpedia-schema JSON, :func:`read_graph_json` / :func:`from_neuronpedia`, reads both this project's export and
circuit-tracer's attribution-graph files (its transcoder features, MLP errors, embeddings and logits become latent,
error, ``embed`` and ``metric`` nodes: :func:`_from_circuit_tracer`).

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
    for key in ("saes", "n_pairs", "aggregation", "edge_threshold", "scores", "n_layers"):
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


#: circuit-tracer's ``feature_type`` values (``circuit_tracer.frontend.graph_models.Node``, 0.5.0) and what each
#: becomes here (:func:`_from_circuit_tracer`): a transcoder latent, an error node, the embed or the metric end point.
CIRCUIT_TRACER_TYPES = {"cross layer transcoder": "transcoder", "mlp reconstruction error": "error",
                        "embedding": "embed", "logit": "metric"}
#: ``metadata["metric"]`` of a circuit read from a circuit-tracer graph: its logit targets, probability-weighted.
CIRCUIT_TRACER_METRIC = "p-weighted output logits"
_CT_FEATURE_ID = re.compile(r"^(\d+)_(\d+)_(\d+)$")  # "{layer}_{feature}_{ctx_idx}"
_CT_LOGIT_CLERP = re.compile(r'^Output "(.*)" \(p=[^()]*\)$', re.DOTALL)
_MAX_INDEX = 10 ** 9


def read_graph_json(source: str | os.PathLike | bytes | dict) -> nx.DiGraph:
    """The circuit graph of an attribution-graph JSON in the Neuronpedia schema: this project's
    :func:`to_neuronpedia` export or a graph file written by circuit-tracer (``create_graph_files``), given as
    a file path, JSON text, UTF-8 bytes or the parsed document (read with the limits of
    :mod:`sfc_core.jsonio`: at most 20 MB, nesting at most 32). See :func:`from_neuronpedia` for the schema.

    Raises:
        InputError: a missing or unreadable file, not UTF-8, too large, not valid JSON, or anything
            :func:`from_neuronpedia` refuses.
    """
    from .jsonio import load_json

    doc = source if isinstance(source, dict) else load_json(source, "graph file")
    return from_neuronpedia(doc)


def from_neuronpedia(doc: dict) -> nx.DiGraph:
    """The circuit graph of an attribution-graph document in the Neuronpedia schema (the one reader of that
    schema): top level ``metadata``, ``qParams``, ``nodes``, ``links``.

    * **Exported here** (:func:`to_neuronpedia`; its nodes carry ``sfc_id``): nodes, effects (``influence``,
      metric units), activations, links, labels (``clerp``; ``sfc_auto_label`` tells the automatic ones apart)
      and supernodes come back exactly.
    * **circuit-tracer** (no ``sfc_id``; see :func:`_from_circuit_tracer` for the mapping): transcoder
      features, MLP reconstruction errors, the embeddings and the logits become latent, error, ``embed`` and
      ``metric`` nodes; ``clerp`` the labels, ``ctx_idx`` the positions, ``qParams.supernodes`` the supernodes.

    The result is checked as :func:`~sfc_core.circuit.from_json` checks an ``sfc-circuit`` file, and built
    apart from any other graph: on error nothing is returned, half-read or changed.

    Raises:
        InputError: not attribution-graph JSON (no ``nodes`` / ``links`` lists; ``metadata`` / ``qParams`` not
            objects), some nodes with ``sfc_id`` and others without, a link or supernode naming an unknown
            node, a weight that is not a finite number, an unknown circuit-tracer ``feature_type``, or anything
            :func:`~sfc_core.circuit.from_json` refuses (non-finite numbers, cycles, bad labels or supernodes).
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("nodes"), list) or not isinstance(doc.get("links"), list):
        raise InputError("not a Neuronpedia graph: expected \"nodes\" and \"links\" lists")
    meta, q = doc.get("metadata") or {}, doc.get("qParams") or {}
    info = meta.get("info") or {} if isinstance(meta, dict) else None
    if not isinstance(meta, dict) or not isinstance(info, dict) or not isinstance(q, dict):
        raise InputError("not a Neuronpedia graph: metadata, metadata.info and qParams must be objects")
    if not isinstance(q.get("supernodes") or [], list):
        raise InputError("not a Neuronpedia graph: qParams.supernodes must be a list of [name, node_id, …]")
    if any(isinstance(node, dict) and "sfc_id" in node for node in doc["nodes"]):
        G = _from_sfc_export(doc, meta, info, q)
    else:
        G = _from_circuit_tracer(doc, meta, q)
    from .circuit import from_json, to_json

    return from_json(to_json(G))  # every field checked as in an sfc-circuit file (numbers, ids, cycles, labels)


def _from_sfc_export(doc: dict, meta: dict, info: dict, q: dict) -> nx.DiGraph:
    """The unchecked graph of a :func:`to_neuronpedia` document (see :func:`from_neuronpedia`)."""
    from .nodes import graph_node, node_attrs

    G = nx.DiGraph()
    G.graph.update({k: info[k] for k in ("method", "metric", "saes", "n_pairs", "aggregation", "edge_threshold",
                                         "scores") if info.get(k) is not None})
    G.graph.update(model=meta.get("scan"), node_threshold=meta.get("node_threshold"),
                   prompt_tokens=list(meta.get("prompt_tokens") or []))
    if isinstance(meta.get("prompt"), str) and meta["prompt"]:
        G.graph["prompt"] = meta["prompt"]
    # n_layers: written in info since the reader of circuit-tracer files came; before, only as the metric's layer
    n_layers = info.get("n_layers")
    if n_layers is None:
        layer = next((n.get("layer") for n in doc["nodes"] if isinstance(n, dict) and n.get("sfc_id") == "metric"),
                     None)
        n_layers = int(layer) - 1 if isinstance(layer, str) and layer.isdigit() and len(layer) <= 10 else None
    if isinstance(n_layers, int) and not isinstance(n_layers, bool):
        G.graph["n_layers"] = n_layers
    np_to_sfc = {}
    for i, node in enumerate(doc["nodes"]):
        sfc_id = node.get("sfc_id") if isinstance(node, dict) else None
        if not sfc_id or not isinstance(sfc_id, str):
            raise InputError(f"Neuronpedia node {i + 1} has no sfc_id, but others have: a graph exported by "
                             "SFC Explorer and then edited?")
        attrs = node_attrs(graph_node(sfc_id), None, G.graph.get("n_layers"))
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
        unknown = [x for x in entry[1:] if not isinstance(x, str) or x not in np_to_sfc]
        if unknown:
            raise InputError(f"supernode {entry[0]!r} names {unknown[0]!r}, which is not a node of this graph")
        groups.append({"name": entry[0], "nodes": [np_to_sfc[x] for x in entry[1:]]})
    if groups:
        G.graph["supernodes"] = groups
    return G


def _ct_int(value, where: str, what: str) -> int:
    """A circuit-tracer integer field (``layer`` is written as text: ``"7"``), ``0 ≤ value ≤ 10⁹``.

    Raises:
        InputError: not a whole number in that range.
    """
    v = int(value) if isinstance(value, str) and value.isdigit() and len(value) <= 10 else value
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= _MAX_INDEX:
        raise InputError(f"{where}: {what} must be a whole number from 0 to {_MAX_INDEX}, not {value!r:.40}")
    return v


def _ct_text(value, where: str) -> str:
    """A circuit-tracer label (``clerp``, a supernode's name) as a label here: control characters written as
    escapes, stripped, at most :data:`~sfc_core.annotations.MAX_LABEL_CHARS` characters (``""``: none).

    Raises:
        InputError: not text.
    """
    from .annotations import MAX_LABEL_CHARS, printable

    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(f"{where} must be text, not {value!r:.40}")
    return printable(value).strip()[:MAX_LABEL_CHARS].strip()


def _from_circuit_tracer(doc: dict, meta: dict, q: dict) -> nx.DiGraph:
    """The unchecked graph of a circuit-tracer attribution-graph file (``create_graph_files``, 0.5.0).

    Mapping (circuit-tracer field → here):

    * ``"cross layer transcoder"`` node ``"{layer}_{feature}_{ctx_idx}"`` → the latent ``feature`` (read from
      ``node_id``: the file's ``feature`` field is a Cantor pairing of layer and index) of layer ``layer``'s
      transcoder, at hook point ``blocks.{layer}.hook_mlp_out`` (where a transcoder writes) and position
      ``ctx_idx``; ``activation`` kept.
    * ``"mlp reconstruction error"`` → the error node at ``blocks.{layer}.hook_mlp_out``, position ``ctx_idx``.
    * ``"embedding"`` (one per prompt token) → the one ``embed`` node; links from several are summed.
    * ``"logit"`` (one per logit target) → the one ``metric`` node, standing for the targets weighted by their
      ``token_prob`` p (circuit-tracer's own weighting of influence); a link into logit i counts ``p_i · weight``.
      Without probabilities the ``is_target_logit`` logits count 1 (all logits equally when none is marked).
      ``n_layers`` = the logits' ``layer`` − 1 (circuit-tracer puts them one past the last layer).
    * ``clerp`` → ``label`` (control characters escaped, at most 200 characters); ``links`` → edges with their
      ``weight`` (circuit-tracer's direct attributions, as in the file); ``qParams.supernodes``
      (``[[name, node_id, …]]``) → supernodes of the feature and error nodes (embedding and logit members are
      left out, being merged; a supernode of only those is dropped; a repeated name gets " (2)").
    * ``metadata.scan`` → ``model``; ``prompt``, ``prompt_tokens`` kept; ``method`` ``"circuit-tracer"``,
      ``metric`` :data:`CIRCUIT_TRACER_METRIC`, ``aggregation`` ``"none"`` (position-resolved). The file's
      ``slug``, ``node_threshold`` (a share of circuit-tracer's influence, not an |effect| threshold),
      ``transcoder_list``, logit targets and what was merged or dropped go to ``metadata["imported"]``.
    * ``effect`` is ``None``: circuit-tracer's ``influence`` is the cumulative share of total influence at the
      node's rank (unsigned, in (0, 1]), not an effect in metric units; a circuit-tracer file carries no
      faithfulness either.

    Raises:
        InputError: a node without a text ``node_id`` or with a repeated one, an unknown ``feature_type``, a
            bad ``layer`` / ``ctx_idx`` / ``token_prob`` / ``clerp``, a transcoder feature whose ``node_id`` is
            not ``{layer}_{feature}_{ctx_idx}``, two nodes that are the same node here, a link naming an unknown
            node or with a weight that is not a finite number, a link from a node to itself once merged, or a
            supernode that is not ``[name, node_id, …]`` or names an unknown node.
    """
    from .annotations import MAX_LABEL_CHARS
    from .nodes import EMBED, EMBED_ID, METRIC, METRIC_ID, error, from_fields, is_end_id, node_attrs

    G = nx.DiGraph()
    to_id: dict[str, str] = {}  # file node_id -> node id here
    types: dict[str, object] = {}  # file node_id -> its feature_type
    logits: list[dict] = []
    n_embeddings = 0
    for i, node in enumerate(doc["nodes"]):
        if not isinstance(node, dict):
            raise InputError(f"graph node {i + 1} must be an object, not {node!r:.60}")
        nid = node.get("node_id")
        if not isinstance(nid, str) or not nid:
            raise InputError(f"graph node {i + 1} has no text node_id")
        where = f"graph node {nid[:60]!r}"
        ftype = node.get("feature_type")
        if nid in types:
            clash = {types[nid], ftype} == {"mlp reconstruction error", "cross layer transcoder"}
            raise InputError(f"{where} appears twice" + (
                " (an MLP error node and a layer-0 feature: circuit-tracer 0.5.0 names error nodes "
                "'0_{layer}_{pos}', the id of feature {layer} of layer 0, so their links cannot be told apart; "
                "circuit-tracer issue #78)" if clash else ""))
        types[nid] = ftype
        kind = CIRCUIT_TRACER_TYPES.get(ftype) if isinstance(ftype, str) else None
        if kind is None:
            raise InputError(f"{where}: unknown feature_type {ftype!r:.40} (circuit-tracer graphs have "
                             + ", ".join(map(repr, CIRCUIT_TRACER_TYPES)) + ")")
        ctx = _ct_int(node.get("ctx_idx"), where, "ctx_idx")
        label = _ct_text(node.get("clerp"), f"{where}: clerp")
        if kind == "embed":
            to_id[nid] = EMBED_ID
            n_embeddings += 1
            continue
        if kind == "metric":
            prob = node.get("token_prob", 0.0)
            if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0 <= prob <= 1:
                raise InputError(f"{where}: token_prob must be a probability from 0 to 1, not {prob!r:.40}")
            layer = node.get("layer")
            token = _CT_LOGIT_CLERP.match(node.get("clerp") or "")
            logits.append({"node_id": nid, "token": token.group(1) if token else label, "token_prob": float(prob),
                           "is_target_logit": node.get("is_target_logit") is True,
                           "layer": int(layer) if isinstance(layer, str) and layer.isdigit() and len(layer) <= 10
                           else layer if isinstance(layer, int) and not isinstance(layer, bool) else None})
            to_id[nid] = METRIC_ID
            continue
        layer = _ct_int(node.get("layer"), where, "layer")
        hook = hooks.get_act_name("mlp_out", layer)
        if kind == "transcoder":
            m = _CT_FEATURE_ID.match(nid)
            if m is None or int(m.group(1)) != layer or int(m.group(2)) > _MAX_INDEX:
                raise InputError(f"{where}: a transcoder feature's node_id must be \"{{layer}}_{{feature}}_"
                                 f"{{ctx_idx}}\" with its layer {layer}")
            unit = from_fields(hook, int(m.group(2)), ctx, where=where)  # the engine's kind of a unit there
        else:
            unit = error(hook, ctx)
        if unit.id in G:
            first = next(k for k, v in to_id.items() if v == unit.id)
            raise InputError(f"{where} and graph node {first[:60]!r} are the same node here ({unit.id})")
        attrs = {**node_attrs(unit), "effect": None, "activation": node.get("activation")}
        if label:
            attrs["label"] = label
        G.add_node(unit.id, **attrs)
        to_id[nid] = unit.id

    inner_layers = [d["layer"] for _, d in G.nodes(data=True)]
    logit_layers = [lg["layer"] for lg in logits if lg["layer"] is not None]
    n_layers = max(max(inner_layers, default=-1) + 1, max(logit_layers, default=0) - 1)
    probs = [lg["token_prob"] for lg in logits]
    if sum(probs) > 0:
        weights, rule = probs, "token_prob"
    elif any(lg["is_target_logit"] for lg in logits):
        weights, rule = [1.0 if lg["is_target_logit"] else 0.0 for lg in logits], "is_target_logit"
    else:
        weights, rule = [1.0 / len(logits)] * len(logits) if logits else [], "equal"
    logit_weight = {lg["node_id"]: w for lg, w in zip(logits, weights)}

    edges: dict[tuple[str, str], float] = {}
    for j, link in enumerate(doc["links"]):
        if not isinstance(link, dict):
            raise InputError(f"graph link {j + 1} must be an object with source, target and weight")
        src, dst = link.get("source"), link.get("target")
        if not isinstance(src, str) or not isinstance(dst, str) or src not in to_id or dst not in to_id:
            raise InputError(f"graph link {j + 1} ({src!r:.40} -> {dst!r:.40}) names a node not in the graph")
        w = link.get("weight")
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
            raise InputError(f"graph link {src} -> {dst}: weight must be a finite number, not {w!r:.40}")
        u, v = to_id[src], to_id[dst]
        if u == v:
            raise InputError(f"graph link {src} -> {dst} runs from a node to itself ({u})")
        scale = logit_weight.get(dst, 1.0)
        if scale:
            edges[(u, v)] = edges.get((u, v), 0.0) + float(w) * scale
    for (u, v), w in edges.items():
        for end, node in ((EMBED_ID, EMBED), (METRIC_ID, METRIC)):
            if end in (u, v) and end not in G:
                G.add_node(end, **node_attrs(node, None, n_layers), effect=None, activation=None)
        G.add_edge(u, v, weight=w)
    for end, node, present in ((EMBED_ID, EMBED, n_embeddings), (METRIC_ID, METRIC, logits)):
        if present and end not in G:  # kept without links, as circuit-tracer keeps them
            G.add_node(end, **node_attrs(node, None, n_layers), effect=None, activation=None)

    groups, names, dropped = [], set(), []
    for entry in q.get("supernodes") or []:
        if not isinstance(entry, list) or len(entry) < 2:
            raise InputError(f"a graph supernode must be [name, node_id, …], not {entry!r:.80}")
        name = _ct_text(entry[0], "a supernode's name") or "supernode"
        unknown = [x for x in entry[1:] if not isinstance(x, str) or x not in to_id]
        if unknown:
            raise InputError(f"supernode {name!r} names {unknown[0]!r:.60}, which is not a node of this graph")
        members = list(dict.fromkeys(to_id[x] for x in entry[1:] if not is_end_id(to_id[x])))
        if not members:
            dropped.append(name)
            continue
        base, k = name, 2
        while name in names:  # circuit-tracer allows repeated names, supernodes here do not
            name = f"{base[:MAX_LABEL_CHARS - 12]} ({k})"
            k += 1
        names.add(name)
        groups.append({"name": name, "nodes": members})
    if groups:
        G.graph["supernodes"] = groups

    notes = []
    if n_embeddings > 1:
        notes.append(f"the {n_embeddings} embedding nodes (one per prompt token) are one embed node here; their "
                     "links are summed")
    if len(logits) > 1:
        notes.append(f"the {len(logits)} logit nodes are one metric node here, weighted by {rule}")
    if dropped:
        notes.append(f"{len(dropped)} supernode(s) of only embedding / logit nodes left out: "
                     + ", ".join(dropped)[:120])
    tokens = meta.get("prompt_tokens") or []
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise InputError("graph file: metadata.prompt_tokens must be a list of texts")
    G.graph.update(
        model=meta.get("scan") if isinstance(meta.get("scan"), str) else None,
        method="circuit-tracer", metric=CIRCUIT_TRACER_METRIC, aggregation="none", n_layers=n_layers,
        prompt=meta.get("prompt") if isinstance(meta.get("prompt"), str) else "",
        prompt_tokens=list(tokens),
        imported=_jsonable({
            "format": "circuit-tracer", "slug": meta.get("slug"), "scan": meta.get("scan"),
            "transcoder_list": meta.get("transcoder_list") or [], "node_threshold": meta.get("node_threshold"),
            "schema_version": meta.get("schema_version"), "logit_weights": rule,
            "logits": [{k: lg[k] for k in ("node_id", "token", "token_prob", "is_target_logit")} for lg in logits],
            "notes": notes}),
    )
    return G


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
