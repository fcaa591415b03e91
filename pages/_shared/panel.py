"""The feature panel: top activating examples, activation histogram, logit effects, ablation, steering.

Used by the explorer (for a clicked / picked node) and by the Feature page (any hook point + id).
"""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from . import display as S
from . import ui


def _index(m, loaded):
    from sfc_core.features import feature_index_for

    if getattr(loaded, "source", None) == "bundled":
        return feature_index_for(m, loaded)
    with st.spinner("Indexing this SAE over the held-out corpus (once per process)…"):
        return feature_index_for(m, loaded, ui.corpus_tokens())


def logit_token_lookup(m, sae_dict: dict):
    """``callable(hook, feature) -> [token strings]`` (top promoted tokens) for graph hover labels."""
    from sfc_core.features import bundled_lookup

    return bundled_lookup(sae_dict, lambda index, f: [m.tokenizer.decode([i]) for i, _ in
                                                      index.logit_effects(f)["top"][:3]])


def flag_lookup(sae_dict: dict):
    """``callable(hook, feature) -> [flags]``: degenerate-latent flags of bundled SAEs' latents (else ``[]``)."""
    from sfc_core.features import bundled_lookup

    return bundled_lookup(sae_dict, lambda index, f: index.flags(f), [])


def label_section(loaded, feature: int) -> None:
    """The latent's automatic label and description (bundled SAEs' index; how they are made: README)."""
    if getattr(loaded, "source", None) != "bundled":
        return
    from sfc_core.feature_index import load_feature_index

    with ui.guard("Reading the feature's label", warn=True):
        index = load_feature_index(loaded.hook_name)
        label, text = index.label(int(feature)), index.description(int(feature))
        if label or text:
            st.markdown(f"**Automatic label:** `{(label or '—').replace('`', 'ˋ')}`")
            st.text(text)  # plain text: token strings hold markdown characters


def flags_section(m, loaded, feature: int) -> None:
    """A warning when the latent looks like an artefact rather than a feature (bundled SAEs' index)."""
    if getattr(loaded, "source", None) != "bundled":
        return
    from sfc_core.feature_index import FLAG_TEXT, load_feature_index

    with ui.guard("Checking the latent", warn=True):
        flags = load_feature_index(loaded.hook_name).flags(int(feature))
        if flags:
            st.warning("Degenerate latent — " + "; ".join(f"**{f}**: {FLAG_TEXT[f]}" for f in flags), icon="⚠️")


def examples_section(m, loaded, feature: int, n: int = 8) -> dict | None:
    """**Top activating examples** and the activation histogram; returns the index stats (or None)."""
    st.markdown("#### Top activating examples")
    index = None
    with ui.guard("Loading the feature index"):
        index = _index(m, loaded)
    if index is None:
        return None
    examples = []
    with ui.guard("Reading the top examples"):
        examples = index.top_examples(int(feature), n=n)
    stats = {"density": None, "max": None}
    if not examples:
        st.info("This feature never fired on the held-out corpus (a dead feature): no examples to show.")
    else:
        top = max(e.max_activation for e in examples) or 1.0
        stats["max"] = top
        st.caption(f"{len(examples)} held-out contexts where the feature fires most, strongest first; "
                   "background ∝ activation (max in this list = {:.3g}); the max token is underlined.".format(top))
        for e in examples:
            toks = [m.tokenizer.decode([t]) for t in e.tokens]
            st.markdown(S.highlight_html(toks, e.activations, top, e.max_index)
                        + f'<div style="font-size:0.75rem;color:#666;margin:-0.2rem 0 0.4rem 0">max {e.max_activation:.3g}'
                          f" · sequence {e.sequence}, position {e.position}</div>",
                        unsafe_allow_html=True)
    st.markdown("#### Activation histogram")
    with ui.guard("Reading the activation histogram"):
        counts, edges = index.histogram(int(feature))
        density = index.density(int(feature))
        stats["density"] = density
        if sum(counts) == 0:
            st.caption(f"No non-zero activations (density {density:.2%}).")
        else:
            mids = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
            fig = go.Figure(go.Bar(x=mids, y=counts, width=[(b - a) for a, b in zip(edges[:-1], edges[1:])],
                                   marker_color="#ff7f0e"))
            fig.update_layout(height=220, margin={"l": 10, "r": 10, "t": 10, "b": 30}, template="plotly_white",
                              xaxis_title="activation (non-zero)", yaxis_title="tokens")
            st.plotly_chart(fig, key=f"hist_{loaded.hook_name}_{feature}")
            st.caption(f"Density: active on {density:.3%} of held-out tokens.")
    return stats


