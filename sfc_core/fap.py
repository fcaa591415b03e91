"""FAP and FAP-Synergy circuit selection under a node budget (PIE).

* **FAP score** of a latent: ``Σ_pos ∂m/∂f · f`` on the clean prompts (gradient × activation,
  the first-order estimate of the metric drop when the latent is zero-ablated), mean over pairs,
  metric units. Nodes are ranked by ``|FAP|``; ``fap`` keeps the top ``K``.
* **Synergy** of two latents: ``syn(f, g) = max(0, I({f, g}) − I({f}) − I({g}))`` with
  ``I(S) = |m(full) − m(S ablated)|`` measured by ablation (mean over the corrupted prompts by
  default) on the task's pairs.
* **FAP-Synergy**: greedy selection of ``K`` latents maximising ``|FAP(c)| + mean_{s ∈ selected} syn(c, s)``.
  Each measured pair costs one ablated forward pass over the pairs, so synergies are measured only
  among a pool of ``synergy_pool`` candidates straddling the budget boundary (|FAP| ranks
  ``K − P/2 … K + P/2``): the latents ranked well above ``K`` are chosen whatever their synergy,
  and a pool of only the top ranks would leave the selection equal to plain FAP. The mean runs over
  the selected latents whose synergy with ``c`` was measured (none: no bonus).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import torch

from . import defaults
from .ablation import ablation_values, latent_sets_metric
from .attribution import PairRuns, clean_gradients
from .errors import InputError
from .nodes import Node


def fap_scores(runs: PairRuns) -> list[torch.Tensor]:
    """FAP score per site ``[d_sae]`` (features only; mean over pairs of the sum over positions of
    ``∂m/∂f · f``, metric units). Source: PIE (FAP score).

    Raises:
        NumericalError: NaN or inf in the clean gradients.
    """
    grads = clean_gradients(runs)
    out = []
    for i, g in enumerate(grads):
        f = runs.clean[i].f * runs.mask[..., None]
        out.append(((g @ runs.decoder(i).T) * f).sum(1).mean(0))
    return out


def ranked_latents(runs: PairRuns, scores: list[torch.Tensor]) -> list[Node]:
    """Every latent with a non-zero score (``scores``: per site ``[d_sae]``), by ``|score|`` descending
    (ties: shallower site, then lower index)."""
    return runs.space.ranked([torch.cat([s, s.new_zeros(1)]) for s in scores], kind="latent")


def ablation_importance(runs: PairRuns, sets: list[list[Node]], ablation: str = "mean",
                        chunk_rows: int = 256) -> torch.Tensor:
    """``I(S) = |mean m(full) − mean m(S ablated)|`` for each set of latents ``[len(sets)]`` (metric units; PIE).

    The ablated forward passes are :func:`sfc_core.ablation.latent_sets_metric`'s.

    Raises:
        InputError: an empty set, an unknown ablation, or a latent at a hook point without an SAE / out of range.
    """
    m = latent_sets_metric(runs, sets, ablation_values(runs, ablation), chunk_rows)
    return (runs.m_clean.mean() - m).abs()


def synergy(i_fg: float, i_f: float, i_g: float) -> float:
    """``max(0, I({f,g}) − I({f}) − I({g}))`` in metric units (PIE), from ablation importances (same units)."""
    return max(0.0, i_fg - i_f - i_g)


@dataclass
class FapSelection:
    """Selected latents in selection order, with their FAP scores and the synergy table used.

    Attributes:
        nodes: the selected latents, in selection order.
        scores: FAP score of each selected latent (metric units).
        synergy: ``{(f, g): syn(f, g)}`` for the measured pool pairs (metric units; empty for plain FAP).
        seconds: wall-clock selection time.
    """

    nodes: list[Node]
    scores: dict[Node, float]
    synergy: dict[tuple[Node, Node], float]
    seconds: float


def fap_select(runs: PairRuns, k: int, scores: list[torch.Tensor] | None = None) -> FapSelection:
    """Top-``k`` latents by ``|FAP|`` (method ``fap``; PIE).

    Args:
        scores: precomputed :func:`fap_scores` (per site ``[d_sae]``), else computed here.

    Raises:
        InputError: ``k < 1`` or larger than the number of candidates (latents with a non-zero score).
        NumericalError: NaN or inf in the clean gradients.
    """
    t0 = time.perf_counter()
    scores = scores if scores is not None else fap_scores(runs)
    ranked = ranked_latents(runs, scores)
    _check_budget(k, len(ranked))
    chosen = ranked[:k]
    return FapSelection(chosen, {n: _score_of(runs, scores, n) for n in chosen}, {}, time.perf_counter() - t0)


def _score_of(runs: PairRuns, scores: list[torch.Tensor], node: Node) -> float:
    return float(scores[runs.space.site(node)][runs.space.column(node)])


def _check_budget(k: int, n_candidates: int) -> None:
    if k < 1:
        raise InputError(f"budget K must be ≥ 1, not {k}")
    if k > n_candidates:
        raise InputError(f"budget K={k} is larger than the {n_candidates} candidate latents")


def greedy_synergy(candidates: list[Node], score: dict[Node, float], syn: dict[tuple, float], k: int) -> list[Node]:
    """Greedy: repeatedly add the candidate maximising ``|score| + mean synergy with those selected``
    (the mean over selected latents with a measured synergy ``syn[(c, s)]`` or ``syn[(s, c)]``); PIE's
    FAP-Synergy step. Returns at most ``k`` candidates, in selection order."""
    selected: list[Node] = []
    remaining = list(candidates)
    while remaining and len(selected) < k:
        def gain(c):
            known = [v for s in selected if (v := syn.get((c, s), syn.get((s, c)))) is not None]
            return abs(score[c]) + (sum(known) / len(known) if known else 0.0)
        best = max(remaining, key=gain)
        selected.append(best)
        remaining.remove(best)
    return selected


def fap_synergy_select(runs: PairRuns, k: int, n_candidates: int = defaults.FAP_CANDIDATES,
                       synergy_pool: int = defaults.FAP_SYNERGY_POOL,
                       ablation: str = "mean", scores: list[torch.Tensor] | None = None,
                       progress=None) -> FapSelection:
    """FAP-Synergy selection of ``k`` latents (method ``fap-synergy``; PIE; see module doc).

    Args:
        n_candidates: only the top ``n_candidates`` latents by ``|FAP|`` are considered.
        synergy_pool: latents (around rank ``k``) whose pairwise synergies are measured: ``P·(P+1)/2``
            ablated forward passes over the pairs.
        ablation: ablation of :func:`ablation_importance` (:data:`sfc_core.ablation.ABLATIONS`).
        scores: precomputed :func:`fap_scores` (per site ``[d_sae]``), else computed here.
        progress: accepted for a uniform signature; not called.

    Raises:
        InputError: ``k`` < 1 or larger than the candidates, or an unknown ablation.
        NumericalError: NaN or inf in the clean gradients.
    """
    t0 = time.perf_counter()
    scores = scores if scores is not None else fap_scores(runs)
    ranked = ranked_latents(runs, scores)[:n_candidates]
    _check_budget(k, len(ranked))
    start = max(0, min(k - synergy_pool // 2, len(ranked) - synergy_pool))
    pool = ranked[start:start + synergy_pool]
    pairs = list(itertools.combinations(pool, 2))
    sets = [[n] for n in pool] + [list(p) for p in pairs]
    values = ablation_importance(runs, sets, ablation).tolist() if sets else []
    single = dict(zip(pool, values[:len(pool)]))
    syn = {p: synergy(v, single[p[0]], single[p[1]]) for p, v in zip(pairs, values[len(pool):])}
    score = {n: _score_of(runs, scores, n) for n in ranked}
    chosen = greedy_synergy(ranked, score, syn, k)
    return FapSelection(chosen, {n: score[n] for n in chosen}, syn, time.perf_counter() - t0)
