"""``sfc`` command line (typer). Every command: ``--help``, progress bars on long work,
exit 0 on success, exit 2 with one line on bad input (any :class:`SFCError`)."""

from __future__ import annotations

import functools
import inspect
import json
import sys
from pathlib import Path

import typer

from . import defaults
from . import methods as registry
from .ablation import HELP as ABLATION_HELP
from .ablation import check_ablation
from .hooks import resid_post
from .errors import Fix, SFCError

METHOD_HELP = " | ".join(registry.names())

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Sparse feature circuits explorer engine.")
bundle_app = typer.Typer(no_args_is_help=True, help="Build or check the offline bundle (model + SAEs + feature index).")
app.add_typer(bundle_app, name="bundle")


#: A fix's engine option (:class:`~sfc_core.errors.Fix`) -> the command parameter that sets it, where the names
#: differ (the flag is the parameter's name with dashes: ``multi_token`` -> ``--multi-token``).
CLI_PARAMS: dict[str, str] = {"aggregation": "aggregate"}


def fix_flag(fix: Fix | None, command=None) -> str | None:
    """A fix as this CLI's flag and value, e.g. ``"--multi-token truncate"``.

    Args:
        fix: the ``fix`` of an :class:`SFCError` or :class:`~sfc_core.errors.Notice` (``None``: no fix).
        command: the command function being run; when given, a fix it has no option for gives ``None``
            (``sfc evaluate`` has no ``--multi-token``: the line must not tell the user to pass one).

    Returns:
        ``"--flag value"`` or ``None``.
    """
    if fix is None:
        return None
    param = CLI_PARAMS.get(fix.option, fix.option)
    if command is not None and param not in inspect.signature(command).parameters:
        return None
    return f"--{param.replace('_', '-')} {fix.value}"


def message_line(message, command=None, prefix: str = "error") -> str:
    """One line for stderr: ``"error: <message> (fix: --multi-token truncate)"`` (the fix only when ``command``
    has its flag). ``message`` is an :class:`SFCError` or a warning string (a ``Notice`` may carry a fix)."""
    flag = fix_flag(getattr(message, "fix", None), command)
    return f"{prefix}: {message}" + (f" (fix: {flag})" if flag else "")


def _say_warnings(batch, command=None) -> None:
    """The pair batch's warnings (skipped, aligned or truncated pairs) on stderr, one line each: the CLI
    never drops or changes a pair silently."""
    for w in getattr(batch, "warnings", None) or []:
        typer.echo(message_line(w, command, prefix="warning"), err=True)