def logit_section(m, loaded, feature: int) -> None:
    st.markdown("#### Logit effects")
    st.caption("Tokens the feature's decoder direction promotes / suppresses directly through the unembedding "
               "(logits per unit of activation, through the final norm's weight at unit norm scale).")
    with ui.guard("Computing logit effects"):
        if getattr(loaded, "source", None) == "bundled":
            from sfc_core.feature_index import load_feature_index

            eff = load_feature_index(loaded.hook_name).logit_effects(int(feature))
            dec = lambda i: m.tokenizer.decode([int(i)])  # noqa: E731
        else:
            from sfc_core.features import logit_effect_tokens

            eff = logit_effect_tokens(m.tokenizer, loaded.sae, m, int(feature))
            dec = None
        c1, c2 = st.columns(2)
        c1.markdown("promoted")
        c1.dataframe(S.logit_table(eff["top"], dec), hide_index=True)
        c2.markdown("suppressed")
        c2.dataframe(S.logit_table(eff["bottom"], dec), hide_index=True)


def ablation_section(runs, loaded, feature: int, key: str, default_kind: str = "zero") -> None:
    """**Ablation**: ablate the feature on the current pairs (any kind of :mod:`sfc_core.ablation`); metric
    before → after."""
    from sfc_core.ablation import ABLATIONS
    from sfc_core.features import ablate_feature

    st.markdown("#### Ablation")
    if runs is None:
        st.info("No prompt pairs have been run yet: find a circuit first (or fix the pairs table).")
        return
    kinds = list(ABLATIONS)
    kind = st.radio("Ablate to", kinds, index=kinds.index(default_kind) if default_kind in kinds else 0,
                    horizontal=True, key=f"{key}_abl_kind",
                    help=S.ablation_help(kinds, "What the feature becomes at every real position of the clean "
                                                "prompts:", "Everything downstream is recomputed."))
    hooks = [s.hook_name for s in runs.sites]
    if loaded.hook_name not in hooks:
        st.info(f"The current runs have no SAE at {loaded.hook_name}.")
        return
    if hasattr(runs, "head"):  # pairs streamed in batches (sfc_core.batching): the table shows the first batch
        st.caption(f"On the first {runs.head().n} of {runs.n} pairs: the pairs run in batches that fit the "
                   "memory budget, and this table shows one batch.")
        runs = runs.head()
    cache = ui.panel_cache()
    ck = ("ablate", id(runs), loaded.hook_name, int(feature), kind)
    with ui.guard("Ablating the feature"):
        if ck not in cache:
            cache[ck] = ablate_feature(runs, hooks.index(loaded.hook_name), int(feature), kind)
        res = cache[ck]
        st.markdown(f"**{S.ablation_summary(res)}**")
        # Stacked, not side by side, and the numbers first in narrow columns: the panel often sits in a narrow
        # column of the explorer, where a wide prompt column used to push before / after / change off screen.
        value, delta = {"width": "small", "format": "%.3f"}, {"width": "small", "format": "%+.3f"}
        st.dataframe(S.ablation_table(res, runs.batch.pairs), hide_index=True, column_config={
            "pair": st.column_config.TextColumn("pair", width="small", pinned=True),
            "before": st.column_config.NumberColumn("before", help="metric on the clean prompt", **value),
            "after": st.column_config.NumberColumn("after", help="metric with the feature ablated", **value),
            "change": st.column_config.NumberColumn("change", help="after − before", **delta),
            "prompt": st.column_config.TextColumn("clean prompt", width="large"),
        })
        st.caption("Next-token log-prob changes at the last position (Δ in nats, mean over pairs)")
        st.dataframe(S.token_change_table(res), hide_index=True, column_config={
            "Δ up": st.column_config.NumberColumn("Δ up", **delta),
            "Δ down": st.column_config.NumberColumn("Δ down", **delta),
        })


