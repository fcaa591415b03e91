"""Does a circuit hold elsewhere (issue 14, point 5)? Find a circuit on in-sample pairs of a built-in task, then
score the same node set on held-out pairs (other names, other templates or a fresh seed;
``sfc_core.generalisation``), next to its in-sample faithfulness.

For each task and split: AtP on the in-sample pairs (all bundled SAEs, position-aggregated), the circuit reaching
faithfulness 0.8 in-sample under mean ablation (``--target``) and the top-``--top-k`` circuit, each scored on both
sets. Prints JSON and a Markdown table.

    .venv/bin/python bench/bench_heldout.py --n 20 --splits ioi:names ioi:templates sva:templates sva_pp:seed
"""

from __future__ import annotations

import argparse
import time

from _report import emit, table


def main() -> None:
    from sfc_core.attribution import prepare_runs
    from sfc_core.discovery import DiscoverConfig, as_batch, discover
    from sfc_core.generalisation import heldout_scores, heldout_split
    from sfc_core.model import load_model
    from sfc_core.saes import load_bundled_saes

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--target", type=float, default=0.8)
    ap.add_argument("--top-k", type=int, default=100)
    ap.add_argument("--splits", nargs="+", default=["ioi:names", "ioi:templates", "sva:templates", "sva_pp:seed"])
    args = ap.parse_args()
    model = load_model()
    saes = load_bundled_saes(model)
    out, rows = {}, []
    for spec in args.splits:
        task, by = spec.split(":")
        t0 = time.perf_counter()
        inside, held = heldout_split(model, task, args.n, by)
        d = discover(model, saes, inside, DiscoverConfig(method="atp", edges=False))
        held_runs = prepare_runs(model, saes, as_batch(model, held, DiscoverConfig()))
        for rule, sel in ((f"target {args.target:g}", {"target_faithfulness": args.target}),
                          (f"top-{args.top_k}", {"top_k": args.top_k})):
            G = d.select(**sel, ablation="mean")
            res = heldout_scores(G, d.runs, held_runs, "mean", by)
            out[f"{spec} {rule}"] = res
            rows.append([task, by, rule, res["n_nodes"], f"{res['in_sample']['faithfulness']:.3f}",
                         f"{res['heldout']['faithfulness']:.3f}", f"{res['in_sample']['completeness']:.3f}",
                         f"{res['heldout']['completeness']:.3f}"])
        out[f"{spec} seconds"] = round(time.perf_counter() - t0, 1)
    emit(out)
    table(["task", "held out", "circuit", "nodes", "faithfulness in-sample", "held-out", "completeness in-sample",
           "held-out"], rows)


if __name__ == "__main__":
    main()
