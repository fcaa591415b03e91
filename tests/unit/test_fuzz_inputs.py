"""Fuzz: bad input never traces back (issue 16). A deterministic set of mutated pair files, circuit files and option
values goes through the library, and a set of bad command lines through the real ``sfc`` in subprocesses.

Every library case must end either in a typed :class:`~sfc_core.errors.SFCError` with a one-line message or in a
documented accept (then the accepted value must go on to work with the next engine step). Every CLI case must exit 2
with one line on stderr, no traceback, no ``*.tmp`` left, and a pre-existing ``--out`` untouched.
"""

from __future__ import annotations

import copy
import json
import random
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from sfc_core import bounds
from sfc_core.attribution import Attribution
from sfc_core.circuit import circuit_nodes, circuit_stats, load_circuit, select_nodes, to_json
from sfc_core.discovery import DiscoverConfig
from sfc_core.errors import SFCError
from sfc_core.nodes import NodeSpace
from sfc_core.pairs import read_pairs, tokenize_pairs

SEED = 20261206
HOOKS = ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post")
D_SAE = 8
#: Values of every wrong type and edge: types, non-finite numbers, huge numbers, empty and hostile text.
WEIRD = [None, True, False, 0, -1, 1, 1.5, 2 ** 63, 10 ** 30, -0.0, float("nan"), float("inf"), float("-inf"),
         "", " ", "abc", "1", "error", "embed", "\ud800", "x" * 30_000, [], [1], {}, {"a": 1}]


class Failures(list):
    def check(self, label: str, fn):
        """Run ``fn``; record ``label`` unless it returns or raises an SFCError with a one-line message."""
        try:
            return fn()
        except SFCError as exc:
            msg = str(exc)
            if not msg.strip() or "\n" in msg:
                self.append(f"{label}: typed error without a one-line message: {msg!r}")
        except Exception as exc:  # noqa: BLE001 - the point of the test
            self.append(f"{label}: untyped {type(exc).__name__}: {str(exc)[:200]}")
        return None


# ------------------------------------------------------------------ pair files
PAIR = {"clean": "the cat sat", "corrupted": "the cats sat", "answer": " on", "wrong_answer": " in"}


def _pair_cases() -> list[tuple[str, bytes]]:
    rng = random.Random(SEED)
    cases = []
    for key in list(PAIR) + ["clean_prefix", "patch_answer"]:
        for value in WEIRD:
            rec = dict(PAIR)
            rec[key] = value
            cases.append((f"{key}={str(value)[:20]!r}", json.dumps(rec).encode()))
    for key in PAIR:
        rec = {k: v for k, v in PAIR.items() if k != key}
        cases.append((f"missing {key}", json.dumps(rec).encode()))
    raw = {
        "5000-digit int": b'{"clean": ' + b"9" * 5000 + b"}",
        "10000 nested arrays": b"[" * 10_000 + b"]" * 10_000,
        "nested 20 objects": b'{"a":' * 20 + b"1" + b"}" * 20,
        "latin-1 bytes": '{"clean": "café"}'.encode("latin-1"),
        "BOM then a pair": b"\xef\xbb\xbf" + json.dumps(PAIR).encode(),
        "CRLF lines": (json.dumps(PAIR) + "\r\n") .encode() * 2,
        "empty file": b"",
        "blank lines": b"\n \n\t\n",
        "null": b"null", "list": b"[]", "string": b'"pair"', "NaN": b"NaN", "number": b"12",
        "truncated": json.dumps(PAIR).encode()[:-3],
        "two objects on a line": json.dumps(PAIR).encode() * 2,
        "lone surrogate escape": b'{"clean": "\\ud800 x", "corrupted": "y", "answer": " a", "wrong_answer": " b"}',
        "NUL byte": json.dumps({**PAIR, "clean": "a\x00b"}).encode(),
        "megabyte prompt": json.dumps({**PAIR, "clean": "word " * 250_000}).encode(),
        "key not text": b'{"1": 2, "clean": "a"}',
        "duplicate keys": b'{"clean": "a", "clean": "b", "corrupted": "c", "answer": " x", "wrong_answer": " y"}',
    }
    cases += list(raw.items())
    for i in range(40):  # random byte noise and random splices of a valid line
        line = bytearray(json.dumps(PAIR).encode())
        for _ in range(rng.randint(1, 4)):
            line[rng.randrange(len(line))] = rng.randrange(256)
        cases.append((f"noise {i}", bytes(line)))
    return cases


