"""The bundled MLP transcoders through the engine, the CLI and the app (``integration``: bundled model and assets)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model():
    from sfc_core.model import load_model

    return load_model()


@pytest.fixture(scope="module")
def runs(model):
    from sfc_core.attribution import prepare_runs
    from sfc_core.discovery import DiscoverConfig, as_batch
    from sfc_core.tasks import get_task_pairs
    from sfc_core.transcoders import load_bundled_transcoders

    batch = as_batch(model, get_task_pairs(model, "ioi", n=3), DiscoverConfig())
    return prepare_runs(model, load_bundled_transcoders(model), batch)


def test_every_layer_has_a_transcoder_and_the_spliced_model_is_the_model(model, runs):
    assert [s.hook_name for s in runs.sites] == [f"blocks.{L}.hook_mlp_out" for L in range(model.cfg.n_layers)]
    with torch.no_grad():
        logits = model(runs.batch.clean_tokens)
    rows = torch.arange(runs.n)
    last = logits[rows, runs.batch.last_pos]
    want = last[rows, runs.batch.answer_ids] - last[rows, runs.batch.wrong_ids]
    assert torch.allclose(runs.m_clean, want, atol=1e-3)  # the error nodes keep the model exact


def test_pie_protocol_on_the_bundled_transcoders(runs):
    from sfc_core.pie import pie_compare

    report = pie_compare(runs, budgets=(10, 50), methods=("fap", "random"), draws=2)
    fap, rnd = report["methods"]["fap"], report["methods"]["random"]
    assert all(0.0 <= f <= 1.0 for f in fap["fidelity"] + rnd["fidelity"])
    assert fap["kl"][1] <= rnd["kl"][1]  # FAP's 50 occurrences beat 50 random ones
    assert report["occurrences"]["min"] > 50


def test_cli_pie_compare_writes_the_report(tmp_path):
    from typer.testing import CliRunner

    from sfc_core.cli import app

    out = tmp_path / "pie.json"
    r = CliRunner().invoke(app, ["compare", "--task", "sva", "--n", "3", "--features", "transcoders", "--protocol",
                                 "pie", "--budgets", "10,25", "--boundary-cap", "4", "--partners", "4",
                                 "--partners-per-candidate", "2", "--out", str(out)])
    assert r.exit_code == 0, r.output
    report = json.loads(out.read_text())
    assert report["protocol"] == "pie" and set(report["methods"]) == {"fap", "fap-synergy", "random"}
    assert report["budgets"] == [10, 25] and len(report["layers"]) == 30
    r = CliRunner().invoke(app, ["compare", "--task", "sva", "--n", "3", "--features", "transcoders", "--protocol",
                                 "pie", "--budgets", "1000000", "--out", str(tmp_path / "big.json")])
    assert r.exit_code == 2 and "larger than the" in r.output and not (tmp_path / "big.json").exists()


def test_explorer_finds_a_transcoder_circuit():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
    at.session_state["sae_spec"] = {"kind": "transcoders"}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    at.number_input(key="task_n").set_value(3).run()
    at.button(key="find_circuit").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    labels = {m.label: m.value for m in at.metric}
    assert "faithfulness" in labels and int(labels["nodes"]) > 0
    assert any("circuit_graph" in (c.proto.id or "") for c in at.get("plotly_chart"))


def test_feature_page_shows_a_transcoder_feature():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "pages" / "1_Feature.py"), default_timeout=600)
    at.session_state["sae_spec"] = {"kind": "transcoders"}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert at.selectbox(key="feature_hook").value.endswith("hook_mlp_out")
    texts = [m.value for m in at.markdown]
    assert "#### Top activating examples" in texts and "#### Logit effects" in texts


def test_bundle_check_reports_every_transcoder_layer(model):
    from sfc_core.transcoders import QUALITY_BAR, check_transcoders

    report = check_transcoders(model, n_seqs=2)
    assert report["present"] and report["n_layers"] == 30
    for row in report["layers"]:
        assert {"fve", "dead_frac", "l0", "ce_recovered"} <= set(row)
        assert row["passes"] == (row["fve"] >= QUALITY_BAR["fve"] and row["dead_frac"] <= QUALITY_BAR["dead_frac"]
                                 and row["ce_recovered"] >= QUALITY_BAR["ce_recovered"])
    everything = report["all_layers"]
    assert everything["ce_zero"] > everything["ce_clean"]  # zero-ablating every MLP breaks the model
    assert everything["passes"] == (everything["ce_recovered"] >= QUALITY_BAR["ce_recovered_all"])
