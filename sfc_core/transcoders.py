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
from .neurons import capture_slots

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
        train_seqs: training-corpus rows used (0: all); chunk_seqs: rows per activation chunk.
        heldout_seqs: first held-out rows for FVE, L0, dead fraction and the feature index; check_seqs: of them,
            the rows for CE-loss recovered. index_top_k / index_window: top contexts per feature and tokens
            ``(before, after)`` the max (smaller than the SAEs': 30 layers of features must fit the assets budget).
    """

    layers: tuple[int, ...] = tuple(range(30))
    # 1536 features: 30 layers of W_enc, W_dec (fp16) and W_skip plus their feature index fit the 200 MB assets
    # budget beside the SAEs; k = 96 (on a CPU budget of ~10⁶ tokens per layer a larger k fits faster).
    d_sae: int = 1536
    k: int = 96
    epochs: float = 5.0
    batch_tokens: int = 1024
    lr: float = 2e-3
    aux_k: int = 256
    aux_coef: float = 1 / 32
    dead_tokens: int = 100_000
    seed: int = 0
    train_seqs: int = 1024
    chunk_seqs: int = 64
    heldout_seqs: int = 512
    check_seqs: int = 24
    index_top_k: int = 8
    index_window: tuple[int, int] = (8, 3)


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
        save_file({k: torch.cat(v) for k, v in parts.items()}, str(tmp), metadata={"seq_len": str(tokens.shape[1])})
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
def _batch_topk(pre: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """BatchTopK of ``pre`` ``[batch, d_sae]``: the ``k · batch`` largest positive entries, as ``(values, indices)``
    ``[batch, 2k]`` (zero values where a row has fewer). Each row's global top entries are among its own ``2k``
    largest unless one row holds more than twice its share, which the candidates cap (a CPU-cheap BatchTopK)."""
    vals, idx = pre.topk(min(2 * k, pre.shape[1]), dim=-1, sorted=False)
    vals = vals.relu()
    flat = vals.flatten()
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[flat.topk(k * pre.shape[0], sorted=False).indices] = True
    return vals * keep.view_as(vals), idx


def _sparse_decode(vals: torch.Tensor, idx: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    """``Σ_j vals[:, j] · W_dec[idx[:, j]]`` ``[batch, d_out]``. Dense on purpose: on a CPU one dense matmul and its
    backward beat ``embedding_bag`` / ``torch.sparse`` (whose backward sorts the indices) by 3×."""
    return torch.zeros(vals.shape[0], W_dec.shape[0], dtype=vals.dtype).scatter(1, idx, vals) @ W_dec


def train_transcoder(x: torch.Tensor, y: torch.Tensor, cfg: TranscoderBuildConfig, seed: int = 0,
                     progress: str | None = None) -> dict[str, torch.Tensor]:
    """Train one BatchTopK skip transcoder from MLP inputs ``x`` to outputs ``y`` (both ``[n, d_model]``).

    Inputs and outputs are divided by their mean row norms for training (so one learning rate fits every layer);
    the returned weights act on the raw activations.

    Returns:
        fp32 ``{"W_enc": [d_in, d_sae], "b_enc": [d_sae], "W_dec": [d_sae, d_out], "b_dec": [d_out],
        "W_skip": [d_out, d_in], "threshold": [d_sae]}`` (JumpReLU threshold θ in pre-activation units, the same
        for every feature: BatchTopK's conversion, Bussmann et al. 2024; AuxK: Gao et al. 2024).
    """
    gen = torch.Generator().manual_seed(seed)
    n, d_in = x.shape
    d_out = y.shape[1]
    s_in, s_out = x.float().norm(dim=-1).mean(), y.float().norm(dim=-1).mean()
    W_dec = torch.randn(cfg.d_sae, d_out, generator=gen)
    W_dec /= W_dec.norm(dim=-1, keepdim=True)
    W_enc = torch.randn(d_in, cfg.d_sae, generator=gen) / math.sqrt(d_in)
    W_skip, b_dec = _linear_fit(x, y, s_in, s_out, gen)
    params = {"W_enc": W_enc, "b_enc": torch.zeros(cfg.d_sae), "W_dec": W_dec, "b_dec": b_dec, "W_skip": W_skip}
    params = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    opt = torch.optim.Adam(params.values(), lr=cfg.lr, betas=(0.9, 0.999), foreach=True)
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
        vals, top_idx = _batch_topk(pre, cfg.k)
        recon = _sparse_decode(vals, top_idx, params["W_dec"]) + params["b_dec"] + xb @ params["W_skip"].T
        err = yb - recon
        var = (yb - yb.mean(0)).pow(2).sum(-1).mean()
        loss = err.pow(2).sum(-1).mean() / var
        fired = torch.zeros(cfg.d_sae, dtype=torch.bool)
        fired[top_idx[vals.detach() > 0]] = True
        since_active = torch.where(fired, torch.zeros_like(since_active), since_active + len(idx))
        dead = since_active > cfg.dead_tokens
        if dead.any():
            aux_pre = torch.where(dead, pre, torch.full_like(pre, -math.inf))
            top = aux_pre.topk(min(cfg.aux_k, int(dead.sum())), dim=-1)
            e = err.detach()
            aux = _sparse_decode(top.values.relu(), top.indices, params["W_dec"])
            aux_loss = (aux - e).pow(2).sum(-1).mean() / e.pow(2).sum(-1).mean().clamp_min(1e-8)
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


def _linear_fit(x: torch.Tensor, y: torch.Tensor, s_in, s_out, gen: torch.Generator,
                n_tokens: int = 65_536) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares ``(W_skip [d_out, d_in], b_dec [d_out])`` of the normalised outputs on the normalised inputs
    (ridge 10⁻⁴ of the mean diagonal): the skip term starts at the best linear map, so the features start on the MLP's non-linear part."""
    idx = torch.randperm(len(x), generator=gen)[:n_tokens]
    X = x[idx].float() / s_in
    X = torch.cat([X, torch.ones(len(X), 1)], dim=1)
    Y = y[idx].float() / s_out
    A = X.T @ X
    A = A + 1e-4 * A.diagonal().mean() * torch.eye(X.shape[1])
    W = torch.linalg.solve(A, X.T @ Y)  # [d_in + 1, d_out]
    return W[:-1].T.contiguous(), W[-1].clone()


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


def load_transcoder_dir(folder: Path, dtype: torch.dtype = torch.float32, layer: int | None = None):
    """An SAE Lens transcoder from a folder written by :func:`save_transcoder`, weights cast to ``dtype``.

    Args:
        layer: when given, the transcoder's hook names must be :func:`input_hook` / :func:`output_hook` of it.

    Raises:
        AssetError: the folder is missing, unreadable, not a transcoder, or its hook names are another layer's.
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
    meta = tc.cfg.metadata
    if layer is not None and (getattr(meta, "hook_name", None), getattr(meta, "hook_name_out", None)) != \
            (input_hook(layer), output_hook(layer)):
        raise AssetError(f"{folder}: hook names {getattr(meta, 'hook_name', None)} → "
                         f"{getattr(meta, 'hook_name_out', None)}, expected {input_hook(layer)} → {output_hook(layer)}")
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

    def parameters(self):
        """The transcoder's parameters (for memory planning, :mod:`sfc_core.batching`)."""
        return self.transcoder.parameters()

    def _slot(self, x: torch.Tensor, part: str) -> torch.Tensor:
        slots = capture_slots()
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


    def prompt_features(self, model, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(f [b, p, d_sae], mlp_out [b, p, d_model], ŷ [b, p, d_model])`` of ``tokens`` ``[b, p]`` (no-grad):
        the features, the MLP output they reconstruct and the reconstruction (with bias and skip)."""
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, names_filter=[input_hook(self.layer), output_hook(self.layer)],
                                            stop_at_layer=self.layer + 1)
            x_norm = cache[input_hook(self.layer)].to(self.transcoder.W_enc.dtype)
            return self.transcoder.encode(x_norm), cache[output_hook(self.layer)], self.transcoder(x_norm)


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
    """The shipped transcoders as engine sites, all layers or ``layers``: ``{blocks.L.hook_mlp_out: LoadedSAE}``
    whose ``sae`` is a :class:`TranscoderDictionary` (source ``"bundled transcoders"``).

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
    from .saes import LoadedSAE

    sites = transcoder_sites(model, {L: load_transcoder_dir(dirs[L], layer=L) for L in wanted})
    return {h: LoadedSAE(h, d, defaults.BUNDLED_TRANSCODER_SOURCE) for h, d in sites.items()}


# ---------------------------------------------------------------- quality
def _replace_hooks(tcs: dict, mode: str, special: torch.Tensor) -> list:
    """TransformerLens hooks that replace each layer's MLP output by its transcoder's ``ŷ(x_norm)`` (error
    dropped) or by zero, except at ``special`` ``[b, p]`` positions (passed through, as in training)."""
    seen: dict[int, torch.Tensor] = {}
    out = []
    for L, tc in tcs.items():
        def keep_in(act, hook, L=L):
            seen[L] = act
            return act

        def replace(act, hook, L=L, tc=tc):
            new = torch.zeros_like(act) if mode == "zero" else tc(seen[L].to(tc.W_enc.dtype)).to(act.dtype)
            return torch.where(special[..., None], act, new)

        out += [(input_hook(L), keep_in), (output_hook(L), replace)]
    return out


def ce_recovered(model, tcs: dict, tokens: torch.Tensor, ce_clean: float, batch_seqs: int = 8) -> dict:
    """CE-loss recovered with the MLPs of every layer in ``tcs`` (``{layer: transcoder}``) replaced at once:
    ``(CE_zero − CE_replaced) / (CE_zero − CE_clean)`` on ``tokens`` ``[n_seq, seq_len]`` (CE in nats/token; zero:
    those MLP outputs zero-ablated), special-token positions passed through.

    Returns:
        ``{"ce_recovered", "ce_clean", "ce_spliced", "ce_zero"}``.
    """
    from .bundle import ce_replaced

    return ce_replaced(model, tokens, lambda mode, special: _replace_hooks(tcs, mode, special), ce_clean, batch_seqs)


def activation_chunks(paths: list[Path], tcs: dict, special: torch.Tensor, out_dir: Path) -> list[Path]:
    """Sparse feature-activation chunks of the transcoders ``tcs`` (``{layer: transcoder}``) over cached held-out
    MLP activations (:func:`collect_mlp_activations`' chunks, BOS dropped), in the format of
    :func:`~sfc_core.feature_index.collect_sparse_activations` (BOS rows restored as zeros, ``special`` ``[rows]``
    special-token rows zeroed and left out of the quality sums), so that
    :func:`~sfc_core.feature_index.index_from_chunks` builds the index and the FVE / L0 / dead figures of the MLP
    outputs. Resumable per chunk.
    """
    from safetensors.torch import save_file

    from . import hooks as hp

    out_dir.mkdir(parents=True, exist_ok=True)
    outs, start = [], 0
    for c, path in enumerate(tqdm(paths, desc="transcoder activations (chunks)")):
        target = out_dir / f"chunk_{c:05d}.safetensors"
        outs.append(target)
        rows, seq_len = _chunk_shape(path)
        spec = special[start:start + rows]
        start += rows
        if target.is_file():
            continue
        tensors = {}
        for L, tc in tcs.items():
            x, y = (t.float() for t in load_layer([path], L))
            with torch.no_grad():
                f = tc.encode(x.to(tc.W_enc.dtype)).float()
                y_hat = tc(x.to(tc.W_enc.dtype)).float()
            ok = ~spec
            err = (y[ok] - y_hat[ok]).pow(2).sum().double()
            yd = y[ok].double()
            f[spec] = 0
            f = _with_bos_rows(f, seq_len)
            width = max(int((f > 0).sum(-1).max()), 1)
            val, idx = f.topk(width, dim=-1)
            key = hp.sae_key(output_hook(L))
            tensors[f"{key}.idx"] = idx.to(torch.int16).contiguous()
            tensors[f"{key}.val"] = val.half().contiguous()
            tensors[f"{key}.q"] = torch.tensor([float(err), float(yd.pow(2).sum()), float(ok.sum()),
                                                float((f > 0).sum()), 0.0], dtype=torch.float64)
            tensors[f"{key}.qsum"] = yd.sum(0)
            tensors[f"{key}.ever"] = (f > 0).any(0)
        tmp = target.with_suffix(".tmp")
        save_file(tensors, str(tmp))
        tmp.rename(target)
    return outs


def _chunk_shape(path: Path) -> tuple[int, int]:
    """``(rows, seq_len)`` of an activation chunk of :func:`collect_mlp_activations`."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        key = next(k for k in f.keys() if k.startswith("in."))
        return f.get_slice(key).get_shape()[0], int((f.metadata() or {}).get("seq_len", 128))


def _with_bos_rows(f: torch.Tensor, seq_len: int) -> torch.Tensor:
    """``[rows, d]`` of ``seq_len − 1`` positions per sequence → ``[rows/(seq_len−1)·seq_len, d]`` with a zero BOS
    row first in each sequence (the index addresses full held-out rows)."""
    body = f.view(-1, seq_len - 1, f.shape[-1])
    return torch.cat([torch.zeros_like(body[:, :1]), body], dim=1).reshape(-1, f.shape[-1])


# ---------------------------------------------------------------- build
def _layer_quality_ok(q: dict) -> bool:
    return q["fve"] >= QUALITY_BAR["fve"] and q["dead_frac"] <= QUALITY_BAR["dead_frac"] and \
        q["ce_recovered"] >= QUALITY_BAR["ce_recovered"]


def train_all(cfg: TranscoderBuildConfig, work_dir: Path, model, corpus: dict, log=print) -> dict:
    """Resumable stages 1–2: cache the training tokens' MLP activations, then train each layer not yet in
    ``work_dir/transcoders`` and copy it to ``assets/transcoders``. Returns ``{"train_tokens", "train_s": {layer:
    seconds}}``."""
    from .pairs import special_positions, special_token_ids

    tokens = corpus["train"][:cfg.train_seqs] if cfg.train_seqs else corpus["train"]
    paths = collect_mlp_activations(model, tokens, list(cfg.layers), work_dir / "mlp_acts", cfg.chunk_seqs)
    keep = ~special_positions(tokens[:, 1:], special_token_ids(model.tokenizer)).reshape(-1)
    out_root = work_dir / "transcoders"
    out_root.mkdir(parents=True, exist_ok=True)
    times_file = out_root / "train_seconds.json"
    times = json.loads(times_file.read_text()) if times_file.is_file() else {}
    defaults.TRANSCODER_DIR.mkdir(parents=True, exist_ok=True)
    for L in tqdm(cfg.layers, desc="transcoders (layers)"):
        folder = out_root / transcoder_key(L)
        target = defaults.TRANSCODER_DIR / transcoder_key(L)
        if not (folder / "cfg.json").is_file():
            shutil.rmtree(target, ignore_errors=True)  # a retrained layer replaces the shipped one
            t = time.time()
            x, y = load_layer(paths, L, keep)
            weights = train_transcoder(x, y, cfg, seed=cfg.seed + L, progress=f"layer {L}")
            save_transcoder(to_sae_lens(weights, L, dtype=torch.float16), folder)
            times[str(L)] = round(time.time() - t, 1)
            times_file.write_text(json.dumps(times))
            log(f"layer {L}: trained in {times[str(L)]} s on {len(x)} tokens")
        if not (target / "cfg.json").is_file():
            shutil.copytree(folder, target.with_name(target.name + ".tmp"), dirs_exist_ok=True)
            shutil.rmtree(target, ignore_errors=True)
            target.with_name(target.name + ".tmp").rename(target)
    return {"train_tokens": int(keep.sum()), "train_s": times}


def index_and_quality(cfg: TranscoderBuildConfig, work_dir: Path, model, log=print) -> dict:
    """Resumable stage 3: the shipped transcoders' feature index (``assets/feature_index/L{L}_mlp_out``, top
    contexts over the first ``heldout_seqs`` held-out rows, with labels) and their quality figures: FVE of the MLP
    output, L0 and dead fraction on those rows' ordinary tokens, CE-loss recovered per layer and with every layer
    replaced at once on the first ``check_seqs`` rows.

    Returns:
        ``{"quality": {hook: {...}}, "all_layers": {...}, "heldout_tokens", "timings_s"}``.
    """
    from .bundle import clean_ce, load_heldout_tokens
    from .feature_index import index_file, index_from_chunks, logit_effects, save_index_file
    from .labels import label_metadata
    from .pairs import special_positions, special_token_ids

    t = time.time()
    tokens = load_heldout_tokens()[:cfg.heldout_seqs]
    hpaths = collect_mlp_activations(model, tokens, list(cfg.layers), work_dir / "mlp_heldout", cfg.chunk_seqs)
    special = special_positions(tokens[:, 1:], special_token_ids(model.tokenizer)).reshape(-1)
    tcs = {L: load_transcoder_dir(defaults.TRANSCODER_DIR / transcoder_key(L)) for L in cfg.layers}
    chunks = activation_chunks(hpaths, tcs, special, work_dir / "tc_index_chunks")
    sites = transcoder_sites(model, tcs)
    quality = {}
    for L in tqdm(cfg.layers, desc="transcoder feature index"):
        hook = output_hook(L)
        tensors, quality[hook] = index_from_chunks(chunks, hook, tokens, tcs[L].cfg.d_sae, model.tokenizer,
                                                   cfg.index_top_k, cfg.index_window)
        tensors.update(logit_effects(sites[hook], model))
        meta = label_metadata(tensors, tokens, model.tokenizer, cfg.index_window)
        save_index_file(tensors, index_file(hook), hook, cfg.index_window, meta)
    timings = {"heldout_activations_and_index_s": time.time() - t}
    t = time.time()
    probe = tokens[:cfg.check_seqs]
    base = clean_ce(model, probe)
    for L in tqdm(cfg.layers, desc="CE-loss recovered"):
        quality[output_hook(L)].update(ce_recovered(model, {L: tcs[L]}, probe, base))
    everything = ce_recovered(model, tcs, probe, base)
    timings["ce_s"] = time.time() - t
    quality = {h: {k: round(v, 4) for k, v in q.items()} for h, q in quality.items()}
    return {"quality": quality, "all_layers": {k: round(v, 4) for k, v in everything.items()},
            "heldout_tokens": int((~special).sum()), "timings_s": timings}


def build_transcoders(cfg: TranscoderBuildConfig, work_dir: Path = Path(".work/bundle"), log=print) -> dict:
    """``sfc bundle build --transcoders``: corpus (the SAEs', :func:`~sfc_core.corpus.build_corpus`) → cached MLP
    activations → one transcoder per layer → feature index and quality, recorded under ``"transcoders"`` in
    ``assets/bundle.json``. Every stage resumes where it stopped.

    Raises:
        AssetError: the bundled GGUF, the held-out corpus or the manifest is missing.
    """
    from .bundle import load_manifest
    from .corpus import CorpusConfig, build_corpus
    from .model import load_model

    t0 = time.time()
    model = load_model()
    work_dir.mkdir(parents=True, exist_ok=True)
    corpus = build_corpus(work_dir, CorpusConfig(), model.tokenizer)
    trained = train_all(cfg, work_dir, model, corpus, log)
    result = index_and_quality(cfg, work_dir, model, log)
    manifest = load_manifest()
    manifest["transcoders"] = {
        "build": asdict(cfg), "train_tokens": trained["train_tokens"],
        "tokens_seen": int(trained["train_tokens"] * cfg.epochs), "heldout_tokens": result["heldout_tokens"],
        "timings_s": {"train_per_layer_s": trained["train_s"],
                      **{k: round(v, 1) for k, v in result["timings_s"].items()},
                      "total_s": round(time.time() - t0, 1)},
        "torch_threads": torch.get_num_threads(),
        "quality": result["quality"], "all_layers": result["all_layers"],
    }
    defaults.BUNDLE_MANIFEST.write_text(json.dumps(manifest, indent=1))
    return manifest["transcoders"]


def check_transcoders(model, n_seqs: int | None = None) -> dict:
    """``sfc bundle check``'s transcoder part: the shipped transcoders load and fit the model, and their quality
    figures (recorded at build time in ``assets/bundle.json``; CE-loss recovered with every layer replaced is
    recomputed on ``n_seqs`` held-out rows) against :data:`QUALITY_BAR`.

    Returns:
        ``{"layers": [{"hook_name", "d_sae", "fve", "l0", "dead_frac", "ce_recovered", "passes"}], "all_layers":
        {"ce_recovered", ...}, "quality_bar", "passes"}`` (``{"present": False, ...}`` when none are shipped).

    Raises:
        AssetError: a shipped transcoder is unreadable or the manifest lacks its figures.
    """
    from .bundle import clean_ce, load_heldout_tokens, load_manifest

    dirs = bundled_transcoder_dirs()
    if not dirs:
        return {"present": False, "passes": True, "quality_bar": QUALITY_BAR, "layers": []}
    recorded = load_manifest().get("transcoders")
    if not recorded:
        raise AssetError("assets/bundle.json has no transcoder figures; rebuild with 'sfc bundle build --transcoders'")
    tcs = {L: load_transcoder_dir(p) for L, p in dirs.items()}
    transcoder_sites(model, tcs)  # they fit the model
    rows = []
    for L, tc in tcs.items():
        q = recorded["quality"].get(output_hook(L))
        if q is None:
            raise AssetError(f"assets/bundle.json has no figures for the transcoder at layer {L}")
        rows.append({"hook_name": output_hook(L), "d_sae": int(tc.cfg.d_sae), **q, "passes": _layer_quality_ok(q)})
    n = n_seqs or recorded["build"]["check_seqs"]
    probe = load_heldout_tokens()[:n]
    everything = ce_recovered(model, tcs, probe, clean_ce(model, probe))
    everything = {k: round(v, 4) for k, v in everything.items()}
    ok_all = everything["ce_recovered"] >= QUALITY_BAR["ce_recovered_all"]
    return {"present": True, "layers": rows, "all_layers": {**everything, "passes": ok_all},
            "n_layers": len(rows), "quality_bar": QUALITY_BAR,
            "passes": all(r["passes"] for r in rows) and ok_all and len(rows) == int(model.cfg.n_layers)}
