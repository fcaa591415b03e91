"""Neuronpedia-schema graph JSON read back into a circuit graph (``export.read_graph_json``): this project's own
export, and circuit-tracer's attribution-graph files (``create_graph_files``, circuit-tracer 0.5.0)."""

from __future__ import annotations

import copy
import json

import networkx as nx
import pytest

from sfc_core import annotations as A
from sfc_core import circuit as C
from sfc_core import export as X
from sfc_core import nodes as N
from sfc_core.errors import InputError

H1, H3 = "blocks.1.hook_resid_post", "blocks.3.hook_resid_post"


# ------------------------------------------------------------------ (a) our own export, read back
def small_circuit() -> nx.DiGraph:
    """A position-resolved circuit with labels, an automatic label, supernodes and scores."""
    G = nx.DiGraph()
    G.graph.update({"model": "tiny-model", "method": "atp", "metric": "logit_diff", "n_layers": 4,
                    "aggregation": "none", "n_pairs": 3, "node_threshold": 0.1,
                    "saes": [{"hook_name": H1, "source": "test", "d_sae": 16}],
                    "scores": {"faithfulness": 0.8, "completeness": 0.1},
                    "prompt_tokens": ["When", " Mary", " and", " John"]})
    units = [(N.latent(H1, 3, 1), -0.9, 2.5), (N.latent(H1, 7, 3), 0.4, 1.0), (N.error(H1, 3), -0.2, 0.7),
             (N.latent(H3, 11, 3), -0.6, 3.0), (N.error(H3, 3), 0.05, None)]
    for node, effect, act in units:
        G.add_node(node.id, **N.node_attrs(node), effect=effect, activation=act)
    for end in (N.EMBED, N.METRIC):
        G.add_node(end.id, **N.node_attrs(end, None, 4), effect=None, activation=None)
    a, b, e1, c, e3 = (u.id for u, _, _ in units)
    for u, v, w in [("embed", a, 0.3), ("embed", b, -0.1), (a, c, -0.5), (b, c, 0.2), (e1, c, -0.05),
                    (c, "metric", -0.6), (e3, "metric", 0.05), (a, "metric", -0.3)]:
        G.add_edge(u, v, weight=w)
    A.attach_auto_labels(G, lambda hook, f: "' Mary'|' John'" if f == 3 else "")
    A.set_label(G, c, "name mover")
    A.add_supernode(G, "names", [a, b])
    A.add_supernode(G, "late", [c, e3])
    return G


def _fields(G) -> tuple:
    """What must survive the trip: node fields and labels, edges and weights, supernodes."""
    keep = ("hook_name", "layer", "feature", "position", "effect", "activation", "label", "auto_label")
    nodes = {n: {k: d.get(k) for k in keep} for n, d in G.nodes(data=True)}
    edges = {(u, v): pytest.approx(d["weight"]) for u, v, d in G.edges(data=True)}
    return nodes, edges, A.supernodes(G)


def test_own_export_reads_back_from_text_bytes_path_and_dict(tmp_path):
    G = small_circuit()
    doc = X.to_neuronpedia(G, slug="round trip")
    text = json.dumps(doc)
    path = tmp_path / "graph.json"
    path.write_text(text)
    for source in (text, text.encode(), path, str(path), copy.deepcopy(doc)):
        H = X.read_graph_json(source)
        assert _fields(H) == _fields(G)
        assert H.graph["scores"] == G.graph["scores"] and H.graph["prompt_tokens"] == G.graph["prompt_tokens"]
        assert H.graph["model"] == "tiny-model" and H.graph["method"] == "atp"
    assert _fields(C.load_circuit(text)) == _fields(G)  # the circuit-file reader takes it too


# ------------------------------------------------------------------ (b) a circuit-tracer file
def _cantor(x: int, y: int) -> int:
    return (x + y) * (x + y + 1) // 2 + y