@pytest.fixture(scope="module")
def bpe_model():
    from tests.tiny import tiny_bpe_model

    return tiny_bpe_model()


def test_pair_files_fuzz(tmp_path, bpe_model):
    fails, rng, n = Failures(), random.Random(SEED), 0
    for label, data in _pair_cases():
        path = tmp_path / "pairs.jsonl"
        path.write_bytes(data)
        for source in (path, str(path), data.decode("utf-8", "replace").splitlines() or [""]):
            n += 1
            pairs = fails.check(f"read {label}", lambda s=source: read_pairs(s))
            if pairs:
                opts = {"multi_token": rng.choice(["reject", "truncate"]),
                        "length_mismatch": rng.choice(["skip", "align_last"])}
                fails.check(f"tokenize {label}", lambda p=pairs: tokenize_pairs(bpe_model, p, **opts))
    assert n >= 300, n
    assert not fails, "\n".join(fails)


def test_pair_text_rules_are_typed():
    """The issue's examples, each with its message."""
    with pytest.raises(SFCError, match="not valid Unicode"):
        read_pairs([json.dumps({**PAIR, "clean": "\ud800"})])
    with pytest.raises(SFCError, match="JSON cannot read"):
        read_pairs(['{"clean": ' + "9" * 5000 + "}"])
    with pytest.raises(SFCError, match="deeper than"):
        read_pairs(["[" * 10_000 + "]" * 10_000])
    with pytest.raises(SFCError, match="characters; the limit is 20,000"):
        read_pairs([json.dumps({**PAIR, "clean": "a" * 20_001})])
    assert read_pairs([b"\xef\xbb\xbf" + json.dumps(PAIR).encode()])[0].clean == PAIR["clean"]  # BOM accepted


# ------------------------------------------------------------------ circuit files
def base_circuit() -> dict:
    """A valid sfc-circuit/2 document over two tiny sites (latents, an error node, both end points)."""
    nodes = [
        {"id": "embed", "hook_name": "", "layer": -1, "site": "", "feature": "embed", "position": None,
         "effect": None, "activation": None},
        {"id": f"{HOOKS[0]}/3", "hook_name": HOOKS[0], "layer": 0, "site": "resid_post", "feature": 3,
         "position": None, "effect": -0.5, "activation": 1.25, "label": "a latent"},
        {"id": f"{HOOKS[0]}/error", "hook_name": HOOKS[0], "layer": 0, "site": "resid_post", "feature": "error",
         "position": None, "effect": 0.25, "activation": 2.0},
        {"id": f"{HOOKS[1]}/7", "hook_name": HOOKS[1], "layer": 1, "site": "resid_post", "feature": 7,
         "position": None, "effect": 1.0, "activation": 0.5},
        {"id": "metric", "hook_name": "", "layer": 2, "site": "", "feature": "metric", "position": None,
         "effect": None, "activation": None},
    ]
    edges = [{"source": "embed", "target": f"{HOOKS[0]}/3", "weight": 0.1},
             {"source": f"{HOOKS[0]}/3", "target": f"{HOOKS[1]}/7", "weight": -0.2},
             {"source": f"{HOOKS[0]}/error", "target": f"{HOOKS[1]}/7", "weight": 0.3},
             {"source": f"{HOOKS[1]}/7", "target": "metric", "weight": 0.4}]
    meta = {"model": "tiny", "saes": [{"hook_name": h, "source": "bundled", "d_sae": D_SAE} for h in HOOKS],
            "method": "atp", "metric": "logit_diff", "n_pairs": 4, "n_layers": 2}
    return {"schema": "sfc-circuit/2", "metadata": meta, "nodes": nodes, "edges": edges,
            "scores": {"faithfulness": 0.5}, "supernodes": [{"name": "pair", "nodes": [f"{HOOKS[0]}/3",
                                                                                      f"{HOOKS[1]}/7"]}]}


