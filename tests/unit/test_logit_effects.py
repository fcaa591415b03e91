"""Logit effects through the final norm (splice.effective_unembed, feature_index.logit_effects,
features.logit_effect_tokens) against finite differences through ``model.ln_final`` and ``model.unembed``."""

from __future__ import annotations

import pytest
import torch

from sfc_core import attribution as A
from sfc_core import feature_index as FI
from sfc_core import features as F
from sfc_core.errors import InputError
from sfc_core.splice import effective_unembed
from tests.tiny import tiny_model, tiny_sae

D_MODEL, D_VOCAB = 16, 23


class _Tok:
    def decode(self, ids):
        return "".join(f"<{int(i)}>" for i in ids)


def _model(norm: str, seed: int = 0):
    """A tiny model whose final norm (``norm``: LN, RMS, LNPre, RMSPre, None) has a non-trivial weight and bias
    and whose unembedding has a bias (neither bias may enter a direction's effect)."""
    if norm == "LN":
        model = tiny_model(seed=seed)
    else:
        from transformer_lens import HookedTransformer, HookedTransformerConfig

        torch.manual_seed(seed)
        cfg = HookedTransformerConfig(n_layers=1, d_model=D_MODEL, n_heads=2, d_head=D_MODEL // 2, d_mlp=2 * D_MODEL,
                                      d_vocab=D_VOCAB, n_ctx=16, act_fn="gelu", normalization_type=norm,
                                      dtype=torch.float64, seed=seed)
        model = HookedTransformer(cfg)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        model.unembed.W_U.copy_(torch.randn(D_MODEL, D_VOCAB, generator=g, dtype=torch.float64))
        model.unembed.b_U.copy_(torch.randn(D_VOCAB, generator=g, dtype=torch.float64))
        ln = getattr(model, "ln_final", None)
        if ln is not None and hasattr(ln, "w"):
            ln.w.copy_(torch.randn(D_MODEL, generator=g, dtype=torch.float64) * 2)
        if ln is not None and hasattr(ln, "b"):
            ln.b.copy_(torch.randn(D_MODEL, generator=g, dtype=torch.float64))
    model.eval()
    return model


def _sigma(model, x: torch.Tensor) -> torch.Tensor:
    """The final norm's scale of ``x`` ``[..., d_model]`` (RMS, of the centred residual for LayerNorm)."""
    if model.cfg.normalization_type in ("LN", "LNPre"):
        x = x - x.mean(-1, keepdim=True)
    return (x.pow(2).mean(-1, keepdim=True) + model.cfg.eps).sqrt()


def _final_logits(model, x: torch.Tensor, frozen_scale: torch.Tensor | None = None) -> torch.Tensor:
    """``unembed(ln_final(x))`` ``[..., d_vocab]``, the norm's scale replaced by ``frozen_scale`` if given."""
    if model.cfg.normalization_type is None:
        return model.unembed(x)
    if frozen_scale is None:
        return model.unembed(model.ln_final(x))
    with model.hooks(fwd_hooks=[("ln_final.hook_scale", lambda s, hook: frozen_scale.expand_as(s))]):
        return model.unembed(model.ln_final(x))


NORMS = ["LN", "RMS", "LNPre", "RMSPre", None]


@pytest.mark.parametrize("norm", NORMS)
def test_effective_unembed_is_the_frozen_norm_finite_difference(norm):
    """For a residual ``x`` and a feature direction ``d``: (unembed(ln_final(x + εd)) − unembed(ln_final(x))) / ε with
    the norm's scale frozen at σ(x) equals ``d @ effective_unembed(model, σ(x))`` and ``d @ effective_unembed / σ``."""
    model = _model(norm)
    sae = tiny_sae(d_in=D_MODEL, d_sae=24)
    D = A.effective_decoder(sae)  # [d_sae, d_model]
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 1, D_MODEL, generator=g, dtype=torch.float64) * 5
    sigma = _sigma(model, x)
    eps = 1e-3
    with torch.no_grad():
        base = _final_logits(model, x, sigma)
        fd = torch.stack([(_final_logits(model, x + eps * d, sigma) - base)[0, 0] / eps for d in D])  # [d_sae, d_vocab]
        scale = float(sigma) if norm is not None else 1.0
        assert torch.allclose(fd, D @ effective_unembed(model, resid_rms=scale), rtol=0, atol=1e-6)
        assert torch.allclose(fd * scale, D @ effective_unembed(model), rtol=0, atol=1e-6)


