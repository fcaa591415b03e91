"""Side-by-side comparison of circuit-selection methods at matched sizes on one set of pairs.

Every method contributes circuits of ``n`` latents for each ``n`` in ``sizes``; every circuit also
keeps all error nodes (as the mask method does, Nainani et al.), so sizes count latents only and
the methods differ only in which latents they pick:

* ``atp`` / ``ig``: the ``n`` latents of largest |indirect effect| (Marks et al. 2024);
* ``fap``: the ``n`` latents of largest |gradient × activation| (PIE);
* ``fap-synergy``: the greedy synergy-aware selection with budget ``n``, at the requested sizes only
  (each budget is its own selection, ~1–2 min on 20 pairs);
* ``mask``: one mask per λ of a sweep; its sizes are whatever each λ gives (a frontier), and
  every other method is also scored at those sizes, so "mask vs IG at equal latent counts" is read
  off directly;
* ``random``: ``n`` latents drawn from the active ones (mean of 3 draws).

All circuits are scored by the same ablation (:mod:`sfc_core.evaluation`).
"""

from __future__ import annotations

import random
import time

from . import defaults
from . import methods as registry
from .attribution import PairRuns
from .errors import InputError
from .evaluation import score_circuits
from .masks import MaskConfig
from .nodes import Node

DEFAULT_LAMBDAS = defaults.MASK_LAMBDAS


def _score(runs: PairRuns, latent_sets: list[list[Node]], ablation: str) -> dict:
    scores = score_circuits(runs, [s + runs.space.errors() for s in latent_sets], ablation)
    return {
        "n_latents": [len(s) for s in latent_sets],
        "faithfulness": [sc.faithfulness for sc in scores],
        "completeness": [sc.completeness for sc in scores],
    }


def compare_methods(runs: PairRuns, methods: list[str], sizes: list[int], ablation: str = "mean",
                    lambdas: list[float] | None = None, mask_cfg: MaskConfig = MaskConfig(),
                    synergy_pool: int = defaults.FAP_SYNERGY_POOL, progress=None, on_method=None) -> dict:
    """Faithfulness and completeness of each method's circuits at matched latent counts.

    Args:
        methods: registered methods that can be compared (:func:`sfc_core.methods.names` with ``comparable``).
        sizes: latent counts (error nodes are kept on top).
        ablation: how nodes outside a circuit are ablated (:data:`sfc_core.ablation.ABLATIONS`).
        lambdas / mask_cfg: the mask method's λ sweep (default :data:`DEFAULT_LAMBDAS`) and other settings.
        synergy_pool: FAP-Synergy's pool of latents whose pairwise synergy is measured.
        progress: optional ``callable(stage, fraction)``.
        on_method: optional ``callable(partial_report)`` after each method (the CLI saves it).

    Returns:
        ``{"sizes", "ablation", "n_pairs", "methods": {name: {"sizes", "n_latents", "faithfulness",
        "completeness", "seconds", ...}}, "random": {...}}`` (curve dicts as :func:`sfc_core.viz.curve_figure`
        reads); faithfulness and completeness are unitless, seconds wall-clock.

    Raises:
        InputError: unknown methods, empty or non-positive sizes, bad mask hyper-parameters, or an unknown
            ablation.
        NumericalError: NaN or inf in gradients.
    """
    comparable = registry.names(comparable=True)
    unknown = [m for m in methods if m not in comparable]
    if unknown or not methods:
        raise InputError(f"unknown methods {', '.join(unknown) or '(none)'}; choose from {', '.join(comparable)}")
    if not sizes or any(s <= 0 for s in sizes):
        raise InputError("sizes must be a non-empty list of positive integers")
    say = progress or (lambda stage, frac: None)
    sizes = requested = sorted(set(sizes))
    out: dict = {"sizes": sizes, "ablation": ablation, "n_pairs": runs.n, "methods": {}}
    ctx = {"lambdas": lambdas, "mask_cfg": mask_cfg, "synergy_pool": synergy_pool, "requested": requested}
    # A frontier method (the mask's λ sweep) runs first so that the others are also scored at its sizes.
    order = sorted(methods, key=lambda m: not registry.get(m).frontier)
    for j, name in enumerate(order):
        say(name, j / len(order))
        t = time.perf_counter()
        method = registry.get(name)
        sets, extra = method.compare(runs, sizes, ctx)
        row = {**_score(runs, sets, ablation), **extra}
        if method.frontier:
            sizes = out["sizes"] = sorted(set(sizes) | {n for n in row["n_latents"] if n > 0})
        row["sizes"] = row["n_latents"]
        row["n_nodes"] = row["n_latents"]
        row["seconds"] = round(time.perf_counter() - t, 2)
        out["methods"][name] = row
        if on_method:
            on_method(out)
    out["random"] = _random_baseline(runs, sizes, ablation)
    say("done", 1.0)
    return out


