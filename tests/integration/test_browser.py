"""End-to-end: the real app in headless Chromium (Playwright), as a user would drive it.

Starts ``streamlit run app.py`` on a free port, keeps the IOI preset, clicks **Find circuit**,
waits for the graph, clicks a feature node *in the Plotly graph* (its pixel position is read
from the figure), checks the feature panel (top activating examples, ablation before → after), finds the
faithfulness and node labels on the page, renames the node, makes a supernode, downloads Neuronpedia JSON
and sfc-circuit/2 JSON, re-imports the latter and finds the label and the supernode again. Screenshots and
timings go to ``test-artifacts/``.

Needs Debian's Chromium at ``/usr/bin/chromium`` (``make browser`` installs it); without it the
test fails with that instruction instead of skipping.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
START_TIMEOUT_S = 180
COMPUTE_TIMEOUT_S = 900  # cold model load + a first circuit on a 2-core CPU
EDIT_TIMEOUT_S = 300  # a rerun after an edit (rename, supernode, upload) on a busy 2-core CPU
BEFORE_AFTER = re.compile(r"-?\d+\.\d+ → -?\d+\.\d+")

# Page coordinates of the first point of the circuit figure's "features" trace, and its node id.
FEATURE_POINT_JS = """
() => {
  const plots = Array.from(document.querySelectorAll('.js-plotly-plot'));
  for (const gd of plots) {
    const data = gd._fullData || [];
    const i = data.findIndex(t => t.name === 'features');
    if (i < 0 || !gd._fullLayout) continue;
    const t = data[i];
    // the strongest feature: the largest marker
    let j = 0;
    const sizes = Array.isArray(t.marker.size) ? t.marker.size : null;
    if (sizes) { for (let k = 1; k < sizes.length; k++) if (sizes[k] > sizes[j]) j = k; }
    const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
    const box = gd.querySelector('.nsewdrag') || gd;
    const r = box.getBoundingClientRect();
    return {x: r.left + xa.l2p(t.x[j]), y: r.top + ya.l2p(t.y[j]), id: t.customdata[j][0],
            n: t.x.length};
  }
  return null;
}
"""
# Every text drawn next to a node of the circuit figure (features, error nodes, supernodes).
NODE_TEXT_JS = """
() => Array.from(document.querySelectorAll('.js-plotly-plot')).flatMap(
  gd => (gd._fullData || []).filter(t => ['features', 'error nodes (ε)', 'supernode'].includes(t.name))
        .flatMap(t => Array.isArray(t.text) ? t.text : []))
"""
# Whether the circuit figure draws a supernode hexagon called ``arg``.
SUPERNODE_JS = """
(name) => Array.from(document.querySelectorAll('.js-plotly-plot')).some(
  gd => (gd._fullData || []).some(t => t.name === 'supernode' && Array.isArray(t.text) && t.text.includes(name)))
"""
GRAPH_READY_JS = """
() => Array.from(document.querySelectorAll('.js-plotly-plot')).some(
  gd => (gd._fullData || []).some(t => t.name === 'features' && t.x && t.x.length > 0))
"""


def _pick_first_option(page, combobox, tries: int = 5) -> None:
    """Open a Streamlit multiselect and click its first option (never "Select all"); a click that lands while
    the page is still rerunning opens nothing, so it is retried."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for _ in range(tries):
        combobox.click()
        try:
            # Streamlit's multiselect may lead its list with "Select all": pick the first real option
            page.get_by_role("option").filter(has_not_text="Select all").first.click(timeout=30_000)
            page.keyboard.press("Escape")
            return
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
    raise AssertionError(f"the multiselect showed no option after {tries} tries")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise AssertionError(f"streamlit exited with code {proc.returncode} before serving")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"streamlit did not answer on {url} within {timeout:.0f} s")


