"""Shared Streamlit plumbing: cached model/SAE resources, per-session state, error guards, runs.

Concurrency: the model and SAEs are loaded once per process (``st.cache_resource``) and never
mutated (the engine runs the blocks directly, without hooks). Everything a session computes
(discoveries, runs, scores, panel results) lives in that session's ``st.session_state``, keyed
by a hash of its inputs, so two browser sessions computing at once never share mutable state.
"""

from __future__ import annotations

import logging
import time

import streamlit as st

from sfc_core import defaults
from sfc_core.errors import InputError, SFCError

from . import display as S
from . import state

log = logging.getLogger("sfc_app")

#: Edges are computed among this many top nodes, so sliders can loosen the selection later.
EDGE_POOL = defaults.APP_EDGE_POOL
#: Discoveries kept per session (each holds its runs for ablation and scoring).
MAX_RESULTS = 4
#: Default number of task pairs in the explorer (the CPU budget of a first circuit).
DEFAULT_N_PAIRS = defaults.APP_N_PAIRS
CUSTOM = "(custom table / upload)"
SIGN_CONVENTION = (
    "Sign convention: a node's effect is the change of the metric (logit difference "
    "answer − wrong answer) when that node takes its corrupted value in the clean run, so nodes that "
    "**carry** the clean behaviour have **negative** effects (red); nodes are ranked by |effect|."
)


# ------------------------------------------------------------------ page setup and errors
def setup_page(title: str, icon: str = "🔬", controls: tuple[str, ...] | None = ()) -> None:
    """``st.set_page_config`` (wide) and the session defaults every page relies on. ``controls``: the engine
    options this page has a sidebar control for (``None``: all of :data:`display.UI_CONTROLS`), so that an
    error's fix names only controls the user can see (:func:`display.screen_message`)."""
    try:
        st.set_page_config(page_title=f"SFC Explorer · {title}", page_icon=icon, layout="wide")
    except Exception:  # noqa: BLE001 - already configured in this run
        pass
    ss = st.session_state
    ss.setdefault("model_name", defaults.BUNDLED_MODEL_NAME)
    ss.setdefault("sae_spec", {"kind": "bundled"})
    ss.setdefault("results", {})
    ss.setdefault("panel_cache", {})
    state.keep_widgets(ss)
    ss["_page_controls"] = controls


class guard:
    """``with guard("Finding the circuit") as g: ...`` — an :class:`SFCError` becomes ``st.error`` with its
    message; any other exception a one-line ``st.error`` (traceback logged to the console). ``g.ok`` tells
    whether the block finished. Streamlit's own stop/rerun signals (BaseException) pass through."""

    def __init__(self, what: str, where=None, warn: bool = False):
        self.what, self.where, self.warn, self.ok = what, where, warn, False

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.ok = True
            return False
        if not issubclass(exc_type, Exception):
            return False  # st.stop / st.rerun
        out = self.where if self.where is not None else st
        if isinstance(exc, SFCError):
            text = S.screen_message(exc, controls=st.session_state.get("_page_controls", ()))
            (out.warning if self.warn else out.error)(text, icon="⚠️" if self.warn else "🚫")
        else:
            log.error("%s failed", self.what, exc_info=(exc_type, exc, tb))
            out.error(f"{self.what} failed unexpectedly ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}). "
                      "The details are in the server log.", icon="🚫")
        return True


# ------------------------------------------------------------------ cached resources (process-wide, read-only)
@st.cache_resource(show_spinner="Loading the model…")
def _model(name: str):
    from sfc_core.model import load_model

    return load_model(name)


@st.cache_resource(show_spinner="Loading the bundled SAEs…")
def _bundled_saes(model_name: str) -> dict:
    from sfc_core.saes import load_bundled_saes

    return load_bundled_saes(_model(model_name))


@st.cache_resource(show_spinner="Loading the bundled transcoders…")
def _bundled_transcoders(model_name: str) -> dict:
    from sfc_core.transcoders import load_bundled_transcoders

    return load_bundled_transcoders(_model(model_name))


@st.cache_resource(show_spinner="Loading SAEs from SAE Lens…")
def _release_saes(model_name: str, release: str, layers: tuple[int, ...]) -> dict:
    from sfc_core.saes import load_release_layers

    return load_release_layers(_model(model_name), release, list(layers))


@st.cache_resource(show_spinner="Loading the SAE folder…")
def _folder_sae(model_name: str, path: str):
    from sfc_core.saes import load_sae_folder

    return load_sae_folder(_model(model_name), path)


@st.cache_resource(show_spinner="Building task pairs…")
def _task_pairs(model_name: str, task: str, n: int) -> tuple:
    from sfc_core.tasks import get_task_pairs

    return tuple(get_task_pairs(_model(model_name), task, n))


