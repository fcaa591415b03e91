"""Degenerate-latent flags of a feature index (massive activation, positional, dense) on a hand-built index."""

from __future__ import annotations

import pytest
import torch

from sfc_core.errors import InputError
from sfc_core.feature_index import DEGENERATE_RULES, FLAG_TEXT, FeatureIndex


def _index() -> FeatureIndex:
    d, k, n_seq, seq_len = 5, 6, 10, 12
    top_act = torch.zeros(d, k)
    top_act[:, 0] = torch.tensor([10.0, 11.0, 12.0, 10.0 * DEGENERATE_RULES["massive_ratio"] + 50, 0.0])
    top_seq = torch.arange(k).repeat(d, 1).int()
    top_pos = torch.tensor([[3, 4, 5, 6, 7, 8]] * d).int()
    top_pos[1] = torch.tensor([1, 1, 1, 5, 6, 7])  # half of its contexts peak at position 1
    top_seq[4] = -1  # a dead latent: no examples
    density = torch.tensor([0.01, 0.02, DEGENERATE_RULES["dense_fraction"], 0.03, 0.0])
    tensors = {"top_act": top_act.half(), "top_seq": top_seq, "top_pos": top_pos, "density": density}
    return FeatureIndex("blocks.0.hook_resid_post", tensors, torch.zeros(n_seq, seq_len, dtype=torch.long), (2, 1))


def test_flags_follow_the_rules():
    ix = _index()
    # the median top activation of the live latents (10, 11, 12, 250) is 11 (the lower middle): only latent 3 is ≥ 20× it
    assert ix.degenerate_flags() == {1: ["positional"], 2: ["dense"], 3: ["massive"]}
    assert ix.flags(0) == [] and ix.flags(3) == ["massive"]
    assert set(FLAG_TEXT) == {"massive", "positional", "dense"}
    with pytest.raises(InputError, match="out of range"):
        ix.flags(5)


def test_labels_lead_with_the_flags():
    import networkx as nx

    from pages._shared import display as S

    G = nx.DiGraph()
    for k in (1, 2):
        G.add_node(f"blocks.0.hook_resid_post/{k}", hook_name="blocks.0.hook_resid_post", feature=k, position=None)
    labels = S.feature_labels(G, lambda h, f: [" a", " b"], lambda h, f: ["massive"] if f == 1 else [])
    assert labels["blocks.0.hook_resid_post/1"] == "⚠ massive · promotes: ' a', ' b'"
    assert labels["blocks.0.hook_resid_post/2"] == "promotes: ' a', ' b'"
