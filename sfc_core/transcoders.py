"""Per-layer transcoders of the bundled model's MLPs: activations, training, on-disk format, quality.

A transcoder at layer ``L`` reads the MLP's input after its RMSNorm and predicts the MLP's output
(Dunefsky et al. 2024, "Transcoders find interpretable LLM feature circuits"):

    f(x) = JumpReLU_θ(x · W_enc + b_enc)                         [..., d_sae]
    ŷ(x) = f(x) · W_dec + b_dec + x · W_skipᵀ                    [..., d_model]

with input hook ``blocks.{L}.ln2.hook_normalized`` (the normalised MLP input; the RMSNorm gain is a fixed
per-channel scale, absorbed by ``W_enc`` and ``W_skip``) and output hook ``blocks.{L}.hook_mlp_out``. The
linear skip term (Paulo et al. 2025, "Transcoders beat sparse autoencoders for interpretability") carries the
linear part of the MLP, so the features spend their capacity on the non-linear part; it is not a node, gradients
flow through it like through an error node.

Training is BatchTopK (Bussmann et al. 2024, "BatchTopK sparse autoencoders"): the ``k · batch`` largest
pre-activations of a batch stay on, AuxK (Gao et al. 2024) revives dead features, and decoder rows are kept at unit
norm. Inference is JumpReLU with one threshold θ, the value above which ``k`` features per token are on average
active on training tokens (BatchTopK's conversion), so a feature's activation does not depend on the others'
(attribution treats each feature separately) and the weights load as SAE Lens' ``JumpReLUSkipTranscoder`` and as a
circuit-tracer transcoder. SAE Lens trains no transcoders, hence the short training loop here; loading, encoding
and the on-disk format are SAE Lens'.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from types import SimpleNamespace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import defaults
from .errors import AssetError, InputError

#: Quality bar of the bundled transcoders (issue 15): FVE of the MLP output and CE-loss recovered per layer and
#: with all layers replaced at once, at least; dead fraction at most.
QUALITY_BAR = {"fve": 0.75, "ce_recovered": 0.85, "ce_recovered_all": 0.85, "dead_frac": 0.10}


def input_hook(layer: int) -> str:
    """Transcoder input hook point: the normalised MLP input ``blocks.{layer}.ln2.hook_normalized``."""
    return f"blocks.{layer}.ln2.hook_normalized"


def output_hook(layer: int) -> str:
    """Transcoder output hook point: the MLP output ``blocks.{layer}.hook_mlp_out``."""
    return f"blocks.{layer}.hook_mlp_out"


def transcoder_key(layer: int) -> str:
    """Folder name of layer ``layer``'s transcoder: ``L7_transcoder``."""
    return f"L{layer}_transcoder"


@dataclass(frozen=True)
class TranscoderBuildConfig:
    """Everything ``sfc bundle build --transcoders`` needs; stored in ``assets/bundle.json``.

    Attributes:
        layers: MLP layers that get a transcoder (all of the model's by default).
        d_sae: features per transcoder; k: BatchTopK's mean active features per token.
        epochs: passes over the cached activations; batch_tokens: tokens per step; lr: Adam's peak learning rate
            (cosine decay to lr/10).
        aux_k / aux_coef / dead_tokens: AuxK's latents, loss weight, and the tokens without activation after which
            a feature counts as dead during training.
        check_seqs: held-out sequences for CE-loss recovered.
    """

    layers: tuple[int, ...] = tuple(range(30))
    d_sae: int = 2048
    k: int = 64
    epochs: float = 5.0
    batch_tokens: int = 1024
    lr: float = 1e-3
    aux_k: int = 256
    aux_coef: float = 1 / 32
    dead_tokens: int = 100_000
    seed: int = 0
    chunk_seqs: int = 64
    check_seqs: int = 24


