"""Indirect effects of SAE features and error nodes: AtP, AtP* (GradDrop), integrated gradients and exact patching.

Sign convention (used everywhere, stated in the UI legend): the indirect effect (IE)
of a node is the change of the metric ``m`` (default: logit difference
``logit[answer] − logit[wrong_answer]``, in logits) when that node takes its
*corrupted* value in the *clean* run (Marks et al. 2024, §2):

* exact patching: ``m(clean | a := a_corr) − m(clean)``
* attribution patching (AtP, Nanda 2023; Syed et al. 2023): ``∇ₐm|clean · (a_corr − a_clean)``
* AtP* (Kramár et al. 2024): ``sign(AtP) · mean_ℓ |AtP with block ℓ dropped from the backward pass|``
  (:func:`atp_star`)
* integrated gradients (IG, Marks et al. eq. 3; Sundararajan et al. 2017):
  ``(a_corr − a_clean) · mean_{α ∈ {0, 1/N, …, (N−1)/N}} ∇ₐm|a_clean + α(a_corr − a_clean)``

so a node that *carries* the clean behaviour has a negative effect (patching it in from
the corrupted prompt lowers ``m``). Circuits rank nodes by ``|IE|``.

Nodes are :class:`~sfc_core.nodes.Node` s (SAE latents and error nodes ε; with ``aggregation="none"``
also resolved by position). Effects live in per-site tensors laid out by
:class:`~sfc_core.nodes.NodeSpace` (latents, then ε). Per-pair effects are summed over positions and
then averaged over pairs.

Because a spliced site writes ``x = decode(f) + ε`` exactly, ``∂m/∂f = W_dec ∂m/∂x`` and
``∂m/∂ε = ∂m/∂x``; one backward pass through the *unspliced* model gives every
site's gradient, so AtP costs one clean forward + backward plus the SAE encodes.

IG and exact patching re-run the model many times from a site onward; positions that
every clean and corrupted prompt share (IOI's prompts agree up to the subject's second
mention) cannot change there, so they run once and are cached (:class:`PrefixCache`).
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass, field
from functools import cached_property
from types import SimpleNamespace

import torch

from . import defaults
from .errors import InputError
from .metrics import get_metric
from .nodes import Node, NodeSpace, unit_kind
from .splice import (PrefixCache, Site, SiteRecord, check_finite, logits_of, make_sites, prefix_cache, record_run,
                     run_from)

AGGREGATIONS = ("sum", "none")

_DECODER_LOCK = threading.Lock()
_DECODERS: "weakref.WeakKeyDictionary[object, torch.Tensor]" = weakref.WeakKeyDictionary()


def effective_decoder(sae) -> torch.Tensor:
    """Rows ``[d_sae, d_in]``: the change of ``decode(f)`` per unit of each feature (residual units per unit
    of activation).

    Computed as ``decode(e_k) − decode(0)`` so that any affine output scaling an SAE
    Lens architecture applies after ``W_dec`` is included. Cached per SAE.
    """
    with _DECODER_LOCK:
        if sae in _DECODERS:
            return _DECODERS[sae]
    d_sae = int(sae.cfg.d_sae)
    dtype = sae.W_dec.dtype
    with torch.no_grad():
        zero = sae.decode(torch.zeros(1, d_sae, dtype=dtype))
        rows = [sae.decode(torch.eye(d_sae, dtype=dtype)[i:i + 4096]) - zero for i in range(0, d_sae, 4096)]
    W = torch.cat(rows)
    with _DECODER_LOCK:
        _DECODERS[sae] = W
    return W


# ------------------------------------------------------------------ the two runs
@dataclass
class PairRuns:
    """Clean and corrupted spliced runs of one :class:`~sfc_core.pairs.PairBatch`.

    Attributes:
        model: the ``HookedTransformer`` the runs used.
        sites: SAE sites sorted by depth.
        batch: the tokenized pairs (``n`` pairs, ``pos`` positions, right-padded).
        metric: metric name (see :mod:`sfc_core.metrics`).
        clean / corrupted: per site, ``x`` ``[n, pos, d_model]``, ``f`` ``[n, pos, d_sae]``,
            ``err`` ``[n, pos, d_model]``.
        embed_clean / embed_corrupted: residual stream at the embedding ``[n, pos, d_model]``.
        clean_logprobs: next-token log-probs at the last position ``[n, d_vocab]`` (nats; for KL).
        m_clean / m_corrupted: metric per pair ``[n]`` (metric units: logits for logit_diff).
        mask: ``[n, pos]`` bool, real non-BOS positions.
        share_prefix: re-run only the positions after the prompts' shared prefix (:meth:`prefix`).
    """

    model: object
    sites: list[Site]
    batch: object
    metric: str
    clean: list[SiteRecord]
    corrupted: list[SiteRecord]
    embed_clean: torch.Tensor
    embed_corrupted: torch.Tensor
    clean_logprobs: torch.Tensor
    m_clean: torch.Tensor
    m_corrupted: torch.Tensor
    mask: torch.Tensor
    share_prefix: bool = True
    _decoders: list[torch.Tensor] = field(default_factory=list)
    _clean_grads: list[torch.Tensor] | None = None
    _prefix: PrefixCache | bool | None = None

    @property
    def n(self) -> int:
        """Number of pairs ``n``."""
        return int(self.m_clean.shape[0])

    @cached_property
    def space(self) -> NodeSpace:
        """The sites' :class:`NodeSpace` (positions: the batch width)."""
        units = tuple(getattr(s.sae, "unit_kind", None) or unit_kind(s.hook_name) for s in self.sites)
        return NodeSpace(tuple(s.hook_name for s in self.sites), tuple(s.d_sae for s in self.sites),
                         int(self.batch.clean_tokens.shape[1]), units)

    def decoder(self, i: int) -> torch.Tensor:
        """Effective decoder ``[d_sae, d_model]`` of site ``i``."""
        if not self._decoders:
            self._decoders = [effective_decoder(s.sae) for s in self.sites]
        return self._decoders[i]

    def last_logits(self, resid: torch.Tensor, reps: int = 1, offset: int = 0) -> torch.Tensor:
        """Logits ``[reps·n, d_vocab]`` at each row's last real position, from the final residual
        ``[reps·n, pos − offset, d_model]`` of positions ``offset..``. Only that position goes through
        ``ln_final``/``unembed`` (the vocabulary projection costs as much as several blocks)."""
        rows = torch.arange(resid.shape[0])
        last = self.batch.last_pos.repeat(reps) - offset
        return logits_of(self.model, resid[rows, last][:, None])[:, 0]

    def metric_from_logits(self, logits: torch.Tensor, reps: int = 1) -> torch.Tensor:
        """Metric per row ``[reps·n]`` (metric units) from last-position logits ``[reps·n, d_vocab]``."""
        ids = (self.batch.answer_ids.repeat(reps), self.batch.wrong_ids.repeat(reps))
        # logits are already at the last position; the metric ignores last_pos for 2-D logits
        ns = SimpleNamespace(last_pos=torch.zeros_like(ids[0]), answer_ids=ids[0], wrong_ids=ids[1])
        ref = self.clean_logprobs.repeat(reps, 1) if self.clean_logprobs is not None else None
        return get_metric(self.metric)(logits, ns, ref)

    def metric_of_rows(self, logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Metric ``[r]`` (metric units) from last-position logits ``[r, d_vocab]`` whose row ``j`` belongs to pair
        ``rows[j]``."""
        ns = SimpleNamespace(last_pos=torch.zeros_like(rows), answer_ids=self.batch.answer_ids[rows],
                             wrong_ids=self.batch.wrong_ids[rows])
        ref = self.clean_logprobs[rows] if self.clean_logprobs is not None else None
        return get_metric(self.metric)(logits, ns, ref)

    def metric_from_resid(self, resid: torch.Tensor, reps: int = 1, offset: int = 0) -> torch.Tensor:
        """Metric per row ``[reps·n]`` (metric units) from the final residual
        ``[reps·n, pos − offset, d_model]``."""
        return self.metric_from_logits(self.last_logits(resid, reps, offset), reps)

    def prefix(self) -> PrefixCache | None:
        """Key/value cache of the leading positions where every pair's clean and corrupted tokens
        agree (built on first use); ``None`` when they share only BOS or ``share_prefix`` is off."""
        if self._prefix is None:
            length = shared_prefix_length(self.batch)
            usable = self.share_prefix and length > 1 and \
                self.model.cfg.positional_embedding_type in ("standard", "rotary", "alibi")
            self._prefix = prefix_cache(self.model, self.batch.clean_tokens[:, :length]) if usable else False
        return self._prefix or None

    def ablated_metric(self, ablation: str = "mean"):
        """``keeps -> [R]``: the mean metric over pairs (metric units) with everything outside each of ``R`` keep
        masks ablated (:func:`~sfc_core.ablation.circuit_metric`, values of :func:`~sfc_core.ablation.
        ablation_values` computed once). :class:`~sfc_core.batching.PairStream` offers the same over pair batches.

        Raises:
            InputError: unknown ablation kind.
        """
        from .ablation import ablation_values, circuit_metric

        values = ablation_values(self, ablation)
        return lambda keeps: circuit_metric(self, keeps, values)

    def active_units(self) -> list[torch.Tensor]:
        """Per site ``[pos, d_sae]`` bool: the unit is active at that position on some real clean token (latents when
        positive; neurons, which GELU/SiLU can make negative, when non-zero) — the random baseline's pool."""
        out = []
        for i, rec in enumerate(self.clean):
            act = rec.f * self.mask[..., None]
            out.append((act > 0 if self.space.has_error(i) else act != 0).any(0))
        return out

    # The three computations :class:`~sfc_core.batching.PairStream` also offers, so that callers need not ask which
    # of the two they hold.
    def attribute(self, method: str = "atp", aggregation: str = "sum", steps: int = defaults.IG_STEPS,
                  progress=None) -> "Attribution":
        """:func:`attribute` on these runs."""
        return attribute(self, method, aggregation, steps, progress)

    def edge_effects(self, nodes, node_effects=None, progress=None) -> tuple[dict, dict]:
        """:func:`~sfc_core.edges.edge_effects` on these runs."""
        from .edges import edge_effects

        return edge_effects(self, nodes, node_effects, progress=progress)

    def exact_effects(self, nodes, progress=None) -> torch.Tensor:
        """:func:`exact_effects` on these runs ``[len(nodes)]``."""
        return exact_effects(self, nodes, progress=progress)

    def metric_after(self, x: torch.Tensor, start_block: int, reps: int = 1) -> torch.Tensor:
        """Metric per row ``[reps·n]`` (metric units) of running blocks ``start_block..`` (no SAE edits) on the
        residual ``x`` ``[reps·n, pos, d_model]``, whose shared-prefix positions must be the clean
        ones: only the later positions run, attending to :meth:`prefix`."""
        pre, end = self.prefix(), self.model.cfg.n_layers
        if pre is None:
            return self.metric_from_resid(run_from(self.model, self.sites, x, start_block, None, stop_block=end), reps)
        final = run_from(self.model, self.sites, x[:, pre.length:], start_block, None, stop_block=end,
                         past=pre.entries(reps))
        return self.metric_from_resid(final, reps, offset=pre.length)


def shared_prefix_length(batch) -> int:
    """Number of leading positions (tokens) where every pair's clean and corrupted tokens agree (≥ 1: BOS).

    Args:
        batch: a :class:`~sfc_core.pairs.PairBatch` (``clean_tokens`` / ``corrupted_tokens`` ``[n, pos]``).
    """
    differ = (batch.clean_tokens != batch.corrupted_tokens).any(0)
    first = torch.nonzero(differ)
    return int(first[0]) if len(first) else int(batch.last_pos.min())


def prepare_runs(model, saes: dict, batch, metric: str = "logit_diff") -> PairRuns:
    """Run the clean and corrupted prompts once with SAEs spliced in (``x = decode(f) + ε``, Marks et al.
    2024, §2), keeping every site's state.

    Args:
        saes: ``{hook_name: LoadedSAE | SAE}``.
        batch: a :class:`~sfc_core.pairs.PairBatch` (tokens ``[n, pos]``).
        metric: a name of :data:`sfc_core.metrics.METRICS`.

    Returns:
        :class:`PairRuns` (shapes in its docstring).

    Raises:
        InputError: no SAE, a hook point that is not a residual point of the model, two SAEs at one point,
            or an unknown metric.
        IncompatibleSAEError: an SAE's ``d_in`` differs from ``d_model``.
        NumericalError: NaN or inf in activations.
    """
    get_metric(metric)
    sites = make_sites(model, saes)
    e_clean, fin_clean, rec_clean = record_run(model, sites, batch.clean_tokens)
    e_corr, fin_corr, rec_corr = record_run(model, sites, batch.corrupted_tokens)
    runs = PairRuns(model, sites, batch, metric, rec_clean, rec_corr, e_clean, e_corr,
                    clean_logprobs=None, m_clean=torch.empty(0), m_corrupted=torch.empty(0),
                    mask=batch.valid_mask.clone())
    with torch.no_grad():
        clean_logits = runs.last_logits(fin_clean)
        runs.clean_logprobs = clean_logits.log_softmax(-1)
        runs.m_clean = runs.metric_from_logits(clean_logits)
        runs.m_corrupted = runs.metric_from_resid(fin_corr)
    return runs


# ------------------------------------------------------------------ results
@dataclass
class Attribution:
    """Node effects of one method on one set of pairs.

    Attributes:
        method: the attribution method (``"atp"``, ``"atp_star"``, ``"ig"``, ``"exact"``).
        metric: metric name; effects are in its units (logits for logit difference).
        aggregation: ``"sum"`` over positions or ``"none"`` (per position).
        hook_names / d_sae: hook point and dictionary width of each site.
        effects: per site ``[d_sae + 1]`` (``aggregation="sum"``) or ``[pos, d_sae + 1]``
            (``"none"``): mean over pairs of the IE in metric units; index ``d_sae`` is ε.
        activations: same shapes: mean over pairs of the clean activation summed over
            positions (for ε: its L2 norm).
        n_pairs: number of pairs ``n``.
        m_clean / m_corrupted: mean metric over pairs of the clean / corrupted runs (metric units).
        timings_s: seconds per stage.
        steps: IG steps (``None`` for other methods).
        units: per site, the kind of its units (:attr:`~sfc_core.nodes.NodeSpace.units`; ``None``: from the hook
            names).
    """

    method: str
    metric: str
    aggregation: str
    hook_names: list[str]
    d_sae: list[int]
    effects: list[torch.Tensor]
    activations: list[torch.Tensor]
    n_pairs: int
    m_clean: float
    m_corrupted: float
    timings_s: dict = field(default_factory=dict)
    steps: int | None = None
    units: list[str] | None = None

    @property
    def per_position(self) -> bool:
        """Whether effects are per position (``[pos, d_sae + 1]``, ``aggregation="none"``)."""
        return self.aggregation == "none"

    @cached_property
    def space(self) -> NodeSpace:
        """The :class:`NodeSpace` the effect tensors are laid out in."""
        width = int(self.effects[0].shape[0]) if self.per_position and self.effects else None
        return NodeSpace(tuple(self.hook_names), tuple(self.d_sae), width,
                         tuple(self.units) if self.units is not None else None)


def _check_aggregation(aggregation: str) -> None:
    if aggregation not in AGGREGATIONS:
        raise InputError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, not '{aggregation}'")


def _site_effects(runs: PairRuns, i: int, grad: torch.Tensor, aggregation: str) -> torch.Tensor:
    """IE ``[n, pos, d_sae + 1]`` of site ``i`` from a gradient ``∂m/∂x`` ``[n, pos, d_model]``."""
    clean, corr = runs.clean[i], runs.corrupted[i]
    grad_f = grad @ runs.decoder(i).T
    ie_f = grad_f * (corr.f - clean.f)
    ie_e = (grad * (corr.err - clean.err)).sum(-1, keepdim=True)
    if not runs.space.has_error(i):  # a neuron site: column d is the rest of the stream, no node
        ie_e = torch.zeros_like(ie_e)
    ie = torch.cat([ie_f, ie_e], dim=-1) * runs.mask[..., None]
    return _aggregate(ie, aggregation)


def _aggregate(per_pos: torch.Tensor, aggregation: str) -> torch.Tensor:
    """``[n, pos, k]`` → mean over pairs of the sum over positions ``[k]``, or ``[pos, k]``."""
    return per_pos.sum(1).mean(0) if aggregation == "sum" else per_pos.mean(0)


def _activations(runs: PairRuns, aggregation: str) -> list[torch.Tensor]:
    out = []
    for rec in runs.clean:
        act = torch.cat([rec.f, rec.err.norm(dim=-1, keepdim=True)], dim=-1) * runs.mask[..., None]
        out.append(_aggregate(act, aggregation))
    return out


def _result(runs: PairRuns, method: str, aggregation: str, effects, timings, steps=None) -> Attribution:
    for e, s in zip(effects, runs.sites):
        check_finite(e, f"{method} effects at {s.hook_name}")
    return Attribution(
        method=method, metric=runs.metric, aggregation=aggregation,
        hook_names=[s.hook_name for s in runs.sites], d_sae=[s.d_sae for s in runs.sites],
        effects=[e.detach() for e in effects], activations=_activations(runs, aggregation),
        n_pairs=runs.n, m_clean=runs.m_clean.mean().item(), m_corrupted=runs.m_corrupted.mean().item(),
        timings_s=timings, steps=steps, units=list(runs.space.units),
    )


#: Largest batch (sequences) of one IG forward/backward pass.
IG_CHUNK_ROWS = 32

# ------------------------------------------------------------------ AtP
def clean_gradients(runs: PairRuns) -> list[torch.Tensor]:
    """``∂m/∂x`` at every site on the clean prompts, ``[n, pos, d_model]`` each (one backward; metric
    units per unit of residual activation).

    ``m`` is summed over pairs, so each row holds its own pair's gradient. Computed once per
    ``runs`` (AtP, edges and FAP all read it). The gradient of AtP, Marks et al. 2024, eq. 2.

    Raises:
        NumericalError: NaN or inf in a gradient.
    """
    if runs._clean_grads is not None:
        return runs._clean_grads
    model = runs.model
    resid0 = runs.embed_clean.detach().clone().requires_grad_(True)
    xs: list[torch.Tensor] = []

    def keep(i: int, x: torch.Tensor) -> torch.Tensor:
        xs.append(x)
        return x

    with torch.enable_grad():
        final = run_from(model, runs.sites, resid0, 0, keep, stop_block=model.cfg.n_layers)
        m = runs.metric_from_resid(final).sum()
        grads = torch.autograd.grad(m, xs)
    runs._clean_grads = [check_finite(g, f"gradient at {s.hook_name}") for g, s in zip(grads, runs.sites)]
    return runs._clean_grads


def atp(runs: PairRuns, aggregation: str = "sum") -> Attribution:
    """Attribution patching: ``IE ≈ ∇ₐm|clean · (a_corr − a_clean)`` for every feature and ε.

    Cost: one clean forward and one backward (plus the two recording runs of ``prepare_runs``).
    Source: Marks et al. 2024, eq. 2 (attribution patching: Nanda 2023; Syed et al. 2023).

    Returns:
        :class:`Attribution` with per-site effects ``[d_sae + 1]`` (``aggregation="sum"``) or
        ``[pos, d_sae + 1]`` (``"none"``), metric units.

    Raises:
        InputError: unknown aggregation.
        NumericalError: NaN or inf in gradients or effects.
    """
    _check_aggregation(aggregation)
    t = time.perf_counter()
    grads = clean_gradients(runs)
    effects = [_site_effects(runs, i, g, aggregation) for i, g in enumerate(grads)]
    return _result(runs, "atp", aggregation, effects, {"nodes": time.perf_counter() - t})


# ------------------------------------------------------------------ AtP* (GradDrop)
#: Largest batch (rows: dropped layers × pairs) of one batched GradDrop backward pass.
GRADDROP_CHUNK_ROWS = 256


def _batched_vjp(outputs: list[torch.Tensor], cotangents: list[torch.Tensor], inp: torch.Tensor,
                 n: int) -> torch.Tensor:
    """``[K, *inp.shape]``: ``K`` vector-Jacobian products of ``outputs`` w.r.t. ``inp`` through the retained
    graph, row ``k`` with cotangents ``cotangents[j][k]`` (each ``[K, *outputs[j].shape]``), at most
    :data:`GRADDROP_CHUNK_ROWS` ``// n`` rows per backward pass."""
    K = int(cotangents[0].shape[0])
    per = max(1, GRADDROP_CHUNK_ROWS // max(1, n))
    parts = []
    for c in range(0, K, per):
        (g,) = torch.autograd.grad(outputs, [inp], [ct[c:c + per] for ct in cotangents], retain_graph=True,
                                   is_grads_batched=True)
        parts.append(g)
    return torch.cat(parts)


def graddrop_gradients(runs: PairRuns, drop_layers=None) -> tuple[list[torch.Tensor], list[torch.Tensor],
                                                                   list[list[int]]]:
    """Clean gradients ``∂m/∂x`` at every site, plain and with one block's residual contribution dropped
    from the backward pass (GradDrop, Kramár et al. 2024).

    Dropping block ``ℓ`` zeroes the gradient flowing back through its attention and MLP outputs: the
    gradient at the block's input is then the one at its output (the skip connection alone). It changes
    only the gradients at sites *before* block ``ℓ`` (``n_blocks_before ≤ ℓ``).

    One forward pass of the clean prompts (only the positions after the shared prefix, which attend to
    :meth:`PairRuns.prefix`; nodes there do not differ) is kept; one backward gives the plain gradient
    ``g_b`` at every block boundary ``r_b``; the dropped gradient for ``ℓ`` is ``g_{ℓ+1}`` placed at
    ``r_ℓ`` and carried back to the earlier sites. Those carries run batched over the dropped layers
    (``is_grads_batched``), site to site from the last one down, in chunks of :data:`GRADDROP_CHUNK_ROWS`
    rows: about ``(L − first site)² / 2`` block backward passes in all (≈ 11 backward passes for 30
    blocks and a first site after block 3).

    Args:
        drop_layers: the blocks ``ℓ`` to drop one at a time (default: every block ``0..L−1``); blocks that
            sit before every site change nothing and are left out of the returned lists.

    Returns:
        ``(plain, dropped, layers)``: per site, the plain gradient ``[n, pos, d_model]``, the dropped
        gradients ``[K_i, n, pos, d_model]`` (zero rows at the shared prefix) and the ``K_i`` dropped blocks
        they belong to (blocks at or after the site), metric units per unit of residual activation.

    Raises:
        NumericalError: NaN or inf in a gradient.
    """
    model, sites, n = runs.model, runs.sites, runs.n
    L = model.cfg.n_layers
    pre = runs.prefix()
    off = pre.length if pre is not None else 0
    past = pre.entries() if pre is not None else None
    first = sites[0].n_blocks_before
    wanted = set(range(L)) if drop_layers is None else {int(b) for b in drop_layers}
    with torch.no_grad():
        r0 = run_from(model, [], runs.embed_clean[:, off:], 0, None, stop_block=first, past=past)
    with torch.enable_grad():
        rs = {first: r0.detach().requires_grad_(True)}
        for b in range(first, L):
            rs[b + 1] = run_from(model, [], rs[b], b, None, stop_block=b + 1, past=past)
        m = runs.metric_from_resid(rs[L], offset=off).sum()
        bounds = list(range(first, L + 1))
        g = dict(zip(bounds, torch.autograd.grad(m, [rs[b] for b in bounds], retain_graph=True)))
        plain, dropped, layers = [None] * len(sites), [None] * len(sites), [None] * len(sites)
        stack, stack_layers, upper = None, [], L  # dropped gradients at r_upper and their blocks
        for k in reversed(range(len(sites))):
            a = sites[k].n_blocks_before
            new = [b for b in range(a + 1, upper) if b in wanted]  # cotangent g_{b+1} enters at r_b
            outs, cots = [], []
            rows = (len(stack_layers) if stack is not None else 0) + len(new)
            if rows:
                zeros = lambda t: torch.zeros((rows, *t.shape), dtype=t.dtype)  # noqa: E731
                if stack is not None:
                    ct = zeros(rs[upper])
                    ct[:len(stack_layers)] = stack
                    outs.append(rs[upper])
                    cots.append(ct)
                for j, b in enumerate(new):
                    ct = zeros(rs[b])
                    ct[len(stack_layers) + j] = g[b + 1]
                    outs.append(rs[b])
                    cots.append(ct)
                carried = _batched_vjp(outs, cots, rs[a], n)
            else:
                carried = torch.zeros((0, *rs[a].shape), dtype=rs[a].dtype)
            stack_layers = stack_layers + new
            if a in wanted and a < L:
                carried = torch.cat([carried, g[a + 1][None]])
                stack_layers = stack_layers + [a]
            stack, upper = carried, a
            plain[k], dropped[k], layers[k] = g[a], carried, list(stack_layers)
    pad = lambda t: torch.nn.functional.pad(t, (0, 0, off, 0))  # noqa: E731  zero rows at the shared prefix
    for k, s in enumerate(sites):
        plain[k] = check_finite(pad(plain[k]).detach(), f"gradient at {s.hook_name}")
        dropped[k] = check_finite(pad(dropped[k]).detach(), f"GradDrop gradient at {s.hook_name}")
    return plain, dropped, layers


def atp_star(runs: PairRuns, aggregation: str = "sum", drop_layers=None) -> Attribution:
    """AtP* for SAE latents and error nodes: AtP with GradDrop (Kramár et al. 2024, "AtP*: An efficient and
    scalable method for localizing LLM behaviour to components", arXiv:2403.00745); their QK fix does not
    apply here.

    **GradDrop.** For each block ``ℓ`` of the ``L`` blocks, ``Î_ℓ(n)`` is AtP's estimate (per pair
    ``∇ₐm · (a_corr − a_clean)`` summed over positions, then averaged over pairs, as :func:`atp`) with the
    gradient through block ``ℓ``'s residual contribution (attention and MLP outputs) dropped
    (:func:`graddrop_gradients`); the score is the paper's mean of magnitudes
    ``|Î_GD(n)| = (1/L) Σ_ℓ |Î_ℓ(n)|``. A node at a residual site after block ``b`` has downstream blocks
    ``b+1..L−1`` only; dropping a block upstream of it leaves its estimate at AtP's, so
    ``|Î_GD(n)| = (n_up·|AtP(n)| + Σ_{ℓ downstream} |Î_ℓ(n)|) / L``. The paper (as read here) sums over
    all ``L`` layers and divides by ``L − 1``: its nodes (heads, neurons) sit *inside* one layer, whose own
    drop zeroes their gradient; a residual-stream node sits inside none, so no term is always 0 and the
    mean is over ``L`` (a constant factor: rankings are the same either way). Without
    cancellation between paths every ``|Î_ℓ| ≈ |AtP|`` and the score stays near ``|AtP|`` (metric units);
    a node whose paths cancel in AtP keeps the size of what is left when one block's paths are dropped.

    **Sign.** GradDrop gives magnitudes only; the effect reported is ``sign(AtP(n)) · |Î_GD(n)|`` (the
    sign of the signed mean ``Σ_ℓ Î_ℓ`` where AtP is exactly 0), so circuits rank by ``|Î_GD|`` and the
    graph colours by AtP's first-order sign. For exactly the nodes GradDrop rescues (AtP ≈ 0 by
    cancellation) that sign is weak: check such nodes by exact patching.

    **QK fix, not applied.** The paper's QK fix is for nodes that are one head's *query or key*: it
    recomputes that head's attention softmax exactly (scores are linear in ``q``/``k``) and linearizes
    from the pattern on (later layers stay linear there too). A residual-stream SAE latent or error node
    is no head's query or key: through the next block's norm it moves the queries, keys *and* values of
    every head of every later block. The nearest counterpart — exact norm, queries, keys and softmax of
    every head of the first block after the site for each patched node, plus a backward pass with that
    block's patterns detached for the other paths — costs one partial attention forward per node and pair
    (~7,000 nodes × 20 pairs here, tens of seconds on a CPU against ~1 s for AtP) and is not the paper's
    fix, so it is not applied; the recall benchmark (``bench/bench_recall.py``) is the check that AtP
    is not missing exact patching's largest nodes through saturated attention.

    Cost: one clean forward (after the shared prefix) and batched backward passes, about 11 backward
    passes' worth for 30 blocks (:func:`graddrop_gradients`); memory: one retained forward graph plus
    :data:`GRADDROP_CHUNK_ROWS`-row batches of one block's backward.

    Args:
        drop_layers: blocks dropped one at a time (default: all ``L``); the mean runs over these (an empty
            list gives AtP itself).

    Returns:
        :class:`Attribution` (``method="atp_star"``) with per-site effects ``[d_sae + 1]`` or
        ``[pos, d_sae + 1]``, metric units.

    Raises:
        InputError: unknown aggregation.
        NumericalError: NaN or inf in gradients or effects.
    """
    t = time.perf_counter()
    effects = graddrop_effects(graddrop_estimates(runs, aggregation, drop_layers))
    return _result(runs, "atp_star", aggregation, effects, {"nodes": time.perf_counter() - t})


@dataclass
class GradDropEstimates:
    """AtP* before its magnitudes: per site, AtP ``base`` ``[d_sae + 1]`` (or ``[pos, d_sae + 1]``) and the
    estimates ``est`` ``[k, ...]`` with each of the ``k`` downstream dropped blocks, all pair means (metric units);
    ``n_up`` dropped blocks upstream of each site; ``n_wanted`` blocks dropped in all. Pair means add up over pair
    batches (:meth:`map`, :meth:`scaled`, :meth:`plus`); the magnitudes of :func:`graddrop_effects` do not, so
    batches combine these first (:mod:`sfc_core.batching`)."""

    base: list[torch.Tensor]
    est: list[torch.Tensor]
    n_up: list[int]
    n_wanted: int

    def map(self, fn) -> "GradDropEstimates":
        """``fn`` applied to every estimate tensor (e.g. padding positions)."""
        return GradDropEstimates([fn(b) for b in self.base], [fn(e) for e in self.est], self.n_up, self.n_wanted)

    def scaled(self, w: float) -> "GradDropEstimates":
        """The estimates × ``w`` (a batch's share of the pairs)."""
        return self.map(lambda t: t * w)

    def plus(self, other: "GradDropEstimates") -> "GradDropEstimates":
        """The sum of two batches' (weighted) estimates."""
        return GradDropEstimates([a + b for a, b in zip(self.base, other.base)],
                                 [a + b for a, b in zip(self.est, other.est)], self.n_up, self.n_wanted)


def graddrop_estimates(runs: PairRuns, aggregation: str = "sum", drop_layers=None) -> GradDropEstimates:
    """The signed pair-mean estimates AtP* is made of (:func:`atp_star` for the method and its source).

    Raises:
        InputError: unknown aggregation.
        NumericalError: NaN or inf in gradients.
    """
    _check_aggregation(aggregation)
    L = runs.model.cfg.n_layers
    wanted = sorted(set(range(L)) if drop_layers is None else {int(b) for b in drop_layers})
    plain, dropped, layers = graddrop_gradients(runs, wanted)
    base, est, n_up = [], [], []
    for i, (g, stack, lay) in enumerate(zip(plain, dropped, layers)):
        b = _site_effects(runs, i, g, aggregation)
        base.append(b)
        est.append(torch.stack([_site_effects(runs, i, s, aggregation) for s in stack]) if len(stack)
                   else b.new_zeros(0, *b.shape))
        n_up.append(len(wanted) - len(lay))  # dropped blocks before the site: estimate = AtP's
    return GradDropEstimates(base, est, n_up, len(wanted))


def graddrop_effects(g: GradDropEstimates) -> list[torch.Tensor]:
    """AtP* effects per site, ``sign(AtP) · (n_up·|AtP| + Σ_ℓ |Î_ℓ|) / L`` (:func:`atp_star`), metric units."""
    if not g.n_wanted:
        return list(g.base)
    effects = []
    for base, est, n_up in zip(g.base, g.est, g.n_up):
        magnitude = (n_up * base.abs() + est.abs().sum(0)) / g.n_wanted
        signed = n_up * base + est.sum(0)
        sign = torch.where(base != 0, base.sign(), signed.sign())
        effects.append(sign * magnitude)
    return effects


# ------------------------------------------------------------------ IG
def _ig_site_gradient(runs: PairRuns, i: int, steps: int) -> torch.Tensor:
    """Mean over α of ``∂m/∂x`` at site ``i`` along ``x_clean + α Δx`` ``[n, pos, d_model]``.

    Upstream of the site stays clean; downstream is recomputed (features and ε there
    follow, as in Marks et al.'s per-submodule IG). Interpolating ``x`` interpolates
    ``f`` and ``ε`` jointly because ``decode`` is affine.
    """
    clean, corr = runs.clean[i].x, runs.corrupted[i].x
    alphas = torch.arange(steps, dtype=clean.dtype) / steps
    total = torch.zeros_like(clean)
    # α values in chunks of ≤ IG_CHUNK_ROWS full-length sequences' worth of positions: the
    # activations kept for the backward pass grow with it (all 10 steps of 20 pairs at once
    # peaked near 9 GB).
    pre = runs.prefix()
    width = clean.shape[1]
    rows = IG_CHUNK_ROWS * width // (width - pre.length) if pre is not None else IG_CHUNK_ROWS
    per = max(1, rows // runs.n)
    for c in range(0, steps, per):
        a = alphas[c:c + per]
        x = (clean[None] + a[:, None, None, None] * (corr - clean)[None]).flatten(0, 1)
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            m = runs.metric_after(x, runs.sites[i].n_blocks_before, reps=len(a)).sum()
            (grad,) = torch.autograd.grad(m, [x])
        total += grad.view(len(a), *clean.shape).sum(0)
    return total / steps


def ig(runs: PairRuns, steps: int = defaults.IG_STEPS, aggregation: str = "sum", progress=None) -> Attribution:
    """Integrated gradients per site with ``steps`` α values (Marks et al. 2024, eq. 3; Sundararajan et al.
    2017), left Riemann sum ``α ∈ {0, 1/N, …, (N−1)/N}``; costs ``steps`` forward + backward passes per site.

    Args:
        progress: optional ``callable(done, total)`` after each site.

    Returns:
        :class:`Attribution` with per-site effects ``[d_sae + 1]`` or ``[pos, d_sae + 1]``, metric units.

    Raises:
        InputError: ``steps < 1`` or unknown aggregation.
        NumericalError: NaN or inf in gradients or effects.
    """
    _check_aggregation(aggregation)
    if steps < 1:
        raise InputError(f"IG needs at least 1 step, not {steps}")
    t = time.perf_counter()
    effects = []
    for i in range(len(runs.sites)):
        grad = check_finite(_ig_site_gradient(runs, i, steps), f"IG gradient at {runs.sites[i].hook_name}")
        effects.append(_site_effects(runs, i, grad, aggregation))
        if progress:
            progress(i + 1, len(runs.sites))
    return _result(runs, "ig", aggregation, effects, {"nodes": time.perf_counter() - t}, steps=steps)


# ------------------------------------------------------------------ exact patching
def _patch_delta(runs: PairRuns, node: Node) -> torch.Tensor:
    """``a_corr − a_clean`` of ``node`` written into the residual stream ``[n, pos, d_model]``."""
    site, col = runs.space.site(node), runs.space.column(node)
    clean, corr = runs.clean[site], runs.corrupted[site]
    if node.is_error:  # column() refused ε at a neuron site
        delta = corr.err - clean.err
    else:
        df = corr.f[..., col] - clean.f[..., col]
        delta = df[..., None] * runs.decoder(site)[col]
    if node.position is not None:
        keep = torch.zeros(delta.shape[1], dtype=delta.dtype)
        keep[node.position] = 1
        delta = delta * keep[None, :, None]
    return delta * runs.mask[..., None]


def exact_effects(runs: PairRuns, nodes: list[Node], chunk_rows: int = 256, progress=None) -> torch.Tensor:
    """Exact IE of each node, ``[len(nodes)]`` (mean over pairs, metric units): ``m(clean | a := a_corr) −
    m(clean)`` (Marks et al. 2024, §2; activation patching).

    Each node is patched alone (all its positions, or its one position) to its corrupted
    value in the clean run; everything downstream is recomputed. Nodes of one site run
    batched, ``chunk_rows`` sequences at a time.

    Raises:
        InputError: a node at a hook point without an SAE, or a latent index out of range.
        NumericalError: NaN or inf in the effects.
    """
    out = torch.zeros(len(nodes), dtype=runs.m_clean.dtype)
    by_site: dict[int, list[int]] = {}
    for j, node in enumerate(nodes):
        by_site.setdefault(runs.space.site(node), []).append(j)
    per = max(1, chunk_rows // runs.n)
    done = 0
    with torch.no_grad():
        for site, idx in sorted(by_site.items()):
            x = runs.clean[site].x
            for c in range(0, len(idx), per):
                chunk = idx[c:c + per]
                patched = torch.cat([x + _patch_delta(runs, nodes[j]) for j in chunk])
                m = runs.metric_after(patched, runs.sites[site].n_blocks_before, reps=len(chunk)).view(len(chunk), runs.n)
                out[chunk] = (m - runs.m_clean[None]).mean(1)
                done += len(chunk)
                if progress:
                    progress(done, len(nodes))
    return check_finite(out, "exact patching effects")


def exact(runs: PairRuns, aggregation: str = "sum", nodes: list[Node] | None = None, progress=None) -> Attribution:
    """Exact activation patching of ``nodes`` (default: every node whose clean and corrupted
    values differ somewhere); the others get effect 0.

    Returns:
        :class:`Attribution` with per-site effects ``[d_sae + 1]`` (or ``[pos, d_sae + 1]``), metric units.

    Raises:
        InputError: unknown aggregation; a given node at a hook point without an SAE or out of range.
        NumericalError: NaN or inf in the effects.
    """
    _check_aggregation(aggregation)
    t = time.perf_counter()
    per_position = aggregation == "none"
    if nodes is None:
        nodes = [n for n in runs.space.all_nodes(per_position) if _patch_delta(runs, n).abs().amax() > 0]
    values = exact_effects(runs, nodes, progress=progress)
    effects = runs.space.scatter(nodes, values.tolist(), per_position, dtype=values.dtype)
    return _result(runs, "exact", aggregation, effects, {"nodes": time.perf_counter() - t})


def attribute(runs: PairRuns, method: str = "atp", aggregation: str = "sum", steps: int = defaults.IG_STEPS,
              progress=None) -> Attribution:
    """Node effects by a registered attribution method (``atp`` | ``atp_star`` | ``ig`` | ``exact``,
    :mod:`sfc_core.methods`).

    Returns:
        :class:`Attribution` with per-site effects ``[d_sae + 1]`` or ``[pos, d_sae + 1]``, metric units.

    Raises:
        InputError: unknown method or aggregation, or ``steps < 1`` for IG.
        NumericalError: NaN or inf in gradients or effects.
    """
    from .methods import get

    return get(method, kind="attribution").run(runs, aggregation, steps, progress)
