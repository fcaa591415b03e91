"""Record (or check) the figures of ``tests/integration/test_regression.py`` with today's engine.

Recomputes exactly what the test checks, on the bundled model and 20 pairs each of IOI and SVA, and
compares it figure by figure with the recorded files (max |difference| per figure; id lists compared
as lists). ``--write`` replaces the recorded files with the new figures.

    .venv/bin/python tests/integration/data/record_regression.py            # compare only
    .venv/bin/python tests/integration/data/record_regression.py --write    # compare, then re-record

Files: ``regression_main.json`` (per task: scalar and list figures, the AtP circuit as ``sfc-circuit``
JSON) and ``regression_main.safetensors`` (per task and site: AtP / IG effects, activations, FAP scores).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

DATA = Path(__file__).parent / "regression_main"
TASKS = ("ioi", "sva")


def compute(model, saes, name: str) -> tuple[dict, dict]:
    """The figures of one task: ``(json document, {tensor name: tensor})``."""
    from sfc_core.attribution import attribute, exact_effects
    from sfc_core.circuit import to_json
    from sfc_core.discovery import DiscoverConfig, discover, evaluate
    from sfc_core.evaluation import faithfulness_curve
    from sfc_core.fap import fap_scores, fap_select, fap_synergy_select
    from sfc_core.features import ablate_feature
    from sfc_core.masks import MaskConfig, train_mask
    from sfc_core.tasks import get_task_pairs

    t0 = time.perf_counter()
    pairs = get_task_pairs(model, name, n=20)
    d = discover(model, saes, pairs, DiscoverConfig(method="atp", top_k=30, edges=True))
    runs = d.runs
    ig = attribute(runs, "ig", steps=10)
    doc: dict = {"m_clean": runs.m_clean.tolist(), "m_corrupted": runs.m_corrupted.tolist()}
    tensors = {}
    for i in range(len(runs.sites)):
        tensors[f"{name}.atp.{i}"] = d.attribution.effects[i].contiguous()
        tensors[f"{name}.act.{i}"] = d.attribution.activations[i].contiguous()
        tensors[f"{name}.ig.{i}"] = ig.effects[i].contiguous()
    ranked = d.attribution.space.ranked(d.attribution.effects)
    top50 = ranked[:50]
    exact = exact_effects(runs, top50)
    doc["exact_top50"] = {n.id: float(v) for n, v in zip(top50, exact)}
    doc["atp_graph"] = to_json(d.graph)
    for ablation in ("mean", "zero", "patch", "mean_all"):
        doc[f"curve_{ablation}"] = faithfulness_curve(runs, ig.effects, [5, 10, 20, 50], ablation)
    doc["evaluate_graph"] = evaluate(runs, d.graph, sizes=[5, 10], ablation="mean")
    mask = train_mask(runs, MaskConfig(steps=10))
    doc["mask10"] = {"nodes": [n.id for n in mask.nodes(runs)], "losses": mask.losses}
    scores = fap_scores(runs)
    for i, s in enumerate(scores):
        tensors[f"{name}.fap.{i}"] = s.contiguous()
    doc["fap20"] = [n.id for n in fap_select(runs, 20, scores).nodes]
    syn = fap_synergy_select(runs, 10, synergy_pool=6, scores=scores)
    doc["fap_synergy10"] = {"nodes": [n.id for n in syn.nodes],
                            "synergy": {f"{a.id}|{b.id}": v for (a, b), v in syn.synergy.items()}}
    node = next(n for n in ranked if not n.is_error)
    site, k = runs.space.site(node), runs.space.column(node)
    panel = {"node": node.id}
    for ablation in ("zero", "mean_all", "mean"):
        r = ablate_feature(runs, site, k, ablation)
        panel[ablation] = {"after": r["after"], "mean_after": r["mean_after"]}
    doc["ablate_feature"] = panel
    doc["seconds"] = time.perf_counter() - t0
    return doc, tensors


def _numbers(x, prefix: str, out: dict) -> None:
    """Flatten ``x`` into ``{path: number}``, and id strings into ``{path: str}``."""
    if isinstance(x, dict):
        for k, v in x.items():
            _numbers(v, f"{prefix}.{k}", out)
    elif isinstance(x, list):
        for j, v in enumerate(x):
            _numbers(v, f"{prefix}[{j}]", out)
    elif isinstance(x, (int, float, str)) or x is None:
        out[prefix] = x


#: Figures the test checks: (name, path in the task's document). Timings and graph metadata are not figures.
FIGURES = (
    ("m_clean", "m_clean"), ("m_corrupted", "m_corrupted"), ("exact_top50", "exact_top50"),
    ("atp_graph.nodes", "atp_graph.nodes"), ("atp_graph.edges", "atp_graph.edges"),
    ("curve_mean", "curve_mean"), ("curve_zero", "curve_zero"), ("curve_patch", "curve_patch"),
    ("curve_mean_all", "curve_mean_all"), ("evaluate_graph", "evaluate_graph"),
    ("mask10.nodes", "mask10.nodes"), ("mask10.losses", "mask10.losses"), ("fap20", "fap20"),
    ("fap_synergy10.nodes", "fap_synergy10.nodes"), ("fap_synergy10.synergy", "fap_synergy10.synergy"),
    ("ablate_feature.zero", "ablate_feature.zero"), ("ablate_feature.mean_all", "ablate_feature.mean_all"),
    ("ablate_feature.mean", "ablate_feature.mean"),
)


NODE_FIELDS = ("id", "hook_name", "layer", "feature", "position", "effect", "activation")


def _get(doc: dict, path: str):
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    return doc


def compare(old: tuple[dict, dict], new: tuple[dict, dict]) -> list[tuple[str, str]]:
    """Per figure, ``(name, "max |diff| = …" or what differs)``."""
    rows = []
    for name in TASKS:
        o, n = old[0].get(name, {}), new[0][name]
        for label, path in FIGURES:
            a, b = _get(o, path), _get(n, path)
            if label.startswith("ablate_feature.mean") and _get(o, "ablate_feature.mean_all") is None:
                # the files of d393d65 hold the panel's mean over every corrupted token (mean_all's) as "mean"
                a = _get(o, "ablate_feature.mean") if label == "ablate_feature.mean_all" else None
            if a is None or b is None:
                rows.append((f"{name}.{label}", "new figure" if a is None else "missing"))
                continue
            if label == "atp_graph.nodes":  # the fields the test compares (the file format has grown since)
                a, b = ([{f: x.get(f) for f in NODE_FIELDS} for x in v] for v in (a, b))
            fa, fb = {}, {}
            _numbers(a, "", fa)
            _numbers(b, "", fb)
            if fa.keys() != fb.keys():
                rows.append((f"{name}.{label}", f"differs: {len(fa.keys() ^ fb.keys())} entries in one file only"))
                continue
            texts = [k for k in fa if isinstance(fa[k], str) or isinstance(fb[k], str) or fa[k] is None or fb[k] is None]
            changed = [k for k in texts if fa[k] != fb[k]]
            nums = [abs(fa[k] - fb[k]) for k in fa if k not in texts]
            worst = max(nums, default=0.0)
            note = f"max |diff| = {worst:.3g}"
            if changed:
                note += f"; {len(changed)} ids/labels differ"
            rows.append((f"{name}.{label}", note))
        for kind in ("atp", "act", "ig", "fap"):
            keys = [k for k in new[1] if k.startswith(f"{name}.{kind}.")]
            worst = 0.0
            for k in keys:
                if k not in old[1] or old[1][k].shape != new[1][k].shape:
                    worst = math.inf
                    break
                worst = max(worst, float((old[1][k].double() - new[1][k].double()).abs().max()))
            rows.append((f"{name}.tensors.{kind}", f"max |diff| = {worst:.3g}"))
    return rows


def main() -> None:
    from safetensors.torch import load_file, save_file

    from sfc_core.model import load_model
    from sfc_core.saes import load_bundled_saes

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="replace the recorded files with the new figures")
    args = ap.parse_args()
    model = load_model()
    saes = load_bundled_saes(model)
    doc, tensors = {}, {}
    for name in TASKS:
        doc[name], t = compute(model, saes, name)
        tensors.update(t)
    old = (json.loads(DATA.with_suffix(".json").read_text()), load_file(str(DATA.with_suffix(".safetensors"))))
    for label, note in compare(old, (doc, tensors)):
        print(f"{label:34s} {note}")
    if args.write:
        DATA.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
        save_file(tensors, str(DATA.with_suffix(".safetensors")))
        print(f"wrote {DATA.with_suffix('.json')} and {DATA.with_suffix('.safetensors')}")


if __name__ == "__main__":
    main()
