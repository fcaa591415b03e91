"""What one feature is and does: top activating examples, logit effects, ablation and steering.

* Examples, density, histogram and logit effects come from the bundle's feature index
  (:mod:`sfc_core.feature_index`) or, for other SAEs, are computed over a corpus once and cached.
* Ablation: the feature set to its ablation value (:mod:`sfc_core.ablation`: zero, mean per
  position over the corrupted prompts, mean over all their tokens, or each pair's own corrupted
  value) at every real position of the clean prompts, everything downstream recomputed; the
  metric before → after per pair (metric units) and the next-token log-prob changes at the last
  position (nats).
* Steering (Turner et al. 2023; Templeton et al. 2024): add ``α × d_k`` at the feature's hook
  point at every position, ``d_k`` its decoder direction (the change of the SAE's output per unit
  of the feature, so ``α`` is in units of the feature's activation).
"""

from __future__ import annotations

import math
import threading

import torch

from .ablation import ablation_values, latents_logits
from .attribution import PairRuns, effective_decoder
from .errors import InputError
from .feature_index import build_sae_index, load_feature_index, logit_unembedding
from .hooks import blocks_before
from .splice import Site, next_token_logits, residual_at

#: Largest |α| accepted for steering (in units of feature activation).
MAX_STEERING_ALPHA = 1000.0


def check_feature(sae, feature: int) -> int:
    """``feature`` as an ``int``, once checked against the SAE's width.

    Raises:
        InputError: not an integer, or outside ``0 ≤ feature < d_sae``.
    """
    d_sae = int(sae.cfg.d_sae)
    try:
        feature = int(feature)
    except (TypeError, ValueError):
        raise InputError(f"feature id must be an integer, not {feature!r}") from None
    if not 0 <= feature < d_sae:
        raise InputError(f"feature {feature} is out of range: this SAE has d_sae={d_sae}")
    return feature


# ------------------------------------------------------------------ examples
_COMPUTED: dict[tuple, object] = {}
_COMPUTED_LOCK = threading.Lock()


def feature_index_for(model, loaded, corpus_tokens: torch.Tensor | None = None, progress=None):
    """The feature index of an SAE: the shipped one for bundled SAEs, else computed over
    ``corpus_tokens`` ``[n_seq, seq_len]`` (tokenized for ``model``) and cached per process.

    Returns:
        A :class:`~sfc_core.feature_index.FeatureIndex` (tensors ``[d_sae, k]`` etc., see that module).

    Raises:
        AssetError: a bundled index is missing or unreadable.
        InputError: no corpus for a non-bundled SAE, or its hook point is not a residual-stream point.
    """
    from .feature_index import FeatureIndex

    if getattr(loaded, "source", None) == "bundled":
        return load_feature_index(loaded.hook_name)
    if corpus_tokens is None:
        raise InputError("top activating examples of this SAE need a corpus to run over")
    key = (id(loaded.sae), loaded.hook_name, tuple(corpus_tokens.shape))
    with _COMPUTED_LOCK:
        if key in _COMPUTED:
            return _COMPUTED[key]
    tensors = build_sae_index(model, loaded.sae, loaded.hook_name, corpus_tokens, progress=progress)
    index = FeatureIndex(loaded.hook_name, tensors, corpus_tokens, (10, 4))
    with _COMPUTED_LOCK:
        _COMPUTED[key] = index
    return index


def bundled_lookup(saes: dict, read, missing=None):
    """``callable(hook_name, feature)``: ``read(index, feature)`` on the shipped feature index of a bundled SAE
    in ``saes`` (hook name → loaded SAE), ``missing`` for other SAEs (nothing shipped for them).

    Raises (when called):
        AssetError: the shipped index file is missing or unreadable.
    """

    def lookup(hook_name: str, feature: int):
        loaded = saes.get(hook_name)
        if loaded is None or getattr(loaded, "source", None) != "bundled":
            return missing
        return read(load_feature_index(hook_name), int(feature))

    return lookup


def auto_label_lookup(saes: dict):
    """``callable(hook_name, feature) -> str``: the automatic short label of a bundled latent
    (:meth:`~sfc_core.feature_index.FeatureIndex.label`), ``""`` for other SAEs (:func:`bundled_lookup`)."""
    return bundled_lookup(saes, lambda index, feature: index.label(feature), "")


def example_tokens(tokenizer, example) -> list[str]:
    """The example's tokens as display strings (one per token)."""
    return [tokenizer.decode([t]) for t in example.tokens]