@st.cache_resource(show_spinner=False)
def _corpus(model_name: str):
    from sfc_core.feature_index import corpus_tokens_for

    return corpus_tokens_for(_model(model_name))


def model():
    """The session's model (loaded once per process). Raises SFCError on failure."""
    return _model(st.session_state.get("model_name", defaults.BUNDLED_MODEL_NAME))


def load_saes_for_spec(model_name: str, spec: dict) -> dict:
    """``{hook: LoadedSAE}`` for an SAE choice (bundled / release / folder). Raises SFCError."""
    kind = spec.get("kind", "bundled")
    if kind == "bundled":
        return dict(_bundled_saes(model_name))
    if kind == "transcoders":
        if model_name != defaults.BUNDLED_MODEL_NAME:
            raise InputError("the bundled transcoders fit the bundled model only")
        return dict(_bundled_transcoders(model_name))
    if kind == "release":
        return dict(_release_saes(model_name, spec["release"], tuple(spec["layers"])))
    if kind == "folder":
        loaded = _folder_sae(model_name, spec["path"])
        return {loaded.hook_name: loaded}
    raise InputError(f"unknown SAE choice {kind!r}")


def transcoders() -> dict:
    """The bundled MLP transcoders ``{blocks.L.hook_mlp_out: LoadedSAE}`` of the session's model, whatever sites the
    explorer uses. Raises SFCError (another model, or none shipped)."""
    return load_saes_for_spec(st.session_state.get("model_name", defaults.BUNDLED_MODEL_NAME), {"kind": "transcoders"})


def saes() -> dict:
    """The session's SAEs ``{hook_name: LoadedSAE}`` (a fresh dict; the SAEs themselves are shared)."""
    ss = st.session_state
    return load_saes_for_spec(ss.get("model_name", defaults.BUNDLED_MODEL_NAME), ss.get("sae_spec", {"kind": "bundled"}))


def task_names() -> list[str]:
    try:
        from sfc_core.tasks import TASKS
    except ImportError:
        return []
    return list(TASKS)


TASK_SHORT = {"ioi": "IOI", "sva": "SVA", "sva_pp": "SVA across a PP"}


def task_label(name: str) -> str:
    """Selectbox text of a task: ``"IOI — indirect object identification …"``."""
    if name == CUSTOM:
        return name
    try:
        from sfc_core.tasks import TASKS

        desc = getattr(TASKS[name], "description", "") or ""
    except Exception:  # noqa: BLE001
        desc = ""
    short = TASK_SHORT.get(name, name)
    desc = desc.split(":")[0].split(" (")[0].strip()
    return f"{short} — {desc}" if desc else short


def task_pairs(task: str, n: int) -> list:
    return list(_task_pairs(st.session_state.get("model_name", defaults.BUNDLED_MODEL_NAME), task, int(n)))


def corpus_tokens():
    return _corpus(st.session_state.get("model_name", defaults.BUNDLED_MODEL_NAME))


def model_caption(m, sae_dict: dict) -> str:
    hooks = ", ".join(f"L{getattr(s, 'layer', '?')}" for s in sae_dict.values())
    src = {str(getattr(s, "source", "custom")) for s in sae_dict.values()}
    return (f"Model **{m.cfg.model_name}** ({m.cfg.n_layers} layers) · {len(sae_dict)} SAEs at {hooks} "
            f"({', '.join(sorted(src))}) — change them on the *Model and SAEs* page.")


# ------------------------------------------------------------------ the session's pairs
def current_pairs(default_task: str = "ioi", n: int = DEFAULT_N_PAIRS) -> list:
    """The pairs of the explorer's table if the session has one, else ``n`` pairs of ``default_task``.

    Raises:
        InputError: the table has invalid rows (message names them).
    """
    records = st.session_state.get("current_records")
    if records:
        return S.pairs_from_table(records)
    names = task_names()
    if default_task not in names:
        raise InputError("no prompt pairs yet: fill the table on the explorer page")
    return task_pairs(default_task, n)


# ------------------------------------------------------------------ discoveries and runs (per session)
def discovery_key(m, sae_dict: dict, pairs: list, cfg) -> str:
    from sfc_core.discovery import config_dict

    return S.input_key(model=m.cfg.model_name, saes=S.sae_signature(sae_dict),
                       pairs=[p.to_record() for p in pairs], cfg=config_dict(cfg), edge_pool=EDGE_POOL)


def store_result(key: str, d) -> None:
    results = st.session_state.setdefault("results", {})
    results[key] = d
    while len(results) > MAX_RESULTS:
        results.pop(next(iter(results)))


#: Session key of the discovery in progress: set when it starts, removed when it ends; still there on the next
#: run means it was stopped (*Stop*, Streamlit's own stop, or a control changed while it ran).
RUNNING = "_running_discovery"


