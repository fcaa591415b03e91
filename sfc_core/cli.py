"""``sfc`` command line (typer). Every command: ``--help``, progress bars on long work,
exit 0 on success, exit 2 with one line on bad input (any :class:`SFCError`)."""

from __future__ import annotations

import functools
import inspect
import json
import signal
import sys
import threading
from pathlib import Path

import typer

from . import bounds, defaults
from . import methods as registry
from .ablation import HELP as ABLATION_HELP
from .ablation import check_ablation
from .hooks import resid_post
from .errors import Fix, SFCError
from .jsonio import check_writable, write_json_atomic
from .pie import MODES as PIE_MODES
from .pie import PIE_BUDGETS, PIE_METHODS

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


#: What an interrupted command (SIGINT, SIGTERM) says: its output file is untouched (atomic writes).
INTERRUPTED = "interrupted: the output was not written (an existing file is as it was)"


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def user_errors(fn):
    """Turn engine errors into one line on stderr and exit code 2 (no traceback); an error's fix is worded as
    this command's flag (:func:`message_line`). SIGTERM is handled as SIGINT: both end the command with one line
    and exit code 130, after every atomic write has removed its temporary file, so an existing ``--out`` keeps
    its old content."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _raise_interrupt) if main_thread else None
        try:
            return fn(*args, **kwargs)
        except SFCError as exc:
            typer.echo(message_line(exc, fn), err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo(INTERRUPTED, err=True)
            raise typer.Exit(130) from None
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, previous)

    return wrapper


@bundle_app.command("build")
@user_errors
def bundle_build(
    device: str = typer.Option("cpu", help="cpu or cuda"),
    tokens: int = typer.Option(65_000, help="tokens of English text to sample from the model "
                                            f"({bounds.describe('corpus_tokens')})"),
    epochs: float = typer.Option(None, help="passes over the cached activations (default: 5 for SAEs, "
                                            f"TranscoderBuildConfig's for transcoders; {bounds.describe('epochs')})"),
    work_dir: Path = typer.Option(Path(".work/bundle"), help="resumable build folder"),
    index_only: bool = typer.Option(False, "--index-only",
                                    help="rebuild only the held-out corpus and the feature index with its labels "
                                         "from the shipped SAEs (no retraining; resumable)"),
    transcoders: bool = typer.Option(False, "--transcoders",
                                     help="build the per-layer MLP transcoders (all layers) and their feature index "
                                          "instead of the SAEs (resumable, layer by layer)"),
    layers: str = typer.Option(None, help="--transcoders: comma-separated layers (default: all)"),
) -> None:
    """Build the corpus, train the SAEs (or, with --transcoders, the MLP transcoders), index their features and
    write assets/ (resumable)."""
    from .bundle import BuildConfig, build_bundle, build_index, update_manifest_index
    from .corpus import CorpusConfig
    from .errors import InputError

    if device not in ("cpu", "cuda"):
        raise InputError(f"--device must be cpu or cuda, not '{device}'")
    if epochs is not None:
        bounds.check("epochs", epochs, "--epochs")
    if transcoders:
        from .transcoders import TranscoderBuildConfig, build_transcoders

        base = TranscoderBuildConfig()
        chosen = _parse_ints(layers, "--layers") or list(base.layers)
        bad = [L for L in chosen if not 0 <= L < 30]
        if bad:
            raise InputError(f"--layers must be within 0..29, not {bad[0]}")
        cfg = TranscoderBuildConfig(layers=tuple(chosen), epochs=epochs or base.epochs)
        report = build_transcoders(cfg, work_dir, log=lambda m: typer.echo(m, err=True))
        typer.echo(json.dumps({"quality": report["quality"], "all_layers": report["all_layers"],
                               "timings_s": report["timings_s"]}, indent=1))
        return
    bounds.check("corpus_tokens", tokens, "--tokens")
    cfg = BuildConfig(device=device, epochs=epochs or 5.0, corpus=CorpusConfig(generated_tokens=tokens), check_seqs=24)
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
    seqs: int = typer.Option(0, help="held-out sequences for CE-loss recovered (0: as recorded at build time; "
                                     f"{bounds.describe('check_seqs')})"),
) -> None:
    """Load the shipped bundle, recompute each SAE's quality on held-out tokens; exit 0 only if all pass."""
    from .bundle import check_bundle

    bounds.check("check_seqs", seqs, "--seqs")
    report = check_bundle(n_seqs=seqs or None)
    if as_json:
        typer.echo(json.dumps(report, indent=1))
    else:
        for row in report["saes"] + report["transcoders"]["layers"]:
            typer.echo(f"{row['hook_name']:28s} d_sae={row['d_sae']} fve={row['fve']:.3f} "
                       f"ce_rec={row['ce_recovered']:.3f} l0={row['l0']:.1f} dead={row['dead_frac']:.3f} "
                       f"{'ok' if row['passes'] else 'BELOW BAR'}")
        if report["transcoders"]["present"]:
            everything = report["transcoders"]["all_layers"]
            typer.echo(f"all {report['transcoders']['n_layers']} MLPs replaced by transcoders: "
                       f"ce_rec={everything['ce_recovered']:.3f} {'ok' if everything['passes'] else 'BELOW BAR'}")
        typer.echo(f"assets: {report['assets_mb']} MB (budget {report['assets_budget_mb']:.0f} MB)")
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