def ct_node(node_id, feature, layer, ctx, ftype, js, clerp="", influence=None, activation=None, prob=0.0,
            target=False) -> dict:
    """One node as circuit-tracer 0.5.0's ``Node.model_dump()`` writes it (every field, in its order)."""
    return {"node_id": node_id, "feature": feature, "layer": layer, "ctx_idx": ctx, "feature_type": ftype,
            "token_prob": prob, "is_target_logit": target, "run_idx": 0, "reverse_ctx_idx": 0, "jsNodeId": js,
            "clerp": clerp, "influence": influence, "activation": activation}


def feature(layer, feat, pos, clerp="", influence=0.3, activation=1.0):
    return ct_node(f"{layer}_{feat}_{pos}", _cantor(layer, feat), str(layer), pos, "cross layer transcoder",
                   f"{layer}_{feat}-0", clerp, influence, activation)


def mlp_error(layer, pos, influence=0.5):
    return ct_node(f"0_{layer}_{pos}", -1, str(layer), pos, "mlp reconstruction error", f"{layer}_{pos}-0",
                   influence=influence)


def token(pos, vocab, influence=0.9):
    return ct_node(f"E_{vocab}_{pos}", pos, "E", pos, "embedding", f"E_{vocab}-{pos}", influence=influence)


def logit(pos, vocab, tok, n_layers, prob, target):
    layer = str(n_layers + 1)
    return ct_node(f"{layer}_{vocab}_{pos}", vocab, layer, pos, "logit", f"L_{vocab}-{pos}",
                   f'Output "{tok}" (p={prob:.3f})', prob=prob, target=target)


def circuit_tracer_graph() -> dict:
    """A small graph in circuit-tracer's file format: 4 layers, 6 prompt tokens, 3 transcoder features, one MLP
    error, 6 embeddings and 2 logit targets (p = 0.6 and 0.2), and two supernodes (one holding a logit)."""
    tokens = ["<bos>", "The", " capital", " of", " Texas", " is"]
    vocab = [2, 651, 6037, 576, 9447, 603]
    nodes = [feature(1, 123, 4, "Texas"), feature(2, 9, 5, "capital cities"), mlp_error(2, 5),
             feature(3, 77, 5, "say Austin\n"), *(token(p, v) for p, v in enumerate(vocab)),
             logit(5, 22605, " Austin", 4, 0.6, True), logit(5, 573, " the", 4, 0.2, False)]
    links = [("E_9447_4", "1_123_4", 2.0), ("E_9447_4", "3_77_5", 0.25), ("E_603_5", "3_77_5", 0.5),
             ("1_123_4", "3_77_5", 1.5), ("1_123_4", "2_9_5", 0.8), ("0_2_5", "3_77_5", -0.3),
             ("3_77_5", "5_22605_5", 4.0), ("3_77_5", "5_573_5", -1.0), ("2_9_5", "5_22605_5", 1.0),
             ("E_603_5", "5_22605_5", 0.1)]
    return {
        "metadata": {"slug": "austin", "scan": "gemma-2-2b", "transcoder_list": [], "prompt_tokens": tokens,
                     "prompt": "".join(tokens), "node_threshold": 0.8, "schema_version": 1},
        "qParams": {"pinnedIds": [], "supernodes": [["Texas", "1_123_4"], ["say Austin", "3_77_5", "5_22605_5"]],
                    "linkType": "both", "clickedId": "", "sg_pos": ""},
        "nodes": nodes,
        "links": [{"source": s, "target": t, "weight": w} for s, t, w in links],
    }


def _tc(layer, feat, pos):
    return f"blocks.{layer}.hook_mlp_out/{feat}@{pos}"


