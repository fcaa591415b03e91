"""The session's state across pages, owned here.

Streamlit forgets a widget's value when a run does not draw that widget, so visiting another page would
reset the explorer's table, method, hook points and thresholds to their defaults. Every page calls
:func:`keep_widgets` first (through ``ui.setup_page``): it re-assigns the sticky widget keys, which turns
them into plain session state that outlives the page change (Streamlit's documented way to keep widget
values across pages). The pairs table (``st.data_editor``, whose value cannot be assigned) is kept as
records instead: :func:`remember_records` after every edit, :func:`restore_table` when the explorer is
drawn again.

Changing the model or the SAEs is the one thing that invalidates a found circuit:
:func:`set_model_and_saes` clears it only when something actually changed, and says which.
"""

from __future__ import annotations

from collections.abc import MutableMapping

from sfc_core import defaults

#: Widget keys whose values survive page changes (explorer, Feature, Evaluate, Tour).
STICKY = frozenset({
    "task_preset", "task_n", "method", "ig_steps", "mask_lambda", "mask_steps", "fap_budget", "aggregate",
    "length_mismatch", "multi_token", "ablation", "sel_mode", "top_k", "target_faithfulness", "hide_errors",
    "hide_disconnected", "supernode_members", "supernode_name", "node_pick",
    "feature_hook", "eval_methods", "eval_sizes", "eval_ablation", "tour_step", "tour_hook",
})
#: Prefixes of sticky keys that carry the inputs they belong to (hook points per SAE set, thresholds per
#: circuit, feature index per hook point, rename boxes per node).
STICKY_PREFIXES = ("hooks_", "node_thr_", "edge_thr_", "feature_id_", "eval_hooks_", "tour_feat_", "rename_")
#: Session keys of a found circuit and everything computed from it.
CIRCUIT_KEYS = ("results", "current_key", "runs_cache", "scores", "images", "_shown_graph")


def keep_widgets(ss: MutableMapping) -> None:
    """Re-assign every sticky widget value so that it outlives pages that do not draw its widget."""
    for key in list(ss.keys()):
        if key in STICKY or (key.startswith(STICKY_PREFIXES) and not key.startswith("rename_btn_")):
            ss[key] = ss[key]


def pair_options(ss: MutableMapping) -> dict:
    """The explorer's choices for awkward pairs (``multi_token``, ``length_mismatch`` of
    :func:`sfc_core.pairs.tokenize_pairs`), the engine's defaults until the user changes them."""
    return {"multi_token": ss.get("multi_token", "reject"), "length_mismatch": ss.get("length_mismatch", "skip")}


def remember_records(ss: MutableMapping, records: list[dict]) -> None:
    """Keep the pairs table's rows (as edited) for the next time the explorer is drawn."""
    ss["current_records"] = records


def restore_table(ss: MutableMapping, editor_key: str, table_from_records) -> bool:
    """Put the last edited rows back into the pairs table when the editor lost its edits (its widget state
    is gone after a page change). Returns whether the table was restored."""
    records = ss.get("current_records")
    if editor_key in ss or not records or "pairs_df" not in ss:
        return False
    ss["pairs_df"] = table_from_records(records)
    return True


def clear_circuit(ss: MutableMapping) -> None:
    """Forget the found circuit and everything computed from it (scores, runs, images)."""
    for key in CIRCUIT_KEYS:
        ss.pop(key, None)
    ss["view"] = "uploaded" if ss.get("uploaded_graph") is not None else None


def set_model_and_saes(ss: MutableMapping, model_name: str | None = None, sae_spec: dict | None = None) -> str | None:
    """Switch the session's model and / or SAE choice. The found circuit is cleared only when one of them
    really changed. Returns a sentence saying what changed (``None`` when nothing did)."""
    old_model = ss.get("model_name", defaults.BUNDLED_MODEL_NAME)
    old_spec = ss.get("sae_spec", {"kind": "bundled"})
    new_model = old_model if model_name is None else model_name
    new_spec = old_spec if sae_spec is None else sae_spec
    changed = [what for what, old, new in (("model", old_model, new_model), ("SAEs", old_spec, new_spec))
               if old != new]
    if not changed:
        return None
    ss["model_name"], ss["sae_spec"] = new_model, new_spec
    had_circuit = bool(ss.get("results"))
    clear_circuit(ss)
    ss.pop("_loaded_preset", None)  # task pairs are tokenized per model
    what = " and ".join(changed)
    return (f"The {what} changed" + (": the circuit found before was cleared (it belongs to the old "
                                      f"{what}); find it again on the explorer." if had_circuit else "."))