def _circuit_mutations() -> list[tuple[str, object]]:
    """(label, document or raw text/bytes)."""
    out: list[tuple[str, object]] = []

    def mutate(label, fn):
        doc = base_circuit()
        fn(doc)
        out.append((label, doc))

    for v in WEIRD:
        tag = repr(v)[:20]
        mutate(f"metadata={tag}", lambda d, v=v: d.__setitem__("metadata", v))
        mutate(f"saes={tag}", lambda d, v=v: d["metadata"].__setitem__("saes", v))
        mutate(f"saes[0]={tag}", lambda d, v=v: d["metadata"]["saes"].__setitem__(0, v))
        mutate(f"d_sae={tag}", lambda d, v=v: d["metadata"]["saes"][0].__setitem__("d_sae", v))
        mutate(f"n_pairs={tag}", lambda d, v=v: d["metadata"].__setitem__("n_pairs", v))
        for field in ("id", "hook_name", "layer", "feature", "position", "effect", "activation", "label"):
            mutate(f"node.{field}={tag}", lambda d, v=v, f=field: d["nodes"][1].__setitem__(f, v))
        mutate(f"edge.weight={tag}", lambda d, v=v: d["edges"][1].__setitem__("weight", v))
        mutate(f"edge.source={tag}", lambda d, v=v: d["edges"][1].__setitem__("source", v))
        mutate(f"nodes={tag}", lambda d, v=v: d.__setitem__("nodes", v))
        mutate(f"scores={tag}", lambda d, v=v: d.__setitem__("scores", v))
    mutate("feature missing", lambda d: d["nodes"][1].pop("feature"))
    mutate("feature = d_sae", lambda d: d["nodes"][1].__setitem__("feature", D_SAE))
    mutate("position on one node", lambda d: d["nodes"][1].__setitem__("position", 2))
    mutate("duplicate node id", lambda d: d["nodes"].append(copy.deepcopy(d["nodes"][1])))
    mutate("duplicate edge", lambda d: d["edges"].append(copy.deepcopy(d["edges"][1])))
    mutate("self-loop", lambda d: d["edges"].append({"source": f"{HOOKS[1]}/7", "target": f"{HOOKS[1]}/7",
                                                     "weight": 1.0}))
    mutate("cycle", lambda d: d["edges"].append({"source": f"{HOOKS[1]}/7", "target": f"{HOOKS[0]}/3",
                                                 "weight": 1.0}))
    mutate("edge into embed", lambda d: d["edges"].append({"source": f"{HOOKS[1]}/7", "target": "embed",
                                                           "weight": 1.0}))
    mutate("edge out of metric", lambda d: d["edges"].append({"source": "metric", "target": f"{HOOKS[1]}/7",
                                                              "weight": 1.0}))
    mutate("unknown hook", lambda d: d["nodes"][1].__setitem__("hook_name", "blocks.9.hook_resid_post"))
    mutate("schema /3", lambda d: d.__setitem__("schema", "sfc-circuit/3"))
    mutate("no schema", lambda d: d.pop("schema"))
    mutate("edges missing", lambda d: d.pop("edges"))
    mutate("supernode of unknown node", lambda d: d["supernodes"][0]["nodes"].append("nope"))
    text = json.dumps(base_circuit())
    out += [("not UTF-8", text.replace("a latent", "caf\xe9").encode("latin-1")),
            ("BOM text", "\ufeff" + text),
            ("BOM bytes", b"\xef\xbb\xbf" + text.encode()),
            ("5000-digit number", text.replace('"weight": 0.1', '"weight": ' + "9" * 5000)),
            ("deep nesting", '{"schema": "sfc-circuit/2", "metadata": ' + "[" * 10_000 + "]" * 10_000 + "}"),
            ("NaN literal", text.replace('"weight": 0.1', '"weight": NaN')),
            ("Infinity effect", text.replace('"effect": 1.0', '"effect": Infinity')),
            ("top-level list", "[" + text + "]"),
            ("truncated", text[:-10]),
            ("a path that is not there", "/no/such/circuit.json"),
            ("a name with a NUL", "circ\x00uit.json"),
            ("a very long name", "c" * 5000 + ".json")]
    return out


def test_circuit_files_fuzz(tmp_path):
    fails, n = Failures(), 0
    space = NodeSpace(HOOKS, (D_SAE, D_SAE))
    for label, doc in _circuit_mutations():
        sources = [doc] if isinstance(doc, (str, bytes)) else [json.dumps(doc), json.dumps(doc).encode()]
        if not isinstance(doc, (str, bytes)):
            path = tmp_path / "circuit.json"
            path.write_text(json.dumps(doc))
            sources.append(path)
        for src in sources:
            n += 1
            G = fails.check(f"load {label}", lambda s=src: load_circuit(s))
            if G is not None:
                fails.check(f"nodes {label}", lambda g=G: circuit_nodes(g, space))
                fails.check(f"stats {label}", lambda g=G: circuit_stats(g))
                fails.check(f"round trip {label}", lambda g=G: load_circuit(json.dumps(to_json(g))))
    assert n >= 300, n
    assert not fails, "\n".join(fails)


