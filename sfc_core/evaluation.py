"""Faithfulness and completeness of circuits by ablating every node outside them.

Definitions (Marks et al. 2024, §4; Wang et al. 2023):

* ``faithfulness(C) = (m(C) − m(∅)) / (m(M) − m(∅))``
* ``completeness(C) = faithfulness(complement of C)`` (lower is better)

where ``m(C)`` runs the clean prompts with every node outside ``C`` ablated at every
site (downstream features are re-encoded from the ablated stream), ``m(∅)`` ablates every
node, and ``m(M)`` is the full model. What an ablated node becomes (mean, mean_all, zero or
patch) is defined once, in :mod:`sfc_core.ablation`. Metric units as in
:mod:`sfc_core.metrics`; the scores are unitless.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from .ablation import check_ablation
from .attribution import PairRuns
from .errors import InputError
from .nodes import Node


@dataclass
class Scores:
    """Faithfulness / completeness of one circuit (unitless) and the metric values behind them.

    Attributes:
        n_nodes: nodes in the circuit.
        faithfulness / completeness: unitless ratios (Marks et al. 2024, §4); ``None`` when
            ``m_full == m_empty``.
        m_circuit / m_complement / m_empty / m_full: mean metric over pairs (metric units) with everything
            outside the circuit / inside it / every node / no node ablated.
    """

    n_nodes: int
    faithfulness: float | None
    completeness: float | None
    m_circuit: float
    m_complement: float
    m_empty: float
    m_full: float

    def as_dict(self) -> dict:
        """The fields as a plain dict (JSON-able)."""
        return dict(self.__dict__)


def _ratio(m: float, m_empty: float, m_full: float) -> float | None:
    denom = m_full - m_empty
    return None if abs(denom) < 1e-9 else (m - m_empty) / denom


def score_circuits(runs: PairRuns, circuits: list[list[Node]], ablation: str = "mean",
                   aggregation: str = "sum") -> list[Scores]:
    """Faithfulness and completeness of each circuit (lists of nodes) on the clean prompts
    (Marks et al. 2024, §4).

    An empty circuit is scored (faithfulness 0 by definition); ``None`` only when the full
    and empty models give the same metric (the ratio is undefined).

    Args:
        circuits: node lists (whole-prompt nodes, or position-resolved ones with ``aggregation="none"``).
        ablation: what ablated nodes become (:data:`sfc_core.ablation.ABLATIONS`).
        aggregation: ``"none"`` builds per-position keep masks ``[pos, d_sae + 1]``, else ``[d_sae + 1]``.

    Returns:
        One :class:`Scores` per circuit (unitless scores, metric values in metric units).

    Raises:
        InputError: unknown ablation; a node at a hook point without an SAE or out of range.
    """
    ablated = runs.ablated_metric(ablation)
    per_position = aggregation == "none"
    none = runs.space.keep_masks([], per_position)
    every = runs.space.keep_masks([], per_position, complement=True)
    keeps = [every, none]
    for nodes in circuits:
        keeps += [runs.space.keep_masks(nodes, per_position),
                  runs.space.keep_masks(nodes, per_position, complement=True)]
    ms = ablated(keeps).tolist()
    m_full, m_empty = ms[0], ms[1]
    out = []
    for c, nodes in enumerate(circuits):
        m_c, m_comp = ms[2 + 2 * c], ms[3 + 2 * c]
        out.append(Scores(len(nodes), _ratio(m_c, m_empty, m_full), _ratio(m_comp, m_empty, m_full),
                          m_c, m_comp, m_empty, m_full))
    return out


#: Target faithfulness accepted by :func:`smallest_faithful` (exclusive lower, inclusive upper bound).
TARGET_RANGE = (0.0, 1.5)


@dataclass
class TargetSearch:
    """Result of :func:`smallest_faithful`.

    Attributes:
        target: the faithfulness asked for (unitless).
        reached: some size reached it.
        n_nodes: the size chosen: the smallest size found reaching the target, else the best size tried.
        scores: faithfulness and completeness of the top ``n_nodes`` nodes.
        tried: ``{size: faithfulness}`` of every size evaluated (``None``: undefined ratio).
        pool: nodes with a non-zero effect (the largest size there is).
    """

    target: float
    reached: bool
    n_nodes: int
    scores: Scores
    tried: dict[int, float | None]
    pool: int

    def as_dict(self) -> dict:
        """JSON-ready summary (circuit metadata, CLI output)."""
        return {"target": self.target, "reached": self.reached, "n_nodes": self.n_nodes,
                "faithfulness": self.scores.faithfulness, "completeness": self.scores.completeness,
                "pool": self.pool, "tried": {str(k): v for k, v in sorted(self.tried.items())}}


def check_target(target: float) -> float:
    """``target`` as a float once checked.

    Raises:
        InputError: not a number in ``(0, 1.5]``.
    """
    try:
        value = float(target)
    except (TypeError, ValueError):
        raise InputError(f"target faithfulness must be a number, not {target!r}") from None
    lo, hi = TARGET_RANGE
    if not (lo < value <= hi):
        raise InputError(f"target faithfulness must be in ({lo:g}, {hi:g}], not {target!r}")
    return value


def smallest_faithful(runs: PairRuns, ranked: list[Node], target: float, ablation: str = "mean",
                      aggregation: str = "sum", per_round: int = 7, tried: dict | None = None) -> TargetSearch:
    """The smallest top-n of ``ranked`` whose faithfulness reaches ``target``, found with real evaluations.

    Sizes 1, 2, 4, … up to the pool are scored first; between the last size below the target and the first at
    or above it, ``per_round`` evenly spaced sizes are scored per round until the two are adjacent. Faithfulness
    is not monotone in n, so the answer is a size that reaches the target while the size just below it (also
    evaluated) does not; a smaller, isolated size outside the bracket may reach it too. Each round is one
    batched ablated forward pass of the circuits (complements are not run until the end).

    Args:
        ranked: nodes by |effect|, largest first (:meth:`~sfc_core.nodes.NodeSpace.ranked`).
        target: faithfulness to reach, in ``(0, 1.5]``.
        tried: optional ``{size: faithfulness}`` cache shared by searches for several targets over the same
            ``runs``, ``ranked`` and ``ablation`` (filled in place; sizes in it are not evaluated again).
    Returns:
        A :class:`TargetSearch`; when no size reaches the target, the best size tried with ``reached=False``.
    Raises:
        InputError: a target outside ``(0, 1.5]``, no node to choose from, or an unknown ablation.
    """
    target = check_target(target)
    if not ranked:
        raise InputError("no node has a non-zero effect: there is no circuit to grow")
    ablated = runs.ablated_metric(ablation)
    per_position = aggregation == "none"
    none = runs.space.keep_masks([], per_position)
    m_full, m_empty = ablated([runs.space.keep_masks([], per_position, complement=True), none]).tolist()
    tried = {} if tried is None else tried

    def evaluate(sizes: list[int]) -> None:
        sizes = [n for n in sorted(set(sizes)) if n not in tried]
        if sizes:
            keeps = [runs.space.keep_masks(ranked[:n], per_position) for n in sizes]
            for n, m in zip(sizes, ablated(keeps).tolist()):
                tried[n] = _ratio(m, m_empty, m_full)

    def reaches(n: int) -> bool:
        return tried.get(n) is not None and tried[n] >= target

    pool = len(ranked)
    evaluate(sorted({min(2 ** k, pool) for k in range(pool.bit_length() + 1)}))
    hits = [n for n in sorted(tried) if reaches(n)]
    if hits:
        # invariant: hi is the smallest size tried that reaches the target, lo the largest tried below it
        hi = hits[0]
        lo = max([n for n in tried if n < hi], default=0)
        while hi - lo > 1:
            evaluate([n for n in {lo + round((hi - lo) * (j + 1) / (per_round + 1)) for j in range(per_round)}
                      if lo < n < hi])
            hi = min(n for n in tried if n <= hi and reaches(n))
            lo = max([n for n in tried if n < hi], default=0)
        chosen = hi
    else:
        chosen = max(tried, key=lambda n: (tried[n] is not None, tried[n] if tried[n] is not None else 0.0, -n))
    scores = score_circuits(runs, [ranked[:chosen]], ablation, aggregation)[0]
    return TargetSearch(target, bool(hits), chosen, scores, dict(tried), pool)


def random_nodes(runs: PairRuns, size: int, seed: int, aggregation: str = "sum") -> list[Node]:
    """``size`` nodes (fewer if the pool is smaller) drawn uniformly from the active ones (features active on
    some real clean token, and every ε; neurons non-zero on some real clean token; per position with ``aggregation="none"``) — the random-circuit baseline
    of Marks et al. 2024, §4. Deterministic in ``seed``."""
    space = runs.space
    pool = []
    for i, active in enumerate(runs.active_units()):  # [pos, d_sae]: active on some real clean token
        errs = space.has_error(i)
        if aggregation == "sum":
            pool += [space.node_at(i, k) for k in torch.nonzero(active.any(0)).flatten().tolist()]
            pool += [space.node_at(i, space.d_sae[i])] if errs else []
        else:
            pos_feat = torch.nonzero(active).tolist()
            pool += [space.node_at(i, k, p) for p, k in pos_feat]
            pool += [space.node_at(i, space.d_sae[i], p) for p in range(1, active.shape[0])] if errs else []
    rng = random.Random(seed)
    return rng.sample(pool, min(size, len(pool)))


def faithfulness_curve(runs: PairRuns, effects: list[torch.Tensor], sizes: list[int], ablation: str = "mean",
                       aggregation: str = "sum", random_seeds: int = 3) -> dict:
    """Faithfulness and completeness (Marks et al. 2024, §4) of the top-n nodes by ``|effect|`` for each ``n``
    in ``sizes``, with a random-circuit baseline of the same sizes (mean over ``random_seeds`` draws).

    Args:
        effects: per-site node effects ``[d_sae + 1]`` or ``[pos, d_sae + 1]`` (e.g.
            :attr:`~sfc_core.attribution.Attribution.effects`), used only to rank nodes.

    Returns:
        ``{"sizes", "n_nodes", "faithfulness", "completeness", "random_faithfulness", "random_completeness",
        "m_full", "m_empty", "ablation"}``: lists ``[len(sizes)]`` of unitless scores (``None`` where
        undefined); ``m_full`` / ``m_empty`` in metric units.

    Raises:
        InputError: an empty or non-positive size list, or an unknown ablation.
    """
    if not sizes or any(s <= 0 for s in sizes):
        raise InputError("sizes must be a non-empty list of positive integers")
    check_ablation(ablation)
    ranked = runs.space.ranked(effects)
    top = score_circuits(runs, [ranked[:s] for s in sizes], ablation, aggregation)
    rand = score_circuits(runs, [random_nodes(runs, s, seed, aggregation) for s in sizes
                                 for seed in range(random_seeds)], ablation, aggregation)

    def mean_of(vals):
        vals = [v for v in vals if v is not None]
        return sum(vals) / len(vals) if vals else None

    rf = [mean_of([r.faithfulness for r in rand[k * random_seeds:(k + 1) * random_seeds]]) for k in range(len(sizes))]
    rc = [mean_of([r.completeness for r in rand[k * random_seeds:(k + 1) * random_seeds]]) for k in range(len(sizes))]
    return {
        "sizes": list(sizes),
        "n_nodes": [s.n_nodes for s in top],
        "faithfulness": [s.faithfulness for s in top],
        "completeness": [s.completeness for s in top],
        "random_faithfulness": rf,
        "random_completeness": rc,
        "m_full": top[0].m_full,
        "m_empty": top[0].m_empty,
        "ablation": ablation,
    }
