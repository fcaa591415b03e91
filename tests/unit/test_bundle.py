"""Bundle-build helpers: special-token exclusion and massive-activation shrinking."""

from __future__ import annotations

import torch

from sfc_core.bundle import OUTLIER_NORM_RATIO, activation_batches, passes_bar, shrink_outliers, special_positions


def test_special_positions_flags_every_special_id():
    tokens = torch.tensor([[0, 5, 6, 0, 7], [0, 1, 2, 9, 9]], dtype=torch.int32)
    got = special_positions(tokens, [0, 1, 2])
    assert got.tolist() == [[True, False, False, True, False], [True, True, True, False, False]]


def test_activation_batches_drop_special_rows(tmp_path):
    from safetensors.torch import save_file

    x = torch.arange(8, dtype=torch.float16)[:, None].repeat(1, 3) + 1
    save_file({"h": x}, str(tmp_path / "chunk.safetensors"))
    special = torch.tensor([False, True, False, False, True, False, False, False])
    batch = next(activation_batches([tmp_path / "chunk.safetensors"], ["h"], 6, seed=0, special=special))
    assert sorted(batch["h"][:, 0].tolist()) == [1.0, 3.0, 4.0, 6.0, 7.0, 8.0]


def test_shrink_outliers_caps_norm_and_keeps_direction():
    torch.manual_seed(0)
    x = torch.randn(101, 8)
    x[7] *= 1e4
    median = x.norm(dim=-1).median()
    y = shrink_outliers(x)
    assert torch.equal(y[torch.arange(101) != 7], x[torch.arange(101) != 7])
    cap = float(OUTLIER_NORM_RATIO * median)
    assert abs(float(y[7].norm()) - cap) < 1e-4 * cap
    assert torch.allclose(y[7] / y[7].norm(), x[7] / x[7].norm(), atol=1e-6)


def test_quality_bar_edges():
    ok = {"fve": 0.8, "ce_recovered": 0.9, "l0": 64.0, "dead_frac": 0.1}
    assert passes_bar(ok)
    for key, bad in (("fve", 0.79), ("ce_recovered", 0.89), ("l0", 64.5), ("dead_frac", 0.11)):
        assert not passes_bar({**ok, key: bad})


def test_heldout_extension_never_reuses_the_training_code():
    """The extended held-out corpus' stdlib code comes from files the SAE corpus never selected."""
    import itertools

    from sfc_core.corpus import CorpusConfig, HeldoutConfig, heldout_documents, training_code_selection

    _, selected = training_code_selection(0, CorpusConfig().code_tokens * 3)
    cut = HeldoutConfig().max_doc_chars
    prefixes = {doc[:cut] for doc in selected}
    new = list(itertools.islice(heldout_documents("stdlib_code", 0), 20))
    assert len(new) == 20 and not prefixes & set(new)


def test_heldout_prose_filter():
    from sfc_core.corpus import _prose_like

    prose = "This guide explains how masked arrays work and when to use them in practice. " * 6
    assert _prose_like(prose)
    assert not _prose_like("0.1 0.2 0.3 4.5\n" * 40) and not _prose_like("short text")
