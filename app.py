"""SFC Explorer — circuit explorer (main page of the Streamlit app).

Run with ``make app`` (or ``streamlit run app.py``). Inputs: a task preset or an editable table of
prompt pairs (or a JSONL upload), the SAE hook points, the attribution method and selection
thresholds. **Find circuit** runs :func:`sfc_core.discovery.discover` once per distinct input
(cached in this session; *Stop* ends it at its next progress step). The circuit view is a Streamlit
fragment: its selection sliders re-select nodes and edges from the cached effects without recomputing
(:meth:`sfc_core.discovery.Discovery.select`) and rerun only the view, not the page. Click a node (or pick
it in the list beside the graph) to inspect its feature; the graph highlights its edges and neighbours.

The page is one function per section, run in order by :func:`main`: each gathers its widgets' values,
calls the engine and renders. Widget values outlive page changes (:mod:`pages._shared.state`).
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from pages._shared import display as S  # noqa: E402
from pages._shared import panel, state, ui  # noqa: E402
from sfc_core import defaults, nodes  # noqa: E402
from sfc_core import methods as registry  # noqa: E402
from sfc_core.errors import InputError, SFCError  # noqa: E402

ss = st.session_state
TOP_K_DEFAULT = 30
SELECTION_MODES = ["top-k", "threshold", "target faithfulness"]
#: The first screen shows the smallest circuit that explains the target share of the behaviour (issue 12):
#: a top-30 circuit explains ~5 % of IOI, which no graph should present as "the circuit".
SELECTION_DEFAULT = "target faithfulness"
FALLBACK_PROMPT = "When Mary and John went to the store, John gave a drink to"


@dataclass
class Options:
    """The sidebar's choices."""

    hooks: list[str]
    method: str
    ig_steps: int
    extra: dict
    aggregate: bool
    length_mode: str
    multi_token: str
    ablation: str


@dataclass
class Pairs:
    """The table's prompt pairs (``None`` with ``error`` when the table is invalid)."""

    pairs: list | None
    error: str | None
    n_tokens: int = 0  # clean + corrupted tokens of the valid pairs (the run-time estimate's unit)


@dataclass
class Shown:
    """The circuit on screen: ``view`` is ``"discovery"`` or ``"uploaded"``."""

    view: str
    G: Any
    fig: Any
    runs: Any
    render_s: float | None = None
    scores: dict | None = None  # faithfulness / completeness of exactly this circuit (found circuits)
    n_grouped: int = 0  # inner nodes drawn inside "other k" markers (G itself is never collapsed)
    hidden: dict | None = None  # nodes the view toggles left out of the drawing: {"errors": n, "disconnected": m}


# ------------------------------------------------------------------ callbacks (run before the script)
def _set_table(pairs) -> None:
    ss["pairs_df"] = S.table_from_pairs(pairs)
    ss["pairs_version"] = ss.get("pairs_version", 0) + 1
    state.remember_records(ss, S.records_from_table(ss["pairs_df"]))


def _table_from_records(records: list[dict]):
    """The editor table of remembered rows: text cells (as :func:`display.table_from_pairs` builds it)."""
    import pandas as pd

    rows = [{c: None if r.get(c) is None else str(r[c]) for c in S.TABLE_COLUMNS} for r in records]
    return pd.DataFrame(rows, columns=list(S.TABLE_COLUMNS), dtype="object") if rows else S.empty_table()


def _on_pairs_upload() -> None:
    f = ss.get("pairs_upload")
    if f is None:
        return
    try:
        pairs = S.parse_pairs_upload(f.getvalue(), f"'{f.name}'")
    except SFCError as exc:
        ss["_flash_pairs"] = ("error", f"{exc} — the table below is unchanged.")
        return
    except Exception as exc:  # noqa: BLE001
        ui.log.exception("pair upload failed")
        ss["_flash_pairs"] = ("error", f"could not read '{f.name}' ({type(exc).__name__}) — the table below is unchanged.")
        return
    _set_table(pairs)
    ss["task_preset"] = ui.CUSTOM
    ss["_loaded_preset"] = None
    ss["_flash_pairs"] = ("success", f"Loaded {len(pairs)} pairs from '{f.name}'.")


def _on_circuit_upload() -> None:
    from sfc_core.circuit import load_circuit

    f = ss.get("circuit_upload")
    if f is None:
        return
    try:
        try:
            text = f.getvalue().decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InputError(f"'{f.name}' is not a circuit file: it is not UTF-8 JSON text") from None
        if not text.lstrip().startswith("{"):
            raise InputError(f"'{f.name}' is not a circuit file: expected sfc-circuit JSON (an object)")
        G = load_circuit(text)
        if not S.inner_node_ids(G):
            raise InputError(f"'{f.name}' holds a circuit with no feature or error nodes")
        for n in G.nodes:
            nodes.parse_id(n)  # InputError on an id that is not a node id
    except SFCError as exc:
        ss["_flash_circuit"] = ("error", f"{exc} — the circuit on screen is unchanged.")
        return
    except Exception as exc:  # noqa: BLE001
        ui.log.exception("circuit upload failed")
        ss["_flash_circuit"] = ("error", (f"could not read '{f.name}' as a circuit ({type(exc).__name__}) — "
                                          "the circuit on screen is unchanged."))
        return
    ss["uploaded_graph"] = G
    ss["uploaded_name"] = f.name
    ss.get("annotations", {}).pop(f"uploaded:{f.name}", None)  # a new upload brings its own labels
    ss["view"] = "uploaded"
    ss["node_pick"] = ""
    ss["_flash_circuit"] = ("success", f"Showing the circuit from '{f.name}' ({G.number_of_nodes()} nodes).")


