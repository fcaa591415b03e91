"""Memory and time against the number of prompt pairs (issue 16): bundled model, all bundled SAEs, IOI pairs.

Each (method, n) runs in a fresh child process, so its peak RSS is its own: model + SAEs + the attribution of n
pairs, streamed in pair batches sized from the memory budget (``--pair-batch 0``: the budget's batch; ``-1``: all
pairs in one batch, the old behaviour). Prints, per row, seconds (attribution only, model load excluded), peak RSS
in GB, the pair batch used and seconds per pair, so that linear time and flat memory can be read off.

    .venv/bin/python bench/bench_memory.py [--n 20,200,1000] [--methods atp,ig] [--pair-batch 0] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def child(method: str, n: int, pair_batch: int, steps: int, threads: int) -> dict:
    """One measurement in this process (called with ``--child``)."""
    import torch

    from sfc_core.batching import attribute_pairs
    from sfc_core.model import load_model
    from sfc_core.pairs import tokenize_pairs
    from sfc_core.saes import load_bundled_saes
    from sfc_core.tasks import get_task_pairs

    if threads:
        torch.set_num_threads(threads)
    model = load_model()
    saes = load_bundled_saes(model)
    batch = tokenize_pairs(model, get_task_pairs(model, "ioi", n=n))
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    t0 = time.perf_counter()
    attr = attribute_pairs(model, saes, batch, method=method, steps=steps,
                           pair_batch=None if pair_batch == 0 else (batch.n if pair_batch < 0 else pair_batch))
    seconds = time.perf_counter() - t0
    top = max((float(e.abs().max()) for e in attr.effects))
    return {"method": method, "n_pairs": batch.n, "tokens": batch.pos, "pair_batch": attr.timings_s.get("pair_batch"),
            "seconds": round(seconds, 2), "s_per_pair": round(seconds / batch.n, 4),
            "rss_after_load_gb": round(rss_loaded, 2),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
            "max_abs_effect": round(top, 4), "m_clean": round(attr.m_clean, 4)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", default="20,200,1000")
    ap.add_argument("--methods", default="atp,ig")
    ap.add_argument("--pair-batch", type=int, default=0, help="0: from the memory budget; -1: one batch")
    ap.add_argument("--steps", type=int, default=10, help="IG steps")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.methods, int(args.n), args.pair_batch, args.steps, args.threads)))
        return
    rows = []
    for method in args.methods.split(","):
        for n in (int(v) for v in args.n.split(",")):
            cmd = [sys.executable, __file__, "--child", "--methods", method, "--n", str(n), "--pair-batch",
                   str(args.pair_batch), "--steps", str(args.steps), "--threads", str(args.threads)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                rows.append({"method": method, "n_pairs": n, "error": r.stderr.strip().splitlines()[-1:]})
            else:
                rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    from _report import emit, table

    table(["method", "pairs", "pair batch", "seconds", "s / pair", "peak RSS GB", "RSS after load GB"],
          [[r["method"], r["n_pairs"], r.get("pair_batch"), r.get("seconds"), r.get("s_per_pair"),
            r.get("peak_rss_gb"), r.get("rss_after_load_gb")] for r in rows])
    emit({"rows": rows}, args.json)


if __name__ == "__main__":
    main()
