"""Model-internals benchmark (issue 14 point 6): bundled model, 20 IOI pairs of one template, this CPU.

Prints seconds for causal tracing (all 30 layers × all positions × resid_pre/attn_out/mlp_out, denoising), head
patching (30 layers × 9 heads, all positions), the logit lens (one forward pass with cache) and one path patching,
each also as a ratio to one plain forward pass of the same batch (clean prompts, ``model(tokens)``); with the IOI
read-out: where tracing puts the effect, the top heads, and path patching between the top two heads.

    .venv/bin/python bench/bench_internals.py [--n 20] [--chunk 64] [--json out.json]
"""

from __future__ import annotations

import argparse
import time

import torch

from _report import emit


def main() -> None:
    from sfc_core import heads, lens, tracing
    from sfc_core.model import load_model
    from sfc_core.pairs import tokenize_pairs

    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="ioi")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--chunk", type=int, default=tracing.DEFAULT_CHUNK)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)

    t = time.perf_counter()
    model = load_model()
    load_s = time.perf_counter() - t
    batch = tokenize_pairs(model, tracing.one_template_pairs(model, args.task, args.n))
    out: dict = {"task": args.task, "n_pairs": batch.n, "tokens_per_prompt": batch.pos,
                 "first_prompt": batch.pairs[0].clean, "torch_threads": torch.get_num_threads(),
                 "load_s": round(load_s, 3), "chunk": args.chunk}

    model(batch.clean_tokens)  # warm-up
    reps = []
    for _ in range(3):
        t0 = time.perf_counter()
        model(batch.clean_tokens)
        reps.append(time.perf_counter() - t0)
    fwd = min(reps)
    out["forward_s"] = round(fwd, 4)

    def timed(name, fn):
        t0 = time.perf_counter()
        value = fn()
        s = time.perf_counter() - t0
        out[f"{name}_s"] = round(s, 3)
        out[f"{name}_over_forward"] = round(s / fwd, 1)
        return value

    lr = timed("logit_lens", lambda: lens.logit_lens(model, batch))
    tr = timed("trace_3_sites", lambda: tracing.causal_trace(model, batch, chunk=args.chunk))
    out["trace_patched_copies"] = tr.rows_run
    out["trace_cells"] = len(tr.sites) * len(tr.layers) * batch.pos
    hp = timed("head_patching", lambda: heads.head_patching(model, batch, chunk=args.chunk))
    out["head_patched_copies"] = hp.rows_run

    # IOI read-out.
    last = int(batch.last_pos[0])
    s2 = int((batch.clean_tokens[0] != batch.corrupted_tokens[0]).nonzero()[0])
    out["tokens"] = tr.tokens
    out["s2_position"], out["final_position"] = s2, last
    out["m_clean"], out["m_corrupted"] = round(float(tr.m_clean.mean()), 4), round(float(tr.m_corr.mean()), 4)
    norm = tr.normalised("resid_pre")
    out["resid_pre_argmax_position_by_layer"] = [int(norm[i].argmax()) for i in range(norm.shape[0])]
    out["resid_pre_at_s2_by_layer"] = [round(float(v), 3) for v in norm[:, s2]]
    out["resid_pre_at_final_by_layer"] = [round(float(v), 3) for v in norm[:, last]]
    for site in tr.sites:
        out[f"top_cells_{site}"] = [{**c, "effect": round(c["effect"], 3)} for c in tr.top_cells(site, 5)]
    top = hp.top_heads(10)
    out["top_heads"] = [{**h, "effect": round(h["effect"], 3)} for h in top]
    (l1, h1), (l2, h2) = sorted([(top[0]["layer"], top[0]["head"]), (top[1]["layer"], top[1]["head"])])
    if l1 < l2:
        pp = timed("path_patch", lambda: heads.path_patch(model, batch, (l1, h1), (l2, h2), "q"))
        out["path_patch"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in pp.to_dict().items()
                             if k != "m_patched_per_pair"}
    out["logit_lens_final_logit_diff"] = round(float(lr.logit_diff[:, -1, last].mean()), 4)
    emit(out, args.json)


if __name__ == "__main__":
    main()
