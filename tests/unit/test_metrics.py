"""Metrics against hand computations on constructed logits; gradients; registry errors."""

import math

import pytest
import torch

from sfc_core.errors import InputError
from sfc_core.metrics import (
    METRICS,
    clean_logprobs_at_last,
    get_metric,
    kl_to_clean,
    last_logits,
    logit_diff,
    prob_diff,
)


def make_logits():
    """2 pairs, 3 positions, vocab 4; row 0 ends at position 2, row 1 at position 1 (then padding)."""
    logits = torch.zeros(2, 3, 4)
    logits[0, 2] = torch.tensor([1.0, 3.0, 0.5, -1.0])
    logits[1, 1] = torch.tensor([2.0, 0.0, 0.0, 1.0])
    logits[1, 2] = torch.tensor([100.0, -100.0, 0.0, 0.0])  # padding position: must be ignored
    last_pos = torch.tensor([2, 1])
    answer = torch.tensor([1, 3])
    wrong = torch.tensor([0, 0])
    return logits, (last_pos, answer, wrong)


def softmax_list(xs):
    z = sum(math.exp(x) for x in xs)
    return [math.exp(x) / z for x in xs]


def test_logit_diff_by_hand():
    logits, batch = make_logits()
    out = logit_diff(logits, batch)
    assert out.shape == (2,)
    torch.testing.assert_close(out, torch.tensor([3.0 - 1.0, 1.0 - 2.0]))


def test_prob_diff_by_hand():
    logits, batch = make_logits()
    p0 = softmax_list([1.0, 3.0, 0.5, -1.0])
    p1 = softmax_list([2.0, 0.0, 0.0, 1.0])
    expected = torch.tensor([p0[1] - p0[0], p1[3] - p1[0]])
    torch.testing.assert_close(prob_diff(logits, batch), expected)


def test_kl_is_negative_kl_by_hand():
    logits, batch = make_logits()
    clean = torch.zeros(2, 4)  # uniform clean distribution
    clean_lp = torch.log_softmax(clean, -1)
    p0 = softmax_list([1.0, 3.0, 0.5, -1.0])
    p1 = softmax_list([2.0, 0.0, 0.0, 1.0])
    kl0 = sum(0.25 * (math.log(0.25) - math.log(q)) for q in p0)
    kl1 = sum(0.25 * (math.log(0.25) - math.log(q)) for q in p1)
    out = kl_to_clean(logits, batch, clean_lp)
    torch.testing.assert_close(out, torch.tensor([-kl0, -kl1]))
    assert (out < 0).all()


def test_kl_of_clean_run_is_zero_and_accepts_full_logprobs():
    logits, batch = make_logits()
    full_lp = torch.log_softmax(logits, -1)
    out = get_metric("kl")(logits, batch, full_lp)  # [n, pos, vocab] clean log-probs are gathered too
    torch.testing.assert_close(out, torch.zeros(2), atol=1e-6, rtol=0)
    out2 = kl_to_clean(logits, batch, clean_logprobs_at_last(logits, batch))
    torch.testing.assert_close(out2, torch.zeros(2), atol=1e-6, rtol=0)


def test_kl_needs_clean_logprobs():
    logits, batch = make_logits()
    with pytest.raises(InputError, match="clean"):
        kl_to_clean(logits, batch)


def test_pair_batch_like_object_and_2d_logits():
    logits, (last, ans, wrong) = make_logits()

    class B:
        last_pos, answer_ids, wrong_ids = last, ans, wrong

    torch.testing.assert_close(logit_diff(logits, B()), logit_diff(logits, (last, ans, wrong)))
    at_last = last_logits(logits, last)
    assert at_last.shape == (2, 4)
    torch.testing.assert_close(logit_diff(at_last, B()), torch.tensor([2.0, -1.0]))


@pytest.mark.parametrize("name", sorted(METRICS))
def test_metrics_are_differentiable(name):
    logits, batch = make_logits()
    logits = logits.clone().requires_grad_(True)
    clean_lp = torch.log_softmax(torch.randn(2, 4, generator=torch.Generator().manual_seed(0)), -1)
    out = get_metric(name)(logits, batch, clean_lp)
    out.sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    # only the last positions receive gradient
    assert logits.grad[0, :2].abs().sum() == 0 and logits.grad[1, 2].abs().sum() == 0
    assert logits.grad[0, 2].abs().sum() > 0


def test_logit_diff_gradient_by_hand():
    logits, batch = make_logits()
    logits = logits.clone().requires_grad_(True)
    logit_diff(logits, batch).sum().backward()
    expected = torch.zeros(2, 3, 4)
    expected[0, 2, 1], expected[0, 2, 0] = 1.0, -1.0
    expected[1, 1, 3], expected[1, 1, 0] = 1.0, -1.0
    torch.testing.assert_close(logits.grad, expected)


def test_bfloat16_logits_are_upcast():
    logits, batch = make_logits()
    out = logit_diff(logits.to(torch.bfloat16), batch)
    assert out.dtype == torch.float32


def test_unknown_metric_and_bad_shapes():
    with pytest.raises(InputError, match="unknown metric 'nope'.*logit_diff"):
        get_metric("nope")
    logits, (last, ans, wrong) = make_logits()
    with pytest.raises(InputError, match="last_pos"):
        logit_diff(logits, (torch.tensor([5, 0]), ans, wrong))
    with pytest.raises(InputError, match="answer_ids"):
        logit_diff(logits, (last, ans[:1], wrong))
    with pytest.raises(InputError, match="logits must be"):
        logit_diff(torch.zeros(4), (last, ans, wrong))
    with pytest.raises(InputError, match="PairBatch"):
        logit_diff(logits, object())


def test_metric_on_tiny_model_backward():
    """End to end: a tiny TransformerLens model, metric gradients reach the embedding."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(0)
    cfg = HookedTransformerConfig(n_layers=2, d_model=32, d_head=8, n_heads=4, d_mlp=64, d_vocab=50, n_ctx=16, act_fn="gelu")
    model = HookedTransformer(cfg)
    tokens = torch.randint(0, 50, (3, 6))
    batch = (torch.tensor([5, 3, 4]), torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6]))
    with torch.no_grad():
        clean_lp = clean_logprobs_at_last(model(tokens), batch)
    for name, fn in METRICS.items():
        model.zero_grad()
        fn(model(tokens), batch, clean_lp).mean().backward()
        assert model.embed.W_E.grad is not None and model.embed.W_E.grad.abs().sum() > 0, name
