"""Attention heads: per-head activation patching, attention patterns and path patching.

Hook points (TransformerLens): a head's output is ``blocks.L.attn.hook_z`` ``[batch, pos, n_heads, d_head]``
(before ``W_O``); its inputs ``blocks.L.attn.hook_q`` ``[batch, pos, n_heads, d_head]`` and
``blocks.L.attn.hook_k`` / ``hook_v`` ``[batch, pos, n_kv_heads, d_head]``; its pattern
``blocks.L.attn.hook_pattern`` ``[batch, n_heads, query pos, key pos]``.

Grouped-query attention. SmolLM2-135M has 9 query heads and 3 key/value heads: query heads ``3g, 3g+1, 3g+2``
share KV head ``g`` (``g = h // (n_heads // n_kv_heads)``, TransformerLens' ``repeat_interleave`` order), so
``hook_k``/``hook_v`` carry 3 heads and ``hook_q``/``hook_z``/``hook_pattern`` 9. Patching a receiver head's
keys or values therefore changes KV head ``g`` for the whole group; :func:`path_patch` keeps it to the receiver
alone by also freezing the group's *other* query heads' outputs (``hook_z``) at their clean values, so exactly
one head sees the patched keys/values. Models without grouped-query attention have ``n_kv_heads = n_heads``.

Metric: the logit difference ``answer − wrong`` at the last position (logits), mean over pairs; normalisations as
in :mod:`sfc_core.tracing` (denoising 0 = corrupted, 1 = clean; noising 0 = clean, 1 = corrupted).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from .errors import InputError
from .tracing import (DEFAULT_CHUNK, Progress, axis_labels, check_direction, check_layers, metric_at_last,
                      normalise, prompt_tokens, runs_with_cache)

INPUTS = ("q", "k", "v")


def n_kv_heads(model) -> int:
    """Key/value heads per layer (``cfg.n_key_value_heads``; ``n_heads`` without grouped-query attention)."""
    return int(getattr(model.cfg, "n_key_value_heads", None) or model.cfg.n_heads)


def kv_head(model, head: int) -> int:
    """The KV head that query head ``head`` reads (grouped-query attention; ``head`` itself without it)."""
    return int(head) // (int(model.cfg.n_heads) // n_kv_heads(model))


def check_head(model, layer: int, head: int) -> tuple[int, int]:
    """``(layer, head)`` as ints, checked against the model.

    Raises:
        InputError: a layer or head that does not exist.
    """
    check_layers(model, [layer])
    if not 0 <= int(head) < int(model.cfg.n_heads):
        raise InputError(f"head {head} does not exist: layer {layer} has heads 0 to {model.cfg.n_heads - 1}")
    return int(layer), int(head)


# ----------------------------------------------------------------------------- head patching
@dataclass
class HeadPatchResult:
    """Per-head patching of ``hook_z``.

    Attributes:
        direction: ``"denoise"`` or ``"noise"``. positions: ``"all"`` or ``"last"``.
        layers: rows. patched: ``[n_pairs, len(layers), n_heads]`` metric of each patched run (logits).
        m_clean, m_corr: ``[n_pairs]`` (logits). seconds: wall time (s). rows_run: patched copies run.
    """

    direction: str
    positions: str
    layers: list[int]
    patched: torch.Tensor
    m_clean: torch.Tensor
    m_corr: torch.Tensor
    seconds: float = 0.0
    rows_run: int = 0
    warnings: list[str] = field(default_factory=list)

    def normalised(self) -> np.ndarray:
        """``[len(layers), n_heads]`` normalised effect of the mean metrics."""
        return normalise(self.patched.double().mean(0).numpy(), float(self.m_clean.double().mean()),
                         float(self.m_corr.double().mean()), self.direction)

    def per_pair(self) -> np.ndarray:
        """``[n_pairs, len(layers), n_heads]`` normalised by each pair's own metrics."""
        return normalise(self.patched.double().numpy(), self.m_clean.double().numpy()[:, None, None],
                         self.m_corr.double().numpy()[:, None, None], self.direction)

    def top_heads(self, k: int = 5) -> list[dict]:
        """The ``k`` heads of largest ``|normalised effect|``: ``{"layer", "head", "effect"}``."""
        norm = self.normalised()
        flat = np.nan_to_num(np.abs(norm), nan=-1).ravel()
        order = np.argsort(-flat)[:k]
        return [{"layer": self.layers[i // norm.shape[1]], "head": int(i % norm.shape[1]),
                 "effect": float(norm.ravel()[i])} for i in order]

    def to_dict(self) -> dict:
        """JSON-able summary (normalised map, per-pair maps, top heads)."""
        def r(a):
            return [[None if not np.isfinite(v) else round(float(v), 6) for v in row] for row in a]

        return {"direction": self.direction, "positions": self.positions, "layers": self.layers,
                "n_pairs": int(self.m_clean.shape[0]), "m_clean": float(self.m_clean.mean()),
                "m_corrupted": float(self.m_corr.mean()), "normalised": r(self.normalised()),
                "per_pair": [r(p) for p in self.per_pair()], "top_heads": self.top_heads(10),
                "seconds": round(self.seconds, 3), "rows_run": self.rows_run, "warnings": list(self.warnings)}


def head_patching(model, batch, direction: str = "denoise", layers: Sequence[int] | None = None,
                  positions: str = "all", chunk: int = DEFAULT_CHUNK,
                  progress: Progress | None = None) -> HeadPatchResult:
    """Patch each head's output ``blocks.L.attn.hook_z[:, :, h]`` from one run into the other, one head at a time.

    Wang et al. 2022 ("Interpretability in the wild", §3) patch a head's output at every position; with
    ``positions="last"`` only each pair's last position is patched (where the metric is read). Patching all
    positions needs only equal clean/corrupted lengths per pair, so pairs of several templates are fine here.
    Patched copies (one per pair and head) are stacked in the batch, ``chunk`` per forward pass, each started
    at block ``L`` from the cached ``hook_resid_pre``.

    Args:
        model: a ``HookedTransformer``. batch: a :class:`~sfc_core.pairs.PairBatch` (tokens ``[n, pos]``).
        direction: ``"denoise"`` (clean into corrupted) or ``"noise"`` (corrupted into clean).
        layers: layers to patch (default all). positions: ``"all"`` or ``"last"``. chunk: copies per pass.
        progress: ``progress(stage, fraction)``.

    Returns:
        :class:`HeadPatchResult` (logits; normalised map ``[len(layers), n_heads]``).

    Raises:
        InputError: bad direction, layer, ``positions``, ``chunk < 1`` or no pairs.
    """
    t0 = time.perf_counter()
    check_direction(direction)
    layers = check_layers(model, layers)
    if positions not in ("all", "last"):
        raise InputError(f"head patching patches 'all' positions or the 'last' one, not {positions!r}")
    if int(chunk) < 1:
        raise InputError("chunk must be at least 1")
    n = int(batch.last_pos.shape[0])
    if n == 0:
        raise InputError("no prompt pairs to patch")
    n_heads = int(model.cfg.n_heads)
    hooks = [f"blocks.{L}.attn.hook_z" for L in layers] + [f"blocks.{L}.hook_resid_pre" for L in layers]
    clean_c, corr_c, m_clean, m_corr = runs_with_cache(model, batch, hooks)
    base_c, src_c = (corr_c, clean_c) if direction == "denoise" else (clean_c, corr_c)
    base_m = m_corr if direction == "denoise" else m_clean
    patched = base_m[:, None, None].repeat(1, len(layers), n_heads).clone()
    jobs = [(r, h) for r in range(n) for h in range(n_heads)]
    rows_run = 0
    with torch.no_grad():
        for li, L in enumerate(layers):
            hook = f"blocks.{L}.attn.hook_z"
            start = base_c[f"blocks.{L}.hook_resid_pre"]
            for c0 in range(0, len(jobs), int(chunk)):
                part = jobs[c0:c0 + int(chunk)]
                r_idx = torch.tensor([r for r, _ in part], dtype=torch.long)
                h_idx = torch.tensor([h for _, h in part], dtype=torch.long)
                copies = torch.arange(len(part))
                src = src_c[hook][r_idx, :, h_idx]  # [chunk, pos, d_head]
                last = batch.last_pos[r_idx]

                def patch(z, hook=None, copies=copies, h_idx=h_idx, src=src, last=last):
                    z = z.clone()
                    if positions == "all":
                        z[copies, :, h_idx] = src.to(z.dtype)
                    else:
                        z[copies, last, h_idx] = src[copies, last].to(z.dtype)
                    return z

                with model.hooks(fwd_hooks=[(hook, patch)]):
                    final = model(start[r_idx], start_at_layer=L, stop_at_layer=model.cfg.n_layers)
                patched[r_idx, li, h_idx] = metric_at_last(model, final, last, batch.answer_ids[r_idx],
                                                           batch.wrong_ids[r_idx])
                rows_run += len(part)
            if progress is not None:
                progress(f"patching heads of layer {L}", (li + 1) / len(layers))
    return HeadPatchResult(direction=direction, positions=positions, layers=layers, patched=patched,
                           m_clean=m_clean, m_corr=m_corr, seconds=time.perf_counter() - t0, rows_run=rows_run,
                           warnings=list(getattr(batch, "warnings", None) or []))


def heads_heatmap(result: HeadPatchResult):
    """Plotly heatmap of :meth:`HeadPatchResult.normalised`: layers (y) × heads (x); hover adds the per-pair values."""
    import plotly.graph_objects as go

    norm = result.normalised()
    per = result.per_pair()
    text = [[f"L{L}.H{h}<br>normalised {norm[li, h]:.3f}<br>per pair: "
             + ", ".join(f"{v:.2f}" for v in per[:12, li, h]) + (" …" if per.shape[0] > 12 else "")
             for h in range(norm.shape[1])] for li, L in enumerate(result.layers)]
    top = float(np.nanmax(np.abs(norm))) if np.isfinite(norm).any() else 1.0
    fig = go.Figure(go.Heatmap(z=norm, x=[f"H{h}" for h in range(norm.shape[1])],
                               y=[f"L{L}" for L in result.layers], text=text, hovertemplate="%{text}<extra></extra>",
                               colorscale="RdBu", zmid=0, zmin=-top, zmax=top, colorbar={"title": "normalised"}))
    what = "clean → corrupted (denoising)" if result.direction == "denoise" else "corrupted → clean (noising)"
    fig.update_layout(title=f"Head output (hook_z) patching, {what}, {result.positions} positions, "
                            f"mean of {result.m_clean.shape[0]} pairs",
                      xaxis_title="head", yaxis_title="layer", yaxis={"autorange": "reversed"},
                      height=max(360, 18 * len(result.layers)), margin={"l": 60, "r": 20, "t": 50, "b": 40})
    return fig


# ----------------------------------------------------------------------------- attention patterns
def attention_pattern(model, tokens: torch.Tensor, layer: int, head: int) -> tuple[np.ndarray, list[str]]:
    """One head's attention pattern on one prompt.

    Args:
        tokens: ``[pos]`` long (one prompt, BOS first) — e.g. ``batch.clean_tokens[i, :last_pos + 1]``.
        layer, head: the head (query head under grouped-query attention).

    Returns:
        ``(pattern [query pos, key pos], token strings)``: softmax probabilities from ``hook_pattern``.

    Raises:
        InputError: a layer or head that does not exist; empty tokens.
    """
    layer, head = check_head(model, layer, head)
    tokens = torch.as_tensor(tokens, dtype=torch.long).reshape(-1)
    if tokens.numel() == 0:
        raise InputError("no tokens to show an attention pattern of")
    name = f"blocks.{layer}.attn.hook_pattern"
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens[None], names_filter=lambda n: n == name)
    pattern = cache[name][0, head].double().cpu().numpy()
    return pattern, prompt_tokens(model, tokens, tokens.numel() - 1)