def test_neuronpedia_files_fuzz():
    """A Neuronpedia graph exported here and then mutated: read back or refused with a typed one-line error."""
    from sfc_core.export import to_neuronpedia

    fails, n = Failures(), 0
    space = NodeSpace(HOOKS, (D_SAE, D_SAE))
    base = to_neuronpedia(load_circuit(json.dumps(base_circuit())))
    assert to_json(load_circuit(json.dumps(base)))["nodes"]  # the unmutated export reads back
    for v in WEIRD:
        for where, field in [("nodes", f) for f in ("sfc_id", "influence", "activation", "clerp", "node_id")] + \
                            [("links", f) for f in ("source", "target", "weight")] + [("metadata", "info")]:
            doc = copy.deepcopy(base)
            target = doc["metadata"] if where == "metadata" else doc[where][1]
            target[field] = v
            for src in (json.dumps(doc), json.dumps(doc).encode()):
                n += 1
                G = fails.check(f"np {where}.{field}={v!r:.20}", lambda s=src: load_circuit(s))
                if G is not None:
                    fails.check(f"np nodes {where}.{field}", lambda g=G: circuit_nodes(g, space))
        doc = copy.deepcopy(base)
        doc["qParams"]["supernodes"] = v
        n += 1
        fails.check(f"np supernodes={v!r:.20}", lambda d=doc: load_circuit(json.dumps(d)))
    assert n >= 300, n
    assert not fails, "\n".join(fails)


@pytest.mark.parametrize("mutation, match", [
    (lambda d: d["nodes"][3].__setitem__("effect", float("nan")), f"circuit node {HOOKS[1]}/7: effect"),
    (lambda d: d["edges"][1].__setitem__("weight", "abc"), "weight must be a finite number"),
    (lambda d: d["nodes"][1].__setitem__("feature", D_SAE), f"latent {D_SAE} does not exist"),
    (lambda d: d["nodes"][1].__setitem__("feature", 2.5), "feature must be an integer"),
    (lambda d: d["nodes"].append(copy.deepcopy(d["nodes"][1])), "appears twice"),
    (lambda d: d["edges"].append({"source": f"{HOOKS[1]}/7", "target": f"{HOOKS[0]}/3", "weight": 1}), "cycle"),
    (lambda d: d["edges"].append({"source": "metric", "target": f"{HOOKS[0]}/3", "weight": 1}), "leaves the metric"),
    (lambda d: d["nodes"][1].__setitem__("position", 3), "some nodes have a position"),
    (lambda d: d.__setitem__("metadata", [1]), "metadata must be an object"),
    (lambda d: d["metadata"].__setitem__("saes", ["bundled"]), r"metadata.saes\[0\]"),
    (lambda d: d["metadata"].__setitem__("n_pairs", "abc"), "n_pairs must be a number"),
])
def test_circuit_files_mean_what_they_say(mutation, match):
    """The issue's examples are refused with the offending node or field named."""
    doc = base_circuit()
    mutation(doc)
    with pytest.raises(SFCError, match=match):
        load_circuit(json.dumps(doc))


def test_valid_circuit_is_accepted_exactly():
    G = load_circuit(json.dumps(base_circuit()))
    assert G.number_of_nodes() == 5 and G.number_of_edges() == 4
    assert to_json(G)["nodes"] == to_json(load_circuit(json.dumps(to_json(G))))["nodes"]


# ------------------------------------------------------------------ options
def _attribution() -> Attribution:
    gen = torch.Generator().manual_seed(SEED)
    effects = [torch.randn(D_SAE + 1, generator=gen) for _ in HOOKS]
    return Attribution("atp", "logit_diff", "sum", list(HOOKS), [D_SAE, D_SAE], effects,
                       [e.abs() for e in effects], 4, 1.0, 0.0)


def test_options_fuzz():
    fails, n, attr = Failures(), 0, _attribution()
    fields = ("method", "metric", "aggregation", "node_threshold", "top_k", "top_k_per_layer", "edge_threshold",
              "steps", "multi_token", "length_mismatch", "mask_lambda", "mask_steps", "mask_t_max", "budget",
              "synergy_pool", "target_faithfulness", "ablation")
    for field in fields:
        for value in WEIRD + [10 ** 7, 1e-300]:
            for method in ("atp", "ig", "mask", "fap-synergy"):
                n += 1
                kw = {"top_k": None, "node_threshold": 0.1} if field == "top_k_per_layer" else {}
                fails.check(f"{method} {field}={value!r:.20}",
                            lambda f=field, v=value, m=method, k=kw: DiscoverConfig(**{"method": m, **k, f: v}).check())
    for rule in ("node_threshold", "top_k", "top_k_per_layer"):
        for value in WEIRD:
            n += 1
            fails.check(f"select {rule}={value!r:.20}", lambda r=rule, v=value: select_nodes(attr, **{r: v}))
    assert n >= 300, n
    assert not fails, "\n".join(fails)


