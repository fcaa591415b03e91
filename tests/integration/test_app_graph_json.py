"""The explorer opens a circuit-tracer attribution-graph file (``streamlit.testing.v1.AppTest``): the graph is
drawn with its nodes, and the page says the faithfulness is not measured. Loads the bundled model once (the page
header needs it); no circuit is computed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.test_graph_json import circuit_tracer_graph

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 600  # a cold model load is ~25 s on a busy 2-core CPU


def test_explorer_opens_a_circuit_tracer_graph():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    data = json.dumps(circuit_tracer_graph(), indent=2).encode()
    at.file_uploader(key="circuit_upload").upload("austin.json", data, "application/json").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    charts = [c for c in at.get("plotly_chart") if "circuit_graph" in (c.proto.id or "")]
    assert len(charts) == 1
    fig = json.loads(charts[0].proto.spec)
    drawn = {cd[0] for tr in fig["data"] for cd in (tr.get("customdata") or []) if cd}
    want = {"blocks.1.hook_mlp_out/123@4", "blocks.2.hook_mlp_out/9@5", "blocks.3.hook_mlp_out/77@5",
            "blocks.2.hook_mlp_out/error@5", "embed", "metric"}
    supernode_members = {"blocks.1.hook_mlp_out/123@4", "blocks.3.hook_mlp_out/77@5"}  # drawn as hexagons
    assert want - supernode_members <= drawn, drawn
    assert "Texas" in json.dumps(fig) and "say Austin" in json.dumps(fig)  # the two supernodes' markers
    assert {m.label: m.value for m in at.metric}["nodes"] == "4"  # 3 transcoder features + 1 error node
    assert any("Faithfulness not measured" in w.value for w in at.warning), [w.value for w in at.warning]
    assert any("circuit-tracer graph 'austin'" in c.value for c in at.caption)
    options = at.selectbox(key="node_pick").options  # "L1 #123 @4  ·  Texas  ·  {node id}"
    for n in want - {"embed", "metric"}:
        assert any(o.endswith(n) for o in options), (n, options)
    assert any("Texas" in o for o in options)  # the file's clerp is the node's label
