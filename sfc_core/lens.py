"""Logit lens: the residual stream at every layer read through the final norm and the unembedding.

nostalgebraist (2020), "interpreting GPT: the logit lens": decode each layer's residual stream
``x_L = blocks.L.hook_resid_pre`` (and the final ``blocks.{n-1}.hook_resid_post``) as if it were the last
layer's, ``logits_L = unembed(ln_final(x_L))``. One forward pass with cache; TransformerLens'
``ActivationCache.accumulated_resid(apply_ln=True)`` applies ``ln_final`` with statistics *recomputed* from each
layer's own residual (its ``recompute_ln`` at the final layer), so row ``n_layers`` (``final_post``) equals the
model's own logits. No tuned lens (it would need trained translators, not shipped offline).

Shapes: ``n_layers + 1`` rows (``resid_pre`` of layers 0 … n−1, then the final residual), ``pos`` columns.
Units: logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import InputError
from .tracing import axis_labels, prompt_tokens


@dataclass
class LensResult:
    """Logit lens of a batch of pairs' prompts (one run: clean or corrupted).

    Attributes:
        labels: row names, ``"L0 pre"`` … ``"L{n-1} pre"``, ``"final"`` (``n_layers + 1``).
        logit_diff: ``[n_pairs, n_layers + 1, pos]`` lens logit difference ``answer − wrong`` (logits) at every
            position (right padding after a row's ``last_pos`` holds NaN).
        top_tokens: ``[n_layers + 1][pos]`` lists of ``(token, logit)`` for the shown pair (the top ``k``).
        tokens: the shown pair's prompt, token by token (BOS at 0).
        pair: index of the shown pair. run: ``"clean"`` or ``"corrupted"``. seconds: wall time (s).
    """

    labels: list[str]
    logit_diff: torch.Tensor
    top_tokens: list[list[list[tuple[str, float]]]]
    tokens: list[str]
    pair: int = 0
    run: str = "clean"
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def mean_logit_diff(self) -> np.ndarray:
        """``[n_layers + 1, pos]`` mean over pairs (NaN-aware) of the lens logit difference (logits)."""
        a = self.logit_diff.double().numpy()
        with np.errstate(invalid="ignore"):
            return np.nanmean(a, axis=0) if a.shape[0] else a.sum(0)

    def to_dict(self) -> dict:
        """JSON-able: labels, tokens, mean and per-pair logit differences, top tokens of the shown pair."""
        def r(a):
            return [[None if not np.isfinite(v) else round(float(v), 5) for v in row] for row in a]

        return {"labels": self.labels, "tokens": self.tokens, "pair": self.pair, "run": self.run,
                "mean_logit_diff": r(self.mean_logit_diff()),
                "per_pair_logit_diff": [r(p) for p in self.logit_diff.double().numpy()],
                "top_tokens": [[[[t, round(v, 4)] for t, v in cell] for cell in row] for row in self.top_tokens],
                "seconds": round(self.seconds, 3), "warnings": list(self.warnings)}


def lens_stack(model, tokens: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
    """Accumulated residual streams with the final norm applied.

    Args:
        tokens: ``[batch, pos]`` long.

    Returns:
        ``([n_layers + 1, batch, pos, d_model], labels)`` from ``cache.accumulated_resid(apply_ln=True)``.
    """
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: "hook_resid" in n or "ln_final" in n)
        stack, labels = cache.accumulated_resid(layer=None, apply_ln=True, return_labels=True)
    return stack, labels


def logit_lens(model, batch, run: str = "clean", pair: int = 0, top_k: int = 5) -> LensResult:
    """Logit lens of every pair's prompt at every layer and position (module doc).

    Args:
        model: a ``HookedTransformer``.
        batch: a :class:`~sfc_core.pairs.PairBatch` (tokens ``[n, pos]``, ``last_pos``, answer ids).
        run: ``"clean"`` or ``"corrupted"`` prompts.
        pair: the pair whose top tokens are kept (0-based).
        top_k: tokens kept per cell (1 … 50).

    Returns:
        :class:`LensResult` (logits).

    Raises:
        InputError: unknown ``run``, ``pair`` out of range, ``top_k`` outside 1 … 50, no pairs.
    """
    import time

    t0 = time.perf_counter()
    if run not in ("clean", "corrupted"):
        raise InputError(f"the logit lens reads the 'clean' or the 'corrupted' prompts, not {run!r}")
    n = int(batch.last_pos.shape[0])
    if n == 0:
        raise InputError("no prompt pairs for the logit lens")
    if not 0 <= int(pair) < n:
        raise InputError(f"pair {pair} does not exist: there are {n} pairs (0 to {n - 1})")
    if not 1 <= int(top_k) <= 50:
        raise InputError(f"top-k must be between 1 and 50, not {top_k}")
    tokens = batch.clean_tokens if run == "clean" else batch.corrupted_tokens
    stack, raw = lens_stack(model, tokens)  # [L+1, n, pos, d]
    W_U, b_U = model.W_U, model.b_U
    direction = W_U[:, batch.answer_ids].T - W_U[:, batch.wrong_ids].T  # [n, d_model]
    bias = b_U[batch.answer_ids] - b_U[batch.wrong_ids]  # [n]
    with torch.no_grad():
        ld = torch.einsum("lnpd,nd->nlp", stack, direction.to(stack.dtype)) + bias[:, None, None]
        pos = torch.arange(tokens.shape[1])
        ld = ld.masked_fill(pos[None, None] > batch.last_pos[:, None, None], float("nan"))
        last = int(batch.last_pos[pair])
        logits = model.unembed(stack[:, pair, : last + 1])  # [L+1, pos', d_vocab]
        vals, ids = logits.topk(int(top_k), dim=-1)
    tok = getattr(model, "tokenizer", None)
    decode = (lambda i: tok.decode([int(i)])) if tok is not None else (lambda i: f"#{int(i)}")
    top = [[[(decode(i), float(v)) for i, v in zip(ids[l, p], vals[l, p])] for p in range(last + 1)]
           for l in range(ids.shape[0])]
    labels = [f"L{lab.split('_')[0]} pre" if lab.endswith("_pre") else "final" for lab in raw]
    return LensResult(labels=labels, logit_diff=ld.detach().cpu(), top_tokens=top,
                      tokens=prompt_tokens(model, tokens[pair], last), pair=int(pair), run=run,
                      seconds=time.perf_counter() - t0, warnings=list(getattr(batch, "warnings", None) or []))


def heatmap(result: LensResult, per_pair: bool = False):
    """Plotly heatmap of the lens logit difference (answer − wrong, logits): rows = layers (``n_layers + 1``),
    columns = the shown pair's tokens. ``per_pair`` shows that pair's values; else the mean over pairs (its
    x axis is exact only when the pairs share a template; the shown pair's tokens label it). Hover: the cell's
    value and the shown pair's top-k lens tokens."""
    import plotly.graph_objects as go

    z = result.logit_diff[result.pair].double().numpy() if per_pair else result.mean_logit_diff()
    width = len(result.tokens)
    z = z[:, :width]
    x = axis_labels(result.tokens)
    text = [[f"{result.labels[l]} @ {x[p]}<br>logit diff {z[l, p]:.3f}<br>top: "
             + ", ".join(f"{t!r} {v:.1f}" for t, v in result.top_tokens[l][p]) for p in range(width)]
            for l in range(z.shape[0])]
    top = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
    fig = go.Figure(go.Heatmap(z=z, x=x, y=result.labels, text=text, hovertemplate="%{text}<extra></extra>",
                               colorscale="RdBu", zmid=0, zmin=-top, zmax=top,
                               colorbar={"title": "logit diff"}))
    who = f"pair {result.pair}" if per_pair else f"mean of {result.logit_diff.shape[0]} pairs"
    fig.update_layout(title=f"Logit lens ({result.run} prompts): answer − wrong answer, {who}",
                      xaxis_title="position: token", yaxis_title="residual stream read at",
                      yaxis={"autorange": "reversed"}, height=max(360, 18 * len(result.labels)),
                      margin={"l": 70, "r": 20, "t": 50, "b": 80})
    return fig
