"""Tour: a guided walk through sparse feature circuits on the bundled model (IOI, then SVA).

Every step runs a small live computation (a few prompts, a few seconds on a CPU) and explains it.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from pages._shared import display as S  # noqa: E402
from pages._shared import panel, ui  # noqa: E402
from sfc_core import defaults  # noqa: E402
from sfc_core.annotations import attach_auto_labels  # noqa: E402
from sfc_core.features import auto_label_lookup  # noqa: E402
from sfc_core.model import is_bundled_model  # noqa: E402

ui.setup_page("Tour", "🧭")
ss = st.session_state
st.title("A guided tour of sparse feature circuits")

STEPS = [
    "1 · The model and a task",
    "2 · What an SAE feature is",
    "3 · What a prompt pair measures",
    "4 · Attribution patching",
    "5 · From nodes to a circuit",
    "6 · A second task: subject–verb agreement",
]
N_PAIRS = 4
cache = ss.setdefault("tour_cache", {})


def _go(delta: int) -> None:
    i = STEPS.index(ss.get("tour_step", STEPS[0]))
    ss["tour_step"] = STEPS[min(max(i + delta, 0), len(STEPS) - 1)]


with ui.guard("Loading the model and SAEs") as g:
    m = ui.model()
    sae_dict = ui.saes()
if not g.ok:
    st.stop()
if not is_bundled_model(m):
    st.info("The tour is written for the bundled model; it runs on the loaded one, but the explanations assume "
            "SmolLM2-135M.")

step = st.radio("Step", STEPS, key="tour_step", horizontal=True, label_visibility="collapsed")
nav = st.columns([1, 1, 6])
nav[0].button("← Back", on_click=_go, args=(-1,), disabled=step == STEPS[0], key="tour_back")
nav[1].button("Next →", on_click=_go, args=(1,), disabled=step == STEPS[-1], key="tour_next")


def _pairs(task: str):
    return ui.task_pairs(task, N_PAIRS)


def _next_tokens(prompt: str, k: int = 8) -> tuple[pd.DataFrame, list]:
    """The model's top ``k`` next tokens after ``prompt``: as a table, and as ``[(token, probability)]``."""
    from sfc_core.features import next_tokens

    top = next_tokens(m, prompt, k)
    return pd.DataFrame({"next token": [repr(tok) for tok, _ in top],
                         "probability": [round(p, 4) for _, p in top]}), top


def _discover(task: str, top_k: int, edges: bool, n: int = N_PAIRS):
    from sfc_core.discovery import DiscoverConfig

    pairs = ui.task_pairs(task, n)
    cfg = DiscoverConfig(method="atp", top_k=top_k, edges=edges)
    key = ui.discovery_key(m, sae_dict, pairs, cfg)
    return ui.run_discovery(m, sae_dict, pairs, cfg, key, label=f"AtP on {len(pairs)} {task.upper()} pairs")


def _effects(G) -> dict[str, float]:
    """Node id -> effect of a circuit's feature and error nodes (metric units)."""
    return {n: float(G.nodes[n].get("effect") or 0.0) for n in S.inner_node_ids(G)}


# ------------------------------------------------------------------ steps
if step == STEPS[0]:
    st.markdown(
        "We study **SmolLM2-135M-Instruct**, a 30-layer transformer, on *indirect object identification* (IOI): "
        "in *“When Mary and John went to the store, John gave a drink to”* the right next word is **Mary** — the "
        "name that is *not* repeated. Getting this right needs the model to find both names, notice which one "
        "repeats, and copy the other. Below, the model's own next-token distribution on one IOI prompt.")
    with ui.guard("Running the model"):
        pair = _pairs("ioi")[0]
        st.markdown(f"Prompt: `{pair.clean}`  → expected answer `{pair.answer}`")
        table, top = _next_tokens(pair.clean)
        st.dataframe(table, hide_index=True)
        st.markdown(S.next_token_sentence(top, pair.answer))
        st.caption("Computed live: one forward pass of the model.")