def _annotation_key(view: str) -> str:
    """Which circuit the user's labels and supernodes belong to: the found circuit (all its selections share
    them) or the uploaded file."""
    if view == "uploaded":
        return f"uploaded:{ss.get('uploaded_name')}"
    return f"discovery:{ss.get('current_key')}"


def _edit_annotations(edit, flash: str) -> None:
    """Run ``edit(G)`` (an :mod:`sfc_core.annotations` edit) on the circuit on screen and keep the result for
    its later selections; a refused edit changes nothing and says why (in session key ``flash``)."""
    from sfc_core.annotations import merge_annotations

    G = ss.get("_shown_graph")
    if G is None:
        return
    try:
        edit(G)
    except SFCError as exc:
        ss[flash] = ("error", str(exc))
        return
    key = ss["_shown_annotation_key"]
    ss.setdefault("annotations", {})[key] = merge_annotations(ss["annotations"].get(key), G)


def _on_rename(node_id: str) -> None:
    from sfc_core.annotations import set_label

    _edit_annotations(lambda G: set_label(G, node_id, ss.get(f"rename_{node_id}", "")), "_flash_rename")


def _on_add_supernode() -> None:
    from sfc_core.annotations import add_supernode

    members = list(ss.get("supernode_members") or [])
    _edit_annotations(lambda G: add_supernode(G, ss.get("supernode_name", ""), members), "_flash_supernode")
    if not ss.get("_flash_supernode"):
        ss["supernode_members"], ss["supernode_name"] = [], ""


def _on_remove_supernode(name: str) -> None:
    from sfc_core.annotations import remove_supernode

    _edit_annotations(lambda G: remove_supernode(G, name), "_flash_supernode")


def _annotate(G, sae_dict: dict, view: str) -> None:
    """Automatic labels of bundled latents and the user's labels and supernodes, put on ``G``."""
    from sfc_core.annotations import annotations_of, apply_annotations, attach_auto_labels
    from sfc_core.features import auto_label_lookup

    attach_auto_labels(G, auto_label_lookup(sae_dict))
    store = ss.setdefault("annotations", {})
    key = ss["_shown_annotation_key"] = _annotation_key(view)
    if key not in store:
        store[key] = annotations_of(G)  # an uploaded circuit brings its own
    apply_annotations(G, store[key])
    ss["_shown_graph"] = G


def _flash(key: str, where=st) -> None:
    msg = ss.pop(key, None)
    if msg:
        getattr(where, msg[0])(msg[1])


# ------------------------------------------------------------------ sections
def header_section() -> tuple[Any, dict]:
    """Title, the loaded model and SAEs (stops the page if they fail to load)."""
    st.title("Sparse feature circuit explorer")
    st.caption(ui.SIGN_CONVENTION)
    with ui.guard("Loading the model and SAEs") as g:
        m = ui.model()
        sae_dict = ui.saes()
    if not g.ok:
        st.info("Fix the model / SAE choice on the *Model and SAEs* page.")
        st.stop()
    st.caption(ui.model_caption(m, sae_dict))
    st.page_link("pages/5_Model_internals.py", icon="🧭",
                 label="Below the features: causal tracing, logit lens and attention heads on these pairs "
                       "(Model internals)")
    return m, sae_dict


def sidebar_options(sae_dict: dict) -> Options:
    """**Circuit options**: hook points, method and its knobs, aggregation, pair handling, ablation, upload."""
    from sfc_core.ablation import ABLATIONS

    with st.sidebar:
        st.header("Circuit options")
        hooks_all = list(sae_dict)
        sae_sig = S.input_key(saes=S.sae_signature(sae_dict))
        hooks = st.multiselect("SAE hook points", hooks_all, default=hooks_all, key=f"hooks_{sae_sig}",
                               help="Residual-stream SAEs spliced into the model; nodes come from these.")
        methods = list(registry.names())
        method = st.selectbox("Method", methods, index=methods.index("atp") if "atp" in methods else 0,
                              format_func=registry.label, key="method")
        ig_steps, extra = defaults.IG_STEPS, {}
        options = registry.get(method).options
        if "steps" in options:
            ig_steps = int(st.number_input("IG steps", 2, 50, defaults.IG_STEPS, key="ig_steps"))
        if "mask_lambda" in options:
            extra["mask_lambda"] = float(st.number_input("Mask sparsity λ", min_value=0.0, value=defaults.MASK_LAMBDA,
                                                         step=1e-3, format="%.4f", key="mask_lambda"))
            extra["mask_steps"] = int(st.number_input("Mask training steps", 10, 2000, 200, key="mask_steps"))
        if "budget" in options:
            extra["budget"] = int(st.number_input("Budget K (nodes the method picks)", 1, 200, 30, key="fap_budget"))
        aggregate = st.toggle("Aggregate over positions", value=True, key="aggregate",
                              help="On: one node per feature (summed over token positions). Off: one node per "
                                   "(feature, position), drawn on a layer × token grid.")
        length_mode = _choice("length_mismatch", "skip")
        multi_token = _choice("multi_token", "reject")
        ablation = st.selectbox("Ablation for scores", list(ABLATIONS), key="ablation",
                                help=S.ablation_help(ABLATIONS, "How nodes outside the circuit are removed when "
                                                                "scoring it:"))
        st.divider()
        # No `type=` filter: Streamlit would raise on a wrong extension; the content is validated instead.
        st.file_uploader("Load a saved circuit (sfc-circuit JSON, a Neuronpedia JSON exported here, or a "
                         "circuit-tracer / Neuronpedia attribution-graph JSON)",
                         key="circuit_upload",
                         on_change=_on_circuit_upload)
        _flash("_flash_circuit")
    return Options(hooks, method, ig_steps, extra, aggregate, length_mode, multi_token, ablation)


