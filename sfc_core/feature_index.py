"""Feature index: what each latent of each bundled SAE responds to and what it writes.

Per SAE one safetensors file ``assets/feature_index/<L>_resid_post.safetensors``:

* ``top_seq`` ``[d_sae, k]`` int32, ``top_pos`` ``[d_sae, k]`` int32: held-out sequence and position
  of the latent's top-``k`` activating contexts (one per sequence, highest first; −1 = none);
* ``top_act`` ``[d_sae, k]`` float16: the activation at that position;
* ``window_act`` ``[d_sae, k, before+1+after]`` float16: per-token activations around it;
* ``density`` ``[d_sae]`` float32: fraction of held-out tokens (BOS and other special tokens
  excluded, as in SAE training) where it is active;
* ``hist_counts`` ``[d_sae, n_bins]`` int32 over ``hist_edges`` ``[d_sae, n_bins+1]``: histogram
  of its non-zero activations;
* ``logit_top_ids/vals``, ``logit_bottom_ids/vals`` ``[d_sae, 10]``: tokens most promoted /
  suppressed by its decoder direction through the final norm's weight and the unembedding
  (``d_k @ W_eff``, :func:`~sfc_core.splice.effective_unembed`; logits per unit activation at a
  final residual of unit RMS, see :func:`logit_effects`).

Metadata: ``hook_name``, ``window_before`` / ``window_after`` and the automatic labels of
:mod:`sfc_core.labels` (``labels`` / ``descriptions``: JSON lists of ``d_sae`` strings, ``labels_version``).

Token windows are read from ``assets/corpus_heldout.safetensors`` (``[n_seq, seq_len]``: the SAE corpus'
held-out split first, then ≈ 202k tokens of held-out package documentation, docstrings, licences and
stdlib code, :func:`~sfc_core.corpus.build_heldout_corpus`). The shipped index is built in one forward
pass over it (:func:`build_feature_index`, ``sfc bundle build --index-only``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import defaults, hooks
from .attribution import effective_decoder
from .errors import AssetError, InputError
from .pairs import special_positions, special_token_ids
from .splice import effective_unembed

N_BINS = 20
N_LOGIT = 10


def index_file(hook_name: str, root: Path | None = None) -> Path:
    """Path of the index file of the SAE at ``hook_name`` under ``root`` (default: the shipped folder).

    Raises:
        InputError: not a per-block hook name.
    """
    return (root or defaults.FEATURE_INDEX_DIR) / f"{hooks.sae_key(hook_name)}.safetensors"


def logit_effects(sae, model, n: int = N_LOGIT) -> dict[str, torch.Tensor]:
    """Top/bottom ``n`` tokens of each latent's direct logit effect through the final norm, ``D @ W_eff``
    ``[d_sae, d_vocab]``, as ``{"logit_top_ids", "logit_top_vals", "logit_bottom_ids", "logit_bottom_vals"}``
    each ``[d_sae, n]`` (int32 ids, fp16 values, highest / lowest first).

    ``D`` ``[d_sae, d_model]`` are the SAE's effective decoder rows
    (:func:`~sfc_core.attribution.effective_decoder`) and ``W_eff`` ``[d_model, d_vocab]`` the unembedding with
    the final norm's weight folded in (:func:`~sfc_core.splice.effective_unembed`, as TransformerLens'
    ``fold_ln``; the logit lens / direct logit attribution). Units: logits per unit of feature activation
    with the final norm's scale frozen at a residual RMS of 1 (fold_ln's convention); at a token whose final
    residual has RMS ``σ`` the change is ``1/σ`` of it (bundled model: σ ≈ 36, the median over the held-out
    non-special tokens, 29–43 for 10–90 %): magnitudes only, the ranking is the same. Biases (``b_U``, the
    norm's ``b``) add the same logits for every latent and do not enter. Computed in float64.

    Args:
        model: the ``HookedTransformer``, or its effective unembedding ``[d_model, d_vocab]`` already computed
            (used as given).

    Raises:
        InputError: the model's final norm is of a kind :func:`~sfc_core.splice.effective_unembed` does not know.
    """
    W = logit_unembedding(model).double()
    D = effective_decoder(sae).double()
    ids, vals = {"top": [], "bottom": []}, {"top": [], "bottom": []}
    for i in range(0, D.shape[0], 256):
        effects = D[i:i + 256] @ W
        for key, largest in (("top", True), ("bottom", False)):
            t = effects.topk(n, dim=-1, largest=largest)
            ids[key].append(t.indices)
            vals[key].append(t.values)
    return {
        "logit_top_ids": torch.cat(ids["top"]).int(), "logit_top_vals": torch.cat(vals["top"]).half(),
        "logit_bottom_ids": torch.cat(ids["bottom"]).int(), "logit_bottom_vals": torch.cat(vals["bottom"]).half(),
    }


def logit_unembedding(model) -> torch.Tensor:
    """``[d_model, d_vocab]``: :func:`~sfc_core.splice.effective_unembed` of a ``HookedTransformer`` (residual
    RMS 1), or ``model`` itself if it is already such a tensor (detached).

    Raises:
        InputError: an unknown final norm, or a tensor that is not 2-D.
    """
    if isinstance(model, torch.Tensor):
        if model.dim() != 2:
            raise InputError(f"an effective unembedding is [d_model, d_vocab], not {tuple(model.shape)}")
        return model.detach()
    return effective_unembed(model)


def _histograms(acts_per_latent: list[torch.Tensor], d_sae: int) -> tuple[torch.Tensor, torch.Tensor]:
    counts = torch.zeros(d_sae, N_BINS, dtype=torch.int32)
    edges = torch.zeros(d_sae, N_BINS + 1)
    for i, a in enumerate(acts_per_latent):
        if len(a):
            hi = float(a.max())
            edges[i] = torch.linspace(0, hi, N_BINS + 1)
            counts[i] = torch.histc(a, bins=N_BINS, min=0, max=hi).int()
    return counts, edges


def sae_activations(model, sae, hook_name: str, tokens: torch.Tensor, batch_seqs: int = 16,
                    progress=None) -> torch.Tensor:
    """Latent activations ``[n_seq, seq_len, d_sae]`` (fp16; BOS and other special-token
    positions set to 0: SAEs are trained without them).

    Runs the blocks directly (no hooks), so it is safe next to other sessions' calls.

    Args:
        tokens: ``[n_seq, seq_len]`` token ids, BOS first.
        progress: optional ``callable(done_seqs, total_seqs)``.

    Raises:
        InputError: ``hook_name`` is not a residual-stream hook point of ``model``.
    """
    from .splice import residual_at

    special_ids = special_token_ids(model.tokenizer)
    out = []
    for b in range(0, len(tokens), batch_seqs):
        toks = tokens[b:b + batch_seqs].long()
        x = residual_at(model, toks, hook_name)
        with torch.inference_mode():
            f = sae.encode(x.to(sae.W_enc.dtype)).float()
            f[:, 0] = 0
            f[special_positions(toks, special_ids)] = 0
            out.append(f.half())
        if progress:
            progress(min(b + batch_seqs, len(tokens)), len(tokens))
    return torch.cat(out)


def build_sae_index(model, sae, hook_name: str, tokens: torch.Tensor, top_k: int = 20,
                    window: tuple[int, int] = (10, 4), progress=None) -> dict[str, torch.Tensor]:
    """Index tensors of one SAE over held-out ``tokens`` ``[n_seq, seq_len]`` (names and shapes in the module
    doc; ``window`` is ``(tokens before, tokens after)`` the max).

    Raises:
        InputError: ``hook_name`` is not a residual-stream hook point of ``model``.
    """
    acts = sae_activations(model, sae, hook_name, tokens, progress=progress)  # [n, s, d]
    n_seq, seq_len, d_sae = acts.shape
    per_seq_max, per_seq_pos = acts.float().max(dim=1)  # [n, d]
    k = min(top_k, n_seq)
    top_act, top_seq = per_seq_max.topk(k, dim=0)  # [k, d]
    top_pos = per_seq_pos.gather(0, top_seq)
    valid = top_act > 0
    before, after = window
    width = before + 1 + after
    offsets = torch.arange(-before, after + 1)
    pos = (top_pos.unsqueeze(-1) + offsets).clamp(0, seq_len - 1)  # [k, d, w]
    latent = torch.arange(d_sae).view(1, d_sae, 1).expand(k, d_sae, width)
    seq = top_seq.unsqueeze(-1).expand(k, d_sae, width)
    window_act = acts[seq, pos, latent]
    flat = acts.view(-1, d_sae).float()
    active = flat > 0
    ordinary = ~special_positions(tokens, special_token_ids(model.tokenizer))
    ordinary[:, 0] = False
    density = active.float().sum(0) / max(int(ordinary.sum()), 1)  # BOS and special tokens excluded
    nonzero = [flat[active[:, i], i] for i in range(d_sae)]
    counts, edges = _histograms(nonzero, d_sae)
    return {
        "top_seq": torch.where(valid, top_seq, -1).T.contiguous().int(),
        "top_pos": torch.where(valid, top_pos, -1).T.contiguous().int(),
        "top_act": top_act.T.contiguous().half(),
        "window_act": window_act.permute(1, 0, 2).contiguous().half(),
        "density": density.contiguous(),
        "hist_counts": counts,
        "hist_edges": edges.half(),
        **logit_effects(sae, model),
    }


def collect_sparse_activations(model, saes: dict, tokens: torch.Tensor, work_dir: Path, chunk_seqs: int = 64,
                               batch_seqs: int = 16) -> list[Path]:
    """One forward pass over ``tokens`` ``[n_seq, seq_len]`` for every SAE in ``saes`` (``{hook_name: LoadedSAE}``),
    written as resumable chunk files ``work_dir/chunk_XXXXX.safetensors`` (an interrupted run resumes at the
    first missing chunk; delete ``work_dir`` after changing the tokens or the SAEs).

    Per chunk of ``chunk_seqs`` sequences and per SAE ``key`` (:func:`~sfc_core.hooks.sae_key`):

    * ``{key}.idx`` ``[chunk_seqs·seq_len, K]`` int16 and ``{key}.val`` (same shape, fp16): the latents active at
      each token and their activations (``K`` = the most active at any token of the chunk; TopK SAEs: ≤ k),
      BOS and other special-token positions set to 0 as in :func:`sae_activations` (same residuals, same
      encoder: the values match it exactly);
    * ``{key}.q`` ``[5]`` float64 (``Σ‖x − x̂‖²``, ``Σ‖x‖²``, ``n`` tokens, ``Σ L0``, 0) and ``{key}.qsum``
      ``[d_model]`` float64 (``Σx``), ``{key}.ever`` ``[d_sae]`` bool: :func:`~sfc_core.bundle.activation_quality`'s
      accumulators over the chunk's ordinary (non-special) tokens.

    Raises:
        InputError: an SAE at a hook point that is not a residual-stream point of ``model``.
    """
    from safetensors.torch import save_file

    from .splice import embed, run_from

    work_dir.mkdir(parents=True, exist_ok=True)
    special_ids = special_token_ids(model.tokenizer)
    order = sorted(saes, key=lambda h: hooks.blocks_before(h, model.cfg.n_layers))
    paths = []
    n_chunks = (len(tokens) + chunk_seqs - 1) // chunk_seqs
    for c in tqdm(range(n_chunks), desc="held-out activations (chunks)"):
        path = work_dir / f"chunk_{c:05d}.safetensors"
        paths.append(path)
        if path.is_file():
            continue
        out: dict[str, list[torch.Tensor]] = {}
        chunk = tokens[c * chunk_seqs:(c + 1) * chunk_seqs]
        for b in range(0, len(chunk), batch_seqs):
            toks = chunk[b:b + batch_seqs].long()
            special = special_positions(toks, special_ids)
            special[:, 0] = True
            with torch.inference_mode():
                resid, _ = embed(model, toks)
                done = 0
                for hook in order:
                    stop = hooks.blocks_before(hook, model.cfg.n_layers)
                    resid = run_from(model, [], resid, done, None, stop_block=stop)
                    done = stop
                    sae = saes[hook].sae
                    key = hooks.sae_key(hook)
                    f = sae.encode(resid.to(sae.W_enc.dtype)).float()
                    # quality accumulators, as bundle.activation_quality (special tokens excluded)
                    x = resid[~special].float()
                    fx = f[~special]
                    err = (x - sae.decode(fx).float()).pow(2).sum().double()
                    xd = x.double()
                    f[special] = 0
                    flat = f.reshape(-1, f.shape[-1]).half()
                    width = max(int((flat > 0).sum(-1).max()), 1)
                    val, idx = flat.float().topk(width, dim=-1)
                    q = torch.tensor([float(err), float(xd.pow(2).sum()), float(len(x)), float((fx > 0).sum()), 0.0],
                                     dtype=torch.float64)
                    parts = out.setdefault(key, [])
                    parts.append((idx.to(torch.int16), val.half(), q, xd.sum(0), (fx > 0).any(0)))
        tensors = {}
        for key, parts in out.items():
            width = max(p[0].shape[1] for p in parts)
            pad = lambda t, w: torch.nn.functional.pad(t, (0, w - t.shape[1]))  # noqa: E731
            tensors[f"{key}.idx"] = torch.cat([pad(p[0], width) for p in parts]).contiguous()
            tensors[f"{key}.val"] = torch.cat([pad(p[1], width) for p in parts]).contiguous()
            tensors[f"{key}.q"] = torch.stack([p[2] for p in parts]).sum(0)
            tensors[f"{key}.qsum"] = torch.stack([p[3] for p in parts]).sum(0)
            tensors[f"{key}.ever"] = torch.stack([p[4] for p in parts]).any(0)
        tmp = path.with_suffix(".tmp")
        save_file(tensors, str(tmp), metadata={"rows": str(len(chunk))})
        tmp.rename(path)
    return paths


def index_from_chunks(paths: list[Path], hook_name: str, tokens: torch.Tensor, d_sae: int, tokenizer,
                      top_k: int = 20, window: tuple[int, int] = (10, 4)) -> tuple[dict[str, torch.Tensor], dict]:
    """The index tensors of one SAE (module doc; no logit effects) from :func:`collect_sparse_activations`'s
    chunks over ``tokens`` ``[n_seq, seq_len]``, the same as :func:`build_sae_index` computes, plus its quality
    figures ``{"fve", "l0", "dead_frac"}`` over every ordinary held-out token (as
    :func:`~sfc_core.bundle.activation_quality`).

    Raises:
        AssetError: a chunk is missing or does not hold this SAE.
    """
    from safetensors.torch import load_file

    key = hooks.sae_key(hook_name)
    n_seq, seq_len = tokens.shape
    idx_all, val_all, seq_max, seq_pos = [], [], [], []
    q, qsum, ever = torch.zeros(5, dtype=torch.float64), 0.0, torch.zeros(d_sae, dtype=torch.bool)
    for path in paths:
        try:
            chunk = load_file(str(path))
            idx, val = chunk[f"{key}.idx"].long(), chunk[f"{key}.val"]
        except Exception as exc:
            raise AssetError(f"activation chunk missing or without {key}: {path}") from exc
        rows = len(idx) // seq_len
        dense = torch.zeros(len(idx), d_sae).scatter_(-1, idx, val.float()).view(rows, seq_len, d_sae)
        m, p = dense.max(dim=1)
        seq_max.append(m)
        seq_pos.append(p)
        idx_all.append(idx.to(torch.int16))
        val_all.append(val)
        q += chunk[f"{key}.q"]
        qsum = qsum + chunk[f"{key}.qsum"]
        ever |= chunk[f"{key}.ever"]
    per_seq_max, per_seq_pos = torch.cat(seq_max), torch.cat(seq_pos)  # [n, d]
    if len(per_seq_max) != n_seq:
        raise AssetError(f"activation chunks hold {len(per_seq_max)} sequences, the corpus {n_seq}: rebuild them")
    width = max(t.shape[1] for t in idx_all)  # chunks of a JumpReLU dictionary differ in their widest token
    pad = lambda t: torch.nn.functional.pad(t, (0, width - t.shape[1]))  # noqa: E731 - zero value = inactive
    idx_all, val_all = torch.cat([pad(t) for t in idx_all]).long(), torch.cat([pad(t) for t in val_all])  # [n·s, K]
    k = min(top_k, n_seq)
    top_act, top_seq = per_seq_max.topk(k, dim=0)  # [k, d]
    top_pos = per_seq_pos.gather(0, top_seq)
    valid = top_act > 0
    before, after = window
    offsets = torch.arange(-before, after + 1)
    pos = (top_pos.unsqueeze(-1) + offsets).clamp(0, seq_len - 1)  # [k, d, w]
    flat_tok = top_seq.unsqueeze(-1) * seq_len + pos
    latent = torch.arange(d_sae).view(1, d_sae, 1, 1)
    hit = idx_all[flat_tok] == latent  # [k, d, w, K]
    window_act = (val_all[flat_tok].float() * hit).sum(-1).half()
    active = val_all > 0
    lat, vals = idx_all[active], val_all[active].float()
    count = torch.bincount(lat, minlength=d_sae)
    ordinary = ~special_positions(tokens, special_token_ids(tokenizer))
    ordinary[:, 0] = False
    density = count.float() / max(int(ordinary.sum()), 1)
    order = torch.argsort(lat, stable=True)
    lat, vals = lat[order], vals[order]
    bounds = torch.cat([torch.zeros(1, dtype=torch.long), count.cumsum(0)]).tolist()
    counts, edges = _histograms([vals[bounds[i]:bounds[i + 1]] for i in range(d_sae)], d_sae)
    tensors = {
        "top_seq": torch.where(valid, top_seq, -1).T.contiguous().int(),
        "top_pos": torch.where(valid, top_pos, -1).T.contiguous().int(),
        "top_act": top_act.T.contiguous().half(),
        "window_act": window_act.permute(1, 0, 2).contiguous(),
        "density": density.contiguous(),
        "hist_counts": counts,
        "hist_edges": edges.half(),
    }
    sq_err, sq_sum, n, l0 = float(q[0]), float(q[1]), float(q[2]), float(q[3])
    sq_tot = sq_sum - float((qsum * qsum).sum()) / n
    quality = {"fve": 1.0 - sq_err / sq_tot, "l0": l0 / n, "dead_frac": 1.0 - ever.float().mean().item()}
    return tensors, quality


def save_index_file(tensors: dict[str, torch.Tensor], path: Path, hook_name: str, window: tuple[int, int],
                    extra_metadata: dict[str, str] | None = None) -> None:
    """Write one index file atomically (``hook_name`` / ``window_before`` / ``window_after`` metadata, plus
    ``extra_metadata`` such as :mod:`sfc_core.labels`' ``labels`` / ``descriptions``)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    meta = {"hook_name": hook_name, "window_before": str(window[0]), "window_after": str(window[1]),
            **(extra_metadata or {})}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)
    tmp.rename(path)


