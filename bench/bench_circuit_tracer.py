"""circuit-tracer as a peer (issue 15, part 4): its attribution graphs on our transcoders and model, offline, beside
our position-resolved AtP on the same prompts.

What it does:

1. exports the transcoders (``--transcoders DIR``, default ``assets/transcoders``; or ``--random D_SAE`` random
   ones for every layer, to try the pipeline before real ones exist) to circuit-tracer's folder format
   (:func:`sfc_core.peer_export.export_circuit_tracer`) in a temporary folder;
2. in circuit-tracer's own environment (a second Python, ``.venv-peer``: circuit-tracer 0.5.0 needs
   transformers ≤ 4.57.3, the project pins 5.25.0, so they cannot share one), builds its TransformerLens
   ``ReplacementModel`` from our model's config and converted weights (``sfc_core.model``'s cache) and the local
   tokenizer, with no hub, and checks its logits and transcoder activations against ours;
3. runs its ``attribute`` on built-in task prompts (clean prompts of ``--tasks``, target: the logit difference
   answer − wrong answer as one custom target), timed; its ``compute_graph_scores`` (replacement, completeness); its
   top ``--top-k`` features by influence; writes its graph JSON (``create_graph_files``; error-node ids as in its
   upstream fix, since 0.5.0's collide with layer-0 features: :func:`_fix_error_node_ids`) and reads it back with
   :func:`sfc_core.export.read_graph_json`;
4. here, on the same pair: our AtP with the same transcoders (``aggregation="none"``, position-resolved), top
   ``--top-k`` transcoder latents by |effect|, the overlap of the two top-k sets, and our faithfulness /
   completeness (:func:`sfc_core.evaluation.score_circuits`, ``--ablation`` of every node outside the set) of both
   sets, also with every error node kept.

The peer's model is built with ``ReplacementModel.from_config`` and our converted state dict (TransformerLens 3.2.1,
which circuit-tracer's environment gets, does not know SmolLM2, so ``from_pretrained_and_transcoders`` cannot load it,
and it would ask the hub for the HF config). Prints a Markdown table and writes the figures as JSON (``--out``). Run it with the project's environment; it runs
circuit-tracer with ``--peer-python`` (default ``.venv-peer/bin/python``, made by ``make peer-venv``)::

    make peer-venv
    nice -n 19 .venv/bin/python bench/bench_circuit_tracer.py --random 256 --n 2 --out /tmp/ct_bench.json
    nice -n 19 .venv/bin/python bench/bench_circuit_tracer.py --transcoders assets/transcoders --out ct.json

Exit 0 on success; 2 with one line when circuit-tracer cannot be imported, the transcoders are unusable, or the
peer run fails (its last error line is shown).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PEER = REPO / ".venv-peer" / "bin" / "python"
PEER_HINT = ("make peer-venv (a separate venv: circuit-tracer 0.5.0 needs transformers<=4.57.3, the project "
             "pins 5.25.0)")


class BenchError(Exception):
    """A one-line reason the bench cannot go on (exit 2)."""


# ====================================================================== peer side (circuit-tracer's Python)
def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:400]


def _peer_tokenizer(folder: Path, out: Path, bos_token: str):
    """Our tokenizer (saved by the project's transformers 5) for circuit-tracer's transformers 4, re-saved in ``out``
    (loaded from there by name, as TransformerLens and ``create_graph_files`` do). Its ``tokenizer_config.json`` names
    the class ``TokenizersBackend``, unknown to transformers 4, so the fast tokenizer is built from ``tokenizer.json``
    with the config's special tokens; BOS is ``bos_token`` (ours, as in ``sfc_core.model``)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    try:
        tok = AutoTokenizer.from_pretrained(str(folder))
    except (ValueError, OSError):
        conf = json.loads((folder / "tokenizer_config.json").read_text())
        special = {k: conf[k] for k in ("eos_token", "pad_token", "unk_token") if isinstance(conf.get(k), str)}
        tok = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), **special)
    tok.save_pretrained(str(out))
    tok = AutoTokenizer.from_pretrained(str(out))
    tok.bos_token = bos_token
    return tok