@pytest.mark.parametrize("norm", ["LN", "RMS"])
def test_frozen_scale_is_exact_for_directions_orthogonal_to_the_residual(norm):
    """Through the real norm (scale not frozen): for ``x`` orthogonal to ``d`` (centred, for LayerNorm) σ does not
    move to first order, and the central difference equals ``d @ effective_unembed(model, σ(x))``."""
    model = _model(norm, seed=1)
    d = A.effective_decoder(tiny_sae(d_in=D_MODEL, d_sae=24, seed=2))[5]
    g = torch.Generator().manual_seed(4)
    x = torch.randn(D_MODEL, generator=g, dtype=torch.float64) * 5
    dc = d - d.mean() if norm == "LN" else d
    x = x - (x @ dc) / (dc @ dc) * dc
    x = x.view(1, 1, D_MODEL)
    eps = 1e-4
    with torch.no_grad():
        fd = (_final_logits(model, x + eps * d) - _final_logits(model, x - eps * d))[0, 0] / (2 * eps)
    assert torch.allclose(fd, d @ effective_unembed(model, resid_rms=float(_sigma(model, x))), rtol=0, atol=1e-6)


def test_folded_model_has_the_same_effective_unembedding():
    """TransformerLens' own fold_ln (LN → LNPre, weight in W_U) gives the same effective unembedding (to 1e-5:
    its weight processing rounds through float32)."""
    model = _model("LN", seed=2)
    W = effective_unembed(model)
    model.process_weights_(fold_ln=True, center_writing_weights=False, center_unembed=False)
    assert model.cfg.normalization_type == "LNPre"
    assert torch.allclose(effective_unembed(model), W, rtol=0, atol=1e-5)


@pytest.mark.parametrize("norm", ["LN", "RMS"])
def test_logit_effects_and_tokens_are_the_finite_difference_top_tokens(norm):
    """The index's and the panel's promoted / suppressed tokens are the top / bottom tokens of the frozen-norm
    finite difference (unit residual RMS); values to 1e-6 (the index stores fp16: to its precision)."""
    model = _model(norm, seed=3)
    sae = tiny_sae(d_in=D_MODEL, d_sae=24, seed=5)
    D = A.effective_decoder(sae)
    x = torch.randn(1, 1, D_MODEL, generator=torch.Generator().manual_seed(6), dtype=torch.float64) * 3
    sigma = _sigma(model, x)
    with torch.no_grad():
        base = _final_logits(model, x, sigma)
        ref = torch.stack([(_final_logits(model, x + d, sigma) - base)[0, 0] for d in D]) * float(sigma)
    n = 5
    index = FI.logit_effects(sae, model, n=n)
    assert torch.equal(index["logit_top_ids"].long(), ref.topk(n).indices)
    assert torch.equal(index["logit_bottom_ids"].long(), ref.topk(n, largest=False).indices)
    assert torch.allclose(index["logit_top_vals"].double(), ref.topk(n).values, rtol=1e-3, atol=1e-3)
    assert torch.allclose(index["logit_bottom_vals"].double(), ref.topk(n, largest=False).values, rtol=1e-3, atol=1e-3)
    tok = _Tok()
    for k in (0, 7, 23):
        eff = F.logit_effect_tokens(tok, sae, model, k, n=n)
        top = ref[k].topk(n)
        assert [t for t, _ in eff["top"]] == [tok.decode([i]) for i in top.indices.tolist()]
        assert [v for _, v in eff["top"]] == pytest.approx(top.values.tolist(), abs=1e-6)
        bottom = ref[k].topk(n, largest=False)
        assert [v for _, v in eff["bottom"]] == pytest.approx(bottom.values.tolist(), abs=1e-6)
    # A precomputed effective unembedding gives the same; the raw W_U (norm ignored) does not.
    assert FI.logit_effects(sae, effective_unembed(model), n=n)["logit_top_ids"].equal(index["logit_top_ids"])
    assert not FI.logit_effects(sae, model.W_U, n=n)["logit_top_ids"].equal(index["logit_top_ids"])


def test_logit_effect_errors():
    model = _model("RMS")
    sae = tiny_sae(d_in=D_MODEL, d_sae=24)
    with pytest.raises(InputError, match="resid_rms"):
        effective_unembed(model, resid_rms=0.0)
    with pytest.raises(InputError, match="d_model, d_vocab"):
        FI.logit_effects(sae, model.W_U[0])
    with pytest.raises(InputError, match="out of range"):
        F.logit_effect_tokens(_Tok(), sae, model, 24)
