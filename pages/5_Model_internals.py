"""Model internals page: causal tracing, logit lens, head patching, attention patterns and path patching on the
current prompt pairs (no SAEs needed)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from pages._shared import display as S  # noqa: E402
from pages._shared import state, ui  # noqa: E402
from sfc_core import defaults  # noqa: E402

ui.setup_page("Model internals", "🧠")
ss = st.session_state
st.title("Model internals")
st.caption("Where the model computes the answer, without SAEs: patch activations between the clean and the "
           "corrupted prompt by layer and position (causal tracing), read every layer through the unembedding "
           "(logit lens), and patch attention heads and the paths between them. Metric: logit difference "
           "answer − wrong answer at the last position, mean over pairs.")

with ui.guard("Loading the model") as g:
    m = ui.model()
if not g.ok:
    st.stop()

batch = None
with ui.guard("Preparing the current prompt pairs"):
    from sfc_core.pairs import tokenize_pairs

    pairs = ui.current_pairs()
    options = state.pair_options(ss)
    batch = tokenize_pairs(m, pairs, **options)
if batch is None:
    st.stop()
for w in batch.warnings:
    st.warning(S.screen_message(w, controls=()))
st.caption(f"{batch.n} prompt pairs from the explorer (its table or task preset); first clean prompt: "
           f"“{batch.pairs[0].clean}” → {batch.pairs[0].answer!r} vs {batch.pairs[0].wrong_answer!r}.")

cache = ss.setdefault("internals_cache", {})
pairs_key = [p.to_record() for p in batch.pairs]


def cached(kind: str, fn, **params):
    """The result of ``fn()`` for these inputs, computed once per session (keyed by model, pairs and params)."""
    key = S.input_key(kind=kind, model=m.cfg.model_name, pairs=pairs_key, options=options, **params)
    if key not in cache:
        cache[key] = fn()
        while len(cache) > 12:
            cache.pop(next(iter(cache)))
    return cache[key]


def peek(kind: str, **params):
    """The cached result for these inputs, or None."""
    return cache.get(S.input_key(kind=kind, model=m.cfg.model_name, pairs=pairs_key, options=options, **params))


def parse_layers(text: str) -> list[int] | None:
    from sfc_core.errors import InputError

    text = (text or "").strip()
    if text in ("", "all"):
        return None
    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise InputError(f"layers are comma-separated numbers or 'all', not '{text}'") from None


def progress_bar(label: str):
    bar = st.progress(0.0, text=label)
    return lambda stage, frac: bar.progress(min(max(float(frac), 0.0), 1.0), text=f"{label}: {stage}")


tab_trace, tab_lens, tab_heads, tab_path = st.tabs(["Causal tracing", "Logit lens", "Attention heads",
                                                     "Path patching"])

# ------------------------------------------------------------------ causal tracing
with tab_trace:
    from sfc_core import tracing

    st.markdown("Each cell is a real forward pass: one activation (residual stream entering the layer, attention "
                "output or MLP output) at one layer and position is copied from one run into the other. "
                "**Denoising** copies clean into corrupted (0 = corrupted metric, 1 = clean metric); **noising** "
                "copies corrupted into clean (0 = clean metric, 1 = corrupted metric). Positions before the first "
                "token where the prompts differ hold identical activations (0 by construction).")
    c1, c2, c3 = st.columns(3)
    direction = c1.radio("Direction", ["denoise", "noise"], horizontal=True, key="internals_direction",
                         format_func=lambda d: "denoising (clean → corrupted)" if d == "denoise"
                         else "noising (corrupted → clean)")
    group_rule = c2.radio("Pairs of several templates", ["largest", "refuse"], horizontal=True,
                          key="internals_group", help="Positions mean the same thing only within one template and "
                          "token length: keep the largest such group of pairs, or refuse.",
                          format_func=lambda v: "use the largest group" if v == "largest" else "refuse")
    layers_text = c3.text_input("Layers", "all", key="internals_layers", help="'all' or e.g. 20,25,29")
    params = dict(direction=direction, group=group_rule, layers=layers_text)
    if st.button("Compute causal tracing", key="run_trace", type="primary"):
        with ui.guard("Causal tracing"):
            layers = parse_layers(layers_text)
            cached("trace", lambda: tracing.causal_trace(m, batch, direction=direction, layers=layers,
                                                         template_group=group_rule,
                                                         progress=progress_bar("Causal tracing")), **params)
    result = peek("trace", **params)
    if result is not None:
        for w in result.warnings[len(batch.warnings):]:
            st.info(str(w))
        st.caption(f"{result.m_clean.shape[0]} pairs · m(clean) {float(result.m_clean.mean()):.3f}, "
                   f"m(corrupted) {float(result.m_corr.mean()):.3f} · {result.rows_run} patched runs in "
                   f"{S.fmt_seconds(result.seconds)}. Click a cell to open the nearest SAE site on the Feature page.")
        picked = None
        for site in tracing.SITES:
            event = st.plotly_chart(tracing.heatmap(result, site), key=f"trace_fig_{site}", on_select="rerun",
                                    selection_mode="points", width="stretch")
            points = (getattr(event, "selection", None) or {}).get("points", []) if event else []
            if points:
                picked = (site, points[0])
        if picked is not None:
            site, point = picked
            layer = int(str(point.get("y", "L0")).lstrip("L"))
            position = int(str(point.get("x", "0:")).split(":")[0])
            hook, sae_layer = tracing.nearest_sae_hook(site, layer, defaults.BUNDLED_LAYERS)
            st.success(f"{tracing.SITES[site].format(L=layer)} at position {position} "
                       f"({result.tokens[position]!r}): the nearest bundled SAE site is **{hook}** (layer "
                       f"{sae_layer}), position {position}.")
            ss["feature_hook"] = hook
            st.page_link("pages/1_Feature.py", label=f"Inspect features at {hook}", icon="🔎")

# ------------------------------------------------------------------ logit lens
with tab_lens:
    from sfc_core import lens

    st.markdown("The residual stream entering every layer (and the final one) read through the final norm and the "
                "unembedding, as if the model stopped there: the answer − wrong-answer logit difference per "
                "layer and position; hover for the top tokens. The last row is the model's own output.")
    c1, c2, c3 = st.columns(3)
    lens_run = c1.radio("Prompts", ["clean", "corrupted"], horizontal=True, key="lens_run")
    lens_pair = c2.number_input("Pair (for the top tokens)", 0, batch.n - 1, 0, key="lens_pair")
    lens_view = c3.radio("Values", ["this pair", "mean of pairs"], horizontal=True, key="lens_view")
    lparams = dict(run=lens_run, pair=int(lens_pair))
    if st.button("Compute logit lens", key="run_lens", type="primary"):
        with ui.guard("Logit lens"):
            cached("lens", lambda: lens.logit_lens(m, batch, run=lens_run, pair=int(lens_pair), top_k=5), **lparams)
    lres = peek("lens", **lparams)
    if lres is not None:
        st.plotly_chart(lens.heatmap(lres, per_pair=lens_view == "this pair"), key="lens_fig",
                        width="stretch")
        last = len(lres.tokens) - 1
        st.caption(f"Final-layer logit difference at the last position: "
                   f"{float(lres.logit_diff[lres.pair, -1, last]):.3f} (the model's own); "
                   f"computed in {S.fmt_seconds(lres.seconds)}.")

# ------------------------------------------------------------------ heads
with tab_heads:
    from sfc_core import heads

    st.markdown("**Head patching**: each head's output (`hook_z`) copied from the clean run into the corrupted "
                "one, one head at a time (denoising, normalised: 0 = corrupted, 1 = clean).")
    hpos = st.radio("Patch each head at", ["all", "last"], horizontal=True, key="heads_positions",
                    format_func=lambda v: "all positions" if v == "all" else "the last position only")
    if st.button("Compute head patching", key="run_heads", type="primary"):
        with ui.guard("Head patching"):
            cached("heads", lambda: heads.head_patching(m, batch, positions=hpos,
                                                        progress=progress_bar("Head patching")), positions=hpos)
    hres = peek("heads", positions=hpos)
    if hres is not None:
        st.plotly_chart(heads.heads_heatmap(hres), key="heads_fig", width="stretch")
        st.caption("Top heads: " + ", ".join(f"L{h['layer']}.H{h['head']} ({h['effect']:+.3f})"
                                              for h in hres.top_heads(5))
                   + f" · {S.fmt_seconds(hres.seconds)}")
    st.markdown("**Attention pattern** of one head on one clean prompt.")
    c1, c2, c3 = st.columns(3)
    pl = c1.number_input("Layer", 0, m.cfg.n_layers - 1, min(9, m.cfg.n_layers - 1), key="pattern_layer")
    ph = c2.number_input("Head", 0, m.cfg.n_heads - 1, 0, key="pattern_head")
    pp = c3.number_input("Pair", 0, batch.n - 1, 0, key="pattern_pair")
    if st.button("Show attention pattern", key="run_pattern"):
        with ui.guard("Attention pattern"):
            last = int(batch.last_pos[int(pp)])
            cached("pattern", lambda: heads.attention_pattern(m, batch.clean_tokens[int(pp), : last + 1], int(pl),
                                                              int(ph)), layer=int(pl), head=int(ph), pair=int(pp))
    pres = peek("pattern", layer=int(pl), head=int(ph), pair=int(pp))
    if pres is not None:
        st.plotly_chart(heads.pattern_heatmap(pres[0], pres[1], int(pl), int(ph)), key="pattern_fig",
                        width="stretch")

# ------------------------------------------------------------------ path patching
with tab_path:
    st.markdown("**Path patching** (Wang et al. 2022): the sender head's output takes its corrupted value, every "
                "other head stays frozen at its clean output, the receiver's query/key/value input is recomputed, "
                "and only that input is patched into a clean run (noising; normalised 0 = no effect, 1 = as the "
                "corrupted run). Denoising is the mirror image: clean sender, corrupted run (1 = as the clean "
                "run). Effect = change of the mean logit difference. Keys and values belong to a KV head shared by "
                f"{m.cfg.n_heads // heads.n_kv_heads(m)} query heads (grouped-query attention); the group's other "
                "heads keep their clean outputs, so only the receiver sees the patch.")
    c = st.columns(5)
    sl = c[0].number_input("Sender layer", 0, m.cfg.n_layers - 2, 0, key="path_sl")
    sh = c[1].number_input("Sender head", 0, m.cfg.n_heads - 1, 0, key="path_sh")
    rl = c[2].number_input("Receiver layer", 1, m.cfg.n_layers - 1, m.cfg.n_layers - 1, key="path_rl")
    rh = c[3].number_input("Receiver head", 0, m.cfg.n_heads - 1, 0, key="path_rh")
    ri = c[4].selectbox("Receiver input", ["q", "k", "v"], key="path_input")
    pdir = st.radio("Direction", ["noise", "denoise"], horizontal=True, key="path_direction",
                    format_func=lambda d: "noising (corrupted sender → clean run)" if d == "noise"
                    else "denoising (clean sender → corrupted run)")
    pparams = dict(sender=[int(sl), int(sh)], receiver=[int(rl), int(rh)], input=ri, direction=pdir)
    if st.button("Run path patching", key="run_path", type="primary"):
        with ui.guard("Path patching"):
            cached("path", lambda: heads.path_patch(m, batch, (int(sl), int(sh)), (int(rl), int(rh)), ri,
                                                              pdir), **pparams)
    pres = peek("path", **pparams)
    if pres is not None:
        c1, c2, c3 = st.columns(3)
        c1.metric("Effect on the logit difference", f"{pres.effect:+.3f}")
        base = pres.m_clean if pdir == "noise" else pres.m_corr
        c2.metric("Normalised (1 = as corrupted)" if pdir == "noise" else "Normalised (1 = as clean)",
                  f"{pres.normalised:.3f}")
        c3.metric(f"m({'clean' if pdir == 'noise' else 'corrupted'}) → m(patched)",
                  f"{float(base.mean()):.3f} → {float(pres.m_patched.mean()):.3f}")
