"""Ablation: what an ablated node becomes, and every ablated forward pass of the engine.

One meaning per name, used by evaluation (faithfulness), FAP-Synergy (ablation importance), mask
optimisation and the feature panel:

* ``"mean"`` (mean ablation): the node's mean over the corrupted prompts **at each template position**.
  Prompt pairs are templatic (clean and corrupted aligned token by token), so a position's mean keeps the
  template and removes only what varies (Marks et al. 2024, §4). Positions are aligned by template role,
  not raw index (:mod:`sfc_core.alignment`): pair ``i``'s value at position ``p`` is the mean at ``p`` over
  the corrupted prompts of ``i``'s *template group* (same template id, same token length). With one group
  (one template, one length) that is one ``[pos, d]`` tensor shared by every pair; with several it is per
  pair ``[n, pos, d]``. A position no corrupted prompt of the group reaches (padding) takes the group's mean
  over all its real tokens.
* ``"mean_all"``: the mean over every real non-BOS token of the corrupted prompts ``[d]``.
* ``"zero"`` (zero ablation): 0.
* ``"patch"`` (interchange / resample ablation): each pair's own corrupted value ``[n, pos, d]`` — the
  interchange intervention of Geiger et al. 2021, used as "resample ablation" by ACDC (Conmy et al. 2023)
  and Wang et al. 2023. An ablated node takes exactly the value whose effect its indirect effect
  measures, so what the clean and corrupted prompts share (e.g. IOI's names, which mean ablation erases)
  stays.

BOS passes through every ablation. Features downstream of an ablated site are re-encoded from the ablated
residual stream (the error node is recomputed too unless it is itself ablated). Metric units as in
:mod:`sfc_core.metrics` (logits for logit difference).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .alignment import template_groups
from .errors import InputError
from .nodes import Node
from .splice import decode, encode, run_from

ABLATIONS = ("mean", "mean_all", "zero", "patch")
#: One line per kind, for ``--help`` and the app.
DESCRIPTIONS = {
    "mean": "mean over the corrupted prompts at each position, within each template group",
    "mean_all": "mean over every token of the corrupted prompts",
    "zero": "zero",
    "patch": "each pair's own corrupted value (interchange / resample ablation)",
}
HELP = "ablation: " + " | ".join(f"{k} ({v})" for k, v in DESCRIPTIONS.items())


def check_ablation(kind: str) -> str:
    """``kind`` itself, once checked.

    Raises:
        InputError: unknown kind.
    """
    if kind not in ABLATIONS:
        raise InputError(f"ablation must be one of {', '.join(ABLATIONS)}, not '{kind}'")
    return kind


@dataclass(frozen=True)
class AblationValues:
    """Per site, the values ablated nodes take: features ``f`` ``[d_sae]``, ``[pos, d_sae]`` or ``[n, pos, d_sae]``
    (by kind, see the module doc) and error nodes ``err`` of the same leading shape with ``d_model``."""

    kind: str
    f: list[torch.Tensor]
    err: list[torch.Tensor]


def ablation_values(runs, kind: str = "mean") -> AblationValues:
    """Values that ablated nodes take at every site of ``runs`` (a :class:`~sfc_core.attribution.PairRuns`).

    Means run over real non-BOS tokens of the corrupted prompts (``runs.mask``). Sources: mean ablation as in
    Marks et al. 2024, §4; ``"patch"`` is the interchange intervention of Geiger et al. 2021 (resample
    ablation in ACDC, Conmy et al. 2023).

    ``"mean"`` averages within each pair's template group (:func:`~sfc_core.alignment.template_groups`).

    Returns:
        Per site ``f`` / ``err``: ``[pos, d_sae]`` / ``[pos, d_model]`` (``"mean"`` over pairs of one template
        group), ``[d_sae]`` / ``[d_model]`` (``"mean_all"``, ``"zero"``) or ``[n, pos, d_sae]`` /
        ``[n, pos, d_model]`` (``"patch"``, and ``"mean"`` over pairs of several groups), in activation units.

    Raises:
        InputError: unknown ablation kind.
    """
    kind = check_ablation(kind)
    m = runs.mask[..., None].to(runs.corrupted[0].f.dtype)
    groups = None
    if kind == "mean":
        group, keys = template_groups(runs.batch)
        groups = [torch.nonzero(group == g).flatten() for g in range(len(keys))] if len(keys) > 1 else None
    fs, es = [], []
    for rec in runs.corrupted:
        if kind == "patch":
            fs.append(rec.f)
            es.append(rec.err)
        elif kind == "zero":
            fs.append(torch.zeros(rec.f.shape[-1], dtype=rec.f.dtype))
            es.append(torch.zeros(rec.err.shape[-1], dtype=rec.err.dtype))
        elif kind == "mean_all":
            fs.append(_mean(rec.f, m, per_position=False))
            es.append(_mean(rec.err, m, per_position=False))
        elif groups is None:
            fs.append(_mean(rec.f, m))
            es.append(_mean(rec.err, m))
        else:
            fs.append(_group_means(rec.f, m, groups))
            es.append(_group_means(rec.err, m, groups))
    return AblationValues(kind, fs, es)


def _mean(x: torch.Tensor, m: torch.Tensor, per_position: bool = True) -> torch.Tensor:
    """Mean of ``x`` ``[n, pos, d]`` over the real tokens ``m`` ``[n, pos, 1]``: per position ``[pos, d]`` (a
    position no row reaches takes the mean over all real tokens), or over every token ``[d]``."""
    every = (x * m).sum((0, 1)) / m.sum()
    if not per_position:
        return every
    return position_means((x * m).sum(0), m.sum(0), every)


def position_means(sums: torch.Tensor, counts: torch.Tensor, every: torch.Tensor) -> torch.Tensor:
    """Per-position means ``[pos, d]`` from sums ``[pos, d]`` over ``counts`` ``[pos, 1]`` real tokens; a position
    no token reaches takes ``every`` ``[d]``, the mean over all real tokens (the rule of ``"mean"`` ablation; also
    used for means accumulated over pair batches, :mod:`sfc_core.batching`)."""
    return torch.where(counts > 0, sums / counts.clamp(min=1), every)


def _group_means(x: torch.Tensor, m: torch.Tensor, groups: list[torch.Tensor]) -> torch.Tensor:
    """Per pair ``[n, pos, d]``: each row holds the per-position mean over the rows of its template group."""
    out = torch.empty_like(x)
    for rows in groups:
        out[rows] = _mean(x[rows], m[rows])
    return out


def _rows(ref: torch.Tensor, reps: int) -> torch.Tensor:
    """Per-pair ablation values ``[n, pos, d]`` tiled to ``reps·n`` rows; shared ones broadcast."""
    return ref.repeat(reps, 1, 1) if ref.dim() == 3 else ref


# ------------------------------------------------------------------ circuits: ablate everything outside
def circuit_metric(runs, keeps: list[list[torch.Tensor]], values: AblationValues, chunk_rows: int = 256) -> torch.Tensor:
    """Mean metric over pairs ``[R]`` of the clean prompts with every node outside each of ``R`` circuits
    ablated at every site (Marks et al. 2024, §4: the ``m(C)`` of faithfulness).

    Args:
        runs: the pairs' spliced runs (:class:`~sfc_core.attribution.PairRuns`, ``n`` pairs).
        keeps: ``R`` lists (one per circuit) of per-site keep masks ``[d_sae + 1]`` or ``[pos, d_sae + 1]``
            (:meth:`~sfc_core.nodes.NodeSpace.keep_masks`; column ``d_sae`` is ε).
        values: what ablated nodes become (:func:`ablation_values`).
        chunk_rows: sequences per forward pass.

    Returns:
        ``[R]``, metric units (logits for logit difference), no grad.
    """
    out = []
    per = max(1, chunk_rows // runs.n)
    for c in range(0, len(keeps), per):
        out.append(_circuit_chunk(runs, keeps[c:c + per], values))
    return torch.cat(out)


def _circuit_chunk(runs, keeps, values: AblationValues) -> torch.Tensor:
    reps, n = len(keeps), runs.n

    def edit(i: int, x: torch.Tensor) -> torch.Tensor:
        f, err = encode(runs.sites[i], x)
        keep = torch.stack([k[i] for k in keeps])  # [R, d+1] or [R, pos, d+1]
        keep = keep[:, None, None, :] if keep.dim() == 2 else keep[:, None]
        keep = keep.expand(reps, n, *x.shape[1:2], keep.shape[-1]).reshape(reps * n, x.shape[1], -1)
        f = torch.where(keep[..., :-1], f, _rows(values.f[i], reps))
        err = torch.where(keep[..., -1:], err, _rows(values.err[i], reps))
        new = decode(runs.sites[i], x, f, err)
        return torch.cat([x[:, :1], new[:, 1:]], dim=1)  # BOS passes through

    with torch.no_grad():
        resid = runs.embed_clean.repeat(reps, 1, 1)
        final = run_from(runs.model, runs.sites, resid, 0, edit, stop_block=runs.model.cfg.n_layers)
        m = runs.metric_from_resid(final, reps=reps).view(reps, n)
    return m.mean(1)


# ------------------------------------------------------------------ a few latents ablated
def latent_sets_metric(runs, sets: list[list[Node]], values: AblationValues, chunk_rows: int = 256) -> torch.Tensor:
    """Mean metric over pairs ``[len(sets)]`` of the clean prompts with the latents of each set ablated
    (every other node as in the clean run), metric units. Used by FAP-Synergy's ``I(S)`` (PIE).

    Each set runs from its earliest site (everything upstream is clean); its latents take their ablation
    value at every real position and downstream features are recomputed.

    Raises:
        InputError: an empty set, a latent at a hook point without an SAE, or a latent index out of range.
    """
    out = torch.zeros(len(sets), dtype=runs.m_clean.dtype)
    by_start: dict[int, list[int]] = {}
    for j, s in enumerate(sets):
        if not s:
            raise InputError("an ablation set is empty")
        by_start.setdefault(min(runs.space.site(k) for k in s), []).append(j)
    per = max(1, chunk_rows // runs.n)
    for start, idx in sorted(by_start.items()):
        for c in range(0, len(idx), per):
            chunk = idx[c:c + per]
            final = _latent_sets_final(runs, start, [sets[j] for j in chunk], values)
            out[chunk] = runs.metric_from_resid(final, reps=len(chunk)).view(len(chunk), runs.n).mean(1)
    return out


def latents_logits(runs, latents: list[Node], values: AblationValues) -> torch.Tensor:
    """Last-position logits ``[n, d_vocab]`` of the clean prompts with ``latents`` ablated (the feature panel).

    Raises:
        InputError: no latent given, a latent at a hook point without an SAE, or a latent index out of range.
    """
    if not latents:
        raise InputError("an ablation set is empty")
    start = min(runs.space.site(k) for k in latents)
    return runs.last_logits(_latent_sets_final(runs, start, [latents], values))


def _start(runs, i: int) -> tuple[torch.Tensor, int]:
    """``(residual, block)`` where a run that changes nothing before site ``i`` starts: the recorded clean residual
    at site ``i``, or the embedding for a site whose dictionary reads its block's internals (neurons,
    transcoders: ``reads_block``), which a run starting after that block could not see."""
    site = runs.sites[i]
    if getattr(site.sae, "reads_block", False):
        return runs.embed_clean, 0
    return runs.clean[i].x, site.n_blocks_before


def _latent_sets_final(runs, start: int, sets: list[list[Node]], values: AblationValues) -> torch.Tensor:
    """Final residual ``[len(sets)·n, pos, d_model]``, one block of ``n`` rows per set."""
    reps, space = len(sets), runs.space
    by_site = [[(space.site(k), space.column(k)) for k in s] for s in sets]

    def edit(i: int, x: torch.Tensor) -> torch.Tensor:
        f, _ = encode(runs.sites[i], x)
        W = runs.decoder(i)
        delta = torch.zeros_like(x)
        for r, latents in enumerate(by_site):
            rows = slice(r * runs.n, (r + 1) * runs.n)
            for site, k in latents:
                if site == i:
                    change = (values.f[i][..., k] - f[rows, :, k]) * runs.mask
                    delta[rows] += change[..., None] * W[k]
        return x + delta

    x, block = _start(runs, start)
    with torch.no_grad():
        return run_from(runs.model, runs.sites, x.repeat(reps, 1, 1), block, edit, stop_block=runs.model.cfg.n_layers)


# ------------------------------------------------------------------ soft masks (mask optimisation)
def soft_masked_resid(runs, candidates: list[torch.Tensor], soft: list[torch.Tensor], values: AblationValues,
                      error: str = "keep") -> torch.Tensor:
    """Final residual ``[n, pos, d_model]`` with every site's features set to ``s·f + (1 − s)·f̄`` (``f̄`` the
    ablation value) for the candidate latents, and ``f̄`` for all others (Nainani et al., continuous
    sparsification; Savarese et al. 2020). Differentiable in ``soft``.

    Args:
        candidates: per site, latent ids ``[c]`` (long).
        soft: per site, soft mask ``[c]`` or ``[1, pos, c]`` in [0, 1].
        values: the ablation values ``f̄`` (mean ablation in :func:`~sfc_core.masks.train_mask`).
        error: ``"keep"`` the error node, or replace it by its ``"mean"`` (ablation value).
    """

    def edit(i: int, x: torch.Tensor) -> torch.Tensor:
        f, err = encode(runs.sites[i], x)
        base = values.f[i].expand_as(f)
        cand = candidates[i]
        s = soft[i]
        fc = f[..., cand]
        mixed = base.index_copy(-1, cand, s * fc + (1 - s) * values.f[i][..., cand].expand_as(fc))
        if error == "mean":
            err = values.err[i].expand_as(err)
        new = decode(runs.sites[i], x, mixed, err)
        return torch.cat([x[:, :1], new[:, 1:]], dim=1)

    # Nothing is masked before the first site, so start from its recorded clean input.
    x, block = _start(runs, 0)
    return run_from(runs.model, runs.sites, x, block, edit, stop_block=runs.model.cfg.n_layers)
