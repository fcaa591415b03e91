"""Neuron nodes on the bundled model: neuron sites read the MLPs' own hook_post, the spliced run is the model's,
exact patching of a neuron equals a TransformerLens hooked run, and the Evaluate page's neurons-vs-features
section draws both curves."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.integration

LAYERS = (3, 15)


@pytest.fixture(scope="module")
def neuron_runs():
    from sfc_core.model import load_model
    from sfc_core.neurons import prepare_neuron_runs
    from sfc_core.pairs import tokenize_pairs
    from sfc_core.tasks import get_task_pairs

    model = load_model()
    batch = tokenize_pairs(model, get_task_pairs(model, "ioi", n=4))
    return model, batch, prepare_neuron_runs(model, LAYERS, batch)


def _hooked_metric(model, batch, fwd_hooks) -> torch.Tensor:
    with torch.no_grad():
        logits = model.run_with_hooks(batch.clean_tokens, fwd_hooks=fwd_hooks)
    rows = torch.arange(batch.n)
    last = logits[rows, batch.last_pos]
    return last[rows, batch.answer_ids] - last[rows, batch.wrong_ids]


def test_neuron_sites_read_the_mlp_and_change_nothing(neuron_runs):
    from sfc_core.ablation import ablation_values, circuit_metric

    model, batch, runs = neuron_runs
    with torch.no_grad():
        _, cache = model.run_with_cache(batch.clean_tokens)
    m = runs.mask
    for i, L in enumerate(LAYERS):
        want = cache[f"blocks.{L}.mlp.hook_post"]
        assert runs.clean[i].f.shape == want.shape and want.shape[-1] == model.cfg.d_mlp == 1536
        assert torch.allclose(runs.clean[i].f[m], want[m], atol=1e-4)
    assert runs.m_clean.tolist() == pytest.approx(_hooked_metric(model, batch, []).tolist(), abs=1e-3)
    full = runs.space.keep_masks([], complement=True)
    assert float(circuit_metric(runs, [full], ablation_values(runs))[0]) == pytest.approx(
        float(runs.m_clean.mean()), abs=1e-3)


def test_bundled_neuron_patch_equals_a_hooked_run(neuron_runs):
    from sfc_core import attribution as A

    model, batch, runs = neuron_runs
    atp = A.attribute(runs, "atp")
    top = runs.space.ranked(atp.effects, limit=1)[0]
    assert top.kind == "neuron" and top.id.startswith(f"blocks.{top.layer}.mlp.hook_post/n")
    with torch.no_grad():
        _, cache = model.run_with_cache(batch.corrupted_tokens)
    corr = cache[top.hook_name]

    def patch(post, hook):
        post = post.clone()
        keep = batch.valid_mask
        post[..., top.index] = torch.where(keep, corr[..., top.index], post[..., top.index])
        return post

    want = float((_hooked_metric(model, batch, [(top.hook_name, patch)]) - runs.m_clean).mean())
    got = float(A.exact_effects(runs, [top])[0])
    assert got == pytest.approx(want, abs=2e-3)
    assert abs(got) > 0.01


def test_evaluate_page_compares_neurons_and_features():
    from streamlit.testing.v1 import AppTest

    from pages._shared.display import records_from_table, table_from_pairs
    from sfc_core.model import load_model
    from sfc_core.tasks import get_task_pairs
    from tests.integration.test_app import ROOT, TIMEOUT

    at = AppTest.from_file(str(ROOT / "pages/2_Evaluate.py"), default_timeout=max(TIMEOUT, 600))
    at.session_state["current_records"] = records_from_table(table_from_pairs(get_task_pairs(load_model(), "ioi", 4)))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    at.text_input(key="nvf_sizes").set_value("10, 100")
    at.button(key="nvf_run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    assert len(at.get("plotly_chart")) == 1
    table = [df.value for df in at.dataframe][-1]
    assert list(table["nodes"]) == ["neurons", "residual directions", "features"]
    res = at.session_state["nvf_result"]
    assert res["curves"]["neurons"]["sizes"] == [10, 100] and res["n_pairs"] == 4
    assert res["curves"]["resid"]["m_empty"] == pytest.approx(res["curves"]["features"]["m_empty"], abs=1e-3)


def test_cli_compare_units(tmp_path):
    """`sfc compare --units` writes the neuron-vs-feature curves and node counts; a bad unit exits 2 first."""
    import json

    from typer.testing import CliRunner

    from sfc_core.cli import app

    out = tmp_path / "units.json"
    runner = CliRunner()
    r = runner.invoke(app, ["compare", "--task", "sva", "--n", "4", "--units", "features,resid", "--methods", "atp",
                            "--sizes", "5,50", "--out", str(out)])
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert set(doc["n_for"]) == {"features", "resid"} and set(doc["n_for"]["features"]) == {"0.5", "0.8"}
    assert len(doc["curves"]["features"]["faithfulness"]) == 2
    r = runner.invoke(app, ["compare", "--task", "sva", "--units", "atoms", "--out", str(tmp_path / "x.json")])
    assert r.exit_code == 2 and "unknown units atoms" in r.output and not (tmp_path / "x.json").exists()
