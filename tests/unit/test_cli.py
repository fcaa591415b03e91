"""CLI: registry method names, ablation kinds, exit code 2 with one line; fixes worded as the real flags (a tiny
model stands in for the bundled one where a command must run)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sfc_core import methods
from sfc_core.cli import app


def _run(*args):
    return CliRunner().invoke(app, list(args))


def test_unknown_method_is_one_line_exit_2(tmp_path):
    r = _run("discover", "--task", "ioi", "--method", "magic", "--out", str(tmp_path / "c.json"))
    assert r.exit_code == 2
    assert r.output.strip() == f"error: unknown method 'magic'; choose one of {', '.join(methods.names())}"
    assert not (tmp_path / "c.json").exists()


def test_compare_lists_only_comparable_methods(tmp_path):
    r = _run("compare", "--task", "ioi", "--methods", "atp,exact", "--out", str(tmp_path / "c.json"))
    assert r.exit_code == 2
    assert r.output.strip() == "error: unknown methods exact; choose from atp, atp_star, ig, mask, fap, fap-synergy"


def test_unknown_ablation_exit_2(tmp_path):
    r = _run("evaluate", "--circuit", str(tmp_path / "none.json"), "--ablation", "resample",
             "--out", str(tmp_path / "e.json"))
    assert r.exit_code == 2
    assert r.output.strip() == "error: ablation must be one of mean, mean_all, zero, patch, not 'resample'"


def test_registry_kinds_and_help():
    assert methods.names("attribution") == ("atp", "atp_star", "ig", "exact")
    assert methods.names("selection") == ("mask", "fap", "fap-synergy")
    assert methods.get("ig").cost == "medium" and methods.label("nope") == "nope"
    r = _run("discover", "--help")
    assert r.exit_code == 0 and all(name in r.output for name in methods.names())


def _discover_params() -> set[str]:
    """Every option string of the real ``sfc discover`` command (as click parsed the typer app)."""
    import typer

    cmd = typer.main.get_command(app).commands["discover"]
    return {opt for p in cmd.params for opt in p.opts}


def test_fixes_are_worded_as_the_commands_real_flags():
    from sfc_core.cli import compare, discover, evaluate, fix_flag, message_line
    from sfc_core.errors import InputError, Notice

    opts = _discover_params()
    for fix, want in ((("multi_token", "truncate"), "--multi-token truncate"),
                      (("length_mismatch", "align_last"), "--length-mismatch align_last"),
                      (("aggregation", "sum"), "--aggregate sum"),
                      (("metric", "logit_diff"), "--metric logit_diff")):
        line = message_line(InputError("something is wrong", fix=fix), discover)
        assert line == f"error: something is wrong (fix: {want})"
        assert want.split()[0] in opts  # a flag the command really has
    # a command without the option never tells the user to pass it
    assert fix_flag(InputError("x", fix=("multi_token", "truncate")).fix, evaluate) is None
    assert fix_flag(InputError("x", fix=("length_mismatch", "align_last")).fix, compare) is None
    assert message_line(Notice("row 2 skipped", fix=("length_mismatch", "align_last")), evaluate,
                        prefix="warning") == "warning: row 2 skipped"
    assert message_line(InputError("plain")) == "error: plain"


@pytest.fixture
def tiny_cli(monkeypatch):
    """``sfc discover`` on a tiny model with the tiny BPE tokenizer of test_pairs (no bundled assets)."""
    from sfc_core import cli
    from tests.tiny import tiny_bpe_model, tiny_sae

    model = tiny_bpe_model(n_layers=1)
    tok = model.tokenizer
    hook = "blocks.0.hook_resid_post"
    saes = {hook: tiny_sae(d_in=32, hook=hook, dtype="float32")}
    monkeypatch.setattr(cli, "_load_model_and_saes", lambda *a: (model, saes))
    return tok


def _pair_file(tmp_path, **record) -> str:
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(record) + "\n")
    return str(path)


def test_discover_words_fixes_as_flags_and_shows_what_alignment_drops(tiny_cli, tmp_path):
    multi = _pair_file(tmp_path, clean="When John talked to", corrupted="When Mary talked to",
                       answer=" Elizabeth", wrong_answer=" the")
    r = _run("discover", "--pairs", multi, "--method", "atp", "--top-k", "3", "--no-edges",
             "--out", str(tmp_path / "c.json"))
    [line] = [x for x in r.output.splitlines() if x.startswith("error:")]  # the progress bar may precede it
    assert r.exit_code == 2 and line.startswith("error: multi-token answers in row 1: ' Elizabeth' -> ")
    assert line.endswith("(fix: --multi-token truncate)") and "'truncate'" not in line
    mism = _pair_file(tmp_path, clean="When John talked to", corrupted="The friend and John talked to",
                      answer=" the", wrong_answer=" Mary")
    r = _run("discover", "--pairs", mism, "--method", "atp", "--top-k", "3", "--no-edges",
             "--out", str(tmp_path / "c.json"))
    assert r.exit_code == 2 and r.output.strip().endswith("(fix: --length-mismatch align_last)")
    r = _run("discover", "--pairs", mism, "--method", "atp", "--top-k", "3", "--no-edges",
             "--length-mismatch", "align_last", "--out", str(tmp_path / "c.json"))
    assert r.exit_code == 0, r.output
    assert ("warning: row 1: aligned at the last token: the corrupted prompt loses its first 2 tokens 'The', "
            "' friend' (the clean prompt keeps them)") in r.output.splitlines()


@pytest.mark.parametrize("args, message", [
    (("--protocol", "pie"), "error: --protocol pie scores transcoder features: add --features transcoders"),
    (("--protocol", "pie", "--features", "transcoders", "--pie-mode", "mean"),
     "error: --pie-mode must be one of corrupted, zero, not 'mean'"),
    (("--features", "neurons"), "error: --features must be saes or transcoders, not 'neurons'"),
    (("--protocol", "acdc"), "error: --protocol must be sfc or pie, not 'acdc'"),
    (("--protocol", "pie", "--features", "transcoders", "--pie-methods", "fap,acdc"),
     "error: unknown PIE methods acdc; choose from fap, fap-synergy, random"),
    (("--protocol", "pie", "--features", "transcoders", "--budgets", "10,0"),
     "error: --budgets must be 1-1000000, not 0"),
])
def test_pie_compare_bad_input_is_one_line_exit_2(tmp_path, args, message):
    r = _run("compare", "--task", "ioi", "--out", str(tmp_path / "p.json"), *args)
    assert r.exit_code == 2
    assert r.output.strip() == message
    assert not (tmp_path / "p.json").exists()
