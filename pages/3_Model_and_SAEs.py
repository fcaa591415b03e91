"""Model and SAEs page: what is loaded, the bundle's quality figures, and choosing another model / SAEs."""

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
from sfc_core.errors import InputError  # noqa: E402

ui.setup_page("Model and SAEs", "🧠")
ss = st.session_state


def _changed(message: str | None, unchanged: str) -> None:
    """Say what a model / SAE change did to the found circuit (or that nothing changed)."""
    if message:
        st.warning(message) if "cleared" in message else st.success(message)
    else:
        st.info(unchanged)

st.title("Model and SAEs")

# ------------------------------------------------------------------ what is loaded
st.header("Loaded now")
with ui.guard("Loading the model and SAEs") as g:
    m = ui.model()
    sae_dict = ui.saes()
if g.ok:
    c = st.columns(4)
    c[0].metric("model", m.cfg.model_name)
    c[1].metric("layers", m.cfg.n_layers)
    c[2].metric("d_model", m.cfg.d_model)
    c[3].metric("vocabulary", m.cfg.d_vocab)
    st.dataframe(S.sae_table(sae_dict), hide_index=True, width="stretch")

# ------------------------------------------------------------------ bundle quality
st.header("Bundled SAEs: quality")
st.caption("Recorded when the bundle was built, on held-out tokens (BOS excluded): FVE = fraction of variance "
           "explained; CE loss recovered = (CE with the stream zeroed − CE spliced) / (CE zeroed − CE clean); "
           "L0 = mean active latents per token; dead = latents never active.")
with ui.guard("Reading the bundle manifest"):
    from sfc_core.bundle import load_manifest

    manifest = load_manifest()
    table = S.quality_table(manifest)
    st.dataframe(table, hide_index=True, width="stretch")
    st.caption(table.attrs.get("bar", ""))
    tc_table = S.transcoder_quality_table(manifest)
    if len(tc_table):
        st.subheader("Bundled transcoders: quality")
        below = int((tc_table["passes bar"] == "no").sum())
        if below:
            st.warning(f"{below} of {len(tc_table)} rows are below the bar: the transcoders were trained on a CPU "
                       "budget (~650k token-steps per layer). Circuits on them keep their error nodes, so their "
                       "faithfulness is the real model's; read the error nodes' share before the features'.")
        st.dataframe(tc_table, hide_index=True, width="stretch")
        st.caption("MLP output of each layer, on held-out tokens. " + tc_table.attrs.get("bar", ""))

# ------------------------------------------------------------------ choose another
st.header("Choose another model or SAEs")
st.caption(f"The offline default is **{defaults.BUNDLED_MODEL_NAME}** with its bundled SAEs. Other TransformerLens "
           "models and SAE Lens releases are downloaded from the model hub, so they need the network.")

with st.form("model_form"):
    name = st.text_input("TransformerLens model name", value=ss.get("model_name", defaults.BUNDLED_MODEL_NAME),
                         key="model_name_input", help="e.g. gpt2-small, pythia-70m-deduped; "
                                                      f"'{defaults.BUNDLED_MODEL_NAME}' or 'bundled' for the default")
    submitted = st.form_submit_button("Load model")
if submitted:
    with ui.guard("Loading the model") as g:
        if not name.strip():
            raise InputError("type a model name (or 'bundled' for the offline default)")
        new = ui._model(name.strip())
    if g.ok:
        chosen = defaults.BUNDLED_MODEL_NAME if name.strip() in defaults.BUNDLED_MODEL_ALIASES else name.strip()
        _changed(state.set_model_and_saes(ss, model_name=chosen), f"Already using {new.cfg.model_name}.")
        if new.cfg.model_name != defaults.BUNDLED_MODEL_NAME and ss.get("sae_spec", {}).get("kind") == "bundled":
            st.warning("The bundled SAEs only fit the bundled model: choose SAEs for this model below.")

kind = st.radio("Sites", ["bundled", "bundled transcoders", "SAE Lens release", "local SAE folder"], horizontal=True,
                key="sae_kind", help="bundled: residual-stream SAEs at 7 layers; bundled transcoders: one per MLP at "
                                     "all 30 layers (features are the MLP outputs' latents, error nodes their "
                                     "reconstruction errors)")
with st.form("sae_form"):
    release = layers_text = path = ""
    if kind == "SAE Lens release":
        release = st.text_input("Release", placeholder="gpt2-small-res-jb", key="sae_release")
        layers_text = st.text_input("Layers", placeholder="3, 7, 11", key="sae_layers")
    elif kind == "local SAE folder":
        path = st.text_input("Folder (SAE Lens format: cfg.json + sae_weights.safetensors)", key="sae_path")
    elif kind == "bundled transcoders":
        st.caption("The per-layer MLP transcoders shipped in assets/transcoders (JumpReLU with a skip term; "
                   "quality figures in assets/bundle.json, `sfc bundle check`).")
    else:
        st.caption("The SAEs shipped in assets/saes.")
    sae_submitted = st.form_submit_button("Load SAEs")
if sae_submitted:
    with ui.guard("Loading the SAEs") as g:
        if kind == "SAE Lens release":
            if not release.strip():
                raise InputError("type an SAE Lens release name, e.g. gpt2-small-res-jb")
            spec = {"kind": "release", "release": release.strip(), "layers": S.parse_layers(layers_text)}
        elif kind == "local SAE folder":
            if not path.strip():
                raise InputError("type the path of an SAE folder")
            spec = {"kind": "folder", "path": path.strip()}
        elif kind == "bundled transcoders":
            spec = {"kind": "transcoders"}
        else:
            spec = {"kind": "bundled"}
        loaded = ui.load_saes_for_spec(ss.get("model_name", defaults.BUNDLED_MODEL_NAME), spec)
    if g.ok:
        _changed(state.set_model_and_saes(ss, sae_spec=spec), "These SAEs are already loaded.")
        st.success(f"Loaded {len(loaded)} SAE(s): {', '.join(loaded)}.")
        st.dataframe(S.sae_table(loaded), hide_index=True, width="stretch")

if st.button("Back to the offline default", key="reset_default"):
    _changed(state.set_model_and_saes(ss, defaults.BUNDLED_MODEL_NAME, {"kind": "bundled"}),
             "Already on the offline default (the bundled model and SAEs): nothing changed, the circuit is kept.")
