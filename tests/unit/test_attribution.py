"""Node and edge attribution on tiny models, checked against independent TransformerLens-hook computations."""

from __future__ import annotations

import threading

import pytest
import torch

from sfc_core import attribution as A
from sfc_core.edges import edge_effects
from sfc_core.nodes import EMBED, METRIC
from sfc_core.errors import IncompatibleSAEError, InputError
from sfc_core.splice import encode, make_sites
from tests.tiny import tiny_batch, tiny_model, tiny_sae, tiny_setup


def _logit_diff_tl(model, tokens, batch, hooks=()):
    """Reference metric with TransformerLens hooks: logit diff at last_pos, per pair."""
    logits = model.run_with_hooks(tokens, fwd_hooks=list(hooks))
    rows = torch.arange(len(tokens))
    last = logits[rows, batch.last_pos]
    return last[rows, batch.answer_ids] - last[rows, batch.wrong_ids]


def _add_hook(delta):
    def hook(act, hook):  # noqa: ARG001
        return act + delta
    return hook


@pytest.mark.parametrize("kind", ["standard", "topk", "jumprelu", "gated"])
def test_spliced_run_equals_model_and_reconstructs(kind):
    model = tiny_model()
    sae = tiny_sae(kind=kind, hook="blocks.1.hook_resid_post")
    batch = tiny_batch()
    runs = A.prepare_runs(model, {"blocks.1.hook_resid_post": sae}, batch)
    ref = _logit_diff_tl(model, batch.clean_tokens, batch)
    torch.testing.assert_close(runs.m_clean, ref, atol=1e-9, rtol=1e-9)
    rec = runs.clean[0]
    assert rec.f.shape == (4, 7, 24) and rec.err.shape == (4, 7, 16)
    assert torch.all(rec.f[:, 0] == 0)  # BOS is not a node
    W = A.effective_decoder(sae)
    torch.testing.assert_close(rec.f @ W + sae.decode(torch.zeros(1, 24, dtype=W.dtype)) + rec.err, rec.x)


def test_exact_matches_hooked_patch():
    model, saes, batch = tiny_setup()
    runs = A.prepare_runs(model, saes, batch)
    hook = "blocks.1.hook_resid_post"
    site = 1
    feat = int(torch.argmax((runs.corrupted[site].f - runs.clean[site].f).abs().sum((0, 1))))
    K = runs.space.node_at
    nodes = [K(site, feat), K(site, 24), K(0, 24, position=2)]
    got = A.exact_effects(runs, nodes)
    W = A.effective_decoder(saes[hook])
    deltas = [
        (hook, (runs.corrupted[site].f - runs.clean[site].f)[..., feat, None] * W[feat]),
        (hook, runs.corrupted[site].err - runs.clean[site].err),
        ("blocks.0.hook_resid_post", torch.zeros_like(runs.clean[0].err)),
    ]
    d = runs.corrupted[0].err - runs.clean[0].err
    deltas[2][1][:, 2] = d[:, 2]
    for g, (h, delta) in zip(got, deltas):
        delta = delta * batch.valid_mask[..., None]
        ref = (_logit_diff_tl(model, batch.clean_tokens, batch, [(h, _add_hook(delta))]) - runs.m_clean).mean()
        assert abs(float(g) - float(ref)) < 1e-9
    assert abs(float(got[0])) > 1e-4  # the test patches something that matters


def test_atp_is_the_first_order_term():
    model, saes, batch = tiny_setup()
    runs = A.prepare_runs(model, saes, batch)
    attr = A.atp(runs)
    site, hook = 0, "blocks.0.hook_resid_post"
    W = A.effective_decoder(saes[hook])
    df = (runs.corrupted[site].f - runs.clean[site].f) * batch.valid_mask[..., None]
    feat = int(torch.argmax(attr.effects[site][:-1].abs()))
    eps = 1e-6
    delta = eps * df[..., feat, None] * W[feat]
    fd = (_logit_diff_tl(model, batch.clean_tokens, batch, [(hook, _add_hook(delta))]) - runs.m_clean).mean() / eps
    assert attr.effects[site].shape == (25,)
    assert abs(float(attr.effects[site][feat]) - float(fd)) < 1e-5 * max(1.0, abs(float(fd)))


