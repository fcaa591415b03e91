"""Binary mask optimisation by continuous sparsification (Nainani et al., "Scaling Sparse Feature
Circuit Finding to Gemma 9B"; Savarese et al. 2020, "Winning the Lottery with Continuous Sparsification").

One logit ``θ`` per candidate latent per site (per position when ``per_position``), soft mask
``s = σ(T·θ)`` with the temperature ``T`` raised geometrically from 1 to ``T_max`` over training.
In the masked forward (:func:`sfc_core.ablation.soft_masked_resid`) every site's features become
``s·f + (1 − s)·f̄`` with ``f̄`` the latent's mean ablation value, the error node ``ε`` is kept (or
replaced by its mean, ``error="mean"``), and the loss is

    |m_full − m_masked| + λ · Σ σ(T·θ)          (or KL(clean ‖ masked) + λ·Σσ with ``loss="kl"``)

minimised with Adam. The binarised mask ``θ > 0`` is the circuit (method ``mask``); its nodes'
effects are filled in by AtP so the graph can colour them. Candidates are the latents active
on some clean or corrupted token; the others always take their mean.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import torch

from . import defaults
from .ablation import ablation_values, soft_masked_resid
from .attribution import PairRuns
from .errors import InputError
from .nodes import Node


@dataclass(frozen=True)
class MaskConfig:
    """Hyper-parameters of one mask training run.

    Attributes:
        lam: sparsity weight λ (> 0; metric units per kept latent, nats with ``loss="kl"``).
        steps: Adam steps; lr: Adam learning rate.
        t_max: final temperature ``T_max`` (> 1) of ``s = σ(T·θ)``; theta_init: initial logit θ.
        loss: ``"abs"`` (``|m_full − m_masked|``) or ``"kl"`` (KL to the clean run, nats).
        error: ``"keep"`` the error nodes ε or replace them by their ``"mean"``.
        per_position: one θ per position ``[pos, c]`` instead of ``[c]``.
        seed: torch seed of the run.
    """

    lam: float = defaults.MASK_LAMBDA
    steps: int = 200
    lr: float = 0.1
    t_max: float = 200.0
    theta_init: float = 1.0
    loss: str = "abs"  # "abs" | "kl"
    error: str = "keep"  # "keep" | "mean"
    per_position: bool = False
    seed: int = 0

    def check(self) -> None:
        """Check the hyper-parameters.

        Raises:
            InputError: λ ≤ 0 or not finite, T_max ≤ 1 or not finite, steps < 1, lr ≤ 0, or an unknown
                ``loss`` / ``error`` option.
        """
        if not (self.lam > 0 and math.isfinite(self.lam)):
            raise InputError(f"λ must be > 0, not {self.lam}")
        if not (self.t_max > 1 and math.isfinite(self.t_max)):
            raise InputError(f"T_max must be > 1, not {self.t_max}")
        if self.steps < 1 or self.lr <= 0:
            raise InputError("steps must be ≥ 1 and the learning rate > 0")
        if self.loss not in ("abs", "kl"):
            raise InputError(f"mask loss must be abs or kl, not '{self.loss}'")
        if self.error not in ("keep", "mean"):
            raise InputError(f"error handling must be keep or mean, not '{self.error}'")


@dataclass
class MaskResult:
    """A trained mask: per site the candidate latent ids ``[c]`` and logits ``θ`` ``[c]`` (or ``[pos, c]``)."""

    candidates: list[torch.Tensor]
    theta: list[torch.Tensor]
    config: MaskConfig
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def nodes(self, runs: PairRuns) -> list[Node]:
        """The binarised circuit ``θ > 0`` as nodes (error nodes included when kept)."""
        space = runs.space
        out = []
        for i, (cand, th) in enumerate(zip(self.candidates, self.theta)):
            if th.dim() == 1:
                out += [space.node_at(i, int(k)) for k in cand[th > 0].tolist()]
            else:
                for p, k in torch.nonzero(th > 0).tolist():
                    out.append(space.node_at(i, int(cand[k]), p))
            if self.config.error == "keep":
                out.append(space.node_at(i, space.d_sae[i]))
        return out

    def n_latents(self) -> int:
        """Number of kept latent entries ``θ > 0`` (latent × position with ``per_position``)."""
        return int(sum(int((t > 0).sum()) for t in self.theta))


def candidate_latents(runs: PairRuns) -> list[torch.Tensor]:
    """Per site, the latents active on some real clean or corrupted token ``[c]`` (long)."""
    out = []
    for clean, corr in zip(runs.clean, runs.corrupted):
        m = runs.mask[..., None]
        active = ((clean.f * m) > 0).any(0).any(0) | ((corr.f * m) > 0).any(0).any(0)
        out.append(torch.nonzero(active).flatten())
    return out


def _kl_to_clean(runs: PairRuns, final: torch.Tensor) -> torch.Tensor:
    """KL(clean ‖ masked) at the last position, nats, mean over pairs."""
    logp = runs.last_logits(final).log_softmax(-1)
    return (runs.clean_logprobs.exp() * (runs.clean_logprobs - logp)).sum(-1).mean()


def train_mask(runs: PairRuns, cfg: MaskConfig = MaskConfig(), progress=None) -> MaskResult:
    """Optimise a binary mask over the latents of every site (see module doc; Nainani et al., continuous
    sparsification after Savarese et al. 2020). Costs one masked forward + backward over the pairs per step.

    Args:
        progress: optional ``callable(step, steps, loss)``.

    Returns:
        :class:`MaskResult`: per site candidates ``[c]`` and logits ``θ`` ``[c]`` (``[pos, c]`` with
        ``per_position``), the loss per step (metric units, or nats with ``loss="kl"``), seconds.

    Raises:
        InputError: bad hyper-parameters.
    """
    cfg.check()
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    means = ablation_values(runs, "mean")
    candidates = candidate_latents(runs)
    width = runs.batch.clean_tokens.shape[1]
    dtype = runs.m_clean.dtype
    theta = [torch.full(((width, len(c)) if cfg.per_position else (len(c),)), cfg.theta_init, dtype=dtype,
                        requires_grad=True) for c in candidates]
    opt = torch.optim.Adam(theta, lr=cfg.lr)
    target = runs.m_clean.detach()
    losses = []
    for step in range(cfg.steps):
        temp = cfg.t_max ** (step / max(cfg.steps - 1, 1))
        with torch.enable_grad():
            soft = [torch.sigmoid(temp * th) for th in theta]
            soft_b = [s[None, :, :] if cfg.per_position else s for s in soft]
            final = soft_masked_resid(runs, candidates, soft_b, means, cfg.error)
            if cfg.loss == "kl":
                faith = _kl_to_clean(runs, final)
            else:
                faith = (target.mean() - runs.metric_from_resid(final).mean()).abs()
            size = sum(s.sum() for s in soft)
            loss = faith + cfg.lam * size
            # Gradients for θ only: backward() would also fill .grad of the shared model's weights
            # (a third more work, and a race between sessions).
            grads = torch.autograd.grad(loss, theta)
        for th, g in zip(theta, grads):
            th.grad = g
        opt.step()
        losses.append(float(loss.detach()))
        if progress:
            progress(step + 1, cfg.steps, float(loss))
    return MaskResult(candidates, [t.detach() for t in theta], cfg, losses, time.perf_counter() - t0)


def lambda_sweep(runs: PairRuns, lams: list[float], cfg: MaskConfig = MaskConfig(), progress=None) -> list[MaskResult]:
    """One mask per λ (ascending λ → smaller masks), for a size/faithfulness frontier.

    Args:
        progress: optional ``callable(lambda_index, step, steps, loss)``.

    Returns:
        One :class:`MaskResult` per λ, in ascending λ order.

    Raises:
        InputError: an empty list, any λ ≤ 0, or other bad hyper-parameters in ``cfg``.
    """
    if not lams:
        raise InputError("give at least one λ")
    out = []
    for j, lam in enumerate(sorted(lams)):
        c = replace(cfg, lam=lam)
        out.append(train_mask(runs, c, progress=(lambda s, n, l, j=j: progress(j, s, n, l)) if progress else None))
    return out


def nesting(results: list[MaskResult], runs: PairRuns) -> list[list[float | None]]:
    """Stability of a sweep: ``[a][b]`` = fraction of mask ``a``'s latents contained in mask ``b``
    (``None`` when mask ``a`` is empty). Nested masks give 1.0 for every smaller-in-larger pair."""
    sets = [{k for k in r.nodes(runs) if not k.is_error} for r in results]
    return [[(len(a & b) / len(a)) if a else None for b in sets] for a in sets]
