"""The SAE-spliced forward pass: residual activations written as SAE features plus an error node.

At every SAE hook point ("site") the residual activation ``x`` ``[batch, pos, d_model]`` is
written as ``x = decode(f) + ε`` with ``f = encode(x)`` ``[batch, pos, d_sae]`` and the error
node ``ε = x − decode(f)`` (Marks et al. 2024, §2), so the spliced model computes exactly
what the original does. Position 0 (BOS) passes through: its features are zero and it is
never a node that differs between clean and corrupted prompts.

The forward runs the TransformerLens blocks directly (``embed`` → ``blocks`` → ``ln_final`` →
``unembed``) instead of registering hooks, so calls from several threads on one shared model never
see each other's interventions. Only residual-stream hook points (``hook_resid_pre``/``hook_resid_post``,
``hook_embed`` for the embedding) are sites.

**Model adapter.** This is the one module that touches ``HookedTransformer`` internals (``embed``,
``pos_embed``, ``blocks``, ``ln_final``, ``unembed``, the key/value cache entries); everything else runs
the model through :func:`run_from`, :func:`logits_of`, :func:`next_token_logits`,
:func:`residual_at` and :func:`effective_unembed`. A port to TransformerLens' ``TransformerBridge`` replaces these functions only
(README, "Model adapter").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .errors import IncompatibleSAEError, InputError, NumericalError
from .hooks import blocks_before, is_neuron_hook, is_transcoder_hook


@dataclass(frozen=True)
class Site:
    """One SAE hook point in the residual stream.

    Attributes:
        hook_name: e.g. ``blocks.7.hook_resid_post``.
        n_blocks_before: how many transformer blocks run before this point (resid_post L → L+1).
        sae: SAE Lens SAE reading ``[..., d_model]`` (``None`` for the embedding pseudo-site).
    """

    hook_name: str
    n_blocks_before: int
    sae: object | None

    @property
    def layer(self) -> int:
        """Index of the last block before this point (−1 for the embedding, L for ``resid_post`` L)."""
        return self.n_blocks_before - 1

    @property
    def d_sae(self) -> int:
        """Dictionary width of the site's SAE (0 for the embedding pseudo-site)."""
        return int(self.sae.cfg.d_sae) if self.sae is not None else 0


def make_sites(model, saes: dict) -> list[Site]:
    """Sites sorted by depth from ``{hook_name: LoadedSAE | SAE}``.

    A ``blocks.L.mlp.hook_post`` entry must be a :class:`~sfc_core.neurons.NeuronDictionary` (the MLP's
    neurons as a site: decoder ``W_out``, no error node; edited after block L), and a ``blocks.L.hook_mlp_out``
    entry a :class:`~sfc_core.transcoders.TranscoderDictionary` (the MLP's transcoder, edited after block L).

    Raises:
        InputError: no SAE given, a hook point that is not ``resid_pre``/``resid_post`` of this model (or an MLP
            ``hook_post`` with its neuron dictionary, or ``hook_mlp_out`` with its transcoder), or two SAEs at the
            same residual point.
        IncompatibleSAEError: an SAE's ``d_in`` differs from the model's ``d_model``.
    """
    if not saes:
        raise InputError("select at least one SAE hook point")
    sites = []
    for hook, sae in saes.items():
        sae = getattr(sae, "sae", sae)
        if is_neuron_hook(hook) != bool(getattr(sae, "is_neurons", False)):
            raise InputError(f"'{hook}': MLP neuron sites (blocks.L.mlp.hook_post) take the model's own neurons "
                             "(sfc_core.neurons.neuron_sites), SAEs sit in the residual stream")
        if is_transcoder_hook(hook) != bool(getattr(sae, "is_transcoder", False)):
            raise InputError(f"'{hook}': MLP output sites (blocks.L.hook_mlp_out) take transcoders "
                             "(sfc_core.transcoders.transcoder_sites), SAEs sit in the residual stream")
        n = blocks_before(hook, model.cfg.n_layers)
        if int(sae.cfg.d_in) != model.cfg.d_model:
            raise IncompatibleSAEError(f"SAE at '{hook}' has d_in={sae.cfg.d_in}, the model's d_model is {model.cfg.d_model}")
        sites.append(Site(hook, n, sae))
    sites.sort(key=lambda s: s.n_blocks_before)
    if len({s.n_blocks_before for s in sites}) != len(sites):
        raise InputError("two SAEs sit at the same residual point (a transcoder at layer L edits the residual "
                         "after block L, as an SAE at blocks.L.hook_resid_post does); pick one")
    return sites


