"""The method registry: every circuit-discovery method, registered once.

A :class:`Method` is either

* ``"attribution"``: scores every node with an indirect effect (AtP, AtP*, IG, exact patching); the circuit is
  then chosen by threshold / top-k over those effects (:meth:`~sfc_core.discovery.Discovery.select`); or
* ``"selection"``: chooses its own circuit (mask optimisation, FAP, FAP-Synergy); its graph keeps that
  choice and shows AtP effects for colour.

The CLI (``--method`` help and checks), the app (labels, cost hints), :func:`sfc_core.discovery.discover`
and :func:`sfc_core.compare.compare_methods` read this table only; adding a method is one
:func:`register` call here with its functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import defaults
from .errors import InputError


@dataclass(frozen=True)
class Method:
    """One discovery method.

    Attributes:
        name: CLI / file name (``"atp"``).
        label: one-line display name with its cost (``"AtP — attribution patching (fast)"``).
        kind: ``"attribution"`` or ``"selection"`` (module doc).
        cost: ``"fast"`` (one backward pass), ``"medium"`` (tens of passes) or ``"slow"`` (one pass per node
            or per optimisation step).
        source: the paper / equation the method follows.
        run: attribution methods: ``run(runs, aggregation, steps, progress) -> Attribution``; selection methods:
            ``run(runs, cfg, progress) -> list[Node]`` with ``cfg`` a :class:`~sfc_core.discovery.DiscoverConfig`.
        compare: ``compare(runs, sizes, ctx) -> (latent sets, extra report fields)`` for
            :func:`~sfc_core.compare.compare_methods`, or ``None`` if the method is not compared there.
        options: the :class:`~sfc_core.discovery.DiscoverConfig` fields the method reads (checked and shown
            only for it), e.g. ``("budget",)``.
        clean_gradient: the method ranks by the metric's gradient at the clean run (AtP, FAP): refused for a
            metric whose gradient is zero there (:data:`sfc_core.metrics.ZERO_GRADIENT_AT_CLEAN`).
        frontier: the method's own circuit sizes are what it finds (a λ sweep), so it runs first in a
            comparison and the other methods are also scored at its sizes.
        passes: ``passes(cfg, n_sites) -> float``: the method's cost in forward+backward passes over the pairs
            (measured on 20 IOI pairs, README's benchmark tables), for :func:`estimate_seconds`.
        pair_means: attribution methods whose effects are *not* a mean over pairs of per-pair values (AtP*'s
            magnitudes): ``(partial(runs, aggregation, steps) -> pair means, finish(pair means) -> effects)``
            for running in pair batches (:mod:`sfc_core.batching`); the pair means support ``map(fn)`` (over
            their ``[..., pos, k]`` tensors), ``scaled(w)`` and ``plus(other)``. ``None``: the effects themselves
            are pair means.
    """

    name: str
    label: str
    kind: str
    cost: str
    source: str
    run: Callable
    compare: Callable | None = None
    frontier: bool = False
    options: tuple[str, ...] = ()
    clean_gradient: bool = False
    passes: Callable = lambda cfg, n_sites: 1.0
    pair_means: tuple[Callable, Callable] | None = None


#: What every discovery adds to its method: the clean and corrupted spliced runs and the edges among the app's
#: edge pool, in forward+backward passes (the default AtP circuit of 8 IOI pairs: 5.4 s, ≈ 11 passes in all).
DISCOVERY_PASSES = 10.0
#: Latents per SAE site that exact patching patches one by one (≈ 480 active on 20 IOI pairs: 3,364 over 7 sites).
EXACT_NODES_PER_SITE = 480


def estimate_seconds(cfg, n_tokens: int, n_sites: int) -> float:
    """Rough run time in seconds of :func:`~sfc_core.discovery.discover` with ``cfg`` on pairs of ``n_tokens``
    clean + corrupted tokens and ``n_sites`` SAEs, on this project's CPU (:data:`~sfc_core.defaults.
    FWD_BWD_TOKENS_PER_S`): (:data:`DISCOVERY_PASSES` + the method's ``passes``) × one forward+backward pass.
    An estimate to warn before long runs, within about a factor of two; the progress bar's ETA is measured.

    Raises:
        InputError: unknown method.
    """
    method = get(cfg.method)
    return (DISCOVERY_PASSES + method.passes(cfg, n_sites)) * n_tokens / defaults.FWD_BWD_TOKENS_PER_S


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add a method to the registry and return it (names are unique: registering a name again replaces it).

    Raises:
        ValueError: ``kind`` is neither ``"attribution"`` nor ``"selection"`` (a programming error, not
            user input, hence no :class:`~sfc_core.errors.SFCError`).
    """
    if method.kind not in ("attribution", "selection"):
        raise ValueError(f"method kind must be attribution or selection, not {method.kind!r}")
    METHODS[method.name] = method
    return method


def names(kind: str | None = None, comparable: bool = False) -> tuple[str, ...]:
    """Registered method names in registration order, optionally only one ``kind`` / those ``compare`` runs."""
    return tuple(m.name for m in METHODS.values()
                 if (kind is None or m.kind == kind) and (not comparable or m.compare is not None))


def get(name: str, kind: str | None = None) -> Method:
    """The method registered as ``name``.

    Raises:
        InputError: unknown name (or not of ``kind``); the message lists the choices.
    """
    m = METHODS.get(name)
    if m is None or (kind is not None and m.kind != kind):
        raise InputError(f"unknown method '{name}'; choose one of {', '.join(names(kind))}")
    return m


def label(name: str) -> str:
    """Display label of a method (the name itself if unknown)."""
    m = METHODS.get(name)
    return m.label if m is not None else str(name)


# ------------------------------------------------------------------ attribution methods
def _atp(runs, aggregation="sum", steps=defaults.IG_STEPS, progress=None):
    from .attribution import atp

    return atp(runs, aggregation)


def _atp_star(runs, aggregation="sum", steps=defaults.IG_STEPS, progress=None):
    from .attribution import atp_star

    return atp_star(runs, aggregation)


def _graddrop_pair_means(runs, aggregation="sum", steps=defaults.IG_STEPS):
    from .attribution import graddrop_estimates

    return graddrop_estimates(runs, aggregation)


def _graddrop_finish(estimates):
    from .attribution import graddrop_effects

    return graddrop_effects(estimates)


def _ig(runs, aggregation="sum", steps=defaults.IG_STEPS, progress=None):
    from .attribution import ig

    return ig(runs, steps, aggregation, progress)


def _exact(runs, aggregation="sum", steps=defaults.IG_STEPS, progress=None):
    from .attribution import exact

    return exact(runs, aggregation, progress=progress)


def _compare_by_effect(method: str):
    def compare(runs, sizes, ctx):
        ranked = runs.space.ranked(METHODS[method].run(runs).effects, kind="latent")
        return [ranked[:n] for n in sizes], {}
    return compare


# ------------------------------------------------------------------ selection methods
def _select_mask(runs, cfg, progress=None):
    from .masks import MaskConfig, train_mask

    mask_cfg = MaskConfig(lam=cfg.mask_lambda, steps=cfg.mask_steps, t_max=cfg.mask_t_max,
                          per_position=cfg.aggregation == "none")
    result = train_mask(runs, mask_cfg, progress=(lambda s, n, loss: progress(s, n)) if progress else None)
    return result.nodes(runs)


def _select_fap(runs, cfg, progress=None):
    from .fap import fap_select

    return fap_select(runs, cfg.budget).nodes


def _select_fap_synergy(runs, cfg, progress=None):
    from .fap import fap_synergy_select

    return fap_synergy_select(runs, cfg.budget, synergy_pool=cfg.synergy_pool).nodes


def _fap_scores(runs, ctx):
    from .fap import fap_scores

    if ctx.get("fap_scores") is None:
        ctx["fap_scores"] = fap_scores(runs)
    return ctx["fap_scores"]


def _compare_fap(runs, sizes, ctx):
    from .fap import ranked_latents

    ranked = ranked_latents(runs, _fap_scores(runs, ctx))
    return [ranked[:n] for n in sizes], {}


def _compare_fap_synergy(runs, sizes, ctx):
    from .fap import fap_synergy_select, ranked_latents

    scores = _fap_scores(runs, ctx)
    n_cand = min(len(ranked_latents(runs, scores)), defaults.FAP_CANDIDATES)
    # one greedy run per budget: the synergy pool sits at each budget's boundary
    sels = [fap_synergy_select(runs, min(n, n_cand), synergy_pool=ctx.get("synergy_pool", defaults.FAP_SYNERGY_POOL),
                               scores=scores) for n in ctx.get("requested", sizes)]
    return [s.nodes for s in sels], {"budgets": [len(s.nodes) for s in sels],
                                     "selection_seconds": [round(s.seconds, 2) for s in sels]}


def _compare_mask(runs, sizes, ctx):
    from .masks import MaskConfig, lambda_sweep, nesting

    lambdas = sorted(ctx.get("lambdas") or defaults.MASK_LAMBDAS)
    results = lambda_sweep(runs, lambdas, ctx.get("mask_cfg") or MaskConfig())
    sets = [[n for n in r.nodes(runs) if not n.is_error] for r in results]
    return sets, {"lambdas": lambdas, "nesting": nesting(results, runs),
                  "empty_masks": [lam for lam, s in zip(lambdas, sets) if not s],
                  "train_seconds": [round(r.seconds, 2) for r in results]}


register(Method("atp", "AtP — attribution patching (fast)", "attribution", "fast",
                "Marks et al. 2024, eq. 2 (Nanda 2023; Syed et al. 2023)", _atp, _compare_by_effect("atp"),
                clean_gradient=True, passes=lambda cfg, n_sites: 1.0))
register(Method("atp_star", "AtP* — attribution patching with GradDrop", "attribution", "medium",
                "Kramár et al. 2024, AtP*: GradDrop (QK fix n/a to residual SAE nodes)", _atp_star,
                _compare_by_effect("atp_star"), clean_gradient=True, passes=lambda cfg, n_sites: 3.0,
                pair_means=(_graddrop_pair_means, _graddrop_finish)))
register(Method("ig", "IG — integrated gradients", "attribution", "medium",
                "Marks et al. 2024, eq. 3 (Sundararajan et al. 2017)", _ig, _compare_by_effect("ig"),
                options=("steps",), passes=lambda cfg, n_sites: 1.6 * cfg.steps))
register(Method("exact", "exact patching (slow: one run per node)", "attribution", "slow",
                "activation patching (Vig et al. 2020; Meng et al. 2022)", _exact,
                passes=lambda cfg, n_sites: 0.15 * EXACT_NODES_PER_SITE * n_sites))
register(Method("mask", "mask — binary mask optimisation (slow)", "selection", "slow",
                "Nainani et al., continuous sparsification (Savarese et al. 2020)", _select_mask, _compare_mask,
                frontier=True, options=("mask_lambda", "mask_steps", "mask_t_max"),
                passes=lambda cfg, n_sites: 1.0 + 1.2 * cfg.mask_steps))
register(Method("fap", "FAP — gradient × activation, top-K", "selection", "fast", "PIE (FAP score)",
                _select_fap, _compare_fap, options=("budget",), clean_gradient=True,
                passes=lambda cfg, n_sites: 1.0))
register(Method("fap-synergy", "FAP-Synergy — greedy with synergy", "selection", "slow",
                "PIE (FAP-Synergy greedy selection)", _select_fap_synergy, _compare_fap_synergy,
                options=("budget", "synergy_pool"), clean_gradient=True,
                passes=lambda cfg, n_sites: 1.0 + 0.31 * cfg.synergy_pool * (cfg.synergy_pool - 1) / 2))
