"""Hook points: the one place that builds and parses TransformerLens hook names.

Names follow TransformerLens (``utils.get_act_name``): ``blocks.{L}.hook_resid_post``,
``blocks.{L}.hook_resid_pre``, ``blocks.{L}.hook_mlp_out``, ``blocks.{L}.attn.hook_z``, ``hook_embed`` …
A :class:`HookPoint` is the parsed form: ``(layer, kind)`` with ``kind`` the name's last part without
``hook_`` (``"resid_post"``, ``"mlp_out"``, ``"z"``; ``"embed"`` at layer −1). The circuit engine splices
SAEs into the residual stream only (:func:`blocks_before` says where); other kinds parse here so that
labels and future node kinds (MLP neurons, attention heads, transcoders) need no parser of their own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InputError

EMBED_HOOK = "hook_embed"
#: Hook kinds that live under ``blocks.{L}.attn.`` rather than ``blocks.{L}.``.
_ATTN_KINDS = frozenset({"q", "k", "v", "z", "pattern", "attn_scores", "result"})
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(?:(attn|mlp|ln1|ln2)\.)?hook_([A-Za-z0-9_]+)$")
_TOP_RE = re.compile(r"^hook_([A-Za-z0-9_]+)$")


@dataclass(frozen=True)
class HookPoint:
    """A parsed hook name.

    Attributes:
        layer: block index (−1 for hook points before the first block, e.g. ``hook_embed``).
        kind: ``"resid_post"``, ``"resid_pre"``, ``"mlp_out"``, ``"attn_out"``, ``"z"``, ``"embed"`` …
        module: ``"attn"`` / ``"mlp"`` for hook points inside a sub-module, else ``""``.
    """

    layer: int
    kind: str
    module: str = ""

    @property
    def name(self) -> str:
        """The TransformerLens hook name (round trip of :func:`parse`)."""
        if self.layer < 0:
            return f"hook_{self.kind}"
        mod = f"{self.module}." if self.module else ""
        return f"blocks.{self.layer}.{mod}hook_{self.kind}"

    @property
    def is_residual(self) -> bool:
        """Whether the hook point is on the residual stream (``resid_pre/mid/post`` or ``hook_embed``)."""
        return self.kind in ("resid_pre", "resid_post", "resid_mid") or self.name == EMBED_HOOK


def get_act_name(kind: str, layer: int | None = None) -> str:
    """Hook name of ``kind`` at ``layer`` (``get_act_name("resid_post", 7)`` → ``blocks.7.hook_resid_post``),
    as TransformerLens' ``utils.get_act_name`` spells it.

    Raises:
        InputError: a negative layer, or no layer for a per-block kind.
    """
    if layer is None:
        return f"hook_{kind}"
    if layer < 0:
        raise InputError(f"layer must be ≥ 0, not {layer}")
    module = "attn" if kind in _ATTN_KINDS else ""
    return HookPoint(int(layer), kind, module).name


def resid_post(layer: int) -> str:
    """``blocks.{layer}.hook_resid_post``: the residual stream after block ``layer`` (the bundled SAEs' sites).

    Raises:
        InputError: a negative layer.
    """
    return get_act_name("resid_post", layer)


def mlp_post(layer: int) -> str:
    """``blocks.{layer}.mlp.hook_post``: the MLP's neuron activations after the nonlinearity (for a gated MLP,
    ``act(x W_gate) ⊙ (x W_in)``), ``[batch, pos, d_mlp]``; the engine's neuron sites (:mod:`sfc_core.neurons`).

    Raises:
        InputError: a negative layer.
    """
    if layer < 0:
        raise InputError(f"layer must be ≥ 0, not {layer}")
    return HookPoint(int(layer), "post", "mlp").name


def is_neuron_hook(hook_name: str) -> bool:
    """Whether a hook name is an MLP's neuron activations ``blocks.{L}.mlp.hook_post`` (a neuron site)."""
    try:
        hp = parse(hook_name)
    except InputError:
        return False
    return hp.module == "mlp" and hp.kind == "post" and hp.layer >= 0