def build_feature_index(model, saes: dict, tokens: torch.Tensor, out_dir: Path, top_k: int = 20,
                        window: tuple[int, int] = (10, 4), work_dir: Path | None = None,
                        labels: bool = True) -> dict[str, dict]:
    """Build and save the index of every SAE in ``saes`` (``{hook_name: LoadedSAE}``) over ``tokens``
    ``[n_seq, seq_len]``, one safetensors file per SAE in ``out_dir``, with automatic labels
    (:mod:`sfc_core.labels`) in its metadata unless ``labels`` is false.

    One forward pass serves every SAE (:func:`collect_sparse_activations`, resumable chunks in ``work_dir``; a
    temporary folder if ``None``), then each file is computed from the chunks (:func:`index_from_chunks`).

    Returns:
        ``{hook_name: {"fve", "l0", "dead_frac"}}`` over every ordinary token of ``tokens``.

    Raises:
        InputError: an SAE at a hook point that is not a per-block residual-stream point.
    """
    import tempfile

    if work_dir is None:
        with tempfile.TemporaryDirectory() as tmp:
            return build_feature_index(model, saes, tokens, out_dir, top_k, window, Path(tmp), labels)
    paths = collect_sparse_activations(model, saes, tokens, work_dir)
    quality = {}
    for hook, loaded in tqdm(saes.items(), desc="feature index"):
        tensors, quality[hook] = index_from_chunks(paths, hook, tokens, int(loaded.d_sae), model.tokenizer,
                                                   top_k, window)
        tensors.update(logit_effects(loaded.sae, model))
        meta = {}
        if labels:
            from .labels import label_metadata

            meta = label_metadata(tensors, tokens, model.tokenizer, window)
        save_index_file(tensors, index_file(hook, out_dir), hook, window, meta)
    return quality


