"""Automatic feature labels (sfc_core.labels) on a hand-built index, and the shipped index's labels."""

from __future__ import annotations

import json

import pytest
import torch

from sfc_core.errors import InputError
from sfc_core.feature_index import FeatureIndex
from sfc_core.labels import (
    MAX_LABEL, SPECIAL, compute_labels, describe_latent, label_latent, label_metadata, show, token_kind,
)

# token ids → text; 0 is the special token (BOS / document separator)
VOCAB = [SPECIAL, " Mary", " John", " the", " cat", "7", ",", "\n", " Anna", " she", " her", "ing", " said",
         " dog", " a", "42", ".", " of", " in", " Bob"]
SEQ_LEN = 8


def _index(contexts: dict[int, list[tuple[list[int], int]]], d_sae: int = 4, k: int = 6):
    """An index whose latent ``f`` peaks at position ``pos`` of each of its token rows ``contexts[f]``."""
    rows, top_seq, top_pos = [], -torch.ones(d_sae, k, dtype=torch.int32), -torch.ones(d_sae, k, dtype=torch.int32)
    for f, ctx in contexts.items():
        for j, (toks, pos) in enumerate(ctx):
            top_seq[f, j], top_pos[f, j] = len(rows), pos
            rows.append([0] + toks + [6] * (SEQ_LEN - 1 - len(toks)))
    tokens = torch.tensor(rows, dtype=torch.int32)
    top_act = torch.where(top_seq >= 0, torch.linspace(10, 5, k).expand(d_sae, k), torch.tensor(0.0)).half()
    tensors = {
        "top_seq": top_seq, "top_pos": top_pos, "top_act": top_act,
        "density": torch.full((d_sae,), 0.01),
        "logit_top_ids": torch.tensor([[9, 10, 17]] * d_sae, dtype=torch.int32),
    }
    return tensors, tokens


def test_fires_on_rule_lists_the_commonest_tokens():
    # 6 contexts: ' Mary' ×2 (2/6 < 50 %), ' John' ×2 (4/6 ≥ 50 % with two groups), ' Anna', ' Bob'
    ctx = {0: [([12, 1], 2), ([3, 2], 2), ([14, 1], 2), ([12, 2], 2), ([17, 8], 2), ([3, 19], 2)]}
    tensors, tokens = _index(ctx)
    labels, descriptions = compute_labels(tensors, tokens, VOCAB)
    # the previous tokens ' said' ×2, ' the' ×2 cover 4/6 too, but "' Mary'|' John' after ' said'|' the'" is too long
    assert labels[0] == "' Mary'|' John'"
    assert descriptions[0].splitlines() == [
        "Fires on ' Mary' (2/6), ' John' (2/6), ' Anna' (1/6); before it: ' said' (2/6), ' the' (2/6).",
        "Promotes ' she', ' her', ' of'. Active on 1 % of held-out tokens, max 10.",
    ]
    # dead latents: no label, a plain description
    assert labels[1] == "" and descriptions[1] == "Never active on the held-out corpus (dead latent)."


def test_one_dominant_token_and_case_and_space_grouping():
    assert label_latent([" The", " the", "the", " the", " cat"], [""] * 5, [1, 2, 3, 4, 5], []) == "' the'"
    # a group seen once does not count when there are 4+ contexts: the 'after' rule takes over
    fire = [" cat", " dog", " Mary", " John", " Anna", " Bob"]
    prev = [" the", " the", " the", " a", " of", " in"]
    assert label_latent(fire, prev, [1] * 6, [" x"]) == "after ' the'"


def test_fire_and_after_together():
    fire = ["."] * 5 + [","]
    assert label_latent(fire, [" self"] * 4 + [" x", " y"], [3, 4, 5, 6, 7, 8], []) == "'.' after ' self'"