def test_ig_sums_to_the_site_patch():
    """Completeness of IG: Σ over a site's nodes ≈ m(clean | site := corrupted) − m(clean)."""
    model, saes, batch = tiny_setup()
    runs = A.prepare_runs(model, saes, batch)
    attr = A.ig(runs, steps=400)
    for site, hook in enumerate(saes):
        delta = (runs.corrupted[site].x - runs.clean[site].x) * batch.valid_mask[..., None]
        ref = (_logit_diff_tl(model, batch.clean_tokens, batch, [(hook, _add_hook(delta))]) - runs.m_clean).mean()
        total = float(attr.effects[site].sum())
        assert abs(total - float(ref)) < 0.02 * abs(float(ref)) + 1e-3, (hook, total, float(ref))


@pytest.mark.parametrize("pos_kind", ["standard", "rotary"])
def test_shared_prefix_cache_changes_no_effect(pos_kind):
    """IG and exact patching re-run only the positions after the shared prefix; the numbers
    must equal those of full-length runs."""
    model = tiny_model(positional_embedding_type=pos_kind)
    saes = {f"blocks.{L}.hook_resid_post": tiny_sae(kind=k, hook=f"blocks.{L}.hook_resid_post", seed=L)
            for L, k in ((0, "standard"), (1, "topk"))}
    batch = tiny_batch()
    assert A.shared_prefix_length(batch) == 2  # BOS and one token before the first corrupted position
    cached = A.prepare_runs(model, saes, batch)
    full = A.prepare_runs(model, saes, batch)
    full.share_prefix = False
    assert cached.prefix().length == 2 and full.prefix() is None
    for method in ("ig", "exact"):
        a, b = A.attribute(cached, method), A.attribute(full, method)
        for x, y in zip(a.effects, b.effects):
            torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-9)
    K = cached.space.node_at
    nodes = [K(0, k) for k in range(25)] + [K(1, k) for k in (0, 5, 24)] + \
        [K(1, k, p) for k in (3, 24) for p in (1, 4)]
    a, _ = edge_effects(cached, nodes)
    b, _ = edge_effects(full, nodes)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-9), key


def test_positions_kept_sum_to_aggregate():
    model, saes, batch = tiny_setup()
    runs = A.prepare_runs(model, saes, batch)
    agg, per_pos = A.atp(runs, "sum"), A.atp(runs, "none")
    for a, p in zip(agg.effects, per_pos.effects):
        assert p.shape == (7, 25)
        torch.testing.assert_close(p.sum(0), a)