@dataclass(frozen=True)
class Example:
    """One top activating context: tokens and per-token activations; ``max_index`` marks the max."""

    tokens: list[int]
    activations: list[float]
    max_index: int
    max_activation: float
    sequence: int
    position: int


@dataclass
class FeatureIndex:
    """Loaded index of one SAE (tensors as in the module doc) with the held-out tokens, and the automatic labels
    and descriptions stored with it (:mod:`sfc_core.labels`; ``None`` when the file has none)."""

    hook_name: str
    tensors: dict[str, torch.Tensor]
    tokens: torch.Tensor
    window: tuple[int, int]
    labels: list[str] | None = None
    descriptions: list[str] | None = None

    @property
    def d_sae(self) -> int:
        """Dictionary width (latents indexed)."""
        return int(self.tensors["density"].shape[0])

    def _check(self, feature: int) -> None:
        if not 0 <= feature < self.d_sae:
            raise InputError(f"feature {feature} out of range for {self.hook_name} (d_sae {self.d_sae})")

    def top_examples(self, feature: int, n: int = 20) -> list[Example]:
        """Up to ``n`` top activating contexts of ``feature`` (strongest first).

        Raises:
            InputError: ``feature`` outside ``0..d_sae−1``.
        """
        self._check(feature)
        before, after = self.window
        out = []
        for j in range(min(n, self.tensors["top_seq"].shape[1])):
            seq, pos = int(self.tensors["top_seq"][feature, j]), int(self.tensors["top_pos"][feature, j])
            if seq < 0:
                break
            acts = self.tensors["window_act"][feature, j].float().tolist()
            lo, hi = pos - before, pos + after + 1
            keep = [i for i, p in enumerate(range(lo, hi)) if 0 <= p < self.tokens.shape[1]]
            toks = [int(self.tokens[seq, lo + i]) for i in keep]
            out.append(Example(toks, [acts[i] for i in keep], keep.index(before),
                               float(self.tensors["top_act"][feature, j]), seq, pos))
        return out

    def density(self, feature: int) -> float:
        """Fraction of held-out tokens (special tokens excluded) where ``feature`` is active (unitless).

        Raises:
            InputError: ``feature`` outside ``0..d_sae−1``.
        """
        self._check(feature)
        return float(self.tensors["density"][feature])

    def histogram(self, feature: int) -> tuple[list[int], list[float]]:
        """``(counts [n_bins], edges [n_bins+1])`` of the non-zero activations (edges in activation units).

        Raises:
            InputError: ``feature`` outside ``0..d_sae−1``.
        """
        self._check(feature)
        return self.tensors["hist_counts"][feature].tolist(), self.tensors["hist_edges"][feature].float().tolist()

    def logit_effects(self, feature: int) -> dict[str, list]:
        """``{"top": [(token_id, logit)], "bottom": [...]}`` (10 each): the shipped direct logit effects through
        the final norm's weight (:func:`logit_effects`; logits per unit activation at unit final-residual RMS).

        Raises:
            InputError: ``feature`` outside ``0..d_sae−1``.
        """
        self._check(feature)
        t = self.tensors
        return {
            "top": list(zip(t["logit_top_ids"][feature].tolist(), t["logit_top_vals"][feature].float().tolist())),
            "bottom": list(zip(t["logit_bottom_ids"][feature].tolist(), t["logit_bottom_vals"][feature].float().tolist())),
        }


    def label(self, feature: int) -> str:
        """Short automatic label of ``feature`` (≤ 24 characters, for a graph node; rules in
        :mod:`sfc_core.labels`), ``""`` for a dead latent or an index without labels.

        Raises:
            InputError: ``feature`` outside ``0..d_sae−1``.
        """
        self._check(feature)
        return self.labels[feature] if self.labels is not None and feature < len(self.labels) else ""

    def description(self, feature: int) -> str:
        """Full automatic description of ``feature`` (two lines: the tokens it fires on and follows with counts
        out of its top contexts; the tokens it promotes, density, top activation and degenerate flags), ``""``
        for an index without labels.

        Raises:
            InputError: ``feature`` outside ``0..d_sae−1``.
        """
        self._check(feature)
        if self.descriptions is None or feature >= len(self.descriptions):
            return ""
        return self.descriptions[feature]

    def degenerate_flags(self) -> dict[int, list[str]]:
        """Latents that look like artefacts rather than features, by the rules of :data:`DEGENERATE_RULES`
        (cached): ``{feature: ["massive", "positional", "dense"]}`` for flagged latents only.

        * ``massive``: the top activation is ≥ ``massive_ratio`` × the median top activation of the SAE's live
          latents (massive-activation tokens, Sun et al. 2024, not a concept);
        * ``positional``: ≥ ``positional_fraction`` of the (at least 4) top contexts, each from a different held-out
          sequence, peak at the same position (e.g. the first token after BOS): it tracks a position;
        * ``dense``: active on ≥ ``dense_fraction`` of held-out tokens.
        """
        cached = self.__dict__.get("_flags")
        if cached is not None:
            return cached
        rules, t = DEGENERATE_RULES, self.tensors
        top = t["top_act"][:, 0].float()
        live = top > 0
        median = float(top[live].median()) if live.any() else 0.0
        flags: dict[int, list[str]] = {}
        for k in torch.nonzero(live & (top >= rules["massive_ratio"] * median)).flatten().tolist():
            flags.setdefault(k, []).append("massive")
        seqs, poss = t["top_seq"].long(), t["top_pos"].long()
        for k in range(self.d_sae):
            pos = poss[k][seqs[k] >= 0]
            if len(pos) >= 4 and int(torch.unique(pos, return_counts=True)[1].max()) >= rules["positional_fraction"] * len(pos):
                flags.setdefault(k, []).append("positional")
        for k in torch.nonzero(t["density"] >= rules["dense_fraction"]).flatten().tolist():
            flags.setdefault(k, []).append("dense")
        self.__dict__["_flags"] = flags
        return flags

    def flags(self, feature: int) -> list[str]:
        """The degenerate-latent flags of ``feature`` (:meth:`degenerate_flags`; ``[]`` for an ordinary latent).

        Raises:
            InputError: ``feature`` outside ``0..d_sae−1``.
        """
        self._check(feature)
        return list(self.degenerate_flags().get(int(feature), []))


