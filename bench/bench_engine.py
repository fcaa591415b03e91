"""Engine benchmark (issue 3): bundled model, all bundled SAEs, 20 IOI pairs, this CPU.

Prints seconds for AtP nodes, IG-10 nodes, edges among the top-50 nodes, exact patching of
the top-100 nodes, the bare forward+backward floor of the same batch without SAEs, peak RSS,
and AtP-vs-exact / IG-vs-exact Spearman and Pearson on the top-100 nodes (ranked by IG).

    .venv/bin/python bench/bench_engine.py [--task ioi] [--n 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from _report import emit, fwd_bwd_floor


def main() -> None:
    from sfc_core import attribution as A
    from sfc_core.circuit import select_nodes
    from sfc_core.discovery import pearson, spearman
    from sfc_core.edges import edge_effects
    from sfc_core.model import load_model
    from sfc_core.pairs import tokenize_pairs
    from sfc_core.saes import load_bundled_saes
    from sfc_core.tasks import get_task_pairs

    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="ioi")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_grad_enabled(False)

    t = time.perf_counter()
    model = load_model()
    saes = load_bundled_saes(model)
    load_s = time.perf_counter() - t
    batch = tokenize_pairs(model, get_task_pairs(model, args.task, n=args.n))
    out: dict = {"task": args.task, "n_pairs": batch.n, "tokens_per_prompt": batch.pos,
                 "saes": list(saes), "torch_threads": torch.get_num_threads(), "load_s": load_s}

    def timed(name, fn):
        t0 = time.perf_counter()
        value = fn()
        out[name] = round(time.perf_counter() - t0, 3)
        return value

    def floor():
        fwd_bwd_floor(model, batch)

    floor()  # warm-up
    timed("floor_fwd_bwd_s", floor)
    runs = timed("runs_s", lambda: A.prepare_runs(model, saes, batch))
    atp = timed("atp_nodes_s", lambda: A.atp(runs))
    out["atp_with_runs_s"] = round(out["atp_nodes_s"] + out["runs_s"], 3)
    ig = timed("ig10_nodes_s", lambda: A.ig(runs, steps=10))
    top50 = select_nodes(ig, top_k=50)
    timed("edges_top50_s", lambda: edge_effects(runs, top50, {n: ig.space.value(ig.effects, n) for n in top50}))
    top100 = select_nodes(ig, top_k=100)
    exact = timed("exact_top100_s", lambda: A.exact_effects(runs, top100))
    atp_v = torch.tensor([atp.space.value(atp.effects, n) for n in top100])
    ig_v = torch.tensor([ig.space.value(ig.effects, n) for n in top100])
    out["spearman_atp_exact"] = round(spearman(atp_v, exact), 4)
    out["spearman_ig_exact"] = round(spearman(ig_v, exact), 4)
    out["pearson_atp_exact"] = round(pearson(atp_v, exact), 4)
    out["pearson_ig_exact"] = round(pearson(ig_v, exact), 4)
    out["atp_over_floor"] = round(out["atp_nodes_s"] / out["floor_fwd_bwd_s"], 2)
    out["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 3)
    out["metric_clean"] = round(runs.m_clean.mean().item(), 3)
    out["metric_corrupted"] = round(runs.m_corrupted.mean().item(), 3)
    emit(out, args.json)


if __name__ == "__main__":
    main()