def test_unbounded_options_are_refused():
    with pytest.raises(SFCError, match="IG steps must be 1-1000"):
        DiscoverConfig(method="ig", steps=10 ** 7).check()
    with pytest.raises(SFCError, match="whole number"):
        select_nodes(_attribution(), top_k=1.5)
    assert bounds.check("top_k", 3.0) == 3 and "1-1000" in bounds.describe("steps")


# ------------------------------------------------------------------ the real CLI
def _sfc() -> list[str]:
    script = Path(sys.executable).parent / "sfc"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "sfc_core.cli"]


def _cli_cases(d: Path) -> list[list[str]]:
    bad_pairs = d / "bad.jsonl"
    bad_pairs.write_bytes(b'{"clean": "\\ud800", "corrupted": "b", "answer": " a", "wrong_answer": " b"}\n')
    deep = d / "deep.jsonl"
    deep.write_text("[" * 10_000 + "]" * 10_000)
    latin = d / "latin.json"
    latin.write_bytes('{"schema": "sfc-circuit/2", "x": "café"}'.encode("latin-1"))
    bad_circuits = []
    for i, (label, mut) in enumerate([
            ("nan", lambda x: x["nodes"][3].__setitem__("effect", float("nan"))),
            ("cycle", lambda x: x["edges"].append({"source": f"{HOOKS[1]}/7", "target": f"{HOOKS[0]}/3",
                                                   "weight": 1})),
            ("meta", lambda x: x.__setitem__("metadata", "abc")),
            ("feat", lambda x: x["nodes"][1].__setitem__("feature", None)),
            ("folder", lambda x: x["metadata"]["saes"][0].__setitem__("source", str(d)))]):
        doc = base_circuit()
        mut(doc)
        p = d / f"circuit_{label}.json"
        p.write_text(json.dumps(doc))
        bad_circuits.append(p)
    out = d / "out.json"
    disc = ["discover", "--task", "ioi", "--out", str(out)]
    return [
        disc + ["--top-k", "1.5"], disc + ["--top-k", "0"], disc + ["--top-k", "-3"], disc + ["--top-k", "abc"],
        disc + ["--method", "ig", "--steps", "10000000"], disc + ["--steps", "0"], disc + ["--n", "0"],
        disc + ["--n", "1000001"], disc + ["--method", "nope"], disc + ["--metric", "nope"],
        disc + ["--aggregate", "mean"], disc + ["--multi-token", "keep"], disc + ["--length-mismatch", "pad"],
        disc + ["--node-threshold", "nan"], disc + ["--node-threshold", "-1"], disc + ["--edge-threshold", "inf"],
        disc + ["--method", "mask", "--mask-lambda", "0"], disc + ["--method", "mask", "--t-max", "1"],
        disc + ["--method", "fap", "--budget", "0"], disc + ["--target-faithfulness", "3"],
        disc + ["--ablation", "resample"], disc + ["--bogus"], disc + ["--memory-gb", "0.1"],
        disc + ["--top-k", "5", "--node-threshold", "1"],
        ["discover", "--task", "ioi", "--out", str(d)],
        ["discover", "--task", "ioi", "--out", str(d / "missing" / "c.json")],
        ["discover", "--pairs", str(bad_pairs), "--out", str(out)],
        ["discover", "--pairs", str(deep), "--out", str(out)],
        ["discover", "--pairs", str(d / "none.jsonl"), "--out", str(out)],
        ["discover", "--pairs", str(bad_pairs), "--task", "ioi", "--out", str(out)],
        *[["evaluate", "--circuit", str(p), "--out", str(out)] for p in bad_circuits],
        ["evaluate", "--circuit", str(latin), "--out", str(out)],
        ["evaluate", "--circuit", str(bad_circuits[0]), "--out", str(out), "--sizes", "0"],
        ["evaluate", "--circuit", str(bad_circuits[0]), "--out", str(out), "--sizes", "a,b"],
        ["evaluate", "--circuit", str(bad_circuits[0]), "--out", str(d), "--heldout", "names"],
        ["evaluate", "--circuit", str(bad_circuits[0]), "--out", str(out), "--heldout", "moon"],
        ["compare", "--task", "ioi", "--out", str(out), "--sizes", "10,x"],
        ["compare", "--task", "ioi", "--out", str(out), "--synergy-pool", "1"],
        ["compare", "--task", "ioi", "--out", str(d / "missing" / "c.json")],
        ["trace", "--task", "ioi", "--chunk", "0", "--out", str(out)],
        ["lens", "--task", "ioi", "--top-k", "99", "--out", str(out)],
        ["lens", "--task", "ioi", "--run", "both", "--out", str(out)],
        ["trace", "--task", "ioi", "--multi-token", "keep", "--out", str(out)],
        ["heads", "--task", "ioi", "--length-mismatch", "pad", "--out", str(out)],
        ["heads", "--task", "ioi", "--path", "3.1", "--out", str(out)],
        ["tasks", "--n", "0"],
        ["bundle", "build", "--tokens", "0"], ["bundle", "build", "--epochs", "1e9"],
        ["bundle", "check", "--seqs", "-1"],
    ]


