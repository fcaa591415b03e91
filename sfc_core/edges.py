"""Edge effects between nodes of consecutive SAE sites (Marks et al. 2024, §3, eq. 5).

For an upstream node ``u`` at site ``i`` and a downstream node ``d`` at the next site ``j``:

    IE(u → d) = ∇_d m · (∂d/∂u) · Δu,    Δu = u_corr − u_clean,

with ``∇_d m`` the clean gradient of the metric with respect to ``d`` (as in AtP) and
``∂d/∂u`` taken through only the blocks between the two sites (every residual path from
``i`` to the output passes ``j``, so no other path exists). One vector–Jacobian product per
downstream node gives the edges from all upstream nodes at once; downstream nodes are
batched by repeating the pairs. The embedding is an extra upstream node (``Δ`` = the
change of the token embeddings), and the metric an extra downstream node whose incoming
edges are the last site's node effects. Units: metric units (logits for logit difference).

Only positions after the prompts' shared prefix run (:meth:`PairRuns.prefix`): there ``Δu = 0``,
and a downstream node at such a position depends only on upstream ones at or before it.
"""

from __future__ import annotations

import time

import torch

from .attribution import PairRuns, clean_gradients
from .nodes import EMBED, METRIC, Node
from .splice import check_finite, encode, run_from


def _downstream_scalar(runs: PairRuns, j: int, x_j: torch.Tensor, nodes: list[Node],
                       grad_j: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """``Σ_r Σ_pos ∇_d m · d(x_j)`` over replicas ``r`` (one downstream node each), for positions
    ``offset..`` (``x_j`` and ``grad_j`` hold only those)."""
    site = runs.sites[j]
    n = runs.n
    f, err = encode(site, x_j, bos_first=offset == 0)
    total = x_j.new_zeros(())
    g_f = grad_j @ runs.decoder(j).T  # [n, pos, d_sae]
    mask = runs.mask[:, offset:]
    for r, node in enumerate(nodes):
        if node.position is not None and node.position < offset:
            continue
        rows = slice(r * n, (r + 1) * n)
        if node.is_error:
            contrib = (grad_j * err[rows]).sum(-1)
        else:
            k = runs.space.column(node)
            contrib = g_f[..., k] * f[rows, :, k]
        contrib = contrib * mask
        total = total + (contrib[:, node.position - offset].sum() if node.position is not None else contrib.sum())
    return total


def _upstream_weights(runs: PairRuns, i: int | None, grad_x: torch.Tensor, nodes: list[Node]) -> torch.Tensor:
    """Edge weights ``[len(nodes)]`` (mean over pairs) from ``∂s/∂x_i`` ``[n, pos, d_model]``."""
    out = torch.zeros(len(nodes), dtype=grad_x.dtype)
    if i is None:  # embedding
        delta = (runs.embed_corrupted - runs.embed_clean) * runs.mask[..., None]
        out[:] = (grad_x * delta).sum((1, 2)).mean(0)
        return out
    clean, corr = runs.clean[i], runs.corrupted[i]
    g_f = grad_x @ runs.decoder(i).T
    for u, node in enumerate(nodes):
        if node.is_error:
            per = (grad_x * (corr.err - clean.err)).sum(-1)
        else:
            k = runs.space.column(node)
            per = g_f[..., k] * (corr.f[..., k] - clean.f[..., k])
        per = per * runs.mask
        out[u] = (per[:, node.position] if node.position is not None else per.sum(1)).mean(0)
    return out


def edge_effects(runs: PairRuns, nodes: list[Node], node_effects: dict[Node, float] | None = None,
                 include_embed: bool = True, include_metric: bool = True, chunk_rows: int = 256,
                 progress=None) -> tuple[dict[tuple, float], dict]:
    """Edge IEs among ``nodes`` (consecutive sites), plus embedding → first site and last site → metric
    (Marks et al. 2024, §3, eq. 5; one vector–Jacobian product per downstream node).

    Args:
        nodes: the kept nodes (edges are computed for these only).
        node_effects: node IEs (metric units), used as the weights of the edges into the metric.
        chunk_rows: sequences per backward pass (downstream nodes batched as ``chunk_rows // n`` replicas).
        progress: optional ``callable(done, total)`` over downstream nodes.

    Returns:
        ``({(source, target): weight}, timings)``: endpoints are :class:`~sfc_core.nodes.Node` s (including
        :data:`~sfc_core.nodes.EMBED` / :data:`~sfc_core.nodes.METRIC`), weights mean over pairs in metric
        units; timings in seconds.

    Raises:
        InputError: a node at a hook point without an SAE, or a latent index out of range.
        NumericalError: NaN or inf in a gradient.
    """
    t0 = time.perf_counter()
    grads = clean_gradients(runs)
    by_site: dict[int, list[Node]] = {}
    for node in nodes:
        by_site.setdefault(runs.space.site(node), []).append(node)
    edges: dict[tuple, float] = {}
    n_sites = len(runs.sites)
    per = max(1, chunk_rows // runs.n)
    pre = runs.prefix()
    offset = pre.length if pre is not None else 0
    done = 0
    for j in range(n_sites):
        down = by_site.get(j, [])
        up_index = j - 1 if j > 0 else None
        up = by_site.get(j - 1, []) if j > 0 else None
        if not down or (up_index is not None and not up) or (up_index is None and not include_embed):
            done += len(down)
            continue
        x_up = runs.clean[up_index].x if up_index is not None else runs.embed_clean
        start = runs.sites[up_index].n_blocks_before if up_index is not None else 0
        for c in range(0, len(down), per):
            chunk = down[c:c + per]
            x = x_up[:, offset:].repeat(len(chunk), 1, 1).detach().requires_grad_(True)
            with torch.enable_grad():
                x_j = run_from(runs.model, runs.sites, x, start, None, stop_block=runs.sites[j].n_blocks_before,
                               past=pre.entries(len(chunk)) if pre is not None else None)
                s = _downstream_scalar(runs, j, x_j, chunk, grads[j][:, offset:], offset)
                (g,) = torch.autograd.grad(s, [x])
            g = torch.nn.functional.pad(check_finite(g, "edge gradient"), (0, 0, offset, 0))
            g = g.view(len(chunk), runs.n, *x_up.shape[1:])
            for r, d in enumerate(chunk):
                if up_index is None:
                    edges[(EMBED, d)] = float(_upstream_weights(runs, None, g[r], [d])[0])
                else:
                    for u, w in zip(up, _upstream_weights(runs, up_index, g[r], up)):
                        edges[(u, d)] = float(w)
            done += len(chunk)
            if progress:
                progress(done, len(nodes))
    if include_metric and node_effects is not None:
        for node in by_site.get(n_sites - 1, []):
            edges[(node, METRIC)] = float(node_effects[node])
    return edges, {"edges": time.perf_counter() - t0}