def pattern_heatmap(pattern: np.ndarray, tokens: Sequence[str], layer: int, head: int):
    """Plotly heatmap of an attention pattern: query position (y) × key position (x), probability 0 … 1."""
    import plotly.graph_objects as go

    labels = axis_labels(tokens)
    fig = go.Figure(go.Heatmap(z=pattern, x=labels, y=labels, colorscale="Blues", zmin=0, zmax=1,
                               hovertemplate="query %{y}<br>key %{x}<br>attention %{z:.3f}<extra></extra>",
                               colorbar={"title": "attention"}))
    fig.update_layout(title=f"Attention pattern of L{layer}.H{head}", xaxis_title="key (attended to)",
                      yaxis_title="query", yaxis={"autorange": "reversed"}, height=max(400, 24 * len(labels)),
                      margin={"l": 90, "r": 20, "t": 50, "b": 90})
    return fig


# ----------------------------------------------------------------------------- path patching
@dataclass
class PathPatchResult:
    """Path patching of sender → receiver's ``receiver_input``.

    Attributes:
        sender, receiver: ``(layer, head)``. receiver_input: ``"q"``, ``"k"`` or ``"v"``.
        direction: ``"noise"`` (Wang et al.: corrupted sender, clean run) or ``"denoise"`` (the mirror: clean
            sender, corrupted run).
        m_patched, m_clean, m_corr: ``[n_pairs]`` logit differences (logits).
        seconds: wall time (s).
    """

    sender: tuple[int, int]
    receiver: tuple[int, int]
    receiver_input: str
    m_patched: torch.Tensor
    m_clean: torch.Tensor
    m_corr: torch.Tensor
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    direction: str = "noise"

    @property
    def effect(self) -> float:
        """Change of the mean metric from the run patched into, ``mean m_patched − mean m_base`` (logits; ``m_base``
        = ``m_clean`` for noising, ``m_corr`` for denoising)."""
        base = self.m_clean if self.direction == "noise" else self.m_corr
        return float(self.m_patched.double().mean() - base.double().mean())

    @property
    def normalised(self) -> float:
        """Normalised as in :mod:`sfc_core.tracing`: noising ``(m_clean − m_patched) / (m_clean − m_corr)`` (0 = no
        effect, 1 = the path alone takes the model to the corrupted metric); denoising
        ``(m_patched − m_corr) / (m_clean − m_corr)`` (1 = the path alone restores the clean metric)."""
        return float(normalise(float(self.m_patched.double().mean()), float(self.m_clean.double().mean()),
                               float(self.m_corr.double().mean()), self.direction))

    def to_dict(self) -> dict:
        """JSON-able summary."""
        return {"sender": list(self.sender), "receiver": list(self.receiver), "receiver_input": self.receiver_input,
                "direction": self.direction,
                "m_patched": float(self.m_patched.mean()), "m_clean": float(self.m_clean.mean()),
                "m_corrupted": float(self.m_corr.mean()), "effect": self.effect, "normalised": self.normalised,
                "m_patched_per_pair": [round(float(v), 6) for v in self.m_patched],
                "seconds": round(self.seconds, 3), "warnings": list(self.warnings)}


