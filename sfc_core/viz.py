"""Plotly figures of circuits and of faithfulness/completeness curves (no Streamlit import).

:func:`circuit_figure` draws a circuit graph in the :mod:`sfc_core.circuit` contract:

* **x** = one column per hook point, sorted by ``(layer, site)``: ``embed`` at the left, ``metric`` at the
  right. Columns are labelled ``L7`` (or ``L7 mlp_out`` where a layer has several hook points).
* **y**: within a column the nodes are stacked strictly by *signed* effect, most negative (the strongest
  carriers of the clean behaviour) at the top and most positive at the bottom, whatever their kind (features,
  error nodes and supernodes interleave); nodes without a finite effect come next, "other k" markers last.
  With positions (``"@pos"`` nodes), the y axis is split into one horizontal band per token position,
  labelled ``"p: 'token'"`` from ``G.graph["prompt_tokens"]`` (the prompt's tokens in the engine's position
  indexing, BOS at 0; :meth:`sfc_core.discovery.Discovery.select` sets them), or ``"pos p"`` where a token is
  missing; each ``(column, position)`` cell stacks its nodes the same way; ``embed`` and ``metric`` sit at
  the vertical centre, markers in a "grouped" row below the bands.
* **colour**: feature nodes and supernode hexagons share one symmetric diverging ``RdBu`` scale whose range
  is the largest ``|effect|`` among the *feature* nodes (red = negative = the node carries the clean behaviour,
  see :mod:`sfc_core.attribution`); a supernode's summed effect beyond it saturates. Error nodes (ε) are drawn
  neutral (grey diamonds with their effect written next to them, ``"ε −7.1"``) and never set the range: their
  effects, often an order of magnitude larger, would otherwise wash every feature out to white.
* **size** ∝ ``sqrt(|effect|)`` on one scale over features and error nodes (with a minimum size), so sizes
  compare across kinds.
* feature nodes are circles, error nodes diamonds, ``embed``/``metric`` grey squares, each kind one trace.
  With ``feature_labels``, each node's label is also written next to it (a leading one-word ``"promotes: "``
  dropped, cut to 18 characters; the full text is in the hover).
* supernodes (markers with ``supernode=True`` from :func:`sfc_core.collapse.collapse`): hexagons coloured by
  their members' summed effect, stacked with the nodes of their column, labelled with the supernode's name;
  the hover lists their members (with labels).
* other collapsed-group markers of :func:`sfc_core.collapse.collapse` (``collapsed=True``): one trace
  of grey open circles at the bottom of their column (below the position bands when positional), labelled
  ``"other k"``, sized by their summed ``|effect|``; the hover gives the group's size, summed effect and its
  largest members. Markers are left out of the colour and size ranges and the edge-width scale, and their
  (summed) edges are drawn in the thinnest bin, so that they do not wash out the real nodes and edges.
* edges: line traces bucketed by sign × three ``|weight|`` bins (width and opacity grow with ``|weight|``;
  positive weight blue, negative red), plus one invisible trace of edge mid-points for edge hover text.
* **legend** (horizontal, below the plot so it never covers a node): one entry per node kind drawn
  (``features``, ``error nodes (ε)``, ``embed / metric``, ``supernode``, ``other nodes (grouped)``) and one per
  edge sign (``positive weight``, ``negative weight``: the width bins of a sign share a ``legendgroup``, so one
  click hides them all). The colour bar, titled ``"feature effect (logit diff)"``, sits at the right.
* **highlight** (``highlight=node_id``): that node's in- and out-edges are drawn wider and opaque, the node (with
  a thick outline) and its neighbours keep full opacity, every other node and edge fades to opacity 0.15.

Every node point carries ``customdata=[node_id]``, so a Streamlit ``on_select`` event maps back to the node
with :func:`node_id_from_selection`. The figure uses ``clickmode="event+select"`` and ``dragmode="pan"``
(drag pans, click selects a node). :func:`with_node_text` gives a copy with every node's text written next
to it, for static images (:func:`sfc_core.export.to_image`), where there is no hover.
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
from .errors import InputError
from .metrics import metric_label
from .nodes import KINDS, kind_of, parse_id

_RED = (178, 24, 43)
_BLUE = (33, 102, 172)
_GREY = "#8c8c8c"
_ERROR_FILL = "#c8c8c8"  # error nodes: neutral, off the feature colour scale
_TEXT = "#444444"
_MIN_SIZE, _MAX_SIZE, _SPECIAL_SIZE = 7.0, 30.0, 16.0
_EDGE_BINS = ((1.0, 0.30), (2.5, 0.50), (4.5, 0.75))  # (line width, opacity) per |weight| tercile
_LABEL_CHARS = 18  # node labels drawn next to the node are cut to this many characters
_FADE = 0.15  # opacity of the nodes and edges outside a highlighted node's neighbourhood
_EMPHASIS = (1.5, 0.95)  # a highlighted node's edges: extra line width, opacity


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


def _signed(x) -> str:
    """Two significant digits with a typographic minus (``"−7.1"``), for text drawn on the figure."""
    v = _num(x)
    return "–" if v is None else f"{v:.2g}".replace("-", "−")


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


def _token_tick(p: int, tokens) -> str:
    """A position band's label: ``"3: ' John'"`` (quoted, so a leading space shows), else ``"pos 3"``."""
    if isinstance(tokens, (list, tuple)) and 0 <= p < len(tokens) and tokens[p] is not None:
        # repr: a leading space shows between the quotes and a newline token cannot break the axis label
        return f"{p}: " + html.escape(repr(str(tokens[p])), quote=False)
    return f"pos {p}"