def progress_text(stage: str, frac: float, elapsed_s: float, estimate_s: float | None = None) -> str:
    """The progress bar's text: stage, share done, seconds elapsed and an ETA (from the rate so far once 5 % is
    done, else from the pre-run estimate)."""
    if frac >= 0.05:
        left = elapsed_s * (1.0 - frac) / frac
    elif estimate_s is not None:
        left = max(estimate_s - elapsed_s, 0.0)
    else:
        left = None
    eta = f" · about {S.fmt_seconds(left)} left" if left is not None else ""
    return f"{stage} · {frac:.0%} · {S.fmt_seconds(elapsed_s)} elapsed{eta}"


def stopped_notice() -> None:
    """Say that the last discovery was stopped, where and after how long (once, then forget it)."""
    run = st.session_state.pop(RUNNING, None)
    if run:
        st.warning(f"{run['label']}: stopped after {S.fmt_seconds(run['elapsed'])} at {run['stage']} "
                   f"({run['frac']:.0%} done). Nothing was kept; click **Find circuit** to run it again.", icon="⏹️")


def run_discovery(m, sae_dict: dict, pairs: list, cfg, key: str, label: str = "Finding the circuit",
                  estimate_s: float | None = None):
    """The cached :class:`Discovery` for ``key`` or a fresh one, with a live progress bar (stage, share done, ETA)
    and a *Stop* button. *Stop* (or any control changed meanwhile) makes Streamlit interrupt the run at its next
    progress update; the next run then says "stopped" (:func:`stopped_notice`).

    Raises:
        SFCError (bad pairs, options, SAEs); the status box ends in the error state.
    """
    from sfc_core.discovery import discover

    ss = st.session_state
    results = ss.setdefault("results", {})
    if key in results:
        return results[key]
    t0 = time.perf_counter()
    run = ss[RUNNING] = {"label": label, "stage": "tokenizing the pairs", "frac": 0.0, "elapsed": 0.0}
    with st.status(f"{label}…", expanded=True) as status:
        st.button("Stop", key=f"stop_{key}", icon="⏹️",
                  help="Stops at the next progress step (within seconds); nothing is kept.")
        bar = st.progress(0.0, text=progress_text(run["stage"], 0.0, 0.0, estimate_s))

        def progress(stage: str, frac: float) -> None:
            run.update(stage=stage, frac=min(max(float(frac), 0.0), 1.0), elapsed=time.perf_counter() - t0)
            bar.progress(run["frac"], text=progress_text(stage, run["frac"], run["elapsed"], estimate_s))

        try:
            d = discover(m, sae_dict, pairs, cfg, progress=progress, edge_pool=EDGE_POOL if cfg.edges else None)
        except Exception:
            ss.pop(RUNNING, None)
            status.update(label=f"{label} failed", state="error", expanded=False)
            raise
        dt = time.perf_counter() - t0
        d.metadata["wall_s"] = round(dt, 3)
        status.update(label=f"{label}: done in {S.fmt_seconds(dt)}", state="complete", expanded=False)
    ss.pop(RUNNING, None)
    store_result(key, d)
    return d


def runs_for(m, sae_dict: dict, pairs: list, hooks: list[str]):
    """Spliced clean/corrupted runs of ``pairs`` with the SAEs at ``hooks`` (cached per session), tokenized with
    the explorer's pair options (:func:`state.pair_options`): one batch, or a ``PairStream`` when the pairs need
    several batches of the memory budget (:func:`sfc_core.batching.open_runs`).

    Raises:
        InputError: a hook point without a loaded SAE; bad pairs.
    """
    from sfc_core.batching import open_runs
    from sfc_core.pairs import tokenize_pairs

    missing = [h for h in hooks if h not in sae_dict]
    if missing:
        raise InputError(f"no SAE loaded at {', '.join(missing)}; load it on the Model and SAEs page")
    sub = {h: sae_dict[h] for h in sae_dict if h in hooks}
    options = state.pair_options(st.session_state)  # the explorer's choices, on every page
    key = S.input_key(kind="runs", model=m.cfg.model_name, saes=S.sae_signature(sub),
                      pairs=[p.to_record() for p in pairs], options=options)
    cache = st.session_state.setdefault("runs_cache", {})
    if key not in cache:
        with st.spinner("Running the clean and corrupted prompts…"):
            batch = tokenize_pairs(m, pairs, **options)
            cache[key] = open_runs(m, sub, batch)
        while len(cache) > 3:
            cache.pop(next(iter(cache)))
    return cache[key]


def panel_cache() -> dict:
    cache = st.session_state.setdefault("panel_cache", {})
    while len(cache) > 64:
        cache.pop(next(iter(cache)))
    return cache