def steering_section(m, loaded, feature: int, key: str, default_prompt: str, default_alpha: float) -> None:
    """**Steering**: add α × decoder direction at the hook point; top-10 before/after and continuations."""
    from sfc_core.features import MAX_STEERING_ALPHA, check_alpha, steer

    st.markdown("#### Steering")
    st.caption("Adds α × the feature's decoder direction to the residual stream at its hook point, at every "
               f"position (α in units of the feature's activation, |α| ≤ {MAX_STEERING_ALPHA:g}).")
    c1, c2 = st.columns([1, 3])
    alpha_text = c1.text_input("α (steering strength)", value=f"{default_alpha:g}", key=f"{key}_alpha",
                               help="A number; negative values push the other way. NaN, inf and "
                                    f"|α| > {MAX_STEERING_ALPHA:g} are refused.")
    prompt = c2.text_input("Prompt", value=default_prompt, key=f"{key}_prompt")
    n_new = st.slider("Tokens to generate", 5, 40, 12, key=f"{key}_ntok")
    cache = ui.panel_cache()
    ck = ("steer", id(m), loaded.hook_name, int(feature))
    if st.button("Steer", key=f"{key}_steer"):
        with ui.guard("Steering"):
            alpha = check_alpha(str(alpha_text).strip().replace("−", "-"))
            with st.spinner("Generating with and without steering…"):
                cache[ck] = steer(m, loaded, int(feature), alpha, prompt, max_new_tokens=int(n_new))
    res = cache.get(ck)
    if res is not None:
        st.markdown(f"α = {res['alpha']:g}")
        st.dataframe(S.steering_table(res), hide_index=True)
        st.markdown("**Greedy continuation without steering:** " + _quote(res["continuation_before"]))
        st.markdown(f"**With α = {res['alpha']:g}:** " + _quote(res["continuation_after"]))


def _quote(text: str) -> str:
    return f"`{S.token_text(text).replace('`', 'ˋ') or ' '}`"


def feature_panel(m, loaded, feature: int, runs=None, key: str = "panel", default_prompt: str = "",
                  ablation_kind: str = "zero", node: dict | None = None) -> None:
    """The whole panel of one SAE feature (``loaded`` = its :class:`LoadedSAE`)."""
    from sfc_core.features import check_feature

    with ui.guard("Checking the feature") as g:
        feature = check_feature(loaded.sae, feature)
    if not g.ok:
        return
    st.subheader(f"Feature {feature} at {loaded.hook_name}")
    # two metrics per row: the panel sits in a narrow column beside the explorer's graph
    figures = [("layer", loaded.layer), ("SAE width", loaded.d_sae)]
    if node is not None and node.get("effect") is not None:
        figures += [("effect (IE)", f"{node['effect']:+.4g}"), ("activation", f"{(node.get('activation') or 0.0):.4g}")]
    for i in range(0, len(figures), 2):
        for col, (label, value) in zip(st.columns(2), figures[i:i + 2]):
            col.metric(label, value)
    url = S.neuronpedia_url(getattr(loaded, "neuronpedia_id", None), feature)
    if url:
        st.markdown(f"[Open this feature on Neuronpedia ↗]({url})")
    else:
        st.caption(f"SAE source: {loaded.source} (no Neuronpedia page for it).")
    label_section(loaded, feature)
    flags_section(m, loaded, feature)
    stats = examples_section(m, loaded, feature)
    logit_section(m, loaded, feature)
    ablation_section(runs, loaded, feature, key, ablation_kind)
    top = (stats or {}).get("max") or 5.0
    steering_section(m, loaded, feature, key, default_prompt, default_alpha=round(2.0 * float(top), 1))


def special_node_panel(info: dict) -> None:
    """Panel of an error node (ε) or of the embed / metric end-points."""
    if info["kind"] == "error":
        st.subheader(f"Error node ε at {info['hook_name']}")
        st.markdown("ε is the SAE's reconstruction error at this hook point (x − x̂): everything the SAE's features "
                    "do not explain. It stays in the forward pass so the spliced model equals the original; a large "
                    "|effect| here means part of the behaviour runs through directions the SAE has not learned.")
        if info.get("effect") is not None:
            st.metric("effect (IE)", f"{info['effect']:+.4g}")
    elif info["kind"] == "embed":
        st.subheader("Embedding")
        st.markdown("The token (and position) embeddings: where every upstream edge starts.")
    else:
        st.subheader("Metric")
        st.markdown("The logit difference (answer − wrong answer) at the last position: where edges end.")
