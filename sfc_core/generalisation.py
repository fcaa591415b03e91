"""Does a circuit hold elsewhere? Held-out pairs of a built-in task, and a circuit's faithfulness on them next to
its in-sample faithfulness.

A circuit found on one set of prompt pairs is a claim about the task, not about those pairs. Marks et al. (2024)
and the circuit-analysis methodology check such claims by perturbation: here, by scoring the same node set on
pairs the discovery never saw. :func:`heldout_split` draws an in-sample and a held-out set of a built-in task
(:mod:`sfc_core.tasks`) that differ in one controlled way:

* ``"names"`` — disjoint answer words: a pair goes to one side when both its answer and its wrong answer hash
  to that side (IOI: the held-out pairs use other names; SVA: other verbs, e.g. " has" / " have" against
  " is" / " are"). Refused for tasks with fewer than four answer words (nothing to hold out).
* ``"templates"`` — disjoint template ids (even ids in-sample, odd held out). Refused for tasks of one template,
  and, in :func:`heldout_scores`, for position-resolved circuits (positions mean nothing across templates).
* ``"seed"`` — fresh draws of the same generator (another seed), identical pairs removed: other fillers, the same
  distribution.

:func:`heldout_scores` then scores a circuit on both sets with the same ablation (means over each set's own
corrupted prompts): faithfulness and completeness in-sample and held-out, as
:func:`sfc_core.discovery.evaluate` computes them.
"""

from __future__ import annotations

import zlib

import networkx as nx

from .errors import InputError
from .pairs import PromptPair

#: The ways a held-out set can differ from the in-sample set.
HELDOUT_BY = ("names", "templates", "seed")
#: Pool of draws per pair wanted (a side keeps about a quarter of the draws under ``"names"``).
_POOL_FACTOR = 8


def _side(word: str) -> int:
    """0 or 1: a stable hash of a word (whitespace stripped), the same on every machine and run."""
    return zlib.crc32(word.strip().encode("utf-8")) & 1


def _names_side(pair: PromptPair) -> int | None:
    a, b = _side(pair.answer), _side(pair.wrong_answer)
    return a if a == b else None


def _template_side(pair: PromptPair) -> int | None:
    t = pair.meta.get("template")
    return None if t is None else int(t) % 2 if isinstance(t, int) else _side(str(t))


def heldout_split(model, task: str, n: int, by: str = "names", seed: int = 0) -> tuple[list[PromptPair], list[PromptPair]]:
    """``n`` in-sample and ``n`` held-out pairs of the built-in task ``task`` that differ as ``by`` says (module
    doc). Deterministic in ``(tokenizer, task, n, by, seed)``.

    Raises:
        InputError: unknown ``by`` or task; a split the task cannot make (one template; the same answers for
            every pair); too few pairs on a side.
    """
    from .tasks import get_task_pairs

    if by not in HELDOUT_BY:
        raise InputError(f"held-out split must be one of {', '.join(HELDOUT_BY)}, not {by!r}")
    if not isinstance(n, int) or n < 1:
        raise InputError(f"the number of pairs must be a positive integer, got {n!r}")
    if by == "seed":
        inside = get_task_pairs(model, task, n, seed)
        seen = {(p.clean, p.corrupted) for p in inside}
        fresh = [p for p in get_task_pairs(model, task, 2 * n, seed + 1) if (p.clean, p.corrupted) not in seen]
        return inside, _enough(fresh, n, task, by)
    pool = get_task_pairs(model, task, n * _POOL_FACTOR, seed)
    side = _names_side if by == "names" else _template_side
    if by == "names" and len({p.answer for p in pool} | {p.wrong_answer for p in pool}) < 4:
        raise InputError(f"task '{task}' uses fewer than four answer words "
                         f"({', '.join(sorted({repr(p.answer) for p in pool})[:4])}): hold out templates or a "
                         "fresh seed instead")
    if by == "templates" and len({p.meta.get("template") for p in pool}) < 2:
        raise InputError(f"task '{task}' has one template: hold out names or a fresh seed instead")
    sides = [[p for p in pool if side(p) == s] for s in (0, 1)]
    return _enough(sides[0], n, task, by), _enough(sides[1], n, task, by)