def _choice(option: str, default: str) -> str:
    """A selectbox for an engine option the app names in its own words (:data:`display.UI_CONTROLS`)."""
    title, words = S.UI_CONTROLS[option]
    values = list(words)
    return st.selectbox(title, values, index=values.index(default), key=option, format_func=words.get)


def pairs_section(m, opts: Options) -> Pairs:
    """**1 · Prompt pairs**: task preset or upload into the editable table; the tokenization report."""
    from sfc_core.pairs import pair_report

    st.header("1 · Prompt pairs")
    names = ui.task_names()
    options = names + [ui.CUSTOM]
    if not names:
        st.warning("The built-in tasks are not available; type pairs into the table or upload a JSONL file.")
    if "task_preset" not in ss or ss["task_preset"] not in options:
        ss["task_preset"] = "ioi" if "ioi" in options else ui.CUSTOM
    # the editor's own edits are gone after a visit to another page: put the last rows back
    state.restore_table(ss, f"pairs_editor_{ss['pairs_version']}", _table_from_records)
    c1, c2, c3 = st.columns([2, 1, 3])
    preset = c1.selectbox("Task preset", options, key="task_preset",
                          format_func=ui.task_label)
    n_task = int(c2.number_input("Pairs from the task", min_value=1, max_value=64, value=ui.DEFAULT_N_PAIRS,
                                 key="task_n"))
    c3.file_uploader("…or upload prompt pairs (JSON Lines)", key="pairs_upload",
                     on_change=_on_pairs_upload,
                     help='One pair per line: {"clean", "corrupted", "answer", "wrong_answer"} or feature-circuits\' '
                          '{"clean_prefix", "patch_prefix", "clean_answer", "patch_answer"}.')
    _flash("_flash_pairs")
    if preset != ui.CUSTOM and ss.get("_loaded_preset") != (ss["model_name"], preset, n_task):
        with ui.guard(f"Building the {preset} pairs"):
            _set_table(ui.task_pairs(preset, n_task))
            ss["_loaded_preset"] = (ss["model_name"], preset, n_task)
    if "pairs_df" not in ss:
        ss["pairs_df"] = S.empty_table()

    edited = st.data_editor(
        ss["pairs_df"], num_rows="dynamic", key=f"pairs_editor_{ss['pairs_version']}", width="stretch",
        column_config={
            "clean": st.column_config.TextColumn("clean", help="prompt whose next token should be the answer"),
            "corrupted": st.column_config.TextColumn("corrupted",
                                                     help="same template; its next token is the wrong answer"),
            "answer": st.column_config.TextColumn("answer", help="one token, usually with a leading space"),
            "wrong_answer": st.column_config.TextColumn("wrong_answer",
                                                        help="one token: the corrupted prompt's answer"),
            "template": st.column_config.TextColumn(
                "template", help="optional template id: pairs with the same id and token length share positions "
                                 "(per-position mean ablation averages within them); blank = group by length"),
        },
    )
    records = S.records_from_table(edited)
    state.remember_records(ss, records)

    pairs, pairs_error = None, None
    try:
        pairs = S.pairs_from_table(records)
    except InputError as exc:
        pairs_error = S.screen_message(exc)
    filled = [(i, r) for i, r in enumerate(records) if any(v not in (None, "") for v in r.values())]
    report = []
    with ui.guard("Tokenizing the pairs"):
        report = pair_report(m, [SimpleNamespace(**r) for _, r in filled])
        for entry, (i, _) in zip(report, filled):  # number rows as in the table (fresh empty rows count)
            entry["row"], entry["index"] = i + 1, i
    problems = S.report_problems(report)
    with st.expander(f"Tokenization and validity — {len(report)} pairs, {len(problems)} with problems",
                     expanded=bool(problems)):
        st.dataframe(S.report_table(report), hide_index=True, width="stretch")
    if pairs_error:
        st.error(f"Fix the pairs table: {pairs_error}")
    elif problems:
        shown = "; ".join(problems[:4]) + (f"; … ({len(problems) - 4} more)" if len(problems) > 4 else "")
        length_words = S.UI_CONTROLS["length_mismatch"]
        st.warning(f"{len(problems)} pair(s) have problems: {shown}. Pairs whose prompts differ in token length "
                   f"are handled as the sidebar's *{length_words[0]}* says "
                   f"(*{length_words[1][opts.length_mode]}*); multi-token answers as *"
                   f"{S.UI_CONTROLS['multi_token'][0]}* says (*{S.UI_CONTROLS['multi_token'][1][opts.multi_token]}*).")
    n_tokens = sum(len(e["clean_tokens"]) + len(e["corrupted_tokens"]) for e in report if e.get("valid"))
    return Pairs(pairs, pairs_error, n_tokens)


