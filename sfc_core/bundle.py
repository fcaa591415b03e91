"""Build and check the offline bundle: corpus → activations → SAEs → feature index → quality.

``sfc bundle build`` runs every stage; each stage writes its result under a work
folder (default ``.work/bundle``) and is skipped when its result is already
there, so an interrupted build resumes (SAE training resumes from SAE Lens
checkpoints).

SAEs: TopK (Gao et al. 2024, "Scaling and evaluating sparse autoencoders") via
SAE Lens' ``MultiSAETrainer``, one per hook point, all fed from one cached pass
of the model. TopK because L0 is fixed by construction (the bar is L0 ≤ 64),
AuxK keeps latents alive on a small token budget, and no L1 coefficient needs
tuning on a CPU budget that allows a single run.

Training excludes special tokens (BOS, document separators) and shrinks the rare
"massive activation" tokens to a capped norm (see ``OUTLIER_NORM_RATIO``).

Quality (per SAE, held-out tokens, special tokens excluded as in training): fraction of
variance explained ``1 − Σ‖x − x̂‖² / Σ‖x − x̄‖²``, mean L0 and dead fraction (latents
never active) on every held-out token; CE-loss recovered ``(CE_zero − CE_spliced) /
(CE_zero − CE_clean)`` on the first ``check_seqs`` held-out sequences (three forwards each).

Held-out tokens: the SAE corpus' own held-out split (first rows) followed by held-out package
documentation, docstrings, licences and stdlib code (:func:`~sfc_core.corpus.build_heldout_corpus`);
``sfc bundle build --index-only`` rebuilds only them and the feature index (:func:`build_index`).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import defaults
from . import hooks as hp
from .corpus import CorpusConfig, HeldoutConfig, build_corpus, build_heldout_corpus
from .errors import AssetError
from .pairs import special_positions, special_token_ids

QUALITY_BAR = {"fve": 0.80, "ce_recovered": 0.90, "l0": 64.0, "dead_frac": 0.10}
#: Everything under ``assets/`` (SAEs, transcoders, feature index, held-out corpus) in MB (issue 15's budget).
ASSETS_BUDGET_MB = 200.0
#: Training shrinks tokens whose residual norm exceeds this multiple of the median norm (per
#: hook point) down to that norm: SmolLM2 has "massive activations" (Sun et al. 2024) on a
#: few delimiters, ~10⁴× the norm² of a normal token, which would otherwise own the MSE loss
#: and leave most latents dead. Their direction is still learnt, and a TopK SAE is linear in
#: its input's scale once the active set is fixed, so they are still reconstructed.
OUTLIER_NORM_RATIO = 10.0


@dataclass(frozen=True)
class BuildConfig:
    """Everything ``sfc bundle build`` needs; stored in ``assets/bundle.json``.

    Attributes:
        layers: ``resid_post`` layers that get an SAE; d_sae: latents per SAE; k: TopK's active latents.
        epochs: passes over the cached activations; batch_tokens: tokens per training batch; lr: learning rate.
        corpus: corpus size and shape; heldout: the extended held-out corpus behind the feature index
            (:func:`~sfc_core.corpus.build_heldout_corpus`); index_top_k / index_window: top contexts per latent and tokens
            ``(before, after)`` the max in the feature index; check_seqs: held-out sequences for CE recovered.
    """

    layers: tuple[int, ...] = defaults.BUNDLED_LAYERS
    # 1024 latents: on a CPU budget of ~10⁶ tokens per SAE, 2048 left half of them dead.
    d_sae: int = 1024
    k: int = 48
    epochs: float = 5.0
    batch_tokens: int = 1024
    lr: float = 8e-4
    seed: int = 0
    device: str = "cpu"
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    heldout: HeldoutConfig = field(default_factory=HeldoutConfig)
    index_top_k: int = 20
    index_window: tuple[int, int] = (10, 4)  # tokens before, after the max
    check_seqs: int = 32

    @property
    def hook_names(self) -> list[str]:
        """``blocks.{L}.hook_resid_post`` for each layer in :attr:`layers`."""
        return [hp.resid_post(layer) for layer in self.layers]


def sae_key(hook_name: str) -> str:
    """Folder/checkpoint name of an SAE: ``blocks.7.hook_resid_post`` → ``L7_resid_post``.

    Raises:
        InputError: not a per-block hook name.
    """
    return hp.sae_key(hook_name)


# ---------------------------------------------------------------- activations
def collect_activations(model, tokens: torch.Tensor, hook_names: list[str], out_dir: Path,
                        chunk_seqs: int = 128, batch_seqs: int = 32) -> list[Path]:
    """Cache residual activations (BOS position dropped) as fp16 safetensors chunks.

    Args:
        tokens: ``[n_seq, seq_len]`` token ids, BOS first.
    Returns:
        Chunk files, each holding ``{hook_name: [chunk_seqs·(seq_len−1), d_model]}``.
    """
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    stop = max(hp.layer_of(h) for h in hook_names) + 1
    paths = []
    n_chunks = math.ceil(len(tokens) / chunk_seqs)
    for c in tqdm(range(n_chunks), desc="caching activations"):
        path = out_dir / f"chunk_{c:05d}.safetensors"
        paths.append(path)
        if path.is_file():
            continue
        parts: dict[str, list[torch.Tensor]] = {h: [] for h in hook_names}
        chunk = tokens[c * chunk_seqs:(c + 1) * chunk_seqs].long()
        for b in range(0, len(chunk), batch_seqs):
            with torch.inference_mode():
                _, cache = model.run_with_cache(chunk[b:b + batch_seqs], names_filter=hook_names,
                                                stop_at_layer=stop)
            for h in hook_names:
                parts[h].append(cache[h][:, 1:].reshape(-1, cache[h].shape[-1]).half())
        tmp = path.with_suffix(".tmp")
        save_file({h: torch.cat(v) for h, v in parts.items()}, str(tmp))
        tmp.rename(path)
    return paths


def shrink_outliers(x: torch.Tensor, ratio: float = OUTLIER_NORM_RATIO) -> torch.Tensor:
    """``x`` ``[n, d_model]`` with every row's norm capped at ``ratio`` × the median row norm."""
    norms = x.float().norm(dim=-1, keepdim=True)
    cap = ratio * norms.median()
    return (x.float() * torch.clamp(cap / norms, max=1.0)).to(x.dtype)