def _rgba(rgb: tuple, alpha: float) -> str:
    return f"rgba({rgb[0]},{rgb[1]},{rgb[2]},{alpha:g})"


def node_short_id(node_id: str) -> str:
    """A short name of a node for text drawn next to it: ``"L12/123"`` for latent 123 at layer 12 (its
    position, shown by the position bands, left out), ``"ε"`` for an error node, ``"embed"`` / ``"metric"``;
    anything that is not a node id (a marker) comes back unchanged."""
    try:
        node = parse_id(node_id)
    except InputError:
        return str(node_id)
    if node.is_end:
        return node.kind
    if node.is_error:
        return "ε"
    return f"L{node.layer}/{node.index}"


# ------------------------------------------------------------------ circuit figure
def circuit_figure(G, feature_labels: dict[str, str] | None = None, height: int = 600, *,
                   highlight: str | None = None) -> go.Figure:
    """A Plotly figure of circuit ``G`` (a ``networkx.DiGraph`` in the :mod:`sfc_core.circuit` contract); the
    encoding (axes, colour, size, legend, highlight) is described in the module doc.

    Args:
        G: the circuit, or its display view from :func:`sfc_core.collapse.collapse` /
            :func:`sfc_core.collapse.filter_view`.
        feature_labels: optional ``node_id -> text`` shown in the hover (e.g. top logit tokens) and, cut to
            18 characters, as text next to the node.
        height: figure height in pixels.
        highlight: a node id of ``G`` whose in- and out-edges are emphasised and whose neighbourhood stays
            opaque while everything else fades (opacity 0.15); ``None`` or an id not in ``G``: no highlight.

    Returns:
        A figure with at most 18 traces (12 with no highlight): edge traces, one hover trace of edge
        mid-points, then one trace per node kind drawn. Every node point (markers included) has
        ``customdata=[node_id]`` (a marker's id is not a node id: callers that map clicks to nodes ignore ids
        they do not know). Effects and weights are in the metric's units (logits for logit difference).
        Never raises on odd values: a missing or non-finite effect or weight is drawn as 0 and shown as "–".
    """
    labels = feature_labels or {}
    meta = dict(getattr(G, "graph", {}) or {})
    n_layers = int(meta.get("n_layers") or 0)
    metric = meta.get("metric") or "logit_diff"
    cbar_title = f"feature effect ({metric_label(metric)})<br>− (red) = carries clean behaviour"

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

    def order(ns):  # signed effect ascending = most negative at the top; no effect, then "other" markers last
        return sorted(ns, key=lambda n: (n in markers and n not in supers, effect[n] is None,
                                         effect[n] if effect[n] is not None else 0.0, n))

    def stack(ns, x: float, centre: float) -> None:  # one column of nodes, first at the top, centred
        ns = order(ns)
        for r, n in enumerate(ns):
            xy[n] = (x, centre + (len(ns) - 1) / 2.0 - r)

    xy: dict[str, tuple[float, float]] = {}
    ytick_vals: list[float] = []
    ytick_text: list[str] = []
    if not positional:
        cols: dict[tuple, list] = defaultdict(list)
        for n, _ in nodes:
            cols[keys[n]].append(n)
        for k, ns in cols.items():
            stack(ns, float(col_index[k]), 0.0)
    else:
        cells: dict[tuple, list] = defaultdict(list)
        special: dict[tuple, list] = defaultdict(list)
        grouped: dict[tuple, list] = defaultdict(list)
        for n, d in nodes:
            pos = d.get("position")
            if n in markers:
                grouped[keys[n]].append(n)
            elif pos is None:
                special[keys[n]].append(n)
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
            stack(ns, float(col_index[k]), centre[p])
        mid = (0.0 + top + gap) / 2.0
        for k, ns in special.items():
            stack(ns, float(col_index[k]), mid)
        # markers: one row below the last band (supernodes too: their members span positions), stacked
        # downwards where a column holds several
        for k, ns in grouped.items():
            stack(ns, float(col_index[k]), top + gap - (len(ns) - 1) / 2.0)
        tokens = meta.get("prompt_tokens") or []
        for p in positions:
            ytick_vals.append(centre[p])
            ytick_text.append(_token_tick(p, tokens))
        if markers:
            ytick_vals.append(top + gap)
            ytick_text.append("grouped")

    # highlight: the node, its predecessors and successors stay; everything else fades
    focus: set | None = None
    if highlight is not None and isinstance(highlight, str) and highlight in G:
        focus = {highlight, *G.predecessors(highlight), *G.successors(highlight)}

    # edges
    weights = [(u, v, _num(d.get("weight"))) for u, v, d in G.edges(data=True)]
    wmax = (max((abs(w) for u, v, w in weights if w is not None and u not in markers and v not in markers),
                default=0.0)
            or max((abs(w) for _, _, w in weights if w is not None), default=0.0) or 1.0)

    def name_of(n: str) -> str:
        return str(G.nodes[n].get("label") or n) if n in markers else str(n)

    # bucket key: (sign 1 = positive, width bin, emphasis 1 = the highlighted node's edge, 0 plain, -1 faded)
    buckets: dict[tuple[int, int, int], tuple[list, list]] = {}
    mid_x, mid_y, mid_text = [], [], []
    for u, v, w in weights:
        if u not in xy or v not in xy:
            continue
        w0 = w if w is not None else 0.0
        # an edge to or from a marker sums many edges: always drawn thin, its summed weight is in the hover
        b = 0 if (u in markers or v in markers) else min(int(3 * abs(w0) / wmax), 2)
        emph = 0 if focus is None else (1 if highlight in (u, v) else -1)
        xs, ys = buckets.setdefault((1 if w0 >= 0 else 0, b, emph), ([], []))
        (x0, y0), (x1, y1) = xy[u], xy[v]
        xs.extend((x0, x1, None))
        ys.extend((y0, y1, None))
        mid_x.append((x0 + x1) / 2.0)
        mid_y.append((y0 + y1) / 2.0)
        merged = G.edges[u, v].get("n_edges", 1) if (u in markers or v in markers) else 1
        mid_text.append(f"{html.escape(name_of(u), quote=False)} → {html.escape(name_of(v), quote=False)}<br>"
                        + (f"summed weight of {merged} edges {_fmt(w)}" if merged != 1 else f"weight {_fmt(w)}"))
    # one legend entry per sign: the most visible trace of that sign (emphasised, then plain, then widest)
    shown = {sign: max((k for k in buckets if k[0] == sign), key=lambda k: (k[2], k[1]))
             for sign in {k[0] for k in buckets}}
    for key in sorted(buckets, key=lambda k: (k[2], k[0], k[1])):  # faded first, emphasised drawn last (on top)
        sign, b, emph = key
        xs, ys = buckets[key]
        width, alpha = _EDGE_BINS[b]
        if emph == 1:
            width, alpha = width + _EMPHASIS[0], _EMPHASIS[1]
        elif emph == -1:
            alpha = _FADE
        traces.append(go.Scatter(
            x=np.array(xs, dtype=float), y=np.array(ys, dtype=float), mode="lines", hoverinfo="skip",
            name=f"{'positive' if sign else 'negative'} weight", legendgroup=f"edges{'+' if sign else '-'}",
            showlegend=shown[sign] == key, legendrank=1001 + (1 - sign),
            line={"width": width, "color": _rgba(_BLUE if sign else _RED, alpha)}))
    if mid_x:
        traces.append(go.Scatter(
            x=np.array(mid_x), y=np.array(mid_y), mode="markers", hovertext=mid_text,
            hovertemplate="%{hovertext}<extra></extra>", marker={"size": 6, "opacity": 0.0},
            showlegend=False, name="edges"))

    # nodes: features, error nodes, embed/metric, supernodes, "other" markers
    kinds: dict[str, list] = {"feature": [], "error": [], "special": [], "supernode": [], "collapsed": []}
    for n, d in nodes:
        if n in markers:
            kinds["supernode" if n in supers else "collapsed"].append(n)
            continue
        kind = kind_of(n, d)
        kinds["special" if kind in ("embed", "metric") else "error" if kind == "error" else "feature"].append(n)
    # size: one scale over features and error nodes; colour: features only (error nodes are grey)
    smax = max((abs(effect[n]) for n in kinds["feature"] + kinds["error"] if effect[n] is not None),
               default=0.0) or 1.0
    cmax = (max((abs(effect[n]) for n in kinds["feature"] if effect[n] is not None), default=0.0)
            or max((abs(effect[n]) for n in kinds["supernode"] if effect[n] is not None), default=0.0) or 1.0)

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

    def scaled(ns, lo: float, top: float) -> np.ndarray:  # marker sizes ∝ sqrt(|effect|), capped at top
        es = np.abs(np.array([effect[n] or 0.0 for n in ns], dtype=float))
        return lo + (top - lo) * np.sqrt(np.minimum(es / smax, 1.0))

    amax = max((mass(n) for n in markers), default=0.0) or 1.0
    for kind, symbol, name, rank in (("feature", "circle", KINDS["latent"].label, 1),
                                     ("error", "diamond", KINDS["error"].label, 2),
                                     ("supernode", "hexagon", "supernode", 3),
                                     ("collapsed", "circle-open", "other nodes (grouped)", 4),
                                     ("special", "square", "embed / metric", 5)):
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
            marker.update(size=scaled(ns, _SPECIAL_SIZE, _MAX_SIZE),
                          color=np.array([effect[n] or 0.0 for n in ns], dtype=float), coloraxis="coloraxis",
                          line={"width": 2, "color": "#333333"})
            text = [_short(G.nodes[n].get("label") or n) for n in ns]
            mode, textpos = "markers+text", "middle right"
        elif kind == "error":
            marker.update(size=scaled(ns, _MIN_SIZE, _MAX_SIZE), color=_ERROR_FILL,
                          line={"width": 1, "color": "#555555"})
            text = [f"ε {_signed(effect[n])}" + (f" {_short(labels[n])}" if labels.get(n) else "") for n in ns]
            mode, textpos = "markers+text", "middle right"
        else:
            marker.update(size=scaled(ns, _MIN_SIZE, _MAX_SIZE),
                          color=np.array([effect[n] or 0.0 for n in ns], dtype=float), coloraxis="coloraxis")
            if any(labels.get(n) for n in ns):
                text = [_short(labels[n]) if labels.get(n) else "" for n in ns]
                mode, textpos = "markers+text", "middle right"
        textfont = {"size": 9, "color": _TEXT} if kind != "special" else None
        extra: dict = {"unselected": {"marker": {"opacity": 0.35}}}
        if focus is not None:
            # per-point opacity, and the same split as a selection so that plotly's own click dimming (while
            # a click is on its way to the app) never contradicts it
            keep = [n in focus for n in ns]
            marker["opacity"] = np.where(keep, 1.0, _FADE)
            width = marker["line"]["width"]
            marker["line"] = {**marker["line"], "width": [3.0 if n == highlight else width for n in ns]}
            faded_text = _rgba((68, 68, 68), _FADE)
            textfont = {"size": 9 if kind != "special" else 12, "color": [_TEXT if k else faded_text for k in keep]}
            extra = {"selectedpoints": [i for i, k in enumerate(keep) if k],
                     "selected": {"marker": {"opacity": 1.0}},
                     "unselected": {"marker": {"opacity": _FADE}, "textfont": {"color": faded_text}}}
        traces.append(go.Scatter(
            x=np.array([xy[n][0] for n in ns]), y=np.array([xy[n][1] for n in ns]),
            mode=mode, text=text, textposition=textpos, textfont=textfont,
            customdata=np.array(ns, dtype=object).reshape(-1, 1), hovertext=[hover(n) for n in ns],
            hovertemplate="%{hovertext}<extra></extra>", marker=marker, name=name, legendrank=rank, **extra))

    tickvals = list(range(len(col_keys)))
    ticktext = [_column_label(k, multi) for k in col_keys]
    title = meta.get("title")
    if not title:
        bits = [str(meta[k]) for k in ("model", "method") if meta.get(k)]
        title = " · ".join(bits) if bits else None
    return go.Figure(data=traces, layout=dict(
        height=height, title=title, showlegend=True, paper_bgcolor="white", plot_bgcolor="white",
        # below the plot (under the layer ticks): a legend inside or above the plot area covers nodes or the
        # title as soon as it wraps
        legend={"orientation": "h", "yanchor": "top", "y": -0.07, "xanchor": "left", "x": 0.0,
                "itemsizing": "constant", "font": {"size": 11}},
        margin={"l": 90 if positional else 20, "r": 20, "t": 50 if title else 20, "b": 30},
        clickmode="event+select", dragmode="pan", hovermode="closest",
        coloraxis={"colorscale": "RdBu", "cmin": -cmax, "cmax": cmax, "cmid": 0.0,
                   "colorbar": {"title": {"text": cbar_title, "side": "right"}, "thickness": 14}},
        xaxis={"tickvals": tickvals, "ticktext": ticktext, "showgrid": False, "zeroline": False,
               "range": [-0.6, len(col_keys) - 0.4]},
        yaxis={"showgrid": False, "zeroline": False, "showticklabels": positional,
               "tickvals": ytick_vals or None, "ticktext": ytick_text or None},
    ))