def path_patch(model, batch, sender: tuple[int, int], receiver: tuple[int, int],
               receiver_input: str = "q", direction: str = "noise") -> PathPatchResult:
    """Path patching (Wang et al. 2022, "Interpretability in the wild", §3.1 and appendix B).

    1. Clean and corrupted runs cache every head's output (``hook_z``).
    2. A clean run in which the sender's output takes its *corrupted* value and every other head's output is
       frozen at its *clean* value (MLPs are recomputed) caches the receiver's input ``receiver_input``
       (``blocks.Lr.attn.hook_q`` head ``hr``, or ``hook_k``/``hook_v`` KV head ``kv_head(hr)``).
    3. A clean run in which only that input of the receiver is replaced by step 2's value gives the metric. For
       ``k``/``v`` under grouped-query attention the other query heads of the receiver's KV group keep their
       clean outputs (module doc), so only the receiver sees the patched input.

    ``direction="denoise"`` is the mirror image: the run patched into is the corrupted one, the sender takes its
    clean value, everything else stays at its corrupted value (useful where single heads have backups, so that
    noising one path moves the metric little).

    Args:
        model: a ``HookedTransformer``. batch: a :class:`~sfc_core.pairs.PairBatch` (``[n, pos]``, equal
            clean/corrupted length per pair; several templates are fine: every patch covers all positions).
        sender, receiver: ``(layer, head)``; the sender's layer must be below the receiver's.
        receiver_input: ``"q"``, ``"k"`` or ``"v"``. direction: ``"noise"`` (Wang et al.) or ``"denoise"``.

    Returns:
        :class:`PathPatchResult` (logits).

    Raises:
        InputError: a layer or head that does not exist, a sender not below the receiver, an unknown input,
            no pairs.
    """
    t0 = time.perf_counter()
    ls, hs = check_head(model, *sender)
    lr, hr = check_head(model, *receiver)
    if ls >= lr:
        raise InputError(f"the sender L{ls}.H{hs} must sit in an earlier layer than the receiver L{lr}.H{hr}")
    if receiver_input not in INPUTS:
        raise InputError(f"the receiver's input is 'q', 'k' or 'v', not {receiver_input!r}")
    if int(batch.last_pos.shape[0]) == 0:
        raise InputError("no prompt pairs to patch")
    check_direction(direction)
    z_hooks = [f"blocks.{L}.attn.hook_z" for L in range(lr + 1)]
    clean_c, corr_c, m_clean, m_corr = runs_with_cache(model, batch, z_hooks)
    in_hook = f"blocks.{lr}.attn.hook_{receiver_input}"
    in_head = hr if receiver_input == "q" else kv_head(model, hr)
    # noising: run clean, sender corrupted; denoising: run corrupted, sender clean.
    base_c, src_c = (clean_c, corr_c) if direction == "noise" else (corr_c, clean_c)
    base_tokens = batch.clean_tokens if direction == "noise" else batch.corrupted_tokens

    def freeze(z, hook):
        z = base_c[hook.name].to(z.dtype).clone()
        if hook.name == f"blocks.{ls}.attn.hook_z":
            z[:, :, hs] = src_c[hook.name][:, :, hs].to(z.dtype)
        return z

    store: dict[str, torch.Tensor] = {}

    def keep(x, hook):
        store["x"] = x[:, :, in_head].clone()
        return x

    with torch.no_grad():
        fwd = [(name, freeze) for name in z_hooks[:lr]] + [(in_hook, keep)]
        model.run_with_hooks(base_tokens, fwd_hooks=fwd, stop_at_layer=lr + 1)

        def put(x, hook):
            x = x.clone()
            x[:, :, in_head] = store["x"].to(x.dtype)
            return x

        fwd = [(in_hook, put)]
        group = [h for h in range(int(model.cfg.n_heads)) if kv_head(model, h) == in_head and h != hr]
        if receiver_input != "q" and group:
            def others_clean(z, hook):
                z = z.clone()
                z[:, :, group] = base_c[hook.name][:, :, group].to(z.dtype)
                return z

            fwd.append((f"blocks.{lr}.attn.hook_z", others_clean))
        final = model.run_with_hooks(base_tokens, fwd_hooks=fwd, stop_at_layer=model.cfg.n_layers)
        m = metric_at_last(model, final, batch.last_pos, batch.answer_ids, batch.wrong_ids)
    return PathPatchResult(sender=(ls, hs), receiver=(lr, hr), receiver_input=receiver_input, m_patched=m,
                           m_clean=m_clean, m_corr=m_corr, seconds=time.perf_counter() - t0,
                           warnings=list(getattr(batch, "warnings", None) or []), direction=direction)