def logit_effect_tokens(tokenizer, sae, model, feature: int, n: int = 10) -> dict[str, list]:
    """Top ``n`` promoted / suppressed tokens of a feature's direct logit effect through the final norm,
    ``d_k @ W_eff`` ``[d_vocab]``: ``{"top": [(token, logit)], "bottom": [...]}`` (highest / lowest first).

    ``d_k`` ``[d_model]`` is the feature's effective decoder row
    (:func:`~sfc_core.attribution.effective_decoder`), ``W_eff`` ``[d_model, d_vocab]`` the unembedding with the
    final norm's weight folded in (:func:`~sfc_core.splice.effective_unembed`, as TransformerLens' ``fold_ln``;
    the logit lens / direct logit attribution), the same numbers as the shipped feature index
    (:func:`~sfc_core.feature_index.logit_effects`). Units: logits per unit of feature activation with the
    norm's scale frozen at a final-residual RMS of 1 (divide by a position's RMS, ≈ 36 for the bundled model,
    for the change there; the ranking does not depend on it). Biases do not enter.

    Args:
        model: the ``HookedTransformer``, or its effective unembedding ``[d_model, d_vocab]`` already computed
            (used as given, so a raw ``model.W_U`` gives the old norm-free effects).

    Raises:
        InputError: ``feature`` is not an integer in ``0..d_sae−1``, or the model's final norm is of an unknown kind.
    """
    feature = check_feature(sae, feature)
    effects = effective_decoder(sae)[feature].double() @ logit_unembedding(model).double()
    top, bottom = effects.topk(n), effects.topk(n, largest=False)
    return {
        "top": [(tokenizer.decode([i]), float(v)) for i, v in zip(top.indices.tolist(), top.values.tolist())],
        "bottom": [(tokenizer.decode([i]), float(v)) for i, v in zip(bottom.indices.tolist(), bottom.values.tolist())],
    }


# ------------------------------------------------------------------ one prompt
def _prompt_tokens(model, prompt: str, empty: str = "type a prompt") -> torch.Tensor:
    """``[1, pos]`` tokens of ``prompt`` (BOS first). Raises InputError (``empty``) or over the length limit."""
    from . import defaults

    if not prompt or not prompt.strip():
        raise InputError(empty)
    tokens = model.to_tokens(prompt, prepend_bos=True)
    if tokens.shape[1] > defaults.MAX_PROMPT_TOKENS:
        raise InputError(f"prompt is {tokens.shape[1]} tokens; the limit is {defaults.MAX_PROMPT_TOKENS}")
    return tokens


def next_tokens(model, prompt: str, k: int = 8) -> list[tuple[str, float]]:
    """The model's ``k`` most likely next tokens after ``prompt`` with their probabilities (unitless, in [0, 1]).

    Raises:
        InputError: an empty prompt or one over the length limit.
    """
    probs = next_token_logits(model, _prompt_tokens(model, prompt))[0].float().softmax(-1)
    top = probs.topk(k)
    return [(model.tokenizer.decode([i]), float(p)) for i, p in zip(top.indices.tolist(), top.values.tolist())]


def encode_prompt(model, loaded, prompt: str) -> dict:
    """One SAE on one prompt: ``{"features": [pos − 1, d_sae]`` (BOS dropped), ``"fve"``: the fraction of the
    residual's variance the SAE's reconstruction explains over those positions (unitless)}. A transcoder
    (:class:`~sfc_core.transcoders.TranscoderDictionary`) reconstructs its MLP's output instead of the residual.

    Raises:
        InputError: an empty or too long prompt, or an SAE at a non-residual hook point.
    """
    tokens = _prompt_tokens(model, prompt)
    if hasattr(loaded.sae, "prompt_features"):
        f, x, x_hat = loaded.sae.prompt_features(model, tokens)
    else:
        x = residual_at(model, tokens, loaded.hook_name)
        with torch.no_grad():
            f = loaded.sae.encode(x.to(loaded.sae.W_enc.dtype))
            x_hat = loaded.sae.decode(f)
    xs, xh = x[0, 1:].float(), x_hat[0, 1:].float()
    fve = 1 - float((xs - xh).pow(2).sum() / (xs - xs.mean(0)).pow(2).sum())
    return {"features": f[0, 1:].float(), "fve": fve}


