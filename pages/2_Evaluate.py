"""Evaluate page: faithfulness / completeness curves of circuits, and a comparison of discovery methods."""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from pages._shared import display as S  # noqa: E402
from pages._shared import ui  # noqa: E402
from sfc_core import defaults  # noqa: E402
from sfc_core.errors import InputError, SFCError  # noqa: E402

ui.setup_page("Evaluate", "📈")
ss = st.session_state
st.title("Evaluate circuits")
st.markdown(
    "**Faithfulness** of a circuit C is `(m(C) − m(∅)) / (m(M) − m(∅))`: the metric with every node *outside* C "
    "ablated, relative to the full model M and to everything ablated (∅). **Completeness** is the same score of the "
    "complement of C — how much of the behaviour is left once C is removed (lower is better). Each curve ranks the "
    "nodes of one method by |effect| and scores its top-n for every size n, beside random circuits of the same "
    "sizes as a baseline.")

with ui.guard("Loading the model and SAEs") as g:
    m = ui.model()
    sae_dict = ui.saes()
if not g.ok:
    st.stop()
st.caption(ui.model_caption(m, sae_dict))

from sfc_core import methods as registry  # noqa: E402
from sfc_core.ablation import ABLATIONS  # noqa: E402
from sfc_core.discovery import DiscoverConfig, evaluate  # noqa: E402
from sfc_core.metrics import metric_label  # noqa: E402

pairs = None
with ui.guard("Reading the current prompt pairs") as gp:
    pairs = ui.current_pairs()
if not gp.ok:
    st.info("This page evaluates the explorer page's prompt-pair table: fix the rows named above there.")
if not pairs:
    st.stop()
st.caption(f"{len(pairs)} prompt pairs: the explorer's table (or the IOI preset). First clean prompt: "
           f"`{pairs[0].clean}`")

c1, c2, c3 = st.columns([2, 2, 1])
methods_all = list(registry.names())
methods = c1.multiselect("Methods to compare", methods_all, default=["atp"] if "atp" in methods_all else methods_all[:1],
                         key="eval_methods",
                         help="Each method finds node effects on the same pairs and SAEs; exact patching runs "
                              "one forward pass per node and is slow on a CPU.")
sizes_text = c2.text_input("Circuit sizes (nodes)", "5, 10, 20, 50, 100", key="eval_sizes")
ablation = c3.selectbox("Ablation", list(ABLATIONS), key="eval_ablation",
                        help=S.ablation_help(ABLATIONS, "What a node outside the circuit becomes:"))
hooks = st.multiselect("SAE hook points", list(sae_dict), default=list(sae_dict),
                       key=f"eval_hooks_{S.input_key(s=S.sae_signature(sae_dict))}")

# How pairs the tokenizer cannot patch as given are treated: the same controls, in the same words, as the
# explorer's sidebar (display.UI_CONTROLS), so a fix named in a message points at a control on this page too.
with st.sidebar:
    st.header("Prompt pairs")
    pair_options = {}
    for option in ("multi_token", "length_mismatch"):
        label, choices = S.UI_CONTROLS[option]
        pair_options[option] = st.selectbox(label, list(choices), format_func=choices.get, key=option)


def _config(method: str, sizes: list[int]) -> DiscoverConfig:
    """The discovery behind one curve: ``method``'s node effects on these pairs, top ``max(sizes)`` kept."""
    return DiscoverConfig(method=method, top_k=max(sizes), edges=False, budget=max(sizes), **pair_options)


curves = ss.setdefault("eval_curves", {})