def test_edges_sum_to_downstream_node_change():
    """Σ_u IE(u → d) over every upstream node = ∇_d m · (d(x_up + Δx_up) − d(x_up)) to first order."""
    model, saes, batch = tiny_setup()
    runs = A.prepare_runs(model, saes, batch)
    attr = A.atp(runs)
    K = runs.space.node_at
    up = [K(0, k) for k in range(25)]
    feat = int(torch.argmax(attr.effects[1][:-1].abs()))
    down = [K(1, feat), K(1, 24)]
    assert down[1].is_error and down[0].id == f"blocks.1.hook_resid_post/{feat}"
    effects = {n: attr.space.value(attr.effects, n) for n in up + down}
    edges, _ = edge_effects(runs, up + down, effects)
    grads = A.clean_gradients(runs)
    site1 = runs.sites[1]
    eps = 1e-6
    x0 = runs.clean[0].x
    dx = (runs.corrupted[0].x - x0) * batch.valid_mask[..., None]

    def downstream(x):
        from sfc_core.splice import run_from
        x1 = run_from(model, runs.sites, x, 1, None, stop_block=2)
        return encode(site1, x1)

    f_a, e_a = downstream(x0)
    f_b, e_b = downstream(x0 + eps * dx)
    g_f = grads[1] @ A.effective_decoder(site1.sae).T
    ref_feat = ((g_f[..., feat] * (f_b[..., feat] - f_a[..., feat]) / eps) * batch.valid_mask).sum(1).mean()
    ref_err = ((grads[1] * (e_b - e_a) / eps).sum(-1) * batch.valid_mask).sum(1).mean()
    got_feat = sum(w for (u, d), w in edges.items() if d == down[0] and u != EMBED)
    got_err = sum(w for (u, d), w in edges.items() if d == down[1] and u != EMBED)
    assert abs(got_feat - float(ref_feat)) < 1e-4 * max(1, abs(float(ref_feat)))
    assert abs(got_err - float(ref_err)) < 1e-4 * max(1, abs(float(ref_err)))
    assert edges[(down[0], METRIC)] == effects[down[0]]
    assert (EMBED, up[3]) in edges


def test_bad_inputs():
    model, saes, batch = tiny_setup()
    with pytest.raises(InputError, match="at least one SAE"):
        A.prepare_runs(model, {}, batch)
    with pytest.raises(InputError, match="unknown or unsupported hook point"):
        make_sites(model, {"blocks.9.hook_resid_post": saes["blocks.0.hook_resid_post"]})
    with pytest.raises(IncompatibleSAEError):
        make_sites(model, {"blocks.0.hook_resid_post": tiny_sae(d_in=8)})
    runs = A.prepare_runs(model, saes, batch)
    with pytest.raises(InputError, match="unknown method"):
        A.attribute(runs, "magic")
    with pytest.raises(InputError, match="aggregation"):
        A.atp(runs, "max")
    with pytest.raises(InputError, match="metric"):
        A.prepare_runs(model, saes, batch, metric="accuracy")


def test_nan_activations_are_refused():
    from sfc_core.errors import NumericalError

    model, saes, batch = tiny_setup()
    with torch.no_grad():
        saes["blocks.1.hook_resid_post"].W_enc[0, 0] = float("nan")
    with pytest.raises(NumericalError, match="NaN or inf"):
        A.prepare_runs(model, saes, batch)