def test_circuit_tracer_file_is_read():
    G = X.read_graph_json(json.dumps(circuit_tracer_graph()))
    f1, f2, f3, err = _tc(1, 123, 4), _tc(2, 9, 5), _tc(3, 77, 5), "blocks.2.hook_mlp_out/error@5"
    assert set(G.nodes) == {f1, f2, f3, err, "embed", "metric"}
    kinds = {n: N.kind_of(n, d) for n, d in G.nodes(data=True)}
    assert kinds == {f1: "latent", f2: "latent", f3: "latent", err: "error", "embed": "embed", "metric": "metric"}
    d = G.nodes[f1]
    assert (d["hook_name"], d["layer"], d["feature"], d["position"]) == ("blocks.1.hook_mlp_out", 1, 123, 4)
    assert (G.nodes[err]["layer"], G.nodes[err]["position"]) == (2, 5)
    assert G.nodes["embed"]["layer"] == -1 and G.nodes["metric"]["layer"] == 4 and G.graph["n_layers"] == 4
    assert G.nodes[f1]["activation"] == 1.0 and all(d["effect"] is None for _, d in G.nodes(data=True))
    # labels: clerp, control characters written as escapes
    assert G.nodes[f1]["label"] == "Texas" and G.nodes[f3]["label"] == "say Austin\\n"
    assert "label" not in G.nodes[err]
    # weights: embeddings summed; logits weighted by token_prob (0.6 and 0.2) and summed
    w = {(u, v): d["weight"] for u, v, d in G.edges(data=True)}
    assert w == pytest.approx({("embed", f1): 2.0, ("embed", f3): 0.75, (f1, f3): 1.5, (f1, f2): 0.8,
                               (err, f3): -0.3, (f3, "metric"): 0.6 * 4.0 + 0.2 * -1.0, (f2, "metric"): 0.6,
                               ("embed", "metric"): 0.06})
    # supernodes: the logit member is part of the metric, so it is left out
    assert A.supernodes(G) == [{"name": "Texas", "nodes": [f1]}, {"name": "say Austin", "nodes": [f3]}]
    meta = G.graph
    assert meta["model"] == "gemma-2-2b" and meta["method"] == "circuit-tracer" and meta["aggregation"] == "none"
    assert meta["prompt_tokens"][4] == " Texas" and meta["prompt"] == "<bos>The capital of Texas is"
    imp = meta["imported"]
    assert imp["format"] == "circuit-tracer" and imp["slug"] == "austin" and imp["node_threshold"] == 0.8
    assert [(lg["token"], lg["token_prob"], lg["is_target_logit"]) for lg in imp["logits"]] == \
        [(" Austin", 0.6, True), (" the", 0.2, False)]
    assert imp["logit_weights"] == "token_prob" and len(imp["notes"]) == 2
    assert "scores" not in meta  # a circuit-tracer file carries no faithfulness


def test_circuit_tracer_file_through_every_entry(tmp_path):
    doc = circuit_tracer_graph()
    path = tmp_path / "austin.json"
    path.write_text(json.dumps(doc, indent=2))
    want = X.read_graph_json(doc)
    for G in (X.read_graph_json(path), C.load_circuit(path), C.load_circuit(path.read_bytes()),
              X.from_neuronpedia(doc)):
        assert set(G.nodes) == set(want.nodes) and set(G.edges) == set(want.edges)
    for n in want.nodes:
        N.parse_id(n)  # every id is a node id (the app checks this)
    # written as an sfc-circuit file and read back: the same graph
    again = C.from_json(json.loads(json.dumps(C.to_json(want))))
    assert _fields(again) == _fields(want) and again.graph["imported"] == want.graph["imported"]
    # and re-exported to Neuronpedia JSON, our reader takes it back
    assert _fields(X.read_graph_json(X.to_neuronpedia(want))) == _fields(want)


def test_circuit_tracer_logit_weights_without_probabilities():
    doc = circuit_tracer_graph()
    for node in doc["nodes"]:
        node["token_prob"] = 0.0
    G = X.read_graph_json(doc)
    assert G.edges[_tc(3, 77, 5), "metric"]["weight"] == pytest.approx(4.0)  # the target logit only
    assert G.graph["imported"]["logit_weights"] == "is_target_logit"
    for node in doc["nodes"]:
        node["is_target_logit"] = False
    G = X.read_graph_json(doc)
    assert G.edges[_tc(3, 77, 5), "metric"]["weight"] == pytest.approx(0.5 * 4.0 + 0.5 * -1.0)


