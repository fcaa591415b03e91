"""Neurons vs features (issue 14 point 4; Marks et al. 2024, §4 and their appendix on neurons): how many nodes a
circuit of MLP neurons and a circuit of SAE features need for faithfulness 0.5 and 0.8 on the same pairs.

Both sides: AtP node effects (or ``--method``), top-n by |effect|, mean ablation (the corrupted prompts' mean per
template-aligned position) of every node outside the circuit; features = SAE latents and error nodes at the 7
bundled residual SAEs, neurons = ``blocks.L.mlp.hook_post`` at the same 7 layers (7 × 1536), resid = the residual
stream's basis directions at the SAEs' own hook points (7 × 576; same cut, same m(∅) as the features). Node counts come from
real evaluations (``smallest_faithful``); a faithfulness-vs-size curve at ``--sizes`` is printed too.

    .venv/bin/python bench/bench_neurons.py --task ioi --n 20 [--task sva,sva_pp] [--json out.json]
"""

from __future__ import annotations

import argparse
import time

import torch
from _report import emit, table


def main() -> None:
    from sfc_core.compare import neurons_vs_features
    from sfc_core.model import load_model
    from sfc_core.pairs import tokenize_pairs
    from sfc_core.saes import load_bundled_saes
    from sfc_core.tasks import get_task_pairs

    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="ioi,sva,sva_pp", help="task name(s), comma-separated")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--method", default="atp")
    ap.add_argument("--ablation", default="mean")
    ap.add_argument("--sizes", default="10,100,1000", help="curve sizes (nodes)")
    ap.add_argument("--targets", default="0.5,0.8")
    ap.add_argument("--units", default="neurons,resid,features",
                    help="sides: neurons (MLP hook_post at the SAE layers), resid (residual basis at the SAE hook "
                         "points), features (SAE latents + error nodes)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_grad_enabled(False)

    t = time.perf_counter()
    model = load_model()
    saes = load_bundled_saes(model)
    figures: dict = {"load_s": round(time.perf_counter() - t, 2), "method": args.method, "ablation": args.ablation,
                     "torch_threads": torch.get_num_threads(), "tasks": {}}
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    targets = [float(s) for s in args.targets.split(",") if s.strip()]
    rows = []
    for task in [s.strip() for s in args.task.split(",") if s.strip()]:
        batch = tokenize_pairs(model, get_task_pairs(model, task, n=args.n))
        t0 = time.perf_counter()
        out = neurons_vs_features(model, saes, batch, sizes=sizes, method=args.method, ablation=args.ablation,
                                  targets=targets, units=args.units.split(","))
        out["seconds"]["total"] = round(time.perf_counter() - t0, 2)
        out["tokens_per_prompt"] = batch.pos
        figures["tasks"][task] = out
        for unit in out["curves"]:
            c = out["curves"][unit]
            rows.append([task, out["n_pairs"], unit] + [out["n_for"][unit][str(x)] for x in targets]
                        + [out["pool"][unit], f"{c['m_full']:.3f}", f"{c['m_empty']:.3f}"]
                        + [f"{f:.3f}" if f is not None else "—" for f in c["faithfulness"]]
                        + [out["seconds"][unit]])
    emit(figures, args.json)
    table(["task", "pairs", "nodes"] + [f"n for F≥{x:g}" for x in targets]
          + ["pool", "m(M)", "m(∅)"] + [f"F@{s}" for s in sizes] + ["seconds"], rows)


if __name__ == "__main__":
    main()