def with_node_text(fig: go.Figure) -> go.Figure:
    """A copy of ``fig`` with a text written next to every node point, for static images (no hover there).

    A node point is a point of a trace with ``customdata`` (as :func:`circuit_figure` draws them): its text is
    the one already drawn (label, ``"ε −7.1"``, ``"other k"``, supernode name), else :func:`node_short_id` of
    its id (``"L12/123"``). Traces without ``customdata`` (edges, curves) are left as they are; ``fig`` itself
    is not changed.
    """
    out = go.Figure(fig)
    for tr in out.data:
        ids = getattr(tr, "customdata", None)
        mode = getattr(tr, "mode", None) or ""
        if ids is None or "markers" not in mode:
            continue
        old = tr.text if isinstance(tr.text, (list, tuple, np.ndarray)) else [tr.text] * len(ids)
        text = [str(t) if t not in (None, "") else html.escape(node_short_id(str(cd[0])), quote=False)
                for t, cd in zip(old, ids)]
        tr.update(text=text, mode="markers+text", textposition=tr.textposition or "middle right")
        if tr.textfont.size is None:
            tr.textfont.size = 9
    return out


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
_SCORES = (("faithfulness", "solid"), ("completeness", "dash"))


def _pairs(xs, ys) -> tuple[list, list]:
    px, py = [], []
    for x, y in zip(xs or [], ys or []):
        if _num(x) is not None and _num(y) is not None:
            px.append(x)
            py.append(y)
    return px, py