def find_section(m, sae_dict: dict, opts: Options, pp: Pairs) -> str | None:
    """**2 · Circuit**: the *Find circuit* button (one discovery per distinct input), its run-time estimate and
    a *Stop* control while it runs. Returns the inputs' key."""
    from sfc_core.discovery import DiscoverConfig

    st.header("2 · Circuit")
    cfg = DiscoverConfig(method=opts.method, aggregation="sum" if opts.aggregate else "none", top_k=TOP_K_DEFAULT,
                         edges=True, steps=opts.ig_steps, length_mismatch=opts.length_mode,
                         multi_token=opts.multi_token, **opts.extra)
    key_cfg = replace(cfg, top_k=None, node_threshold=None, edge_threshold=0.0)
    sub_saes = {h: sae_dict[h] for h in opts.hooks}
    input_key = ui.discovery_key(m, sub_saes, pp.pairs, key_cfg) if pp.pairs else None
    estimate = registry.estimate_seconds(cfg, pp.n_tokens, len(sub_saes)) if pp.pairs else None
    cached = input_key in ss.get("results", {})

    c1, c2 = st.columns([1, 4], vertical_alignment="center")
    clicked = c1.button("Find circuit", type="primary", key="find_circuit")
    if estimate is not None and not cached:
        note = (f"Estimated run time on this machine: about {S.fmt_seconds(estimate)} "
                f"({registry.label(opts.method)}, {len(pp.pairs)} pairs, {pp.n_tokens} tokens, {len(sub_saes)} SAEs).")
        if estimate > defaults.APP_LONG_RUN_S:
            c2.warning(note + " It reports progress and can be stopped with *Stop* while it runs.", icon="⏱️")
        else:
            c2.caption(note)
    ui.stopped_notice()
    if clicked:
        if not opts.hooks:
            st.error("Select at least one SAE hook point in the sidebar (*SAE hook points*).")
        elif pp.error or not pp.pairs:
            st.error(f"Cannot find a circuit: {pp.error or 'the pairs table is empty'}. Fix the table above, pick a "
                     "*Task preset* or upload pairs.")
        else:
            with ui.guard("Finding the circuit"):
                ui.run_discovery(m, sub_saes, pp.pairs, cfg, input_key, estimate_s=estimate)
                ss["current_key"] = input_key
                ss["view"] = "discovery"
    return input_key


def _choose_view(d) -> str | None:
    """``"discovery"``, ``"uploaded"`` or ``None``: what to show (a radio when there are both)."""
    has_upload = ss.get("uploaded_graph") is not None
    if d is not None and has_upload:
        choice = st.radio("Show", ["found circuit", f"uploaded: {ss.get('uploaded_name', 'circuit')}"],
                          index=0 if ss.get("view") == "discovery" else 1, horizontal=True,
                          key=f"view_pick_{ss.get('view')}")
        ss["view"] = "discovery" if choice == "found circuit" else "uploaded"
    view = ss.get("view") if (ss.get("view") == "uploaded" and has_upload) or (ss.get("view") == "discovery" and d) else None
    if view is None and d is not None:
        view = "discovery"
    if view is None and has_upload:
        view = "uploaded"
    return view


def _default_node_threshold(d, step: float) -> float:
    """The threshold slider's start: the |effect| of the :data:`TOP_K_DEFAULT`-th strongest *feature* (error
    nodes, often the largest effects, would otherwise take the whole default and leave no feature)."""
    import torch

    values = torch.cat([e[..., :-1].abs().flatten() for e in d.attribution.effects if e.numel()]) \
        if d.attribution.effects else torch.zeros(0)
    values = values[values > 0]
    if not values.numel():
        return 0.0
    k = min(TOP_K_DEFAULT, values.numel())
    kth = float(values.topk(k).values[-1])
    return max(step * math.floor(kth / step), 0.0)


def _node_pool(d) -> int:
    """How many nodes (features and error nodes) of discovery ``d`` have a non-zero effect."""
    return int(sum(int((e != 0).sum()) for e in d.attribution.effects))


def _selection_controls(d) -> dict:
    """The selection controls above the graph: ``{"node_threshold", "top_k", "target_faithfulness",
    "edge_threshold"}`` for :meth:`~sfc_core.discovery.Discovery.select`."""
    emax, wmax = S.effect_range(d)
    target, k, thr = None, None, None
    c_mode, c_node, c_edge = st.columns([2, 3, 3])
    if d.chosen_by_method:
        c_mode.caption(f"{d.metadata.get('method')} chose its own {len(S.inner_node_ids(d.graph))} nodes: the "
                       "node controls apply to AtP / IG / exact circuits.")
    else:
        sel_mode = c_mode.radio("Select nodes by", SELECTION_MODES, index=SELECTION_MODES.index(SELECTION_DEFAULT),
                                key="sel_mode",
                                help="target faithfulness: the smallest top-n by |effect| whose faithfulness "
                                     "reaches the target (real evaluations, under the sidebar's ablation)")
        if sel_mode == "top-k":
            pool = _node_pool(d)
            k = c_node.slider("Nodes: top-k by |effect|", 1, max(ui.EDGE_POOL, 2), TOP_K_DEFAULT, key="top_k",
                              help=f"{pool} nodes have a non-zero effect; edges are known among the top "
                                   f"{ui.EDGE_POOL}")
            if k > pool:
                c_node.caption(f"only {pool} nodes have an effect: all of them are shown")
        elif sel_mode == "target faithfulness":
            target = c_node.slider("Target faithfulness", 0.05, 1.0, defaults.TARGET_FAITHFULNESS, step=0.05,
                                   key="target_faithfulness")
        else:
            step = S.nice_step(emax)
            thr = c_node.slider("Nodes: |effect| ≥", 0.0, S.round_up(emax, step), _default_node_threshold(d, step),
                                step=step, format="%.4f", key=f"node_thr_{ss['current_key']}")
    estep = S.nice_step(wmax)
    ethr = c_edge.slider("Edges: |weight| ≥", 0.0, S.round_up(wmax, estep), 0.0, step=estep, format="%.4f",
                         key=f"edge_thr_{ss['current_key']}")
    return {"node_threshold": thr, "top_k": k, "target_faithfulness": target, "edge_threshold": ethr}