def test_parallel_threads_match_sequential():
    """Two different attributions on one shared model in parallel threads give the sequential numbers."""
    model = tiny_model()
    sae_sets = [
        {"blocks.0.hook_resid_post": tiny_sae(hook="blocks.0.hook_resid_post", seed=1)},
        {"blocks.1.hook_resid_post": tiny_sae(kind="topk", hook="blocks.1.hook_resid_post", seed=2),
         "blocks.2.hook_resid_post": tiny_sae(hook="blocks.2.hook_resid_post", seed=3)},
    ]
    batches = [tiny_batch(seed=1), tiny_batch(seed=2)]
    methods = ["ig", "atp"]

    def job(j):
        runs = A.prepare_runs(model, sae_sets[j], batches[j])
        return [e.clone() for e in A.attribute(runs, methods[j], steps=20).effects]

    sequential = [job(0), job(1)]
    results: dict[int, list] = {}
    for _ in range(3):
        threads = [threading.Thread(target=lambda j=j: results.__setitem__(j, job(j))) for j in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for j in range(2):
            for a, b in zip(results[j], sequential[j]):
                assert torch.equal(a, b)


# ------------------------------------------------------------------ AtP* (GradDrop)
def _dropped_grads_tl(model, batch, hooks_at, block):
    """Reference: ∂m/∂x at ``hooks_at`` with block ``block``'s attention and MLP outputs detached (TransformerLens
    hooks; GradDrop's dropped layer)."""
    store = {}

    def keep(act, hook):
        act.retain_grad()
        store[hook.name] = act
        return act

    detach = [(f"blocks.{block}.hook_{k}_out", lambda act, hook: act.detach()) for k in ("attn", "mlp")]
    with torch.enable_grad():
        _logit_diff_tl(model, batch.clean_tokens, batch, detach + [(h, keep) for h in hooks_at]).sum().backward()
    return [store[h].grad for h in hooks_at]


@pytest.mark.parametrize("share_prefix", [True, False])
def test_graddrop_gradients_match_hooked_backward(share_prefix):
    model, saes, batch = tiny_setup()
    runs = A.prepare_runs(model, saes, batch)
    runs.share_prefix = share_prefix
    plain, dropped, layers = A.graddrop_gradients(runs)
    assert layers == [[2, 1], [2]]  # blocks after blocks.0 / blocks.1.hook_resid_post, last carried first
    assert [d.shape for d in dropped] == [(2, 4, 7, 16), (1, 4, 7, 16)]
    start = A.shared_prefix_length(batch) if share_prefix else 0  # prefix nodes never differ: zero there
    for k, g in enumerate(A.clean_gradients(runs)):
        torch.testing.assert_close(plain[k][:, start:], g[:, start:], atol=1e-10, rtol=1e-10)
    for block in range(3):
        ref = _dropped_grads_tl(model, batch, list(saes), block)
        for k in range(2):
            got = dropped[k][layers[k].index(block)] if block in layers[k] else plain[k]
            torch.testing.assert_close(got[:, start:], ref[k][:, start:], atol=1e-10, rtol=1e-10)
            assert torch.all(got[:, :start] == 0)
    assert (dropped[0][0] - plain[0]).abs().max() > 1e-3  # dropping a block changes the gradient


def test_atp_star_one_downstream_block_is_the_direct_estimate():
    """Dropping only block 2 (the one block after blocks.1.hook_resid_post): every node's AtP* effect is
    sign(AtP) · |∇ₐm (block 2 detached) · Δa|, computed here with hooks."""
    model, saes, batch = tiny_setup()
    runs = A.prepare_runs(model, saes, batch)
    atp, star = A.atp(runs), A.atp_star(runs, drop_layers=[2])
    ref = _dropped_grads_tl(model, batch, list(saes), 2)
    for k in range(2):
        direct = A._site_effects(runs, k, ref[k], "sum")
        torch.testing.assert_close(star.effects[k], atp.effects[k].sign() * direct.abs(), atol=1e-10, rtol=1e-10)
    assert star.method == "atp_star" and (star.effects[0] - atp.effects[0]).abs().max() > 1e-4


def test_atp_star_without_downstream_drops_is_atp():
    model, saes, batch = tiny_setup()
    runs = A.prepare_runs(model, saes, batch)
    atp = A.atp(runs)
    for drops in ([], [0]):  # nothing dropped; block 0 sits before both sites
        for a, s in zip(atp.effects, A.atp_star(runs, drop_layers=drops).effects):
            torch.testing.assert_close(s, a, atol=1e-10, rtol=1e-10)


def test_atp_star_is_the_mean_magnitude_over_blocks(monkeypatch):
    model, saes, batch = tiny_setup()
    runs = A.prepare_runs(model, saes, batch)
    full = A.atp_star(runs)
    singles = [A.atp_star(runs, drop_layers=[b]) for b in range(3)]
    for k, e in enumerate(full.effects):
        assert e.shape == (25,)
        torch.testing.assert_close(e.abs(), sum(s.effects[k].abs() for s in singles) / 3, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(e.sign(), A.atp(runs).effects[k].sign())
    per_pos = A.atp_star(runs, "none")
    assert [p.shape for p in per_pos.effects] == [(7, 25), (7, 25)]
    monkeypatch.setattr(A, "GRADDROP_CHUNK_ROWS", 1)  # one dropped block per batched backward
    for a, b in zip(A.attribute(runs, "atp_star").effects, full.effects):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