def _random_baseline(curves: dict) -> dict[str, tuple[list, list]]:
    """The methods' random baselines merged into one series per score: random nodes do not depend on the
    method, so every method's curve carries the same baseline (x = its ``sizes``, the number of random nodes
    drawn); where two give the same size their values are averaged."""
    out = {}
    for score, _ in _SCORES:
        at: dict = defaultdict(list)
        for c in curves.values():
            c = c or {}
            px, py = _pairs(c.get("sizes") or c.get("n_nodes") or [], c.get(f"random_{score}"))
            for x, y in zip(px, py):
                at[x].append(float(y))
        xs = sorted(at)
        out[score] = (xs, [sum(at[x]) / len(at[x]) for x in xs])
    return out


def _legend_entry(name: str, group: str, line: dict, mode: str = "lines") -> go.Scatter:
    """A legend-only trace (no data): one legend entry standing for a group of traces."""
    return go.Scatter(x=[None], y=[None], mode=mode, name=name, legendgroup=group, line=line, hoverinfo="skip")


def curve_figure(curves: dict[str, dict], title: str = "faithfulness and completeness") -> go.Figure:
    """Faithfulness (solid) and completeness (dashed) against circuit size, one colour per method, and one grey
    random baseline.

    Legend (horizontal, below the plot, so it never runs off the plot): one entry per method (a legend-only
    trace sharing a ``legendgroup`` with the method's two curves: one click hides both), one ``"random nodes"``
    entry, and two grey key entries saying which line style is which score. Each curve's hover names its
    method and score.

    Args:
        curves: ``method -> {"sizes", "n_nodes", "faithfulness", "completeness", "random_faithfulness",
            "random_completeness"}``; x is ``n_nodes`` (else ``sizes``); ``None`` values are skipped. The
            ``random_*`` series of all methods are drawn once (:func:`_random_baseline`: merged by size).
        title: figure title.

    Returns:
        A figure: x = circuit size (nodes or latents), y = unitless score, dotted guides at 0 and 1. Traces,
        in order: per method its legend entry ``"<method>"`` then the curves ``"<method> faithfulness"`` and
        ``"<method> completeness"`` (not in the legend; a score with no finite point is left out), then the
        entry ``"random nodes"`` with ``"random faithfulness"`` / ``"random completeness"``, then the keys
        ``"faithfulness (solid)"`` and ``"completeness (dashed)"``.
    """
    curves = curves or {}
    fig = go.Figure()
    for i, (method, c) in enumerate(curves.items()):
        c = c or {}
        colour = _PALETTE[i % len(_PALETTE)]
        xs = c.get("n_nodes") or c.get("sizes") or []
        group = f"method:{method}"
        fig.add_trace(_legend_entry(str(method), group, {"color": colour}, "lines+markers"))
        for score, dash in _SCORES:
            px, py = _pairs(xs, c.get(score))
            if px:
                fig.add_trace(go.Scatter(
                    x=px, y=py, mode="lines+markers", name=f"{method} {score}", legendgroup=group, showlegend=False,
                    line={"color": colour, "dash": dash},
                    hovertemplate=f"{html.escape(str(method), quote=False)} {score}: %{{y:.3f}}<extra></extra>"))
    random = _random_baseline(curves)
    if any(px for px, _ in random.values()):
        fig.add_trace(_legend_entry("random nodes", "random", {"color": _GREY, "width": 1.5}))
    for score, dash in _SCORES:
        px, py = random[score]
        if px:
            fig.add_trace(go.Scatter(
                x=px, y=py, mode="lines", name=f"random {score}", legendgroup="random", showlegend=False,
                line={"color": _GREY, "dash": dash, "width": 1.5},
                hovertemplate=f"random nodes, {score}: %{{y:.3f}}<extra></extra>"))
    for score, dash in _SCORES:  # a key to the line styles
        fig.add_trace(_legend_entry(f"{score} ({'solid' if dash == 'solid' else 'dashed'})", "key",
                                    {"color": "#555555", "dash": dash}))
    fig.update_layout(
        title=title, paper_bgcolor="white", plot_bgcolor="white", hovermode="x unified",
        # below the x-axis title: a vertical legend at the right ran off the plot at 16 entries
        legend={"orientation": "h", "yanchor": "top", "y": -0.18, "xanchor": "left", "x": 0.0},
        margin={"b": 40},
        xaxis={"title": {"text": "circuit size (nodes)"}, "gridcolor": "#eeeeee"},
        yaxis={"title": {"text": "score (faithfulness ↑, completeness ↓)"}, "gridcolor": "#eeeeee"},
        shapes=[{"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": y, "y1": y,
                 "line": {"color": "#bbbbbb", "width": 1, "dash": "dot"}} for y in (0.0, 1.0)],
    )
    return fig