def test_cli_bad_input_fuzz(tmp_path):
    cases = _cli_cases(tmp_path)
    out = tmp_path / "out.json"
    out.write_text('{"previous": true}')

    def run(args):
        return args, subprocess.run(_sfc() + args, capture_output=True, text=True, timeout=300, cwd=tmp_path)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, cases))
    fails = []
    for args, r in results:
        lines = r.stderr.strip().splitlines()
        if r.returncode != 2 or len(lines) != 1 or "Traceback" in r.stderr or not lines[0].startswith("error: "):
            fails.append(f"{' '.join(args[:1] + args[-2:])}: exit {r.returncode}, stderr {r.stderr[-300:]!r}")
    assert len(cases) >= 30
    assert not fails, "\n".join(fails)
    assert out.read_text() == '{"previous": true}'
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob("*.partial.json"))


# ------------------------------------------------------------------ interruptions
def test_atomic_write_interrupted_leaves_old_file_and_no_tmp(tmp_path, monkeypatch):
    import os

    from sfc_core import jsonio

    out = tmp_path / "out.json"
    out.write_text("old")

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(jsonio.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        jsonio.write_json_atomic({"new": 1}, out)
    monkeypatch.setattr(jsonio.os, "replace", os.replace)
    assert out.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_sigterm_in_a_command_exits_130_with_one_line(tmp_path):
    """SIGTERM is handled as SIGINT inside a command: one line, exit 130, --out untouched, no temporary file."""
    import signal

    import typer
    from typer.testing import CliRunner

    from sfc_core.cli import INTERRUPTED, user_errors
    from sfc_core.jsonio import write_json_atomic

    out = tmp_path / "out.json"
    out.write_text("old")
    app = typer.Typer()

    @app.command()
    @user_errors
    def work() -> None:
        signal.raise_signal(signal.SIGTERM)  # arrives in the middle of the work
        write_json_atomic({"new": 1}, out)

    before = signal.getsignal(signal.SIGTERM)
    r = CliRunner().invoke(app, [])
    assert r.exit_code == 130 and r.output.strip() == INTERRUPTED
    assert out.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.json"]
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_circuit_file_alone_never_opens_a_folder(tmp_path):
    """SAE sources: the bundle and SAE Lens release ids load; a folder only when the user passed it (--sae-dir)."""
    from sfc_core.saes import check_sae_source, known_releases

    sae_dir = tmp_path / "my_saes"
    (sae_dir / "L3").mkdir(parents=True)
    assert check_sae_source("bundled") == "bundled"
    release = sorted(known_releases())[0]
    assert check_sae_source(f"{release}/some_id") == "release"
    assert check_sae_source(str(sae_dir / "L3"), [sae_dir]) == "folder"
    assert check_sae_source(str(sae_dir), [sae_dir]) == "folder"
    for source, allowed in ((str(sae_dir / "L3"), []), (str(tmp_path), [sae_dir]),
                            (str(sae_dir / ".." / "elsewhere"), [sae_dir]), ("/etc", [sae_dir])):
        with pytest.raises(SFCError, match="pass that folder with --sae-dir"):
            check_sae_source(source, allowed)
    for bad in (None, "", 3, ["bundled"]):
        with pytest.raises(SFCError, match="release id or a folder"):
            check_sae_source(bad)
