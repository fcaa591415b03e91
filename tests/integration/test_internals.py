"""Model internals on the bundled model (SmolLM2-135M, 30 layers, 9 query / 3 KV heads): logit lens, causal
tracing localisation on IOI, head and path patching, the CLI, and the Model internals page through AppTest."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
N_PAIRS = 8


@pytest.fixture(scope="module")
def model():
    from sfc_core.model import load_model

    return load_model()


@pytest.fixture(scope="module")
def ioi(model):
    """``N_PAIRS`` IOI pairs of one template and token length (so positions share roles)."""
    from sfc_core.pairs import tokenize_pairs
    from sfc_core.tracing import one_template_pairs

    return tokenize_pairs(model, one_template_pairs(model, "ioi", N_PAIRS))


def test_lens_final_row_is_the_bundled_models_logits(model, ioi):
    from sfc_core.lens import logit_lens

    res = logit_lens(model, ioi, top_k=3)
    assert res.logit_diff.shape == (N_PAIRS, 31, ioi.pos) and res.labels[-1] == "final"
    with torch.no_grad():
        logits = model(ioi.clean_tokens)
    rows = torch.arange(ioi.n)
    want = logits[rows, :, ioi.answer_ids] - logits[rows, :, ioi.wrong_ids]
    torch.testing.assert_close(res.logit_diff[:, -1], want, atol=2e-4, rtol=1e-5)
    last = int(ioi.last_pos[0])
    assert res.top_tokens[-1][last][0][0] == model.tokenizer.decode([int(logits[0, last].argmax())])


def test_ioi_tracing_localises_at_s2_early_and_at_the_end_late(model, ioi):
    """Residual stream, denoising: at early layers the effect sits at the second mention of the subject (S2, the
    only token where the prompts differ), at late layers at the final position (the name has been moved there)."""
    from sfc_core.tracing import causal_trace

    res = causal_trace(model, ioi, sites=["resid_pre"], layers=[1, 4, 27, 29])
    norm = res.normalised("resid_pre")
    s2 = int((ioi.clean_tokens[0] != ioi.corrupted_tokens[0]).nonzero()[0])
    last = int(ioi.last_pos[0])
    assert s2 < last - 1
    for row in (0, 1):  # layers 1, 4
        assert int(np.nanargmax(norm[row])) == s2 and norm[row, s2] > 0.8, norm[row]
    for row in (2, 3):  # layers 27, 29
        assert int(np.nanargmax(norm[row])) == last and norm[row, last] > 0.8, norm[row]
    assert np.all(norm[:, :s2] == 0)  # identical activations before S2


def test_head_and_path_patching_on_ioi(model, ioi):
    from sfc_core.heads import head_patching, path_patch

    res = head_patching(model, ioi, layers=[20, 21, 22, 23])
    assert res.normalised().shape == (4, 9) and np.isfinite(res.normalised()).all()
    best = np.abs(res.normalised()).argmax(axis=1)  # the strongest head of each layer
    assert res.top_heads(1)[0]["effect"] == pytest.approx(float(res.normalised().ravel()[np.abs(res.normalised()).argmax()]))
    for inp in ("q", "k"):  # k under GQA: the receiver's KV head, the group's other heads kept clean
        pp = path_patch(model, ioi, (20, int(best[0])), (23, int(best[3])), inp)
        assert np.isfinite(pp.effect) and pp.m_patched.shape == (N_PAIRS,)
        assert pp.m_clean.mean() == pytest.approx(float(res.m_clean.mean()), abs=1e-4)


def test_cli_heads_on_bundled_model(tmp_path):
    from typer.testing import CliRunner

    from sfc_core.cli import app

    out = tmp_path / "h.json"
    r = CliRunner().invoke(app, ["heads", "--task", "ioi", "--n", "4", "--layers", "29", "--pattern", "9.6",
                                 "--path", "9.6>29.0", "--out", str(out)])
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert len(doc["patching"]["normalised"][0]) == 9 and doc["pattern"]["head"] == 6
    r = CliRunner().invoke(app, ["heads", "--task", "ioi", "--n", "4", "--pattern", "9.9", "--out", str(out)])
    assert r.exit_code == 2 and r.output.strip() == "error: head 9 does not exist: layer 9 has heads 0 to 8"
    r = CliRunner().invoke(app, ["trace", "--task", "ioi", "--n", "8", "--out", str(tmp_path / "t.json")])
    assert r.exit_code == 2 and r.output.strip().endswith("(fix: --template-group largest)")
    assert not (tmp_path / "t.json").exists()


# ----------------------------------------------------------------------------- the page
def _page():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(ROOT / "pages/5_Model_internals.py"), default_timeout=600)


def _ok(at):
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _figures(at) -> dict[str, dict]:
    return {c.proto.id: json.loads(c.proto.spec) for c in at.get("plotly_chart")}


def test_page_lens_trace_heads_path():
    at = _page()
    at.run()
    _ok(at)
    at.button(key="run_lens").click().run()
    _ok(at)
    figs = _figures(at)
    [lens_fig] = [f for k, f in figs.items() if "lens_fig" in k]
    assert len(lens_fig["data"][0]["y"]) == 31
    at.text_input(key="internals_layers").set_value("28,29").run()
    at.button(key="run_trace").click().run()
    _ok(at)
    figs = _figures(at)
    trace_figs = [f for k, f in figs.items() if "trace_fig" in k]
    assert len(trace_figs) == 3 and all(len(f["data"][0]["y"]) == 2 for f in trace_figs)
    at.number_input(key="pattern_layer").set_value(9).run()
    at.button(key="run_pattern").click().run()
    _ok(at)
    assert any("pattern_fig" in k for k in _figures(at))
    at.number_input(key="path_sl").set_value(9).run()
    at.button(key="run_path").click().run()
    _ok(at)
    assert any(m.label == "Effect on the logit difference" for m in at.metric)


def test_page_bad_layers_is_an_error_not_an_exception():
    at = _page()
    at.run()
    at.text_input(key="internals_layers").set_value("40").run()
    at.button(key="run_trace").click().run()
    assert not at.exception
    assert any("layer 40 does not exist" in e.value for e in at.error)
    at.radio(key="internals_group").set_value("refuse").run()
    at.text_input(key="internals_layers").set_value("29").run()
    at.button(key="run_trace").click().run()
    assert not at.exception
    assert any("one template and token length" in e.value for e in at.error)


# ----------------------------------------------------------------------------- the page in headless Chromium
from tests.integration.test_browser import server  # noqa: E402,F401 (fixture: the app served as `make app` does)

CELL_JS = """
(arg) => {
  const gds = Array.from(document.querySelectorAll('.js-plotly-plot')).filter(
    gd => (gd._fullData || []).some(t => t.name === 'cells'));
  if (gds.length < 3) return null;
  const gd = gds[0];
  const t = gd._fullData.find(t => t.name === 'cells');
  const j = t.y.lastIndexOf(arg);  // the last cell of that layer's row: the final position
  const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
  const r = (gd.querySelector('.nsewdrag') || gd).getBoundingClientRect();
  return {x: r.left + xa.l2p(xa.d2l(t.x[j])), y: r.top + ya.l2p(ya.d2l(t.y[j])), label: t.x[j]};
}
"""


@pytest.mark.browser
def test_click_on_a_tracing_cell_names_the_sae_site_and_links_to_it(server):
    """The real app: compute causal tracing for layers 28, 29, click the (L29, final position) cell of the residual
    stream map; the page names blocks.27.hook_resid_post (nearest bundled SAE to block 28's output) and its link
    opens the Feature page on that hook."""
    from playwright.sync_api import sync_playwright

    from tests.integration.test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, COMPUTE_TIMEOUT_S, _wait_idle

    url, _, _ = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.goto(f"{url}/Model_internals", timeout=COMPUTE_TIMEOUT_S * 1000)
        _wait_idle(page, COMPUTE_TIMEOUT_S)
        box = page.get_by_label("Layers", exact=True).and_(page.locator("input"))
        box.fill("28,29")
        box.press("Enter")
        _wait_idle(page)
        page.get_by_role("button", name="Compute causal tracing").click()
        _wait_idle(page, COMPUTE_TIMEOUT_S)
        page.wait_for_function(f"() => ({CELL_JS})('L29') !== null", timeout=COMPUTE_TIMEOUT_S * 1000)
        cell = page.evaluate(CELL_JS, "L29")
        page.mouse.click(cell["x"], cell["y"])
        _wait_idle(page)
        page.get_by_text("nearest bundled SAE site").first.wait_for(timeout=60_000)
        text = page.get_by_text("nearest bundled SAE site").first.inner_text()
        assert "blocks.29.hook_resid_pre" in text and "blocks.27.hook_resid_post" in text, text
        page.screenshot(path=str(ARTIFACTS / "internals-trace-click.png"), full_page=True)
        page.get_by_text("Inspect features at blocks.27.hook_resid_post").click()
        _wait_idle(page, COMPUTE_TIMEOUT_S)
        try:  # the Feature page opens on that hook (its panel title names it)
            page.get_by_text(re.compile(r"^Feature \d+ at blocks\.27\.hook_resid_post$")).first.wait_for(
                timeout=COMPUTE_TIMEOUT_S * 1000)
        finally:
            page.screenshot(path=str(ARTIFACTS / "internals-feature-page.png"))
        browser.close()