# ---------------------------------------------------------------- activations
def collect_mlp_activations(model, tokens: torch.Tensor, layers: list[int], out_dir: Path,
                            chunk_seqs: int = 64, batch_seqs: int = 16) -> list[Path]:
    """Cache every layer's MLP input (normalised) and output, BOS position dropped, as fp16 safetensors chunks;
    chunks already on disk are kept (resumable).

    Args:
        tokens: ``[n_seq, seq_len]`` token ids, BOS first.
    Returns:
        Chunk files, each ``{"in.{L}": [rows, d_model], "out.{L}": [rows, d_model]}`` with
        ``rows = chunk_seqs · (seq_len − 1)``.
    """
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    names = {input_hook(L): f"in.{L}" for L in layers} | {output_hook(L): f"out.{L}" for L in layers}
    stop = max(layers) + 1
    paths = []
    for c in tqdm(range(math.ceil(len(tokens) / chunk_seqs)), desc="caching MLP activations"):
        path = out_dir / f"chunk_{c:05d}.safetensors"
        paths.append(path)
        if path.is_file():
            continue
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in names.values()}
        chunk = tokens[c * chunk_seqs:(c + 1) * chunk_seqs].long()
        for b in range(0, len(chunk), batch_seqs):
            with torch.inference_mode():
                _, cache = model.run_with_cache(chunk[b:b + batch_seqs], names_filter=list(names),
                                                stop_at_layer=stop)
            for hook, key in names.items():
                parts[key].append(cache[hook][:, 1:].reshape(-1, cache[hook].shape[-1]).half())
        tmp = path.with_suffix(".tmp")
        save_file({k: torch.cat(v) for k, v in parts.items()}, str(tmp))
        tmp.rename(path)
    return paths


