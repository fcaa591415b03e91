"""Feature page: inspect any SAE feature by hook point and id (examples, logit effects, ablation, steering)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from pages._shared import display as S  # noqa: E402
from pages._shared import panel, ui  # noqa: E402
from sfc_core.errors import SFCError  # noqa: E402

#: What this page does with pairs the tokenizer cannot patch as given (it has no pair options of its own).
PAIRS_AS_GIVEN = ("The Feature page runs the pairs with the explorer's choices for such pairs: change them in the "
                  "explorer's sidebar, or edit those pairs in its table.")

ui.setup_page("Feature", "🔎")
ss = st.session_state
st.title("Inspect a feature")
st.caption("Any latent of any loaded SAE: where it fires on held-out text, which tokens it pushes, and what "
           "removing or amplifying it does on the current prompt pairs.")

with ui.guard("Loading the model and SAEs") as g:
    m = ui.model()
    sae_dict = ui.saes()
if not g.ok:
    st.stop()
st.caption(ui.model_caption(m, sae_dict))

hooks = list(sae_dict)
c1, c2 = st.columns([2, 1])
hook = c1.selectbox("Hook point", hooks, key="feature_hook",
                    format_func=lambda h: f"{h}  (L{sae_dict[h].layer}, d_sae {sae_dict[h].d_sae})")
loaded = sae_dict[hook]
default_feature = 0
if getattr(loaded, "source", None) == "bundled":
    with ui.guard("Loading the feature index", warn=True):
        from sfc_core.feature_index import load_feature_index

        default_feature = S.first_live_feature(load_feature_index(hook))
feature = c2.number_input(f"Feature id (0 – {loaded.d_sae - 1})", min_value=0, max_value=loaded.d_sae - 1,
                          value=default_feature, step=1, key=f"feature_id_{hook}")

runs = None
pairs = None
with ui.guard("Preparing the current prompt pairs", warn=True):
    pairs = ui.current_pairs()
if pairs:
    with ui.guard("Running the current pairs", warn=True):
        try:
            runs = ui.runs_for(m, sae_dict, pairs, [hook])
        except SFCError as exc:
            # This page has no pair options (it tokenizes with the engine's defaults), so a fix naming one
            # would point at nothing here: say what the page does instead.
            text = S.screen_message(exc, controls=())
            pair_fix = exc.fix is not None and exc.fix.option in ("multi_token", "length_mismatch")
            st.warning(f"{S.as_sentence(text)} {PAIRS_AS_GIVEN}" if pair_fix else text, icon="⚠️")
    kept = runs.n if runs is not None else 0
    st.caption(f"Ablation runs on {kept} of the {len(pairs)} current prompt pairs (the explorer's table, or the "
               "IOI preset if you have not been there).")
    for w in (runs.batch.warnings if runs is not None else [])[:3]:
        st.caption(f"⚠️ {S.screen_message(w, controls=())}")

with st.container(border=True):
    panel.feature_panel(m, loaded, int(feature), runs=runs, key=f"fp_{hook}",
                        default_prompt=pairs[0].clean if pairs else "The keys to the cabinet",
                        ablation_kind="zero")
