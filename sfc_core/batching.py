"""Prompt pairs in batches: attribution, edges and circuit scores over any number of pairs in bounded memory.

Every figure the engine reports is a mean over pairs of a per-pair quantity (node and edge IEs, Marks et al. 2024
eq. 2-5; the metric under ablation, §4), and one pair's value never depends on the other pairs of its batch: a
right-padded row sees only its own tokens under causal attention. So the pairs can run in batches whose results
are combined as pair-weighted means, equal to the one-batch result up to float32 summation order (tested to 1e-5).
The only cross-pair quantity, the mean-ablation value (mean over the corrupted prompts, per template position), is
accumulated over every batch first (:func:`ablation_values_pairs`) and then shared by all of them.

Memory: one batch holds its clean/corrupted site records and one backward graph through the model, both linear in
its pairs × tokens; :func:`pair_batch_size` sizes batches so that this fits ``defaults.MEMORY_BUDGET_GB`` next to
the model and SAEs, so peak memory no longer grows with the number of pairs (``bench/bench_memory.py``).
"""

from __future__ import annotations

import math
import time
from functools import cached_property

import torch

from . import bounds, defaults
from . import methods as registry
from .ablation import AblationValues, check_ablation, circuit_metric, position_means
from .alignment import template_groups
from .attribution import (Attribution, PairRuns, _activations, _check_aggregation, attribute, exact_effects,
                          prepare_runs)
from .errors import InputError
from .metrics import get_metric
from .nodes import NodeSpace, unit_kind
from .splice import check_finite, make_sites

#: Bytes of working memory per token of one pair batch, per unit of ``n_layers × d_model`` (the backward graph
#: through every block: attention and MLP intermediates, float32), measured on the bundled model
#: (``bench/bench_memory.py --pair-batch -1``: AtP on 20 and 64 IOI pairs of 17 tokens peaked at 2.46 and
#: 4.46 GB, 45 MB per pair).
BYTES_PER_TOKEN_LAYER_DIM = 160


def _param_bytes(module) -> int:
    """Bytes of ``module``'s parameters; 0 for a dictionary that owns none (neurons: the model's own weights)."""
    params = getattr(module, "parameters", None)
    return sum(p.numel() * p.element_size() for p in params()) if params is not None else 0


