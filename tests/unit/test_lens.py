"""Logit lens (sfc_core.lens) on a tiny TransformerLens model: the last row is the model's logits, every row the
final norm and unembedding of that layer's residual stream."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sfc_core.errors import InputError
from tests.tiny import tiny_model
from tests.unit.test_tracing import equal_batch, tiny_internals  # noqa: F401 (fixture)


def test_lens_final_row_is_the_models_logits():
    from sfc_core.lens import logit_lens

    model = tiny_model(n_layers=3)
    batch = equal_batch()
    res = logit_lens(model, batch, top_k=3, pair=1)
    assert res.labels == ["L0 pre", "L1 pre", "L2 pre", "final"]
    assert res.logit_diff.shape == (3, 4, 6)
    logits = model(batch.clean_tokens)  # [n, pos, vocab]
    rows = torch.arange(3)
    want = (logits[rows, :, batch.answer_ids] - logits[rows, :, batch.wrong_ids]).detach()  # [n, pos]
    torch.testing.assert_close(res.logit_diff[:, -1], want, atol=1e-9, rtol=0)
    vals, ids = logits[1].topk(3, dim=-1)
    for p in range(6):
        assert [v for _, v in res.top_tokens[-1][p]] == pytest.approx(vals[p].tolist(), abs=1e-9)
        assert [t for t, _ in res.top_tokens[-1][p]] == [f"#{int(i)}" for i in ids[p]]  # no tokenizer: ids


def test_lens_middle_rows_by_hand():
    """Row L: unembed(ln_final(resid_pre_L)) with the norm's statistics recomputed from resid_pre_L itself."""
    from sfc_core.lens import logit_lens

    model = tiny_model(n_layers=3)
    batch = equal_batch()
    res = logit_lens(model, batch, run="corrupted")
    _, cache = model.run_with_cache(batch.corrupted_tokens)
    for L in range(3):
        x = cache[f"blocks.{L}.hook_resid_pre"]
        x = x - x.mean(-1, keepdim=True)
        x = x / (x.pow(2).mean(-1, keepdim=True) + model.cfg.eps).sqrt()
        x = x * model.ln_final.w + model.ln_final.b
        logits = x @ model.W_U + model.b_U
        rows = torch.arange(3)
        want = (logits[rows, :, batch.answer_ids] - logits[rows, :, batch.wrong_ids]).detach()
        torch.testing.assert_close(res.logit_diff[:, L], want, atol=1e-9, rtol=0)
    np.testing.assert_allclose(res.mean_logit_diff(), res.logit_diff.double().mean(0).numpy())


def test_lens_padding_is_nan_and_figure():
    from sfc_core.lens import heatmap, logit_lens

    model = tiny_model(n_layers=2)
    batch = equal_batch()
    batch.last_pos = torch.tensor([5, 4, 5])
    res = logit_lens(model, batch, pair=1)
    assert torch.isnan(res.logit_diff[1, :, 5]).all() and not torch.isnan(res.logit_diff[0]).any()
    assert len(res.tokens) == 5
    fig = heatmap(res, per_pair=True)
    assert fig.data[0].z.shape == (3, 5) and "top:" in fig.data[0].text[0][0]
    assert len(res.to_dict()["per_pair_logit_diff"]) == 3


def test_lens_bad_inputs():
    from sfc_core.lens import logit_lens

    model = tiny_model(n_layers=2)
    batch = equal_batch()
    with pytest.raises(InputError, match="pair 3 does not exist"):
        logit_lens(model, batch, pair=3)
    with pytest.raises(InputError, match="top-k"):
        logit_lens(model, batch, top_k=0)
    with pytest.raises(InputError, match="clean"):
        logit_lens(model, batch, run="both")


def test_cli_lens(tmp_path, tiny_internals):
    import json

    from tests.unit.test_tracing import PAIRS, cli_run, write_pairs

    out = tmp_path / "l.json"
    pairs = write_pairs(tmp_path, PAIRS)
    r = cli_run("lens", "--pairs", pairs, "--out", str(out), "--top-k", "3", "--position", "2")
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert doc["labels"] == ["L0 pre", "L1 pre", "final"] and len(doc["top_tokens"][0][0]) == 3
    summary = json.loads(r.output.strip().splitlines()[-1])
    assert list(summary["position"]["top"]) == doc["labels"]
    r = cli_run("lens", "--pairs", pairs, "--out", str(out), "--position", "9")
    assert r.exit_code == 2 and r.output.strip() == ("error: position 9 is beyond the prompt of pair 0 (5 tokens, "
                                                     "positions 0 to 4)")
    for args, msg in ((["--top-k", "51"], "error: --top-k must be between 1 and 50"),
                      (["--pair", "2"], "error: pair 2 does not exist: there are 2 pairs (0 to 1)")):
        r = cli_run("lens", "--pairs", pairs, "--out", str(tmp_path / "x.json"), *args)
        assert r.exit_code == 2 and r.output.strip() == msg, r.output
        assert not (tmp_path / "x.json").exists()