def _view_toggles() -> tuple[bool, bool]:
    """Display-only toggles: hide error nodes, hide nodes without an edge (scores stay the whole circuit's)."""
    a, b, _ = st.columns([1, 1, 2])
    hide_errors = a.toggle("Hide error nodes (ε)", key="hide_errors")
    hide_disconnected = b.toggle("Hide nodes without edges", key="hide_disconnected")
    return hide_errors, hide_disconnected


def _draw(m, sae_dict: dict, G, highlight: str | None, hide_errors: bool, hide_disconnected: bool):
    """The figure of ``G`` as the view toggles ask (supernodes one marker each; collapsed to its
    :data:`~sfc_core.collapse.MAX_NODES` largest nodes plus one "other k" marker per hook point when larger), the
    number of nodes grouped into "other k" markers and the view's ``hidden`` counts."""
    from sfc_core.collapse import MAX_NODES, collapse, filter_view
    from sfc_core.viz import circuit_figure

    view = filter_view(G, hide_errors=hide_errors, hide_disconnected=hide_disconnected)
    drawn = collapse(view, MAX_NODES)  # a copy when it is small enough
    n_grouped = int((drawn.graph.get("collapsed") or {}).get("n_grouped", 0))
    labels = S.feature_labels(G, panel.logit_token_lookup(m, sae_dict), panel.flag_lookup(sae_dict))
    return circuit_figure(drawn, labels, highlight=highlight), n_grouped, view.graph.get("hidden") or {}


def _select(d, selection: dict, ablation: str, sae_dict: dict) -> Any:
    """The found circuit for ``selection`` (no recompute), annotated, or ``None`` (error shown)."""
    G = None
    with ui.guard("Selecting the circuit"):
        G = d.select(**selection, ablation=ablation)
        G.graph["task"] = ss.get("_loaded_preset", (None, None))[1] if ss.get("_loaded_preset") else "custom"
        _annotate(G, sae_dict, "discovery")
    return G


def _sync_pick(G) -> str | None:
    """The node to inspect: a new click in the graph wins over the list; ``None`` when nothing is picked."""
    from sfc_core.viz import node_id_from_selection

    node_ids = S.ranked_node_ids(G)
    clicked = node_id_from_selection(ss.get("circuit_graph"))
    if clicked not in node_ids:  # an "other k" marker of the collapsed view, embed / metric, or nothing
        clicked = None
    if clicked and clicked != ss.get("_last_click"):
        ss["node_pick"] = clicked
    ss["_last_click"] = clicked
    if ss.get("node_pick") not in [""] + node_ids:
        ss["node_pick"] = ""
    return ss.get("node_pick") or None


@st.fragment
def circuit_view(m, sae_dict: dict, opts: Options, input_key: str | None, pp: Pairs) -> None:
    """The circuit on screen: selection controls, graph, scores, node panel, supernodes, scores curve and exports.
    A fragment, so a slider, toggle or click reruns only this view (the page above it stays as it is)."""
    d = ss["results"].get(ss.get("current_key")) if ss.get("current_key") else None
    view = _choose_view(d)
    if view is None:
        st.info("Choose prompt pairs and click **Find circuit** (the IOI preset is ready), or load a saved circuit "
                "in the sidebar.")
        return
    t0 = time.perf_counter()
    if view == "discovery":
        selection = _selection_controls(d)
        if input_key != ss.get("current_key"):
            st.info("The inputs changed since this circuit was found — click **Find circuit** to recompute. "
                    "Showing the last circuit.")
        for w in d.runs.batch.warnings[:6]:
            st.warning(S.screen_message(w))
        G = _select(d, selection, opts.ablation, sae_dict)
        runs = d.runs
    else:
        G = ss["uploaded_graph"]
        with ui.guard("Reading the uploaded circuit's labels"):
            _annotate(G, sae_dict, "uploaded")
        runs = None
    if G is None:
        return
    hide_errors, hide_disconnected = _view_toggles()
    pick = _sync_pick(G)
    shown = None
    with ui.guard("Drawing the circuit"):
        fig, n_grouped, hidden = _draw(m, sae_dict, G, pick, hide_errors, hide_disconnected)
        shown = Shown(view, G, fig, runs, time.perf_counter() - t0, n_grouped=n_grouped, hidden=hidden)
    if shown is None:
        return
    col_graph, col_panel = st.columns([3, 2])
    with col_graph:
        score_box = st.container()
        graph_section(shown)
        with score_box:
            if view == "discovery":
                with ui.guard("Scoring the circuit"):
                    shown.scores = d.scores(G, opts.ablation)  # one ablated forward per new selection, cached
                    G.graph["scores"] = {k: shown.scores[k] for k in ("faithfulness", "completeness", "ablation",
                                                                      "metric")}
            _score_summary(shown)
        stats_section(G)
    with col_panel:
        node_panel_section(m, sae_dict, shown, pp)
    supernode_section(shown)
    score_key = scores_section(m, sae_dict, shown, pp, opts.ablation)
    export_section(shown, score_key)


