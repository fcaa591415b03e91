"""Which attribution method finds the nodes that matter (issue 12, point 7): recall of exact patching's top-10.

For each registered attribution method that scores every node cheaply (AtP, IG), on the bundled model with all
bundled SAEs: seconds for the node effects, the ratio to the bare forward+backward of the same batch, and
**recall@10-in-100**: the fraction of exact patching's 10 largest-|effect| nodes found in the method's top 100.

Exact patching of every node (~7,000 here) costs one forward pass each, so the exact top-10 is taken over the
union of every method's top ``--pool`` nodes (default 300), which is exact as long as the true top-10 lies in
that union (reported: how many of the exact top-10 sit beyond rank 100 of every method).

    .venv/bin/python bench/bench_recall.py [--tasks ioi,sva] [--n 20] [--pool 300] [--json out.json]
"""

from __future__ import annotations

import argparse
import time

import torch

from _report import emit, fwd_bwd_floor


def main() -> None:
    from sfc_core import attribution as A
    from sfc_core.model import load_model
    from sfc_core.pairs import tokenize_pairs
    from sfc_core.saes import load_bundled_saes
    from sfc_core.tasks import get_task_pairs

    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default="ioi,sva")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--methods", default="atp,ig")
    ap.add_argument("--pool", type=int, default=300)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    model = load_model()
    saes = load_bundled_saes(model)
    out: dict = {"n_pairs": args.n, "pool": args.pool, "tasks": {}}
    for task in args.tasks.split(","):
        batch = tokenize_pairs(model, get_task_pairs(model, task, n=args.n))

        fwd_bwd_floor(model, batch)  # warm-up
        t = time.perf_counter()
        fwd_bwd_floor(model, batch)
        floor_s = time.perf_counter() - t
        runs = A.prepare_runs(model, saes, batch)
        row: dict = {"floor_fwd_bwd_s": round(floor_s, 3), "methods": {}}
        ranked = {}
        for name in args.methods.split(","):
            t = time.perf_counter()
            attr = A.attribute(runs, name)
            seconds = time.perf_counter() - t
            ranked[name] = runs.space.ranked(attr.effects)
            row["methods"][name] = {"seconds": round(seconds, 2), "over_floor": round(seconds / floor_s, 2)}
        union = list(dict.fromkeys(n for r in ranked.values() for n in r[:args.pool]))
        t = time.perf_counter()
        exact = A.exact_effects(runs, union)
        row["exact_seconds"] = round(time.perf_counter() - t, 1)
        row["exact_nodes"] = len(union)
        order = torch.argsort(exact.abs(), descending=True, stable=True).tolist()
        top10 = [union[j] for j in order[:10]]
        row["exact_top10"] = [(n.id, round(float(exact[j]), 4)) for n, j in zip(top10, order[:10])]
        for name, r in ranked.items():
            rank = {n: i for i, n in enumerate(r)}
            row["methods"][name]["recall_at_10_in_100"] = sum(rank.get(n, 10**9) < 100 for n in top10) / 10
            row["methods"][name]["ranks_of_exact_top10"] = [rank.get(n) for n in top10]
        row["exact_top10_beyond_every_top100"] = sum(
            all(n not in set(r[:100]) for r in ranked.values()) for n in top10)
        out["tasks"][task] = row
    emit(out, args.json)


if __name__ == "__main__":
    main()
