"""MLP neurons as circuit nodes: the engine's sites, attribution and ablation with neurons in place of SAE latents.

Marks et al. 2024 (§4 and their appendix on neuron circuits) compare feature circuits with circuits whose nodes
are the model's own neurons: at a given faithfulness a feature circuit needs far fewer nodes. This module makes
the MLP neurons ``blocks.L.mlp.hook_post`` ``[batch, pos, d_mlp]`` one more kind of site, so that every engine
function written for SAE sites (:func:`~sfc_core.attribution.prepare_runs`, AtP / IG / exact patching,
mean ablation and faithfulness curves) runs on neurons unchanged.

**A neuron site is an SAE whose encoder is the MLP.** The MLP writes ``post @ W_out + b_out`` into the residual
stream after block L, so at ``blocks.L.hook_resid_post`` the residual is exactly ``x = post @ W_out + rest``
(``rest`` = the stream before the MLP plus ``b_out``). :class:`NeuronDictionary` plays the SAE at that point:
``encode(x)`` returns the ``post`` the block just computed (read by a capture hook on ``hook_post``),
``decode(f) = f @ W_out``, and the "error" ``x − decode(f)`` is ``rest`` — which is **not a node**: it is never
ranked, never ablated (:class:`~sfc_core.nodes.NodeSpace`: a neuron site has no error node). Editing a neuron is
therefore exact: ``x + (post' − post) @ W_out`` is what block L would have written with ``post'``, and every
later block recomputes. The gradient ``∂m/∂post = W_out ∂m/∂x`` is exact too, so AtP, IG and exact patching are
the SAE code paths with ``W_out`` as the decoder.

**Thread safety.** The capture hooks are permanent TransformerLens hooks (installed once per block) that store
the block's ``hook_post`` and ``hook_resid_post`` outputs in thread-local slots; they never change an output.
``encode`` checks that the residual it is given *is* the output of block L in this thread's latest pass (object
identity), so a run that starts after block L (FAP-Synergy's and the mask's site-started runs) is refused with
an :class:`~sfc_core.errors.InputError` instead of reading stale neurons.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace

import torch

from . import hooks
from .errors import InputError

_LOCAL = threading.local()
_INSTALL_LOCK = threading.Lock()


def capture_slots() -> dict:
    """This thread's captured hook outputs ``{key: tensor}`` (:func:`install_capture`)."""
    slots = getattr(_LOCAL, "slots", None)
    if slots is None:
        slots = _LOCAL.slots = {}
    return slots


def _installed(hp) -> bool:
    return getattr(hp, "_sfc_capture_id", None) in getattr(hp, "_forward_hooks", {})


def install_capture(hp, key) -> None:
    """A permanent forward hook on HookPoint ``hp`` storing its output under ``key`` in :func:`capture_slots`
    (thread-local), installed once; the output is unchanged. Shared with :mod:`sfc_core.transcoders`."""
    with _INSTALL_LOCK:
        if _installed(hp):
            return

        def capture(t, hook=None):
            capture_slots()[key] = t  # returns None: the output is unchanged (same object)

        hp.add_hook(capture, dir="fwd", is_permanent=True)
        hp._sfc_capture_id = hp.fwd_hooks[-1].hook.id