def _enough(pairs: list[PromptPair], n: int, task: str, by: str) -> list[PromptPair]:
    if len(pairs) < n:
        raise InputError(f"task '{task}' gave only {len(pairs)} pairs on one side of a split by {by} "
                         f"(asked for {n}); ask for fewer pairs")
    return pairs[:n]


def heldout_for(model, task: str, inside: list[PromptPair], n: int, by: str = "names", seed: int = 1) -> list[PromptPair]:
    """``n`` pairs of the built-in task ``task`` held out from the given in-sample pairs ``inside`` (e.g. those a
    saved circuit was found on): no answer word of theirs (``"names"``), no template id of theirs
    (``"templates"``), or simply not among them (``"seed"``), drawn with ``seed``.

    Raises:
        InputError: unknown ``by``; in-sample pairs that already use every template; too few held-out pairs.
    """
    from .tasks import get_task_pairs

    if by not in HELDOUT_BY:
        raise InputError(f"held-out split must be one of {', '.join(HELDOUT_BY)}, not {by!r}")
    words = {w.strip() for p in inside for w in (p.answer, p.wrong_answer)}
    templates = {p.meta.get("template") for p in inside}
    seen = {(p.clean, p.corrupted) for p in inside}
    keep = {"names": lambda p: not {p.answer.strip(), p.wrong_answer.strip()} & words,
            "templates": lambda p: p.meta.get("template") not in templates,
            "seed": lambda p: (p.clean, p.corrupted) not in seen}[by]
    pool = [p for p in get_task_pairs(model, task, max(n, len(inside)) * 4 * _POOL_FACTOR, seed) if keep(p)]
    return _enough(pool, n, task, by)


def rerun(runs, pairs: list[PromptPair]):
    """Spliced runs of other ``pairs`` with the model, SAEs and metric of ``runs`` (a
    :class:`~sfc_core.attribution.PairRuns`, or a :class:`~sfc_core.batching.PairStream` when they need several
    pair batches, :func:`~sfc_core.batching.open_runs`).

    Raises:
        InputError: bad pairs (see :func:`~sfc_core.pairs.tokenize_pairs`).
    """
    from .batching import open_runs
    from .discovery import DiscoverConfig, as_batch

    saes = {site.hook_name: site.sae for site in runs.sites if site.sae is not None}
    return open_runs(runs.model, saes, as_batch(runs.model, pairs, DiscoverConfig(metric=runs.metric)), runs.metric)


def heldout_scores(G: nx.DiGraph, inside, heldout, ablation: str = "mean", by: str | None = None) -> dict:
    """Faithfulness and completeness of circuit ``G`` on its in-sample runs and on held-out runs
    (:class:`~sfc_core.attribution.PairRuns` of :func:`~sfc_core.attribution.prepare_runs`, the same SAEs).

    Returns:
        ``{"n_nodes", "ablation", "by", "in_sample": {...}, "heldout": {...}, "drop"}``: each side holds
        ``n_pairs``, ``faithfulness``, ``completeness``, ``m_full``, ``m_empty`` (metric units, mean over its
        pairs) exactly as :func:`sfc_core.discovery.evaluate` computes them (means of the mean ablation over each
        side's own corrupted prompts); ``drop`` = in-sample − held-out faithfulness (``None`` when either is
        undefined).

    Raises:
        InputError: a position-resolved circuit scored across templates; the errors of
            :func:`~sfc_core.discovery.evaluate` (nodes without an SAE here, bad ablation, positions beyond the
            prompts).
    """
    from .discovery import evaluate

    positional = any(d.get("position") is not None for _, d in G.nodes(data=True))
    if positional and by == "templates":
        raise InputError("a position-resolved circuit cannot be scored on other templates (its positions belong "
                         "to its own prompts): aggregate over positions, or hold out names or a fresh seed")
    out: dict = {"by": by}
    for name, runs in (("in_sample", inside), ("heldout", heldout)):
        report = evaluate(runs, G, None, ablation)
        out["n_nodes"], out["ablation"] = report["n_nodes"], report["ablation"]
        out[name] = {"n_pairs": int(runs.batch.n), **{k: report[k] for k in ("faithfulness", "completeness",
                                                                             "m_full", "m_empty")}}
    f_in, f_out = out["in_sample"]["faithfulness"], out["heldout"]["faithfulness"]
    out["drop"] = None if f_in is None or f_out is None else f_in - f_out
    return out
