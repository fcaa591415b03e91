"""Our per-layer transcoders in circuit-tracer's on-disk format, so its attribution graphs run on them offline.

circuit-tracer (PyPI ``circuit-tracer``, format checked against 0.5.0) reads a per-layer transcoder set from a folder

    config.yaml              model_kind: transcoder_set, model_name, feature_input_hook, feature_output_hook, scan
    layer_0.safetensors      one file per block 0 … n_layers − 1, no gaps
    …

(``circuit_tracer.utils.caching.load_transcoders_from_cache`` reads exactly this: it globs ``layer_*.safetensors``,
``load_relu_transcoder`` loads each). Each file holds, in circuit-tracer's orientation (it encodes with
``F.linear(x, W_enc, b_enc)``, decodes with ``f @ W_dec + b_dec`` and skips with ``x @ W_skip.T``):

    W_enc                          [d_sae, d_model]   = our W_enc [d_in, d_sae] transposed
    W_dec                          [d_sae, d_model]   = our W_dec
    b_enc                          [d_sae]
    b_dec                          [d_model]
    W_skip                         [d_model, d_model] = our W_skip [d_out, d_in] (same orientation)
    activation_function.threshold  [d_sae]            = our threshold, clamped at 0 (see below)

The key ``activation_function.threshold`` is what selects circuit-tracer's ``JumpReLU`` (without it, ReLU); a file
with a bare ``threshold`` key fails its strict ``load_state_dict``. circuit-tracer's JumpReLU is ``z · [z > θ]``,
SAE Lens' ``relu(z) · [z > θ]``: equal for θ ≥ 0, and for θ < 0 SAE Lens' equals circuit-tracer's with θ = 0, so
writing ``max(θ, 0)`` keeps the transcoder's function exactly. The hook names in ``config.yaml`` are relative to a
block, as circuit-tracer builds ``blocks.{L}.{hook}``: ``ln2.hook_normalized`` (where our transcoders read) and
``hook_mlp_out`` (where they write). There is no ``transcoders:`` list in ``config.yaml``: circuit-tracer resolves
such entries against the current directory (or the hub), while the file glob above needs nothing.

Load the folder with circuit-tracer (no hub)::

    from circuit_tracer.utils.caching import load_transcoders_from_cache
    transcoders, config = load_transcoders_from_cache(out_dir.name, cache_dir=out_dir.parent)

No circuit-tracer import here: the project's pinned stack (transformers 5.x) cannot be installed together with
circuit-tracer 0.5.0 (transformers ≤ 4.57.3), so it runs in its own environment (``make peer-venv``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from . import defaults
from .errors import AssetError, IncompatibleSAEError, InputError
from .transcoders import bundled_transcoder_dirs, input_hook, load_transcoder_dir, output_hook

#: The circuit-tracer release whose format this writes (``circuit_tracer/transcoder/single_layer_transcoder.py``).
CIRCUIT_TRACER_VERSION = "0.5.0"
#: Block-relative hook names written to ``config.yaml`` (circuit-tracer prefixes ``blocks.{L}.``).
FEATURE_INPUT_HOOK = "ln2.hook_normalized"
FEATURE_OUTPUT_HOOK = "hook_mlp_out"
#: Shape of the bundled model (``sfc_core.model``; DESIGN.md "Facts measured"), used when none is given.
BUNDLED_SHAPE = {"n_layers": 30, "d_model": 576}
#: dtypes circuit-tracer's loader accepts on disk (it casts to its own dtype on load).
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_KEYS = ("W_enc", "b_enc", "W_dec", "b_dec", "W_skip", "threshold")


def layer_file(layer: int) -> str:
    """File name of block ``layer``'s transcoder in a circuit-tracer folder: ``layer_7.safetensors``."""
    return f"layer_{int(layer)}.safetensors"


def _dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, str):
        if dtype.removeprefix("torch.") not in DTYPES:
            raise InputError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
        return DTYPES[dtype.removeprefix("torch.")]
    if dtype not in DTYPES.values():
        raise InputError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype}")
    return dtype


