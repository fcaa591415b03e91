"""End-to-end: the real app in headless Chromium (Playwright), as a user would drive it.

Starts the app as ``make app`` does (``streamlit run app.py --server.headless true``, so with the repo's
``.streamlit/config.toml`` and its file-watcher setting) on a free port, keeps the IOI preset, clicks
**Find circuit**, waits for the graph, measures the idle CPU of the server, switches to top-k 100 and times a
slider move from release to redraw, clicks a feature node *in the Plotly graph* (its pixel position is read
from the figure), checks the feature panel (top activating examples, ablation before → after), finds the
faithfulness and node labels on the page, renames the node, makes a supernode, downloads Neuronpedia JSON
(prompt and tokens included) and sfc-circuit/2 JSON, re-imports the latter and finds the label and the
supernode again; then uploads pairs, visits every other page and finds them still there, and stops a mask
run with *Stop*. Screenshots and timings go to ``test-artifacts/``.

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
# A signature of what the circuit figure draws (node ids and texts per trace): changes when it is redrawn.
GRAPH_SIGNATURE_JS = """
() => {
  const gd = Array.from(document.querySelectorAll('.js-plotly-plot')).find(
    g => (g._fullData || []).some(t => t.name === 'features'));
  if (!gd) return null;
  return JSON.stringify(gd._fullData.map(t => [t.name, t.customdata || null, t.text || null]));
}
"""
GRAPH_READY_JS = """
() => Array.from(document.querySelectorAll('.js-plotly-plot')).some(
  gd => (gd._fullData || []).some(t => t.name === 'features' && t.x && t.x.length > 0))
"""


IDLE_S = 10.0
IDLE_CPU_MAX = 10.0  # percent of one core
SLIDER_REDRAW_TARGET_S = 0.3
PAIRS = [  # three IOI-like pairs of equal token length, uploaded as a user's own file
    {"clean": "When Mary and John went to the store, John gave a drink to", "corrupted":
     "When Mary and John went to the store, Mary gave a drink to", "answer": " Mary", "wrong_answer": " John"},
    {"clean": "When Anna and Tom went to the park, Tom gave a ball to", "corrupted":
     "When Anna and Tom went to the park, Anna gave a ball to", "answer": " Anna", "wrong_answer": " Tom"},
    {"clean": "When Sarah and James went to the shop, James gave a book to", "corrupted":
     "When Sarah and James went to the shop, Sarah gave a book to", "answer": " Sarah", "wrong_answer": " James"},
]
OTHER_PAGES = ("Feature", "Evaluate", "Model and SAEs", "Tour")


def _wait_idle(page, timeout_s: float = EDIT_TIMEOUT_S) -> None:
    """Wait until the app's script is not running (Streamlit's "Running…" status widget is gone)."""
    page.wait_for_timeout(300)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
                           timeout=timeout_s * 1000)


def _go_to(page, name: str) -> None:
    """Open a page from the sidebar's navigation."""
    page.locator("[data-testid='stSidebarNav'] a").filter(has_text=re.compile(f"^{re.escape(name)}$")).first.click()
    _wait_idle(page)


def _choose(page, label: str, option: str | re.Pattern) -> None:
    """Pick ``option`` in the selectbox labelled ``label``."""
    page.locator("[data-testid='stSelectbox']").filter(has_text=label).first.click()
    page.get_by_role("option", name=option).first.click()
    _wait_idle(page)


def _redraw_seconds(page, act) -> float:
    """Seconds from ``act()`` (a slider release) until the circuit figure draws something else."""
    before = page.evaluate(GRAPH_SIGNATURE_JS)
    t0 = time.perf_counter()
    act()
    page.wait_for_function(f"(b) => {{ const s = ({GRAPH_SIGNATURE_JS})(); return s !== null && s !== b; }}",
                           arg=before, polling="raf", timeout=EDIT_TIMEOUT_S * 1000)
    return time.perf_counter() - t0


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


