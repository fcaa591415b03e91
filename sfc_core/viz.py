"""Plotly figures of circuits and of faithfulness/completeness curves (no Streamlit import).

:func:`circuit_figure` draws a circuit graph in the :mod:`sfc_core.circuit` contract:

* **x** = one column per hook point, sorted by ``(layer, site)``: ``embed`` at the left, ``metric`` at the
  right. Columns are labelled ``L7`` (or ``L7 mlp_out`` where a layer has several hook points).
* **y**: without positions, the nodes of a column are stacked by *signed* effect, most negative (the
  strongest carriers of the clean behaviour) at the top. With positions (``"@pos"`` nodes), the y axis is
  split into one horizontal band per token position (labelled with ``G.graph["prompt_tokens"]`` where
  present), and each ``(column, position)`` cell stacks its nodes by effect the same way; ``embed`` and
  ``metric`` sit at the vertical centre.
* **colour** = signed effect on a symmetric diverging ``RdBu`` scale (red = negative = the node carries the
  clean behaviour, see :mod:`sfc_core.attribution`); **size** ∝ ``sqrt(|effect|)`` with a minimum size.
* feature nodes are circles, error nodes (ε) diamonds, ``embed``/``metric`` grey squares, each kind one trace.
  With ``feature_labels``, each node's label is also written next to it (a leading one-word ``"promotes: "``
  dropped, cut to 18 characters; the full text is in the hover).
* supernodes (markers with ``supernode=True`` from :func:`sfc_core.collapse.collapse`): hexagons coloured by
  their members' summed effect, stacked with the nodes of their column, labelled with the supernode's name;
  the hover lists their members (with labels).
* other collapsed-group markers of :func:`sfc_core.collapse.collapse` (``collapsed=True``): one trace
  of grey open circles at the bottom of their column (below the position bands when positional), labelled
  ``"other k"``, sized by their summed ``|effect|``; the hover gives the group's size, summed effect and its
  largest members. Markers are left out of the colour scale's range and the edge-width scale, and their
  (summed) edges are drawn in the thinnest bin, so that they do not wash out the real nodes and edges.
* edges: line traces bucketed by sign × three ``|weight|`` bins (width and opacity grow with ``|weight|``;
  negative red, positive blue), plus one invisible trace of edge mid-points for edge hover text.

Every node point carries ``customdata=[node_id]``, so a Streamlit ``on_select`` event maps back to the node
with :func:`node_id_from_selection`. The figure uses ``clickmode="event+select"`` and ``dragmode="pan"``
(drag pans, click selects a node).
"""

from __future__ import annotations

import html
import math
from collections import defaultdict
from collections.abc import Mapping

import numpy as np
import plotly.graph_objects as go

from . import hooks
from .collapse import is_marker
from .metrics import metric_label
from .nodes import KINDS, kind_of

_RED = (178, 24, 43)
_BLUE = (33, 102, 172)
_GREY = "#8c8c8c"
_MIN_SIZE, _MAX_SIZE, _SPECIAL_SIZE = 7.0, 30.0, 16.0
_EDGE_BINS = ((1.0, 0.30), (2.5, 0.50), (4.5, 0.75))  # (line width, opacity) per |weight| tercile
_LABEL_CHARS = 18  # node labels drawn next to the node are cut to this many characters


# ------------------------------------------------------------------ helpers
def _num(x) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _fmt(x) -> str:
    v = _num(x)
    return "–" if v is None else f"{v:.4g}"


def _short(text, n: int = _LABEL_CHARS) -> str:
    text = " ".join(str(text).split())
    head, sep, rest = text.partition(": ")
    if sep and rest and head.isalpha():  # "promotes: ' Mary', …" → "' Mary', …"
        text = rest
    return html.escape(text if len(text) <= n else text[:n - 1] + "…", quote=False)


def _group_size(d: dict, default: int) -> str:
    k, errs = d.get("n_members", default), int(d.get("n_errors") or 0)
    return f"{k} latents" if not errs else f"{k} nodes ({k - errs} latents, {errs} error nodes)"


def _column_key(node: str, data: dict, n_layers: int) -> tuple:
    kind = kind_of(node, data)
    if kind == "embed":
        return (-1, -1, "")
    if kind == "metric":
        return (max(n_layers, int(data.get("layer") or 0)) + 1e6, 0, "")
    layer = data.get("layer")
    layer = int(layer) if layer is not None else -1
    site = data.get("site")
    site = int(site) if isinstance(site, (int, float)) and not isinstance(site, bool) else 0
    return (layer, site, str(data.get("hook_name") or ""))


