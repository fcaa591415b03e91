"""How many latents does each SAE site need? (the budget behind a faithfulness target)

For every bundled site alone: keep that site's top-k latents by |IE| (and its error node),
ablate its other latents, leave every other site untouched, and print the faithfulness of
the result for several k. A target of 0.8 for a whole circuit needs roughly the product of
the per-site figures to reach it, so this shows which sites make a task expensive.

    .venv/bin/python bench/bench_site_budget.py [--task ioi] [--n 20] [--method ig]
        [--ablation mean|patch|zero|mean_all] [--ks 0,5,10,25,50,100,200] [--json out.json]
"""

from __future__ import annotations

import argparse

import torch

from _report import emit


def main() -> None:
    from sfc_core import attribution as A
    from sfc_core.ablation import ablation_values, circuit_metric
    from sfc_core.model import load_model
    from sfc_core.pairs import tokenize_pairs
    from sfc_core.saes import load_bundled_saes
    from sfc_core.tasks import get_task_pairs

    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="ioi")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--method", default="ig")
    ap.add_argument("--ablation", default="mean")
    ap.add_argument("--ks", default="0,5,10,25,50,100,200")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    ks = [int(k) for k in args.ks.split(",")]

    model = load_model()
    saes = load_bundled_saes(model)
    runs = A.prepare_runs(model, saes, tokenize_pairs(model, get_task_pairs(model, args.task, n=args.n)))
    attr = A.attribute(runs, args.method)
    none = runs.space.keep_masks([])
    every = [m | True for m in none]
    keeps = [every, none]
    for i, effects in enumerate(attr.effects):
        order = torch.argsort(effects[:-1].abs(), descending=True)
        for k in ks:
            keep = [m.clone() for m in every]
            keep[i][:-1] = False
            keep[i][order[:k]] = True
            keeps.append(keep)
    ms = circuit_metric(runs, keeps, ablation_values(runs, args.ablation)).tolist()
    full, empty = ms[0], ms[1]
    out = {"task": args.task, "n_pairs": runs.n, "method": args.method, "ablation": args.ablation,
           "m_full": round(full, 4), "m_empty": round(empty, 4), "latents_kept": ks, "faithfulness": {}}
    for i, site in enumerate(runs.sites):
        row = ms[2 + i * len(ks): 2 + (i + 1) * len(ks)]
        out["faithfulness"][site.hook_name] = [round((m - empty) / (full - empty), 3) for m in row]
    emit(out, args.json)


if __name__ == "__main__":
    main()
