"""Selection-method benchmark (issue 5): bundled model, all bundled SAEs, 20 pairs, this CPU.

Prints seconds for one mask training run (200 steps), a 5-point λ sweep (optional, slow), and
FAP-Synergy at K=50, plus the faithfulness of what they select.

    .venv/bin/python bench/bench_selection.py [--task ioi] [--n 20] [--steps 200] [--sweep] [--no-mask] [--json out.json]
"""

from __future__ import annotations

import argparse
import time

from _report import emit


def main() -> None:
    from sfc_core.attribution import prepare_runs
    from sfc_core.evaluation import score_circuits
    from sfc_core.fap import fap_scores, fap_select, fap_synergy_select
    from sfc_core.masks import MaskConfig, lambda_sweep, train_mask
    from sfc_core.model import load_model
    from sfc_core.pairs import tokenize_pairs
    from sfc_core.saes import load_bundled_saes
    from sfc_core.tasks import get_task_pairs

    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="ioi")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--lam", type=float, default=1e-3)
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--no-mask", action="store_true", help="skip the single mask training run")
    ap.add_argument("--pool", type=int, default=24)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    model = load_model()
    saes = load_bundled_saes(model)
    runs = prepare_runs(model, saes, tokenize_pairs(model, get_task_pairs(model, args.task, n=args.n)))
    errors = runs.space.errors()
    out: dict = {"task": args.task, "n_pairs": runs.n, "saes": len(saes)}

    if not args.no_mask:
        t = time.perf_counter()
        mask = train_mask(runs, MaskConfig(lam=args.lam, steps=args.steps))
        out["mask_train_s"] = round(time.perf_counter() - t, 2)
        out["mask_steps"] = args.steps
        out["mask_latents"] = mask.n_latents()
        out["mask_faithfulness"] = score_circuits(runs, [mask.nodes(runs)])[0].faithfulness

    scores = fap_scores(runs)
    t = time.perf_counter()
    syn = fap_synergy_select(runs, 50, synergy_pool=args.pool, scores=scores)
    out["fap_synergy_k50_s"] = round(time.perf_counter() - t, 2)
    out["synergy_pool"] = args.pool
    k50, k75 = fap_select(runs, 50, scores), fap_select(runs, 75, scores)
    s = score_circuits(runs, [syn.nodes + errors, k50.nodes + errors, k75.nodes + errors])
    out["faithfulness_fap_synergy_k50"] = s[0].faithfulness
    out["faithfulness_fap_k50"] = s[1].faithfulness
    out["faithfulness_fap_k75"] = s[2].faithfulness
    if args.sweep:
        t = time.perf_counter()
        lambda_sweep(runs, [1e-4, 3e-4, 1e-3, 3e-3, 1e-2], MaskConfig(steps=args.steps))
        out["mask_sweep5_s"] = round(time.perf_counter() - t, 2)
    emit(out, args.json)


if __name__ == "__main__":
    main()
