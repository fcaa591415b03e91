"""Automatic feature labels: a short node label and a one-to-two-line description of every latent of a
feature index, computed offline from its index entry alone (no model run, no network, no language model).

Inputs per latent (:mod:`sfc_core.feature_index` tensors): its up to ``k`` top activating contexts
(``top_seq`` / ``top_pos`` into the held-out tokens, strongest first), their ``top_act``, its ``density`` and
the tokens its decoder direction promotes (``logit_top_ids``, through the final norm). Of each context two
tokens are read: the **fire token** (where the latent peaks) and the **previous token** (just before it).

Short label (≤ :data:`MAX_LABEL` characters, for a graph node), first rule that applies:

1. dead (no context): ``""``;
2. flagged ``positional`` (:meth:`FeatureIndex.degenerate_flags`): ``position P`` (the commonest peak position);
3. **fires on** and **after**: tokens are grouped by their text stripped of spaces and lower-cased (``' The'``,
   ``'the'`` are one group, shown as its commonest form); if the most frequent 1–3 groups, each seen at least
   twice (once if there are fewer than 4 contexts), cover ≥ :data:`COVER` of the contexts, they are listed:
   ``' Mary'|' John'``. The same rule on the previous tokens gives ``after ' the'``. Both hold:
   ``'.' after ' self'`` if it fits (else the fire tokens alone); one holds: that one;
4. **kind**: if ≥ :data:`KIND_COVER` of the fire tokens are of one kind (:data:`KINDS`: numbers, punctuation,
   line breaks / indentation, capitalised words, identifier-like code words, word pieces), the kind's name;
5. **weak**: the rule of 3 with :data:`WEAK_COVER` instead of :data:`COVER`, marked ``~``: ``~' water'``;
6. otherwise **promotes**: ``→ ' of'|' in'`` (its top promoted tokens).

Tokens are shown quoted with their leading space, newlines as ``\\n``; a list is cut to what fits.

Description (two lines, for hover / the feature panel)::

    Fires on ' Mary' (7/20), ' John' (5/20), ' Anna' (2/20); before it: ' said' (4/20), ' and' (3/20).
    Promotes ' she', ' her', ' Mary'. Active on 0.31 % of held-out tokens, max 12.3. ⚠ positional: ...

Storage: in each index file's safetensors metadata, ``labels`` and ``descriptions`` (JSON lists of
``d_sae`` strings) and ``labels_version``; written at index build time (:func:`label_metadata`) and
recomputed alone, cheaply, from existing index files by :func:`relabel_index_files` (``sfc bundle labels``).
:meth:`~sfc_core.feature_index.FeatureIndex.label` / :meth:`~sfc_core.feature_index.FeatureIndex.description`
read them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch

LABELS_VERSION = "1"
#: Longest short label (characters).
MAX_LABEL = 24
#: Fraction of the contexts the listed fire (or previous) tokens must cover.
COVER = 0.5
#: Fraction of the contexts the fire tokens of a weak label (``~``) must cover.
WEAK_COVER = 0.25
#: Fraction of the fire tokens one kind must cover.
KIND_COVER = 0.7
#: Kinds of fire token (rule 5), in the order they are tried, with their label.
KINDS = {
    "number": "numbers",
    "punct": "punctuation",
    "space": "line breaks/indent",
    "capital": "Capitalised words",
    "code": "code identifiers",
    "piece": "word pieces",
}


def token_kind(text: str) -> str | None:
    """Kind of one token's text (a :data:`KINDS` key) or ``None``: ``number`` (digits, maybe with ``.,``),
    ``punct`` (no letter, digit or space), ``space`` (only whitespace), ``capital`` (a space then a capitalised
    word), ``code`` (contains ``_`` or an inner capital, e.g. ``camelCase``), ``piece`` (letters with no leading
    space: the middle or end of a word)."""
    core = text.strip()
    if not core:
        return "space"
    if core.replace(".", "").replace(",", "").isdigit():
        return "number"
    if not any(c.isalnum() for c in core):
        return "punct"
    if "_" in core or (core[0].islower() and any(c.isupper() for c in core[1:])):
        return "code"
    if text[0] == " " and core[0].isupper() and core.isalpha():
        return "capital"
    if text[0] != " " and core.isalpha():
        return "piece"
    return None


def show(text: str, limit: int = MAX_LABEL) -> str:
    """A token's text quoted for display (leading space kept, newline as ``\\n``, tab as ``\\t``), cut with ``…``
    to at most ``limit`` characters; :data:`SPECIAL` unquoted."""
    if text == SPECIAL:
        return text
    body = text.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    out = f"'{body}'"
    return out if len(out) <= limit else out[:max(limit - 2, 1)] + "…'"


def _groups(texts: list[str]) -> list[tuple[str, int]]:
    """``[(display form, count)]`` of token texts grouped by stripped lower-case text, commonest first (ties: the
    group met first, i.e. in the stronger context); empty texts are left out."""
    by_key: dict[str, list[str]] = {}
    for t in texts:
        if not t:  # no token (a peak at position 0)
            continue
        by_key.setdefault(t.strip().lower() or t, []).append(t)
    items = [(Counter(forms).most_common(1)[0][0], len(forms)) for forms in by_key.values()]
    return sorted(items, key=lambda it: -it[1])  # stable: first met first among equals


def _covering(groups: list[tuple[str, int]], n: int, cover: float = COVER) -> list[tuple[str, int]] | None:
    """The fewest (1–3) commonest groups covering ≥ ``cover`` of ``n`` contexts, each seen twice (once if n < 4)."""
    need = 2 if n >= 4 else 1
    total = 0
    for m, (_, count) in enumerate(groups[:3], start=1):
        if count < need:
            return None
        total += count
        if total >= cover * n:
            return groups[:m]
    return None


def _join(texts: list[str], prefix: str = "") -> str:
    """``prefix`` + quoted texts joined by ``|``, as many as fit :data:`MAX_LABEL` (the first always, cut)."""
    out = prefix + show(texts[0], MAX_LABEL - len(prefix))
    for t in texts[1:]:
        nxt = out + "|" + show(t)
        if len(nxt) > MAX_LABEL:
            break
        out = nxt
    return out


def _counts(groups: list[tuple[str, int]], n: int, m: int = 3) -> str:
    return ", ".join(f"{show(t, 30)} ({c}/{n})" for t, c in groups[:m])


def label_latent(fire: list[str], prev: list[str], positions: list[int], promoted: list[str],
                 flags: Sequence[str] = ()) -> str:
    """The short label of one latent (rules in the module doc).

    Args:
        fire: text of the token at the peak of each top context (strongest first; empty for a dead latent).
        prev: text of the token before each peak (same order; ``""`` at position 0).
        positions: position of each peak in its sequence.
        promoted: texts of its most promoted tokens (strongest first).
        flags: its degenerate flags (:meth:`~sfc_core.feature_index.FeatureIndex.flags`).
    """
    n = len(fire)
    if n == 0:
        return ""
    if "positional" in flags and positions:
        return f"position {Counter(positions).most_common(1)[0][0]}"
    top, before = _covering(_groups(fire), n), _covering(_groups(prev), n)
    if top and before:
        both = "|".join(show(t) for t, _ in top) + " after " + "|".join(show(t) for t, _ in before)
        if len(both) <= MAX_LABEL:
            return both
    if top:
        return _join([t for t, _ in top])
    if before:
        return _join([t for t, _ in before], "after ")
    kinds = Counter(token_kind(t) for t in fire)
    for kind, name in KINDS.items():
        if kinds[kind] >= KIND_COVER * n:
            return name
    weak = _covering(_groups(fire), n, WEAK_COVER)
    if weak:
        return _join([t for t, _ in weak], "~")
    return _join(promoted, "→ ") if promoted else _join([t for t, _ in _groups(fire)], "~")


def describe_latent(fire: list[str], prev: list[str], promoted: list[str], density: float, top_act: float,
                    flags: Sequence[str] = ()) -> str:
    """The two-line description of one latent: fire tokens and previous tokens with counts out of its top
    contexts; promoted tokens, density (percent of held-out tokens) and top activation; its flags."""
    from .feature_index import FLAG_TEXT

    n = len(fire)
    if n == 0:
        return "Never active on the held-out corpus (dead latent)."
    line1 = f"Fires on {_counts(_groups(fire), n)}; before it: {_counts(_groups(prev), n, 2)}."
    line2 = (f"Promotes {', '.join(show(t, 30) for t in promoted[:3])}. " if promoted else "") + \
        f"Active on {100 * density:.2g} % of held-out tokens, max {top_act:.3g}."
    for flag in flags:
        line2 += f" ⚠ {flag}: {FLAG_TEXT.get(flag, flag)}."
    return line1 + "\n" + line2


#: How special tokens (BOS, the document separator) are shown.
SPECIAL = "⟨BOS⟩"


def decoded_vocab(tokenizer) -> list[str]:
    """Text of every token id of ``tokenizer`` decoded alone (``[d_vocab]`` strings); special tokens (BOS,
    document separators) as :data:`SPECIAL`."""
    special = set(getattr(tokenizer, "all_special_ids", None) or [])
    return [SPECIAL if i in special else tokenizer.decode([i]) for i in range(len(tokenizer))]


def compute_labels(tensors: dict[str, torch.Tensor], tokens: torch.Tensor, vocab: Sequence[str],
                   flags: dict[int, list[str]] | None = None, n_promoted: int = 3) -> tuple[list[str], list[str]]:
    """Short labels and descriptions of every latent of one index.

    Args:
        tensors: index tensors (module doc of :mod:`sfc_core.feature_index`): ``top_seq`` / ``top_pos``
            ``[d_sae, k]``, ``top_act`` ``[d_sae, k]``, ``density`` ``[d_sae]``, ``logit_top_ids`` ``[d_sae, ≥1]``
            (optional).
        tokens: the held-out tokens ``[n_seq, seq_len]`` the index points into.
        vocab: text of each token id (:func:`decoded_vocab`).
        flags: ``{feature: [flag]}`` (:meth:`~sfc_core.feature_index.FeatureIndex.degenerate_flags`).

    Returns:
        ``(labels, descriptions)``, ``d_sae`` strings each.

    Raises:
        IndexError: a context or promoted token outside ``tokens`` / ``vocab``.
    """
    flags = flags or {}
    seqs, poss = tensors["top_seq"].long(), tensors["top_pos"].long()
    top_act, density = tensors["top_act"].float(), tensors["density"].float()
    promoted_ids = tensors.get("logit_top_ids")
    labels, descriptions = [], []
    for f in range(seqs.shape[0]):
        keep = seqs[f] >= 0
        s, p = seqs[f][keep].tolist(), poss[f][keep].tolist()
        fire = [vocab[int(tokens[a, b])] for a, b in zip(s, p)]
        prev = [vocab[int(tokens[a, b - 1])] if b > 0 else "" for a, b in zip(s, p)]
        promoted = [vocab[i] for i in promoted_ids[f, :n_promoted].tolist()] if promoted_ids is not None else []
        fl = flags.get(f, [])
        labels.append(label_latent(fire, prev, p, promoted, fl))
        descriptions.append(describe_latent(fire, prev, promoted, float(density[f]), float(top_act[f, 0]), fl))
    return labels, descriptions


def label_metadata(tensors: dict[str, torch.Tensor], tokens: torch.Tensor, tokenizer,
                   window: tuple[int, int] = (10, 4), vocab: Sequence[str] | None = None) -> dict[str, str]:
    """Safetensors metadata entries holding the labels of one index: ``{"labels": JSON list, "descriptions":
    JSON list, "labels_version"}`` (flags computed from ``tensors`` by the shipped rules).

    Raises:
        IndexError: a context outside ``tokens``.
    """
    from .feature_index import FeatureIndex

    flags = FeatureIndex("", tensors, tokens, window).degenerate_flags()
    labels, descriptions = compute_labels(tensors, tokens, vocab or decoded_vocab(tokenizer), flags)
    return {"labels": json.dumps(labels, ensure_ascii=False),
            "descriptions": json.dumps(descriptions, ensure_ascii=False), "labels_version": LABELS_VERSION}


def relabel_index_files(root: Path | None = None, tokenizer=None, tokens: torch.Tensor | None = None) -> list[Path]:
    """Recompute the labels of every index file under ``root`` (default: the shipped folder) from the files
    themselves and rewrite them in place (tensors unchanged); a few seconds per file.

    Args:
        tokenizer: the bundled model's (loaded with the model if ``None``).
        tokens: held-out tokens (default: the shipped ones).

    Returns:
        The files rewritten.

    Raises:
        AssetError: an index file or the held-out corpus is missing or unreadable.
    """
    from safetensors import safe_open

    from . import defaults
    from .bundle import load_heldout_tokens
    from .errors import AssetError
    from .feature_index import _INDEX_CACHE, save_index_file

    root = root or defaults.FEATURE_INDEX_DIR
    paths = sorted(root.glob("*.safetensors"))
    if not paths:
        raise AssetError(f"no feature index files under {root}; build them with 'sfc bundle build --index-only'")
    if tokenizer is None:
        from .model import load_model

        tokenizer = load_model().tokenizer
    tokens = load_heldout_tokens() if tokens is None else tokens
    vocab = decoded_vocab(tokenizer)
    for path in paths:
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:
            raise AssetError(f"feature index unreadable: {path}") from exc
        window = (int(meta.get("window_before", 10)), int(meta.get("window_after", 4)))
        meta.update(label_metadata(tensors, tokens, tokenizer, window, vocab))
        hook = meta.pop("hook_name", "")
        for key in ("window_before", "window_after"):
            meta.pop(key, None)
        save_index_file(tensors, path, hook, window, meta)
        _INDEX_CACHE.pop(path, None)
    return paths