def graph_section(shown: Shown) -> None:
    """The graph (click a node to inspect it) and what it leaves out."""
    st.plotly_chart(shown.fig, on_select="rerun", selection_mode="points", key="circuit_graph",
                    config={"displaylogo": False, "scrollZoom": True})
    cap = ("Click a node to inspect it and highlight its edges (drag pans, scroll zooms). Features: red = negative "
           "effect (carries the clean behaviour), blue = positive; error nodes ε are grey, their effect in the "
           "hover.")
    if shown.render_s is not None:
        cap += f" Selected and drawn in {shown.render_s * 1000:.0f} ms."
    st.caption(cap)
    if shown.n_grouped:
        from sfc_core.collapse import MAX_NODES

        st.info(f"{len(S.inner_node_ids(shown.G))} nodes are too many to draw one by one: the {MAX_NODES} largest "
                f"are drawn and {shown.n_grouped} more are grouped per layer into the grey open circles "
                "(“other k”). Faithfulness is the whole circuit's; the node list and the exports hold every node.",
                icon="🗂️")
    hidden = {k: v for k, v in (shown.hidden or {}).items() if v}
    if hidden:
        st.caption("Hidden from the drawing (not from the scores): "
                   + ", ".join(f"{v} {'error nodes' if k == 'errors' else 'nodes without edges'}"
                               for k, v in hidden.items()) + ".")


def _score_summary(shown: Shown) -> None:
    """The circuit's faithfulness: computed (found circuits), saved in the file, or a warning."""
    G = shown.G
    if shown.scores is not None:
        _faithfulness_box(shown.scores, G.graph.get("target_search"))
    elif (G.graph.get("scores") or {}).get("faithfulness") is not None:
        saved = G.graph["scores"]
        a, b = st.columns(2)
        a.metric("faithfulness", f"{saved['faithfulness']:.3f}", help="as saved in the file")
        if saved.get("completeness") is not None:
            b.metric("completeness", f"{saved['completeness']:.3f}", help="as saved in the file")
        st.caption(f"saved in the file ({saved.get('ablation', '?')} ablation, the pairs it was found on); "
                   "score it on the current pairs under *3 · Scores*")
    elif (G.graph.get("imported") or {}).get("format") == "circuit-tracer":
        st.warning("Faithfulness not measured: a circuit-tracer graph file carries none, and its nodes carry no "
                   "effects (circuit-tracer's influence ranks nodes; it is not in metric units). Score it under "
                   "*3 · Scores* (it needs transcoders at its layers) before reading the graph as an explanation.")
        imported = G.graph["imported"]
        st.caption(f"circuit-tracer graph '{imported.get('slug') or '?'}' ({imported.get('scan') or '?'}): "
                   "edges are its attributions; " + "; ".join(imported.get("notes") or ["nothing merged"]) + ".")
    else:
        st.warning("This circuit file carries no faithfulness: score it under *3 · Scores* before reading "
                   "the graph as an explanation.")


def stats_section(G) -> None:
    """Size, density, nodes per layer, hubs, metric values and timings of the circuit (folded)."""
    from sfc_core.circuit import circuit_stats
    from sfc_core.metrics import metric_label

    stats = circuit_stats(G)
    with st.expander(f"Circuit statistics — {stats['nodes']} nodes ({stats['features']} features, "
                     f"{stats['error_nodes']} error nodes), {stats['edges']} edges"):
        cols = st.columns(3)
        for col, (label, value) in zip(cols * 2, [("nodes", stats["nodes"]), ("features", stats["features"]),
                                                  ("error nodes", stats["error_nodes"]), ("edges", stats["edges"]),
                                                  ("density", f"{stats['density']:.3f}"),
                                                  ("components", stats["weakly_connected_components"])]):
            col.metric(label, value)
        meta = G.graph
        if meta.get("metric_clean") is not None:
            st.markdown(f"metric clean → corrupted: **{meta['metric_clean']:.3f} → {meta['metric_corrupted']:.3f}** "
                        f"({metric_label(meta.get('metric'), long=True)}, mean over {meta.get('n_pairs')} pairs)")
        per_layer = stats["nodes_per_layer"]
        if per_layer:
            st.markdown("nodes per layer")
            st.bar_chart({"nodes": {f"L{k:02d}": v for k, v in per_layer.items()}}, height=160)
        hubs = [f"{n} ({deg})" for n, deg in stats["out_degree_hubs"] if deg][:3]
        if hubs:
            st.caption("top out-degree: " + ", ".join(hubs))
        timings = meta.get("timings_s") or {}
        if timings:
            st.caption("timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items())
                       + (f"; total {meta['wall_s']:.1f} s" if meta.get("wall_s") else ""))
        st.caption(f"method {meta.get('method')}, aggregation {meta.get('aggregation')}")