def _column_label(key: tuple, multi_hook_layers: set[int]) -> str:
    layer, _, hook = key
    if layer == -1 and hook == "":
        return "embed"
    if layer >= 1e6:
        return "metric"
    if layer in multi_hook_layers and hook:
        return f"L{layer} {hooks.short_kind(hook)}"
    return f"L{layer}"


# ------------------------------------------------------------------ circuit figure
def circuit_figure(G, feature_labels: dict[str, str] | None = None, height: int = 600) -> go.Figure:
    """A Plotly figure of circuit ``G`` (a ``networkx.DiGraph`` in the :mod:`sfc_core.circuit` contract).

    Args:
        G: the circuit, or its collapsed view from :func:`sfc_core.collapse.collapse`.
        feature_labels: optional ``node_id -> text`` shown in the hover (e.g. top logit tokens) and, cut to
            18 characters, as text next to the node.
        height: figure height in pixels.

    Returns:
        A figure with at most 12 traces; every node point (markers included) has ``customdata=[node_id]``
        (a marker's id is not a node id: callers that map clicks to nodes ignore ids they do not know).
    """
    labels = feature_labels or {}
    meta = dict(getattr(G, "graph", {}) or {})
    n_layers = int(meta.get("n_layers") or 0)
    metric = meta.get("metric") or "logit_diff"
    cbar_title = f"effect on {metric_label(metric)}<br>(− = carries clean behaviour)"

    if G.number_of_nodes() == 0:
        return go.Figure(layout=dict(
            height=height, paper_bgcolor="white", plot_bgcolor="white", xaxis={"visible": False},
            yaxis={"visible": False},
            annotations=[{"text": "empty circuit", "showarrow": False, "font": {"size": 16}}]))
    traces: list = []

    nodes = list(G.nodes(data=True))
    positional = any(d.get("position") is not None for _, d in nodes)

    # columns
    keys = {n: _column_key(n, d, n_layers) for n, d in nodes}
    hooks_per_layer: dict[int, set] = defaultdict(set)
    for k in keys.values():
        hooks_per_layer[k[0]].add(k[2])
    multi = {layer for layer, hooks in hooks_per_layer.items() if len(hooks) > 1}
    col_keys = sorted(set(keys.values()), key=lambda k: (k[0], k[1], k[2]))
    col_index = {k: i for i, k in enumerate(col_keys)}

    effect = {n: _num(d.get("effect")) for n, d in nodes}
    markers = {n for n, _ in nodes if is_marker(G, n)}
    supers = {n for n in markers if G.nodes[n].get("supernode")}

    def order(ns):  # most negative effect first (top); special / None effects, then "other" markers last
        return sorted(ns, key=lambda n: (n in markers and n not in supers, effect[n] is None,
                                         effect[n] if effect[n] is not None else 0.0, n))

    xy: dict[str, tuple[float, float]] = {}
    ytick_vals: list[float] = []
    ytick_text: list[str] = []
    if not positional:
        cols: dict[tuple, list] = defaultdict(list)
        for n, _ in nodes:
            cols[keys[n]].append(n)
        for k, ns in cols.items():
            ns = order(ns)
            m = len(ns)
            for r, n in enumerate(ns):
                xy[n] = (float(col_index[k]), (m - 1) / 2.0 - r)
    else:
        cells: dict[tuple, list] = defaultdict(list)
        special = []
        for n, d in nodes:
            pos = d.get("position")
            if n in markers:
                continue
            if pos is None:
                special.append(n)
            else:
                cells[(keys[n], int(pos))].append(n)
        positions = sorted({p for _, p in cells})
        band = {p: max(len(ns) for (k, q), ns in cells.items() if q == p) for p in positions}
        gap = 1.0
        top = 0.0
        centre: dict[int, float] = {}
        for p in positions:  # first position at the top
            centre[p] = top - (band[p] - 1) / 2.0
            top -= band[p] + gap
        for (k, p), ns in cells.items():
            ns = order(ns)
            m = len(ns)
            for r, n in enumerate(ns):
                xy[n] = (float(col_index[k]), centre[p] + (m - 1) / 2.0 - r)
        mid = (0.0 + top + gap) / 2.0
        for n in special:
            xy[n] = (float(col_index[keys[n]]), mid)
        if markers:  # one row below the last band (supernodes too: their members span positions)
            for n in markers:
                xy[n] = (float(col_index[keys[n]]), top + gap)
        tokens = meta.get("prompt_tokens") or []
        for p in positions:
            ytick_vals.append(centre[p])
            tok = tokens[p] if isinstance(tokens, (list, tuple)) and 0 <= p < len(tokens) else None
            ytick_text.append(f"{p}: {html.escape(str(tok), quote=False)!s}" if tok is not None else f"pos {p}")
        if markers:
            ytick_vals.append(top + gap)
            ytick_text.append("grouped")

    # edges
    weights = [(u, v, _num(d.get("weight"))) for u, v, d in G.edges(data=True)]
    wmax = (max((abs(w) for u, v, w in weights if w is not None and u not in markers and v not in markers),
                default=0.0)
            or max((abs(w) for _, _, w in weights if w is not None), default=0.0) or 1.0)

    def name_of(n: str) -> str:
        return str(G.nodes[n].get("label") or n) if n in markers else str(n)

    buckets: dict[tuple[int, int], tuple[list, list]] = {}
    mid_x, mid_y, mid_text = [], [], []
    for u, v, w in weights:
        if u not in xy or v not in xy:
            continue
        w0 = w if w is not None else 0.0
        # an edge to or from a marker sums many edges: always drawn thin, its summed weight is in the hover
        b = 0 if (u in markers or v in markers) else min(int(3 * abs(w0) / wmax), 2)
        xs, ys = buckets.setdefault((1 if w0 >= 0 else 0, b), ([], []))
        (x0, y0), (x1, y1) = xy[u], xy[v]
        xs.extend((x0, x1, None))
        ys.extend((y0, y1, None))
        mid_x.append((x0 + x1) / 2.0)
        mid_y.append((y0 + y1) / 2.0)
        merged = G.edges[u, v].get("n_edges", 1) if (u in markers or v in markers) else 1
        mid_text.append(f"{html.escape(name_of(u), quote=False)} → {html.escape(name_of(v), quote=False)}<br>"
                        + (f"summed weight of {merged} edges {_fmt(w)}" if merged != 1 else f"weight {_fmt(w)}"))
    for (sign, b), (xs, ys) in sorted(buckets.items()):
        width, alpha = _EDGE_BINS[b]
        r, g, bl = _BLUE if sign else _RED
        traces.append(go.Scatter(
            x=np.array(xs, dtype=float), y=np.array(ys, dtype=float), mode="lines", hoverinfo="skip",
            showlegend=False, name=f"{'positive' if sign else 'negative'} edges",
            line={"width": width, "color": f"rgba({r},{g},{bl},{alpha})"}))
    if mid_x:
        traces.append(go.Scatter(
            x=np.array(mid_x), y=np.array(mid_y), mode="markers", hovertext=mid_text,
            hovertemplate="%{hovertext}<extra></extra>", marker={"size": 6, "opacity": 0.0},
            showlegend=False, name="edges"))

    # nodes: features, error nodes, embed/metric
    emax = max((abs(e) for n, e in effect.items() if e is not None and n not in markers), default=0.0) or 1.0
    kinds: dict[str, list] = {"feature": [], "error": [], "special": [], "supernode": [], "collapsed": []}
    for n, d in nodes:
        if n in markers:
            kinds["supernode" if n in supers else "collapsed"].append(n)
            continue
        kind = kind_of(n, d)
        kinds["special" if kind in ("embed", "metric") else "error" if kind == "error" else "feature"].append(n)

    def hover(n: str) -> str:
        d = G.nodes[n]
        if n in markers:
            members = list(d.get("members") or [])
            if n in supers:
                lines = [f"<b>supernode: {html.escape(name_of(n), quote=False)}</b>",
                         f"{_group_size(d, len(members))}, summed effect {_fmt(d.get('effect'))}"]
                lines += [html.escape(f"{m}" + (f" · {labels[m]}" if labels.get(m) else ""), quote=False)
                          for m in members[:6]]
                return "<br>".join(lines + (["…"] if len(members) > 6 else []))
            lines = [f"<b>{html.escape(name_of(n), quote=False)}</b>",
                     f"hook point: {html.escape(str(d.get('hook_name', '')), quote=False)}",
                     f"{_group_size(d, len(members))} grouped (not drawn individually)",
                     f"summed effect: {_fmt(d.get('effect'))}",
                     f"summed |effect|: {_fmt(d.get('abs_effect'))}"]
            if members:
                lines.append("largest: " + ", ".join(html.escape(str(m), quote=False) for m in members[:3])
                             + (" …" if len(members) > 3 else ""))
            return "<br>".join(lines)
        lines = [f"<b>{html.escape(n, quote=False)}</b>",
                 f"hook point: {html.escape(str(d.get('hook_name', '')), quote=False)}",
                 f"feature: {html.escape(str(d.get('feature', '')), quote=False)}"]
        if d.get("position") is not None:
            lines.append(f"position: {d.get('position')}")
        lines.append(f"effect: {_fmt(d.get('effect'))}")
        lines.append(f"activation: {_fmt(d.get('activation'))}")
        if n in labels and labels[n]:
            lines.append(html.escape(str(labels[n]), quote=False))
        return "<br>".join(lines)

    def mass(n: str) -> float:  # a marker's summed |effect| (its signed sum where that is missing)
        return abs(_num(G.nodes[n].get("abs_effect")) or effect[n] or 0.0)

    amax = max((mass(n) for n in markers), default=0.0) or 1.0
    for kind, symbol, name in (("feature", "circle", KINDS["latent"].label), ("error", "diamond", KINDS["error"].label),
                               ("special", "square", "embed / metric"), ("supernode", "hexagon", "supernode"),
                               ("collapsed", "circle-open", "other nodes (grouped)")):
        ns = kinds[kind]
        if not ns:
            continue
        marker: dict = {"symbol": symbol, "line": {"width": 1, "color": "#333333"}}
        text, mode, textpos = None, "markers", "top center"
        if kind == "special":
            marker.update(size=_SPECIAL_SIZE, color=_GREY)
            text, mode = ns, "markers+text"
        elif kind == "collapsed":
            size = [_SPECIAL_SIZE + (_MAX_SIZE - _SPECIAL_SIZE) * math.sqrt(mass(n) / amax) for n in ns]
            marker.update(size=np.array(size), color=_GREY, line={"width": 2, "color": _GREY})
            text = [f"other {G.nodes[n].get('n_members', '')}" for n in ns]
            mode, textpos = "markers+text", "bottom center"
        elif kind == "supernode":
            es = np.array([effect[n] or 0.0 for n in ns], dtype=float)
            marker.update(size=_SPECIAL_SIZE + (_MAX_SIZE - _SPECIAL_SIZE) * np.sqrt(np.minimum(np.abs(es) / emax, 1.0)),
                          color=es, coloraxis="coloraxis", line={"width": 2, "color": "#333333"})
            text = [_short(G.nodes[n].get("label") or n) for n in ns]
            mode, textpos = "markers+text", "middle right"
        else:
            es = [effect[n] if effect[n] is not None else 0.0 for n in ns]
            es = np.array(es, dtype=float)
            marker.update(size=_MIN_SIZE + (_MAX_SIZE - _MIN_SIZE) * np.sqrt(np.minimum(np.abs(es) / emax, 1.0)),
                          color=es, coloraxis="coloraxis")
            if any(labels.get(n) for n in ns):
                text = [_short(labels[n]) if labels.get(n) else "" for n in ns]
                mode, textpos = "markers+text", "middle right"
        traces.append(go.Scatter(
            x=np.array([xy[n][0] for n in ns]), y=np.array([xy[n][1] for n in ns]),
            mode=mode, text=text, textposition=textpos,
            textfont={"size": 9, "color": "#444444"} if kind in ("feature", "error", "supernode", "collapsed") else None,
            customdata=np.array(ns, dtype=object).reshape(-1, 1), hovertext=[hover(n) for n in ns],
            hovertemplate="%{hovertext}<extra></extra>", marker=marker, name=name,
            unselected={"marker": {"opacity": 0.35}}))

    tickvals = list(range(len(col_keys)))
    ticktext = [_column_label(k, multi) for k in col_keys]
    title = meta.get("title")
    if not title:
        bits = [str(meta[k]) for k in ("model", "method") if meta.get(k)]
        title = " · ".join(bits) if bits else None
    return go.Figure(data=traces, layout=dict(
        height=height, title=title, showlegend=True, paper_bgcolor="white", plot_bgcolor="white",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1.0},
        margin={"l": 60 if positional else 20, "r": 20, "t": 60, "b": 40},
        clickmode="event+select", dragmode="pan", hovermode="closest",
        coloraxis={"colorscale": "RdBu", "cmin": -emax, "cmax": emax, "cmid": 0.0,
                   "colorbar": {"title": {"text": cbar_title, "side": "right"}, "thickness": 14}},
        xaxis={"tickvals": tickvals, "ticktext": ticktext, "showgrid": False, "zeroline": False,
               "range": [-0.6, len(col_keys) - 0.4]},
        yaxis={"showgrid": False, "zeroline": False, "showticklabels": positional,
               "tickvals": ytick_vals or None, "ticktext": ytick_text or None},
    ))