def test_circuit_tracer_supernode_names_made_unique_and_clerps_trimmed():
    doc = circuit_tracer_graph()
    doc["qParams"]["supernodes"] = [["group", "1_123_4"], ["group", "2_9_5"], ["", "3_77_5"], ["emb", "E_2_0"]]
    doc["nodes"][0]["clerp"] = "x" * 500
    G = X.read_graph_json(doc)
    assert [s["name"] for s in A.supernodes(G)] == ["group", "group (2)", "supernode"]
    assert len(G.nodes[_tc(1, 123, 4)]["label"]) == A.MAX_LABEL_CHARS
    assert any("supernode(s) of only embedding" in note for note in G.graph["imported"]["notes"])


# ------------------------------------------------------------------ (c) bad input
def _mutated(fn) -> dict:
    doc = circuit_tracer_graph()
    fn(doc)
    return doc


def _node(doc, node_id) -> dict:
    return next(n for n in doc["nodes"] if n["node_id"] == node_id)


BAD = [
    (lambda d: d.pop("links"), "not a Neuronpedia graph"),
    (lambda d: d.update(nodes={"a": 1}), "not a Neuronpedia graph"),
    (lambda d: d.update(qParams=[1]), "qParams must be objects"),
    (lambda d: _node(d, "2_9_5").update(feature_type="sae latent"), "unknown feature_type 'sae latent'"),
    (lambda d: _node(d, "2_9_5").pop("feature_type"), "unknown feature_type None"),
    (lambda d: d["links"].append({"source": "1_123_4", "target": "9_9_9", "weight": 1.0}),
     "names a node not in the graph"),
    (lambda d: d["links"].append({"source": 5, "target": "3_77_5", "weight": 1.0}), "names a node not in the graph"),
    (lambda d: d["links"][0].update(weight="0.5"), "weight must be a finite number"),
    (lambda d: d["links"][0].update(weight=float("nan")), "weight must be a finite number"),
    (lambda d: d["links"][0].update(weight=True), "weight must be a finite number"),
    (lambda d: d["links"][0].pop("weight"), "weight must be a finite number"),
    (lambda d: d["links"].append({"source": "3_77_5", "target": "1_123_4", "weight": 1.0}), "cycle"),
    (lambda d: d["links"].append({"source": "E_2_0", "target": "E_651_1", "weight": 1.0}), "from a node to itself"),
    (lambda d: d["links"].append({"source": "5_573_5", "target": "3_77_5", "weight": 1.0}), "leaves the metric"),
    (lambda d: d["nodes"].append(copy.deepcopy(d["nodes"][0])), "appears twice"),
    # circuit-tracer 0.5.0's own collision: error node (layer 2, pos 5) "0_2_5" = feature 2 of layer 0 at pos 5
    (lambda d: d["nodes"].append({**_node(d, "2_9_5"), "node_id": "0_2_5", "layer": "0", "ctx_idx": 5}),
     "appears twice \\(an MLP error node and a layer-0 feature.*issue #78\\)"),
    (lambda d: _node(d, "2_9_5").update(layer="two"), "layer must be a whole number"),
    (lambda d: _node(d, "2_9_5").update(ctx_idx=-1), "ctx_idx must be a whole number"),
    (lambda d: _node(d, "2_9_5").update(node_id="2_x_5"), "node_id must be"),
    (lambda d: _node(d, "2_9_5").update(layer="1"), "node_id must be"),
    (lambda d: _node(d, "2_9_5").update(activation="big"), "activation must be a finite number"),
    (lambda d: _node(d, "2_9_5").update(clerp=7), "clerp must be text"),
    (lambda d: _node(d, "5_573_5").update(token_prob=2), "token_prob must be a probability"),
    (lambda d: d["nodes"].append({**_node(d, "0_2_5"), "node_id": "2_err_5"}), "are the same node here"),
    (lambda d: d["qParams"].update(supernodes=[["x", "nope"]]), "'nope', which is not a node"),
    (lambda d: d["qParams"].update(supernodes=[["x"]]), "must be \\[name, node_id"),
    (lambda d: d["qParams"].update(supernodes=[[3, "1_123_4"]]), "name must be text"),
    (lambda d: d["qParams"].update(supernodes=[["a", "1_123_4"], ["b", "1_123_4"]]), "in both supernode"),
    (lambda d: d["metadata"].update(prompt_tokens="The capital"), "prompt_tokens must be a list"),
    (lambda d: d["nodes"][0].update(sfc_id="blocks.1.hook_resid_post/3"), "has no sfc_id, but others have"),
]


