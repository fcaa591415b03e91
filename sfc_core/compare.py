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