#: Thresholds of :meth:`FeatureIndex.degenerate_flags` (unitless ratios / fractions).
DEGENERATE_RULES = {"massive_ratio": 20.0, "positional_fraction": 0.5, "dense_fraction": 0.2}
#: What each flag means, for the panel.
FLAG_TEXT = {
    "massive": "its top activation is ≥ 20× the SAE's median top activation: a massive-activation token, "
               "not a concept",
    "positional": "half or more of its top contexts, each from a different text, peak at the same position: it "
                  "tracks a position (often the first token after BOS), not a concept",
    "dense": "it is active on ≥ 20 % of held-out tokens: too dense to name one concept",
}

_INDEX_CACHE: dict[Path, FeatureIndex] = {}


def load_feature_index(hook_name: str, root: Path | None = None) -> FeatureIndex:
    """Load (and cache) the shipped index of the SAE at ``hook_name``.

    Raises:
        AssetError: the index or the held-out corpus is missing or unreadable.
        InputError: ``hook_name`` is not a per-block hook name.
    """
    from safetensors import safe_open

    from .bundle import load_heldout_tokens

    path = index_file(hook_name, root)
    if path in _INDEX_CACHE:
        return _INDEX_CACHE[path]
    if not path.is_file():
        raise AssetError(f"no feature index for {hook_name} at {path}; rebuild with 'sfc bundle build'")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise AssetError(f"feature index unreadable: {path}") from exc
    window = (int(meta.get("window_before", 10)), int(meta.get("window_after", 4)))
    try:
        labels = json.loads(meta["labels"]) if "labels" in meta else None
        descriptions = json.loads(meta["descriptions"]) if "descriptions" in meta else None
    except json.JSONDecodeError as exc:
        raise AssetError(f"feature index labels unreadable: {path}; recompute with 'sfc bundle labels'") from exc
    index = FeatureIndex(hook_name, tensors, load_heldout_tokens(), window, labels, descriptions)
    _INDEX_CACHE[path] = index
    return index


def corpus_tokens_for(model, n_seqs: int = 64, seq_len: int = 64) -> torch.Tensor:
    """Held-out corpus tokens for ``model`` ``[n_seqs', ≤ seq_len]`` (long, BOS first): the shipped ones for the
    bundled model, else the same texts re-tokenized with ``model``'s tokenizer (rows too short dropped).

    Raises:
        AssetError: the held-out corpus is missing. InputError: no text is long enough for this tokenizer.
    """
    from .bundle import load_heldout_tokens
    from .model import is_bundled_model, load_model

    tokens = load_heldout_tokens()[:n_seqs]
    if is_bundled_model(model):
        return tokens[:, :seq_len].long()
    src_tok = load_model().tokenizer
    tok = model.tokenizer
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    rows = []
    for seq in tokens.tolist():
        text = src_tok.decode(seq[1:])
        ids = tok.encode(text, add_special_tokens=False)[: seq_len - 1]
        if len(ids) == seq_len - 1:
            rows.append([bos] + ids)
    if not rows:
        raise InputError("the held-out corpus is too short for this tokenizer")
    return torch.tensor(rows, dtype=torch.long)