def _parse_sizes(text: str, what: str = "--sizes") -> list[int]:
    """``--sizes`` (or the option ``what``) as circuit sizes (each within :data:`~sfc_core.bounds.BOUNDS` ``"size"``).

    Raises:
        InputError: not comma-separated integers, empty, or a size out of range.
    """
    values = _parse_ints(text, what)
    for v in values:
        bounds.check("size", v, what)
    return values


def _check_pair_source(pairs: Path | None, task: str | None, n: int | None, required: bool = True):
    """Fail fast (before loading a model) on a missing or contradictory pair source."""
    from .errors import InputError
    from .pairs import read_pairs

    if pairs is not None and task is not None:
        raise InputError("give only one of --pairs FILE or --task NAME")
    if required and pairs is None and task is None:
        raise InputError("give one of --pairs FILE or --task NAME")
    bounds.check("n", n, "--n")
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


#: Options several commands share (typer reads an ``Option`` as a default value, so one object serves them all).
MEMORY_OPTION = typer.Option(defaults.MEMORY_BUDGET_GB, "--memory-gb",
                             help=f"peak memory to plan pair batches for, GB ({bounds.describe('memory_gb')}): "
                                  "more pairs run in several batches")
SAE_DIR_OPTION = typer.Option(None, "--sae-dir", help="an SAE folder the circuit file names as a source "
                                                      "(repeatable); other folders are never read")


def partial_path(out: Path) -> Path:
    """Where a long command keeps its progress (``<out>.partial.json``), so that ``--out`` itself only ever holds a
    finished result; removed once ``--out`` is written, kept after an interruption to show how far it got."""
    return out.with_name(out.name + ".partial.json")


