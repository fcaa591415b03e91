"""The engine on the bundled model and SAEs: splice fidelity, discovery, evaluation, CLI round trip."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bundled():
    from sfc_core.model import load_model
    from sfc_core.saes import load_bundled_saes

    model = load_model()
    return model, load_bundled_saes(model)


def test_bundled_saes_reconstruct_as_recorded(bundled):
    """Each shipped SAE, spliced by the engine over the SAE corpus' own held-out split (the first
    ``heldout_sae_rows()`` sequences, 17,920 tokens; special tokens excluded), explains the fraction of variance
    recorded for that split in bundle.json (``fve_sae_heldout``; the whole extended held-out set, 221k tokens,
    would take ~10 min here)."""
    from sfc_core.bundle import heldout_sae_rows, load_heldout_tokens, load_manifest, special_positions
    from sfc_core.splice import embed, encode, make_sites, run_from

    model, saes = bundled
    tokens = load_heldout_tokens()[:heldout_sae_rows()].long()
    manifest = load_manifest()
    sites = make_sites(model, saes)
    acc = [[0.0, 0.0, 0.0, 0] for _ in sites]  # Σ‖ε‖², Σx, Σ‖x‖², n

    def record(i, x, normal):
        f, err = encode(sites[i], x)
        xs, es = x[normal], err[normal]
        a = acc[i]
        a[0] += float(es.pow(2).sum())
        a[1] = a[1] + xs.sum(0)
        a[2] += float(xs.pow(2).sum())
        a[3] += len(xs)
        return x

    with torch.no_grad():
        for b in range(0, len(tokens), 16):
            toks = tokens[b:b + 16]
            normal = ~special_positions(toks, list(model.tokenizer.all_special_ids))
            resid, _ = embed(model, toks)
            run_from(model, sites, resid, 0, lambda i, x: record(i, x, normal), stop_block=sites[-1].n_blocks_before)
    for site, (sq_err, total, sq_sum, n) in zip(sites, acc):
        fve = 1 - sq_err / (sq_sum - float(total.pow(2).sum()) / n)
        recorded = manifest["quality"][site.hook_name]["fve_sae_heldout"]
        assert abs(fve - recorded) < 0.01, (site.hook_name, fve, recorded)
        assert fve >= 0.80


def test_ioi_circuit_beats_random(bundled):
    from sfc_core.discovery import DiscoverConfig, discover, evaluate
    from sfc_core.tasks import get_task_pairs

    model, saes = bundled
    pairs = get_task_pairs(model, "ioi", n=8)
    d = discover(model, saes, pairs, DiscoverConfig(method="atp", top_k=60, edges=True))
    assert d.runs.m_clean.mean() > 0 > d.runs.m_corrupted.mean()
    assert len([n for n in d.graph if n not in ("embed", "metric")]) == 60
    assert d.graph.number_of_edges() > 0
    # Under template-aware mean ablation a top-60 IOI circuit explains nothing (measured: −0.03); the circuit
    # that reaches faithfulness 0.8 (measured: 1,268 nodes, 0.823) must beat random nodes of its size (0.002).
    G = d.select(target_faithfulness=0.8)
    n = G.graph["target_search"]["n_nodes"]
    report = evaluate(d.runs, G, sizes=[n])
    assert report["faithfulness"] >= 0.8
    assert report["curve"]["faithfulness"][0] > report["curve"]["random_faithfulness"][0] + 0.5
    assert report["m_full"] == pytest.approx(float(d.runs.m_clean.mean()), abs=1e-3)


def test_cli_discover_evaluate_verify(tmp_path):
    from sfc_core.cli import app

    runner = CliRunner()
    out = tmp_path / "c.json"
    r = runner.invoke(app, ["discover", "--task", "sva", "--n", "6", "--method", "atp", "--top-k", "20",
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert doc["schema"] == "sfc-circuit/2" and doc["metadata"]["n_pairs"] == 6
    curve = tmp_path / "curve.json"
    r = runner.invoke(app, ["evaluate", "--circuit", str(out), "--sizes", "5,20", "--out", str(curve)])
    assert r.exit_code == 0, r.output
    assert len(json.loads(curve.read_text())["curve"]["faithfulness"]) == 2
    # the same circuit on 6 SVA pairs with none of its answer words (other verbs), next to its in-sample score
    held = tmp_path / "held.json"
    r = runner.invoke(app, ["evaluate", "--circuit", str(out), "--sizes", "5", "--heldout", "names", "--out",
                            str(held)])
    assert r.exit_code == 0, r.output
    rep = json.loads(held.read_text())
    assert rep["heldout"]["in_sample"]["faithfulness"] == pytest.approx(rep["faithfulness"], abs=1e-9)
    assert rep["heldout"]["heldout"]["n_pairs"] == 6 and rep["heldout"]["by"] == "names"
    assert json.loads(r.output.strip().splitlines()[-1])["heldout_faithfulness"] == rep["heldout"]["heldout"][
        "faithfulness"]
    r = runner.invoke(app, ["evaluate", "--circuit", str(out), "--heldout", "colour", "--out", str(held)])
    assert r.exit_code == 2 and "--heldout must be one of names, templates, seed" in r.output
    r = runner.invoke(app, ["verify", "--circuit", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.strip().splitlines()[-1])["n_nodes"] == 20


def test_cli_bad_inputs_exit_2(tmp_path):
    from sfc_core.cli import app

    runner = CliRunner()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"clean": "a", "corrupted": "b", "answer": " x", "wrong_answer": " y"}\n{oops\n')
    cases = [
        ["discover", "--pairs", str(bad), "--out", str(tmp_path / "o.json")],
        ["discover", "--task", "nope", "--out", str(tmp_path / "o.json")],
        ["discover", "--task", "ioi", "--layers", "4", "--out", str(tmp_path / "o.json")],
        ["discover", "--task", "ioi", "--layers", "x", "--out", str(tmp_path / "o.json")],
        ["evaluate", "--circuit", str(bad), "--out", str(tmp_path / "e.json")],
    ]
    for args in cases:
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        assert "Traceback" not in r.output
    assert not (tmp_path / "o.json").exists() and not (tmp_path / "e.json").exists()


def test_feature_index_round_trip(bundled):
    """The shipped index, loaded from disk, agrees with a fresh computation of the same SAE."""
    from sfc_core.bundle import load_heldout_tokens
    from sfc_core.feature_index import load_feature_index, logit_effects, sae_activations

    model, saes = bundled
    hook = "blocks.3.hook_resid_post"
    sae = saes[hook].sae
    index = load_feature_index(hook)
    assert index.d_sae == int(sae.cfg.d_sae)
    fresh_logits = logit_effects(sae, model)  # through the final norm's weight (splice.effective_unembed)
    for key in ("logit_top_ids", "logit_bottom_ids", "logit_top_vals", "logit_bottom_vals"):
        assert torch.equal(index.tensors[key], fresh_logits[key]), key
    tokens = load_heldout_tokens()
    alive = torch.nonzero(index.tensors["density"] > 0).flatten()[:3].tolist()
    assert len(alive) == 3
    for feature in alive:
        examples = index.top_examples(feature, n=2)
        assert examples and 0 < index.density(feature) <= 1
        counts, edges = index.histogram(feature)
        assert sum(counts) > 0 and len(edges) == len(counts) + 1
        for ex in examples:
            acts = sae_activations(model, sae, hook, tokens[ex.sequence:ex.sequence + 1])[0, :, feature].float()
            assert float(acts[ex.position]) == pytest.approx(ex.max_activation, rel=2e-2, abs=1e-2)
            assert float(acts.max()) == pytest.approx(ex.max_activation, rel=2e-2, abs=1e-2)
            assert ex.tokens[ex.max_index] == int(tokens[ex.sequence, ex.position])
