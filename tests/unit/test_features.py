"""Feature ablation and steering on tiny models, against hand-written TransformerLens hook runs."""

from __future__ import annotations

import math

import pytest
import torch

from sfc_core import attribution as A
from sfc_core import features as F
from sfc_core.errors import InputError
from sfc_core.saes import LoadedSAE
from tests.tiny import tiny_setup


class _Tok:
    eos_token_id = -1
    padding_side = "right"

    def decode(self, ids):
        return "".join(f"<{int(i)}>" for i in (ids.tolist() if hasattr(ids, "tolist") else ids))


@pytest.fixture(scope="module")
def setup():
    model, saes, batch = tiny_setup()
    model.tokenizer = _Tok()
    return model, saes, A.prepare_runs(model, saes, batch)


def test_zero_ablation_matches_hooked_run(setup):
    model, saes, runs = setup
    hook = "blocks.0.hook_resid_post"
    sae = saes[hook]
    feat = int(torch.argmax(runs.clean[0].f.sum((0, 1))))
    out = F.ablate_feature(runs, 0, feat, "zero")
    W = A.effective_decoder(sae)

    def ablate(act, hook):  # noqa: ARG001
        f = sae.encode(act)[..., feat]
        f = f * runs.mask
        return act - f[..., None] * W[feat]

    b = runs.batch
    logits = model.run_with_hooks(b.clean_tokens, fwd_hooks=[(hook, ablate)])
    rows = torch.arange(b.n)
    last = logits[rows, b.last_pos]
    ref = last[rows, b.answer_ids] - last[rows, b.wrong_ids]
    assert out["after"] == pytest.approx(ref.tolist(), abs=1e-9)
    assert out["before"] == pytest.approx(runs.m_clean.tolist())
    assert len(out["promoted"]) == 10 and out["promoted"][0][1] >= out["suppressed"][0][1]
    mean = F.ablate_feature(runs, 0, feat, "mean")
    assert mean["mean_after"] != out["mean_after"]


def test_ablation_bad_input(setup):
    _, _, runs = setup
    with pytest.raises(InputError, match="out of range"):
        F.ablate_feature(runs, 0, 10_000)
    with pytest.raises(InputError):
        F.ablate_feature(runs, 0, 1, "resample")
    with pytest.raises(InputError):
        F.ablate_feature(runs, 7, 1)


def test_steering_adds_the_decoder_direction(setup):
    model, saes, _ = setup
    hook = "blocks.1.hook_resid_post"
    loaded = LoadedSAE(hook, saes[hook], "test")
    model.to_tokens = lambda prompt, prepend_bos=True: torch.tensor([[0, 3, 5, 7]])
    out = F.steer(model, loaded, 2, 4.0, "x", max_new_tokens=3, top_n=5)
    d = 4.0 * A.effective_decoder(saes[hook])[2]

    def add(act, hook):  # noqa: ARG001
        act = act.clone()
        act[:, 1:] += d
        return act

    ref = model.run_with_hooks(torch.tensor([[0, 3, 5, 7]]), fwd_hooks=[(hook, add)])[0, -1].softmax(-1)
    assert out["after"][0][1] == pytest.approx(float(ref.max()), rel=1e-6)
    assert out["before"] != out["after"]
    assert out["continuation_after"].count("<") == 3
    zero = F.steer(model, loaded, 2, 0.0, "x", max_new_tokens=2)
    assert zero["before"] == zero["after"]
    for bad in (math.nan, math.inf, 1e9):
        with pytest.raises(InputError):
            F.steer(model, loaded, 2, bad, "x")
    with pytest.raises(InputError, match="prompt"):
        F.steer(model, loaded, 2, 1.0, "   ")