def _compute() -> None:
    """Score every chosen method's curve on the current pairs (node effects cached per input) and remember
    which curves to show.

    Raises:
        SFCError: bad sizes, no method or hook point, pairs the options cannot use.
    """
    sizes = S.parse_sizes(sizes_text)
    if not methods:
        raise InputError("choose at least one method to evaluate")
    if not hooks:
        raise InputError("select at least one SAE hook point")
    sub = {h: sae_dict[h] for h in hooks}
    for method in methods:
        cfg = _config(method, sizes)
        key = ui.discovery_key(m, sub, pairs, cfg)
        d = ui.run_discovery(m, sub, pairs, cfg, key, label=f"Node effects with {method}")
        ss["eval_warnings"] = list(d.runs.batch.warnings)  # skipped / aligned pairs: the same for every method
        with st.spinner(f"Scoring the {method} curve…"):
            t0 = time.perf_counter()
            G = d.select(top_k=max(sizes))
            res = evaluate(d.runs, G, sizes=sizes, ablation=ablation)
            res["seconds"] = time.perf_counter() - t0
        curves[S.input_key(k=key, sizes=sizes, ablation=ablation)] = (method, sizes, ablation, res)
    ss["eval_shown"] = [S.input_key(k=ui.discovery_key(m, sub, pairs, _config(mm, sizes)), sizes=sizes,
                                    ablation=ablation) for mm in methods]


if st.button("Compute curves", type="primary", key="eval_run"):
    with ui.guard("Evaluating"):
        try:
            _compute()
        except SFCError as exc:
            # A pair error's fix names a control of this page's sidebar: word it as that control.
            st.error(S.screen_message(exc), icon="🚫")

shown = [curves[k] for k in ss.get("eval_shown", []) if k in curves]
if shown:
    from sfc_core.viz import curve_figure

    fig = curve_figure({method: res["curve"] for method, _, _, res in shown},
                       title=f"faithfulness / completeness vs circuit size ({shown[0][2]} ablation)")
    st.plotly_chart(fig, key="eval_curve")
    for w in ss.get("eval_warnings", [])[:6]:
        st.warning(S.screen_message(w))
    rows = []
    for method, sizes, abl, res in shown:
        c = res["curve"]
        for i, n in enumerate(c["sizes"]):
            rows.append({"method": method, "size": n, "faithfulness": c["faithfulness"][i],
                         "completeness": c["completeness"][i], "random faithfulness": c["random_faithfulness"][i],
                         "random completeness": c["random_completeness"][i]})
    score = st.column_config.NumberColumn(format="%.3f")
    st.dataframe(pd.DataFrame(rows), hide_index=True,
                 column_config={k: score for k in ("faithfulness", "completeness", "random faithfulness",
                                                   "random completeness")})
    first = shown[0][3]["curve"]
    st.caption(S.baseline_sentence(first["m_full"], first["m_empty"], metric_label("logit_diff", long=True)))
    for method, _, _, res in shown:
        c = res["curve"]
        st.markdown(S.curve_sentence(method, c.get("n_nodes") or c["sizes"], c["faithfulness"],
                                     c.get("random_faithfulness")))
    best = max((f for _, _, _, res in shown for f in res["curve"]["faithfulness"] if f is not None), default=None)
    if best is not None and best < defaults.APP_LOW_FAITHFULNESS:
        st.info(f"Faithfulness stays below {defaults.APP_LOW_FAITHFULNESS} at these sizes (best {S.num(best)}). When "
                "the answer is a token that changes from pair to pair (IOI's names), every SAE depth spreads it over "
                "many latents, so a faithful circuit needs hundreds of nodes: try larger sizes or the mask method.")
else:
    st.info("Choose methods and sizes, then click **Compute curves**.")

# ------------------------------------------------------------------ neurons vs features (issue 14 point 4)
st.divider()
st.subheader("Neurons vs features")
st.markdown(
    "The same engine with the model's own units as nodes beside the **SAE feature** circuit (latents and error "
    "nodes): **MLP neurons** (`blocks.L.mlp.hook_post` at the chosen SAE layers, no error node) and the **residual "
    "directions** at the SAEs' own hook points (d_model basis directions: the same cut as the features, so the same "
    "m(∅) and m(M)). All are ranked by |effect| on these pairs and scored by the ablation chosen above, each "
    "normalised by its own m(∅): the MLPs are not a cut of the model, so their m(∅) is their own. Marks et al. "
    "(2024, §4) find that features reach a given faithfulness with far fewer nodes than neurons.")
