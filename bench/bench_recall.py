"""Which attribution method finds the nodes that matter (issue 12, point 7): recall of exact patching's top-10.

For each registered attribution method that scores every node without one run per node (AtP, AtP* — AtP with
GradDrop, IG with 10 steps), on the bundled model with all bundled SAEs: seconds for the node effects (the
fastest of ``--repeats`` runs; the SAE decoders and the shared-prefix cache are built before timing), the ratio to
the bare forward+backward of the same batch (fastest of ``--repeats``), **recall@10-in-100** — the fraction of
exact patching's 10 largest-|effect| nodes found in the method's top 100 — and recall per second.

Exact patching of every node (~7,000 here) costs one forward pass each, so the exact top-10 is taken over the
union of every method's top ``--pool`` nodes (default 300), which is exact as long as the true top-10 lies in
that union (reported: how many of the exact top-10 sit beyond rank 100 of every method).

    .venv/bin/python bench/bench_recall.py [--tasks ioi,sva] [--n 20] [--methods atp,atp_star,ig] [--pool 300]
        [--repeats 1] [--json out.json]

Prints the figures as JSON, then one table (``_report.table``).
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from _report import emit, fwd_bwd_floor, table


def main() -> None:
    from sfc_core import attribution as A
    from sfc_core.model import load_model
    from sfc_core.pairs import tokenize_pairs
    from sfc_core.saes import load_bundled_saes
    from sfc_core.tasks import get_task_pairs

    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default="ioi,sva")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--methods", default="atp,atp_star,ig")
    ap.add_argument("--pool", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=1, help="time each method (and the floor) this often, keep the fastest")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    model = load_model()
    saes = load_bundled_saes(model)
    out: dict = {"n_pairs": args.n, "pool": args.pool, "repeats": args.repeats, "tasks": {},
                 "load_average_at_start": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count()}
    for task in args.tasks.split(","):
        batch = tokenize_pairs(model, get_task_pairs(model, task, n=args.n))

        fwd_bwd_floor(model, batch)  # warm-up
        floor_s = min(_seconds(fwd_bwd_floor, model, batch) for _ in range(args.repeats))
        runs = A.prepare_runs(model, saes, batch)
        runs.decoder(0), runs.prefix()  # built once per pair set, shared by the methods: not timed
        row: dict = {"floor_fwd_bwd_s": round(floor_s, 3), "methods": {}}
        ranked = {}
        for name in args.methods.split(","):
            seconds = float("inf")
            for _ in range(args.repeats):
                runs._clean_grads = None  # AtP's cached gradient: each repeat computes it again
                t = time.perf_counter()
                attr = A.attribute(runs, name)
                seconds = min(seconds, time.perf_counter() - t)
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
            recall = sum(rank.get(n, 10**9) < 100 for n in top10) / 10
            row["methods"][name]["recall_at_10_in_100"] = recall
            row["methods"][name]["recall_per_second"] = round(recall / row["methods"][name]["seconds"], 3)
            row["methods"][name]["ranks_of_exact_top10"] = [rank.get(n) for n in top10]
        row["exact_top10_beyond_every_top100"] = sum(
            all(n not in set(r[:100]) for r in ranked.values()) for n in top10)
        out["tasks"][task] = row
    out["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]  # 1, 5, 15 min: others' jobs slow timings
    emit(out, args.json)
    table(["task", "method", "seconds", "x fwd+bwd", "recall@10-in-100", "recall/s", "ranks of exact top-10"],
          [[task, name, m["seconds"], m["over_floor"], m["recall_at_10_in_100"], m["recall_per_second"],
            ", ".join("-" if r is None else str(r) for r in m["ranks_of_exact_top10"])]
           for task, row in out["tasks"].items() for name, m in row["methods"].items()])


def _seconds(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