def _load_folder(root: Path) -> dict[int, Any]:
    """``{layer: SAE Lens transcoder}`` from a folder of ``L{layer}_transcoder`` subfolders.

    Raises:
        InputError: no such folder, no transcoder in it, a layer folder without ``cfg.json`` or unreadable.
    """
    if not root.is_dir():
        raise InputError(f"transcoder folder not found: {root}")
    named = sorted(p for p in root.glob("L*_transcoder") if p.is_dir())
    dirs = bundled_transcoder_dirs(root)
    if not named:
        raise InputError(f"no transcoders in {root}: expected L{{layer}}_transcoder folders (SAE Lens format)")
    incomplete = [p.name for p in named if p not in dirs.values()]
    if incomplete:
        raise InputError(f"transcoder folder {root / incomplete[0]} has no cfg.json")
    out = {}
    for layer, folder in dirs.items():
        try:
            out[layer] = load_transcoder_dir(folder)
        except AssetError as exc:  # a user-given folder: bad input, not a broken bundle
            raise InputError(str(exc)) from exc
    return out


def _unwrap(layer, tc) -> tuple[int, Any]:
    """``(layer, SAE Lens transcoder)`` from a dict entry: ``{layer: transcoder}`` or an engine site
    ``{"blocks.L.hook_mlp_out": TranscoderDictionary}``, bare or in a :class:`~sfc_core.saes.LoadedSAE`
    (what :func:`~sfc_core.transcoders.load_bundled_transcoders` returns)."""
    inner = getattr(tc, "sae", None)
    if getattr(inner, "is_transcoder", False):  # LoadedSAE around a TranscoderDictionary
        tc = inner
    if getattr(tc, "is_transcoder", False) and hasattr(tc, "transcoder"):
        return int(tc.layer), tc.transcoder
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise InputError(f"transcoders must be keyed by layer number, not {layer!r:.60}")
    return layer, tc


def _weights(layer: int, tc, d_model: int) -> dict[str, torch.Tensor]:
    """Our six tensors of ``tc`` (fp32, detached, CPU), checked against the model and the hook points.

    Raises:
        InputError: missing weights, hook names other than :func:`~sfc_core.transcoders.input_hook` /
            :func:`~sfc_core.transcoders.output_hook` of ``layer``, input normalisation or ``b_dec`` applied to the
            input, inconsistent shapes, or non-finite values.
        IncompatibleSAEError: ``d_in`` or ``d_out`` ≠ ``d_model``.
    """
    missing = [k for k in _KEYS if not isinstance(getattr(tc, k, None), torch.Tensor)]
    if missing:
        raise InputError(f"transcoder at layer {layer} is not a JumpReLU skip transcoder (no {', '.join(missing)})")
    cfg = getattr(tc, "cfg", None)
    meta = getattr(cfg, "metadata", None)
    hook_in, hook_out = getattr(meta, "hook_name", None), getattr(meta, "hook_name_out", None)
    if hook_in != input_hook(layer) or hook_out != output_hook(layer):
        raise InputError(f"transcoder at layer {layer} reads {hook_in!r} and writes {hook_out!r}; circuit-tracer "
                         f"needs {input_hook(layer)!r} -> {output_hook(layer)!r}")
    if getattr(cfg, "apply_b_dec_to_input", False) or getattr(cfg, "normalize_activations", "none") != "none":
        raise InputError(f"transcoder at layer {layer} transforms its input (b_dec subtracted or normalised); "
                         "circuit-tracer encodes the raw input")
    w = {k: getattr(tc, k).detach().to("cpu", torch.float32) for k in _KEYS}
    d_in, d_sae = w["W_enc"].shape if w["W_enc"].dim() == 2 else (None, None)
    d_out = w["W_dec"].shape[1] if w["W_dec"].dim() == 2 else None
    if d_in != d_model or d_out != d_model:
        raise IncompatibleSAEError(f"transcoder at layer {layer} maps {d_in} -> {d_out}, the model's d_model is "
                                   f"{d_model}")
    shapes = {"b_enc": (d_sae,), "W_dec": (d_sae, d_model), "b_dec": (d_model,), "W_skip": (d_model, d_model),
              "threshold": (d_sae,)}
    for k, shape in shapes.items():
        if tuple(w[k].shape) != shape:
            raise InputError(f"transcoder at layer {layer}: {k} has shape {tuple(w[k].shape)}, expected {shape}")
    bad = [k for k in _KEYS if not torch.isfinite(w[k]).all()]
    if bad:
        raise InputError(f"transcoder at layer {layer} has NaN or inf in {', '.join(bad)}")
    return w