def rest(site: Site, x: torch.Tensor) -> torch.Tensor | None:
    """The part of ``x`` ``[b, p, d_model]`` that is neither the site's features' write nor its error node, or
    ``None`` (SAE sites: ``x = decode(f) + ε``). A transcoder site (:class:`~sfc_core.transcoders.
    TranscoderDictionary`) sits after a block whose MLP it replaces: ``x = decode(f) + ε + rest``, with ``rest`` the
    residual before the MLP plus the transcoder's bias and skip term, recomputed in every pass, never a node."""
    fn = getattr(site.sae, "rest", None)
    return None if fn is None else fn(x)


def encode(site: Site, x: torch.Tensor, bos_first: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(f [b, p, d_sae], ε [b, p, d_model])`` of a residual ``x`` ``[b, p, d_model]``, with
    ``decode(f) + ε (+ rest) == x`` and BOS features zero (``bos_first=False``: ``x`` starts after BOS, as past a
    :class:`PrefixCache`). The error node ε is Marks et al. 2024, §2's (a transcoder's: its MLP output's
    reconstruction error, :func:`rest`)."""
    f = site.sae.encode(x)
    if bos_first:
        f = torch.cat([torch.zeros_like(f[:, :1]), f[:, 1:]], dim=1)
    err = x - site.sae.decode(f)
    extra = rest(site, x)
    return f, (err if extra is None else err - extra)


def decode(site: Site, x: torch.Tensor, f: torch.Tensor, err: torch.Tensor) -> torch.Tensor:
    """``decode(f) + ε (+ rest)`` ``[b, p, d_model]`` from features ``f`` ``[b, p, d_sae]`` and ε ``[b, p, d_model]``,
    in the pass whose residual at the site is ``x`` ``[b, p, d_model]`` (its :func:`rest`)."""
    out = site.sae.decode(f) + err
    extra = rest(site, x)
    return out if extra is None else out + extra


#: ``edit(site_index, x) -> x`` applied at each site; ``x`` is ``[batch, pos, d_model]``.
SiteEdit = Callable[[int, torch.Tensor], torch.Tensor]


def embed(model, tokens: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """``(resid [b, p, d_model], block_kwargs)`` at the start of the model, for ``tokens`` ``[b, p]``.

    Built from the embedding modules directly, not ``input_to_embed``: that one
    derives an attention mask from the tokenizer's padding side (shared, mutable
    state); our batches are right-padded, which causal attention never sees.

    Raises:
        InputError: a shortformer positional embedding (unsupported here).
    """
    kind = model.cfg.positional_embedding_type
    if kind == "shortformer":
        raise InputError("models with shortformer positional embeddings are not supported")
    resid = model.hook_embed(model.embed(tokens))
    if kind == "standard":
        resid = resid + model.hook_pos_embed(model.pos_embed(tokens))
    return resid, {}


def run_from(model, sites: list[Site], resid: torch.Tensor, start_block: int, edit: SiteEdit | None,
             block_kwargs: dict | None = None, stop_block: int | None = None,
             past: list | None = None) -> torch.Tensor:
    """Run blocks ``start_block..`` on ``resid``, calling ``edit`` at each site reached.

    A site whose ``n_blocks_before == start_block`` is edited before the first block.

    Args:
        resid: residual stream ``[b, p, d_model]`` before block ``start_block``.
        edit: ``edit(site_index, x) -> x`` at each site reached (``None``: no edits).
        past: per-block key/value cache entries of earlier positions (:meth:`PrefixCache.entries`);
            ``resid`` then holds only the positions after them.

    Returns:
        Logits ``[b, p, d_vocab]``, or the residual ``[b, p, d_model]`` after ``stop_block`` blocks if given.
    """
    kwargs = block_kwargs or {}
    by_block = {s.n_blocks_before: i for i, s in enumerate(sites)}
    end = model.cfg.n_layers if stop_block is None else stop_block
    for b in range(start_block, end + 1):
        if b in by_block and edit is not None:
            resid = edit(by_block[b], resid)
        if b == end:
            break
        if past is not None:
            resid = model.blocks[b](resid, past_kv_cache_entry=past[b], **kwargs)
        else:
            resid = model.blocks[b](resid, **kwargs)
    if stop_block is not None:
        return resid
    return logits_of(model, resid)


def logits_of(model, resid: torch.Tensor) -> torch.Tensor:
    """Logits ``[..., pos, d_vocab]`` from a final residual stream ``[..., pos, d_model]`` (final norm, unembedding;
    a model without a final norm, ``normalization_type=None``, unembeds the residual itself)."""
    norm = getattr(model, "ln_final", None)
    return model.unembed(norm(resid) if norm is not None else resid)


def effective_unembed(model, resid_rms: float = 1.0) -> torch.Tensor:
    """The unembedding through the final norm ``[d_model, d_vocab]`` (no grad, the model's dtype): a residual
    direction ``d`` ``[d_model]`` changes the logits by ``d @ effective_unembed(model)`` (logits per residual
    unit) when the final norm's scale is held at ``resid_rms``.

    The final norm's elementwise weight ``w`` is folded into ``W_U`` as TransformerLens' ``fold_ln`` does
    (``weight_processing._fold_unembed_layer_norm``): ``diag(w) @ W_U`` for ``RMSNorm``; for ``LayerNorm``
    also its mean subtraction, ``C @ diag(w) @ W_U`` with ``C = I − 11ᵀ/d_model`` (each vocabulary column
    centred over ``d_model``, fold_ln's ``center_weights``). An already folded model (``RMSNormPre`` /
    ``LayerNormPre``, ``normalization_type`` "RMSPre"/"LNPre") has ``w`` in ``W_U`` already (only the
    centring applies for ``LayerNormPre``); a model without a final norm has ``W_U`` itself (exact, and
    ``resid_rms`` is not applied). The norm's bias ``b`` and the unembedding bias ``b_U`` add the same
    logits whatever the direction and do not enter.

    Approximation (the logit lens / direct logit attribution, Elhage et al. 2021; nostalgebraist 2020):
    the norm's scale ``σ`` (the residual's RMS, of the centred residual for LayerNorm) is frozen, as
    fold_ln's folded weights assume (they act on the normalized residual), so the effect is
    ``(d ⊙ w) @ W_U / σ``. With the default ``resid_rms=1`` the values are per unit of the *normalized*
    residual (fold_ln's convention, no data needed); at a position whose final residual has RMS ``σ``
    divide by ``σ`` (``resid_rms=σ``). A positive ``σ`` scales every token alike: rankings do not depend on
    it. Exact to first order for directions orthogonal to the residual (``σ`` does not move); otherwise
    the change of ``σ`` itself (a shrink towards the residual's own logits) is left out.

    Raises:
        InputError: ``resid_rms`` is not positive, or the final norm is of a kind this adapter does not know.
    """
    from transformer_lens.components import LayerNorm, LayerNormPre, RMSNorm, RMSNormPre

    if not resid_rms > 0:
        raise InputError(f"resid_rms must be positive, not {resid_rms}")
    W_U = model.unembed.W_U.detach()
    norm = getattr(model, "ln_final", None)
    if model.cfg.normalization_type is None or norm is None:
        return W_U.clone()
    if isinstance(norm, (RMSNorm, LayerNorm)):
        W = norm.w.detach()[:, None] * W_U
    elif isinstance(norm, (RMSNormPre, LayerNormPre)):
        W = W_U.clone()
    else:
        raise InputError(f"final norm {type(norm).__name__} is not supported for logit effects")
    if isinstance(norm, (LayerNorm, LayerNormPre)):
        W = W - W.mean(0, keepdim=True)
    return W / resid_rms


def residual_at(model, tokens: torch.Tensor, hook_name: str) -> torch.Tensor:
    """No-grad residual stream ``[b, p, d_model]`` of ``tokens`` ``[b, p]`` at a residual hook point.

    Raises:
        InputError: not a residual hook point of this model, or shortformer positional embeddings.
    """
    with torch.no_grad():
        resid, _ = embed(model, tokens)
        return run_from(model, [], resid, 0, None, stop_block=blocks_before(hook_name, model.cfg.n_layers))


def next_token_logits(model, tokens: torch.Tensor, sites: list[Site] | None = None,
                      edit: SiteEdit | None = None) -> torch.Tensor:
    """No-grad logits ``[b, d_vocab]`` at the last position of ``tokens`` ``[b, p]`` (no padding), with
    ``edit`` applied at ``sites`` (none: the plain model).

    Raises:
        InputError: shortformer positional embeddings (:func:`embed`).
    """
    with torch.no_grad():
        resid, _ = embed(model, tokens)
        final = run_from(model, sites or [], resid, 0, edit, stop_block=model.cfg.n_layers)
        return logits_of(model, final[:, -1:])[:, 0]


def _cache_entry_class():
    try:
        from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry as Entry
    except ImportError:  # TransformerLens 2.x
        from transformer_lens.past_key_value_caching import HookedTransformerKeyValueCacheEntry as Entry
    return Entry


@dataclass(frozen=True)
class PrefixCache:
    """Every block's attention keys and values ``[n, length, n_kv_heads, d_head]`` over the first
    ``length`` positions, which the clean and corrupted prompts share.

    Interventions that leave those positions alone (patching a node to its corrupted value,
    interpolating towards it) cannot change them — attention is causal — so they are computed
    once and only the later positions are re-run: the "shared prefix" cache of auto-circuit.
    """

    length: int
    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    def entries(self, reps: int = 1) -> list:
        """Frozen cache entries, one per block, keys/values tiled to ``[reps·n, length, n_kv_heads, d_head]``
        for a batch of ``reps·n`` rows (each call gets its own, so threads never share one)."""
        entry = _cache_entry_class()
        return [entry(k.repeat(reps, 1, 1, 1), v.repeat(reps, 1, 1, 1), frozen=True)
                for k, v in zip(self.keys, self.values)]


def prefix_cache(model, tokens: torch.Tensor) -> PrefixCache:
    """Keys and values of every block over ``tokens`` ``[n, length]`` (no-grad, unspliced: the
    spliced model computes the same activations).

    Raises:
        InputError: shortformer positional embeddings (:func:`embed`).
    """
    entry = _cache_entry_class()
    entries = [entry.init_cache_entry(model.cfg, tokens.device, tokens.shape[0]) for _ in model.blocks]
    with torch.no_grad():
        resid, _ = embed(model, tokens)
        for block, e in zip(model.blocks, entries):
            resid = block(resid, past_kv_cache_entry=e)
    return PrefixCache(int(tokens.shape[1]), [e.past_keys for e in entries], [e.past_values for e in entries])


def check_finite(t: torch.Tensor, what: str) -> torch.Tensor:
    """``t`` (any shape ``[...]``) unchanged, once checked finite.

    Raises:
        NumericalError: ``t`` holds NaN or inf (the message names ``what``).
    """
    if not torch.isfinite(t).all():
        raise NumericalError(f"NaN or inf in {what}; check the SAE weights and prompts")
    return t


@dataclass
class SiteRecord:
    """Clean/corrupted state of one site: residual ``x`` ``[b, p, d_model]``, features ``f`` ``[b, p, d_sae]``
    (BOS row zero) and error node ``err`` ``[b, p, d_model]``, with ``x == decode(f) + err``."""

    x: torch.Tensor
    f: torch.Tensor
    err: torch.Tensor


def record_run(model, sites: list[Site], tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[SiteRecord]]:
    """No-grad spliced run of ``tokens`` ``[b, p]`` keeping every site's ``x``, ``f`` and ``ε``.

    Returns:
        ``(embedding [b, p, d_model], final residual [b, p, d_model], records)``, one
        :class:`SiteRecord` per site.

    Raises:
        InputError: shortformer positional embeddings (:func:`embed`).
        NumericalError: NaN or inf in features or the residual stream.
    """
    records: list[SiteRecord] = []

    def edit(i: int, x: torch.Tensor) -> torch.Tensor:
        f, err = encode(sites[i], x)
        check_finite(f, f"SAE features at {sites[i].hook_name}")
        records.append(SiteRecord(x, f, err))
        return x

    with torch.no_grad():
        resid0, _ = embed(model, tokens)
        final = run_from(model, sites, resid0, 0, edit, stop_block=model.cfg.n_layers)
    return resid0, check_finite(final, "residual stream"), records
