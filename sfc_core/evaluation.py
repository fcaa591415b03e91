"""Faithfulness and completeness of circuits by ablating every node outside them.

Definitions (Marks et al. 2024, §4; Wang et al. 2023):

* ``faithfulness(C) = (m(C) − m(∅)) / (m(M) − m(∅))``
* ``completeness(C) = faithfulness(complement of C)`` (lower is better)

where ``m(C)`` runs the clean prompts with every node outside ``C`` ablated at every
site (downstream features are re-encoded from the ablated stream), ``m(∅)`` ablates every
node, and ``m(M)`` is the full model. Mean ablation (the default) replaces a feature (or ε)
by its mean over the corrupted prompts at the same position; ``mean_all`` by its mean over
all their tokens, zero ablation by 0, and patch ablation by the value in the pair's own
corrupted prompt (see :func:`ablation_means`). BOS passes through. Metric units as in
:mod:`sfc_core.metrics`; the scores are unitless.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from .attribution import NodeKey, PairRuns
from .errors import InputError
from .splice import decode, encode, run_from

ABLATIONS = ("mean", "mean_all", "zero", "patch")


@dataclass(frozen=True)
class AblationMeans:
    """Per site: feature values ``[d_sae]``, ``[pos, d_sae]`` or ``[n, pos, d_sae]`` (``patch``: one row per
    pair) and ε values of the same leading shape with ``d_model``."""

    f: list[torch.Tensor]
    err: list[torch.Tensor]


def ablation_means(runs: PairRuns, ablation: str = "mean") -> AblationMeans:
    """Values that ablated nodes take, per site.

    * ``"mean"``: mean over the corrupted prompts *at each position* ``[pos, d]`` — prompt pairs
      are templatic (clean and corrupted aligned token by token), so a position's mean keeps the
      template and removes only what varies; a position no corrupted prompt reaches takes the
      mean over all their real tokens.
    * ``"mean_all"``: mean over every real non-BOS token of the corrupted prompts ``[d]``.
    * ``"zero"``: zeros.
    * ``"patch"``: each pair's own corrupted run ``[n, pos, d]`` — the interchange (resample)
      ablation of activation patching (Conmy et al. 2023, ACDC; Wang et al. 2023): an ablated
      node takes exactly the value whose effect the indirect effect measures, so what the clean
      and corrupted prompts share (e.g. IOI's names, which mean ablation erases) stays.

    Raises:
        InputError: unknown ablation kind.
    """
    if ablation not in ABLATIONS:
        raise InputError(f"ablation must be one of {', '.join(ABLATIONS)}, not '{ablation}'")
    m = runs.mask[..., None].to(runs.corrupted[0].f.dtype)
    count = m.sum()
    per_pos = m.sum(0)  # [pos, 1]
    fs, es = [], []
    for rec in runs.corrupted:
        if ablation == "patch":
            fs.append(rec.f)
            es.append(rec.err)
            continue
        if ablation == "zero":
            fs.append(torch.zeros(rec.f.shape[-1], dtype=rec.f.dtype))
            es.append(torch.zeros(rec.err.shape[-1], dtype=rec.err.dtype))
            continue
        f_all, e_all = (rec.f * m).sum((0, 1)) / count, (rec.err * m).sum((0, 1)) / count
        if ablation == "mean_all":
            fs.append(f_all)
            es.append(e_all)
        else:
            seen = per_pos > 0
            fs.append(torch.where(seen, (rec.f * m).sum(0) / per_pos.clamp(min=1), f_all))
            es.append(torch.where(seen, (rec.err * m).sum(0) / per_pos.clamp(min=1), e_all))
    return AblationMeans(fs, es)


def keep_masks(runs: PairRuns, nodes, aggregation: str = "sum") -> list[torch.Tensor]:
    """Boolean keep masks per site, ``[d_sae + 1]`` or ``[pos, d_sae + 1]``, True for nodes in the circuit."""
    width = runs.batch.clean_tokens.shape[1]
    masks = []
    for s in runs.sites:
        shape = (s.d_sae + 1,) if aggregation == "sum" else (width, s.d_sae + 1)
        masks.append(torch.zeros(shape, dtype=torch.bool))
    for node in nodes:
        if node.position is None:
            masks[node.site][..., node.feature] = True
        else:
            masks[node.site][node.position, node.feature] = True
    return masks


def ablated_metric(runs: PairRuns, keeps: list[list[torch.Tensor]], means: AblationMeans,
                   chunk_rows: int = 256) -> torch.Tensor:
    """Mean metric over pairs for each of ``R`` circuits, ``[R]``.

    Args:
        keeps: ``R`` lists (one per circuit) of per-site keep masks from :func:`keep_masks`.
    """
    out = []
    per = max(1, chunk_rows // runs.n)
    for c in range(0, len(keeps), per):
        out.append(_ablated_chunk(runs, keeps[c:c + per], means))
    return torch.cat(out)


def _ablated_chunk(runs: PairRuns, keeps, means: AblationMeans) -> torch.Tensor:
    reps, n = len(keeps), runs.n

    def edit(i: int, x: torch.Tensor) -> torch.Tensor:
        f, err = encode(runs.sites[i], x)
        keep = torch.stack([k[i] for k in keeps])  # [R, d+1] or [R, pos, d+1]
        if keep.dim() == 2:
            keep = keep[:, None, None, :]
        else:
            keep = keep[:, None]
        keep = keep.expand(reps, n, *x.shape[1:2], keep.shape[-1]).reshape(reps * n, x.shape[1], -1)
        f = torch.where(keep[..., :-1], f, _rows(means.f[i], reps))
        err = torch.where(keep[..., -1:], err, _rows(means.err[i], reps))
        new = decode(runs.sites[i], f, err)
        return torch.cat([x[:, :1], new[:, 1:]], dim=1)  # BOS passes through

    with torch.no_grad():
        resid = runs.embed_clean.repeat(reps, 1, 1)
        final = run_from(runs.model, runs.sites, resid, 0, edit, stop_block=runs.model.cfg.n_layers)
        m = runs.metric_from_resid(final, reps=reps).view(reps, n)
    return m.mean(1)


def _rows(ref: torch.Tensor, reps: int) -> torch.Tensor:
    """Per-pair ablation values ``[n, pos, d]`` tiled to the ``reps·n`` rows; shared ones broadcast."""
    return ref.repeat(reps, 1, 1) if ref.dim() == 3 else ref


@dataclass
class Scores:
    """Faithfulness / completeness of one circuit (unitless) and the metric values behind them."""

    n_nodes: int
    faithfulness: float | None
    completeness: float | None
    m_circuit: float
    m_complement: float
    m_empty: float
    m_full: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _ratio(m: float, m_empty: float, m_full: float) -> float | None:
    denom = m_full - m_empty
    return None if abs(denom) < 1e-9 else (m - m_empty) / denom


def score_circuits(runs: PairRuns, circuits: list[list[NodeKey]], ablation: str = "mean",
                   aggregation: str = "sum") -> list[Scores]:
    """Faithfulness and completeness of each circuit (lists of nodes) on the clean prompts.

    An empty circuit is scored (faithfulness 0 by definition); ``None`` only when the full
    and empty models give the same metric (the ratio is undefined).
    """
    means = ablation_means(runs, ablation)
    every = [m | True for m in keep_masks(runs, [], aggregation)]
    none = keep_masks(runs, [], aggregation)
    keeps = [every, none]
    for nodes in circuits:
        k = keep_masks(runs, nodes, aggregation)
        keeps += [k, [~m for m in k]]
    ms = ablated_metric(runs, keeps, means).tolist()
    m_full, m_empty = ms[0], ms[1]
    out = []
    for c, nodes in enumerate(circuits):
        m_c, m_comp = ms[2 + 2 * c], ms[3 + 2 * c]
        out.append(Scores(len(nodes), _ratio(m_c, m_empty, m_full), _ratio(m_comp, m_empty, m_full),
                          m_c, m_comp, m_empty, m_full))
    return out


def ranked_nodes(effects: list[torch.Tensor], aggregation: str = "sum") -> list[NodeKey]:
    """All nodes sorted by ``|effect|``, largest first (ties: shallower site first)."""
    keys, vals = [], []
    for i, e in enumerate(effects):
        flat = e.abs().flatten()
        order = torch.argsort(flat, descending=True, stable=True)
        nz = order[flat[order] > 0]
        for idx in nz.tolist():
            if aggregation == "sum":
                keys.append(NodeKey(i, idx))
            else:
                pos, feat = divmod(idx, e.shape[-1])
                keys.append(NodeKey(i, feat, pos))
            vals.append(float(flat[idx]))
    order = sorted(range(len(keys)), key=lambda j: -vals[j])
    return [keys[j] for j in order]


def random_nodes(runs: PairRuns, size: int, seed: int, aggregation: str = "sum") -> list[NodeKey]:
    """``size`` nodes drawn uniformly from the active ones (features active on some clean
    token, and every ε) — the random-circuit baseline of Marks et al."""
    pool = []
    for i, rec in enumerate(runs.clean):
        active = ((rec.f * runs.mask[..., None]) > 0)
        if aggregation == "sum":
            pool += [NodeKey(i, k) for k in torch.nonzero(active.any((0, 1))).flatten().tolist()]
            pool.append(NodeKey(i, runs.sites[i].d_sae))
        else:
            pos_feat = torch.nonzero(active.any(0)).tolist()
            pool += [NodeKey(i, k, p) for p, k in pos_feat]
            pool += [NodeKey(i, runs.sites[i].d_sae, p) for p in range(1, rec.f.shape[1])]
    rng = random.Random(seed)
    return rng.sample(pool, min(size, len(pool)))


def faithfulness_curve(runs: PairRuns, effects: list[torch.Tensor], sizes: list[int], ablation: str = "mean",
                       aggregation: str = "sum", random_seeds: int = 3) -> dict:
    """Faithfulness and completeness of the top-n nodes by ``|effect|`` for each ``n`` in ``sizes``,
    with a random-circuit baseline of the same sizes (mean over ``random_seeds`` draws).

    Returns:
        ``{"sizes", "faithfulness", "completeness", "random_faithfulness", "random_completeness",
        "m_full", "m_empty", "ablation"}``.
    Raises:
        InputError: an empty or non-positive size list.
    """
    if not sizes or any(s <= 0 for s in sizes):
        raise InputError("sizes must be a non-empty list of positive integers")
    ranked = ranked_nodes(effects, aggregation)
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