def circuit_tracer_tensors(weights: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float32) -> dict:
    """One layer's tensors as circuit-tracer stores them (module doc), from ours (``W_enc`` ``[d_in, d_sae]``, …)."""
    return {
        "W_enc": weights["W_enc"].T.contiguous().to(dtype),
        "W_dec": weights["W_dec"].contiguous().to(dtype),
        "b_enc": weights["b_enc"].contiguous().to(dtype),
        "b_dec": weights["b_dec"].contiguous().to(dtype),
        "W_skip": weights["W_skip"].contiguous().to(dtype),
        "activation_function.threshold": weights["threshold"].clamp_min(0.0).contiguous().to(dtype),
    }


def config_yaml(model_name: str, scan: str) -> str:
    """Text of circuit-tracer's ``config.yaml`` for a per-layer transcoder set (values JSON-quoted: valid YAML)."""
    fields = {"model_kind": "transcoder_set", "model_name": model_name, "feature_input_hook": FEATURE_INPUT_HOOK,
              "feature_output_hook": FEATURE_OUTPUT_HOOK, "scan": scan}
    return "".join(f"{k}: {json.dumps(v, ensure_ascii=False)}\n" for k, v in fields.items())


def export_circuit_tracer(transcoders: str | os.PathLike | Mapping, out_dir: str | os.PathLike,
                          model_name: str = defaults.BUNDLED_MODEL_NAME, *, n_layers: int | None = None,
                          d_model: int | None = None, dtype: torch.dtype | str = torch.float32,
                          scan: str | None = None, overwrite: bool = False) -> Path:
    """Write ``transcoders`` as a circuit-tracer transcoder set (module doc) in ``out_dir``, atomically.

    Args:
        transcoders: a folder of ``L{layer}_transcoder`` SAE Lens folders (``assets/transcoders``, written by
            :func:`~sfc_core.transcoders.save_transcoder`), ``{layer: SAE Lens JumpReLUSkipTranscoder}``, or
            the engine's sites ``{hook: TranscoderDictionary}`` (bare or in ``LoadedSAE``, as
            :func:`~sfc_core.transcoders.load_bundled_transcoders` returns them).
            One per block ``0 … n_layers − 1``: circuit-tracer replaces every MLP.
        out_dir: the folder to create (``config.yaml`` + ``layer_{i}.safetensors``).
        model_name: ``config.yaml``'s ``model_name``.
        n_layers / d_model: the model's blocks and width (default: the bundled model's, 30 and 576, when
            ``model_name`` names it).
        dtype: on-disk dtype, ``float32`` (default), ``float16`` or ``bfloat16``; circuit-tracer casts on load.
        scan: the transcoder set's name in circuit-tracer's graphs (``metadata.scan``); default ``model_name``.
        overwrite: replace an existing ``out_dir`` (else it must not exist).

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.

    Raises:
        InputError: the folder or a layer is missing or unreadable, layers outside ``0 … n_layers − 1`` or not
            all of them, different ``d_sae`` across layers, wrong hook names, a transcoder that transforms its
            input, non-finite weights, no ``n_layers`` / ``d_model`` for a model other than the bundled one, an
            unknown dtype, or ``out_dir`` exists (without ``overwrite``). Nothing is written then.
        IncompatibleSAEError (an InputError): a transcoder's ``d_in`` or ``d_out`` ≠ ``d_model``.
    """
    from safetensors.torch import save_file

    from .model import is_bundled

    if n_layers is None or d_model is None:
        if not is_bundled(model_name):
            raise InputError(f"give n_layers and d_model of model {model_name!r}")
        n_layers = BUNDLED_SHAPE["n_layers"] if n_layers is None else n_layers
        d_model = BUNDLED_SHAPE["d_model"] if d_model is None else d_model
    n_layers, d_model = int(n_layers), int(d_model)
    dt = _dtype(dtype)
    out = Path(out_dir)
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise InputError(f"{out} exists; choose a new folder or overwrite it")
    if isinstance(transcoders, (str, os.PathLike)):
        loaded = _load_folder(Path(transcoders))
    elif isinstance(transcoders, Mapping):
        loaded = dict(_unwrap(k, v) for k, v in transcoders.items())
    else:
        raise InputError(f"transcoders must be a folder or a dict of transcoders, not {type(transcoders).__name__}")
    if not loaded:
        raise InputError("no transcoders to export")
    outside = sorted(L for L in loaded if not 0 <= L < n_layers)
    if outside:
        raise InputError(f"transcoder layer(s) {outside} outside the model's blocks 0..{n_layers - 1}")
    missing = [L for L in range(n_layers) if L not in loaded]
    if missing:
        shown = ", ".join(map(str, missing[:8])) + (", …" if len(missing) > 8 else "")
        raise InputError(f"{len(loaded)} transcoders for a {n_layers}-layer model: circuit-tracer needs one per "
                         f"block, missing layer(s) {shown}")
    tensors = {L: circuit_tracer_tensors(_weights(L, loaded[L], d_model), dt) for L in range(n_layers)}
    widths = sorted({int(t["b_enc"].shape[0]) for t in tensors.values()})
    if len(widths) > 1:
        raise InputError(f"transcoders of different widths d_sae {widths}: circuit-tracer needs one width")
    for L, t in tensors.items():
        if dt != torch.float32 and not all(torch.isfinite(v).all() for v in t.values()):
            raise InputError(f"transcoder at layer {L} overflows {str(dt).removeprefix('torch.')}")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}-{time.time_ns()}")
    try:
        tmp.mkdir()
        for L, t in tensors.items():
            save_file(t, str(tmp / layer_file(L)),
                      metadata={"layer": str(L), "format": f"circuit-tracer {CIRCUIT_TRACER_VERSION} transcoder"})
        (tmp / "config.yaml").write_text(config_yaml(model_name, scan or model_name), encoding="utf-8")
        old = None
        if out.exists() or out.is_symlink():
            old = out.with_name(f".{out.name}.old{os.getpid()}-{time.time_ns()}")
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() and not old.is_symlink() else old.unlink()
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc.strerror or exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def read_circuit_tracer(folder: str | os.PathLike) -> tuple[dict, dict[int, dict[str, torch.Tensor]]]:
    """``(config, {layer: tensors})`` of a folder written by :func:`export_circuit_tracer` (circuit-tracer's keys
    and orientation), for checks and tests; ``config`` parsed from the ``key: "value"`` lines we write.

    Raises:
        InputError: no ``config.yaml`` or a missing / unreadable layer file.
    """
    from safetensors.torch import load_file

    root = Path(folder)
    try:
        lines = (root / "config.yaml").read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"no circuit-tracer config.yaml in {root}") from exc
    config = {}
    for line in lines:
        key, sep, value = line.partition(": ")
        if sep:
            config[key] = json.loads(value)
    files = sorted(root.glob("layer_*.safetensors"), key=lambda p: int(p.stem.split("_")[1]))
    layers = {}
    for p in files:
        try:
            layers[int(p.stem.split("_")[1])] = load_file(str(p))
        except Exception as exc:
            raise InputError(f"unreadable circuit-tracer layer file {p}: {exc}") from exc
    if sorted(layers) != list(range(len(layers))):
        raise InputError(f"circuit-tracer folder {root} lacks layer files: has {sorted(layers)}")
    return config, layers


__all__ = ["CIRCUIT_TRACER_VERSION", "FEATURE_INPUT_HOOK", "FEATURE_OUTPUT_HOOK", "circuit_tracer_tensors",
           "config_yaml", "export_circuit_tracer", "layer_file", "read_circuit_tracer"]