def _faithfulness_box(scores: dict, search: dict | None) -> None:
    """How much of the behaviour the circuit on screen explains (never a graph without it)."""
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    a, b = st.columns(2)
    a.metric("faithfulness", fmt(scores["faithfulness"]),
             help="(m(C) − m(∅)) / (m(M) − m(∅)) of exactly the nodes drawn, every other node ablated")
    b.metric("completeness", fmt(scores["completeness"]), help="the same for the complement (lower is better)")
    st.caption(f"{scores['n_nodes']} nodes, {scores['ablation']} ablation; scored in {scores['seconds']:.2f} s")
    if search is not None and not search["reached"]:
        st.warning(f"No top-n of the {search['pool']} nodes with an effect reaches faithfulness "
                   f"{search['target']:g}; showing the best size tried, {search['n_nodes']} nodes "
                   f"({fmt(search['faithfulness'])}).")
    elif search is not None:
        st.caption(f"target {search['target']:g}: reached with {search['n_nodes']} of {search['pool']} nodes")
    elif scores["faithfulness"] is not None and scores["faithfulness"] < defaults.APP_LOW_FAITHFULNESS:
        st.warning(S.faithfulness_sentence(scores["faithfulness"], scores["n_nodes"]) + " Select nodes by "
                   "*target faithfulness* to find how many nodes it takes.")


def node_panel_section(m, sae_dict: dict, shown: Shown, pp: Pairs) -> None:
    """The node list (synced with clicks in the graph, see :func:`_sync_pick`) and the picked node's panel. Runs
    the current pairs for an uploaded circuit when its feature panel needs them (``shown.runs`` then holds them)."""
    G = shown.G
    node_ids = S.ranked_node_ids(G)
    pick = st.selectbox("Inspect a node (or click one in the graph)", [""] + node_ids, key="node_pick",
                        format_func=lambda n: "— choose a node —" if not n else S.node_label(G, n))
    if not pick:
        st.caption("The picked node's feature panel opens here: its label, top activating examples, logit effects, "
                   "and what ablating or steering it does to the current prompts.")
        return
    info = S.node_info(G, pick)
    with st.container(border=True):
        _rename_form(G, pick)
        if info["kind"] != "feature":
            panel.special_node_panel(info)
            return
        loaded = sae_dict.get(info["hook_name"])
        if loaded is None:
            st.warning(f"No SAE is loaded at {info['hook_name']}; load it on the *Model and SAEs* page to "
                       "inspect this feature.")
            return
        if shown.runs is None and pp.pairs:
            with ui.guard("Running the current pairs", warn=True):
                shown.runs = ui.runs_for(m, sae_dict, pp.pairs, S.circuit_hooks(G))
        runs = shown.runs
        default_prompt = (runs.batch.pairs[0].clean if runs is not None else
                          (pp.pairs[0].clean if pp.pairs else FALLBACK_PROMPT))
        panel.feature_panel(m, loaded, info["feature"], runs=runs, key=f"node_{pick}",
                            default_prompt=default_prompt, ablation_kind="zero", node=info)


def _rename_form(G, node_id: str) -> None:
    """A text box to rename the picked node (blank: back to its automatic label)."""
    from sfc_core.annotations import MAX_LABEL_CHARS

    auto = G.nodes[node_id].get("auto_label")
    key = f"rename_{node_id}"
    if key not in ss:
        ss[key] = G.nodes[node_id].get("label") or ""
    a, b = st.columns([4, 1], vertical_alignment="bottom")
    a.text_input("Label (your name for this node)", key=key, max_chars=MAX_LABEL_CHARS,
                 placeholder=auto or "no automatic label",
                 help="Shown on the graph and kept in the circuit file and every export. Leave blank for the "
                      "automatic label" + (f" ({auto})." if auto else "."))
    b.button("Rename", key=f"rename_btn_{node_id}", on_click=_on_rename, args=(node_id,))
    _flash("_flash_rename")


def supernode_section(shown: Shown) -> None:
    """Group nodes into named supernodes (drawn as one hexagon each; kept in the file and the exports)."""
    from sfc_core.annotations import MAX_LABEL_CHARS, supernodes

    G = shown.G
    with st.container(border=True):
        st.markdown(f"#### Supernodes ({len(supernodes(G))})")
        st.caption("Group nodes that do one job into a named supernode: it is drawn as one hexagon (effect = the "
                   "sum of its members'), and kept in the circuit file, GraphML, CSV and Neuronpedia exports.")
        node_ids = S.ranked_node_ids(G)
        ss["supernode_members"] = [n for n in ss.get("supernode_members") or [] if n in node_ids]
        st.multiselect("Nodes", node_ids, key="supernode_members", format_func=lambda n: S.node_label(G, n))
        a, b = st.columns([4, 1], vertical_alignment="bottom")
        a.text_input("Supernode name", key="supernode_name", max_chars=MAX_LABEL_CHARS)
        b.button("Make supernode", key="add_supernode", on_click=_on_add_supernode)
        _flash("_flash_supernode")
        for i, group in enumerate(supernodes(G)):
            a, b = st.columns([4, 1], vertical_alignment="center")
            a.markdown(f"**{group['name']}**: {len(group['nodes'])} nodes — "
                       + ", ".join(f"`{n}`" for n in group["nodes"][:4]) + (" …" if len(group["nodes"]) > 4 else ""))
            b.button("Dissolve", key=f"dissolve_{i}", on_click=_on_remove_supernode, args=(group["name"],))


