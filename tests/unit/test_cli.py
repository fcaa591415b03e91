"""CLI checks that run before any model loads: registry method names, ablation kinds, exit code 2."""

from __future__ import annotations

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
