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
from .attribution import NodeKey, PairRuns, attribute
from .errors import InputError
from .evaluation import score_circuits
from .fap import fap_scores, fap_synergy_select, ranked_latents
from .masks import MaskConfig, lambda_sweep, nesting

COMPARE_METHODS = ("atp", "ig", "mask", "fap", "fap-synergy")
DEFAULT_LAMBDAS = defaults.MASK_LAMBDAS


def _errors(runs: PairRuns) -> list[NodeKey]:
    return [NodeKey(i, s.d_sae) for i, s in enumerate(runs.sites)]


def _latents_by_effect(effects) -> list[NodeKey]:
    return ranked_latents([e[:-1] for e in effects])


def _score(runs: PairRuns, latent_sets: list[list[NodeKey]], ablation: str) -> dict:
    scores = score_circuits(runs, [s + _errors(runs) for s in latent_sets], ablation)
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
        on_method: optional ``callable(partial_report)`` after each method (the CLI saves it).
    Returns:
        ``{"sizes", "ablation", "n_pairs", "methods": {name: {"sizes", "n_latents", "faithfulness",
        "completeness", "seconds", ...}}, "random": {...}}`` (curve dicts as :func:`sfc_core.viz.curve_figure` reads).
    Raises:
        InputError: unknown methods, empty or non-positive sizes, bad mask hyper-parameters.
    """
    unknown = [m for m in methods if m not in COMPARE_METHODS]
    if unknown or not methods:
        raise InputError(f"unknown methods {', '.join(unknown) or '(none)'}; choose from {', '.join(COMPARE_METHODS)}")
    if not sizes or any(s <= 0 for s in sizes):
        raise InputError("sizes must be a non-empty list of positive integers")
    say = progress or (lambda stage, frac: None)
    sizes = requested = sorted(set(sizes))
    out: dict = {"sizes": sizes, "ablation": ablation, "n_pairs": runs.n, "methods": {}}
    fap = None
    # The mask runs first so that the ranking methods are also scored at its (λ-given) sizes.
    methods = sorted(methods, key=lambda m: m != "mask")
    for j, method in enumerate(methods):
        say(method, j / len(methods))
        t = time.perf_counter()
        if method in ("atp", "ig"):
            ranked = _latents_by_effect(attribute(runs, method).effects)
            row = _score(runs, [ranked[:n] for n in sizes], ablation)
        elif method == "fap":
            fap = fap if fap is not None else fap_scores(runs)
            ranked = ranked_latents(fap)
            row = _score(runs, [ranked[:n] for n in sizes], ablation)
        elif method == "fap-synergy":
            fap = fap if fap is not None else fap_scores(runs)
            n_cand = min(len(ranked_latents(fap)), defaults.FAP_CANDIDATES)
            # one greedy run per budget: the synergy pool sits at each budget's boundary
            sels = [fap_synergy_select(runs, min(n, n_cand), synergy_pool=synergy_pool, scores=fap)
                    for n in requested]
            row = _score(runs, [s.nodes for s in sels], ablation)
            row["budgets"] = [len(s.nodes) for s in sels]
            row["selection_seconds"] = [round(s.seconds, 2) for s in sels]
        else:
            results = lambda_sweep(runs, list(lambdas or DEFAULT_LAMBDAS), mask_cfg)
            sets = [[n for n in r.nodes(runs) if n.feature != runs.sites[n.site].d_sae] for r in results]
            row = _score(runs, sets, ablation)
            row["lambdas"] = sorted(lambdas or DEFAULT_LAMBDAS)
            row["nesting"] = nesting(results, runs)
            row["empty_masks"] = [lam for lam, s in zip(row["lambdas"], sets) if not s]
            row["train_seconds"] = [round(r.seconds, 2) for r in results]
            sizes = out["sizes"] = sorted(set(sizes) | {n for n in row["n_latents"] if n > 0})
        row["sizes"] = row["n_latents"]
        row["n_nodes"] = row["n_latents"]
        row["seconds"] = round(time.perf_counter() - t, 2)
        out["methods"][method] = row
        if on_method:
            on_method(out)
    out["random"] = _random_baseline(runs, sizes, ablation)
    say("done", 1.0)
    return out


def _random_baseline(runs: PairRuns, sizes: list[int], ablation: str, draws: int = 3) -> dict:
    pool = []
    for i, rec in enumerate(runs.clean):
        active = ((rec.f * runs.mask[..., None]) > 0).any(0).any(0)
        pool += [NodeKey(i, int(k)) for k in active.nonzero().flatten().tolist()]
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