elif step == STEPS[1]:
    st.markdown(
        "The residual stream after a block is a 576-dimensional vector per token, and its coordinates mean "
        "nothing on their own. A **sparse autoencoder** (SAE) rewrites it as a sparse sum of learned directions: "
        "`x ≈ Σᵢ fᵢ(x) · dᵢ + b`, with only a few of its many **features** fᵢ active at once (a TopK SAE "
        "keeps exactly k). Each feature tends to mean one thing — a name, a plural noun, a closing quote — which we "
        "read off the texts where it fires most. What the SAE misses, `ε = x − x̂`, is the **error node**.")
    hooks = list(sae_dict)
    hook = st.selectbox("Hook point", hooks, index=len(hooks) // 2, key="tour_hook")
    with ui.guard("Encoding the prompt with the SAE"):
        from sfc_core.features import encode_prompt

        loaded = sae_dict[hook]
        pair = _pairs("ioi")[0]
        enc = encode_prompt(m, loaded, pair.clean)
        fve = enc["fve"]
        last = enc["features"][-1]
        active = int((last > 0).sum())
        top = last.topk(min(8, last.numel()))
        c = st.columns(3)
        c[0].metric("active features at the last token", active)
        c[1].metric("of", loaded.d_sae)
        c[2].metric("variance explained on this prompt", f"{fve:.1%}")
        st.markdown(S.sae_sentence(active, loaded.d_sae, fve, m.cfg.d_model))
        feats = [int(i) for i, v in zip(top.indices.tolist(), top.values.tolist()) if v > 0]
        st.dataframe(pd.DataFrame({"feature": feats, "activation": [round(float(last[i]), 3) for i in feats]}),
                     hide_index=True)
        if feats:
            pick = st.selectbox("Look at one of them", feats, key=f"tour_feat_{hook}")
            panel.examples_section(m, loaded, int(pick), n=5)
            panel.logit_section(m, loaded, int(pick))

elif step == STEPS[2]:
    st.markdown(
        "A circuit explains one **behaviour**, measured on **prompt pairs**. The *clean* prompt has the answer we "
        "care about; the *corrupted* prompt is the same template with the one change that flips it (here: which "
        "name repeats). The **metric** is the logit difference `m = logit[answer] − logit[wrong answer]` at the last "
        "token: positive on clean prompts, negative on corrupted ones. Everything later asks: *which internal "
        "pieces, when given their corrupted values, move m from the clean value toward the corrupted one?*")
    with ui.guard("Measuring the pairs"):
        from sfc_core.attribution import prepare_runs
        from sfc_core.pairs import tokenize_pairs

        pairs = _pairs("ioi")
        first = next(iter(sae_dict))
        runs = prepare_runs(m, {first: sae_dict[first]}, tokenize_pairs(m, pairs))
        df = pd.DataFrame({"clean": [p.clean for p in runs.batch.pairs],
                           "answer / wrong": [f"{p.answer!r} / {p.wrong_answer!r}" for p in runs.batch.pairs],
                           "m(clean)": [round(v, 3) for v in runs.m_clean.tolist()],
                           "m(corrupted)": [round(v, 3) for v in runs.m_corrupted.tolist()]})
        st.dataframe(df, hide_index=True)
        st.markdown(S.metric_sentence(runs.m_clean.tolist(), runs.m_corrupted.tolist()))

elif step == STEPS[3]:
    st.markdown(
        "The **indirect effect** of a node is the change of m when that node alone takes its corrupted value in "
        "the clean run. Measuring it exactly costs one forward pass per node — tens of thousands here. "
        "**Attribution patching** (AtP) approximates all of them at once with one backward pass: "
        "`IE ≈ ∇ₐm · (a_corr − a_clean)`, a first-order Taylor step. Below: AtP's top nodes on IOI, and the exact "
        "effect of the same nodes (computed live) to see how good the approximation is. Negative = the node carries "
        "the clean behaviour.")
    with ui.guard("Running attribution patching"):
        from sfc_core.discovery import verify

        d = _discover("ioi", 10, edges=False)
        G = d.graph
        ids = S.ranked_node_ids(G)
        ck = ("exact", id(d))
        if ck not in cache:
            with st.spinner("Exact patching of these nodes…"):
                cache[ck] = verify(d.runs, G)
        exact = {row["id"]: row["exact"] for row in cache[ck]["nodes"]}
        df = pd.DataFrame({"node": ids, "AtP effect": [round(G.nodes[n]["effect"], 4) for n in ids],
                           "exact effect": [round(exact[n], 4) for n in ids]})
        st.dataframe(df, hide_index=True)
        for sentence in S.atp_exact_sentences([(n, G.nodes[n]["effect"], exact[n]) for n in ids]):
            st.markdown(sentence)
        st.caption(f"AtP took {d.metadata['timings_s'].get('nodes', 0):.2f} s for every node of every SAE.")

elif step == STEPS[4]:
    st.markdown(
        "Keep the nodes with the largest |effect| and connect them: the **edge** u → d gets "
        "`∇_d m · ∂d/∂u · Δu`, how much of u's effect flows through d (a vector–Jacobian product through the blocks "
        "between their layers). Then check the circuit: **faithfulness** asks how much of m the circuit alone "
        "recovers when every other node is mean-ablated (1 = all of it, 0 = no better than ablating everything).")
    with ui.guard("Building the circuit"):
        from sfc_core.collapse import MAX_NODES, collapse
        from sfc_core.viz import circuit_figure

        d = _discover("ioi", 15, edges=True, n=ui.DEFAULT_N_PAIRS)
        small = d.select(top_k=15)
        s_small = d.scores(small, "mean")
        G = d.select(target_faithfulness=defaults.TARGET_FAITHFULNESS, ablation="mean")
        attach_auto_labels(G, auto_label_lookup(sae_dict))
        s_full, search = d.scores(G, "mean"), G.graph["target_search"]
        c = st.columns(3)
        c[0].metric("faithfulness of the top 15 nodes", S.num(s_small["faithfulness"]))
        c[1].metric(f"nodes to reach {search['target']:g}", search["n_nodes"])
        c[2].metric("their faithfulness", S.num(s_full["faithfulness"]))
        n_target = search["n_nodes"]
        st.markdown("**The top 15 nodes.** " + S.faithfulness_sentence(s_small["faithfulness"], 15)
                    + (" IOI is spread over many features." if (s_small["faithfulness"] or 0) < 0.5 else ""))
        lead = (f"**The smallest top-n reaching {search['target']:g}** (where the explorer starts): "
                if search["reached"] else
                f"**No top-n of the {search['pool']} nodes with an effect reaches {search['target']:g}**; the best: ")
        st.markdown(lead + S.faithfulness_sentence(s_full["faithfulness"], n_target)
                    + " Completeness " + S.completeness_sentence(s_full["completeness"], n_target))
        st.markdown(
            f"To stay readable, the graph draws the {MAX_NODES} largest and groups the rest of each layer into one "
            "grey “other k” circle; each feature carries its automatic label (the tokens it fires on, from "
            "held-out text), and ⚠ marks a latent that looks like an artefact. The faithfulness is always the "
            "whole circuit's.")
        drawn = collapse(G, MAX_NODES)
        st.plotly_chart(circuit_figure(drawn, S.feature_labels(G, panel.logit_token_lookup(m, sae_dict),
                                                                panel.flag_lookup(sae_dict)), height=520),
                        key="tour_graph")
        st.caption("On the main page: rename a node (its panel), group nodes into a named supernode, and export "
                   "the circuit with its labels (sfc-circuit/2, Neuronpedia JSON).")

elif step == STEPS[5]:
    st.markdown(
        "**Subject–verb agreement** (SVA): *“The keys to the cabinet”* → **are**, *“The key to the cabinet”* → **is**. "
        "The corrupted prompt changes the subject's number; the metric is the logit difference between the two verb "
        "forms. Compare its circuit with IOI's: which layers carry it, and do error nodes matter more?")
    with ui.guard("Building the SVA circuit"):
        from sfc_core.circuit import circuit_stats
        from sfc_core.viz import circuit_figure

        pairs = _pairs("sva")
        st.markdown(f"Example pair: `{pairs[0].clean}` → `{pairs[0].answer}` vs `{pairs[0].corrupted}` → "
                    f"`{pairs[0].wrong_answer}`")
        d = _discover("sva", 15, edges=True)
        st.plotly_chart(circuit_figure(d.graph, height=450), key="tour_sva_graph")
        stats = circuit_stats(d.graph)
        st.markdown("Nodes per layer: " + ", ".join(f"L{k}: {v}" for k, v in stats["nodes_per_layer"].items())
                    + f" · error nodes: {stats['error_nodes']}")
        st.markdown(S.layers_sentence(stats["nodes_per_layer"]) + " "
                    + S.error_nodes_sentence(_effects(d.graph), "SVA"))
        ioi = _discover("ioi", 10, edges=False).select(top_k=15)  # step 4's AtP run, re-selected: no recompute
        st.markdown("For comparison, IOI's top 15 nodes on the same SAEs: "
                    + S.layers_sentence(circuit_stats(ioi)["nodes_per_layer"]) + " "
                    + S.error_nodes_sentence(_effects(ioi), "IOI"))
        st.markdown(S.error_comparison_sentence(("SVA", _effects(d.graph)), ("IOI", _effects(ioi))))
    st.success("That's the tour. The explorer (main page) does all of this on your own prompt pairs, with "
               "every knob exposed; the Feature page inspects any feature.")