def user_errors(fn):
    """Turn engine errors into one line on stderr and exit code 2 (no traceback); an error's fix is worded as
    this command's flag (:func:`message_line`)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SFCError as exc:
            typer.echo(message_line(exc, fn), err=True)
            raise typer.Exit(2) from None

    return wrapper


@bundle_app.command("build")
@user_errors
def bundle_build(
    device: str = typer.Option("cpu", help="cpu or cuda"),
    tokens: int = typer.Option(65_000, help="tokens of English text to sample from the model"),
    epochs: float = typer.Option(5.0, help="passes over the cached activations"),
    work_dir: Path = typer.Option(Path(".work/bundle"), help="resumable build folder"),
    index_only: bool = typer.Option(False, "--index-only",
                                    help="rebuild only the held-out corpus and the feature index with its labels "
                                         "from the shipped SAEs (no retraining; resumable)"),
) -> None:
    """Build the corpus, train the SAEs, index their features and write assets/ (resumable)."""
    from .bundle import BuildConfig, build_bundle, build_index, update_manifest_index
    from .corpus import CorpusConfig
    from .errors import InputError

    if device not in ("cpu", "cuda"):
        raise InputError(f"--device must be cpu or cuda, not '{device}'")
    if tokens <= 0 or epochs <= 0:
        raise InputError("--tokens and --epochs must be positive")
    cfg = BuildConfig(device=device, epochs=epochs, corpus=CorpusConfig(generated_tokens=tokens), check_seqs=24)
    if index_only:
        manifest = update_manifest_index(build_index(cfg, work_dir, log=lambda m: typer.echo(m, err=True)))
        typer.echo(json.dumps({"heldout_tokens": manifest["heldout_tokens"], "quality": manifest["quality"],
                               "timings_s": manifest["timings_s"]}, indent=1))
        return
    manifest = build_bundle(cfg, work_dir, log=lambda m: typer.echo(m, err=True))
    typer.echo(json.dumps({"quality": manifest["quality"], "timings_s": manifest["timings_s"]}, indent=1))


@bundle_app.command("labels")
@user_errors
def bundle_labels() -> None:
    """Recompute the automatic feature labels of the shipped feature index from its files alone (seconds)."""
    from .labels import relabel_index_files

    for path in relabel_index_files():
        typer.echo(str(path))


@bundle_app.command("check")
@user_errors
def bundle_check(
    as_json: bool = typer.Option(False, "--json", help="print the figures as JSON"),
    seqs: int = typer.Option(0, help="held-out sequences for CE-loss recovered (0: as recorded at build time)"),
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


# ------------------------------------------------------------------ circuits
def _parse_ints(text: str | None, what: str) -> list[int] | None:
    from .errors import InputError

    if text is None or text == "":
        return None
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{what} must be comma-separated integers, not '{text}'") from None
    if not values:
        raise InputError(f"{what} is empty")
    return values


def _check_pair_source(pairs: Path | None, task: str | None, n: int | None, required: bool = True):
    """Fail fast (before loading a model) on a missing or contradictory pair source."""
    from .errors import InputError
    from .pairs import read_pairs

    if pairs is not None and task is not None:
        raise InputError("give only one of --pairs FILE or --task NAME")
    if required and pairs is None and task is None:
        raise InputError("give one of --pairs FILE or --task NAME")
    if n is not None and n <= 0:
        raise InputError("--n must be positive")
    if pairs is not None:
        if not pairs.is_file():
            raise InputError(f"pair file not found: {pairs}")
        return read_pairs(pairs)
    return None


def _load_pairs(model, pairs: Path | None, task: str | None, n: int | None):
    from .tasks import get_task_pairs

    loaded = _check_pair_source(pairs, task, n)
    if loaded is not None:
        return loaded[:n] if n else loaded
    return get_task_pairs(model, task, n=n)


def _load_model_and_saes(model_name: str | None, sae_release: str | None, layers: str | None):
    from .errors import InputError
    from .model import is_bundled, load_model
    from .saes import load_bundled_saes, load_release_layers

    model = load_model(model_name)
    wanted = _parse_ints(layers, "--layers")
    if sae_release is None:
        if not is_bundled(model_name):
            raise InputError("--sae-release is needed with a model other than the bundled one")
        hooks = [resid_post(L) for L in wanted] if wanted else None
        return model, load_bundled_saes(model, hooks)
    return model, load_release_layers(model, sae_release, wanted)


class _Bar:
    """tqdm progress bar fed by the engine's ``progress(stage, fraction)`` callbacks."""

    def __init__(self, desc: str):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=100, desc=desc, file=sys.stderr, bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}")

    def __call__(self, stage: str, fraction: float) -> None:
        self.bar.set_description(stage)
        self.bar.n = int(100 * min(max(fraction, 0.0), 1.0))
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _check_out(out: Path) -> None:
    """Fail fast (before loading a model) when ``out`` cannot be written: a folder, or no such folder."""
    from .errors import InputError

    if out.is_dir():
        raise InputError(f"--out {out} is a folder; give a file name")
    if not out.parent.is_dir():
        raise InputError(f"--out {out}: folder {out.parent} does not exist")


def _write_json(doc: dict, out: Path) -> None:
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(out)