def activation_batches(paths: list[Path], hook_names: list[str], batch_tokens: int, seed: int,
                       special: torch.Tensor | None = None):
    """Endless shuffled ``{hook_name: [batch_tokens, d_model]}`` fp32 batches over epochs.

    ``special`` ``[n_rows]`` flags special-token rows, which are dropped (``None`` keeps every
    row); massive-activation rows are shrunk (:func:`shrink_outliers`).
    """
    from safetensors.torch import load_file

    data = {h: [] for h in hook_names}
    for p in paths:
        chunk = load_file(str(p))
        for h in hook_names:
            data[h].append(chunk[h])
    stacked = {h: torch.cat(v) for h, v in data.items()}
    n_all = len(next(iter(stacked.values())))
    keep = ~special if special is not None else torch.ones(n_all, dtype=torch.bool)
    stacked = {h: shrink_outliers(x[keep]) for h, x in stacked.items()}
    n = int(keep.sum())
    gen = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n - batch_tokens + 1, batch_tokens):
            idx = perm[i:i + batch_tokens]
            yield {h: x[idx].float() for h, x in stacked.items()}


# ---------------------------------------------------------------- training
def train_saes(paths: list[Path], cfg: BuildConfig, work_dir: Path, n_tokens: int,
               special: torch.Tensor | None = None) -> dict[str, object]:
    """Train one TopK SAE (Gao et al. 2024) per hook point with SAE Lens' ``MultiSAETrainer``; resumable from
    its checkpoints.

    Args:
        paths: activation chunks of :func:`collect_activations`.
        n_tokens: cached activation rows (tokens) per hook point; training sees ``n_tokens · epochs``.
        special: ``[n_rows]`` flags cached rows holding special tokens (excluded, like SAE Lens'
            ``exclude_special_tokens``).

    Returns:
        ``{hook_name: TopKTrainingSAE}`` encoding ``[..., d_model] → [..., d_sae]``.
    """
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.multi_sae_trainer import MultiSAETrainer

    torch.manual_seed(cfg.seed)
    total = int(n_tokens * cfg.epochs) // cfg.batch_tokens * cfg.batch_tokens
    steps = total // cfg.batch_tokens
    ckpt_dir = work_dir / "checkpoints"
    trainer_cfg = SAETrainerConfig(
        total_training_samples=total,
        train_batch_size_samples=cfg.batch_tokens,
        lr=cfg.lr,
        lr_end=cfg.lr / 10,
        lr_scheduler_name="cosineannealing",
        lr_warm_up_steps=min(100, steps // 10),
        lr_decay_steps=steps // 3,
        device=cfg.device,
        dead_feature_window=max(50, steps // 8),
        feature_sampling_window=max(50, steps // 8),
        n_checkpoints=8,
        checkpoint_path=str(ckpt_dir),
        n_batches_for_norm_estimate=20,
    )
    saes, hooks = {}, {}
    for hook in cfg.hook_names:
        sae_cfg = TopKTrainingSAEConfig(
            d_in=576, d_sae=cfg.d_sae, k=cfg.k, device=cfg.device,
            normalize_activations="expected_average_only_in",
        )
        sae_cfg.metadata.hook_name = hook
        sae_cfg.metadata.model_name = defaults.BUNDLED_MODEL_NAME
        sae_cfg.metadata.prepend_bos = True
        sae_cfg.metadata.context_size = cfg.corpus.seq_len
        saes[sae_key(hook)] = TopKTrainingSAE(sae_cfg)
        hooks[sae_key(hook)] = hook
    provider = activation_batches(paths, cfg.hook_names, cfg.batch_tokens, cfg.seed, special)
    trainer = MultiSAETrainer(trainer_cfg, saes, hooks, provider)
    done = sorted((p for p in ckpt_dir.glob("*") if p.name.isdigit()), key=lambda p: int(p.name)) if ckpt_dir.is_dir() else []
    if done:
        trainer.load_checkpoint(done[-1])
        # The thresholds already passed must not checkpoint again.
        trainer.checkpoint_thresholds = [t for t in trainer.checkpoint_thresholds if t > trainer.n_training_samples]
    return {hooks[name]: sae for name, sae in trainer.fit().items()}


def save_saes(saes: dict[str, object], out_dir: Path) -> None:
    """Write each SAE in SAE Lens' inference format, fp16 (``SAE.load_from_disk`` reads it)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for hook, sae in saes.items():
        target = out_dir / sae_key(hook)
        tmp = out_dir / (sae_key(hook) + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        sae.to(torch.float16)
        sae.save_inference_model(str(tmp))
        cfg_path = tmp / "cfg.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["dtype"] = "float16"
        cfg_path.write_text(json.dumps(cfg, indent=1))
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        sae.to(torch.float32)


# ---------------------------------------------------------------- quality
def _splice_hook(sae, mode: str, special: torch.Tensor):
    """Replace the activation by its reconstruction (or zero) except at ``special`` ``[b, p]`` positions."""
    def hook(act, hook):  # noqa: ARG001 - TransformerLens hook signature
        new = torch.zeros_like(act) if mode == "zero" else sae.decode(sae.encode(act)).to(act.dtype)
        return torch.where(special[..., None], act, new)

    return hook


def activation_quality(model, saes: dict, tokens: torch.Tensor, batch_seqs: int = 16) -> dict[str, dict]:
    """FVE (unitless), mean L0 (active latents per token) and dead fraction of every SAE on ``tokens``
    ``[n_seq, seq_len]``, one shared pass.

    Special-token positions (BOS, document separators) are excluded, as in training. A latent
    is dead when it is never active on these tokens.

    Args:
        saes: ``{hook_name: SAE}``.
    Returns:
        ``{hook_name: {"fve", "l0", "dead_frac"}}``.
    """
    special_ids = special_token_ids(model.tokenizer)
    hook_names = list(saes)
    stop = max(hp.layer_of(h) for h in hook_names) + 1
    acc = {h: {"sq_err": 0.0, "sum": 0.0, "sq_sum": 0.0, "n": 0, "l0": 0.0,
               "ever": torch.zeros(int(saes[h].cfg.d_sae), dtype=torch.bool)} for h in hook_names}
    for b in range(0, len(tokens), batch_seqs):
        toks = tokens[b:b + batch_seqs].long()
        special = special_positions(toks, special_ids)
        with torch.inference_mode():
            _, cache = model.run_with_cache(toks, names_filter=hook_names, stop_at_layer=stop)
            for h, sae in saes.items():
                x = cache[h][~special].float()
                f = sae.encode(x)
                a = acc[h]
                a["sq_err"] += (x - sae.decode(f)).pow(2).sum().item()
                a["sum"] = a["sum"] + x.sum(0)
                a["sq_sum"] += x.pow(2).sum().item()
                a["n"] += len(x)
                a["l0"] += (f > 0).sum().item()
                a["ever"] |= (f > 0).any(0)
    out = {}
    for h, a in acc.items():
        sq_tot = a["sq_sum"] - a["sum"].pow(2).sum().item() / a["n"]
        out[h] = {"fve": 1.0 - a["sq_err"] / sq_tot, "l0": a["l0"] / a["n"],
                  "dead_frac": 1.0 - a["ever"].float().mean().item()}
    return out


def clean_ce(model, tokens: torch.Tensor, batch_seqs: int = 16) -> float:
    """Mean next-token CE loss (nats/token) of the unmodified model on ``tokens`` ``[n_seq, seq_len]``."""
    total = 0.0
    for b in range(0, len(tokens), batch_seqs):
        toks = tokens[b:b + batch_seqs].long()
        with torch.inference_mode():
            total += model(toks, return_type="loss").item() * len(toks)
    return total / len(tokens)


def ce_replaced(model, tokens: torch.Tensor, hooks_of, ce_clean: float, batch_seqs: int = 16) -> dict:
    """CE-loss recovered of a replacement on ``tokens`` ``[n_seq, seq_len]``: ``(CE_zero − CE_spliced) /
    (CE_zero − CE_clean)``, with ``hooks_of(mode, special)`` giving the TransformerLens forward hooks of the
    ``"spliced"`` and the ``"zero"`` run (``special`` ``[b, p]``: special-token positions, passed through).

    Returns:
        ``{"ce_recovered", "ce_clean", "ce_spliced", "ce_zero"}`` (CE in nats/token).
    """
    special_ids = special_token_ids(model.tokenizer)
    ce = {"spliced": 0.0, "zero": 0.0}
    for b in range(0, len(tokens), batch_seqs):
        toks = tokens[b:b + batch_seqs].long()
        special = special_positions(toks, special_ids)
        with torch.inference_mode():
            for mode in ce:
                ce[mode] += model.run_with_hooks(toks, return_type="loss",
                                                 fwd_hooks=hooks_of(mode, special)).item() * len(toks)
    ce = {k: v / len(tokens) for k, v in ce.items()}
    return {"ce_recovered": (ce["zero"] - ce["spliced"]) / (ce["zero"] - ce_clean),
            "ce_clean": ce_clean, "ce_spliced": ce["spliced"], "ce_zero": ce["zero"]}


def ce_quality(model, sae, hook_name: str, tokens: torch.Tensor, ce_clean: float, batch_seqs: int = 16) -> dict:
    """CE-loss recovered of one SAE on ``tokens`` ``[n_seq, seq_len]`` (:func:`ce_replaced`: the residual at
    ``hook_name`` replaced by its reconstruction, or zeroed), special-token positions passed through.

    Args:
        ce_clean: :func:`clean_ce` of the same tokens (shared by every SAE).
    Returns:
        ``{"ce_recovered", "ce_clean", "ce_spliced", "ce_zero"}`` (CE in nats/token).
    """
    return ce_replaced(model, tokens, lambda mode, special: [(hook_name, _splice_hook(sae, mode, special))],
                       ce_clean, batch_seqs)


def bundle_quality(model, saes: dict, tokens: torch.Tensor, ce_seqs: int) -> dict[str, dict]:
    """Every quality figure per SAE: activation figures on all of ``tokens`` ``[n_seq, seq_len]``, CE on the
    first ``ce_seqs`` sequences.

    Returns:
        ``{hook_name: {"fve", "ce_recovered", "l0", "dead_frac", "ce_clean", "ce_spliced", "ce_zero"}}``
        (CE in nats/token, the rest unitless except L0 in latents per token).
    """
    act = activation_quality(model, saes, tokens)
    probe = tokens[:ce_seqs]
    base = clean_ce(model, probe)
    return {h: {**act[h], **ce_quality(model, sae, h, probe, base)}
            for h, sae in tqdm(saes.items(), desc="CE-loss recovered")}


def passes_bar(q: dict) -> bool:
    """Whether quality figures ``q`` (:func:`bundle_quality`'s per SAE) meet :data:`QUALITY_BAR`: FVE and CE
    recovered at least, L0 and dead fraction at most the bar's values."""
    return (q["fve"] >= QUALITY_BAR["fve"] and q["ce_recovered"] >= QUALITY_BAR["ce_recovered"]
            and q["l0"] <= QUALITY_BAR["l0"] and q["dead_frac"] <= QUALITY_BAR["dead_frac"])


def assets_mb(root: Path = defaults.ASSETS_DIR) -> float:
    """Size of everything under ``assets/`` in MB (10⁶ bytes)."""
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6


def _heldout_file() -> Path:
    """The shipped held-out corpus file; :class:`AssetError` when it is missing."""
    path = defaults.CORPUS_HELDOUT_FILE
    if not path.is_file():
        raise AssetError(f"held-out corpus missing: {path}; rebuild with 'sfc bundle build'")
    return path


def load_heldout_tokens() -> torch.Tensor:
    """Held-out corpus tokens ``[n_seq, seq_len]`` int32 shipped in ``assets/``: the SAE corpus' held-out split
    first (:func:`heldout_sae_rows` rows), then the extended held-out text behind the feature index
    (:func:`~sfc_core.corpus.build_heldout_corpus`).

    Raises:
        AssetError: the file is missing or unreadable.
    """
    from safetensors.torch import load_file

    path = _heldout_file()
    try:
        return load_file(str(path))["tokens"]
    except Exception as exc:
        raise AssetError(f"held-out corpus unreadable: {path}") from exc


def heldout_sae_rows() -> int:
    """How many first rows of :func:`load_heldout_tokens` are the SAE corpus' own held-out split (the rest is
    the extended held-out text); all rows for a file written before the extension.

    Raises:
        AssetError: the file is missing or unreadable.
    """
    from safetensors import safe_open

    path = _heldout_file()
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            rows = f.get_slice("tokens").get_shape()[0]
    except Exception as exc:
        raise AssetError(f"held-out corpus unreadable: {path}") from exc
    return int(meta.get("sae_heldout_rows", rows))


def save_heldout_tokens(tokens: torch.Tensor, sae_rows: int, report: dict | None = None) -> None:
    """Write ``assets/corpus_heldout.safetensors``: ``tokens`` ``[n_seq, seq_len]`` int32 whose first ``sae_rows``
    rows are the SAE corpus' held-out split (metadata ``sae_heldout_rows``; ``report`` as JSON ``report``)."""
    from safetensors.torch import save_file

    path = defaults.CORPUS_HELDOUT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    meta = {"sae_heldout_rows": str(int(sae_rows))}
    if report is not None:
        meta["report"] = json.dumps(report)
    save_file({"tokens": tokens.to(torch.int32).contiguous()}, str(tmp), metadata=meta)
    tmp.rename(path)


def _chunk_dir(work_dir: Path, tokens: torch.Tensor) -> Path:
    """Activation-chunk folder keyed by the tokens and the shipped SAE files (stale chunks are never reused)."""
    import hashlib

    h = hashlib.sha256(tokens.numpy().tobytes())
    for p in sorted(defaults.SAE_DIR.rglob("*")):
        if p.is_file():
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return work_dir / f"index_chunks_{h.hexdigest()[:12]}"


def build_index(cfg: BuildConfig, work_dir: Path = Path(".work/bundle"), old_heldout: torch.Tensor | None = None,
                model=None, log=print) -> dict:
    """Resumable stage: extended held-out corpus → ``assets/corpus_heldout.safetensors`` → feature index with
    labels (``assets/feature_index/``), from the SAEs already in ``assets/saes`` (no retraining).

    Args:
        old_heldout: the SAE corpus' held-out split ``[m, seq_len]`` (kept as the first rows); ``None``: the
            first :func:`heldout_sae_rows` rows of the shipped file.

    Returns:
        ``{"heldout": report of build_heldout_corpus, "quality": {hook_name: {"fve", "l0", "dead_frac"}} over
        every ordinary held-out token, "timings_s": {"heldout_corpus_s", "feature_index_s"}}``.

    Raises:
        AssetError: the shipped SAEs or held-out file are missing, or the bundled GGUF is.
    """
    from .feature_index import build_feature_index
    from .model import load_model
    from .saes import load_bundled_saes

    model = model or load_model(device=cfg.device)
    if old_heldout is None:
        old_heldout = load_heldout_tokens()[:heldout_sae_rows()]
    t = time.time()
    tokens, report = build_heldout_corpus(work_dir / "heldout", model.tokenizer, old_heldout, cfg.heldout)
    report = {**report, "config": asdict(cfg.heldout)}
    timings = {"heldout_corpus_s": time.time() - t}
    log(f"held-out corpus: {tuple(tokens.shape)} ({report['tokens']} tokens, {report['old_rows']} SAE held-out rows first)")
    save_heldout_tokens(tokens, len(old_heldout), report)
    t = time.time()
    saes = load_bundled_saes(model)
    quality = build_feature_index(model, saes, tokens, defaults.FEATURE_INDEX_DIR, top_k=cfg.index_top_k,
                                  window=cfg.index_window, work_dir=_chunk_dir(work_dir, tokens))
    timings["feature_index_s"] = time.time() - t
    return {"heldout": report, "quality": quality, "timings_s": timings}


def update_manifest_index(result: dict) -> dict:
    """Record :func:`build_index`'s result in ``assets/bundle.json``: held-out size and sources, index timings,
    and the activation quality figures (FVE, L0, dead fraction: every held-out token); the CE figures are kept
    (they use the first ``check_seqs`` rows, which the extension leaves unchanged).

    Raises:
        AssetError: the manifest is missing or not valid JSON.
    """
    manifest = load_manifest()
    manifest["heldout_tokens"] = result["heldout"]["tokens"]
    manifest["heldout"] = result["heldout"]
    manifest.setdefault("timings_s", {}).update({k: round(v, 1) for k, v in result["timings_s"].items()})
    for hook, q in result["quality"].items():
        manifest.setdefault("quality", {}).setdefault(hook, {}).update({k: round(v, 4) for k, v in q.items()})
    defaults.BUNDLE_MANIFEST.write_text(json.dumps(manifest, indent=1))
    return manifest


def load_manifest() -> dict:
    """``assets/bundle.json``: build config, timings and recorded quality figures.

    Raises:
        AssetError: the manifest is missing or not valid JSON.
    """
    path = defaults.BUNDLE_MANIFEST
    if not path.is_file():
        raise AssetError(f"bundle manifest missing: {path}; rebuild with 'sfc bundle build'")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise AssetError(f"bundle manifest corrupted: {path}") from exc


def check_bundle(model=None, n_seqs: int | None = None) -> dict:
    """Load the shipped bundle and recompute every SAE's quality on held-out tokens.

    Args:
        model: the bundled model (loaded if ``None``).
        n_seqs: held-out sequences for CE recovered (default: as recorded at build time).

    Returns:
        ``{"model", "saes": [{"hook_name", "d_sae", "fve", "ce_recovered", "l0", "dead_frac", "ce_clean",
        "ce_spliced", "ce_zero", "passes"}], "transcoders": {...}, "assets_mb", "assets_budget_mb", "quality_bar",
        "passes"}`` (CE in nats/token, sizes in MB; ``transcoders``:
        :func:`~sfc_core.transcoders.check_transcoders`).

    Raises:
        AssetError: any shipped file is missing or corrupted.
    """
    from .model import load_model
    from .saes import load_bundled_saes

    model = model or load_model()
    manifest = load_manifest()
    tokens = load_heldout_tokens()
    n = n_seqs or manifest.get("build", {}).get("check_seqs", 32)
    loaded = load_bundled_saes(model)
    quality = bundle_quality(model, {h: s.sae for h, s in loaded.items()}, tokens, n)
    rows = [{"hook_name": h, "d_sae": loaded[h].d_sae, **{k: round(v, 4) for k, v in q.items()},
             "passes": passes_bar(q)} for h, q in quality.items()]
    from .transcoders import check_transcoders

    transcoders = check_transcoders(model)
    size = round(assets_mb(), 2)
    return {
        "model": defaults.BUNDLED_MODEL_NAME,
        "saes": rows,
        "transcoders": transcoders,
        "assets_mb": size,
        "assets_budget_mb": ASSETS_BUDGET_MB,
        "quality_bar": QUALITY_BAR,
        "passes": all(r["passes"] for r in rows) and transcoders["passes"] and size <= ASSETS_BUDGET_MB,
    }


# ---------------------------------------------------------------- build
def build_bundle(cfg: BuildConfig, work_dir: Path = Path(".work/bundle"), log=print) -> dict:
    """Run (or resume) every stage and write ``assets/``; returns the manifest (also written to
    ``assets/bundle.json``; timings in seconds, quality figures as in :func:`bundle_quality`).

    Raises:
        AssetError: the bundled model's GGUF is missing or corrupted.
    """
    from .model import load_model
    from .saes import load_bundled_saes

    timings: dict[str, float] = {}
    t0 = time.time()
    model = load_model(device=cfg.device)
    work_dir.mkdir(parents=True, exist_ok=True)
    corpus = build_corpus(work_dir, cfg.corpus, model.tokenizer)
    timings["corpus_s"] = time.time() - t0
    log(f"corpus: train {tuple(corpus['train'].shape)} held-out {tuple(corpus['heldout'].shape)}")

    t = time.time()
    paths = collect_activations(model, corpus["train"], cfg.hook_names, work_dir / "acts")
    timings["activations_s"] = time.time() - t
    n_tokens = corpus["train"].shape[0] * (corpus["train"].shape[1] - 1)

    t = time.time()
    final_dir = work_dir / "saes_final"
    if not final_dir.is_dir():
        special = special_positions(corpus["train"][:, 1:], special_token_ids(model.tokenizer)).reshape(-1)
        saes = train_saes(paths, cfg, work_dir, n_tokens, special)
        save_saes(saes, work_dir / "saes_tmp")
        (work_dir / "saes_tmp").rename(final_dir)
    timings["training_s"] = time.time() - t

    defaults.ASSETS_DIR.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(defaults.SAE_DIR, ignore_errors=True)
    shutil.copytree(final_dir, defaults.SAE_DIR)

    # held-out corpus (the SAE corpus' held-out split first) + feature index + activation quality, one pass
    index = build_index(cfg, work_dir, old_heldout=corpus["heldout"], model=model, log=log)
    timings.update(index["timings_s"])

    t = time.time()
    saes = load_bundled_saes(model)
    probe = corpus["heldout"][:cfg.check_seqs]  # the first rows of the shipped held-out file
    base = clean_ce(model, probe)
    quality = {h: {k: round(v, 4) for k, v in {**index["quality"][h], **ce_quality(model, s.sae, h, probe, base)}.items()}
               for h, s in tqdm(saes.items(), desc="CE-loss recovered")}
    timings["check_s"] = time.time() - t
    manifest = {
        "model": defaults.BUNDLED_MODEL_NAME,
        "build": {**asdict(cfg), "device": cfg.device},
        "train_tokens": n_tokens,
        "tokens_seen": int(n_tokens * cfg.epochs),
        "heldout_tokens": index["heldout"]["tokens"],
        "heldout": index["heldout"],
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "torch_threads": torch.get_num_threads(),
        "quality": quality,
    }
    defaults.BUNDLE_MANIFEST.write_text(json.dumps(manifest, indent=1))
    return manifest