nc1, nc2 = st.columns([3, 1])
nvf_sizes_text = nc1.text_input("Circuit sizes (nodes)", "10, 100, 1000", key="nvf_sizes",
                                help="Sizes of the three curves; the node counts for faithfulness 0.5 and 0.8 are "
                                     "searched separately.")
nvf_method = nc2.selectbox("Attribution", ["atp", "ig"], key="nvf_method",
                           help="Node effects that rank every circuit (IG costs 10 passes per site).")
if st.button("Compare neurons and features", key="nvf_run"):
    with ui.guard("Comparing neurons and features"):
        try:
            from sfc_core.compare import neurons_vs_features
            from sfc_core.discovery import as_batch

            if not hooks:
                raise InputError("select at least one SAE hook point")
            nvf_sizes = S.parse_sizes(nvf_sizes_text)
            with st.spinner("Attributing and scoring neuron, residual and feature circuits (up to minutes per "
                            "side on a CPU for 20 pairs)…"):
                batch = as_batch(m, pairs, _config(nvf_method, nvf_sizes))
                ss["nvf_result"] = neurons_vs_features(m, {h: sae_dict[h] for h in hooks}, batch, sizes=nvf_sizes,
                                                       method=nvf_method, ablation=ablation,
                                                       units=("neurons", "resid", "features"))
        except SFCError as exc:
            st.error(S.screen_message(exc), icon="🚫")

nvf = ss.get("nvf_result")
if nvf:
    from sfc_core.viz import curve_figure

    names = {"resid": "residual directions", "neurons": "MLP neurons", "features": "SAE features"}
    title = f"neurons vs features: faithfulness / completeness vs nodes ({nvf['method']}, {nvf['ablation']} ablation)"
    st.plotly_chart(curve_figure({names.get(k, k): c for k, c in nvf["curves"].items()}, title=title),
                    key="nvf_curve")
    rows = []
    for unit, curve in nvf["curves"].items():
        row = {"nodes": {"resid": "residual directions"}.get(unit, unit)}
        for t in nvf["targets"]:  # None (an empty cell): no top-n reaches the target
            row[f"nodes for faithfulness {t:g}"] = nvf["n_for"][unit][str(t)]
        rows.append({**row, "candidates": nvf["pool"][unit], "m(M)": curve["m_full"], "m(∅)": curve["m_empty"],
                     "seconds": nvf["seconds"][unit]})
    st.dataframe(pd.DataFrame(rows), hide_index=True,
                 column_config={k: st.column_config.NumberColumn(format="%.3f") for k in ("m(M)", "m(∅)")})
    st.caption(f"{nvf['n_pairs']} pairs; MLP neurons at layers {', '.join(map(str, nvf['layers']))} (d_mlp "
               "each); residual directions (d_model each) and features at the SAE hook points of the same layers. "
               "An empty count: no top-n of the ranking reaches that faithfulness.")

# ------------------------------------------------------------------ PIE's protocol (issue 15 point 3)
st.divider()
st.subheader("PIE's protocol on transcoder features")
st.markdown(
    "PIE (Prune → Interpret → Evaluate) scores every **feature occurrence** (layer, position, feature) of each prompt "
    "by FAP, gradient × the change of its write into the MLP output, keeps the top **K** per prompt and removes "
    "the rest by patching their writes to their corrupted-prompt values (or zero), the MLPs' reconstruction "
    "errors kept. **Fidelity** is `1 − min(KL, 1)` of the last token's distribution against the clean run; the "
    "dotted lines are the share of prompts whose top prediction changed. FAP-Synergy re-ranks the occurrences "
    "near the budget boundary by measured pairwise synergy; random keeps K occurrences at random.")