def _random_baseline(runs: PairRuns, sizes: list[int], ablation: str, draws: int = 3) -> dict:
    pool = []
    for i, rec in enumerate(runs.clean):
        active = ((rec.f * runs.mask[..., None]) > 0).any(0).any(0)
        pool += [runs.space.node_at(i, int(k)) for k in active.nonzero().flatten().tolist()]
    rows = []
    for seed in range(draws):
        rng = random.Random(seed)
        rows.append(_score(runs, [rng.sample(pool, min(n, len(pool))) for n in sizes], ablation))

    def mean(key, k):
        vals = [r[key][k] for r in rows if r[key][k] is not None]
        return sum(vals) / len(vals) if vals else None

    return {"sizes": sizes, "n_latents": sizes, "n_nodes": sizes,
            "faithfulness": [mean("faithfulness", k) for k in range(len(sizes))],
            "completeness": [mean("completeness", k) for k in range(len(sizes))]}


# ------------------------------------------------------------------ neurons vs features (Marks et al. 2024, §4)
#: Circuit sizes (nodes) of the neurons-vs-features curves when none are given.
NEURON_SIZES = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
#: Faithfulness targets whose node counts :func:`neurons_vs_features` reports.
NEURON_TARGETS = (0.5, 0.8)


def _unit_side(runs: PairRuns, method: str, sizes: list[int], ablation: str, targets, random_seeds: int) -> dict:
    """One side of :func:`neurons_vs_features`: attribution, the top-n curve and the node counts per target."""
    from .attribution import attribute
    from .evaluation import faithfulness_curve, smallest_faithful

    t = time.perf_counter()
    att = attribute(runs, method)
    t_att = time.perf_counter() - t
    curve = faithfulness_curve(runs, att.effects, sizes, ablation, random_seeds=random_seeds)
    ranked = runs.space.ranked(att.effects)
    tried: dict = {}
    searches = {}
    for target in targets:
        s = smallest_faithful(runs, ranked, target, ablation, tried=tried)
        searches[str(target)] = s.as_dict()
    return {"curve": curve, "pool": len(ranked), "n_for": {k: (v["n_nodes"] if v["reached"] else None)
                                                           for k, v in searches.items()},
            "searches": searches, "seconds": round(time.perf_counter() - t, 2), "attribution_s": round(t_att, 2)}


