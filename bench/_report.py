"""What the bench scripts share: the bare forward+backward they compare against, and printing their figures."""

from __future__ import annotations

import json


def emit(figures: dict, json_path: str | None = None) -> None:
    """Print ``figures`` as indented JSON; also write them to ``json_path`` when given."""
    print(json.dumps(figures, indent=1))
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(figures, fh, indent=1)


def table(header: list[str], rows: list[list]) -> None:
    """Print ``rows`` under ``header`` as a Markdown table (for the README)."""
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(v) for v in row) + " |")


def fwd_bwd_floor(model, batch) -> None:
    """One forward and backward pass of ``batch``'s clean prompts through the bare model (no SAEs) to the logit
    difference: the floor that attribution timings are compared with."""
    import torch

    from sfc_core.splice import embed, logits_of, run_from

    with torch.enable_grad():
        resid, _ = embed(model, batch.clean_tokens)
        resid = resid.detach().requires_grad_(True)
        final = run_from(model, [], resid, 0, None, stop_block=model.cfg.n_layers)
        rows = torch.arange(batch.n)
        logits = logits_of(model, final[rows, batch.last_pos][:, None])[:, 0]
        torch.autograd.grad((logits[rows, batch.answer_ids] - logits[rows, batch.wrong_ids]).sum(), [resid])