def _fix_error_node_ids() -> None:
    """Give circuit-tracer's MLP error nodes the ids of its upstream fix (``"{layer}_-1_{pos}"``, circuit-tracer
    PR #102 for issue #78) in the graph files written here. 0.5.0 writes ``"0_{layer}_{pos}"``, the id of feature
    ``layer`` of layer 0 at that position: when both are in a graph the file has one id for two nodes, and
    ``read_graph_json`` refuses it (their links cannot be told apart)."""
    from circuit_tracer.frontend import graph_models as gm

    original = gm.Node.error_node.__func__

    def error_node(cls, layer, pos, influence=None):
        node = original(cls, layer, pos, influence=influence)
        node.node_id = f"{layer}_-1_{pos}"
        return node

    gm.Node.error_node = classmethod(error_node)


def worker(job_path: str) -> int:
    """Run circuit-tracer on the job's prompts (see :func:`_peer_job`); write ``result.json`` and per-prompt check
    tensors in the job's ``out_dir``. Imports only circuit-tracer's stack (no ``sfc_core``)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    job = json.loads(Path(job_path).read_text())
    out = Path(job["out_dir"])
    try:
        import circuit_tracer
        import torch
        import transformers
        from circuit_tracer import attribute
        from circuit_tracer.attribution.targets import CustomTarget
        from circuit_tracer.graph import compute_graph_scores, compute_node_influence
        from circuit_tracer.replacement_model.replacement_model_transformerlens import (
            TransformerLensReplacementModel,
        )
        from circuit_tracer.utils.caching import load_transcoders_from_cache
        from circuit_tracer.utils.create_graph_files import create_graph_files
        from safetensors.torch import load_file, save_file
        from transformer_lens import HookedTransformerConfig
    except Exception as exc:  # noqa: BLE001 - reported as one line
        print(f"circuit-tracer is not importable with {sys.executable} ({_one_line(exc)})", file=sys.stderr)
        return 3
    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    torch.set_grad_enabled(False)
    import importlib.metadata as md

    result: dict = {"versions": {"python": sys.version.split()[0], "circuit_tracer": circuit_tracer.__version__,
                                 "torch": torch.__version__, "transformers": transformers.__version__,
                                 "transformer_lens": md.version("transformer-lens"),
                                 "nnsight": md.version("nnsight")},
                    "prompts": []}
    t0 = time.perf_counter()
    ct_dir = Path(job["ct_dir"])
    transcoders, config = load_transcoders_from_cache(ct_dir.name, cache_dir=ct_dir.parent, device=torch.device("cpu"),
                                                      dtype=torch.float32, lazy_encoder=False, lazy_decoder=False)
    result["transcoder_config"] = {k: config[k] for k in sorted(config)}
    model_dir = Path(job["model_dir"])
    tok_dir = out / "tokenizer"
    tokenizer = _peer_tokenizer(model_dir / "tokenizer", tok_dir, job["bos_token"])
    cfg_dict = json.loads((model_dir / "config.json").read_text())
    # tokenizer_name: circuit-tracer's create_graph_files loads the tokenizer by this name (a local folder here)
    cfg = HookedTransformerConfig(**cfg_dict, device="cpu", dtype=torch.float32, tokenizer_name=str(tok_dir))
    model = TransformerLensReplacementModel.from_config(cfg, transcoders, tokenizer=tokenizer,
                                                        default_padding_side="right")
    model.tokenizer = tokenizer  # keep our BOS (<|endoftext|>), as sfc_core.model does
    state = load_file(str(model_dir / "model.safetensors"))
    state["unembed.W_U"] = state["embed.W_E"].T  # tied; the cache stores it once
    # ReplacementModel wraps each MLP (``mlp.old_mlp``) and the unembedding (``unembed.old_unembed``)
    state = {(k.replace(".mlp.", ".mlp.old_mlp.", 1) if k.startswith("blocks.") else
              "unembed.old_unembed." + k[len("unembed."):] if k.startswith("unembed.") else k): v
             for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    params = dict(model.named_parameters())
    missing = [k for k in missing if k in params and not k.startswith("transcoders.")]
    if missing or unexpected:
        print(f"our weights do not fit circuit-tracer's model: missing {missing[:3]}, unexpected {unexpected[:3]}",
              file=sys.stderr)
        return 4
    model.eval()
    result["build_s"] = round(time.perf_counter() - t0, 2)
    print(f"[peer] circuit-tracer {circuit_tracer.__version__} model + {len(transcoders)} transcoders built in "
          f"{result['build_s']} s", file=sys.stderr, flush=True)

    if job.get("fix_error_ids", True):
        _fix_error_node_ids()
    graph_dir = out / "graphs"
    W_U = model.unembed.W_U.detach()
    for p in job["prompts"]:
        tokens = torch.tensor(p["tokens"], dtype=torch.long)
        logits, acts = model.get_activations(tokens[None])
        logits = logits[0].float()
        save_file({"logits": logits.contiguous(), "activations": acts.float().contiguous()},
                  str(out / f"{p['id']}_check.safetensors"))
        a, b = int(p["answer_id"]), int(p["wrong_id"])
        target = CustomTarget(p["target_label"], 1.0, (W_U[:, a] - W_U[:, b]).float())
        t = time.perf_counter()
        with torch.enable_grad():
            graph = attribute(tokens, model, attribution_targets=[target], batch_size=int(job["batch_size"]),
                              max_feature_nodes=job.get("max_feature_nodes"), verbose=False)
        attribute_s = time.perf_counter() - t
        replacement, completeness = compute_graph_scores(graph)
        n_logits = len(graph.logit_targets)
        weights = torch.zeros(graph.adjacency_matrix.shape[0])
        weights[-n_logits:] = graph.logit_probabilities
        influence = compute_node_influence(graph.adjacency_matrix, weights)
        n_feat = len(graph.selected_features)
        n_pos = len(graph.input_tokens)
        order = torch.argsort(influence[:n_feat], descending=True)  # every visited feature, by influence
        top = []
        for i in order.tolist():
            j = int(graph.selected_features[i])
            layer, pos, feat = graph.active_features[j].tolist()
            top.append([layer, pos, feat, float(influence[i]), float(graph.activation_values[j])])
        err = influence[n_feat:n_feat + n_pos * graph.cfg.n_layers].sum()
        tok_infl = influence[n_feat + n_pos * graph.cfg.n_layers:n_feat + n_pos * (graph.cfg.n_layers + 1)].sum()
        t = time.perf_counter()
        create_graph_files(graph, slug=p["id"], output_path=str(graph_dir), node_threshold=job["node_threshold"],
                           edge_threshold=job["edge_threshold"])
        files_s = time.perf_counter() - t
        result["prompts"].append({
            "id": p["id"], "attribute_s": round(attribute_s, 2), "graph_files_s": round(files_s, 2),
            "n_active_features": int(graph.active_features.shape[0]), "n_visited_features": n_feat,
            "replacement_score": replacement, "completeness_score": completeness,
            "influence": {"features": float(influence[:n_feat].sum()), "errors": float(err),
                          "tokens": float(tok_infl)},
            "metric": float(logits[-1, a] - logits[-1, b]), "ranked": top,
            "graph_json": str(graph_dir / f"{p['id']}.json")})
        print(f"[peer] {p['id']}: {n_feat} of {graph.active_features.shape[0]} active features, attribute "
              f"{attribute_s:.1f} s", file=sys.stderr, flush=True)
    (out / "result.json").write_text(json.dumps(result, indent=1))
    return 0


# ====================================================================== our side (the project's Python)
def _check_peer(peer: str) -> str:
    """circuit-tracer's version under ``peer``.

    Raises:
        BenchError: ``peer`` is missing or circuit-tracer does not import there.
    """
    if not Path(peer).exists():
        raise BenchError(f"circuit-tracer is not installed: no peer Python at {peer}; run {PEER_HINT}")
    code = "import circuit_tracer, sys; sys.stdout.write(circuit_tracer.__version__)"
    proc = subprocess.run([peer, "-c", code], capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise BenchError(f"circuit-tracer is not importable with {peer} ({last}); run {PEER_HINT}")
    return proc.stdout.strip()


def _random_transcoders(folder: Path, model, d_sae: int, seed: int) -> None:
    """Random JumpReLU skip transcoders for every block of ``model`` in SAE Lens format under ``folder``: a stand-in
    with the shipped ones' shapes and hooks (encoder ~ N(0, 1/d_model) so pre-activations are ~ N(0, 1) on the
    normalised MLP input, θ = 1.6: ≈ 5 % of the features on; unit-norm decoder rows; no skip)."""
    import torch

    from sfc_core.transcoders import save_transcoder, to_sae_lens, transcoder_key

    d = int(model.cfg.d_model)
    g = torch.Generator().manual_seed(seed)
    for L in range(int(model.cfg.n_layers)):
        W_dec = torch.randn(d_sae, d, generator=g)
        weights = {"W_enc": torch.randn(d, d_sae, generator=g) / d ** 0.5, "b_enc": torch.zeros(d_sae),
                   "W_dec": W_dec / W_dec.norm(dim=-1, keepdim=True), "b_dec": torch.zeros(d),
                   "W_skip": torch.zeros(d, d), "threshold": torch.full((d_sae,), 1.6)}
        save_transcoder(to_sae_lens(weights, L), folder / transcoder_key(L))


def _our_features(model, sites, tokens):
    """Our transcoder activations ``[n_layers, pos, d_sae]`` on ``tokens`` ``[pos]`` (BOS position zeroed, as
    circuit-tracer does)."""
    import torch

    from sfc_core.transcoders import input_hook

    dicts = [getattr(s, "sae", s) for s in sites.values()]  # LoadedSAE or a bare TranscoderDictionary
    layers = sorted(d.layer for d in dicts)
    by_layer = {d.layer: d.transcoder for d in dicts}
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens[None], names_filter=[input_hook(L) for L in layers])
        f = torch.stack([by_layer[L].encode(cache[input_hook(L)])[0] for L in layers]).float()
    f[:, 0] = 0
    return f


def _score(model, sites, batch1, ct_ranked, top_k: int, ablation: str, repeat: int = 2) -> dict:
    """Our side on one pair (:class:`~sfc_core.pairs.PairBatch` of one row): AtP (position-resolved), our top-k
    transcoder latents by |effect|, their overlap with circuit-tracer's top-k by influence (``ct_ranked``: its visited
    features ``[layer, pos, feature, influence, activation]``, most influential first), and our faithfulness /
    completeness of both sets, alone and with every error node kept.

    AtP gives exactly 0 at positions before the first token where the clean and corrupted prompts differ (both runs
    agree there), so ``overlap_where_pair_differs`` also compares against circuit-tracer's top-k among the later
    positions only. ``attribute_s``: the fastest of ``repeat`` runs of ``prepare_runs`` + AtP (this machine's CPUs
    are shared; the first run also pays one-off costs)."""
    from sfc_core import nodes as N
    from sfc_core.attribution import attribute, prepare_runs, shared_prefix_length
    from sfc_core.evaluation import score_circuits
    from sfc_core.transcoders import output_hook

    ours_s = float("inf")
    for _ in range(max(1, repeat)):
        t = time.perf_counter()
        runs = prepare_runs(model, sites, batch1)
        attr = attribute(runs, "atp", aggregation="none")
        ours_s = min(ours_s, time.perf_counter() - t)
    ours = attr.space.ranked(attr.effects, limit=top_k, kind="latent")
    theirs = [N.latent(output_hook(L), feat, pos) for L, pos, feat, *_ in ct_ranked[:top_k]]
    first_diff = shared_prefix_length(batch1)
    theirs_late = [N.latent(output_hook(L), feat, pos) for L, pos, feat, *_ in ct_ranked if pos >= first_diff][:top_k]
    ours_ids = {n.id for n in ours}
    both = ours_ids & {n.id for n in theirs}
    union = ours_ids | {n.id for n in theirs}
    errors = [e.at(p) for e in runs.space.errors() for p in range(1, batch1.pos)]
    t = time.perf_counter()
    s_ours, s_ct, s_ours_e, s_ct_e = score_circuits(runs, [ours, theirs, ours + errors, theirs + errors],
                                                    ablation=ablation, aggregation="none")
    score_s = time.perf_counter() - t
    return {
        "attribute_s": round(ours_s, 2), "score_s": round(score_s, 2),
        "m_clean": float(runs.m_clean.mean()), "m_corrupted": float(runs.m_corrupted.mean()),
        "first_differing_position": first_diff,
        "top": [[n.layer, n.position, n.index, attr.space.value(attr.effects, n)] for n in ours],
        "overlap": len(both) / max(1, top_k), "jaccard": len(both) / max(1, len(union)),
        "overlap_where_pair_differs": len(ours_ids & {n.id for n in theirs_late}) / max(1, top_k),
        "ct_top_in_ours_top_k_rank": sorted(i for i, n in enumerate(ours) if n.id in {m.id for m in theirs}),
        "ct_top_abs_atp_effect_sum": sum(abs(attr.space.value(attr.effects, n)) for n in theirs),
        "ours_top_abs_atp_effect_sum": sum(abs(attr.space.value(attr.effects, n)) for n in ours),
        "faithfulness": {"ours_top": s_ours.as_dict(), "ct_top": s_ct.as_dict(),
                         "ours_top_with_errors": s_ours_e.as_dict(), "ct_top_with_errors": s_ct_e.as_dict()},
    }


def _fmt(v, nd=3):
    return "–" if v is None else f"{v:.{nd}f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--transcoders", default=None, help="folder of L{layer}_transcoder folders (default: assets)")
    ap.add_argument("--random", type=int, default=None, metavar="D_SAE",
                    help="use random transcoders of this width for every layer instead (pipeline check)")
    ap.add_argument("--tasks", default="ioi,sva", help="built-in tasks whose clean prompts to attribute")
    ap.add_argument("--n", type=int, default=2, help="pairs per task")
    ap.add_argument("--top-k", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=2, help="time our AtP as the fastest of this many runs")
    ap.add_argument("--ablation", default="mean", help="our faithfulness' ablation (sfc_core.ablation)")
    ap.add_argument("--max-feature-nodes", type=int, default=2048,
                    help="circuit-tracer's max_feature_nodes (most influential first; 0: all)")
    ap.add_argument("--batch-size", type=int, default=128, help="circuit-tracer's backward batch size")
    ap.add_argument("--node-threshold", type=float, default=0.8, help="create_graph_files' node_threshold")
    ap.add_argument("--edge-threshold", type=float, default=0.98, help="create_graph_files' edge_threshold")
    ap.add_argument("--original-error-ids", action="store_true",
                    help="keep circuit-tracer 0.5.0's error-node ids in the graph files (they can collide with "
                         "layer-0 features; default: its upstream fix's ids, see _fix_error_node_ids)")
    ap.add_argument("--peer-python", default=os.environ.get("SFC_PEER_PYTHON", str(DEFAULT_PEER)),
                    help="Python with circuit-tracer (default .venv-peer/bin/python)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads on both sides")
    ap.add_argument("--keep", default=None, help="keep the exported folder and graph files here")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker)
    try:
        return _bench(args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _bench(args) -> int:
    try:
        import sae_lens  # noqa: F401  (our side needs the project's pinned stack)
        import torch

        from sfc_core import defaults
        from sfc_core.errors import SFCError
    except ImportError as exc:
        raise BenchError(f"run this bench with the project's Python (.venv/bin/python), not {sys.executable} "
                         f"({exc}); it runs circuit-tracer with --peer-python itself") from None
    ct_version = _check_peer(args.peer_python)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.top_k < 1 or args.n < 1:
        raise BenchError("--top-k and --n must be at least 1")
    tmp_root = (Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="sfc-ct-bench-"))).resolve()
    tmp_root.mkdir(parents=True, exist_ok=True)
    try:
        return _run(args, ct_version, torch, defaults, tmp_root)
    except SFCError as exc:
        raise BenchError(str(exc)) from None
    finally:
        if not args.keep:
            shutil.rmtree(tmp_root, ignore_errors=True)


def _run(args, ct_version, torch, defaults, tmp_root: Path) -> int:
    """The bench in ``tmp_root`` (exported transcoders, the peer's job, outputs and graph files); see the module
    doc."""
    import importlib.metadata as md

    from _report import table
    from safetensors.torch import load_file

    from sfc_core import model as M
    from sfc_core.errors import SFCError
    from sfc_core.export import read_graph_json
    from sfc_core.nodes import kind_of, latent
    from sfc_core.pairs import token_strs, tokenize_pairs
    from sfc_core.peer_export import export_circuit_tracer
    from sfc_core.tasks import get_task_pairs
    from sfc_core.transcoders import load_bundled_transcoders, output_hook

    figures: dict = {"peer_python": args.peer_python,
                     "versions": {"ours": {p: md.version(p) for p in ("torch", "transformers", "transformer-lens",
                                                                      "sae-lens")}}}
    t = time.perf_counter()
    model = M.load_model()
    model_dir = M._converted_dir()  # our converted config + weights + tokenizer, what the peer builds from
    figures["model_load_s"] = round(time.perf_counter() - t, 2)
    if args.random:
        src = tmp_root / "random_transcoders"
        if not src.is_dir():
            _random_transcoders(src, model, args.random, seed=0)
        figures["transcoders"] = f"random (d_sae {args.random}, seed 0)"
    else:
        src = Path(args.transcoders) if args.transcoders else defaults.TRANSCODER_DIR
        figures["transcoders"] = str(src)
    ct_dir = tmp_root / "circuit_tracer_transcoders"
    t = time.perf_counter()
    export_circuit_tracer(src, ct_dir, defaults.BUNDLED_MODEL_NAME, n_layers=model.cfg.n_layers,
                          d_model=model.cfg.d_model, overwrite=True)
    figures["export_s"] = round(time.perf_counter() - t, 2)
    sites = load_bundled_transcoders(model, root=src)
    first = next(iter(sites.values()))
    d_sae = int(getattr(first, "sae", first).cfg.d_sae)  # LoadedSAE or a bare TranscoderDictionary
    figures.update(d_sae=d_sae, n_layers=int(model.cfg.n_layers), top_k=args.top_k, ablation=args.ablation,
                   max_feature_nodes=args.max_feature_nodes or None, batch_size=args.batch_size,
                   metric="logit_diff (answer - wrong answer)", torch_threads=torch.get_num_threads(),
                   graph_files_error_node_ids="0_{layer}_{pos} (circuit-tracer 0.5.0)" if args.original_error_ids
                   else "{layer}_-1_{pos} (circuit-tracer PR #102)")

    prompts, pairs1 = [], {}
    for task in [s.strip() for s in args.tasks.split(",") if s.strip()]:
        batch = tokenize_pairs(model, get_task_pairs(model, task, n=args.n))
        for i in range(batch.n):
            b1 = batch.subset([i])
            pid = f"{task}-{i}"
            pair = b1.pairs[0]
            tokens = b1.clean_tokens[0, :int(b1.last_pos[0]) + 1]
            pairs1[pid] = (b1, tokens, pair)
            prompts.append({"id": pid, "tokens": tokens.tolist(), "answer_id": int(b1.answer_ids[0]),
                            "wrong_id": int(b1.wrong_ids[0]),
                            "target_label": f"logit({pair.answer}) - logit({pair.wrong_answer})"})
    peer_out = tmp_root / "peer"
    peer_out.mkdir(exist_ok=True)
    job = {"ct_dir": str(ct_dir), "model_dir": str(model_dir), "bos_token": M.BOS_TOKEN, "prompts": prompts,
           "max_feature_nodes": args.max_feature_nodes or None, "batch_size": args.batch_size, "top_k": args.top_k,
           "node_threshold": args.node_threshold, "edge_threshold": args.edge_threshold, "out_dir": str(peer_out),
           "threads": args.threads, "fix_error_ids": not args.original_error_ids}
    job_path = tmp_root / "job.json"
    job_path.write_text(json.dumps(job))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    t = time.perf_counter()
    proc = subprocess.run([args.peer_python, str(Path(__file__).resolve()), "--worker", str(job_path)], env=env,
                          capture_output=True, text=True, check=False)
    figures["peer_wall_s"] = round(time.perf_counter() - t, 2)
    sys.stderr.write("".join(line + "\n" for line in proc.stderr.splitlines() if line.startswith("[peer]")))
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()] or ["(no output)"]
        raise BenchError(f"circuit-tracer run failed (exit {proc.returncode}): {lines[-1].strip()[:400]}")
    peer = json.loads((peer_out / "result.json").read_text())
    figures["versions"]["peer"] = peer["versions"]
    figures["peer_build_s"] = peer["build_s"]
    figures["transcoder_config"] = peer["transcoder_config"]

    rows, out_prompts = [], []
    for pr in peer["prompts"]:
        b1, tokens, pair = pairs1[pr["id"]]
        check = load_file(str(peer_out / f"{pr['id']}_check.safetensors"))
        with torch.no_grad():
            our_logits = model(tokens[None])[0].float()
        ours_f = _our_features(model, sites, tokens)
        theirs_f = check["activations"]
        logit_diff = float((check["logits"] - our_logits).abs().max())
        act_diff = float((theirs_f - ours_f).abs().max())
        on_mismatch = int(((theirs_f > 0) != (ours_f > 0)).sum())
        ct_top = pr["ranked"][:args.top_k]
        try:
            G = read_graph_json(pr["graph_json"])
            kinds: dict[str, int] = {}
            for node, d in G.nodes(data=True):
                kinds[kind_of(node, d)] = kinds.get(kind_of(node, d), 0) + 1
            read_back = {"nodes": G.number_of_nodes(), "edges": G.number_of_edges(), "kinds": kinds,
                         "top_k_in_pruned_graph": sum(1 for L, pos, feat, *_ in ct_top
                                                      if latent(output_hook(L), feat, pos).id in G)}
        except SFCError as exc:  # e.g. circuit-tracer 0.5.0's colliding error-node ids (--original-error-ids)
            read_back = {"error": str(exc)}
        ours = _score(model, sites, b1, pr["ranked"], args.top_k, args.ablation, args.repeat)
        entry = {
            "id": pr["id"], "clean": pair.clean, "answer": pair.answer, "wrong_answer": pair.wrong_answer,
            "tokens": token_strs(model.tokenizer, tokens.tolist()),
            "forward_check": {"logits_max_abs_diff": logit_diff, "activations_max_abs_diff": act_diff,
                              "active_set_mismatches": on_mismatch, "metric_ct": pr["metric"],
                              "metric_ours": ours["m_clean"]},
            "circuit_tracer": {k: pr[k] for k in ("attribute_s", "graph_files_s", "n_active_features",
                                                   "n_visited_features", "replacement_score", "completeness_score",
                                                   "influence", "graph_json")}
                              | {"top": ct_top, "graph_read_back": read_back},
            "ours": ours,
        }
        out_prompts.append(entry)
        f = ours["faithfulness"]
        rows.append([pr["id"], len(tokens), f"{pr['attribute_s']:.1f}", f"{ours['attribute_s']:.1f}",
                     f"{ours['overlap']:.2f} ({ours['overlap_where_pair_differs']:.2f})",
                     _fmt(pr["replacement_score"]), _fmt(pr["completeness_score"]),
                     _fmt(f["ct_top"]["faithfulness"]), _fmt(f["ours_top"]["faithfulness"]),
                     _fmt(f["ct_top_with_errors"]["faithfulness"]), _fmt(f["ours_top_with_errors"]["faithfulness"]),
                     f"{logit_diff:.1e}"])
    figures["prompts"] = out_prompts
    n = len(out_prompts)
    figures["summary"] = {
        "prompts": n,
        "ct_attribute_s_mean": sum(p["circuit_tracer"]["attribute_s"] for p in out_prompts) / n,
        "ours_attribute_s_mean": sum(p["ours"]["attribute_s"] for p in out_prompts) / n,
        "overlap_mean": sum(p["ours"]["overlap"] for p in out_prompts) / n,
        "overlap_where_pair_differs_mean": sum(p["ours"]["overlap_where_pair_differs"] for p in out_prompts) / n,
        "logits_max_abs_diff": max(p["forward_check"]["logits_max_abs_diff"] for p in out_prompts),
        "activations_max_abs_diff": max(p["forward_check"]["activations_max_abs_diff"] for p in out_prompts),
    }
    print(f"\ncircuit-tracer {ct_version} vs SFC AtP (aggregation none) on {figures['transcoders']}, "
          f"top-{args.top_k} features, {args.ablation} ablation; seconds on this machine "
          f"({torch.get_num_threads()} torch threads)\n")
    table(["prompt", "tokens", "CT s", f"ours s (min of {args.repeat})", f"top-{args.top_k} overlap (where pair differs)", "CT replacement", "CT completeness",
           "faithf. CT set", "faithf. our set", "faithf. CT set + ε", "faithf. our set + ε", "max |Δlogit|"], rows)
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=1))
        print(f"\nfigures written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
