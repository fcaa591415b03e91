"""The node model (ids, parser, per-site tensor layout) and the hook-point authority."""

from __future__ import annotations

import pytest
import torch

from sfc_core import hooks
from sfc_core import nodes as N
from sfc_core.errors import InputError

H7, H3 = "blocks.7.hook_resid_post", "blocks.3.hook_resid_post"


# ------------------------------------------------------------------ hooks
@pytest.mark.parametrize("name, layer, kind", [
    ("blocks.7.hook_resid_post", 7, "resid_post"), ("blocks.0.hook_resid_pre", 0, "resid_pre"),
    ("blocks.2.hook_mlp_out", 2, "mlp_out"), ("blocks.5.attn.hook_z", 5, "z"), ("hook_embed", -1, "embed"),
])
def test_hook_round_trip(name, layer, kind):
    hp = hooks.parse(name)
    assert (hp.layer, hp.kind, hp.name) == (layer, kind, name)
    assert hooks.layer_of(name) == layer and hooks.short_kind(name) == kind


def test_get_act_name_matches_transformer_lens():
    from transformer_lens import utils

    for kind, layer in (("resid_post", 7), ("resid_pre", 0), ("mlp_out", 3), ("z", 4), ("attn_out", 2)):
        assert hooks.get_act_name(kind, layer) == utils.get_act_name(kind, layer)
    assert hooks.resid_post(11) == "blocks.11.hook_resid_post"


def test_blocks_before_and_bad_hooks():
    assert hooks.blocks_before("blocks.3.hook_resid_post", 30) == 4
    assert hooks.blocks_before("blocks.3.hook_resid_pre", 30) == 3
    assert hooks.blocks_before("hook_embed", 30) == 0
    assert hooks.blocks_before("blocks.3.hook_mlp_out", 30) == 4  # a transcoder site edits after block 3
    for bad in ("blocks.30.hook_resid_post", "blocks.30.hook_mlp_out", "blocks.3.attn.hook_z", "nonsense", "blocks.x.hook_resid_post"):
        with pytest.raises(InputError, match="unknown or unsupported hook point"):
            hooks.blocks_before(bad, 30)
    with pytest.raises(InputError, match="not a hook point"):
        hooks.parse("blocks.3")
    assert hooks.layer_of("not a hook") == -1
    assert hooks.sae_key(H7) == "L7_resid_post" and hooks.column_label(H7) == "L7"
    assert hooks.column_label("blocks.2.hook_mlp_out", qualify=True) == "L2 mlp_out"


# ------------------------------------------------------------------ ids
@pytest.mark.parametrize("node, text", [
    (N.latent(H7, 1234), "blocks.7.hook_resid_post/1234"),
    (N.error(H7), "blocks.7.hook_resid_post/error"),
    (N.latent(H7, 12, 5), "blocks.7.hook_resid_post/12@5"),
    (N.error(H3, 0), "blocks.3.hook_resid_post/error@0"),
    (N.EMBED, "embed"), (N.METRIC, "metric"),
])
def test_id_round_trip(node, text):
    assert node.id == text
    assert N.parse_id(text) == node


@pytest.mark.parametrize("bad", ["", "1234", "/12", "blocks.7.hook_resid_post/", "blocks.7.hook_resid_post/abc",
                                 "blocks.7.hook_resid_post/12@x", "blocks.7.hook_resid_post/-3", "h/1@-1"])
def test_parse_id_rejects(bad):
    with pytest.raises(InputError, match="not a node id"):
        N.parse_id(bad)


def test_fields_and_kinds():
    assert N.from_fields(H7, 3, None) == N.latent(H7, 3)
    assert N.from_fields(H7, "error", 2) == N.error(H7, 2)
    assert N.from_fields("hook_embed", "embed") == N.EMBED
    assert N.from_fields(H7, 3.0) == N.latent(H7, 3)
    for bad in ("abc", None, [1], float("nan"), 1.5, True):
        with pytest.raises(InputError, match="feature must be an integer or 'error'"):
            N.from_fields(H7, bad)
    with pytest.raises(InputError, match="position"):
        N.from_fields(H7, 3, "5")
    assert N.kind_of("blocks.7.hook_resid_post/error", {}) == "error"
    assert N.kind_of("anything", {"hook_name": H7, "feature": 4}) == "latent"
    assert N.kind_of("metric", {}) == "metric" and N.is_end_id("embed") and not N.is_end_id(N.latent(H7, 1).id)
    assert N.latent(H7, 4).feature == 4 and N.error(H7).feature == "error" and N.latent(H7, 4).layer == 7


# ------------------------------------------------------------------ per-site tensors
@pytest.fixture
def space():
    return N.NodeSpace((H3, H7), (4, 5), n_positions=3)


def test_columns_and_flat_indices(space):
    assert space.column(N.latent(H7, 4)) == 4 and space.column(N.error(H7)) == 5
    assert space.node_at(1, 5) == N.error(H7) and space.node_at(0, 2, 1) == N.latent(H3, 2, 1)
    assert space.from_flat(1, 2 * 6 + 5, per_position=True) == N.error(H7, 2)
    with pytest.raises(InputError, match="feature 5 is out of range for d_sae=5"):
        space.column(N.latent(H7, 5))  # the index one past the last latent is not ε
    with pytest.raises(InputError, match="no SAE loaded"):
        space.site(N.latent("blocks.1.hook_resid_post", 0))
    assert len(space.all_nodes()) == 5 + 6 and len(space.all_nodes(per_position=True)) == 3 * 11
    assert space.errors() == [N.error(H3), N.error(H7)]


def test_scatter_value_masks_and_ranking(space):
    nodes = [N.latent(H3, 1), N.error(H7), N.latent(H7, 0, 2)]
    t = space.scatter(nodes, [0.5, -2.0, 1.0], per_position=True)
    assert [x.shape for x in t] == [(3, 5), (3, 6)]
    assert space.value(t, N.latent(H3, 1)) == pytest.approx(1.5)  # whole-prompt node: sum over positions
    assert space.value(t, N.latent(H7, 0, 2)) == 1.0
    masks = space.keep_masks([N.error(H7), N.latent(H3, 2, 1)], per_position=True)
    assert int(masks[1][:, 5].sum()) == 3 and int(masks[0].sum()) == 1 and bool(masks[0][1, 2])
    flat = [torch.tensor([0.0, 3.0, -3.0, 0.1, 0.2]), torch.tensor([0.0, 0.0, 3.0, -1.0, 0.0, 5.0])]
    ranked = space.ranked(flat)
    assert [n.id for n in ranked[:4]] == [N.error(H7).id, N.latent(H3, 1).id, N.latent(H3, 2).id, N.latent(H7, 2).id]
    assert len(ranked) == 7  # zeros never ranked
    assert space.ranked(flat, limit=2) == ranked[:2]
    assert space.ranked(flat, threshold=1.0) == ranked[:5]
    assert [space.site(n) for n in space.ranked(flat, per_site=1)] == [1, 0]
    assert all(n.is_latent for n in space.ranked(flat, kind="latent"))
    assert space.ranked(flat, kind="error") == [N.error(H7), N.error(H3)]
