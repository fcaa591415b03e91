"""One call from prompt pairs to a circuit, and from a circuit to its scores: what the CLI and the app run.

``discover`` = tokenize pairs → spliced clean/corrupted runs → node effects (a registered method,
:mod:`sfc_core.methods`) → node selection → edges (VJP, kept nodes only) → ``networkx`` graph with
``sfc-circuit/1`` metadata. :meth:`Discovery.select` is the one selection path (CLI, explorer,
Evaluate page, Tour): attribution methods re-select from cached effects, selection methods keep the
circuit they chose. ``evaluate`` = faithfulness/completeness curve of a circuit's nodes ranked by
|effect|, with a random baseline. ``verify`` = exact patching of a circuit's nodes against its
recorded effects.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import networkx as nx
import torch

from . import bounds, defaults
from . import methods as registry
from .ablation import check_ablation
from .alignment import check_position_resolved
from .attribution import AGGREGATIONS, Attribution, PairRuns, attribute
from .batching import one_batch, open_runs
from .circuit import build_graph, circuit_nodes, select_nodes
from .errors import InputError
from .evaluation import TargetSearch, check_target, faithfulness_curve, score_circuits, smallest_faithful
from .nodes import Node, is_end_id
from .metrics import ZERO_GRADIENT_AT_CLEAN, get_metric
from .pairs import PairBatch, PromptPair, check_pair_option, encode, token_strs, tokenize_pairs


@dataclass(frozen=True)
class DiscoverConfig:
    """Options of :func:`discover` (the CLI flags and the app's widgets map onto these).

    Thresholds are in metric units (logits for logit difference): ``node_threshold`` on ``|node IE|``,
    ``edge_threshold`` on ``|edge IE|``; exactly one of ``node_threshold`` / ``top_k`` / ``top_k_per_layer``
    selects nodes for attribution methods. ``steps`` are IG's α values; ``mask_*`` the mask method's λ, steps
    and final temperature; ``budget`` / ``synergy_pool`` FAP's K and FAP-Synergy's pool (latents).
    ``target_faithfulness`` (attribution methods) replaces the node rules: the smallest top-n reaching it
    (:func:`~sfc_core.evaluation.smallest_faithful`). ``ablation`` is what the circuit's scores (and the
    target search) ablate nodes outside it to.
    """

    method: str = "atp"
    metric: str = "logit_diff"
    aggregation: str = "sum"
    node_threshold: float | None = None
    top_k: int | None = 50
    top_k_per_layer: int | None = None
    edges: bool = True
    edge_threshold: float = 0.0
    steps: int = defaults.IG_STEPS
    multi_token: str = "reject"
    length_mismatch: str = "skip"
    mask_lambda: float = defaults.MASK_LAMBDA
    mask_steps: int = 200
    mask_t_max: float = 200.0
    budget: int = 50
    synergy_pool: int = defaults.FAP_SYNERGY_POOL
    target_faithfulness: float | None = None
    ablation: str = "mean"

    def check(self) -> None:
        """Check the options that do not need a model.

        Raises:
            InputError: unknown method, aggregation, metric or pair option; a numeric option outside its
                :data:`~sfc_core.bounds.BOUNDS` (IG ``steps`` 1-1000, ``top_k`` 1-100000, ...); bad mask
                hyper-parameters (methods reading ``mask_lambda``).
        """
        for name in ("method", "metric", "aggregation", "multi_token", "length_mismatch", "ablation"):
            if not isinstance(getattr(self, name), str):
                raise InputError(f"{name.replace('_', ' ')} must be a name, not {getattr(self, name)!r:.40}")
        for name in ("steps", "mask_steps", "mask_lambda", "mask_t_max", "budget", "synergy_pool", "edge_threshold"):
            if getattr(self, name) is None:
                raise InputError(f"{name.replace('_', ' ')} needs a value")
        method = registry.get(self.method)
        if self.aggregation not in AGGREGATIONS:
            raise InputError(f"aggregation must be one of {', '.join(AGGREGATIONS)}")
        for name in ("top_k", "top_k_per_layer", "node_threshold", "edge_threshold", "steps", "mask_steps",
                     "mask_lambda", "mask_t_max", "budget", "synergy_pool"):
            bounds.check(name, getattr(self, name), "IG steps" if name == "steps" else None)
        for name in ("multi_token", "length_mismatch"):
            check_pair_option(name, getattr(self, name))
        get_metric(self.metric)
        if "mask_lambda" in method.options:
            from .masks import MaskConfig

            MaskConfig(lam=self.mask_lambda, steps=self.mask_steps, t_max=self.mask_t_max).check()
        if "budget" in method.options and self.budget < 1:
            raise InputError(f"budget K must be ≥ 1, not {self.budget}")
        check_ablation(self.ablation)
        if self.target_faithfulness is not None:
            check_target(self.target_faithfulness)
            if method.kind != "attribution":
                raise InputError(f"a target faithfulness grows a ranking; {self.method} chooses its own circuit "
                                 f"(use one of {', '.join(registry.names('attribution'))})")
        if method.clean_gradient and self.metric in ZERO_GRADIENT_AT_CLEAN:
            raise InputError(f"{self.method} ranks by the metric's gradient at the clean run, where "
                             f"{self.metric} has zero gradient (every score would be 0): rank with "
                             f"--metric logit_diff, or use {', '.join(n for n in registry.names() if not registry.get(n).clean_gradient)}")


def sae_metadata(saes: dict) -> list[dict]:
    """``[{"hook_name", "source", "d_sae"}]`` for circuit metadata."""
    out = []
    for hook, s in saes.items():
        sae = getattr(s, "sae", s)
        out.append({"hook_name": hook, "source": getattr(s, "source", "custom"), "d_sae": int(sae.cfg.d_sae)})
    return out


def as_batch(model, pairs: list[PromptPair] | PairBatch, cfg: DiscoverConfig) -> PairBatch:
    """``pairs`` tokenized (:func:`~sfc_core.pairs.tokenize_pairs` with ``cfg``'s options) unless already a
    :class:`PairBatch` (tokens ``[n, pos]``).

    Raises:
        InputError: bad pairs or options (see :func:`~sfc_core.pairs.tokenize_pairs`).
    """
    if isinstance(pairs, PairBatch):
        return pairs
    return tokenize_pairs(model, pairs, multi_token=cfg.multi_token, length_mismatch=cfg.length_mismatch)


@dataclass
class Discovery:
    """Everything one discovery produced: kept for re-selection without recompute (app sliders).

    Attributes:
        runs: the spliced clean/corrupted runs (for edges, ablation, steering on these pairs): a
            :class:`~sfc_core.attribution.PairRuns`, or a :class:`~sfc_core.batching.PairStream` when the pairs need
            several batches of the memory budget (both offer ``attribute``, ``edge_effects``, ``exact_effects``,
            ``ablated_metric`` and ``active_units``).
        attribution: node effects of every node (AtP's for selection methods).
        edge_nodes: nodes among which edges were computed (the selected nodes, or the top ``edge_pool`` by
            ``|effect|``: more than selected for a looser re-selection, fewer to bound the edge cost).
        edges: ``{(u, v): weight}`` among ``edge_nodes`` (metric units).
        graph: the circuit as found.
        metadata: the ``sfc-circuit/1`` metadata (model, SAEs, method, options, metric values, timings in s).
    """

    runs: PairRuns
    attribution: Attribution
    edge_nodes: list[Node]
    edges: dict
    graph: nx.DiGraph
    metadata: dict

    _scores: dict = field(default_factory=dict, repr=False)
    _targets: dict = field(default_factory=dict, repr=False)

    @property
    def chosen_by_method(self) -> bool:
        """The method chose its own circuit (a selection method): node thresholds do not apply."""
        return registry.get(self.metadata.get("method", "atp")).kind == "selection"

    def target_search(self, target: float, ablation: str = "mean") -> TargetSearch:
        """The smallest top-n by |effect| whose faithfulness reaches ``target`` (cached per target and ablation;
        :func:`~sfc_core.evaluation.smallest_faithful`).

        Raises:
            InputError: a target outside ``(0, 1.5]``, an unknown ablation, or a selection method's discovery.
        """
        if self.chosen_by_method:
            raise InputError("a target faithfulness applies to attribution methods, not to "
                             f"{self.metadata.get('method')}, which chose its own circuit")
        key = (check_target(target), check_ablation(ablation))
        if key not in self._targets:
            ranked = self.attribution.space.ranked(self.attribution.effects)
            self._targets[key] = smallest_faithful(self.runs, ranked, key[0], key[1], self.attribution.aggregation)
        return self._targets[key]

    def scores(self, G: nx.DiGraph, ablation: str = "mean") -> dict:
        """Faithfulness and completeness of exactly ``G``'s nodes (Marks et al. 2024, §4), cached per node set and
        ablation: ``{"faithfulness", "completeness", "n_nodes", "ablation", "metric", "m_circuit", "m_complement",
        "m_full", "m_empty", "seconds"}`` (scores unitless, ``m_*`` in metric units, seconds of the computation).

        Raises:
            InputError: an unknown ablation; a node without an SAE here.
        """
        key = (frozenset(n for n in G.nodes if not is_end_id(n)), check_ablation(ablation))
        if key not in self._scores:
            t = time.perf_counter()
            res = evaluate(self.runs, G, None, ablation)
            self._scores[key] = {**res, "metric": self.runs.metric, "seconds": round(time.perf_counter() - t, 3)}
        return dict(self._scores[key])

    def _prompt(self) -> dict:
        """:func:`prompt_metadata` of these runs, from the metadata where discovery recorded it."""
        if "prompt_tokens" in self.metadata:
            return {k: self.metadata.get(k) for k in ("prompt", "prompt_tokens")}
        return prompt_metadata(self.runs.model, self.runs.batch)

    def select(self, node_threshold: float | None = None, top_k: int | None = None,
               top_k_per_layer: int | None = None, edge_threshold: float = 0.0,
               target_faithfulness: float | None = None, ablation: str = "mean") -> nx.DiGraph:
        """The circuit for a selection, from cached effects and edges (no model call).

        Attribution methods keep the nodes chosen by exactly one of ``node_threshold`` / ``top_k`` /
        ``top_k_per_layer`` (edges only among cached edge nodes); selection methods keep the nodes they
        chose (the node rules are ignored). Either way edges with ``|weight| < edge_threshold`` go.
        ``target_faithfulness`` is a fourth node rule: the top-n of :meth:`target_search` (under ``ablation``);
        the graph's metadata then holds the search (``"target_search"``). The metadata always holds
        ``"prompt"`` and ``"prompt_tokens"`` (:func:`prompt_metadata`: the first pair's clean prompt and its
        tokens, indexed as ``"@pos"`` nodes are).

        Raises:
            InputError: no or several node rules (attribution methods), negative thresholds, a bad target.
        """
        if self.chosen_by_method:
            if edge_threshold < 0 or math.isnan(edge_threshold):
                raise InputError(f"edge threshold must be ≥ 0, not {edge_threshold}")
            G = self.graph.copy()
            G.remove_edges_from([(u, v) for u, v, w in G.edges(data="weight") if abs(w or 0.0) < edge_threshold])
            for key, value in self._prompt().items():
                G.graph.setdefault(key, value)
            return G
        meta = {**self._prompt(), **self.metadata, "node_threshold": node_threshold, "top_k": top_k,
                "top_k_per_layer": top_k_per_layer, "edge_threshold": edge_threshold}
        if target_faithfulness is not None:
            if any(r is not None for r in (node_threshold, top_k, top_k_per_layer)):
                raise InputError("choose exactly one of node threshold, top-k, top-k per layer or target faithfulness")
            search = self.target_search(target_faithfulness, ablation)
            top_k = search.n_nodes
            meta.update(target_faithfulness=search.target, target_search=search.as_dict())
        nodes = select_nodes(self.attribution, node_threshold, top_k, top_k_per_layer)
        return build_graph(self.attribution, nodes, self.edges, edge_threshold, meta, self.metadata.get("n_layers"))


def prompt_metadata(model, batch) -> dict:
    """``{"prompt": str, "prompt_tokens": [str]}`` of the first pair of ``batch``, for a circuit's metadata.

    ``prompt_tokens[p]`` is the text of the token at position ``p`` of the first clean row exactly as the engine
    ran it (``batch.clean_tokens[0, :last_pos[0] + 1]``, decoded one token at a time), so it indexes like the
    ``position`` of ``"@pos"`` nodes: BOS at 0, and after a length alignment (``length_mismatch="align_last"``)
    the tokens the model saw, not the dropped ones. With position-resolved nodes all pairs share one template
    and length (:func:`~sfc_core.alignment.check_position_resolved`), so the first pair names every pair's
    positions. ``prompt`` is that pair's clean prompt when its tokenization is exactly the row, else the row
    decoded (BOS left out).

    Args:
        model: a ``HookedTransformer``; its ``tokenizer`` decodes the ids.
        batch: a :class:`~sfc_core.pairs.PairBatch` (``clean_tokens [n, pos]``, ``last_pos [n]``; ``pairs``
            optional).

    Returns:
        The two fields; ``{"prompt": "", "prompt_tokens": []}`` for an empty batch or a model without a
        tokenizer (a figure then labels positions ``"pos p"``). Never raises.
    """
    tok = getattr(model, "tokenizer", None)
    pairs = list(getattr(batch, "pairs", None) or [])
    try:
        if tok is None or int(batch.clean_tokens.shape[0]) == 0:
            raise ValueError("no tokenizer or no pairs")
        ids = [int(i) for i in batch.clean_tokens[0, : int(batch.last_pos[0]) + 1].tolist()]
        tokens = token_strs(tok, ids)
        clean = getattr(pairs[0], "clean", None) if pairs else None
        if not (isinstance(clean, str) and encode(tok, clean) == ids[1:]):
            clean = tok.decode(ids[1:])
        return {"prompt": str(clean), "prompt_tokens": tokens}
    except Exception:  # noqa: BLE001 - display metadata is never worth failing a discovery
        clean = getattr(pairs[0], "clean", "") if pairs else ""
        return {"prompt": str(clean or ""), "prompt_tokens": []}


def _metadata(model, saes, cfg: DiscoverConfig, attr: Attribution, batch: PairBatch, timings: dict) -> dict:
    return {
        **prompt_metadata(model, batch),
        "model": model.cfg.model_name, "n_layers": model.cfg.n_layers, "saes": sae_metadata(saes),
        "method": cfg.method, "metric": cfg.metric, "n_pairs": batch.n, "aggregation": cfg.aggregation,
        "node_threshold": cfg.node_threshold, "top_k": cfg.top_k, "top_k_per_layer": cfg.top_k_per_layer,
        "edge_threshold": cfg.edge_threshold, "ig_steps": cfg.steps if cfg.method == "ig" else None,
        "metric_clean": attr.m_clean, "metric_corrupted": attr.m_corrupted,
        "skipped_pairs": [list(s) for s in batch.skipped],
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }


def discover(model, saes: dict, pairs, cfg: DiscoverConfig = DiscoverConfig(), progress=None,
             edge_pool: int | None = None, pair_batch: int | None = None,
             memory_gb: float | None = None) -> Discovery:
    """Find a sparse feature circuit for ``pairs`` (Marks et al. 2024: node IEs §2, edges §3 eq. 5).

    Args:
        saes: ``{hook_name: LoadedSAE | SAE}``.
        pairs: prompt pairs or a tokenized :class:`PairBatch`.
        progress: optional ``callable(stage: str, fraction: float)``.
        edge_pool: compute edges among this many top nodes by |effect| (default: all the
            selected ones): more than selected, so a looser selection later reuses them; fewer
            when a selection method keeps more, to bound the edge cost.
        pair_batch: pairs per batch (default: as many as fit ``memory_gb`` GB, default
            ``defaults.MEMORY_BUDGET_GB``; :func:`~sfc_core.batching.pair_batch_size`). When the pairs need several
            batches, the discovery's ``runs`` is a :class:`~sfc_core.batching.PairStream` and attribution, edges
            and scores stream over them (the same figures to float precision, memory of one batch).

    Returns:
        :class:`Discovery`; node effects ``[d_sae + 1]`` (or ``[pos, d_sae + 1]``) per site and edge
        weights in metric units (logits for logit difference), timings in seconds.

    Raises:
        InputError: bad pairs, options or hook points (two SAEs at one point, a non-residual one);
            position-resolved nodes (``aggregation="none"``) over pairs of several template groups
            (:func:`~sfc_core.alignment.check_position_resolved`); a selection method (mask, FAP) on more pairs
            than fit one batch of the memory budget (:func:`~sfc_core.batching.one_batch`).
        IncompatibleSAEError: an SAE's ``d_in`` differs from the model's ``d_model``.
        NumericalError: NaN or inf in activations, gradients or effects.
    """
    cfg.check()
    say = progress or (lambda stage, frac: None)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    batch = as_batch(model, pairs, cfg)
    if cfg.aggregation == "none":
        check_position_resolved(batch)
    say("clean and corrupted runs", 0.05)
    runs = open_runs(model, saes, batch, cfg.metric, pair_batch, memory_gb)
    timings["runs"] = time.perf_counter() - t
    say(f"node effects ({cfg.method})", 0.15)
    method = registry.get(cfg.method)
    if method.kind == "selection":
        runs = one_batch(runs, f"{cfg.method} (a selection method)")
        attr = attribute(runs, "atp", cfg.aggregation)
        t = time.perf_counter()
        nodes = method.run(runs, cfg, progress=lambda d, n: say(cfg.method, 0.15 + 0.5 * d / n))
        timings["nodes"] = time.perf_counter() - t
    else:
        attr = runs.attribute(cfg.method, cfg.aggregation, cfg.steps,
                              progress=lambda d, n: say(f"node effects ({cfg.method})", 0.15 + 0.5 * d / n))
        timings["nodes"] = attr.timings_s["nodes"]
        if cfg.target_faithfulness is not None:
            say(f"searching the smallest circuit with faithfulness ≥ {cfg.target_faithfulness:g}", 0.55)
            t = time.perf_counter()
            ranked = attr.space.ranked(attr.effects)
            search = smallest_faithful(runs, ranked, cfg.target_faithfulness, cfg.ablation, cfg.aggregation)
            timings["target_search"] = time.perf_counter() - t
            nodes = select_nodes(attr, top_k=search.n_nodes)
            if edge_pool is None:  # edges cost one VJP per downstream node: the largest ones only
                edge_pool = min(len(nodes), defaults.TARGET_EDGE_NODES)
        else:
            nodes = select_nodes(attr, cfg.node_threshold, cfg.top_k, cfg.top_k_per_layer)
    edge_nodes = nodes
    if edge_pool is not None and edge_pool > len(nodes):
        edge_nodes = select_nodes(attr, top_k=edge_pool)
    elif edge_pool is not None:
        # A mask can keep thousands of latents; edges cost one VJP per downstream node.
        edge_nodes = sorted(nodes, key=lambda n: -abs(attr.space.value(attr.effects, n)))[:edge_pool]
    edges: dict = {}
    if cfg.edges and edge_nodes:
        say("edges", 0.7)
        effects = {n: attr.space.value(attr.effects, n) for n in edge_nodes}
        edges, et = runs.edge_effects(edge_nodes, effects,
                                      progress=lambda d, n: say("edges", 0.7 + 0.3 * d / max(n, 1)))
        timings.update(et)
    meta = _metadata(model, saes, cfg, attr, batch, timings)
    d = Discovery(runs, attr, edge_nodes, edges, nx.DiGraph(), meta)
    if method.kind == "selection":
        d.graph = build_graph(attr, nodes, edges, cfg.edge_threshold, meta, model.cfg.n_layers)
    elif cfg.target_faithfulness is not None:
        d._targets[(search.target, cfg.ablation)] = search  # select() reads the search instead of redoing it
        d.graph = d.select(edge_threshold=cfg.edge_threshold, target_faithfulness=cfg.target_faithfulness,
                           ablation=cfg.ablation)
    else:
        d.graph = d.select(cfg.node_threshold, cfg.top_k, cfg.top_k_per_layer, cfg.edge_threshold)
    say("scoring the circuit", 0.97)
    d.graph.graph["scores"] = d.scores(d.graph, cfg.ablation)
    say("done", 1.0)
    return d


def graph_effects(G: nx.DiGraph, runs: PairRuns) -> tuple[list[Node], list[torch.Tensor]]:
    """A circuit's nodes and per-site effect tensors ``[d_sae + 1]`` (or ``[pos, d_sae + 1]`` if any node has a
    position) holding their recorded effects (metric units; a kept node with effect 0 gets 1e-12 so it
    ranks above absent ones).

    Raises:
        InputError: a node at a hook point without an SAE, out of range, with a feature field that is neither
            an integer nor ``"error"``, or beyond these prompts' positions.
    """
    keys = circuit_nodes(G, runs.space)
    per_position = any(k.position is not None for k in keys)
    ids = [n for n in G.nodes if not is_end_id(n)]  # circuit_nodes keeps this order
    values = [float(G.nodes[n].get("effect") or 0.0) or 1e-12 for n in ids]
    return keys, runs.space.scatter(keys, values, per_position)


def evaluate(runs: PairRuns, G: nx.DiGraph, sizes: list[int] | None = None, ablation: str = "mean") -> dict:
    """Faithfulness and completeness (Marks et al. 2024, §4) of the whole circuit, and of its top-n nodes by
    recorded ``|effect|`` for ``n`` in ``sizes`` (random baseline alongside).

    Returns:
        ``{"n_nodes", "ablation", "faithfulness", "completeness", "m_circuit", "m_complement", "m_empty",
        "m_full"}`` (scores unitless, ``m_*`` in metric units) plus ``"curve"``
        (:func:`~sfc_core.evaluation.faithfulness_curve`) when ``sizes`` is given.

    Raises:
        InputError: bad ablation or sizes; circuit nodes at hook points without an SAE, out of range or
            beyond these prompts' positions; position-resolved nodes over pairs of several template groups.
    """
    ablation = check_ablation(ablation)
    keys, effects = graph_effects(G, runs)
    agg = "none" if any(k.position is not None for k in keys) else "sum"
    if agg == "none":
        check_position_resolved(runs.batch)
    whole = score_circuits(runs, [keys], ablation, agg)[0]
    out = {"n_nodes": len(keys), "ablation": ablation, **{k: v for k, v in whole.as_dict().items() if k != "n_nodes"}}
    if sizes:
        out["curve"] = faithfulness_curve(runs, effects, [s for s in sizes], ablation, agg)
    return out


def verify(runs: PairRuns, G: nx.DiGraph, progress=None) -> dict:
    """Exact patching of a circuit's nodes (:func:`~sfc_core.attribution.exact_effects`) vs their recorded
    effects: Spearman and Pearson correlation.

    Returns:
        ``{"n_nodes", "pearson", "spearman", "nodes": [{"id", "recorded", "exact"}], "seconds"}``: effects in
        metric units, correlations unitless (``None`` if either side is constant), wall-clock seconds.

    Raises:
        InputError: a circuit node at a hook point without an SAE, out of range or beyond these prompts.
        NumericalError: NaN or inf in the exact effects.
    """
    t = time.perf_counter()
    keys, _ = graph_effects(G, runs)
    ids = [n for n in G.nodes if not is_end_id(n)]
    recorded = torch.tensor([float(G.nodes[n].get("effect") or 0.0) for n in ids])
    exact = runs.exact_effects(keys, progress).float()
    return {
        "n_nodes": len(ids),
        "pearson": pearson(recorded, exact),
        "spearman": spearman(recorded, exact),
        "nodes": [{"id": n, "recorded": float(r), "exact": float(e)} for n, r, e in zip(ids, recorded, exact)],
        "seconds": round(time.perf_counter() - t, 3),
    }


def pearson(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Pearson correlation of two ``[n]`` tensors (``None`` if either is constant)."""
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    denom = a.norm() * b.norm()
    return None if denom == 0 else float((a * b).sum() / denom)


def spearman(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Spearman rank correlation of two ``[n]`` tensors (average ranks for ties; ``None`` if either is constant)."""
    return pearson(_ranks(a), _ranks(b))


def _ranks(x: torch.Tensor) -> torch.Tensor:
    order = torch.argsort(x, stable=True)
    ranks = torch.empty(len(x), dtype=torch.float64)
    ranks[order] = torch.arange(len(x), dtype=torch.float64)
    for v in torch.unique(x):  # average the ranks of ties
        tie = x == v
        if tie.sum() > 1:
            ranks[tie] = ranks[tie].mean()
    return ranks


def config_dict(cfg: DiscoverConfig) -> dict:
    """``cfg`` as a plain dict (``dataclasses.asdict``)."""
    return asdict(cfg)
