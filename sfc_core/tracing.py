"""Causal tracing: activation patching by layer × position (exact, batched patched forward passes).

For every layer ``L`` and token position ``p`` the activation of one *site kind* at ``(L, p)`` is copied from
one run of a prompt pair into the other, the rest of the forward pass is recomputed, and the metric (the logit
difference ``logit[answer] − logit[wrong_answer]`` at the last position, :func:`sfc_core.metrics.logit_diff`)
is read. Site kinds (TransformerLens hook points):

- ``resid_pre``: ``blocks.L.hook_resid_pre`` (the residual stream entering block ``L``), ``[batch, pos, d_model]``;
- ``attn_out``: ``blocks.L.hook_attn_out`` (the attention layer's output), ``[batch, pos, d_model]``;
- ``mlp_out``: ``blocks.L.hook_mlp_out`` (the MLP's output), ``[batch, pos, d_model]``.

Directions (Meng et al. 2022, "Locating and editing factual associations in GPT", §2.1 causal tracing; the
denoising/noising terms and normalisations follow Heimersheim & Nanda 2024, "How to use and interpret
activation patching"):

- **denoising** (``"denoise"``): the *clean* activation is patched into the *corrupted* run. Normalised
  ``(m_patched − m_corr) / (m_clean − m_corr)``: 0 = the corrupted run's metric, 1 = the clean run's.
  A site that restores the clean behaviour on its own scores 1.
- **noising** (``"noise"``): the *corrupted* activation is patched into the *clean* run. Normalised
  ``(m_clean − m_patched) / (m_clean − m_corr)``: 0 = the clean run's metric (the patch did nothing), 1 = the
  corrupted run's (the patch destroyed the behaviour on its own). So in both directions larger = more important.

The normalised map is that of the *means over pairs* (``m`` = mean metric); per-pair maps
(:meth:`TraceResult.per_pair`) normalise each pair by its own clean and corrupted metric.

Exactness and cost. Every cell is a real forward pass. Patched copies are stacked along the batch dimension
(one copy per ``(pair, position)``, ``chunk`` copies per forward); each starts at block ``L`` from the cached
``blocks.L.hook_resid_pre`` of the run being patched (TransformerLens ``start_at_layer``), since the blocks
before ``L`` are unchanged by a patch at ``L``, and each reads the logits at the last position only. A position
before a pair's first differing token holds *identical* activations in the clean and corrupted runs (a causal
model sees only tokens up to ``p``), so its patch is a no-op: it is not run and its value is exactly the
unpatched metric (normalised 0).

Positions. Patching position ``p`` of one pair into the same position of another needs equal token lengths
(:func:`~sfc_core.pairs.tokenize_pairs` skips or aligns unequal pairs), and the map's x axis needs every pair
to put the same role at ``p``: the pairs must form one template group (:mod:`sfc_core.alignment`, same template
id and token length). Pairs of several groups are refused with an :class:`InputError` whose fix is
``template_group="largest"`` (keep the largest group; the others are named in ``warnings``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from .alignment import template_groups
from .errors import Fix, InputError, Notice

#: Site kinds and their hook-point templates.
SITES: dict[str, str] = {
    "resid_pre": "blocks.{L}.hook_resid_pre",
    "attn_out": "blocks.{L}.hook_attn_out",
    "mlp_out": "blocks.{L}.hook_mlp_out",
}
SITE_LABELS: dict[str, str] = {"resid_pre": "residual stream (resid_pre)", "attn_out": "attention output",
                               "mlp_out": "MLP output"}
DIRECTIONS = ("denoise", "noise")
#: Patched copies per forward pass.
DEFAULT_CHUNK = 64

Progress = Callable[[str, float], None]


# ----------------------------------------------------------------------------- shared helpers
def check_direction(direction: str) -> str:
    """``direction`` if it is ``"denoise"`` or ``"noise"``.

    Raises:
        InputError: anything else.
    """
    if direction not in DIRECTIONS:
        raise InputError(f"the patching direction is 'denoise' (clean into corrupted) or 'noise' (corrupted into "
                         f"clean), not {direction!r}")
    return direction


def check_layers(model, layers: Sequence[int] | None) -> list[int]:
    """The layers to patch (all when ``None``), checked against ``model.cfg.n_layers``.

    Raises:
        InputError: a layer that does not exist, or an empty list.
    """
    n_layers = int(model.cfg.n_layers)
    if layers is None:
        return list(range(n_layers))
    layers = [int(x) for x in layers]
    if not layers:
        raise InputError("no layers given")
    bad = [x for x in layers if not 0 <= x < n_layers]
    if bad:
        raise InputError(f"layer {bad[0]} does not exist: the model has layers 0 to {n_layers - 1}")
    return sorted(set(layers))


def one_group(batch, template_group: str = "refuse"):
    """The pairs of ``batch`` as one template group (see the module doc).

    Args:
        batch: a :class:`~sfc_core.pairs.PairBatch` (tokens ``[n, pos]``).
        template_group: ``"refuse"`` raises when the pairs form several groups; ``"largest"`` keeps the largest
            group (the first in order on a tie) and says what it dropped.

    Returns:
        ``(batch, notes)``: the batch of one group, trimmed to its length (``[n', pos']``), and warnings
        (:class:`~sfc_core.errors.Notice`) naming the dropped pairs.

    Raises:
        InputError: an empty batch; several groups with ``"refuse"`` (``fix=("template_group", "largest")``);
            an unknown ``template_group``.
    """
    if template_group not in ("refuse", "largest"):
        raise InputError(f"pairs of several templates can be refused ('refuse') or reduced to the largest "
                         f"template group ('largest'), not {template_group!r}")
    if batch is None or int(batch.last_pos.shape[0]) == 0:
        raise InputError("no prompt pairs to patch")
    group, keys = template_groups(batch)
    if len(keys) == 1:
        return batch.subset(list(range(int(group.shape[0])))) if hasattr(batch, "subset") else batch, []
    sizes = torch.bincount(group, minlength=len(keys))
    if template_group == "refuse":
        desc = ", ".join(f"{int(s)} of {k[1]} tokens" + (f" (template {k[0]})" if k[0] is not None else "")
                         for k, s in zip(keys, sizes.tolist()))
        raise InputError(f"patching by position needs pairs of one template and token length, and these "
                         f"{int(group.shape[0])} pairs form {len(keys)} groups ({desc}); keep one template and "
                         "length, or patch the largest group only", fix=Fix("template_group", "largest"))
    best = int(torch.argmax(sizes))
    rows = [i for i, g in enumerate(group.tolist()) if g == best]
    dropped = int(group.shape[0]) - len(rows)
    note = Notice(f"{dropped} of {int(group.shape[0])} pairs left out: patching by position keeps the largest "
                  f"group of one template and length ({len(rows)} pairs of {keys[best][1]} tokens)")
    return batch.subset(rows), [note]


def one_template_pairs(model, task: str, n: int, seed: int = 0, max_draw: int = 5000) -> list:
    """``n`` pairs of a built-in task that all fall in its most common template group (same template id and
    token length), drawn deterministically: ``get_task_pairs(model, task, m, seed)`` for growing ``m`` until the
    largest group holds ``n``; returns that group's first ``n`` pairs in draw order.

    Raises:
        InputError: unknown task, ``n < 1``, or no group reaches ``n`` within ``max_draw`` drawn pairs.
    """
    from .pairs import tokenize_pairs
    from .tasks import get_task_pairs

    if int(n) < 1:
        raise InputError("the number of pairs must be positive")
    m = max(4 * int(n), 16)
    while True:
        pairs = get_task_pairs(model, task, m, seed=seed)
        batch = tokenize_pairs(model, pairs)
        group, _ = template_groups(batch)
        sizes = torch.bincount(group)
        if int(sizes.max()) >= n:
            best = int(torch.argmax(sizes))
            return [p for p, g in zip(batch.pairs, group.tolist()) if g == best][: int(n)]
        if m >= max_draw:
            raise InputError(f"no template group of task {task!r} reaches {n} pairs within {max_draw} drawn pairs")
        m = min(2 * m, max_draw)


def metric_at_last(model, resid_final: torch.Tensor, last_pos: torch.Tensor, answer_ids: torch.Tensor,
                   wrong_ids: torch.Tensor) -> torch.Tensor:
    """Logit difference ``answer − wrong`` (logits) read from the residual stream after the last block.

    Args:
        resid_final: ``[batch, pos, d_model]``, the output of the last block (before ``ln_final``).
        last_pos, answer_ids, wrong_ids: ``[batch]`` long.

    Returns:
        ``[batch]`` float32: ``unembed(ln_final(resid[last]))[answer] − [...][wrong]`` — equal to
        :func:`sfc_core.metrics.logit_diff` of the full logits (only the last position is unembedded).
    """
    rows = torch.arange(resid_final.shape[0], device=resid_final.device)
    x = resid_final[rows, last_pos.to(resid_final.device)][:, None]  # [batch, 1, d_model]
    logits = _wide(model.unembed(model.ln_final(x))[:, 0])
    return logits[rows, answer_ids.to(logits.device)] - logits[rows, wrong_ids.to(logits.device)]


def _wide(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 when it is half precision, else unchanged (float64 models stay exact)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def first_difference(batch) -> torch.Tensor:
    """``[n]`` long: each pair's first position where the clean and corrupted tokens differ (``last_pos + 1`` when
    they never do). Activations at earlier positions are identical in both runs."""
    diff = (batch.clean_tokens != batch.corrupted_tokens)
    pos = torch.arange(diff.shape[1])[None].expand_as(diff)
    big = torch.full_like(pos, diff.shape[1])
    first = torch.where(diff, pos, big).min(dim=1).values
    return torch.minimum(first, batch.last_pos + 1)


def runs_with_cache(model, batch, hooks: Sequence[str]) -> tuple[dict, dict, torch.Tensor, torch.Tensor]:
    """Clean and corrupted forward passes caching ``hooks``.

    Returns:
        ``(clean_cache, corr_cache, m_clean [n], m_corr [n])``: ``{hook: tensor}`` dicts (shapes as the hooks
        give them, e.g. ``[n, pos, d_model]``) and the logit difference of each run (logits).
    """
    names = set(hooks)
    out = []
    with torch.no_grad():
        for tokens in (batch.clean_tokens, batch.corrupted_tokens):
            logits, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
            rows = torch.arange(tokens.shape[0])
            last = _wide(logits[rows, batch.last_pos])
            m = last[rows, batch.answer_ids] - last[rows, batch.wrong_ids]
            out.append(({k: cache[k] for k in names}, m))
    return out[0][0], out[1][0], out[0][1], out[1][1]


def normalise(m_patched, m_clean, m_corr, direction: str):
    """Normalised effect (see the module doc): denoise ``(m − m_corr)/(m_clean − m_corr)``, noise
    ``(m_clean − m)/(m_clean − m_corr)``; arrays broadcast. A zero gap gives NaN."""
    gap = np.asarray(m_clean, dtype=np.float64) - np.asarray(m_corr, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if direction == "denoise":
            return (np.asarray(m_patched, dtype=np.float64) - m_corr) / gap
        return (np.asarray(m_clean, dtype=np.float64) - m_patched) / gap


def prompt_tokens(model, tokens: torch.Tensor, last_pos: int) -> list[str]:
    """Token strings of one row up to ``last_pos`` (BOS included), decoded one by one; ``"#i"`` without a tokenizer."""
    ids = tokens[: int(last_pos) + 1].tolist()
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        return [f"#{i}" for i in ids]
    return [tok.decode([int(i)]) for i in ids]


# ----------------------------------------------------------------------------- causal tracing
@dataclass
class TraceResult:
    """Causal tracing of one set of pairs (one template group).

    Attributes:
        direction: ``"denoise"`` or ``"noise"``.
        layers: the layers patched (rows of every map).
        patched: ``{site: tensor [n_pairs, len(layers), pos]}``, the metric of each patched run (logits);
            a position never run (before the pair's first differing token) holds the unpatched metric.
        m_clean, m_corr: ``[n_pairs]`` logit difference of the clean / corrupted runs (logits).
        tokens: the first pair's clean prompt, token by token (BOS at 0; the x axis).
        corrupted_tokens: the same for its corrupted prompt.
        seconds: wall time of the patching (s). rows_run: patched copies run (each a forward from block ``L``).
        warnings: notes on pairs left out (:func:`one_group`).
    """

    direction: str
    layers: list[int]
    patched: dict[str, torch.Tensor]
    m_clean: torch.Tensor
    m_corr: torch.Tensor
    tokens: list[str]
    corrupted_tokens: list[str]
    seconds: float = 0.0
    rows_run: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def sites(self) -> list[str]:
        """Site kinds traced."""
        return list(self.patched)

    def mean_patched(self, site: str) -> np.ndarray:
        """``[len(layers), pos]`` mean over pairs of the patched metric (logits)."""
        return self.patched[site].double().mean(0).numpy()

    def normalised(self, site: str) -> np.ndarray:
        """``[len(layers), pos]`` normalised effect of the mean metrics (module doc)."""
        return normalise(self.mean_patched(site), float(self.m_clean.double().mean()),
                         float(self.m_corr.double().mean()), self.direction)

    def per_pair(self, site: str) -> np.ndarray:
        """``[n_pairs, len(layers), pos]`` normalised effect of each pair by its own clean/corrupted metrics."""
        m_clean = self.m_clean.double().numpy()[:, None, None]
        m_corr = self.m_corr.double().numpy()[:, None, None]
        return normalise(self.patched[site].double().numpy(), m_clean, m_corr, self.direction)

    def to_dict(self) -> dict:
        """JSON-able summary: per site the normalised map, the mean patched metric and per-pair maps (lists)."""
        def clean(a):
            return [[None if not np.isfinite(v) else round(float(v), 6) for v in row] for row in a]

        return {
            "direction": self.direction, "layers": self.layers, "tokens": self.tokens,
            "corrupted_tokens": self.corrupted_tokens, "n_pairs": int(self.m_clean.shape[0]),
            "m_clean": float(self.m_clean.mean()), "m_corrupted": float(self.m_corr.mean()),
            "m_clean_per_pair": [round(float(v), 6) for v in self.m_clean],
            "m_corrupted_per_pair": [round(float(v), 6) for v in self.m_corr],
            "normalisation": ("(m - m_corr) / (m_clean - m_corr)" if self.direction == "denoise"
                              else "(m_clean - m) / (m_clean - m_corr)"),
            "seconds": round(self.seconds, 3), "rows_run": self.rows_run, "warnings": list(self.warnings),
            "sites": {s: {"hook": SITES[s], "normalised": clean(self.normalised(s)),
                          "mean_patched": clean(self.mean_patched(s)),
                          "per_pair": [clean(p) for p in self.per_pair(s)]} for s in self.patched},
        }

    def top_cells(self, site: str, k: int = 5) -> list[dict]:
        """The ``k`` cells of largest normalised effect: ``{"layer", "position", "token", "effect"}``."""
        norm = self.normalised(site)
        flat = np.nan_to_num(norm, nan=-np.inf).ravel()
        order = np.argsort(-flat)[:k]
        return [{"layer": self.layers[i // norm.shape[1]], "position": int(i % norm.shape[1]),
                 "token": self.tokens[i % norm.shape[1]], "effect": float(flat[i])} for i in order]


def check_sites(sites: Sequence[str]) -> list[str]:
    """``sites`` checked against :data:`SITES`.

    Raises:
        InputError: an unknown site kind or none.
    """
    sites = list(sites)
    if not sites:
        raise InputError("no site kinds given")
    bad = [s for s in sites if s not in SITES]
    if bad:
        raise InputError(f"unknown site kind {bad[0]!r}; choose from {', '.join(SITES)}")
    return sites


def causal_trace(model, batch, sites: Sequence[str] = tuple(SITES), direction: str = "denoise",
                 layers: Sequence[int] | None = None, template_group: str = "refuse", chunk: int = DEFAULT_CHUNK,
                 progress: Progress | None = None) -> TraceResult:
    """Activation patching of every ``(layer, position)`` of each site kind (module doc).

    Args:
        model: a ``HookedTransformer``.
        batch: a :class:`~sfc_core.pairs.PairBatch` (tokens ``[n, pos]``, equal clean/corrupted length per pair).
        sites: site kinds among :data:`SITES`.
        direction: ``"denoise"`` (clean into corrupted) or ``"noise"`` (corrupted into clean).
        layers: layers to patch (default all).
        template_group: ``"refuse"`` or ``"largest"`` for pairs of several template groups (:func:`one_group`).
        chunk: patched copies per forward pass (≥ 1).
        progress: ``progress(stage, fraction)`` callback.

    Returns:
        :class:`TraceResult` (metric values in logits; maps ``[len(layers), pos]``).

    Raises:
        InputError: unknown site or direction, a layer that does not exist, ``chunk < 1``, no pairs, pairs of
            several template groups with ``"refuse"``.
    """
    t0 = time.perf_counter()
    sites = check_sites(sites)
    check_direction(direction)
    layers = check_layers(model, layers)
    if int(chunk) < 1:
        raise InputError("chunk must be at least 1")
    batch, notes = one_group(batch, template_group)
    n, pos = batch.n, batch.pos
    hooks = {SITES[s].format(L=L) for s in sites for L in layers} | {SITES["resid_pre"].format(L=L) for L in layers}
    clean_c, corr_c, m_clean, m_corr = runs_with_cache(model, batch, sorted(hooks))
    base_c, src_c = (corr_c, clean_c) if direction == "denoise" else (clean_c, corr_c)
    base_m = m_corr if direction == "denoise" else m_clean
    first = first_difference(batch)
    jobs = [(r, p) for r in range(n) for p in range(int(first[r]), int(batch.last_pos[r]) + 1)]
    patched = {s: base_m[:, None, None].repeat(1, len(layers), pos).clone() for s in sites}
    total = max(len(sites) * len(layers), 1)
    rows_run = 0
    with torch.no_grad():
        for si, site in enumerate(sites):
            for li, L in enumerate(layers):
                hook = SITES[site].format(L=L)
                start = base_c[SITES["resid_pre"].format(L=L)]
                for c0 in range(0, len(jobs), int(chunk)):
                    part = jobs[c0:c0 + int(chunk)]
                    r_idx = torch.tensor([r for r, _ in part], dtype=torch.long)
                    p_idx = torch.tensor([p for _, p in part], dtype=torch.long)
                    copies = torch.arange(len(part))
                    values = src_c[hook][r_idx, p_idx]  # [chunk, d_model]

                    def patch(act, hook=None, copies=copies, p_idx=p_idx, values=values):
                        act = act.clone()
                        act[copies, p_idx] = values.to(act.dtype)
                        return act

                    with model.hooks(fwd_hooks=[(hook, patch)]):
                        final = model(start[r_idx], start_at_layer=L, stop_at_layer=model.cfg.n_layers)
                    m = metric_at_last(model, final, batch.last_pos[r_idx], batch.answer_ids[r_idx],
                                       batch.wrong_ids[r_idx])
                    patched[site][r_idx, li, p_idx] = m
                    rows_run += len(part)
                if progress is not None:
                    progress(f"tracing {site} layer {L}", (si * len(layers) + li + 1) / total)
    return TraceResult(direction=direction, layers=layers, patched=patched, m_clean=m_clean,
                       m_corr=m_corr, tokens=prompt_tokens(model, batch.clean_tokens[0], batch.last_pos[0]),
                       corrupted_tokens=prompt_tokens(model, batch.corrupted_tokens[0], batch.last_pos[0]),
                       seconds=time.perf_counter() - t0, rows_run=rows_run,
                       warnings=[*(getattr(batch, "warnings", None) or []), *notes])


def nearest_sae_hook(site: str, layer: int, sae_layers: Sequence[int]) -> tuple[str, int]:
    """The residual SAE site (``blocks.L'.hook_resid_post``) nearest to a traced cell.

    A cell's activation enters the residual stream after block ``L - 1`` for ``resid_pre`` (``hook_resid_pre`` of
    block ``L`` is ``hook_resid_post`` of block ``L - 1``) and after block ``L`` for ``attn_out``/``mlp_out``;
    the SAE layer ``L'`` nearest to that block is returned (the earlier one on a tie).

    Returns:
        ``(hook name, L')``.

    Raises:
        InputError: unknown site, or no SAE layers.
    """
    check_sites([site])
    layers = sorted(int(x) for x in sae_layers)
    if not layers:
        raise InputError("no SAE layers to point at")
    target = int(layer) - 1 if site == "resid_pre" else int(layer)
    best = min(layers, key=lambda x: (abs(x - target), x))
    return f"blocks.{best}.hook_resid_post", best


def axis_labels(tokens: Sequence[str]) -> list[str]:
    """Unique x-axis labels ``"3: ␣gave"`` (position and token; spaces shown as ``␣``)."""
    return [f"{i}: {t.replace(' ', '␣')}" for i, t in enumerate(tokens)]


def heatmap(result: TraceResult, site: str, max_pairs_in_hover: int = 12, clickable: bool = True):
    """Plotly heatmap of one site kind's normalised effect: layers (y) × prompt tokens (x).

    Hover shows the layer, position and token, the normalised effect, the mean patched metric (logits) and the
    per-pair normalised values (the first ``max_pairs_in_hover``). Colour scale: 0 white, 1 blue, negative red.
    With ``clickable`` a transparent square marker sits on every cell (a second, scatter trace carrying the hover
    text; ``x``/``y`` as the heatmap's): Streamlit's ``on_select`` returns no points for heatmap traces
    (streamlit/streamlit#8760), but does for scatter markers, so a click names the cell.

    Raises:
        InputError: ``site`` was not traced.
    """
    import plotly.graph_objects as go

    if site not in result.patched:
        raise InputError(f"site kind {site!r} was not traced; traced: {', '.join(result.patched)}")
    norm = result.normalised(site)
    mean = result.mean_patched(site)
    per = result.per_pair(site)
    x = axis_labels(result.tokens)
    text = []
    for li, L in enumerate(result.layers):
        row = []
        for p in range(norm.shape[1]):
            vals = ", ".join(f"{v:.2f}" for v in per[:max_pairs_in_hover, li, p])
            more = " …" if per.shape[0] > max_pairs_in_hover else ""
            row.append(f"{SITES[site].format(L=L)} @ {x[p]}<br>normalised {norm[li, p]:.3f}"
                       f"<br>mean patched logit diff {mean[li, p]:.3f}<br>per pair: {vals}{more}")
        text.append(row)
    top = float(np.nanmax(np.abs(norm))) if np.isfinite(norm).any() else 1.0
    fig = go.Figure(go.Heatmap(
        z=norm, x=x, y=[f"L{L}" for L in result.layers], text=text,
        hovertemplate=None if clickable else "%{text}<extra></extra>",
        colorscale="RdBu", zmid=0, zmin=-max(top, 1.0), zmax=max(top, 1.0),
        colorbar={"title": "normalised"}, hoverinfo="skip" if clickable else None))
    if clickable:
        xs = [x[p] for _ in result.layers for p in range(norm.shape[1])]
        ys = [f"L{L}" for L in result.layers for _ in range(norm.shape[1])]
        flat_text = [t for row in text for t in row]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", text=flat_text, hovertemplate="%{text}<extra></extra>",
                                 marker={"symbol": "square", "size": 14, "color": "black", "opacity": 0},
                                 selected={"marker": {"opacity": 0.35}}, unselected={"marker": {"opacity": 0}},
                                 showlegend=False, name="cells"))
    what = "clean → corrupted run (denoising)" if result.direction == "denoise" else "corrupted → clean run (noising)"
    fig.update_layout(title=f"{SITE_LABELS[site]}: {what}, mean of {result.m_clean.shape[0]} pairs",
                      xaxis_title="position: clean token", yaxis_title="layer", height=max(360, 18 * len(result.layers)),
                      yaxis={"autorange": "reversed"}, margin={"l": 60, "r": 20, "t": 50, "b": 80})
    return fig
