"""One call from prompt pairs to a circuit, and from a circuit to its scores: what the CLI and the app run.

``discover`` = tokenize pairs → spliced clean/corrupted runs → node effects (AtP, IG or
exact) → node selection → edges (VJP, kept nodes only) → ``networkx`` graph with
``sfc-circuit/1`` metadata. ``evaluate`` = faithfulness/completeness curve of a circuit's
nodes ranked by |effect|, with a random baseline. ``verify`` = exact patching of a
circuit's nodes against its recorded effects.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import networkx as nx
import torch

from . import defaults
from .attribution import AGGREGATIONS, Attribution, NodeKey, PairRuns, attribute, exact_effects, prepare_runs
from .circuit import build_graph, circuit_nodes, node_value, select_nodes
from .edges import EMBED, METRIC, edge_effects
from .errors import InputError
from .evaluation import ABLATIONS, faithfulness_curve, score_circuits
from .pairs import PairBatch, PromptPair, tokenize_pairs

#: Methods that score every node (the circuit is then chosen by threshold / top-k).
EFFECT_METHODS = ("atp", "ig", "exact")
#: Methods that choose the circuit themselves (node effects shown are AtP's).
SELECTION_METHODS = ("mask", "fap", "fap-synergy")
DISCOVERY_METHODS = EFFECT_METHODS + SELECTION_METHODS


@dataclass(frozen=True)
class DiscoverConfig:
    """Options of :func:`discover` (the CLI flags and the app's widgets map onto these)."""

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

    def check(self) -> None:
        """Raises InputError on an unknown method or aggregation, or bad thresholds."""
        if self.method not in DISCOVERY_METHODS:
            raise InputError(f"unknown method '{self.method}'; choose one of {', '.join(DISCOVERY_METHODS)}")
        if self.aggregation not in AGGREGATIONS:
            raise InputError(f"aggregation must be one of {', '.join(AGGREGATIONS)}")
        if self.steps < 1:
            raise InputError("IG steps must be ≥ 1")
        if self.method == "mask":
            from .masks import MaskConfig

            MaskConfig(lam=self.mask_lambda, steps=self.mask_steps, t_max=self.mask_t_max).check()
        if self.method in ("fap", "fap-synergy") and self.budget < 1:
            raise InputError(f"budget K must be ≥ 1, not {self.budget}")


def sae_metadata(saes: dict) -> list[dict]:
    """``[{"hook_name", "source", "d_sae"}]`` for circuit metadata."""
    out = []
    for hook, s in saes.items():
        sae = getattr(s, "sae", s)
        out.append({"hook_name": hook, "source": getattr(s, "source", "custom"), "d_sae": int(sae.cfg.d_sae)})
    return out


def as_batch(model, pairs: list[PromptPair] | PairBatch, cfg: DiscoverConfig) -> PairBatch:
    """Tokenize unless already a batch (InputError on bad pairs)."""
    if isinstance(pairs, PairBatch):
        return pairs
    return tokenize_pairs(model, pairs, multi_token=cfg.multi_token, length_mismatch=cfg.length_mismatch)


@dataclass
class Discovery:
    """Everything one discovery produced: kept for re-selection without recompute (app sliders).

    Attributes:
        runs: the spliced clean/corrupted runs (for edges, ablation, steering on these pairs).
        attribution: node effects of every node.
        edges: ``{(u, v): weight}`` among ``edge_nodes`` (a superset of the selected nodes).
        graph: the selected circuit.
    """

    runs: PairRuns
    attribution: Attribution
    edge_nodes: list[NodeKey]
    edges: dict
    graph: nx.DiGraph
    metadata: dict


def _metadata(model, saes, cfg: DiscoverConfig, attr: Attribution, batch: PairBatch, timings: dict) -> dict:
    return {
        "model": model.cfg.model_name, "n_layers": model.cfg.n_layers, "saes": sae_metadata(saes),
        "method": cfg.method, "metric": cfg.metric, "n_pairs": batch.n, "aggregation": cfg.aggregation,
        "node_threshold": cfg.node_threshold, "top_k": cfg.top_k, "top_k_per_layer": cfg.top_k_per_layer,
        "edge_threshold": cfg.edge_threshold, "ig_steps": cfg.steps if cfg.method == "ig" else None,
        "metric_clean": attr.m_clean, "metric_corrupted": attr.m_corrupted,
        "skipped_pairs": [list(s) for s in batch.skipped],
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }


def discover(model, saes: dict, pairs, cfg: DiscoverConfig = DiscoverConfig(), progress=None,
             edge_pool: int | None = None) -> Discovery:
    """Find a sparse feature circuit for ``pairs`` (Marks et al. 2024).

    Args:
        saes: ``{hook_name: LoadedSAE | SAE}``.
        pairs: prompt pairs or a tokenized :class:`PairBatch`.
        progress: optional ``callable(stage: str, fraction: float)``.
        edge_pool: compute edges among this many top nodes by |effect| (default: all the
            selected ones): more than selected, so a looser selection later reuses them; fewer
            when a selection method keeps more, to bound the edge cost.
    Raises:
        InputError (bad pairs, options, hook points), IncompatibleSAEError, NumericalError.
    """
    cfg.check()
    say = progress or (lambda stage, frac: None)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    batch = as_batch(model, pairs, cfg)
    say("clean and corrupted runs", 0.05)
    runs = prepare_runs(model, saes, batch, cfg.metric)
    timings["runs"] = time.perf_counter() - t
    say(f"node effects ({cfg.method})", 0.15)
    if cfg.method in SELECTION_METHODS:
        attr = attribute(runs, "atp", cfg.aggregation)
        t = time.perf_counter()
        nodes = select_by_method(runs, cfg, progress=lambda d, n: say(cfg.method, 0.15 + 0.5 * d / n))
        timings["nodes"] = time.perf_counter() - t
    else:
        attr = attribute(runs, cfg.method, cfg.aggregation, cfg.steps,
                         progress=lambda d, n: say(f"node effects ({cfg.method})", 0.15 + 0.5 * d / n))
        timings["nodes"] = attr.timings_s["nodes"]
        nodes = select_nodes(attr, cfg.node_threshold, cfg.top_k, cfg.top_k_per_layer)
    edge_nodes = nodes
    if edge_pool is not None and edge_pool > len(nodes):
        edge_nodes = select_nodes(attr, top_k=edge_pool)
    elif edge_pool is not None:
        # A mask can keep thousands of latents; edges cost one VJP per downstream node.
        edge_nodes = sorted(nodes, key=lambda n: -abs(node_value(attr.effects, n)))[:edge_pool]
    edges: dict = {}
    if cfg.edges and edge_nodes:
        say("edges", 0.7)
        effects = {n: node_value(attr.effects, n) for n in edge_nodes}
        edges, et = edge_effects(runs, edge_nodes, effects,
                                 progress=lambda d, n: say("edges", 0.7 + 0.3 * d / max(n, 1)))
        timings.update(et)
    meta = _metadata(model, saes, cfg, attr, batch, timings)
    graph = build_graph(attr, nodes, edges, cfg.edge_threshold, meta, model.cfg.n_layers)
    say("done", 1.0)
    return Discovery(runs, attr, edge_nodes, edges, graph, meta)


def select_by_method(runs: PairRuns, cfg: DiscoverConfig, progress=None) -> list[NodeKey]:
    """Nodes chosen by a selection method: ``mask`` (θ > 0 of one mask training run, error nodes
    kept), ``fap`` (top-``budget`` |FAP|) or ``fap-synergy`` (greedy with synergy, budget ``budget``).

    Raises:
        InputError: bad hyper-parameters or a budget beyond the candidates.
    """
    from .fap import fap_select, fap_synergy_select
    from .masks import MaskConfig, train_mask

    if cfg.method == "mask":
        mask_cfg = MaskConfig(lam=cfg.mask_lambda, steps=cfg.mask_steps, t_max=cfg.mask_t_max,
                              per_position=cfg.aggregation == "none")
        result = train_mask(runs, mask_cfg, progress=(lambda s, n, loss: progress(s, n)) if progress else None)
        return result.nodes(runs)
    if cfg.method == "fap":
        return fap_select(runs, cfg.budget).nodes
    return fap_synergy_select(runs, cfg.budget, synergy_pool=cfg.synergy_pool).nodes


def reselect(d: Discovery, node_threshold: float | None = None, top_k: int | None = None,
             top_k_per_layer: int | None = None, edge_threshold: float = 0.0) -> nx.DiGraph:
    """A new selection from cached effects and edges (no model call); edges only among cached edge nodes."""
    nodes = select_nodes(d.attribution, node_threshold, top_k, top_k_per_layer)
    meta = {**d.metadata, "node_threshold": node_threshold, "top_k": top_k, "top_k_per_layer": top_k_per_layer,
            "edge_threshold": edge_threshold}
    return build_graph(d.attribution, nodes, d.edges, edge_threshold, meta, d.metadata.get("n_layers"))


def graph_effects(G: nx.DiGraph, runs: PairRuns) -> tuple[list[NodeKey], list[torch.Tensor]]:
    """A circuit's nodes as :class:`NodeKey` s and per-site effect tensors holding their recorded effects."""
    hooks = [s.hook_name for s in runs.sites]
    d_saes = [s.d_sae for s in runs.sites]
    keys = circuit_nodes(G, hooks, d_saes)
    agg = "none" if any(k.position is not None for k in keys) else "sum"
    width = runs.batch.clean_tokens.shape[1]
    effects = [torch.zeros((d + 1,) if agg == "sum" else (width, d + 1)) for d in d_saes]
    ids = [n for n in G.nodes if n not in (EMBED, METRIC)]  # circuit_nodes keeps this order
    for key, n in zip(keys, ids):
        value = float(G.nodes[n].get("effect") or 0.0) or 1e-12  # kept nodes must rank above absent ones
        if key.position is None:
            effects[key.site][key.feature] = value
        else:
            if key.position >= width:
                raise InputError(f"circuit node {n} is at position {key.position}, beyond these prompts")
            effects[key.site][key.position, key.feature] = value
    return keys, effects


def check_ablation(ablation: str) -> None:
    if ablation not in ABLATIONS:
        raise InputError(f"ablation must be one of {', '.join(ABLATIONS)}, not '{ablation}'")


def evaluate(runs: PairRuns, G: nx.DiGraph, sizes: list[int] | None = None, ablation: str = "mean") -> dict:
    """Faithfulness and completeness of the whole circuit, and of its top-n nodes for ``n`` in ``sizes``
    (random baseline alongside).

    Raises:
        InputError: bad ablation or sizes; circuit nodes at hook points without an SAE.
    """
    check_ablation(ablation)
    keys, effects = graph_effects(G, runs)
    agg = "none" if any(k.position is not None for k in keys) else "sum"
    whole = score_circuits(runs, [keys], ablation, agg)[0]
    out = {"n_nodes": len(keys), "ablation": ablation, **{k: v for k, v in whole.as_dict().items() if k != "n_nodes"}}
    if sizes:
        out["curve"] = faithfulness_curve(runs, effects, [s for s in sizes], ablation, agg)
    return out


def verify(runs: PairRuns, G: nx.DiGraph, progress=None) -> dict:
    """Exact patching of a circuit's nodes vs their recorded effects: Spearman and Pearson correlation.

    Returns ``{"n_nodes", "pearson", "spearman", "nodes": [{"id", "recorded", "exact"}], "seconds"}``.
    """
    t = time.perf_counter()
    keys, _ = graph_effects(G, runs)
    ids = [n for n in G.nodes if n not in (EMBED, METRIC)]
    recorded = torch.tensor([float(G.nodes[n].get("effect") or 0.0) for n in ids])
    exact = exact_effects(runs, keys, progress=progress).float()
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
    """Spearman rank correlation (average ranks for ties)."""
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
    return asdict(cfg)
