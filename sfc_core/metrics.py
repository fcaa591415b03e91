"""Task metrics read at each pair's last position, one value per pair.

Every metric has the signature ``metric_fn(logits, batch, clean_logprobs=None) -> Tensor[n]``:

- ``logits``: ``[n, pos, d_vocab]`` model output (or ``[n, d_vocab]``, already taken at the last position);
- ``batch``: a :class:`~sfc_core.pairs.PairBatch`, or any object with ``last_pos [n]``, ``answer_ids [n]``
  and ``wrong_ids [n]``, or a tuple ``(last_pos, answer_ids, wrong_ids)``;
- ``clean_logprobs``: log-probabilities of the *clean* run at the last position, ``[n, d_vocab]`` (or the full
  ``[n, pos, d_vocab]``, gathered at ``last_pos``); only the ``kl`` metric needs it.

**Sign convention: every metric is "higher = behaves more like the clean run".** ``logit_diff`` and
``prob_diff`` are positive when the clean answer wins; ``kl`` returns the *negative* KL divergence
``-KL(clean ‖ patched)``, which is 0 for the clean run itself and negative otherwise. An indirect effect
``m(patched) - m(clean)`` is therefore negative when patching a node towards the corrupted run moves the
model away from the clean behaviour, for every metric alike.

All metrics are differentiable in ``logits`` (used in backward passes) and computed in float32 at least.
Callers average over pairs themselves (``metric.mean()``).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from .errors import InputError

MetricFn = Callable[..., torch.Tensor]


def _unpack(batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(last_pos, answer_ids, wrong_ids)`` from a PairBatch-like object or a 3-tuple."""
    if isinstance(batch, (tuple, list)) and len(batch) == 3:
        last_pos, answer_ids, wrong_ids = batch
    else:
        try:
            last_pos, answer_ids, wrong_ids = batch.last_pos, batch.answer_ids, batch.wrong_ids
        except AttributeError:
            raise InputError(
                "metric needs a PairBatch or (last_pos, answer_ids, wrong_ids), "
                f"got {type(batch).__name__}"
            ) from None
    return (
        torch.as_tensor(last_pos, dtype=torch.long),
        torch.as_tensor(answer_ids, dtype=torch.long),
        torch.as_tensor(wrong_ids, dtype=torch.long),
    )


def last_logits(logits: torch.Tensor, last_pos: torch.Tensor | None) -> torch.Tensor:
    """Logits at each row's last real position.

    Args:
        logits: ``[n, pos, d_vocab]`` (or ``[n, d_vocab]``, returned as is).
        last_pos: ``[n]`` long, index of each row's last real token.

    Returns:
        ``[n, d_vocab]``, float32 or wider, differentiable.

    Raises:
        InputError: shapes do not fit (wrong rank, row count differs, ``last_pos`` out of range).
    """
    if logits.ndim == 2:
        out = logits
    elif logits.ndim == 3:
        if last_pos is None:
            raise InputError("last_pos is needed to read [n, pos, d_vocab] logits")
        last_pos = torch.as_tensor(last_pos, dtype=torch.long, device=logits.device)
        if last_pos.shape != (logits.shape[0],):
            raise InputError(f"last_pos has shape {tuple(last_pos.shape)}, expected ({logits.shape[0]},)")
        if len(last_pos) and (int(last_pos.min()) < 0 or int(last_pos.max()) >= logits.shape[1]):
            raise InputError(f"last_pos out of range for logits with {logits.shape[1]} positions")
        rows = torch.arange(logits.shape[0], device=logits.device)
        out = logits[rows, last_pos]
    else:
        raise InputError(f"logits must be [n, pos, d_vocab] or [n, d_vocab], got shape {tuple(logits.shape)}")
    if out.dtype in (torch.float16, torch.bfloat16):
        out = out.float()
    return out