@pytest.fixture()
def server():
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's Chromium with 'make browser' "
                    "(apt-get install chromium); the browser test needs it")
    ARTIFACTS.mkdir(exist_ok=True)
    port = _free_port()
    log = open(ARTIFACTS / "streamlit-server.log", "w")
    t0 = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, START_TIMEOUT_S)
        yield url, t0
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_find_circuit_click_node_download(server):
    from playwright.sync_api import expect, sync_playwright

    from sfc_core.nodes import parse_id

    url, t_start = server
    timings: dict[str, float] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1100}, accept_downloads=True)
            page.set_default_timeout(COMPUTE_TIMEOUT_S * 1000)
            page.goto(url)

            # the IOI preset is preselected; keep it and find the circuit
            find = page.get_by_role("button", name="Find circuit")
            find.wait_for()
            timings["page_ready_s"] = time.time() - t_start
            expect(page.get_by_text("IOI", exact=False).first).to_be_visible()
            t_click = time.time()
            find.click()
            page.wait_for_function(GRAPH_READY_JS, timeout=COMPUTE_TIMEOUT_S * 1000)
            timings["find_circuit_s"] = time.time() - t_click
            timings["cold_start_to_graph_s"] = time.time() - t_start
            graph = page.locator(".js-plotly-plot").first
            graph.scroll_into_view_if_needed()
            page.wait_for_timeout(500)  # let plotly finish its layout
            graph.screenshot(path=str(ARTIFACTS / "graph.png"))

            # click the strongest feature node in the graph itself
            point = page.evaluate(FEATURE_POINT_JS)
            assert point is not None and point["n"] > 0, "no feature node in the figure"
            t_node = time.time()
            page.mouse.move(point["x"], point["y"])
            page.wait_for_timeout(300)
            page.mouse.click(point["x"], point["y"])
            heading = page.get_by_role("heading", name="Top activating examples")
            try:
                heading.wait_for(timeout=120_000)
                timings["clicked_node"] = 1.0
            except Exception:  # noqa: BLE001 - a missed click: fall back to the node list
                timings["clicked_node"] = 0.0
                box = page.get_by_label("Inspect a node (or click one in the graph)")
                box.click()
                page.get_by_role("option").filter(has_text=point["id"]).first.click()
                heading.wait_for()
            timings["node_panel_s"] = time.time() - t_node
            examples = page.locator(".sfc-example")
            expect(examples.first).to_be_visible()
            assert examples.count() >= 1
            node = parse_id(point["id"])
            expect(page.get_by_role("heading", name=f"Feature {node.index} at {node.hook_name}")).to_be_visible()
            abl = page.get_by_role("heading", name="Ablation")
            abl.wait_for()
            summary = page.get_by_text(BEFORE_AFTER).filter(has_text="ablation").first
            summary.wait_for()
            assert BEFORE_AFTER.search(summary.inner_text())
            heading.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "feature_panel.png"), full_page=True)

            page.set_default_timeout(EDIT_TIMEOUT_S * 1000)  # nothing below recomputes a circuit
            # the graph says how much of the behaviour it explains, and its nodes carry labels as text
            expect(page.get_by_text("faithfulness", exact=True).first).to_be_visible()
            texts = page.evaluate(NODE_TEXT_JS)
            assert any(texts), "no node label drawn on the graph"

            # rename the clicked node; the new name is drawn on the graph
            page.get_by_role("textbox", name="Label (your name for this node)").fill("my name mover")
            page.get_by_role("button", name="Rename").click()
            page.wait_for_function("(t) => " + NODE_TEXT_JS + "().some(x => x.includes(t))", arg="my name mover",
                                   timeout=120_000)

            # group two nodes into a supernode: drawn as one hexagon
            page.get_by_role("heading", name="Supernodes (0)").scroll_into_view_if_needed()
            combo = page.get_by_role("combobox", name="Nodes", exact=True)
            members = page.locator("[data-testid='stMultiSelect']").filter(has=combo)
            for i in range(2):
                expect(combo).to_have_count(1, timeout=EDIT_TIMEOUT_S * 1000)  # no stale copy left by a rerun
                _pick_first_option(page, combo)
                expect(members.locator("[data-tag]")).to_have_count(i + 1, timeout=EDIT_TIMEOUT_S * 1000)
            page.get_by_role("textbox", name="Supernode name").fill("movers")
            page.get_by_role("button", name="Make supernode").click()
            page.wait_for_function(SUPERNODE_JS, arg="movers", timeout=120_000)
            page.screenshot(path=str(ARTIFACTS / "supernode.png"), full_page=True)

            # export Neuronpedia JSON and sfc-circuit/2 JSON: both carry the label and the supernode
            docs = {}
            for name in ("Neuronpedia JSON", "Circuit JSON (sfc-circuit/2)"):
                button = page.get_by_role("button", name=name)
                button.scroll_into_view_if_needed()
                with page.expect_download(timeout=60_000) as dl:
                    button.click()
                docs[name] = Path(dl.value.path()).read_text()
                (ARTIFACTS / dl.value.suggested_filename).write_text(docs[name])
            npd = json.loads(docs["Neuronpedia JSON"])
            assert any(n["clerp"] == "my name mover" for n in npd["nodes"])
            assert [s[0] for s in npd["qParams"]["supernodes"]] == ["movers"]
            doc = json.loads(docs["Circuit JSON (sfc-circuit/2)"])
            assert doc["schema"] == "sfc-circuit/2"
            assert doc["nodes"] and doc["metadata"]["method"] == "atp"
            assert any(n.get("label") == "my name mover" for n in doc["nodes"])
            assert [s["name"] for s in doc["supernodes"]] == ["movers"] and len(doc["supernodes"][0]["nodes"]) == 2

            # re-import the sfc-circuit/2 file: the label and the supernode come back
            saved = ARTIFACTS / "reimport.json"
            saved.write_text(docs["Circuit JSON (sfc-circuit/2)"])
            page.locator("section[data-testid='stSidebar'] input[type='file']").set_input_files(str(saved))
            page.get_by_text("Showing the circuit from 'reimport.json'").wait_for(timeout=120_000)
            page.wait_for_function(SUPERNODE_JS, arg="movers", timeout=120_000)
            page.wait_for_function("(t) => " + NODE_TEXT_JS + "().some(x => x.includes(t))", arg="my name mover",
                                   timeout=120_000)
            expect(page.get_by_role("heading", name="Supernodes (1)")).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "reimported.png"), full_page=True)
        finally:
            browser.close()
    (ARTIFACTS / "browser-timings.json").write_text(json.dumps({k: round(v, 2) for k, v in timings.items()},
                                                               indent=1))
    print("browser timings:", timings)