@app.command()
@user_errors
def tasks(
    n: int = typer.Option(50, help="pairs per task for the accuracy check (1-1000)"),
    model_name: str = typer.Option(None, "--model", help="TransformerLens model (default: bundled)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """List the built-in tasks with the loaded model's accuracy and mean logit difference."""
    from tqdm.auto import tqdm

    from .model import load_model
    from .errors import InputError
    from .tasks import TASKS, task_accuracy

    if not 1 <= n <= 1000:
        raise InputError(f"--n must be 1-1000, not {n}")
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
    n: int = typer.Option(None, help=f"use the first N pairs ({bounds.describe('n')})"),
    method: str = typer.Option("atp", help=METHOD_HELP),
    layers: str = typer.Option(None, help="comma-separated SAE layers (default: all bundled)"),
    node_threshold: float = typer.Option(None, help="keep nodes with |effect| >= T"),
    top_k: int = typer.Option(None, help="keep the K nodes of largest |effect| "
                                         f"(default 50; {bounds.describe('top_k')})"),
    top_k_per_layer: int = typer.Option(None, help="keep the K largest per SAE "
                                                   f"({bounds.describe('top_k_per_layer')})"),
    target_faithfulness: float = typer.Option(
        None, help="keep the smallest top-n by |effect| whose faithfulness reaches this, in (0, 1.5] "
                   "(attribution methods; replaces the node rules; edges among its top "
                   f"{defaults.TARGET_EDGE_NODES} nodes)"),
    ablation: str = typer.Option("mean", help="scores and --target-faithfulness: " + ABLATION_HELP),
    edges: bool = typer.Option(True, "--edges/--no-edges", help="compute edges between kept nodes"),
    edge_threshold: float = typer.Option(0.0, help="keep edges with |weight| >= T"),
    aggregate: str = typer.Option("sum", help="sum over positions, or none (nodes per position)"),
    metric: str = typer.Option("logit_diff", help="logit_diff | prob_diff | kl"),
    steps: int = typer.Option(10, help=f"IG steps ({bounds.describe('steps')})"),
    mask_lambda: float = typer.Option(defaults.MASK_LAMBDA,
                                      help=f"mask: sparsity weight λ ({bounds.describe('mask_lambda')})"),
    mask_steps: int = typer.Option(200, help=f"mask: optimisation steps ({bounds.describe('mask_steps')})"),
    t_max: float = typer.Option(200.0, help=f"mask: final temperature T_max ({bounds.describe('mask_t_max')})"),
    budget: int = typer.Option(50, help=f"fap / fap-synergy: number of latents K ({bounds.describe('budget')})"),
    synergy_pool: int = typer.Option(defaults.FAP_SYNERGY_POOL,
                                     help="fap-synergy: candidates whose pairwise synergy is measured "
                                          f"({bounds.describe('synergy_pool')})"),
    multi_token: str = typer.Option("reject", help="multi-token answers: reject | truncate"),
    length_mismatch: str = typer.Option("skip", help="clean/corrupted length differs: skip | align_last"),
    model_name: str = typer.Option(None, "--model", help="TransformerLens model (default: bundled)"),
    sae_release: str = typer.Option(None, help="SAE Lens release (needs --model)"),
    memory_gb: float = MEMORY_OPTION,
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
    bounds.check("memory_gb", memory_gb, "--memory-gb")
    _check_pair_source(pairs, task, n)
    check_writable(out)
    model, saes = _load_model_and_saes(model_name, sae_release, layers)
    loaded = _load_pairs(model, pairs, task, n)
    bar = _Bar("discover")
    try:
        result = run_discover(model, saes, loaded, cfg, progress=bar, memory_gb=memory_gb)
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


def _circuit_context(circuit: Path, pairs: Path | None, task: str | None, n: int | None,
                     sae_dirs: list[Path] | None = None, memory_gb: float | None = None):
    """Model, SAEs and spliced runs matching a saved circuit. SAEs load from the bundle, SAE Lens releases, or
    folders the user passed (``sae_dirs``): never from a folder the file alone names."""
    from .batching import open_runs
    from .circuit import load_circuit
    from .discovery import DiscoverConfig, as_batch
    from .errors import InputError
    from .model import load_model
    from .metrics import get_metric
    from .saes import check_sae_source, load_bundled_sites, load_sae_by_source

    _check_pair_source(pairs, task, n, required=False)
    G = load_circuit(circuit)
    meta = G.graph
    task = task if (task or pairs) else meta.get("task")
    sae_meta = meta.get("saes") or []
    if not sae_meta:
        raise InputError("the circuit file lists no SAEs in its metadata")
    for s in sae_meta:  # before the model loads: a folder the user did not pass is refused
        check_sae_source(s.get("source"), sae_dirs or ())
    get_metric(meta.get("metric", "logit_diff"))
    model_name = meta.get("model")
    model = load_model(None if model_name in (None, defaults.BUNDLED_MODEL_NAME) else model_name)
    if all(check_sae_source(s.get("source")) == "bundled" for s in sae_meta):
        saes = load_bundled_sites(model, [s["hook_name"] for s in sae_meta])
    else:
        saes = {s["hook_name"]: load_sae_by_source(model, s.get("source"), allowed_folders=sae_dirs or ())
                for s in sae_meta}
    loaded = _load_pairs(model, pairs, task, n or meta.get("n_pairs"))
    cfg = DiscoverConfig(metric=meta.get("metric", "logit_diff"))
    batch = as_batch(model, loaded, cfg)
    _say_warnings(batch)  # evaluate / verify take no pair options: the warnings name no flag
    return G, open_runs(model, saes, batch, cfg.metric, memory_gb=memory_gb)


@app.command()
@user_errors
def evaluate(
    circuit: Path = typer.Option(..., help="circuit JSON (sfc-circuit/2, /1 or an SFC Neuronpedia export)"),
    out: Path = typer.Option(..., help="curve JSON to write"),
    pairs: Path = typer.Option(None, help="prompt-pair JSON Lines file"),
    task: str = typer.Option(None, help="built-in task (default: the circuit's own task)"),
    n: int = typer.Option(None, help="use the first N pairs (default: as many as the circuit used; "
                                     f"{bounds.describe('n')})"),
    sizes: str = typer.Option("5,10,20,50,100", help="circuit sizes for the curve"),
    ablation: str = typer.Option("mean", help=ABLATION_HELP),
    heldout: str = typer.Option(None, help="also score the circuit on held-out pairs of its built-in task: names "
                                           "(none of the pairs' answer words), templates (none of their "
                                           "templates) or seed (fresh draws)"),
    sae_dir: list[Path] = SAE_DIR_OPTION,
    memory_gb: float = MEMORY_OPTION,
) -> None:
    """Faithfulness and completeness of a circuit and of its top-n nodes, with a random baseline; with
    --heldout, also on pairs of the same task it was not found on, next to the in-sample scores."""
    from .discovery import evaluate as run_evaluate
    from .errors import InputError
    from .generalisation import HELDOUT_BY

    ablation = check_ablation(ablation)
    size_list = _parse_sizes(sizes)
    if heldout is not None and heldout not in HELDOUT_BY:
        raise InputError(f"--heldout must be one of {', '.join(HELDOUT_BY)}, not {heldout!r}")
    check_writable(out)
    bounds.check("memory_gb", memory_gb, "--memory-gb")
    G, runs = _circuit_context(circuit, pairs, task, n, sae_dir, memory_gb)
    report = run_evaluate(runs, G, size_list, ablation)
    if heldout is not None:
        report["heldout"] = _heldout_report(G, runs, task or G.graph.get("task"), heldout, ablation)
    write_json_atomic(report, out)
    line = {k: report[k] for k in ("n_nodes", "faithfulness", "completeness")}
    if heldout is not None:
        line["heldout_faithfulness"] = report["heldout"]["heldout"]["faithfulness"]
    typer.echo(json.dumps(line))


def _heldout_report(G, runs, task: str | None, by: str, ablation: str) -> dict:
    """In-sample and held-out scores of ``G`` (:mod:`sfc_core.generalisation`)."""
    from .errors import InputError
    from .generalisation import heldout_for, heldout_scores, rerun
    from .tasks import TASKS

    if task not in TASKS:
        raise InputError("--heldout needs the circuit's built-in task: pass --task (the file names "
                         f"{task or 'no task'})")
    held = heldout_for(runs.model, task, list(runs.batch.pairs), runs.batch.n, by)
    return heldout_scores(G, runs, rerun(runs, held), ablation, by)


@app.command()
@user_errors
def verify(
    circuit: Path = typer.Option(..., help="circuit JSON (sfc-circuit/2, /1 or an SFC Neuronpedia export)"),
    pairs: Path = typer.Option(None, help="prompt-pair JSON Lines file"),
    task: str = typer.Option(None, help="built-in task (default: the circuit's own task)"),
    n: int = typer.Option(None, help="use the first N pairs"),
    out: Path = typer.Option(None, help="write the per-node comparison as JSON"),
    sae_dir: list[Path] = SAE_DIR_OPTION,
    memory_gb: float = MEMORY_OPTION,
) -> None:
    """Exact patching of a circuit's nodes; agreement (Spearman, Pearson) with its recorded effects."""
    from .discovery import verify as run_verify

    if out is not None:
        check_writable(out)
    bounds.check("memory_gb", memory_gb, "--memory-gb")
    G, runs = _circuit_context(circuit, pairs, task, n, sae_dir, memory_gb)
    report = run_verify(runs, G)
    if out is not None:
        write_json_atomic(report, out)
    typer.echo(json.dumps({k: report[k] for k in ("n_nodes", "spearman", "pearson", "seconds")}))


@app.command()
@user_errors
def compare(
    out: Path = typer.Option(..., help="comparison JSON to write"),
    pairs: Path = typer.Option(None, help="prompt-pair JSON Lines file"),
    task: str = typer.Option(None, help="built-in task name"),
    n: int = typer.Option(20, help=f"use the first N pairs ({bounds.describe('n')})"),
    methods: str = typer.Option(",".join(registry.names(comparable=True)), help="comma-separated methods"),
    sizes: str = typer.Option("10,25,50,75,100", help="latent counts to compare at"),
    ablation: str = typer.Option("mean", help=ABLATION_HELP),
    lambdas: str = typer.Option(",".join(f"{v:g}" for v in defaults.MASK_LAMBDAS), help="mask: λ values of the sweep"),
    mask_steps: int = typer.Option(200, help="mask: optimisation steps per λ"),
    t_max: float = typer.Option(200.0, help="mask: final temperature"),
    synergy_pool: int = typer.Option(defaults.FAP_SYNERGY_POOL,
                                     help="fap-synergy: candidates whose pairwise synergy is measured "
                                          f"({bounds.describe('synergy_pool')})"),
    layers: str = typer.Option(None, help="comma-separated SAE layers (default: all bundled)"),
    units: str = typer.Option(None, help="instead of methods, compare node units: features, neurons (the MLP "
                                         "neurons of the SAEs' layers), resid (the residual stream's directions at "
                                         "the SAEs' hook points), comma-separated; ranked by the first of --methods"),
    targets: str = typer.Option("0.5,0.8", help="--units: faithfulness targets whose node counts are reported"),
    features: str = typer.Option("saes", help="whose features are the nodes: saes (the residual SAEs) or "
                                              "transcoders (the per-layer MLP transcoders)"),
    protocol: str = typer.Option("sfc", help="sfc (ablation faithfulness, this project's) or pie (PIE's: per-prompt "
                                             "FAP / FAP-Synergy / random budgets, removal by patching, last-token KL "
                                             "fidelity; needs --features transcoders)"),
    pie_mode: str = typer.Option("corrupted", help="--protocol pie: removed writes take their corrupted-prompt "
                                                   "values (corrupted) or zero (zero)"),
    budgets: str = typer.Option(",".join(map(str, PIE_BUDGETS)), help="--protocol pie: occurrences kept per prompt"),
    boundary_cap: int = typer.Option(32, help="--protocol pie: FAP-Synergy's most boundary candidates (PIE: 32)"),
    partners: int = typer.Option(32, help="--protocol pie: FAP-Synergy's core partners with measured effects (PIE: 32)"),
    partners_per_candidate: int = typer.Option(8, help="--protocol pie: partners drawn per candidate (PIE: 8)"),
    pie_methods: str = typer.Option("fap,fap-synergy,random", help="--protocol pie: selections to score"),
) -> None:
    """Faithfulness/completeness of several methods' circuits at matched latent counts (+ random baseline); with
    --units, feature vs neuron circuits of the same pairs (Marks et al. 2024, §4); with --protocol pie, PIE's
    fidelity of FAP, FAP-Synergy and random feature budgets on transcoder features."""
    from .attribution import prepare_runs
    from .batching import check_one_batch
    from .compare import compare_methods
    from .discovery import DiscoverConfig, as_batch
    from .errors import InputError
    from .masks import MaskConfig

    if features not in ("saes", "transcoders"):
        raise InputError(f"--features must be saes or transcoders, not '{features}'")
    if protocol not in ("sfc", "pie"):
        raise InputError(f"--protocol must be sfc or pie, not '{protocol}'")
    if protocol == "pie":
        if features != "transcoders":
            raise InputError("--protocol pie scores transcoder features: add --features transcoders")
        if pie_mode not in PIE_MODES:
            raise InputError(f"--pie-mode must be one of {', '.join(PIE_MODES)}, not '{pie_mode}'")
        budget_list = _parse_sizes(budgets, "--budgets")
        for flag, value in (("--boundary-cap", boundary_cap), ("--partners", partners),
                            ("--partners-per-candidate", partners_per_candidate)):
            if value < 1:
                raise InputError(f"{flag} must be at least 1, not {value}")
        _check_pair_source(pairs, task, n)
        check_writable(out)
        from .pie import SynergyConfig

        synergy = SynergyConfig(boundary_cap=boundary_cap, partners=partners,
                                partners_per_candidate=partners_per_candidate)
        chosen = tuple(m.strip() for m in pie_methods.split(",") if m.strip())
        bad = [m for m in chosen if m not in PIE_METHODS] or ([] if chosen else ["(none)"])
        if bad:
            raise InputError(f"unknown PIE methods {', '.join(bad)}; choose from {', '.join(PIE_METHODS)}")
        return _compare_pie(out, pairs, task, n, layers, budget_list, pie_mode, synergy, chosen)
    ablation = check_ablation(ablation)
    size_list = _parse_sizes(sizes)
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
    unit_list = _check_units(units)
    target_list = _parse_floats(targets, "--targets")
    bounds.check("synergy_pool", synergy_pool, "--synergy-pool")
    bounds.check("mask_steps", mask_steps, "--mask-steps")
    _check_pair_source(pairs, task, n)
    check_writable(out)
    if unit_list:
        return _compare_units(out, pairs, task, n, layers, unit_list, method_list[0], size_list, ablation,
                              target_list)
    model, saes = _load_model_and_sites(features, layers)
    loaded = _load_pairs(model, pairs, task, n)
    batch = as_batch(model, loaded, DiscoverConfig())
    _say_warnings(batch, compare)
    check_one_batch(model, saes, batch, "sfc compare")
    runs = prepare_runs(model, saes, batch)
    bar = _Bar("compare")
    side = partial_path(out)
    try:
        report = compare_methods(runs, method_list, size_list, ablation, lam_list, mask_cfg, synergy_pool, bar,
                                 on_method=lambda part: write_json_atomic({**part, "task": task, "partial": True}, side))
    finally:
        bar.close()
    report["task"] = task
    write_json_atomic(report, out)
    side.unlink(missing_ok=True)
    typer.echo(json.dumps({m: {"n_latents": r["n_latents"], "faithfulness": r["faithfulness"]}
                           for m, r in report["methods"].items()}))


UNITS = ("features", "neurons", "resid")


def _load_model_and_sites(features: str, layers: str | None):
    """The bundled model with its residual SAEs (``saes``) or its MLP transcoders (``transcoders``) at ``layers``."""
    if features == "saes":
        return _load_model_and_saes(None, None, layers)
    from .model import load_model
    from .transcoders import load_bundled_transcoders

    model = load_model()
    return model, load_bundled_transcoders(model, _parse_ints(layers, "--layers"))


def _compare_pie(out: Path, pairs, task, n, layers, budget_list: list[int], mode: str, synergy, chosen) -> None:
    """``sfc compare --features transcoders --protocol pie``: :func:`sfc_core.pie.pie_compare`, written to ``out``."""
    from .attribution import prepare_runs
    from .batching import check_one_batch
    from .discovery import DiscoverConfig, as_batch
    from .pie import pie_compare

    model, sites = _load_model_and_sites("transcoders", layers)
    batch = as_batch(model, _load_pairs(model, pairs, task, n), DiscoverConfig())
    _say_warnings(batch, compare)
    check_one_batch(model, sites, batch, "sfc compare")
    runs = prepare_runs(model, sites, batch)
    bar = _Bar("compare (PIE)")
    try:
        report = pie_compare(runs, budget_list, mode, methods=chosen, synergy=synergy, progress=bar)
    finally:
        bar.close()
    report.update(task=task, features="transcoders", layers=sorted(int(s.split(".")[1]) for s in sites))
    write_json_atomic(report, out)
    typer.echo(json.dumps({m: {"budgets": r["budgets"], "kl": [round(v, 4) for v in r["kl"]],
                               "fidelity": [round(v, 4) for v in r["fidelity"]]}
                           for m, r in report["methods"].items()}))


def _check_units(units: str | None) -> list[str]:
    from .errors import InputError

    if units is None:
        return []
    unit_list = [u.strip() for u in units.split(",") if u.strip()]
    bad = [u for u in unit_list if u not in UNITS] or ([] if unit_list else ["(none)"])
    if bad:
        raise InputError(f"unknown units {', '.join(bad)}; choose from {', '.join(UNITS)}")
    return unit_list


def _parse_floats(text: str, what: str) -> list[float]:
    from .errors import InputError

    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{what} must be comma-separated numbers, not '{text}'") from None
    if not values or any(not 0 < v <= 1.5 for v in values):
        raise InputError(f"{what} must be numbers in (0, 1.5], not '{text}'")
    return values


def _compare_units(out: Path, pairs, task, n, layers, unit_list, method, size_list, ablation, target_list) -> None:
    """``sfc compare --units``: :func:`sfc_core.compare.neurons_vs_features` on the pairs, written to ``out``."""
    from .batching import check_one_batch
    from .compare import neurons_vs_features
    from .discovery import DiscoverConfig, as_batch

    model, saes = _load_model_and_saes(None, None, layers)
    batch = as_batch(model, _load_pairs(model, pairs, task, n), DiscoverConfig())
    _say_warnings(batch, compare)
    check_one_batch(model, saes, batch, "sfc compare --units")
    report = neurons_vs_features(model, saes, batch, size_list, method, ablation, target_list, units=tuple(unit_list))
    report["task"] = task
    write_json_atomic(report, out)
    typer.echo(json.dumps({"n_for": report["n_for"], "seconds": report.get("seconds")}, default=str))


# ------------------------------------------------------------------ model internals (trace, lens, heads)
def _internals_model(model_name: str | None):
    """The model for ``sfc trace`` / ``lens`` / ``heads`` (no SAEs needed)."""
    from .model import load_model

    return load_model(model_name)


def _internals_batch(model, pairs: Path | None, task: str | None, n: int | None, one_template: bool,
                     multi_token: str, length_mismatch: str, command):
    """Pairs (file or task; with ``one_template`` a task's N pairs of one template group) tokenized, warnings said.

    Raises:
        InputError: bad pair source or options, no valid pairs.
    """
    from .errors import InputError
    from .pairs import tokenize_pairs
    from .tracing import one_template_pairs

    if one_template:
        if task is None:
            raise InputError("--one-template draws pairs of a built-in task: give --task NAME")
        loaded = one_template_pairs(model, task, n or 20)
    else:
        loaded = _load_pairs(model, pairs, task, n)
    batch = tokenize_pairs(model, loaded, multi_token=multi_token, length_mismatch=length_mismatch)
    _say_warnings(batch, command)
    return batch


def _parse_head(text: str, what: str) -> tuple[int, int]:
    """``"9.6"`` or ``"L9.H6"`` -> ``(9, 6)``.

    Raises:
        InputError: another form.
    """
    from .errors import InputError

    parts = text.upper().replace("L", "").replace("H", "").split(".")
    try:
        layer, head = (int(v) for v in parts)
    except ValueError:
        raise InputError(f"{what} is a head as LAYER.HEAD (e.g. 9.6), not '{text}'") from None
    return layer, head


def _check_internals_options(out: Path, pairs, task, n, chunk: int | None = None, multi_token: str = "reject",
                             length_mismatch: str = "skip") -> None:
    from .errors import InputError
    from .pairs import check_pair_option

    check_pair_option("multi_token", multi_token)
    check_pair_option("length_mismatch", length_mismatch)
    _check_pair_source(pairs, task, n)
    if n is not None and n > 1000:
        raise InputError("--n must be at most 1000")
    if chunk is not None and not 1 <= chunk <= 4096:
        raise InputError("--chunk must be between 1 and 4096")
    check_writable(out)


@app.command()
@user_errors
def trace(
    out: Path = typer.Option(..., help="causal-tracing JSON to write"),
    pairs: Path = typer.Option(None, help="prompt-pair JSON Lines file"),
    task: str = typer.Option(None, help="built-in task name (see 'sfc tasks')"),
    n: int = typer.Option(None, help="use the first N pairs (1-1000)"),
    one_template: bool = typer.Option(False, "--one-template",
                                      help="with --task: draw N pairs of the task's most common template and length"),
    sites: str = typer.Option("resid_pre,attn_out,mlp_out", help="site kinds: resid_pre, attn_out, mlp_out"),
    direction: str = typer.Option("denoise", help="denoise (clean into corrupted) | noise (corrupted into clean) "
                                                  "| both"),
    layers: str = typer.Option(None, help="comma-separated layers (default: all)"),
    template_group: str = typer.Option("refuse", help="pairs of several templates/lengths: refuse | largest "
                                                      "(keep the largest group)"),
    chunk: int = typer.Option(64, help="patched copies per forward pass (1-4096)"),
    multi_token: str = typer.Option("reject", help="multi-token answers: reject | truncate"),
    length_mismatch: str = typer.Option("skip", help="clean/corrupted length differs: skip | align_last"),
    model_name: str = typer.Option(None, "--model", help="TransformerLens model (default: bundled)"),
) -> None:
    """Causal tracing: patch each layer x position of the residual stream, attention and MLP outputs (exact)."""
    from .errors import InputError
    from .tracing import causal_trace, check_direction, check_sites, one_group

    site_list = check_sites([s.strip() for s in sites.split(",") if s.strip()])
    directions = ["denoise", "noise"] if direction == "both" else [check_direction(direction)]
    if template_group not in ("refuse", "largest"):
        raise InputError(f"--template-group must be refuse or largest, not '{template_group}'")
    _check_internals_options(out, pairs, task, n, chunk, multi_token, length_mismatch)
    layer_list = _parse_ints(layers, "--layers")
    model = _internals_model(model_name)
    batch = _internals_batch(model, pairs, task, n, one_template, multi_token, length_mismatch, trace)
    batch, notes = one_group(batch, template_group)  # refuse before any patching; say what "largest" dropped
    for note in notes:
        typer.echo(message_line(note, trace, prefix="warning"), err=True)
    doc: dict = {"schema": "sfc-trace/1", "task": task, "sites": site_list}
    for d in directions:
        bar = _Bar(f"trace ({d})")
        try:
            result = causal_trace(model, batch, site_list, d, layer_list, chunk=chunk, progress=bar)
        finally:
            bar.close()
        doc[d] = result.to_dict()
    write_json_atomic(doc, out)
    typer.echo(json.dumps({"out": str(out), "n_pairs": batch.n, "tokens": batch.pos,
                           **{d: {"seconds": doc[d]["seconds"], "m_clean": doc[d]["m_clean"],
                                  "m_corrupted": doc[d]["m_corrupted"]} for d in directions}}))


@app.command()
@user_errors
def lens(
    out: Path = typer.Option(..., help="logit-lens JSON to write"),
    pairs: Path = typer.Option(None, help="prompt-pair JSON Lines file"),
    task: str = typer.Option(None, help="built-in task name (see 'sfc tasks')"),
    n: int = typer.Option(None, help="use the first N pairs (1-1000)"),
    run: str = typer.Option("clean", help="read the clean or the corrupted prompts"),
    pair: int = typer.Option(0, help="the pair (0-based) whose top tokens are kept"),
    top_k: int = typer.Option(5, help="top tokens per cell (1-50)"),
    position: int = typer.Option(None, help="also print the top tokens at this position of the pair, layer by "
                                            "layer (0 = BOS)"),
    multi_token: str = typer.Option("reject", help="multi-token answers: reject | truncate"),
    length_mismatch: str = typer.Option("skip", help="clean/corrupted length differs: skip | align_last"),
    model_name: str = typer.Option(None, "--model", help="TransformerLens model (default: bundled)"),
) -> None:
    """Logit lens: each layer's residual stream through the final norm and unembedding (one forward pass)."""
    from .errors import InputError
    from .lens import logit_lens

    if not 1 <= top_k <= 50:
        raise InputError("--top-k must be between 1 and 50")
    if pair < 0 or (position is not None and position < 0):
        raise InputError("--pair and --position must not be negative")
    if run not in ("clean", "corrupted"):
        raise InputError(f"--run must be clean or corrupted, not '{run}'")
    _check_internals_options(out, pairs, task, n, None, multi_token, length_mismatch)
    model = _internals_model(model_name)
    batch = _internals_batch(model, pairs, task, n, False, multi_token, length_mismatch, lens)
    if position is not None and position > int(batch.last_pos[min(pair, batch.n - 1)]):
        raise InputError(f"position {position} is beyond the prompt of pair {pair} "
                         f"({int(batch.last_pos[min(pair, batch.n - 1)]) + 1} tokens, positions 0 to "
                         f"{int(batch.last_pos[min(pair, batch.n - 1)])})")
    result = logit_lens(model, batch, run=run, pair=pair, top_k=top_k)
    doc = {"schema": "sfc-lens/1", "task": task, **result.to_dict()}
    write_json_atomic(doc, out)
    summary = {"out": str(out), "n_pairs": batch.n, "seconds": round(result.seconds, 3),
               "final_mean_logit_diff": doc["mean_logit_diff"][-1][int(batch.last_pos[pair])]}
    if position is not None:
        summary["position"] = {"token": result.tokens[position],
                               "top": {lab: [t for t, _ in result.top_tokens[i][position]]
                                       for i, lab in enumerate(result.labels)}}
    typer.echo(json.dumps(summary))


@app.command()
@user_errors
def heads(
    out: Path = typer.Option(..., help="head-patching JSON to write"),
    pairs: Path = typer.Option(None, help="prompt-pair JSON Lines file"),
    task: str = typer.Option(None, help="built-in task name (see 'sfc tasks')"),
    n: int = typer.Option(None, help="use the first N pairs (1-1000)"),
    direction: str = typer.Option("denoise", help="denoise (clean into corrupted) | noise (corrupted into clean)"),
    layers: str = typer.Option(None, help="comma-separated layers (default: all)"),
    positions: str = typer.Option("all", help="patch each head's output at all positions or the last"),
    patching: bool = typer.Option(True, "--patching/--no-patching", help="patch every head (layer x head map)"),
    pattern: str = typer.Option(None, help="also write this head's attention pattern on --pair's clean prompt "
                                           "(LAYER.HEAD)"),
    pair: int = typer.Option(0, help="the pair (0-based) whose prompt --pattern shows"),
    path: str = typer.Option(None, help="path patching SENDER>RECEIVER, e.g. 9.6>10.7 (Wang et al. 2022)"),
    receiver_input: str = typer.Option("q", help="path patching: the receiver's q, k or v (k/v per KV head group)"),
    path_direction: str = typer.Option("noise", help="path patching: noise (corrupted sender into the clean run, "
                                                     "Wang et al.) | denoise (clean sender into the corrupted run)"),
    chunk: int = typer.Option(64, help="patched copies per forward pass (1-4096)"),
    multi_token: str = typer.Option("reject", help="multi-token answers: reject | truncate"),
    length_mismatch: str = typer.Option("skip", help="clean/corrupted length differs: skip | align_last"),
    model_name: str = typer.Option(None, "--model", help="TransformerLens model (default: bundled)"),
) -> None:
    """Attention heads: per-head output patching, one head's attention pattern, path patching sender > receiver."""
    from .errors import InputError
    from .heads import attention_pattern, check_head, head_patching, path_patch
    from .tracing import check_direction, check_layers

    check_direction(direction)
    if positions not in ("all", "last"):
        raise InputError(f"--positions must be all or last, not '{positions}'")
    if receiver_input not in ("q", "k", "v"):
        raise InputError(f"--receiver-input must be q, k or v, not '{receiver_input}'")
    if pair < 0:
        raise InputError("--pair must not be negative")
    if path_direction not in ("noise", "denoise"):
        raise InputError(f"--path-direction must be noise or denoise, not '{path_direction}'")
    pattern_head = _parse_head(pattern, "--pattern") if pattern else None
    if path is not None:
        if path.count(">") != 1:
            raise InputError(f"--path is SENDER>RECEIVER (e.g. 9.6>10.7), not '{path}'")
        sender, receiver = (_parse_head(p.strip(), "--path") for p in path.split(">"))
    if not (patching or pattern_head or path):
        raise InputError("nothing to do: give --pattern or --path with --no-patching")
    _check_internals_options(out, pairs, task, n, chunk, multi_token, length_mismatch)
    layer_list = _parse_ints(layers, "--layers")
    model = _internals_model(model_name)
    if layer_list is not None:
        check_layers(model, layer_list)
    if pattern_head:
        check_head(model, *pattern_head)
    if path is not None:
        for head in (sender, receiver):
            check_head(model, *head)
        if sender[0] >= receiver[0]:
            raise InputError(f"--path: the sender L{sender[0]}.H{sender[1]} must sit in an earlier layer than the "
                             f"receiver L{receiver[0]}.H{receiver[1]}")
    batch = _internals_batch(model, pairs, task, n, False, multi_token, length_mismatch, heads)
    if pair >= batch.n:
        raise InputError(f"pair {pair} does not exist: there are {batch.n} pairs (0 to {batch.n - 1})")
    doc: dict = {"schema": "sfc-heads/1", "task": task, "n_pairs": batch.n}
    summary: dict = {"out": str(out), "n_pairs": batch.n}
    if patching:
        bar = _Bar("heads")
        try:
            result = head_patching(model, batch, direction, layer_list, positions, chunk=chunk, progress=bar)
        finally:
            bar.close()
        doc["patching"] = result.to_dict()
        summary["top_heads"] = result.top_heads(5)
        summary["seconds"] = round(result.seconds, 3)
    if pattern_head:
        last = int(batch.last_pos[pair])
        pat, toks = attention_pattern(model, batch.clean_tokens[pair, : last + 1], *pattern_head)
        doc["pattern"] = {"layer": pattern_head[0], "head": pattern_head[1], "pair": pair, "tokens": toks,
                          "pattern": [[round(float(v), 6) for v in row] for row in pat]}
    if path is not None:
        pp = path_patch(model, batch, sender, receiver, receiver_input, path_direction)
        doc["path"] = pp.to_dict()
        summary["path"] = {k: doc["path"][k] for k in ("sender", "receiver", "receiver_input", "direction", "effect",
                                                       "normalised")}
    write_json_atomic(doc, out)
    typer.echo(json.dumps(summary))


def main(argv: list[str] | None = None) -> None:
    """Console entry point of ``sfc``: run the typer app and exit with its status. A usage error that click
    finds before a command runs (``--top-k 1.5``, an unknown flag) is one line on stderr with exit code 2, like
    every other bad input; no arguments prints the help.

    Raises:
        SystemExit: always (0 on success, 2 on bad input, 130 when interrupted).
    """
    from typer.exceptions import TyperException

    args = sys.argv[1:] if argv is None else argv
    try:
        code = app(args=args or ["--help"], prog_name="sfc", standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo(INTERRUPTED, err=True)
        sys.exit(130)
    except TyperException as exc:  # click's usage errors, as typer re-exports them
        if type(exc).__name__ == "NoArgsIsHelpError":  # `sfc bundle`: the group's help
            typer.echo(exc.format_message())
            sys.exit(0)
        ctx = getattr(exc, "ctx", None)
        where = f"sfc {ctx.command_path.split(' ', 1)[-1]} --help" if ctx is not None and ctx.parent else "sfc --help"
        text = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        typer.echo(f"error: {' '.join(text.split())} (see {where})", err=True)
        sys.exit(2)
    sys.exit(code or 0)


if __name__ == "__main__":  # python -m sfc_core.cli
    main()