def pair_batch_size(model, saes: dict, tokens_per_pair: int, budget_gb: float | None = None) -> int:
    """Pairs per batch so that one batch's working memory plus the model and SAEs fits ``budget_gb``.

    Per pair: ``tokens_per_pair`` × (the backward graph, ``BYTES_PER_TOKEN_LAYER_DIM · n_layers · d_model``, plus
    clean and corrupted site records ``2 · 4 B · Σ (2 d_model + d_sae)``).

    Args:
        tokens_per_pair: the batch's padded prompt length ``pos``.
        budget_gb: peak memory to stay under, in GB (default ``defaults.MEMORY_BUDGET_GB``).

    Returns:
        At least 1, at most :data:`~sfc_core.bounds.BOUNDS` ``"pair_batch"``.

    Raises:
        InputError: a budget outside 0.25-1024 GB.
    """
    budget = bounds.check("memory_gb", defaults.MEMORY_BUDGET_GB if budget_gb is None else budget_gb,
                          "memory budget (GB)")
    fixed = _param_bytes(model) + sum(_param_bytes(getattr(s, "sae", s)) for s in saes.values())
    fixed += defaults.PROCESS_BASE_GB * 1e9  # torch, the tokenizer and the interpreter
    cfg = model.cfg
    widths = sum(2 * cfg.d_model + int(getattr(s, "sae", s).cfg.d_sae) for s in saes.values())
    per_token = BYTES_PER_TOKEN_LAYER_DIM * cfg.n_layers * cfg.d_model + 2 * 4 * widths
    free = budget * 1e9 - fixed
    size = int(free // (per_token * max(tokens_per_pair, 1)))
    return int(min(max(size, 1), bounds.BOUNDS["pair_batch"].hi))


def batch_slices(n: int, size: int) -> list[slice]:
    """Consecutive slices of ``range(n)`` of at most ``size`` rows, sized evenly (``[0:34], [34:67], [67:100]``
    rather than ``[0:50], [50:100], [100:100]``)."""
    k = max(1, math.ceil(n / max(size, 1)))
    edges = [round(i * n / k) for i in range(k + 1)]
    return [slice(a, b) for a, b in zip(edges, edges[1:]) if b > a]


def _pad_positions(t: torch.Tensor, width: int) -> torch.Tensor:
    """A per-position tensor ``[..., pos', k]`` zero-padded to ``[..., width, k]`` (padding carries no effect)."""
    short = width - t.shape[-2]
    return t if short == 0 else torch.cat([t, t.new_zeros(*t.shape[:-2], short, t.shape[-1])], dim=-2)


def _size_for(model, saes, batch, pair_batch: int | None, memory_gb: float | None = None) -> int:
    """Pairs per batch: ``pair_batch`` once checked, else :func:`pair_batch_size` for ``memory_gb``."""
    if pair_batch is None:
        return pair_batch_size(model, saes, batch.pos, memory_gb)
    return bounds.check("pair_batch", pair_batch, "pairs per batch")


def _resolve(model, saes, batch, pair_batch: int | None) -> list[slice]:
    return batch_slices(batch.n, _size_for(model, saes, batch, pair_batch))


def attribute_pairs(model, saes: dict, batch, method: str = "atp", aggregation: str = "sum",
                    steps: int = defaults.IG_STEPS, metric: str = "logit_diff", pair_batch: int | None = None,
                    progress=None) -> Attribution:
    """Node effects of a registered attribution method (``atp``, ``atp_star``, ``ig``, ``exact``) over every pair
    of ``batch``, run in pair batches: the same :class:`~sfc_core.attribution.Attribution` as
    ``attribute(prepare_runs(model, saes, batch, metric), ...)`` (Marks et al. 2024, eq. 2-3), in bounded memory.

    Args:
        batch: a :class:`~sfc_core.pairs.PairBatch` (tokens ``[n, pos]``).
        pair_batch: pairs per batch (default: :func:`pair_batch_size` for the memory budget).
        progress: optional ``callable(done, total)`` over pairs.

    Returns:
        Effects and activations ``[d_sae + 1]`` (or ``[pos, d_sae + 1]``) per site: pair-weighted means of the
        batches' (metric units); ``m_clean`` / ``m_corrupted`` likewise; ``timings_s`` sums the batches' stages
        and records ``"pair_batch"`` (pairs per batch) and ``"batches"``.

    Raises:
        InputError: unknown method, aggregation or metric; a bad ``pair_batch``; bad SAEs for the model.
        NumericalError: NaN or inf in activations, gradients or effects.
    """
    spec = registry.get(method, kind="attribution")
    _check_aggregation(aggregation)
    slices = _resolve(model, saes, batch, pair_batch)
    fit = (lambda x: _pad_positions(x, batch.pos)) if aggregation == "none" else (lambda x: x)
    means = activations = None
    m_clean = m_corr = 0.0
    timings: dict[str, float] = {}
    for sl in slices:
        t = time.perf_counter()
        runs = prepare_runs(model, saes, batch.subset(sl), metric)
        timings["runs"] = timings.get("runs", 0.0) + time.perf_counter() - t
        t = time.perf_counter()
        w = runs.n / batch.n
        if spec.pair_means is None:
            a = attribute(runs, method, aggregation, steps)
            part = _Tensors(a.effects).map(fit)
            steps_used = a.steps
        else:
            part = spec.pair_means[0](runs, aggregation, steps).map(fit)
            steps_used = None
        act = [fit(x) * w for x in _activations(runs, aggregation)]
        means = part.scaled(w) if means is None else means.plus(part.scaled(w))
        activations = act if activations is None else [s + x for s, x in zip(activations, act)]
        m_clean += runs.m_clean.mean().item() * w
        m_corr += runs.m_corrupted.mean().item() * w
        timings["nodes"] = timings.get("nodes", 0.0) + time.perf_counter() - t
        space = runs.space
        del runs
        if progress is not None:
            progress(sl.stop, batch.n)
    effects = list(means) if spec.pair_means is None else spec.pair_means[1](means)
    for e, h in zip(effects, space.hook_names):
        check_finite(e, f"{method} effects at {h}")
    timings.update(pair_batch=max(s.stop - s.start for s in slices), batches=len(slices))
    return Attribution(method, metric, aggregation, list(space.hook_names), list(space.d_sae),
                       [e.detach() for e in effects], activations, batch.n, m_clean, m_corr, timings, steps_used,
                       list(space.units))


class _Tensors(list):
    """Pair means that are a list of tensors (plain effects), with the ``scaled`` / ``plus`` of
    :attr:`~sfc_core.methods.Method.pair_means`."""

    def map(self, fn) -> "_Tensors":
        return _Tensors(fn(t) for t in self)

    def scaled(self, w: float) -> "_Tensors":
        return self.map(lambda t: t * w)

    def plus(self, other: "_Tensors") -> "_Tensors":
        return _Tensors(a + b for a, b in zip(self, other))


# ------------------------------------------------------------------ mean-ablation values over every pair
def ablation_values_pairs(model, saes: dict, batch, kind: str = "mean", pair_batch: int | None = None,
                          metric: str = "logit_diff") -> dict:
    """The values ablated nodes take, accumulated over every pair batch (what
    :func:`~sfc_core.ablation.ablation_values` computes from one batch), for :func:`score_circuits_pairs`.

    Returns:
        ``{"kind", "groups": {template key: (sum f [pos, d_sae] per site, sum ε [pos, d_model] per site,
        tokens [pos, 1])}}`` of the corrupted prompts' real non-BOS tokens, or ``{"kind"}`` for ``zero`` and
        ``patch`` (nothing shared across pairs).

    Raises:
        InputError: unknown ablation kind.
    """
    kind = check_ablation(kind)
    out: dict = {"kind": kind, "groups": {}}
    if kind in ("zero", "patch"):
        return out
    for sl in _resolve(model, saes, batch, pair_batch):
        sub = batch.subset(sl)
        runs = prepare_runs(model, saes, sub, metric)
        group, keys = template_groups(sub)
        if kind == "mean_all":
            group, keys = torch.zeros_like(group), ["all"]
        m = runs.mask[..., None].to(runs.corrupted[0].f.dtype)
        for g, key in enumerate(keys):
            rows = torch.nonzero(group == g).flatten()
            mm = _pad_positions(m[rows].sum(0), batch.pos)
            fs = [_pad_positions((r.f[rows] * m[rows]).sum(0), batch.pos) for r in runs.corrupted]
            es = [_pad_positions((r.err[rows] * m[rows]).sum(0), batch.pos) for r in runs.corrupted]
            if key in out["groups"]:
                f0, e0, m0 = out["groups"][key]
                fs, es, mm = [a + b for a, b in zip(f0, fs)], [a + b for a, b in zip(e0, es)], m0 + mm
            out["groups"][key] = (fs, es, mm)
    return out


def _batch_values(acc: dict, runs: PairRuns) -> AblationValues:
    """The ablation values of one batch's rows, from the accumulated sums of :func:`ablation_values_pairs`."""
    kind = acc["kind"]
    if kind == "patch":
        return AblationValues(kind, [r.f for r in runs.corrupted], [r.err for r in runs.corrupted])
    if kind == "zero":
        return AblationValues(kind, [torch.zeros(r.f.shape[-1], dtype=r.f.dtype) for r in runs.corrupted],
                              [torch.zeros(r.err.shape[-1], dtype=r.err.dtype) for r in runs.corrupted])
    width = runs.batch.pos

    def means(key):
        fs, es, mm = acc["groups"][key]
        if kind == "mean_all":
            total = mm.sum()
            return [f.sum(0) / total for f in fs], [e.sum(0) / total for e in es]
        return [[position_means(s[:width], mm[:width], s.sum(0) / mm.sum()) for s in sums] for sums in (fs, es)]

    if kind == "mean_all" or len(acc["groups"]) == 1:
        f, e = means(next(iter(acc["groups"])))
        return AblationValues(kind, f, e)
    group, keys = template_groups(runs.batch)
    per_key = {key: means(key) for key in keys}
    fs = [torch.empty_like(r.f) for r in runs.corrupted]
    es = [torch.empty_like(r.err) for r in runs.corrupted]
    for g, key in enumerate(keys):
        rows = torch.nonzero(group == g).flatten()
        for i in range(len(fs)):
            fs[i][rows] = per_key[key][0][i]
            es[i][rows] = per_key[key][1][i]
    return AblationValues(kind, fs, es)


def circuit_metric_pairs(model, saes: dict, batch, keeps: list[list[torch.Tensor]], ablation: str = "mean",
                         metric: str = "logit_diff", pair_batch: int | None = None) -> torch.Tensor:
    """Mean metric over every pair ``[R]`` with each of ``R`` keep masks applied (everything outside ablated):
    :func:`~sfc_core.ablation.circuit_metric` over pair batches, ablation values from every pair
    (:meth:`PairStream.ablated_metric`).

    Args:
        keeps: ``R`` lists of per-site keep masks ``[d_sae + 1]`` (or ``[pos, d_sae + 1]`` at ``batch.pos``), bool.

    Returns:
        ``[R]`` float64, metric units.

    Raises:
        InputError: unknown ablation kind; position-resolved masks of another width than ``batch.pos``.
    """
    return PairStream(model, saes, batch, metric, pair_batch).ablated_metric(ablation)(keeps)


class PairStream:
    """The clean and corrupted runs of a :class:`~sfc_core.pairs.PairBatch` too large for one batch, run in pair
    batches on demand: what :class:`~sfc_core.attribution.PairRuns` offers the evaluation
    (:meth:`ablated_metric`, :meth:`active_units`, ``space``, ``batch``, ``model``, ``metric``), plus the
    pair-batched attribution, edges and exact patching. Each call re-runs the batches (a forward pass each);
    nothing but per-site sums is kept between them, so memory stays that of one batch.

    Args:
        saes: ``{hook_name: LoadedSAE | SAE}``.
        batch: the pairs (tokens ``[n, pos]``).
        pair_batch: pairs per batch (default: :func:`pair_batch_size` for the memory budget).

    Raises:
        InputError: a bad ``pair_batch``; bad SAEs for the model (:func:`~sfc_core.splice.make_sites`).
    """

    def __init__(self, model, saes: dict, batch, metric: str = "logit_diff", pair_batch: int | None = None):
        get_metric(metric)
        self.model, self.saes, self.batch, self.metric = model, saes, batch, metric
        self.sites = make_sites(model, saes)
        self.slices = _resolve(model, saes, batch, pair_batch)
        self._ablation: dict[str, dict] = {}
        self._head: PairRuns | None = None
        self._active: list[torch.Tensor] | None = None

    @property
    def n(self) -> int:
        """Number of pairs ``n``."""
        return self.batch.n

    @cached_property
    def space(self) -> NodeSpace:
        """The sites' :class:`~sfc_core.nodes.NodeSpace` (positions: the whole batch's width)."""
        units = tuple(getattr(s.sae, "unit_kind", None) or unit_kind(s.hook_name) for s in self.sites)
        return NodeSpace(tuple(s.hook_name for s in self.sites), tuple(s.d_sae for s in self.sites),
                         int(self.batch.pos), units)

    def head(self) -> PairRuns:
        """The :class:`~sfc_core.attribution.PairRuns` of the first pair batch (cached): for per-pair views that show
        some pairs (the feature panel's ablation table), never for a figure said to be over every pair."""
        if self._head is None:
            self._head = prepare_runs(self.model, self.saes, self.batch.subset(self.slices[0]), self.metric)
        return self._head

    def runs(self):
        """``(weight, PairRuns)`` of each pair batch in turn, ``weight`` its share of the pairs."""
        for sl in self.slices:
            runs = prepare_runs(self.model, self.saes, self.batch.subset(sl), self.metric)
            yield runs.n / self.batch.n, runs

    def attribute(self, method: str = "atp", aggregation: str = "sum", steps: int = defaults.IG_STEPS,
                  progress=None) -> Attribution:
        """:func:`attribute_pairs` over these batches."""
        return attribute_pairs(self.model, self.saes, self.batch, method, aggregation, steps, self.metric,
                               self._size(), progress)

    def _size(self) -> int:
        return max(s.stop - s.start for s in self.slices)

    def ablated_metric(self, ablation: str = "mean"):
        """``keeps -> [R]`` float64 (as :meth:`~sfc_core.attribution.PairRuns.ablated_metric`): the ablation values
        are accumulated over every batch once per kind, then each call runs every batch.

        Raises:
            InputError: unknown ablation kind; position-resolved masks of another width than ``batch.pos``.
        """
        kind = check_ablation(ablation)
        if kind not in self._ablation:
            self._ablation[kind] = ablation_values_pairs(self.model, self.saes, self.batch, kind, self._size(),
                                                         self.metric)
        acc = self._ablation[kind]

        def ablated(keeps):
            if any(k.dim() == 2 and k.shape[0] != self.batch.pos for keep in keeps for k in keep):
                raise InputError("position-resolved keep masks must span the batch's positions")
            total = torch.zeros(len(keeps), dtype=torch.float64)
            for w, runs in self.runs():
                width = runs.batch.pos
                cut = [[k[:width] if k.dim() == 2 else k for k in keep] for keep in keeps]
                total += circuit_metric(runs, cut, _batch_values(acc, runs)).double() * w
            return total

        return ablated

    def active_units(self) -> list[torch.Tensor]:
        """Per site ``[pos, d_sae]`` bool over every batch (:meth:`~sfc_core.attribution.PairRuns.active_units`),
        computed once: a faithfulness curve draws random circuits from it for every size and seed."""
        if self._active is None:
            for _, runs in self.runs():
                part = [_pad_positions(a, self.batch.pos) for a in runs.active_units()]
                self._active = part if self._active is None else [a | b for a, b in zip(self._active, part)]
        return self._active

    def edge_effects(self, nodes, node_effects=None, progress=None) -> tuple[dict, dict]:
        """:func:`~sfc_core.edges.edge_effects` as pair-weighted means over the batches (edges are means over
        pairs, Marks et al. 2024 eq. 5); timings in seconds summed.

        Raises:
            InputError / NumericalError: as :func:`~sfc_core.edges.edge_effects`.
        """
        from .edges import edge_effects

        total: dict = {}
        timings: dict[str, float] = {}
        for k, (w, runs) in enumerate(self.runs()):
            edges, t = edge_effects(runs, nodes, node_effects)
            for e, v in edges.items():
                total[e] = total.get(e, 0.0) + v * w
            for key, v in t.items():
                timings[key] = timings.get(key, 0.0) + v
            if progress is not None:
                progress(k + 1, len(self.slices))
        return total, timings

    def exact_effects(self, nodes, progress=None) -> torch.Tensor:
        """:func:`~sfc_core.attribution.exact_effects` ``[len(nodes)]`` as a pair-weighted mean over the batches.

        Raises:
            InputError / NumericalError: as :func:`~sfc_core.attribution.exact_effects`.
        """
        total = None
        for k, (w, runs) in enumerate(self.runs()):
            part = exact_effects(runs, nodes) * w
            total = part if total is None else total + part
            if progress is not None:
                progress(k + 1, len(self.slices))
        return total


def open_runs(model, saes: dict, batch, metric: str = "logit_diff", pair_batch: int | None = None,
              memory_gb: float | None = None):
    """The runs of ``batch``: one :class:`~sfc_core.attribution.PairRuns` when every pair fits one batch
    (``pair_batch`` pairs, default :func:`pair_batch_size` for ``memory_gb``), else a :class:`PairStream`.

    Raises:
        InputError: a bad ``pair_batch`` or ``memory_gb``; as :func:`~sfc_core.attribution.prepare_runs`.
        IncompatibleSAEError / NumericalError: as :func:`~sfc_core.attribution.prepare_runs`.
    """
    size = _size_for(model, saes, batch, pair_batch, memory_gb)
    if batch.n <= size:
        return prepare_runs(model, saes, batch, metric)
    return PairStream(model, saes, batch, metric, size)


def _too_many(what: str, n: int, pos: int, size: int) -> InputError:
    return InputError(f"{what} runs every pair in one batch, and {n} pairs of {pos} tokens do not fit the "
                      f"{defaults.MEMORY_BUDGET_GB:g} GB memory budget (at most {size} do): use fewer pairs, or an "
                      "attribution method (atp, atp_star, ig, exact), which runs them in batches")


def one_batch(runs, what: str):
    """``runs`` itself when it is one :class:`~sfc_core.attribution.PairRuns`.

    Raises:
        InputError: a :class:`PairStream`: ``what`` (e.g. mask optimisation) needs every pair in one batch, and they
            do not fit the memory budget; the message gives the numbers and the fix.
    """
    if isinstance(runs, PairStream):
        raise _too_many(what, runs.n, runs.batch.pos, runs._size())
    return runs


def check_one_batch(model, saes: dict, batch, what: str) -> None:
    """Before any run: ``what`` needs every pair of ``batch`` in one batch; refuse when they do not fit the budget.

    Raises:
        InputError: more pairs than :func:`pair_batch_size` (the numbers and the fix in the message).
    """
    size = _size_for(model, saes, batch, None)
    if batch.n > size:
        raise _too_many(what, batch.n, batch.pos, size)