@app.command()
@user_errors
def tasks(
    n: int = typer.Option(50, help="pairs per task for the accuracy check"),
    model_name: str = typer.Option(None, "--model", help="TransformerLens model (default: bundled)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """List the built-in tasks with the loaded model's accuracy and mean logit difference."""
    from tqdm.auto import tqdm

    from .model import load_model
    from .tasks import TASKS, task_accuracy

    model = load_model(model_name)
    rows = [task_accuracy(model, name, n=n) for name in tqdm(list(TASKS), desc="tasks", file=sys.stderr)]
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    for r in rows:
        verdict = "ok" if r["can_do"] else "model cannot do this task"
        typer.echo(f"{r['name']:16s} n={r['n']:3d} accuracy={r['accuracy']:.2f} "
                   f"mean_logit_diff={r['mean_logit_diff']:+.2f}  {verdict}  {TASKS[r['name']].description}")


@app.command()
@user_errors
def discover(
    out: Path = typer.Option(..., help="circuit JSON to write (sfc-circuit/2)"),
    pairs: Path = typer.Option(None, help="prompt-pair JSON Lines file"),
    task: str = typer.Option(None, help="built-in task name (see 'sfc tasks')"),
    n: int = typer.Option(None, help="use the first N pairs"),
    method: str = typer.Option("atp", help=METHOD_HELP),
    layers: str = typer.Option(None, help="comma-separated SAE layers (default: all bundled)"),
    node_threshold: float = typer.Option(None, help="keep nodes with |effect| >= T"),
    top_k: int = typer.Option(None, help="keep the K nodes of largest |effect| (default 50)"),
    top_k_per_layer: int = typer.Option(None, help="keep the K largest per SAE"),
    target_faithfulness: float = typer.Option(
        None, help="keep the smallest top-n by |effect| whose faithfulness reaches this, in (0, 1.5] "
                   "(attribution methods; replaces the node rules; edges among its top "
                   f"{defaults.TARGET_EDGE_NODES} nodes)"),
    ablation: str = typer.Option("mean", help="scores and --target-faithfulness: " + ABLATION_HELP),
    edges: bool = typer.Option(True, "--edges/--no-edges", help="compute edges between kept nodes"),
    edge_threshold: float = typer.Option(0.0, help="keep edges with |weight| >= T"),
    aggregate: str = typer.Option("sum", help="sum over positions, or none (nodes per position)"),
    metric: str = typer.Option("logit_diff", help="logit_diff | prob_diff | kl"),
    steps: int = typer.Option(10, help="IG steps"),
    mask_lambda: float = typer.Option(defaults.MASK_LAMBDA, help="mask: sparsity weight λ (> 0)"),
    mask_steps: int = typer.Option(200, help="mask: optimisation steps"),
    t_max: float = typer.Option(200.0, help="mask: final temperature T_max (> 1)"),
    budget: int = typer.Option(50, help="fap / fap-synergy: number of latents K"),
    synergy_pool: int = typer.Option(defaults.FAP_SYNERGY_POOL, help="fap-synergy: candidates whose pairwise synergy is measured"),
    multi_token: str = typer.Option("reject", help="multi-token answers: reject | truncate"),
    length_mismatch: str = typer.Option("skip", help="clean/corrupted length differs: skip | align_last"),
    model_name: str = typer.Option(None, "--model", help="TransformerLens model (default: bundled)"),
    sae_release: str = typer.Option(None, help="SAE Lens release (needs --model)"),
) -> None:
    """Find a sparse feature circuit for prompt pairs and write it as sfc-circuit/2 JSON."""
    from .discovery import DiscoverConfig, discover as run_discover
    from .circuit import circuit_stats, save_circuit

    from .errors import InputError

    rules = [r for r in (node_threshold, top_k, top_k_per_layer, target_faithfulness) if r is not None]
    if len(rules) > 1:
        raise InputError("choose one of --node-threshold, --top-k, --top-k-per-layer or --target-faithfulness")
    if not rules:
        top_k = 50
    cfg = DiscoverConfig(method=method, metric=metric, aggregation=aggregate, node_threshold=node_threshold,
                         top_k=top_k, top_k_per_layer=top_k_per_layer, edges=edges, edge_threshold=edge_threshold,
                         steps=steps, multi_token=multi_token, length_mismatch=length_mismatch,
                         mask_lambda=mask_lambda, mask_steps=mask_steps, mask_t_max=t_max, budget=budget,
                         synergy_pool=synergy_pool, target_faithfulness=target_faithfulness, ablation=ablation)
    cfg.check()
    _check_pair_source(pairs, task, n)
    _check_out(out)
    model, saes = _load_model_and_saes(model_name, sae_release, layers)
    loaded = _load_pairs(model, pairs, task, n)
    bar = _Bar("discover")
    try:
        result = run_discover(model, saes, loaded, cfg, progress=bar)
    finally:
        bar.close()
    _say_warnings(result.runs.batch, discover)
    result.graph.graph["task"] = task
    from .annotations import attach_auto_labels
    from .features import auto_label_lookup

    attach_auto_labels(result.graph, auto_label_lookup(saes))
    save_circuit(result.graph, out)
    stats = circuit_stats(result.graph)
    scores = result.graph.graph["scores"]
    report = {"out": str(out), "stats": {k: stats[k] for k in ("nodes", "error_nodes", "edges")},
              "scores": {k: scores[k] for k in ("faithfulness", "completeness", "ablation")},
              "timings_s": result.metadata["timings_s"]}
    search = result.graph.graph.get("target_search")
    if search is not None:
        report["target"] = {k: search[k] for k in ("target", "reached", "n_nodes", "faithfulness", "pool")}
        if not search["reached"]:
            typer.echo(f"target faithfulness {search['target']:g} not reached by any top-n of the {search['pool']} "
                       f"nodes with an effect; best: {search['n_nodes']} nodes at {search['faithfulness']:.3f}",
                       err=True)
    typer.echo(json.dumps(report))


def _circuit_context(circuit: Path, pairs: Path | None, task: str | None, n: int | None):
    """Model, SAEs and spliced runs matching a saved circuit."""
    from .attribution import prepare_runs
    from .circuit import load_circuit
    from .discovery import DiscoverConfig, as_batch
    from .errors import InputError
    from .model import load_model
    from .saes import load_bundled_saes, load_sae_by_source

    _check_pair_source(pairs, task, n, required=False)
    G = load_circuit(circuit)
    meta = G.graph
    task = task if (task or pairs) else meta.get("task")
    model_name = meta.get("model")
    model = load_model(None if model_name in (None, defaults.BUNDLED_MODEL_NAME) else model_name)
    sae_meta = meta.get("saes") or []
    if not sae_meta:
        raise InputError("the circuit file lists no SAEs in its metadata")
    if all(s.get("source") == defaults.BUNDLED_SAE_SOURCE for s in sae_meta):
        saes = load_bundled_saes(model, [s["hook_name"] for s in sae_meta])
    else:
        saes = {s["hook_name"]: load_sae_by_source(model, s["source"]) for s in sae_meta}
    loaded = _load_pairs(model, pairs, task, n or meta.get("n_pairs"))
    cfg = DiscoverConfig(metric=meta.get("metric", "logit_diff"))
    batch = as_batch(model, loaded, cfg)
    _say_warnings(batch)  # evaluate / verify take no pair options: the warnings name no flag
    return G, prepare_runs(model, saes, batch, cfg.metric)


@app.command()
@user_errors
def evaluate(
    circuit: Path = typer.Option(..., help="circuit JSON (sfc-circuit/2, /1 or an SFC Neuronpedia export)"),
    out: Path = typer.Option(..., help="curve JSON to write"),
    pairs: Path = typer.Option(None, help="prompt-pair JSON Lines file"),
    task: str = typer.Option(None, help="built-in task (default: the circuit's own task)"),
    n: int = typer.Option(None, help="use the first N pairs (default: as many as the circuit used)"),
    sizes: str = typer.Option("5,10,20,50,100", help="circuit sizes for the curve"),
    ablation: str = typer.Option("mean", help=ABLATION_HELP),
) -> None:
    """Faithfulness and completeness of a circuit and of its top-n nodes, with a random baseline."""
    from .discovery import evaluate as run_evaluate
    from .errors import InputError

    ablation = check_ablation(ablation)
    size_list = _parse_ints(sizes, "--sizes")
    if any(s <= 0 for s in size_list):
        raise InputError("--sizes must be positive")
    G, runs = _circuit_context(circuit, pairs, task, n)
    report = run_evaluate(runs, G, size_list, ablation)
    _write_json(report, out)
    typer.echo(json.dumps({k: report[k] for k in ("n_nodes", "faithfulness", "completeness")}))


@app.command()
@user_errors
def verify(
    circuit: Path = typer.Option(..., help="circuit JSON (sfc-circuit/2, /1 or an SFC Neuronpedia export)"),
    pairs: Path = typer.Option(None, help="prompt-pair JSON Lines file"),
    task: str = typer.Option(None, help="built-in task (default: the circuit's own task)"),
    n: int = typer.Option(None, help="use the first N pairs"),
    out: Path = typer.Option(None, help="write the per-node comparison as JSON"),
) -> None:
    """Exact patching of a circuit's nodes; agreement (Spearman, Pearson) with its recorded effects."""
    from .discovery import verify as run_verify

    G, runs = _circuit_context(circuit, pairs, task, n)
    report = run_verify(runs, G)
    if out is not None:
        _write_json(report, out)
    typer.echo(json.dumps({k: report[k] for k in ("n_nodes", "spearman", "pearson", "seconds")}))


@app.command()
@user_errors
def compare(
    out: Path = typer.Option(..., help="comparison JSON to write"),
    pairs: Path = typer.Option(None, help="prompt-pair JSON Lines file"),
    task: str = typer.Option(None, help="built-in task name"),
    n: int = typer.Option(20, help="use the first N pairs"),
    methods: str = typer.Option(",".join(registry.names(comparable=True)), help="comma-separated methods"),
    sizes: str = typer.Option("10,25,50,75,100", help="latent counts to compare at"),
    ablation: str = typer.Option("mean", help=ABLATION_HELP),
    lambdas: str = typer.Option(",".join(f"{v:g}" for v in defaults.MASK_LAMBDAS), help="mask: λ values of the sweep"),
    mask_steps: int = typer.Option(200, help="mask: optimisation steps per λ"),
    t_max: float = typer.Option(200.0, help="mask: final temperature"),
    synergy_pool: int = typer.Option(defaults.FAP_SYNERGY_POOL, help="fap-synergy: candidates whose pairwise synergy is measured"),
    layers: str = typer.Option(None, help="comma-separated SAE layers (default: all bundled)"),
) -> None:
    """Faithfulness/completeness of several methods' circuits at matched latent counts (+ random baseline)."""
    from .attribution import prepare_runs
    from .compare import compare_methods
    from .discovery import DiscoverConfig, as_batch
    from .errors import InputError
    from .masks import MaskConfig

    ablation = check_ablation(ablation)
    size_list = _parse_ints(sizes, "--sizes")
    method_list = [m.strip() for m in methods.split(",") if m.strip()]
    comparable = registry.names(comparable=True)
    bad = [m for m in method_list if m not in comparable] or ([] if method_list else ["(none)"])
    if bad:
        raise InputError(f"unknown methods {', '.join(bad)}; choose from {', '.join(comparable)}")
    try:
        lam_list = [float(v) for v in lambdas.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"--lambdas must be comma-separated numbers, not '{lambdas}'") from None
    mask_cfg = MaskConfig(steps=mask_steps, t_max=t_max)
    for lam in lam_list:
        MaskConfig(lam=lam, steps=mask_steps, t_max=t_max).check()
    _check_pair_source(pairs, task, n)
    model, saes = _load_model_and_saes(None, None, layers)
    loaded = _load_pairs(model, pairs, task, n)
    batch = as_batch(model, loaded, DiscoverConfig())
    _say_warnings(batch, compare)
    runs = prepare_runs(model, saes, batch)
    bar = _Bar("compare")
    try:
        report = compare_methods(runs, method_list, size_list, ablation, lam_list, mask_cfg, synergy_pool, bar,
                                 on_method=lambda partial: _write_json({**partial, "task": task, "partial": True}, out))
    finally:
        bar.close()
    report["task"] = task
    _write_json(report, out)
    typer.echo(json.dumps({m: {"n_latents": r["n_latents"], "faithfulness": r["faithfulness"]}
                           for m, r in report["methods"].items()}))


def main() -> None:  # pragma: no cover - console entry
    """Console entry point of ``sfc``: run the typer app and exit with its status."""
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover - python -m sfc_core.cli
    main()