def load_layer(paths: list[Path], layer: int, keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer's cached ``(mlp_in, mlp_out)``, each ``[rows, d_model]`` fp16; ``keep`` ``[rows]`` selects rows."""
    from safetensors import safe_open

    xs, ys = [], []
    for p in paths:
        with safe_open(str(p), framework="pt") as f:
            xs.append(f.get_tensor(f"in.{layer}"))
            ys.append(f.get_tensor(f"out.{layer}"))
    x, y = torch.cat(xs), torch.cat(ys)
    return (x[keep], y[keep]) if keep is not None else (x, y)


# ---------------------------------------------------------------- training
def _batch_topk(pre: torch.Tensor, k: int) -> torch.Tensor:
    """BatchTopK: ReLU of ``pre`` ``[batch, d_sae]`` keeping only the ``k · batch`` largest entries."""
    acts = pre.relu()
    flat = acts.flatten()
    top = flat.topk(k * pre.shape[0], sorted=False)
    return torch.zeros_like(flat).scatter_(0, top.indices, top.values).view_as(acts)


def train_transcoder(x: torch.Tensor, y: torch.Tensor, cfg: TranscoderBuildConfig, seed: int = 0,
                     progress: str | None = None) -> dict[str, torch.Tensor]:
    """Train one BatchTopK skip transcoder from MLP inputs ``x`` to outputs ``y`` (both ``[n, d_model]``).

    Inputs and outputs are divided by their mean row norms for training (so one learning rate fits every layer);
    the returned weights act on the raw activations.

    Returns:
        fp32 ``{"W_enc": [d_in, d_sae], "b_enc": [d_sae], "W_dec": [d_sae, d_out], "b_dec": [d_out],
        "W_skip": [d_out, d_in], "threshold": [d_sae]}`` (JumpReLU threshold θ in pre-activation units, the same
        for every feature) and ``"stats"``-free tensors only.
    """
    gen = torch.Generator().manual_seed(seed)
    n, d_in = x.shape
    d_out = y.shape[1]
    s_in, s_out = x.float().norm(dim=-1).mean(), y.float().norm(dim=-1).mean()
    W_dec = torch.randn(cfg.d_sae, d_out, generator=gen)
    W_dec /= W_dec.norm(dim=-1, keepdim=True)
    W_enc = torch.randn(d_in, cfg.d_sae, generator=gen) / math.sqrt(d_in)
    params = {
        "W_enc": W_enc, "b_enc": torch.zeros(cfg.d_sae), "W_dec": W_dec,
        "b_dec": (y.float().mean(0) / s_out), "W_skip": torch.zeros(d_out, d_in),
    }
    params = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    opt = torch.optim.Adam(params.values(), lr=cfg.lr, betas=(0.9, 0.999))
    steps = max(1, int(n * cfg.epochs) // cfg.batch_tokens)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, steps // 20)) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / steps))))
    since_active = torch.zeros(cfg.d_sae)
    order = torch.randperm(n, generator=gen)
    pos = 0
    for _ in tqdm(range(steps), desc=progress or "training transcoder", leave=False, mininterval=5):
        if pos + cfg.batch_tokens > n:
            order, pos = torch.randperm(n, generator=gen), 0
        idx = order[pos:pos + cfg.batch_tokens]
        pos += cfg.batch_tokens
        xb, yb = x[idx].float() / s_in, y[idx].float() / s_out
        pre = xb @ params["W_enc"] + params["b_enc"]
        acts = _batch_topk(pre, cfg.k)
        recon = acts @ params["W_dec"] + params["b_dec"] + xb @ params["W_skip"].T
        err = yb - recon
        var = (yb - yb.mean(0)).pow(2).sum(-1).mean()
        loss = err.pow(2).sum(-1).mean() / var
        fired = (acts > 0).any(0)
        since_active = torch.where(fired, torch.zeros_like(since_active), since_active + len(idx))
        dead = since_active > cfg.dead_tokens
        if dead.any():
            aux_pre = torch.where(dead, pre, torch.full_like(pre, -math.inf)).relu()
            k_aux = min(cfg.aux_k, int(dead.sum()))
            top = aux_pre.topk(k_aux, dim=-1)
            aux_acts = torch.zeros_like(pre).scatter_(-1, top.indices, top.values)
            e = err.detach()
            aux_loss = (aux_acts @ params["W_dec"] - e).pow(2).sum(-1).mean() / e.pow(2).sum(-1).mean().clamp_min(1e-8)
            loss = loss + cfg.aux_coef * aux_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():  # unit-norm decoder rows: drop the gradient along each row, renormalise after
            Wd, g = params["W_dec"], params["W_dec"].grad
            g -= (g * Wd).sum(-1, keepdim=True) * Wd
        opt.step()
        sched.step()
        with torch.no_grad():
            params["W_dec"] /= params["W_dec"].norm(dim=-1, keepdim=True)
    p = {k: v.detach() for k, v in params.items()}
    theta = _threshold(x, p, s_in, cfg.k, gen)
    return {
        "W_enc": p["W_enc"] / s_in, "b_enc": p["b_enc"], "W_dec": p["W_dec"] * s_out, "b_dec": p["b_dec"] * s_out,
        "W_skip": p["W_skip"] * (s_out / s_in), "threshold": torch.full((cfg.d_sae,), float(theta)),
    }


def _threshold(x: torch.Tensor, p: dict, s_in: torch.Tensor, k: int, gen: torch.Generator,
               n_tokens: int = 16_384) -> float:
    """JumpReLU threshold θ such that on training tokens ``k`` pre-activations per token exceed it on average."""
    idx = torch.randperm(len(x), generator=gen)[:n_tokens]
    with torch.no_grad():
        pre = (x[idx].float() / s_in) @ p["W_enc"] + p["b_enc"]
    return float(pre.flatten().kthvalue(pre.numel() - k * len(idx)).values.clamp_min(0.0))


# ---------------------------------------------------------------- on-disk format (SAE Lens)
def to_sae_lens(weights: dict[str, torch.Tensor], layer: int, model_name: str = defaults.BUNDLED_MODEL_NAME,
                dtype: torch.dtype = torch.float32):
    """An SAE Lens ``JumpReLUSkipTranscoder`` holding ``weights`` (:func:`train_transcoder`'s), input hook
    :func:`input_hook`, output hook :func:`output_hook` (``metadata.hook_name`` / ``hook_name_out``)."""
    from sae_lens import JumpReLUSkipTranscoder, JumpReLUSkipTranscoderConfig

    d_in, d_sae = weights["W_enc"].shape
    cfg = JumpReLUSkipTranscoderConfig(d_in=int(d_in), d_sae=int(d_sae), d_out=int(weights["W_dec"].shape[1]), apply_b_dec_to_input=False,
                                       dtype=str(dtype).removeprefix("torch."), device="cpu")
    cfg.metadata.hook_name = input_hook(layer)
    cfg.metadata.hook_name_out = output_hook(layer)
    cfg.metadata.model_name = model_name
    cfg.metadata.prepend_bos = True
    tc = JumpReLUSkipTranscoder(cfg)
    with torch.no_grad():
        for name, value in weights.items():
            getattr(tc, name).data = value.to(dtype).clone()
    return tc


def save_transcoder(tc, folder: Path) -> None:
    """Write one transcoder in SAE Lens' inference format (``cfg.json`` + ``sae_weights.safetensors``), atomically."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tc.save_model(str(tmp))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def load_transcoder_dir(folder: Path, dtype: torch.dtype = torch.float32):
    """An SAE Lens transcoder from a folder written by :func:`save_transcoder`, weights cast to ``dtype``.

    Raises:
        AssetError: the folder is missing, unreadable, or not a transcoder.
    """
    from sae_lens import SAE

    if not (folder / "cfg.json").is_file():
        raise AssetError(f"transcoder missing: {folder}; rebuild with 'sfc bundle build --transcoders'")
    try:
        tc = SAE.load_from_disk(str(folder), device="cpu")
    except Exception as exc:
        raise AssetError(f"transcoder unreadable: {folder} ({type(exc).__name__}: {exc})") from exc
    if not hasattr(tc, "W_skip") or not hasattr(tc, "threshold"):
        raise AssetError(f"{folder} is not a JumpReLU skip transcoder")
    return tc.to(dtype)


def bundled_transcoder_dirs(root: Path | None = None) -> dict[int, Path]:
    """``{layer: folder}`` of the shipped transcoders (``assets/transcoders/L{layer}_transcoder``)."""
    root = root or defaults.TRANSCODER_DIR
    out = {}
    for p in sorted(root.glob("L*_transcoder")) if root.is_dir() else []:
        if (p / "cfg.json").is_file():
            out[int(p.name[1:].split("_")[0])] = p
    return dict(sorted(out.items()))


# ---------------------------------------------------------------- transcoders as engine sites
class TranscoderDictionary:
    """The transcoder of block ``layer`` in the shape of an SAE Lens SAE (``encode``, ``decode``, ``W_dec``,
    ``cfg.d_sae``, ``cfg.d_in``) for a site at ``blocks.{layer}.hook_mlp_out``, edited in the residual stream
    after block L (like :class:`~sfc_core.neurons.NeuronDictionary`).

    After block L the residual is ``x = resid_mid + mlp_out`` and the transcoder writes
    ``mlp_out = f · W_dec + b_dec + x_norm · W_skipᵀ + ε``. So at the site, ``decode(f) = f · W_dec`` (the
    features' write), the error node ``ε = mlp_out − ŷ(x_norm)`` is the transcoder's own error (circuit-tracer's
    "MLP reconstruction error"), and :meth:`rest` ``= resid_mid + b_dec + x_norm · W_skipᵀ`` is neither: it is
    recomputed in every pass and never a node (the skip path is linear, gradients flow through it). ``encode``
    reads ``x_norm`` (``blocks.L.ln2.hook_normalized``) from a capture hook of the pass that computed ``x``.

    Attributes:
        layer: block index L; hook_name: ``blocks.L.hook_mlp_out``; transcoder: the SAE Lens transcoder.
        is_transcoder: True (what :func:`~sfc_core.splice.make_sites` checks at a ``hook_mlp_out`` site).

    Raises:
        IncompatibleSAEError: (constructor) the transcoder's ``d_in``/``d_out`` differ from the model's d_model.
        InputError: (constructor) a layer outside the model.
    """

    is_transcoder = True
    #: Reads block L's internals through capture hooks: a pass must run block L to encode here.
    reads_block = True

    def __init__(self, model, layer: int, transcoder):
        from . import hooks
        from .errors import IncompatibleSAEError
        from .neurons import install_capture

        n_layers = int(model.cfg.n_layers)
        if not 0 <= int(layer) < n_layers:
            raise InputError(f"transcoder layer {layer} is outside the model's blocks 0..{n_layers - 1}")
        d_model = int(model.cfg.d_model)
        if int(transcoder.cfg.d_in) != d_model or int(transcoder.W_dec.shape[1]) != d_model:
            raise IncompatibleSAEError(f"transcoder at layer {layer} maps {transcoder.cfg.d_in} → "
                                       f"{transcoder.W_dec.shape[1]}, the model's d_model is {d_model}")
        self.layer = int(layer)
        self.hook_name = hooks.mlp_out(self.layer)
        self.transcoder = transcoder
        block = model.blocks[self.layer]
        self._key = (id(model), self.layer)
        install_capture(block.ln2.hook_normalized, self._key + ("mlp_in",))
        install_capture(block.hook_mlp_out, self._key + ("mlp_out",))
        install_capture(block.hook_resid_post, self._key + ("resid",))
        self.cfg = SimpleNamespace(d_sae=int(transcoder.cfg.d_sae), d_in=d_model,
                                   metadata=SimpleNamespace(hook_name=self.hook_name))

    @property
    def W_dec(self) -> torch.Tensor:
        """``[d_sae, d_model]``: the features' write directions (residual units per unit of activation)."""
        return self.transcoder.W_dec

    @property
    def W_enc(self) -> torch.Tensor:
        """``[d_model, d_sae]``, acting on the normalised MLP input."""
        return self.transcoder.W_enc

    def _slot(self, x: torch.Tensor, part: str) -> torch.Tensor:
        slots = _capture_slots()
        if slots.get(self._key + ("resid",)) is not x or self._key + (part,) not in slots:
            raise InputError(f"transcoder features at {self.hook_name} are read while block {self.layer} runs: "
                             f"this pass started after block {self.layer}")
        return slots[self._key + (part,)]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``[b, p, d_sae]`` of the MLP input that block L saw in this thread's pass whose output is
        ``x`` ``[b, p, d_model]``.

        Raises:
            InputError: ``x`` is not block L's output in this thread's latest pass.
        """
        return self.transcoder.encode(self._slot(x, "mlp_in"))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """The features' write ``f · W_dec`` ``[..., d_model]`` from ``f`` ``[..., d_sae]`` (no bias, no skip)."""
        return f @ self.transcoder.W_dec

    def rest(self, x: torch.Tensor) -> torch.Tensor:
        """``resid_mid + b_dec + x_norm · W_skipᵀ`` ``[b, p, d_model]`` of the pass whose block-L output is ``x``:
        the part of ``x`` that is neither the features' write nor the error node.

        Raises:
            InputError: ``x`` is not block L's output in this thread's latest pass.
        """
        x_norm = self._slot(x, "mlp_in")
        resid_mid = x - self._slot(x, "mlp_out")
        return resid_mid + self.transcoder.b_dec + x_norm.to(self.transcoder.W_skip.dtype) @ self.transcoder.W_skip.T


def _capture_slots() -> dict:
    from .neurons import capture_slots

    return capture_slots()


def transcoder_sites(model, transcoders: dict) -> dict:
    """``{blocks.L.hook_mlp_out: TranscoderDictionary}`` from ``{layer: SAE Lens transcoder}``, to pass where the
    engine takes SAEs (:func:`~sfc_core.attribution.prepare_runs`, :func:`~sfc_core.splice.make_sites`).

    Raises:
        InputError: no transcoder, or a layer outside the model.
        IncompatibleSAEError: a transcoder whose widths do not fit the model.
    """
    if not transcoders:
        raise InputError("choose at least one transcoder layer")
    out = {}
    for layer, tc in sorted(transcoders.items()):
        d = TranscoderDictionary(model, int(layer), tc)
        out[d.hook_name] = d
    return out


def load_bundled_transcoders(model, layers=None, root: Path | None = None) -> dict:
    """The shipped transcoders as engine sites (:func:`transcoder_sites`), all layers or ``layers``.

    Raises:
        AssetError: the shipped transcoders are missing or unreadable.
        InputError: a requested layer has no shipped transcoder.
    """
    dirs = bundled_transcoder_dirs(root)
    if not dirs:
        raise AssetError("no transcoders in assets/transcoders; build them with 'sfc bundle build --transcoders'")
    wanted = sorted(dirs) if layers is None else [int(L) for L in layers]
    missing = [L for L in wanted if L not in dirs]
    if missing:
        raise InputError(f"no shipped transcoder at layer(s) {missing}; shipped: {sorted(dirs)}")
    return transcoder_sites(model, {L: load_transcoder_dir(dirs[L]) for L in wanted})