class NeuronDictionary:
    """The MLP neurons of block ``layer`` in the shape of an SAE Lens SAE (``encode``, ``decode``, ``W_dec``,
    ``cfg.d_sae``, ``cfg.d_in``), for a site at ``blocks.{layer}.mlp.hook_post``.

    Attributes:
        layer: block index L.
        hook_name: ``blocks.L.mlp.hook_post``.
        W_dec: the MLP's ``W_out`` ``[d_mlp, d_model]`` (residual units per unit of neuron activation).
        cfg: ``d_sae = d_mlp``, ``d_in = d_model``.
        is_neurons: True (what :func:`~sfc_core.splice.make_sites` checks at a ``hook_post`` site).

    Raises:
        InputError: (constructor) a layer outside the model, or a block without an MLP ``hook_post``.
    """

    is_neurons = True
    #: Reads block L's internals through capture hooks: a pass must run block L to encode here.
    reads_block = True

    def __init__(self, model, layer: int):
        n_layers = int(model.cfg.n_layers)
        if not 0 <= int(layer) < n_layers:
            raise InputError(f"neuron layer {layer} is outside the model's blocks 0..{n_layers - 1}")
        self.layer = int(layer)
        self.hook_name = hooks.mlp_post(self.layer)
        block = model.blocks[self.layer]
        mlp = getattr(block, "mlp", None)
        if mlp is None or not hasattr(mlp, "hook_post") or not hasattr(mlp, "W_out"):
            raise InputError(f"block {layer} has no MLP with hook_post and W_out: no neuron site there")
        self._mlp = mlp
        self._key = (id(model), self.layer)
        install_capture(mlp.hook_post, self._key + ("post",))
        install_capture(block.hook_resid_post, self._key + ("resid",))
        self.cfg = SimpleNamespace(d_sae=int(mlp.W_out.shape[0]), d_in=int(mlp.W_out.shape[1]),
                                   metadata=SimpleNamespace(hook_name=self.hook_name))

    @property
    def W_dec(self) -> torch.Tensor:
        """``W_out`` ``[d_mlp, d_model]``."""
        return self._mlp.W_out

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The neuron activations ``post`` ``[b, p, d_mlp]`` that block L computed in this thread's pass whose
        output is ``x`` ``[b, p, d_model]`` (the residual after block L).

        Raises:
            InputError: ``x`` is not block L's output in this thread's latest pass (a run that starts after
                block L cannot see the neurons).
        """
        slots = capture_slots()
        if slots.get(self._key + ("resid",)) is not x or self._key + ("post",) not in slots:
            raise InputError(f"neurons at {self.hook_name} are read while block {self.layer} runs: this pass "
                             f"started after block {self.layer}, so neuron nodes cannot be used here")
        return slots[self._key + ("post",)]

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """The neurons' write into the residual stream without ``b_out``: ``f @ W_out``, ``[..., d_model]`` from
        ``f`` ``[..., d_mlp]``."""
        return f @ self._mlp.W_out


def neuron_sites(model, layers) -> dict:
    """``{blocks.L.mlp.hook_post: NeuronDictionary}`` for each layer, to pass where the engine takes SAEs
    (:func:`~sfc_core.attribution.prepare_runs`, :func:`~sfc_core.splice.make_sites`).

    Args:
        layers: block indices, or hook names (``blocks.L.hook_resid_post`` — an SAE's — or
            ``blocks.L.mlp.hook_post``), e.g. the bundled SAEs' hook points for a neuron circuit at their layers.

    Raises:
        InputError: a layer outside the model, a name that is not a per-block hook point, or no layer.
    """
    out = {}
    for item in layers:
        layer = hooks.parse(item).layer if isinstance(item, str) else int(item)
        d = NeuronDictionary(model, layer)
        out[d.hook_name] = d
    if not out:
        raise InputError("choose at least one layer for neuron sites")
    return out


def prepare_neuron_runs(model, layers, batch, metric: str = "logit_diff"):
    """Clean and corrupted runs with MLP neuron sites at ``layers`` (:func:`neuron_sites`): a
    :class:`~sfc_core.attribution.PairRuns` whose per-site ``f`` is ``post`` ``[n, pos, d_mlp]`` (BOS row zero)
    and whose ``err`` is the rest of the residual stream (no node).

    Raises:
        InputError: bad layers or an unknown metric.
        NumericalError: NaN or inf in activations.
    """
    from .attribution import prepare_runs

    return prepare_runs(model, neuron_sites(model, layers), batch, metric)


class ResidualBasis:
    """The residual stream's own basis directions at a residual hook point as a site's units ("neurons" of the
    residual stream, Marks et al. 2024's neuron baseline at the SAEs' own sites): ``encode(x) = x``,
    ``decode(f) = f``, ``W_dec = I`` ``[d_model, d_model]``; no error node (``unit_kind = "neuron"``: node ids
    ``blocks.L.hook_resid_post/nK``). Mean-ablating every direction is mean-ablating the residual, which is what
    ablating every SAE latent and error node there does, so the two circuits share ``m(∅)`` and ``m(M)``.

    Raises:
        InputError: (constructor) not a residual hook point of the model.
    """

    unit_kind = "neuron"

    def __init__(self, model, hook_name: str):
        hooks.blocks_before(hook_name, int(model.cfg.n_layers))
        if hooks.is_neuron_hook(hook_name):
            raise InputError(f"{hook_name} is an MLP's neurons, not a residual hook point")
        d = int(model.cfg.d_model)
        self.hook_name = hook_name
        self._eye = torch.eye(d, dtype=model.cfg.dtype)
        self.cfg = SimpleNamespace(d_sae=d, d_in=d, metadata=SimpleNamespace(hook_name=hook_name))

    @property
    def W_dec(self) -> torch.Tensor:
        """The identity ``[d_model, d_model]``."""
        return self._eye

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` itself ``[b, p, d_model]``."""
        return x

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """``f`` itself ``[..., d_model]``."""
        return f


def residual_sites(model, hook_names) -> dict:
    """``{hook_name: ResidualBasis}`` at residual hook points (e.g. the bundled SAEs'), to pass where the engine
    takes SAEs.

    Raises:
        InputError: a hook point that is not on the residual stream, or none.
    """
    out = {h: ResidualBasis(model, h) for h in hook_names}
    if not out:
        raise InputError("choose at least one residual hook point")
    return out