@pytest.mark.parametrize("mutation, message", BAD)
def test_bad_graph_files_raise_one_line_input_errors(mutation, message):
    doc = _mutated(mutation)
    for source in (doc, json.dumps(doc)):
        with pytest.raises(InputError, match=message) as info:
            X.read_graph_json(source)
        assert "\n" not in str(info.value)


def test_bad_files_and_text(tmp_path):
    with pytest.raises(InputError, match="not found"):
        X.read_graph_json(tmp_path / "missing.json")
    with pytest.raises(InputError, match="not valid JSON"):
        X.read_graph_json('{"nodes": [')
    with pytest.raises(InputError, match="not UTF-8"):
        X.read_graph_json(b'{"nodes": "\xff"}')
    with pytest.raises(InputError, match="deeper than"):
        X.read_graph_json('{"nodes": ' + "[" * 40 + "]" * 40 + ', "links": []}')
    with pytest.raises(InputError, match="the limit is"):
        X.read_graph_json('{"nodes": [], "links": [], "pad": "' + "x" * (21 * 1024 * 1024) + '"}')
    with pytest.raises(InputError, match="not a Neuronpedia graph"):
        X.read_graph_json('{"schema": "sfc-circuit/2", "nodes": [], "edges": []}')
    with pytest.raises(InputError, match="not a circuit file"):  # the circuit-file reader: another schema
        C.load_circuit('{"hello": "world"}')


def test_circuit_tracer_fuzz_gives_a_graph_or_a_typed_one_line_error():
    """Every field of a node, a link, the metadata and qParams set to odd values: read, or refused with an
    :class:`~sfc_core.errors.SFCError` of one line (never another exception)."""
    from sfc_core.errors import SFCError

    weird = [None, True, 0, -1, 1.5, 2 ** 63, 10 ** 30, float("nan"), float("inf"), "", " ", "abc", "1", "E",
             "\ud800", "x" * 30_000, [], [1], {}, {"a": 1}]
    base = circuit_tracer_graph()
    cases = [("nodes", i, f) for i in (0, 2, 4, 10) for f in base["nodes"][0]] + \
            [("links", 0, f) for f in ("source", "target", "weight")] + \
            [("metadata", None, f) for f in base["metadata"]] + [("qParams", None, "supernodes")]
    bad, n = [], 0
    for where, i, field in cases:
        for v in weird:
            doc = copy.deepcopy(base)
            target = doc[where] if i is None else doc[where][i]
            target[field] = v
            n += 1
            try:
                G = X.read_graph_json(json.dumps(doc))
                C.to_json(G)
            except SFCError as exc:
                if not str(exc).strip() or "\n" in str(exc):
                    bad.append(f"{where}[{i}].{field}={v!r:.20}: {exc!r:.200}")
            except Exception as exc:  # noqa: BLE001 - the point of the test
                bad.append(f"{where}[{i}].{field}={v!r:.20}: untyped {type(exc).__name__}: {exc!s:.200}")
    assert n > 1000 and not bad, "\n".join(bad[:20])
