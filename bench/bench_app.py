"""The explorer's default recompute (issue 4): the IOI preset, AtP, edges among the app's edge pool.

Times what *Find circuit* runs once the model and SAEs are cached (the app's warm recompute),
stage by stage, and a slider re-render from the cached effects and edges (re-selection, then
the Plotly figure; the app adds its feature labels and the browser's drawing).

``first_screen`` (issue 12, point 8) times the whole default first screen, warm: Find circuit, the
target-faithfulness selection (0.8, mean ablation, real evaluations), automatic labels, the collapsed
figure; and reports the circuit's size, faithfulness and the number of markers drawn.

``view_redraw_ms`` (issue 13, point 3) times what the explorer's circuit-view fragment does on a top-k slider
move before the graph is sent (re-selection of a 100-node circuit, labels, display filter, collapse, figure
with a highlighted node, figure JSON); the faithfulness of the new selection follows the graph
(``score_after_redraw_s``, one ablated forward pass).

    .venv/bin/python bench/bench_app.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _report import emit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the app's pages package, for its label lookups


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
    out.update(view_redraw(model, saes, d))
    out["first_screen"] = first_screen(model, saes, pairs)
    emit(out)


def view_redraw(model, saes, d, moves: tuple[int, ...] = (100, 99, 100, 99, 100)) -> dict:
    """Milliseconds of the circuit view's work before the graph is sent, per top-k slider move (median, all)."""
    import statistics

    from pages._shared import display as S
    from pages._shared import panel
    from sfc_core.annotations import attach_auto_labels
    from sfc_core.collapse import MAX_NODES, collapse, filter_view
    from sfc_core.features import auto_label_lookup
    from sfc_core.viz import circuit_figure

    logit_tokens, flags, auto = panel.logit_token_lookup(model, saes), panel.flag_lookup(saes), auto_label_lookup(saes)
    times, score_s = [], []
    for k in moves:
        t = time.perf_counter()
        G = d.select(top_k=k, ablation="mean")
        attach_auto_labels(G, auto)
        pick = S.ranked_node_ids(G)[0]
        fig = circuit_figure(collapse(filter_view(G), MAX_NODES), S.feature_labels(G, logit_tokens, flags),
                             highlight=pick)
        fig.to_json()
        times.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        d.scores(G, "mean")
        score_s.append(time.perf_counter() - t)
    return {"view_redraw_ms": round(statistics.median(times[1:]), 1), "view_redraw_all_ms": [round(x, 1) for x in times],
            "score_after_redraw_s": round(statistics.median(score_s), 2)}


def first_screen(model, saes, pairs) -> dict:
    """The default first screen, warm: discover, target selection, labels, collapsed figure (seconds)."""
    from sfc_core import defaults
    from sfc_core.annotations import attach_auto_labels
    from sfc_core.collapse import MAX_NODES, collapse
    from sfc_core.discovery import DiscoverConfig, discover
    from sfc_core.features import auto_label_lookup
    from sfc_core.viz import circuit_figure

    t0 = time.perf_counter()
    d = discover(model, saes, pairs, DiscoverConfig(method="atp"), edge_pool=defaults.APP_EDGE_POOL)
    t1 = time.perf_counter()
    G = d.select(target_faithfulness=defaults.TARGET_FAITHFULNESS, ablation="mean")
    scores = d.scores(G, "mean")
    t2 = time.perf_counter()
    n_labelled = attach_auto_labels(G, auto_label_lookup(saes))
    drawn = collapse(G, MAX_NODES)
    fig = circuit_figure(drawn)
    t3 = time.perf_counter()
    markers = sum(len(tr.customdata) for tr in fig.data if tr.customdata is not None) - 2  # less embed, metric
    search = G.graph["target_search"]
    return {"total_s": round(t3 - t0, 2), "find_s": round(t1 - t0, 2), "target_search_s": round(t2 - t1, 2),
            "labels_and_figure_s": round(t3 - t2, 2), "nodes": search["n_nodes"], "reached": search["reached"],
            "faithfulness": round(scores["faithfulness"], 3), "completeness": round(scores["completeness"], 3),
            "markers_drawn": markers, "latents_labelled": n_labelled}


if __name__ == "__main__":
    main()