def pie_figure(report: dict, title: str | None = None) -> go.Figure:
    """PIE's behavioural fidelity ``1 − min(KL, 1)`` (solid, left axis) and the prediction-change rate (dotted)
    against the budget K (feature occurrences kept per prompt, log axis), one colour per method.

    Args:
        report: :func:`sfc_core.pie.pie_compare`'s report (``methods: {name: {"budgets", "fidelity",
            "pred_change"}}``, ``mode``, ``n_pairs``); random's doubling budgets (``random_to_match.curve``) extend
            its fidelity line.

    Returns:
        A figure: x = K (log), y = unitless in [0, 1]; traces ``"<method> fidelity"`` and ``"<method> prediction
        change"`` per method.
    """
    fig = go.Figure()
    for i, (name, row) in enumerate((report.get("methods") or {}).items()):
        colour = _PALETTE[i % len(_PALETTE)]
        ks, fid = list(row.get("budgets") or []), list(row.get("fidelity") or [])
        if name == "random":
            extra = [(p["k"], p["fidelity"]) for p in (report.get("random_to_match") or {}).get("curve", [])
                     if p["k"] not in ks]
            pts = sorted(zip(ks, fid)) + sorted(extra)
            ks, fid = [k for k, _ in pts], [f for _, f in pts]
        fig.add_trace(go.Scatter(x=ks, y=fid, mode="lines+markers", name=f"{name} fidelity", line={"color": colour},
                                 hovertemplate=f"{html.escape(name, quote=False)}: K=%{{x}}, fidelity %{{y:.3f}}"
                                               "<extra></extra>"))
        fig.add_trace(go.Scatter(x=row.get("budgets") or [], y=row.get("pred_change") or [], mode="lines+markers",
                                 name=f"{name} prediction change", line={"color": colour, "dash": "dot"},
                                 hovertemplate=f"{html.escape(name, quote=False)}: K=%{{x}}, prediction change "
                                               "%{y:.2f}<extra></extra>"))
    mode = report.get("mode", "corrupted")
    fig.update_layout(
        title=title or f"PIE fidelity vs budget ({mode} removal, {report.get('n_pairs', '?')} prompts)",
        xaxis={"title": "K: feature occurrences kept per prompt", "type": "log"},
        yaxis={"title": "fidelity 1 − min(KL, 1) (solid) · prediction change (dotted)", "range": [-0.02, 1.02]},
        legend={"orientation": "h", "y": -0.25}, margin={"t": 50})
    return fig
