"""The explorer's default recompute (issue 4): the IOI preset, AtP, edges among the app's edge pool.

Times what *Find circuit* runs once the model and SAEs are cached (the app's warm recompute),
stage by stage, and a slider re-render from the cached effects and edges (re-selection, then
the Plotly figure; the app adds its feature labels and the browser's drawing).

    .venv/bin/python bench/bench_app.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import time

from _report import emit


def main() -> None:
    from sfc_core import defaults
    from sfc_core.discovery import DiscoverConfig, discover
    from sfc_core.model import load_model
    from sfc_core.saes import load_bundled_saes
    from sfc_core.tasks import get_task_pairs
    from sfc_core.viz import circuit_figure

    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    t = time.perf_counter()
    model = load_model()
    saes = load_bundled_saes(model)
    out: dict = {"load_s": round(time.perf_counter() - t, 2), "n_pairs": defaults.APP_N_PAIRS,
                 "edge_pool": defaults.APP_EDGE_POOL, "recompute_s": [], "stages_s": []}
    pairs = get_task_pairs(model, "ioi", n=defaults.APP_N_PAIRS)
    for _ in range(args.repeats):
        t = time.perf_counter()
        d = discover(model, saes, pairs, DiscoverConfig(method="atp"), edge_pool=defaults.APP_EDGE_POOL)
        out["recompute_s"].append(round(time.perf_counter() - t, 2))
        out["stages_s"].append(d.metadata["timings_s"])
    t = time.perf_counter()
    G = d.select(top_k=30)
    out["reselect_s"] = round(time.perf_counter() - t, 4)
    circuit_figure(G)  # the app has built figures before a slider moves: time a warm build
    t = time.perf_counter()
    circuit_figure(G)
    out["figure_s"] = round(time.perf_counter() - t, 4)
    emit(out)


if __name__ == "__main__":
    main()