def scores_section(m, sae_dict: dict, shown: Shown, pp: Pairs, ablation: str) -> str:
    """**3 · Scores**: faithfulness / completeness of the shown circuit and its curve (cached per circuit and
    ablation). Returns the scores' cache key."""
    G = shown.G
    st.header("3 · Scores")
    st.caption("Faithfulness (m(C) − m(∅)) / (m(M) − m(∅)): how much of the model's metric the circuit alone "
               "recovers when every other node is ablated (1 = all). Completeness: the same for the complement "
               "(lower is better). The curve scores the top-n nodes by |effect| against random circuits.")
    score_key = S.input_key(view=shown.view,
                            key=ss.get("current_key") if shown.view == "discovery" else ss.get("uploaded_name"),
                            nodes=sorted(G.nodes), ablation=ablation)
    score_cache = ss.setdefault("scores", {})
    if st.button("Compute faithfulness and completeness", key="compute_scores"):
        with ui.guard("Scoring the circuit"):
            from sfc_core.discovery import evaluate

            eval_runs = shown.runs
            if eval_runs is None:
                if not pp.pairs:
                    raise InputError(f"scoring needs prompt pairs: {pp.error or 'the table is empty'}")
                eval_runs = ui.runs_for(m, sae_dict, pp.pairs, S.circuit_hooks(G))
            with st.spinner("Ablating everything outside the circuit…"):
                t0 = time.perf_counter()
                res = evaluate(eval_runs, G, sizes=S.curve_sizes(len(S.inner_node_ids(G))), ablation=ablation)
                res["seconds"] = time.perf_counter() - t0
            score_cache[score_key] = res
    res = score_cache.get(score_key)
    if res is not None:
        from sfc_core.viz import curve_figure

        G.graph["scores"] = {"faithfulness": res.get("faithfulness"), "completeness": res.get("completeness"),
                             "ablation": res.get("ablation")}
        a, b, c, e = st.columns(4)
        fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
        a.metric("faithfulness", fmt(res.get("faithfulness")))
        b.metric("completeness", fmt(res.get("completeness")))
        c.metric("m(full model)", fmt(res.get("m_full")))
        e.metric("m(all ablated)", fmt(res.get("m_empty")))
        if res.get("curve"):
            st.plotly_chart(curve_figure({str(G.graph.get("method") or "circuit"): res["curve"]},
                                         title=f"faithfulness / completeness vs size ({ablation} ablation)"),
                            key="score_curve")
        st.caption(f"scored in {S.fmt_seconds(res.get('seconds', 0.0))}")
    return score_key


def export_section(shown: Shown, score_key: str) -> None:
    """**4 · Export**: circuit JSON, GraphML, CSVs, standalone HTML, Neuronpedia JSON, PNG/SVG."""
    from sfc_core.circuit import to_json
    from sfc_core.export import ExportError, safe_filename, to_csv, to_graphml, to_html, to_image, to_neuronpedia

    G, fig = shown.G, shown.fig
    st.header("4 · Export")
    meta = G.graph
    base = "sfc-{}-{}-{}-{}nodes".format(meta.get("model") or "model", meta.get("task") or "circuit",
                                          meta.get("method") or "", len(S.inner_node_ids(G)))
    # Every file is built when its button is clicked (callables), not on each slider move of the view.
    with ui.guard("Preparing the exports"):
        cols = st.columns(4)
        cols[0].download_button("Circuit JSON (sfc-circuit/2)",
                                lambda: json.dumps(to_json(G), indent=1, default=float).encode(),
                                file_name=safe_filename(base, "json"), mime="application/json", key="dl_json",
                                on_click="ignore")
        cols[1].download_button("GraphML", lambda: to_graphml(G), file_name=safe_filename(base, "graphml"),
                                mime="application/xml", key="dl_graphml", on_click="ignore")
        cols[2].download_button("Nodes CSV", lambda: to_csv(G)[0].encode(),
                                file_name=safe_filename(base + "-nodes", "csv"), mime="text/csv", key="dl_nodes",
                                on_click="ignore")
        cols[3].download_button("Edges CSV", lambda: to_csv(G)[1].encode(),
                                file_name=safe_filename(base + "-edges", "csv"), mime="text/csv", key="dl_edges",
                                on_click="ignore")
        cols = st.columns(4)
        cols[0].download_button("Standalone HTML", lambda: to_html(fig).encode(), file_name=safe_filename(base, "html"),
                                mime="text/html", key="dl_html", on_click="ignore")
        cols[1].download_button("Neuronpedia JSON", lambda: json.dumps(to_neuronpedia(G, slug=base), indent=1).encode(),
                                file_name=safe_filename(base + "-neuronpedia", "json"), mime="application/json",
                                key="dl_np", on_click="ignore")
        img_key = S.input_key(img=score_key, nodes=sorted(G.nodes), edges=G.number_of_edges())
        images = ss.setdefault("images", {})
        if cols[2].button("Render PNG and SVG", key="render_images"):
            try:
                with st.spinner("Rendering static images with Chromium…"):
                    images.clear()
                    images[img_key] = {"png": to_image(fig, "png"), "svg": to_image(fig, "svg")}
            except ExportError as exc:
                st.warning(f"PNG/SVG export is unavailable here: {exc}")
        if img_key in images:
            cols[2].download_button("PNG", images[img_key]["png"], file_name=safe_filename(base, "png"),
                                    mime="image/png", key="dl_png", on_click="ignore")
            cols[3].download_button("SVG", images[img_key]["svg"], file_name=safe_filename(base, "svg"),
                                    mime="image/svg+xml", key="dl_svg", on_click="ignore")


def main() -> None:
    ui.setup_page("Circuit explorer", controls=None)
    ss.setdefault("pairs_version", 0)
    ss.setdefault("view", None)
    m, sae_dict = header_section()
    opts = sidebar_options(sae_dict)
    pp = pairs_section(m, opts)
    input_key = find_section(m, sae_dict, opts, pp)
    circuit_view(m, sae_dict, opts, input_key, pp)


if __name__ == "__main__":
    main()
