"""``sfc`` command line (typer). Every command: ``--help``, progress bars on long work,
exit 0 on success, exit 2 with one line on bad input (any :class:`SFCError`)."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import typer

from .errors import SFCError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Sparse feature circuits explorer engine.")
bundle_app = typer.Typer(no_args_is_help=True, help="Build or check the offline bundle (model + SAEs + feature index).")
app.add_typer(bundle_app, name="bundle")


def user_errors(fn):
    """Turn engine errors into one line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SFCError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper


@bundle_app.command("build")
@user_errors
def bundle_build(
    device: str = typer.Option("cpu", help="cpu or cuda"),
    tokens: int = typer.Option(160_000, help="tokens of English text to sample from the model"),
    epochs: float = typer.Option(4.0, help="passes over the cached activations"),
    work_dir: Path = typer.Option(Path(".work/bundle"), help="resumable build folder"),
) -> None:
    """Build the corpus, train the SAEs, index their features and write assets/ (resumable)."""
    from .bundle import BuildConfig, build_bundle
    from .corpus import CorpusConfig
    from .errors import InputError

    if device not in ("cpu", "cuda"):
        raise InputError(f"--device must be cpu or cuda, not '{device}'")
    if tokens <= 0 or epochs <= 0:
        raise InputError("--tokens and --epochs must be positive")
    cfg = BuildConfig(device=device, epochs=epochs, corpus=CorpusConfig(generated_tokens=tokens), check_seqs=24)
    manifest = build_bundle(cfg, work_dir, log=lambda m: typer.echo(m, err=True))
    typer.echo(json.dumps({"quality": manifest["quality"], "timings_s": manifest["timings_s"]}, indent=1))


@bundle_app.command("check")
@user_errors
def bundle_check(
    as_json: bool = typer.Option(False, "--json", help="print the figures as JSON"),
    seqs: int = typer.Option(0, help="held-out sequences to use (0: as recorded at build time)"),
) -> None:
    """Load the shipped bundle, recompute each SAE's quality on held-out tokens; exit 0 only if all pass."""
    from .bundle import check_bundle

    report = check_bundle(n_seqs=seqs or None)
    if as_json:
        typer.echo(json.dumps(report, indent=1))
    else:
        for row in report["saes"]:
            typer.echo(f"{row['hook_name']:28s} d_sae={row['d_sae']} fve={row['fve']:.3f} "
                       f"ce_rec={row['ce_recovered']:.3f} l0={row['l0']:.1f} dead={row['dead_frac']:.3f} "
                       f"{'ok' if row['passes'] else 'BELOW BAR'}")
        typer.echo(f"assets: {report['assets_mb']} MB")
    if not report["passes"]:
        raise typer.Exit(1)


def main() -> None:  # pragma: no cover - console entry
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover - python -m sfc_core.cli
    main()