# ------------------------------------------------------------------ ablation
def ablate_feature(runs: PairRuns, site: int, feature: int, ablation: str = "zero", top_n: int = 10) -> dict:
    """Ablate one feature on the clean prompts of ``runs`` (its value at every real position replaced by
    its ablation value, :mod:`sfc_core.ablation`: zero by default; mean as in Marks et al. 2024, §4; ``"patch"``
    the interchange intervention of Geiger et al. 2021).

    Returns:
        ``{"before": [n], "after": [n], "mean_before", "mean_after", "metric", "ablation",
        "promoted": [(token, Δlogprob)], "suppressed": [...]}`` — metric per pair before → after (metric
        units), and the next-token log-prob changes (nats, mean over pairs) with the largest rise / fall.
    Raises:
        InputError: bad site, feature or ablation kind.
    """
    if not 0 <= site < len(runs.sites):
        raise InputError(f"no SAE site {site}")
    feature = check_feature(runs.sites[site].sae, feature)
    values = ablation_values(runs, ablation)
    logits = latents_logits(runs, [runs.space.node_at(site, feature)], values)
    with torch.no_grad():
        after = runs.metric_from_logits(logits)
        change = (logits.log_softmax(-1) - runs.clean_logprobs).mean(0)
    tok = runs.model.tokenizer
    up, down = change.topk(top_n), change.topk(top_n, largest=False)
    return {
        "metric": runs.metric,
        "ablation": values.kind,
        "before": runs.m_clean.tolist(),
        "after": after.tolist(),
        "mean_before": float(runs.m_clean.mean()),
        "mean_after": float(after.mean()),
        "promoted": [(tok.decode([i]), float(v)) for i, v in zip(up.indices.tolist(), up.values.tolist())],
        "suppressed": [(tok.decode([i]), float(v)) for i, v in zip(down.indices.tolist(), down.values.tolist())],
    }


# ------------------------------------------------------------------ steering
def check_alpha(alpha: float) -> float:
    """``alpha`` as a ``float`` (units of the feature's activation), once checked.

    Raises:
        InputError: not a number, NaN, inf or ``|α| > MAX_STEERING_ALPHA``.
    """
    try:
        alpha = float(alpha)
    except (TypeError, ValueError):
        raise InputError(f"steering strength must be a number, not {alpha!r}") from None
    if not math.isfinite(alpha):
        raise InputError("steering strength α must be a finite number")
    if abs(alpha) > MAX_STEERING_ALPHA:
        raise InputError(f"steering strength |α| must be ≤ {MAX_STEERING_ALPHA:g}, not {alpha:g}")
    return alpha


def _steered_logits(model, site: Site, direction: torch.Tensor | None, tokens: torch.Tensor) -> torch.Tensor:
    """Last-position logits ``[d_vocab]`` with ``direction`` added at the site (all non-BOS positions)."""

    def edit(i: int, x: torch.Tensor) -> torch.Tensor:
        if direction is None:
            return x
        add = direction.to(x.dtype).expand_as(x).clone()
        add[:, 0] = 0
        return x + add

    return next_token_logits(model, tokens, [site], edit)[0]


def steer(model, loaded, feature: int, alpha: float, prompt: str, max_new_tokens: int = 20, top_n: int = 10) -> dict:
    """Next-token top-``top_n`` before/after adding ``α × d_k`` at the feature's hook point (every non-BOS
    position), and a greedy continuation of ``max_new_tokens`` tokens with and without steering (activation
    steering: Turner et al. 2023; feature steering: Templeton et al. 2024).

    Args:
        alpha: steering strength in units of the feature's activation (``d_k`` ``[d_model]`` is the change of
            the SAE's output per unit of the feature).

    Returns:
        ``{"alpha", "feature", "hook_name", "before": [(token, prob)], "after": [...], "continuation_before",
        "continuation_after"}`` (probabilities unitless).

    Raises:
        InputError: empty prompt, bad feature, α NaN/inf/huge, a prompt over the length limit, or an SAE at a
            hook point that is not a residual-stream point.
    """
    alpha = check_alpha(alpha)
    tokens = _prompt_tokens(model, prompt, "type a prompt to steer")
    sae = loaded.sae
    feature = check_feature(sae, feature)
    site = Site(loaded.hook_name, blocks_before(loaded.hook_name, model.cfg.n_layers), sae)
    direction = alpha * effective_decoder(sae)[feature]
    out: dict = {"alpha": alpha, "feature": feature, "hook_name": loaded.hook_name}
    for label, d in (("before", None), ("after", direction)):
        probs = _steered_logits(model, site, d, tokens).float().softmax(-1)
        top = probs.topk(top_n)
        out[label] = [(model.tokenizer.decode([i]), float(p)) for i, p in zip(top.indices.tolist(), top.values.tolist())]
        seq = tokens
        for _ in range(max_new_tokens):
            nxt = int(_steered_logits(model, site, d, seq).argmax())
            seq = torch.cat([seq, torch.tensor([[nxt]])], dim=1)
            if nxt == model.tokenizer.eos_token_id:
                break
        out[f"continuation_{label}"] = model.tokenizer.decode(seq[0, tokens.shape[1]:])
    return out