def _answer_pair(
    vec: torch.Tensor, answer_ids: torch.Tensor, wrong_ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    n = vec.shape[0]
    if answer_ids.shape != (n,) or wrong_ids.shape != (n,):
        raise InputError(
            f"answer_ids/wrong_ids have shapes {tuple(answer_ids.shape)}/{tuple(wrong_ids.shape)}, expected ({n},)"
        )
    answer_ids = answer_ids.to(vec.device)
    wrong_ids = wrong_ids.to(vec.device)
    rows = torch.arange(n, device=vec.device)
    return vec[rows, answer_ids], vec[rows, wrong_ids]


def logit_diff(logits: torch.Tensor, batch: Any, clean_logprobs: torch.Tensor | None = None) -> torch.Tensor:
    """``logit[answer] - logit[wrong_answer]`` at the last position, in logits (nats of odds).

    Args:
        logits: ``[n, pos, d_vocab]`` or ``[n, d_vocab]``.
        batch: PairBatch or ``(last_pos, answer_ids, wrong_ids)``.
        clean_logprobs: ignored (uniform signature).

    Returns:
        ``[n]`` float tensor, differentiable in ``logits``. Higher = more clean-like.

    Raises:
        InputError: shapes do not fit.
    """
    last_pos, answer_ids, wrong_ids = _unpack(batch)
    vec = last_logits(logits, last_pos)
    a, w = _answer_pair(vec, answer_ids, wrong_ids)
    return a - w


def prob_diff(logits: torch.Tensor, batch: Any, clean_logprobs: torch.Tensor | None = None) -> torch.Tensor:
    """``p[answer] - p[wrong_answer]`` at the last position (softmax over the vocabulary), in probability units.

    Args:
        logits: ``[n, pos, d_vocab]`` or ``[n, d_vocab]``.
        batch: PairBatch or ``(last_pos, answer_ids, wrong_ids)``.
        clean_logprobs: ignored (uniform signature).

    Returns:
        ``[n]`` float tensor in ``[-1, 1]``, differentiable. Higher = more clean-like.

    Raises:
        InputError: shapes do not fit.
    """
    last_pos, answer_ids, wrong_ids = _unpack(batch)
    probs = torch.softmax(last_logits(logits, last_pos), dim=-1)
    a, w = _answer_pair(probs, answer_ids, wrong_ids)
    return a - w


def kl_to_clean(logits: torch.Tensor, batch: Any, clean_logprobs: torch.Tensor | None = None) -> torch.Tensor:
    """Negative KL divergence ``-KL(clean ‖ patched)`` at the last position, in nats.

    ``KL(clean ‖ patched) = Σ_v p_clean(v) (log p_clean(v) - log p_patched(v))`` with ``p_patched`` the
    softmax of ``logits``. The value is **negated** so that, like the other metrics, higher means
    "behaves more like clean": 0 for the clean run itself, below 0 otherwise.

    Args:
        logits: ``[n, pos, d_vocab]`` or ``[n, d_vocab]`` (the patched / evaluated run).
        batch: PairBatch or ``(last_pos, answer_ids, wrong_ids)`` (only ``last_pos`` is used).
        clean_logprobs: ``[n, d_vocab]`` log-softmax of the clean run at the last position, or the full
            ``[n, pos, d_vocab]`` log-probs (gathered at ``last_pos``). Treated as a constant target.

    Returns:
        ``[n]`` float tensor ``<= 0`` (up to rounding), differentiable in ``logits``.

    Raises:
        InputError: ``clean_logprobs`` missing or of the wrong shape.
    """
    if clean_logprobs is None:
        raise InputError("the 'kl' metric needs the clean run's log-probabilities (clean_logprobs)")
    last_pos, _, _ = _unpack(batch)
    patched = torch.log_softmax(last_logits(logits, last_pos), dim=-1)
    clean = last_logits(clean_logprobs.to(patched.device), last_pos).detach()
    if clean.shape != patched.shape:
        raise InputError(f"clean_logprobs has shape {tuple(clean.shape)}, expected {tuple(patched.shape)}")
    clean = torch.log_softmax(clean.to(patched.dtype), dim=-1)  # no-op for log-probs; normalises raw logits
    kl = (clean.exp() * (clean - patched)).sum(dim=-1)
    return -kl


def clean_logprobs_at_last(logits: torch.Tensor, batch: Any) -> torch.Tensor:
    """Log-softmax (nats) of the clean run's logits ``[n, pos, d_vocab]`` or ``[n, d_vocab]`` at the last
    position, ``[n, d_vocab]``, detached (for ``kl``).

    Raises:
        InputError: ``batch`` is not PairBatch-like, or shapes do not fit.
    """
    last_pos, _, _ = _unpack(batch)
    return torch.log_softmax(last_logits(logits, last_pos), dim=-1).detach()


#: Metric name -> ``metric_fn(logits, batch, clean_logprobs=None) -> Tensor[n]``.
METRICS: dict[str, MetricFn] = {
    "logit_diff": logit_diff,
    "prob_diff": prob_diff,
    "kl": kl_to_clean,
}

#: Units of each metric, for axis labels and legends.
METRIC_UNITS: dict[str, str] = {
    "logit_diff": "logit difference (answer − wrong)",
    "prob_diff": "probability difference (answer − wrong)",
    "kl": "−KL(clean ‖ run), nats",
}
#: Short (legend) and long (sentence) names of each metric.
METRIC_LABELS: dict[str, tuple[str, str]] = {
    "logit_diff": ("logit diff", "logit difference"),
    "prob_diff": ("prob diff", "probability difference"),
    "kl": ("−KL(clean ‖ run)", "−KL to clean"),
}


def metric_label(name: str | None, long: bool = False) -> str:
    """Display name of a metric (``"logit diff"``, or ``"logit difference"`` with ``long``); unknown names
    come back unchanged and ``None`` means the default ``logit_diff``."""
    labels = METRIC_LABELS.get(name or "logit_diff")
    return str(name) if labels is None else labels[int(long)]


#: Metrics that need ``clean_logprobs``.
NEEDS_CLEAN = frozenset({"kl"})
#: Metrics whose gradient is identically zero at the clean run (−KL(clean ‖ run) has its maximum there), so a
#: method ranking by that gradient (AtP, FAP) would rank noise.
ZERO_GRADIENT_AT_CLEAN = frozenset({"kl"})


def get_metric(name: str) -> MetricFn:
    """The metric function registered as ``name``.

    Raises:
        InputError: unknown name (the message lists the known ones).
    """
    try:
        return METRICS[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown metric {name!r}; choose one of {', '.join(METRICS)}") from None
