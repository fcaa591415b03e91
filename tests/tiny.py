"""Tiny TransformerLens models, SAEs and pair batches built in the tests (no assets needed)."""

from __future__ import annotations

from types import SimpleNamespace

import torch


def tiny_model(n_layers: int = 3, d_model: int = 16, d_vocab: int = 23, seed: int = 0, dtype=torch.float64,
               positional_embedding_type: str = "standard"):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(seed)
    cfg = HookedTransformerConfig(
        n_layers=n_layers, d_model=d_model, n_heads=2, d_head=d_model // 2, d_mlp=2 * d_model,
        d_vocab=d_vocab, n_ctx=16, act_fn="gelu", normalization_type="LN",
        positional_embedding_type=positional_embedding_type, rotary_dim=d_model // 2, dtype=dtype, seed=seed,
    )
    return scaled(HookedTransformer(cfg))


def scaled(model, factor: float = 4.0):
    """``model`` in eval mode with its matrices × ``factor``: larger-than-default weights, so that patches move
    the metric measurably."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(factor)
    return model.eval()


def tiny_sae(d_in: int = 16, d_sae: int = 24, kind: str = "standard", hook: str = "blocks.0.hook_resid_post",
             seed: int = 0, dtype: str = "float64", k: int = 6):
    import sae_lens

    torch.manual_seed(seed)
    if kind == "topk":
        cfg = sae_lens.TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k, dtype=dtype)
        sae = sae_lens.TopKSAE(cfg)
    elif kind == "jumprelu":
        cfg = sae_lens.JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae, dtype=dtype)
        sae = sae_lens.JumpReLUSAE(cfg)
    elif kind == "gated":
        cfg = sae_lens.GatedSAEConfig(d_in=d_in, d_sae=d_sae, dtype=dtype)
        sae = sae_lens.GatedSAE(cfg)
    else:
        cfg = sae_lens.StandardSAEConfig(d_in=d_in, d_sae=d_sae, dtype=dtype)
        sae = sae_lens.StandardSAE(cfg)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            if name.startswith("W_"):
                p.copy_(torch.randn_like(p) * 0.3)
            elif name == "threshold":
                p.fill_(0.05)
            else:
                p.zero_()
    sae.cfg.metadata.hook_name = hook
    return sae


def tiny_batch(n: int = 4, length: int = 7, d_vocab: int = 23, seed: int = 0, equal_length: bool = False):
    """Random clean prompts; corrupted = clean with two positions changed; BOS = 0 first. The first row is one
    token shorter (right padding after it) unless ``equal_length`` (one template group)."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(1, d_vocab, (n, length), generator=g)
    clean[:, 0] = 0
    corr = clean.clone()
    corr[:, 2] = (clean[:, 2] + 5) % (d_vocab - 1) + 1
    corr[:, length - 2] = (clean[:, length - 2] + 3) % (d_vocab - 1) + 1
    last_pos = torch.full((n,), length - 1)
    if not equal_length:
        last_pos[0] = length - 2
    mask = torch.arange(length)[None] <= last_pos[:, None]
    mask[:, 0] = False
    return SimpleNamespace(
        clean_tokens=clean, corrupted_tokens=corr, last_pos=last_pos,
        answer_ids=torch.randint(0, d_vocab, (n,), generator=g), wrong_ids=torch.randint(0, d_vocab, (n,), generator=g),
        valid_mask=mask, n=n,
    )


def tiny_setup(kinds=("standard", "topk"), layers=(0, 1), seed: int = 0):
    model = tiny_model(seed=seed)
    saes = {f"blocks.{L}.hook_resid_post": tiny_sae(kind=k, hook=f"blocks.{L}.hook_resid_post", seed=seed + L)
            for L, k in zip(layers, kinds)}
    return model, saes, tiny_batch(seed=seed)


def tiny_bpe_model(n_layers: int = 1):
    """A float32 ``HookedTransformer`` (d_model 32, 4 heads) with the tiny byte-level BPE tokenizer of
    ``tests/unit/test_pairs.py``: for CLI tests that tokenize text without the bundled assets."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from tests.unit.test_pairs import make_tiny_tokenizer

    tok = make_tiny_tokenizer()
    torch.manual_seed(0)
    model = HookedTransformer(HookedTransformerConfig(n_layers=n_layers, d_model=32, d_head=8, n_heads=4, d_mlp=64,
                                                      d_vocab=len(tok), n_ctx=64, act_fn="gelu"))
    model.tokenizer = tok
    return model


def tiny_transcoder(layer: int, d_model: int = 16, d_sae: int = 24, seed: int = 0, threshold: float = 0.05):
    """A random SAE Lens ``JumpReLUSkipTranscoder`` (float64) for block ``layer`` of :func:`tiny_model`."""
    from sfc_core.transcoders import to_sae_lens

    g = torch.Generator().manual_seed(seed)
    weights = {
        "W_enc": torch.randn(d_model, d_sae, generator=g, dtype=torch.float64) * 0.5,
        "b_enc": torch.randn(d_sae, generator=g, dtype=torch.float64) * 0.1,
        "W_dec": torch.randn(d_sae, d_model, generator=g, dtype=torch.float64) * 0.5,
        "b_dec": torch.randn(d_model, generator=g, dtype=torch.float64) * 0.1,
        "W_skip": torch.randn(d_model, d_model, generator=g, dtype=torch.float64) * 0.1,
        "threshold": torch.full((d_sae,), threshold, dtype=torch.float64),
    }
    return to_sae_lens(weights, layer, model_name="tiny", dtype=torch.float64)