# ------------------------------------------------------------------ selection events
def _get(obj, key):
    if isinstance(obj, Mapping):
        return obj.get(key)
    try:
        return obj[key]
    except Exception:  # noqa: BLE001 - defensive parsing of foreign event objects
        return getattr(obj, key, None)


def node_ids_from_selection(selection) -> list[str]:
    """All node ids in a Streamlit plotly selection event (``{"selection": {"points": [...]}}``), in order,
    without duplicates; ``[]`` for anything unparseable."""
    try:
        sel = _get(selection, "selection")
        if sel is None:
            sel = selection
        points = _get(sel, "points")
        if not isinstance(points, (list, tuple)):
            return []
        out: list[str] = []
        for p in points:
            cd = _get(p, "customdata")
            if isinstance(cd, (list, tuple)):
                cd = cd[0] if cd else None
            if isinstance(cd, str) and cd and cd not in out:
                out.append(cd)
        return out
    except Exception:  # noqa: BLE001
        return []


def node_id_from_selection(selection) -> str | None:
    """The first node id in a Streamlit plotly selection event, or ``None`` (nothing selected, an edge
    mid-point, or a malformed event)."""
    ids = node_ids_from_selection(selection)
    return ids[0] if ids else None


# ------------------------------------------------------------------ curves
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")