def mlp_out(layer: int) -> str:
    """``blocks.{layer}.hook_mlp_out``: the MLP's output, ``[batch, pos, d_model]``; the engine's transcoder sites
    (:mod:`sfc_core.transcoders`).

    Raises:
        InputError: a negative layer.
    """
    return get_act_name("mlp_out", layer)


def is_transcoder_hook(hook_name: str) -> bool:
    """Whether a hook name is an MLP's output ``blocks.{L}.hook_mlp_out`` (a transcoder site)."""
    try:
        hp = parse(hook_name)
    except InputError:
        return False
    return not hp.module and hp.kind == "mlp_out" and hp.layer >= 0


def parse(hook_name: str) -> HookPoint:
    """:class:`HookPoint` of a hook name.

    Raises:
        InputError: not a TransformerLens hook name (one line naming it).
    """
    text = str(hook_name)
    m = _BLOCK_RE.match(text)
    if m:
        return HookPoint(int(m.group(1)), m.group(3), m.group(2) or "")
    m = _TOP_RE.match(text)
    if m:
        return HookPoint(-1, m.group(1))
    raise InputError(f"not a hook point: {text!r} (expected e.g. blocks.7.hook_resid_post)")


def layer_of(hook_name: str) -> int:
    """Block index of a hook point; −1 for ``hook_embed`` and for anything that is not a hook name."""
    try:
        return parse(hook_name).layer
    except InputError:
        return -1


def short_kind(hook_name: str) -> str:
    """The hook's kind for labels (``"resid_post"``, ``"mlp_out"``), or the raw name if unparseable."""
    try:
        return parse(hook_name).kind
    except InputError:
        return str(hook_name)


def blocks_before(hook_name: str, n_layers: int) -> int:
    """Number of transformer blocks that run before a site's hook point is edited (``resid_post`` L → L+1,
    ``resid_pre`` L → L, ``hook_embed`` → 0; a neuron site ``blocks.L.mlp.hook_post`` → L+1: its neurons are
    edited exactly through their write ``post @ W_out`` into the residual stream after block L; a transcoder site
    ``blocks.L.hook_mlp_out`` → L+1 likewise, through its features' write ``f @ W_dec``).

    Raises:
        InputError: not a residual-stream (or MLP neuron) hook point of a model with ``n_layers`` layers.
    """
    if hook_name == EMBED_HOOK:
        return 0
    try:
        hp = parse(hook_name)
    except InputError:
        hp = None
    if hp is not None and (is_neuron_hook(hook_name) or is_transcoder_hook(hook_name)) and hp.layer < n_layers:
        return hp.layer + 1
    if hp is not None and not hp.module and 0 <= hp.layer < n_layers:
        if hp.kind == "resid_post":
            return hp.layer + 1
        if hp.kind == "resid_pre":
            return hp.layer
    raise InputError(
        f"unknown or unsupported hook point '{hook_name}': the circuit engine uses residual-stream "
        f"hook points blocks.{{0..{n_layers - 1}}}.hook_resid_pre/post"
    )


def sae_key(hook_name: str) -> str:
    """File/folder stem of a bundled asset at a hook point: ``blocks.7.hook_resid_post`` → ``L7_resid_post``.

    Raises:
        InputError: not a per-block hook name.
    """
    hp = parse(hook_name)
    if hp.layer < 0:
        raise InputError(f"no per-layer asset name for {hook_name!r}")
    return f"L{hp.layer}_{hp.kind}"


def column_label(hook_name: str, qualify: bool = False) -> str:
    """Short axis label of a hook point: ``"L7"``, or ``"L7 mlp_out"`` with ``qualify`` (a layer with several
    hook points); ``"embed"`` for the embedding.

    Raises:
        InputError: not a TransformerLens hook name.
    """
    hp = parse(hook_name)
    if hp.layer < 0:
        return hp.kind
    return f"L{hp.layer} {hp.kind}" if qualify else f"L{hp.layer}"