def neurons_vs_features(model, saes: dict, batch, sizes=NEURON_SIZES, method: str = "atp", ablation: str = "mean",
                        targets=NEURON_TARGETS, metric: str = "logit_diff", random_seeds: int = 0,
                        feature_runs: PairRuns | None = None, progress=None,
                        units=("features", "neurons")) -> dict:
    """Faithfulness against circuit size for a neuron circuit and a feature circuit on the same pairs (Marks et
    al. 2024, §4 and their appendix on neurons: features reach a faithfulness with far fewer nodes).

    Both sides rank their nodes by ``|IE|`` of the same attribution ``method`` on the same pairs and score the
    top-n with the same ``ablation`` (mean ablation: the corrupted prompts' mean per template-aligned position,
    :mod:`sfc_core.ablation`), each normalised by its own ``m(∅)``:

    * **features**: SAE latents and error nodes ε at the SAEs' hook points (:func:`~sfc_core.attribution.
      prepare_runs`); ``m(∅)`` ablates every latent and ε there;
    * **neurons**: the MLP neurons ``blocks.L.mlp.hook_post`` of the same layers L (:mod:`sfc_core.neurons`), no
      error node; ``m(∅)`` ablates every neuron of those MLPs (attention and the other MLPs run as usual), so it
      is *not* the features' ``m(∅)``: the 7 MLPs are no cut of the model and may carry little of the behaviour;
    * **resid** (optional): the residual stream's basis directions at the SAEs' own hook points
      (:class:`~sfc_core.neurons.ResidualBasis`, ``d_model`` per site, no error node): the same cut as the
      features, with the same ``m(∅)`` and ``m(M)`` — the like-for-like neuron baseline.

    Node counts for each target are found by real evaluations (:func:`~sfc_core.evaluation.smallest_faithful`:
    the smallest top-n that reaches it while the size below does not), ``None`` when no size does.

    Args:
        saes: ``{hook_name: LoadedSAE | SAE}`` at residual hook points; the neurons sit at their layers.
        batch: a :class:`~sfc_core.pairs.PairBatch` (``n`` pairs).
        sizes: circuit sizes (nodes) of the two curves.
        method: a node attribution method (``atp`` | ``atp_star`` | ``ig`` | ``exact``).
        targets: faithfulness targets (unitless) in ``(0, 1.5]``.
        random_seeds: random-circuit draws per size in the curves (0: no random baseline).
        feature_runs: the SAE runs of these pairs if already made.
        progress: optional ``callable(stage, fraction)``.
        units: the sides to run, in order: ``"features"``, ``"neurons"``, ``"resid"``.

    Returns:
        ``{"method", "ablation", "metric", "n_pairs", "sizes", "targets", "layers", "curves": {unit: curve},
        "n_for": {unit: {"0.5": n | None, ...}}, "pool": {...},
        "seconds": {...}, "searches": {...}}``; curves are :func:`~sfc_core.evaluation.faithfulness_curve` dicts
        (:func:`sfc_core.viz.curve_figure` draws ``curves``), scores unitless, ``m_full`` / ``m_empty`` in metric
        units, seconds wall-clock.

    Raises:
        InputError: no SAE, empty or non-positive sizes, an unknown method / ablation / metric, a target outside
            ``(0, 1.5]``, or no node with a non-zero effect.
        NumericalError: NaN or inf in activations or gradients.
    """
    from .ablation import check_ablation
    from .attribution import prepare_runs
    from .evaluation import check_target
    from .hooks import parse
    from .neurons import prepare_neuron_runs, residual_sites

    sizes = sorted({int(s) for s in sizes})
    if not sizes or sizes[0] <= 0:
        raise InputError("sizes must be a non-empty list of positive integers")
    if not saes:
        raise InputError("select at least one SAE hook point")
    check_ablation(ablation)
    targets = [check_target(t) for t in targets]
    registry.get(method, kind="attribution")
    units = list(units)
    bad = [u for u in units if u not in ("features", "neurons", "resid")]
    if bad or not units:
        raise InputError(f"units must be among features, neurons, resid, not {', '.join(bad) or '(none)'}")
    say = progress or (lambda stage, frac: None)
    out: dict = {"method": method, "ablation": ablation, "metric": metric, "sizes": sizes, "targets": targets,
                 "curves": {}, "n_for": {}, "pool": {}, "seconds": {}, "searches": {}}
    layers = sorted({parse(h).layer for h in saes})
    for j, unit in enumerate(units):
        say(unit, j / len(units))
        t = time.perf_counter()
        if unit == "features":
            runs = feature_runs if feature_runs is not None else prepare_runs(model, saes, batch, metric)
        elif unit == "resid":
            runs = prepare_runs(model, residual_sites(model, list(saes)), batch, metric)
        else:
            runs = prepare_neuron_runs(model, layers, batch, metric)
        side = _unit_side(runs, method, sizes, ablation, targets, random_seeds)
        out["n_pairs"] = runs.n
        out["curves"][unit] = side["curve"]
        out["n_for"][unit] = side["n_for"]
        out["pool"][unit] = side["pool"]
        out["searches"][unit] = side["searches"]
        out["seconds"][unit] = round(time.perf_counter() - t, 2)
        del runs
    out["layers"] = layers
    say("done", 1.0)
    return out