def _pairs(xs, ys) -> tuple[list, list]:
    px, py = [], []
    for x, y in zip(xs or [], ys or []):
        if _num(x) is not None and _num(y) is not None:
            px.append(x)
            py.append(y)
    return px, py


def curve_figure(curves: dict[str, dict], title: str = "faithfulness and completeness") -> go.Figure:
    """Faithfulness (solid) and completeness (dashed) against circuit size, one colour per method.

    Args:
        curves: ``method -> {"sizes", "n_nodes", "faithfulness", "completeness", "random_faithfulness",
            "random_completeness"}``; x is ``n_nodes`` (else ``sizes``); ``None`` values are skipped. A
            ``random_*`` series is drawn as a dotted grey baseline.
        title: figure title.

    Returns:
        A figure: x = circuit size (nodes or latents), y = unitless score, dotted guides at 0 and 1.
    """
    fig = go.Figure()
    for i, (method, c) in enumerate((curves or {}).items()):
        c = c or {}
        colour = _PALETTE[i % len(_PALETTE)]
        xs = c.get("n_nodes") or c.get("sizes") or []
        for key, dash, label in (("faithfulness", "solid", "faithfulness"), ("completeness", "dash", "completeness")):
            px, py = _pairs(xs, c.get(key))
            if px:
                fig.add_trace(go.Scatter(x=px, y=py, mode="lines+markers", name=f"{method} {label}",
                                         legendgroup=method, line={"color": colour, "dash": dash}))
        for key, width, label in (("random_faithfulness", 2.0, "faithfulness"),
                                  ("random_completeness", 1.2, "completeness")):
            if c.get(key) is None:
                continue
            px, py = _pairs(xs, c.get(key))
            if px:
                fig.add_trace(go.Scatter(x=px, y=py, mode="lines", name=f"random {label} ({method})",
                                         legendgroup=f"random-{method}",
                                         line={"color": _GREY, "dash": "dot", "width": width}))
    fig.update_layout(
        title=title, paper_bgcolor="white", plot_bgcolor="white", hovermode="x unified",
        xaxis={"title": {"text": "circuit size (nodes)"}, "gridcolor": "#eeeeee"},
        yaxis={"title": {"text": "score (faithfulness ↑, completeness ↓)"}, "gridcolor": "#eeeeee"},
        shapes=[{"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": y, "y1": y,
                 "line": {"color": "#bbbbbb", "width": 1, "dash": "dot"}} for y in (0.0, 1.0)],
    )
    return fig