from sfc_core.pie import MODES as PIE_MODES  # noqa: E402

pc1, pc2, pc3 = st.columns([2, 1, 1])
pie_budgets_text = pc1.text_input("Budgets K (occurrences per prompt)", "10, 25, 50, 75, 100", key="pie_budgets")
pie_mode = pc2.selectbox("Removal", list(PIE_MODES), key="pie_mode",
                         help="corrupted: removed writes take their corrupted-prompt values; zero: removed writes are 0")
pie_synergy = pc3.checkbox("FAP-Synergy", value=False, key="pie_synergy",
                           help="Hundreds of patched forward passes per prompt and budget: minutes on a CPU.")
pie_upload = st.file_uploader("…or open a report written by `sfc compare --features transcoders --protocol pie`",
                              key="pie_upload")
if st.button("Run PIE on these pairs", key="pie_run"):
    with ui.guard("Running PIE's protocol on the bundled transcoders"):
        try:
            from sfc_core.attribution import prepare_runs
            from sfc_core.discovery import as_batch
            from sfc_core.pie import pie_compare

            pie_budgets = S.parse_sizes(pie_budgets_text)
            with st.spinner("Attributing transcoder features and patching them out (a minute or more on a CPU)…"):
                runs = prepare_runs(m, ui.transcoders(), as_batch(m, pairs, _config("atp", pie_budgets)))
                chosen = ("fap", "fap-synergy", "random") if pie_synergy else ("fap", "random")
                ss["pie_result"] = pie_compare(runs, pie_budgets, pie_mode, methods=chosen)
        except SFCError as exc:
            st.error(S.screen_message(exc), icon="🚫")
if pie_upload is not None:
    with ui.guard("Reading the PIE report"):
        try:
            from sfc_core.jsonio import load_json
            from sfc_core.pie import check_report

            ss["pie_result"] = check_report(load_json(pie_upload.getvalue(), "PIE report"))
        except SFCError as exc:
            st.error(S.screen_message(exc), icon="🚫")

pie_report = ss.get("pie_result")
if pie_report:
    from sfc_core.pie import seed_claims
    from sfc_core.viz import pie_figure

    st.plotly_chart(pie_figure(pie_report), key="pie_curve")
    table = [{"method": name, "K": k, "KL (nats)": row["kl"][j], "prediction change": row["pred_change"][j],
              "fidelity": row["fidelity"][j]}
             for name, row in pie_report["methods"].items() for j, k in enumerate(row["budgets"])]
    st.dataframe(pd.DataFrame(table), hide_index=True,
                 column_config={k: st.column_config.NumberColumn(format="%.3f")
                                for k in ("KL (nats)", "prediction change", "fidelity")})
    claims = seed_claims(pie_report)
    if claims["synergy50_reaches_fap75"] is not None:
        st.write(f"FAP-Synergy at K = 50: KL {claims['synergy50_kl']:.3f} nats; FAP at K = 75: "
                 f"{claims['fap75_kl']:.3f} — PIE's claim (Synergy@50 reaches FAP@75) "
                 f"{'holds' if claims['synergy50_reaches_fap75'] else 'does not hold'} here.")
    if claims["random_k_to_match_fap100"]:
        st.write(f"Random occurrences match FAP at K = 100 from K = {claims['random_k_to_match_fap100']} "
                 f"({claims['random_ratio']:.0f}×; PIE-Pipeline reports ~40×).")
    elif pie_report.get("random_to_match"):
        st.write("Random occurrences never matched FAP at K = 100 within these prompts' occurrences.")
    st.caption(f"{pie_report.get('n_pairs', '?')} prompts; occurrences per prompt "
               f"{(pie_report.get('occurrences') or {}).get('min', '?')}–"
               f"{(pie_report.get('occurrences') or {}).get('max', '?')}; removal: {pie_report.get('mode')}.")