def test_kind_then_weak_then_promotes_fallbacks():
    digits = ["7", "42", "3", "15", "9", "88"]
    prev = [" a", " b", " c", " d", " e", " f"]
    assert label_latent(digits, prev, list(range(6)), [" x"]) == "numbers"
    mixed = [" cat", "7", ",", " Mary", "ing", "\n"]
    assert label_latent(mixed, prev, list(range(6)), [" she", " her", " of"]) == "→ ' she'|' her'|' of'"
    # ' water' 2/8 = 25 %: a weak label
    weak = [" water", " cat", "7", " Water", ",", " Mary", "ing", "\n"]
    assert label_latent(weak, prev + [" g", " h"], list(range(8)), [" she"]) == "~' water'"
    assert token_kind(" Mary") == "capital" and token_kind("ing") == "piece" and token_kind("\n  ") == "space"
    assert token_kind("snake_case") == "code" and token_kind(" camelCase") == "code" and token_kind("),") == "punct"


def test_positional_flag_names_the_position():
    fire = [".", "\n", ",", " the"]
    assert label_latent(fire, [SPECIAL] * 4, [1, 1, 1, 5], [], ["positional"]) == "position 1"
    text = describe_latent(fire, [SPECIAL] * 4, [], 0.3, 1200.0, ["massive"])
    assert "before it: ⟨BOS⟩ (4/4)" in text and "⚠ massive" in text and "max 1.2e+03" in text


def test_labels_fit_a_node():
    long = " " + "x" * 40
    assert len(label_latent([long] * 4, [""] * 4, [1, 2, 3, 4], [])) <= MAX_LABEL
    # three groups needed, the third does not fit: the list is cut to what fits
    fire = [" aaaaaaaa", " bbbbbbbb", " cccccccc", " aaaaaaaa", " bbbbbbbb", " cccccccc", " d", " e", " f"]
    assert label_latent(fire, [""] * 9, [1] * 9, []) == "' aaaaaaaa'|' bbbbbbbb'"
    assert show("\n") == "'\\n'" and show(SPECIAL) == SPECIAL and len(show(long)) == MAX_LABEL


def test_feature_index_label_and_description_round_trip():
    ctx = {0: [([12, 1], 2), ([3, 3, 2], 3), ([14, 14, 14, 1], 4), ([12, 12, 12, 12, 2], 5)],
           2: [([5], 1), ([15], 1), ([5], 1)], 3: [([4], 1), ([4], 1), ([13], 1), ([4], 1)]}
    tensors, tokens = _index(ctx)

    class Tok:
        all_special_ids = [0]

        def __len__(self):
            return len(VOCAB)

        def decode(self, ids):
            return VOCAB[ids[0]]

    meta = label_metadata(tensors, tokens, Tok())
    ix = FeatureIndex("blocks.0.hook_resid_post", tensors, tokens, (2, 1),
                      json.loads(meta["labels"]), json.loads(meta["descriptions"]))
    # ' Mary' 2/4 and ' said' 2/4 both suffice; '7' 2/3 (fewer than 4 contexts: once-seen groups count)
    assert ix.label(0) == "' Mary' after ' said'" and ix.label(1) == "" and ix.label(2) == "'7' after ⟨BOS⟩"
    assert ix.flags(3) == ["positional"] and ix.label(3) == "position 1"  # 4 contexts, all at position 1
    assert ix.description(0).startswith("Fires on ' Mary' (2/4), ' John' (2/4)")
    bare = FeatureIndex("blocks.0.hook_resid_post", tensors, tokens, (2, 1))
    assert bare.label(0) == "" and bare.description(0) == ""
    with pytest.raises(InputError, match="out of range"):
        ix.label(4)


def test_shipped_index_has_200k_heldout_tokens_and_labels():
    from sfc_core import defaults
    from sfc_core.bundle import heldout_sae_rows, load_heldout_tokens, load_manifest
    from sfc_core.feature_index import load_feature_index

    tokens = load_heldout_tokens()
    assert tokens.dtype == torch.int32 and tokens.numel() >= 200_000
    assert load_manifest()["heldout_tokens"] == tokens.numel()
    assert 0 < heldout_sae_rows() < len(tokens)
    for layer in defaults.BUNDLED_LAYERS:
        ix = load_feature_index(f"blocks.{layer}.hook_resid_post")
        assert int(ix.tensors["top_seq"].max()) >= heldout_sae_rows()  # contexts from the extension too
        labels = [ix.label(f) for f in range(ix.d_sae)]
        assert sum(bool(x) for x in labels) >= 0.9 * ix.d_sae
        assert all(len(x) <= MAX_LABEL for x in labels)
        assert all(ix.description(f) for f in range(ix.d_sae))
