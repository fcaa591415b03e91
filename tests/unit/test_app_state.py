"""The app's session state across pages (pages/_shared/state.py) and the run-time estimate and progress text
that the explorer shows before and during a discovery."""

from __future__ import annotations

import pandas as pd
import pytest

from pages._shared import state
from sfc_core import defaults, methods
from sfc_core.discovery import DiscoverConfig


class Recorder(dict):
    """A dict that records every assignment (as Streamlit's session state sees ``ss[k] = ss[k]``)."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.assigned: list[str] = []

    def __setitem__(self, key, value):
        self.assigned.append(key)
        super().__setitem__(key, value)


def test_keep_widgets_reassigns_sticky_keys_only():
    ss = Recorder({"method": "mask", "hooks_abc": ["a"], "node_thr_k1": 0.5, "rename_L3/1": "x",
                   "rename_btn_L3/1": False, "pairs_editor_3": {}, "find_circuit": False, "results": {}})
    ss.assigned.clear()
    state.keep_widgets(ss)
    assert sorted(ss.assigned) == ["hooks_abc", "method", "node_thr_k1", "rename_L3/1"]
    assert ss["method"] == "mask" and ss["hooks_abc"] == ["a"]


def test_restore_table_only_when_the_editor_lost_its_edits():
    rows = [{"clean": "a b", "corrupted": "c b", "answer": " x", "wrong_answer": " y"}]
    to_table = lambda recs: pd.DataFrame(recs)  # noqa: E731
    ss = {"current_records": rows, "pairs_df": pd.DataFrame([{"clean": "preset"}]), "pairs_editor_2": {}}
    assert state.restore_table(ss, "pairs_editor_2", to_table) is False  # the editor still holds its edits
    assert ss["pairs_df"]["clean"].tolist() == ["preset"]
    del ss["pairs_editor_2"]  # a page change: Streamlit dropped the editor's state
    assert state.restore_table(ss, "pairs_editor_2", to_table) is True
    assert ss["pairs_df"].to_dict("records") == rows
    assert state.restore_table({"pairs_df": 1}, "pairs_editor_0", to_table) is False  # nothing remembered


def test_model_change_clears_the_circuit_only_when_something_changed():
    ss = {"model_name": defaults.BUNDLED_MODEL_NAME, "sae_spec": {"kind": "bundled"}, "results": {"k": 1},
          "current_key": "k", "scores": {"s": 1}, "view": "discovery", "_loaded_preset": ("m", "ioi", 8)}
    assert state.set_model_and_saes(ss, defaults.BUNDLED_MODEL_NAME, {"kind": "bundled"}) is None
    assert ss["results"] == {"k": 1} and ss["current_key"] == "k" and ss["view"] == "discovery"
    msg = state.set_model_and_saes(ss, sae_spec={"kind": "folder", "path": "/x"})
    assert msg.startswith("The SAEs changed") and "cleared" in msg
    assert "results" not in ss and "current_key" not in ss and "scores" not in ss and ss["view"] is None
    assert ss["sae_spec"] == {"kind": "folder", "path": "/x"} and "_loaded_preset" not in ss
    assert state.set_model_and_saes(ss, model_name="gpt2") == "The model changed."  # nothing left to clear


@pytest.mark.parametrize("method", methods.names())
def test_estimate_is_discovery_plus_method_passes(method):
    cfg = DiscoverConfig(method=method)
    passes = methods.get(method).passes(cfg, 7)
    assert passes > 0
    expected = (methods.DISCOVERY_PASSES + passes) * 300 / defaults.FWD_BWD_TOKENS_PER_S
    assert methods.estimate_seconds(cfg, 300, 7) == pytest.approx(expected)
    assert methods.estimate_seconds(cfg, 600, 7) == pytest.approx(2 * expected)  # linear in tokens


def test_estimate_grows_with_the_method_knobs():
    short, long = DiscoverConfig(method="mask", mask_steps=100), DiscoverConfig(method="mask", mask_steps=2000)
    assert methods.estimate_seconds(long, 90, 7) > defaults.APP_LONG_RUN_S > methods.estimate_seconds(
        DiscoverConfig(method="atp"), 288, 7)
    assert methods.estimate_seconds(long, 90, 7) > 10 * methods.estimate_seconds(short, 90, 7)
    assert methods.estimate_seconds(DiscoverConfig(method="ig", steps=20), 100, 7) > methods.estimate_seconds(
        DiscoverConfig(method="ig", steps=5), 100, 7)


def test_progress_text_gives_an_eta_from_the_rate_or_the_estimate():
    from pages._shared.ui import progress_text

    assert progress_text("mask", 0.5, 30.0) == "mask · 50% · 30.0 s elapsed · about 30.0 s left"
    assert progress_text("runs", 0.01, 2.0, estimate_s=12.0) == "runs · 1% · 2.00 s elapsed · about 10.0 s left"
    assert progress_text("runs", 0.0, 2.0) == "runs · 0% · 2.00 s elapsed"