def _rounded(v):
    return round(v, 3) if isinstance(v, float) else [round(x, 3) for x in v]


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
    # as `make app` starts it (Makefile), plus only the address to listen on
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, START_TIMEOUT_S)
        yield url, t0, proc
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

    url, t_start, proc = server
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

            # idle: nobody touches the app, and the server must not spin a core (config.toml: no file watcher)
            import psutil

            _wait_idle(page)
            timings["idle_cpu_percent"] = psutil.Process(proc.pid).cpu_percent(interval=IDLE_S)
            assert timings["idle_cpu_percent"] < IDLE_CPU_MAX, f"idle server at {timings['idle_cpu_percent']} % CPU"

            # live controls: top-k 100, then single steps; only the circuit view reruns
            page.get_by_text("top-k", exact=True).click()
            _wait_idle(page)
            thumb = page.locator("[data-testid='stSlider']").filter(has_text="Nodes: top-k").get_by_role("slider")
            thumb.focus()
            timings["slider_to_top100_s"] = _redraw_seconds(page, lambda: thumb.press("End"))
            _wait_idle(page)
            redraws, server = [], []
            for key in ("ArrowLeft", "ArrowRight", "ArrowLeft", "ArrowRight", "ArrowLeft"):
                thumb.focus()
                redraws.append(_redraw_seconds(page, lambda k=key: thumb.press(k)))
                _wait_idle(page)
                drawn = page.get_by_text(re.compile(r"Selected and drawn in \d+ ms")).first.inner_text()
                server.append(int(re.search(r"drawn in (\d+) ms", drawn).group(1)) / 1000)
            timings["slider_redraw_s"] = sorted(redraws)[len(redraws) // 2]
            timings["slider_redraw_all_s"] = redraws
            timings["slider_server_side_s"] = server  # the fragment's select + draw, of the redraw time above
            # a full-page rerun takes 1.7-2.1 s here; the fragment must stay well under it even on a loaded CI
            assert timings["slider_redraw_s"] < 1.5, f"slider redraws took {redraws} s"
            graph.screenshot(path=str(ARTIFACTS / "graph_top100.png"))

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
            graph.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "graph_highlight.png"))

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
            assert npd["metadata"]["prompt"] and npd["metadata"]["prompt_tokens"], "Neuronpedia JSON without prompt"
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
            # a rerun can leave a stale copy of the panel on screen for a moment: wait until one remains
            supernodes_heading = page.get_by_role("heading", name="Supernodes (1)")
            expect(supernodes_heading).to_have_count(1, timeout=EDIT_TIMEOUT_S * 1000)
            expect(supernodes_heading).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "reimported.png"), full_page=True)

            # the user's own pairs and choices survive a visit to every other page
            pairs_file = ARTIFACTS / "browser-pairs.jsonl"
            pairs_file.write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
            page.locator("[data-testid='stFileUploader']").filter(has_text="upload prompt pairs") \
                .locator("input[type='file']").set_input_files(str(pairs_file))
            page.get_by_text(f"Loaded {len(PAIRS)} pairs from 'browser-pairs.jsonl'").wait_for()
            _wait_idle(page)
            _choose(page, "Method", re.compile("^mask"))
            steps = page.get_by_label("Mask training steps")
            steps.fill("2000")
            steps.press("Enter")
            _wait_idle(page)
            for name in OTHER_PAGES:
                _go_to(page, name)
            _go_to(page, "app")
            expect(page.get_by_text(f"Tokenization and validity — {len(PAIRS)} pairs").first).to_be_visible()
            expect(page.get_by_role("combobox", name="Task preset")).to_have_value("(custom table / upload)")
            expect(page.get_by_role("combobox", name="Method")).to_have_value(re.compile("^mask"))
            expect(page.get_by_label("Mask training steps")).to_have_value("2000")
            expect(page.get_by_text("Estimated run time").first).to_be_visible()

            # a long mask run: progress with an ETA, then Stop leaves a "stopped" status
            page.get_by_role("button", name="Find circuit").click()
            page.get_by_text(re.compile(r"mask · \d+% · .* elapsed · about .* left")).first.wait_for(
                timeout=COMPUTE_TIMEOUT_S * 1000)
            t_stop = time.time()
            page.get_by_test_id("stMainBlockContainer").get_by_role("button", name="Stop").click()
            page.get_by_text(re.compile(r"Finding the circuit: stopped after")).first.wait_for(timeout=120_000)
            timings["stop_s"] = time.time() - t_stop
            page.screenshot(path=str(ARTIFACTS / "stopped.png"), full_page=True)
        finally:
            browser.close()
            rounded = {k: _rounded(v) for k, v in timings.items()}
            (ARTIFACTS / "browser-timings.json").write_text(json.dumps(rounded, indent=1))
            print("browser timings:", json.dumps(rounded))
