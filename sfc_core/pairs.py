"""Prompt pairs: reading, validating and tokenizing (clean, corrupted, answer, wrong_answer).

Terms follow ``DESIGN.md``: a **prompt pair** has a ``clean`` prompt, a
``corrupted`` prompt, the ``answer`` (correct next token after the clean
prompt) and the ``wrong_answer`` (correct next token after the corrupted
prompt). Pair files are JSON Lines in either our spelling
(``clean, corrupted, answer, wrong_answer``) or feature-circuits' spelling
(``clean_prefix, patch_prefix, clean_answer, patch_answer``); any other key is
kept in :attr:`PromptPair.meta`.

Row and line numbers in error messages are **1-based** (the first pair is
"row 1", the first line of a file is "line 1"); indices stored in
:attr:`PairBatch.skipped` are **0-based** positions in the input list.

Tokenization (:func:`tokenize_pairs`)
-------------------------------------
Every prompt is tokenized as ``[BOS] + tokenizer.encode(prompt)`` (the
tokenizer's own special tokens are never added, so a tokenizer that prepends
BOS by itself is not doubled). Answers are tokenized *without* BOS and must be
one token each (``multi_token="truncate"`` keeps the first token instead).

The engine patches activations position by position, so the clean and the
corrupted prompt of a pair must have the same token length. A pair whose
lengths differ is either skipped (``length_mismatch="skip"``, the default) or
aligned at its last position (``length_mismatch="align_last"``): the longer
prompt loses its *earliest* non-BOS tokens (those right after BOS) until both
have the same length, so the final positions, where the metric is read,
coincide token for token from the end. We chose truncation over left padding
because the engine's forward passes take no attention mask: pad tokens inside
a prompt would be attended to and change the model's behaviour silently.

Alignment policy: warn and show, never silently. Truncation drops *content*:
in ``"The key to the cabinets"`` vs ``"The keys to the cabinet"`` split into
different token counts, aligning can drop ``'The', ' key'`` from one prompt
only, so the pair then differs in more than its edit and the positions before
the edit compare different tokens. We keep the option (it is an explicit
opt-in, and it is the only way to use pairs a tokenizer splits unevenly, such
as a name of two tokens against a name of one, without re-wording them) rather
than refuse it, because refusing would leave only ``"skip"``, which already
exists; but every dropped token is named, per pair, before and after the run:
:func:`pair_report` gives each mismatched pair's ``align_drop`` (which prompt,
which tokens) whatever the option, and :func:`tokenize_pairs` puts one line
per aligned pair in :attr:`PairBatch.warnings` (which the app and the CLI
show). A skipped pair's warning says what aligning it would drop.

Rows of a batch may differ in length; they are right-padded with the pad id
(``tokenizer.pad_token_id``, else ``eos_token_id``, else 0). With a causal model
right padding never changes the logits at or before :attr:`PairBatch.last_pos`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import torch

from . import bounds, defaults
from .errors import Fix, InputError, Notice
from .jsonio import as_text, parse_json

#: Our spelling of the four fields, and feature-circuits' spelling mapped onto it.
FIELDS: tuple[str, ...] = ("clean", "corrupted", "answer", "wrong_answer")
FC_FIELDS: dict[str, str] = {
    "clean_prefix": "clean",
    "patch_prefix": "corrupted",
    "clean_answer": "answer",
    "patch_answer": "wrong_answer",
}

#: Checked before tokenizing (a megabyte prompt is refused without running the tokenizer on it): characters of
#: a prompt / an answer, bytes of a pair file, nesting depth of one line's JSON.
MAX_PROMPT_CHARS = 20_000
MAX_ANSWER_CHARS = 1_000
MAX_PAIR_FILE_BYTES = 50 * 1024 * 1024
MAX_PAIR_DEPTH = 8

MultiToken = Literal["reject", "truncate"]
LengthMismatch = Literal["skip", "align_last"]


@dataclass(frozen=True)
class PromptPair:
    """One clean/corrupted prompt pair.

    Attributes:
        clean: prompt whose correct continuation is ``answer``.
        corrupted: prompt (same template) whose correct continuation is ``wrong_answer``.
        answer: next token after ``clean`` (a string, usually with a leading space, e.g. ``" Mary"``).
        wrong_answer: next token after ``corrupted``.
        meta: any extra keys from the input (e.g. ``{"case": "BABA"}``); not used by the engine.
    """

    clean: str
    corrupted: str
    answer: str
    wrong_answer: str
    meta: dict = field(default_factory=dict, hash=False)

    def to_record(self) -> dict:
        """JSON-able dict in our spelling, ``meta`` keys merged in (our four keys win)."""
        record = {k: v for k, v in self.meta.items() if k not in FIELDS}
        record.update(clean=self.clean, corrupted=self.corrupted, answer=self.answer, wrong_answer=self.wrong_answer)
        return record


# --------------------------------------------------------------------------- reading / writing


def _pair_from_record(record: Any, where: str) -> PromptPair:
    """Validate one record (``where`` is e.g. ``"line 3"`` or ``"row 2"``) and build a :class:`PromptPair`.

    Raises:
        InputError: not an object, a key missing, a value not a string, or an empty prompt/answer.
    """
    if not isinstance(record, dict):
        raise InputError(f"{where}: expected a JSON object with keys {', '.join(FIELDS)}, got {type(record).__name__}")
    values: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    for key, value in record.items():
        key = str(key)
        if key in FIELDS:
            values[key] = value
        elif key in FC_FIELDS:
            values.setdefault(FC_FIELDS[key], value)
        else:
            meta[key] = value
    missing = [k for k in FIELDS if k not in values or values[k] is None]
    if missing:
        raise InputError(
            f"{where}: missing key(s) {', '.join(missing)} (expected {', '.join(FIELDS)} "
            f"or {', '.join(FC_FIELDS)})"
        )
    for key in FIELDS:
        if not isinstance(values[key], str):
            raise InputError(f"{where}: '{key}' must be a string, got {type(values[key]).__name__}")
    for key in ("clean", "corrupted"):
        if not values[key].strip():
            raise InputError(f"{where}: empty {key} prompt")
    for key in ("answer", "wrong_answer"):
        if values[key] == "":
            raise InputError(f"{where}: empty {key}")
    for key in FIELDS:
        limit = MAX_PROMPT_CHARS if key in ("clean", "corrupted") else MAX_ANSWER_CHARS
        if len(values[key]) > limit:
            raise InputError(f"{where}: '{key}' has {len(values[key]):,} characters; the limit is {limit:,}")
        try:
            values[key].encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate such as "\ud800": no tokenizer can read it
            raise InputError(f"{where}: '{key}' holds a character that is not valid Unicode text "
                             f"(position {exc.start})") from None
    return PromptPair(values["clean"], values["corrupted"], values["answer"], values["wrong_answer"], meta)


def read_pairs(path_or_lines: str | Path | Iterable[str]) -> list[PromptPair]:
    """Read prompt pairs from a JSON Lines file (a path) or from an iterable of lines.

    A ``str`` is a path unless it contains a newline or starts with ``{`` (then it is
    the JSONL text itself). Blank lines are skipped.

    Returns:
        The pairs in file order (at least one).

    Raises:
        InputError: the file cannot be read; a line is not valid JSON ("line 3: not valid JSON"),
            is not an object, lacks a key, or has an empty prompt/answer (all name the 1-based
            line number); or there is no pair at all ("no prompt pairs in ...").
    """
    source: str
    if isinstance(path_or_lines, (str, Path)) and not (
        isinstance(path_or_lines, str) and ("\n" in path_or_lines or path_or_lines.lstrip().startswith("{"))
    ):
        path = Path(path_or_lines)
        source = str(path)
        try:
            if path.is_file() and path.stat().st_size > MAX_PAIR_FILE_BYTES:
                raise InputError(f"pair file {path} is {path.stat().st_size / 1e6:.1f} MB; the limit is "
                                 f"{MAX_PAIR_FILE_BYTES / 1e6:.0f} MB")
            lines: Iterable[str] = as_text(path.read_bytes(), f"pair file {path}").splitlines()
        except FileNotFoundError:
            raise InputError(f"pair file not found: {path}") from None
        except OSError as exc:
            raise InputError(f"cannot read pair file {path}: {exc.strerror or exc}") from None
    elif isinstance(path_or_lines, str):
        source = "the given text"
        lines = path_or_lines.splitlines()
    else:
        source = "the given lines"
        lines = path_or_lines
    pairs: list[PromptPair] = []
    for lineno, line in enumerate(lines, start=1):
        if isinstance(line, (bytes, bytearray)):
            line = as_text(line, f"line {lineno}")
        if not isinstance(line, str):
            raise InputError(f"line {lineno}: expected text, got {type(line).__name__}")
        if not line.strip():
            continue
        record = parse_json(line, f"line {lineno}", max_bytes=MAX_PAIR_FILE_BYTES, max_depth=MAX_PAIR_DEPTH)
        pairs.append(_pair_from_record(record, f"line {lineno}"))
        if len(pairs) > bounds.BOUNDS["n"].hi:
            raise InputError(f"more than {int(bounds.BOUNDS['n'].hi):,} prompt pairs in {source}")
    if not pairs:
        raise InputError(f"no prompt pairs in {source}")
    return pairs


def pairs_from_records(records: Sequence[dict]) -> list[PromptPair]:
    """Build pairs from dicts (e.g. the app's table editor), validated like :func:`read_pairs`.

    Rows whose four fields are all empty/None (a fresh editor row) are skipped.

    Raises:
        InputError: a row lacks a key or has an empty prompt/answer (message names the 1-based
            row), or no pair is left ("no prompt pairs in the table").
    """
    pairs: list[PromptPair] = []
    for i, record in enumerate(records, start=1):
        if isinstance(record, dict):
            known = [record.get(k) for k in (*FIELDS, *FC_FIELDS)]
            if all(v is None or (isinstance(v, str) and not v.strip()) for v in known):
                continue
        pairs.append(_pair_from_record(record, f"row {i}"))
    if not pairs:
        raise InputError("no prompt pairs in the table")
    return pairs


def write_pairs(pairs: Iterable[PromptPair], path: str | Path) -> Path:
    """Write pairs as JSON Lines in our spelling (meta keys kept), creating parent folders; returns the path.

    Raises:
        OSError: the file cannot be written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for pair in pairs:
            f.write(json.dumps(pair.to_record(), ensure_ascii=False) + "\n")
    return path


# --------------------------------------------------------------------------- tokenization


def get_tokenizer(model_or_tokenizer: Any):
    """The tokenizer of a ``HookedTransformer`` (``.tokenizer``), or the argument itself.

    Raises:
        InputError: the model has no tokenizer.
    """
    tok = getattr(model_or_tokenizer, "tokenizer", model_or_tokenizer)
    if tok is None or not hasattr(tok, "encode"):
        raise InputError("the model has no tokenizer; load it with one to use prompt pairs")
    return tok


def bos_id(tokenizer) -> int:
    """Id prepended to every prompt: ``bos_token_id``, else ``eos_token_id``.

    Raises:
        InputError: the tokenizer has neither.
    """
    for name in ("bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    raise InputError("the tokenizer has no BOS or EOS token to start prompts with")


def pad_id(tokenizer) -> int:
    """Right-padding id: ``pad_token_id``, else ``eos_token_id``, else 0."""
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    return 0


def special_token_ids(tokenizer) -> list[int]:
    """Ids of the tokenizer's special tokens (BOS, EOS / document separators, padding); ``[]`` if it lists none."""
    return sorted(getattr(tokenizer, "all_special_ids", None) or [])


def special_positions(tokens: torch.Tensor, special_ids: Sequence[int]) -> torch.Tensor:
    """Bool ``[n_seq, seq_len]``: positions of ``tokens`` holding one of ``special_ids``."""
    return torch.isin(tokens.long(), torch.tensor(sorted(special_ids), dtype=torch.long))


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` with no special tokens (no BOS)."""
    return list(tokenizer.encode(text, add_special_tokens=False))


def token_strs(tokenizer, ids: Sequence[int]) -> list[str]:
    """Readable text of each token id (decoded one by one, so ``Ġ`` shows as a space)."""
    return [tokenizer.decode([int(i)]) for i in ids]


@dataclass
class PairBatch:
    """Tokenized prompt pairs, ready for batched forward passes.

    Shapes (``n`` kept pairs, ``pos`` longest kept prompt incl. BOS):

    - ``clean_tokens``: ``[n, pos]`` long — BOS first, right-padded with the pad id.
    - ``corrupted_tokens``: ``[n, pos]`` long — same layout; row ``i`` has the same length as the clean row.
    - ``last_pos``: ``[n]`` long — index of row ``i``'s last real token (the metric position), equal for
      clean and corrupted.
    - ``answer_ids``, ``wrong_ids``: ``[n]`` long — token id of ``answer`` / ``wrong_answer``.
    - ``valid_mask``: ``[n, pos]`` bool — True on real, non-BOS tokens (False on BOS and padding).
    - ``pairs``: the kept :class:`PromptPair` objects, row-aligned with the tensors.
    - ``skipped``: ``(index in the input list (0-based), reason)`` for each dropped pair.
    - ``warnings``: one-line messages for the user (truncated answers, aligned or skipped pairs), as
      :class:`~sfc_core.errors.Notice` strings (a skipped length mismatch's carries its fix).
    """

    clean_tokens: torch.Tensor
    corrupted_tokens: torch.Tensor
    last_pos: torch.Tensor
    answer_ids: torch.Tensor
    wrong_ids: torch.Tensor
    valid_mask: torch.Tensor
    pairs: list[PromptPair]
    skipped: list[tuple[int, str]] = field(default_factory=list)
    warnings: list[Notice] = field(default_factory=list)

    @property
    def n(self) -> int:
        """Number of kept pairs (rows of the tensors)."""
        return int(self.clean_tokens.shape[0])

    @property
    def pos(self) -> int:
        """Padded sequence length (columns of the token tensors)."""
        return int(self.clean_tokens.shape[1])

    def to(self, device: str | torch.device) -> "PairBatch":
        """Copy with every tensor (same shapes, ``[n, pos]`` / ``[n]``) on ``device``."""
        return PairBatch(
            self.clean_tokens.to(device),
            self.corrupted_tokens.to(device),
            self.last_pos.to(device),
            self.answer_ids.to(device),
            self.wrong_ids.to(device),
            self.valid_mask.to(device),
            list(self.pairs),
            list(self.skipped),
            list(self.warnings),
        )

    def subset(self, index: Sequence[int] | slice) -> "PairBatch":
        """Rows ``index`` (list of ints or a slice) as a new batch: tokens and mask ``[len(index), pos']``
        with ``pos'`` the longest kept row (padding trimmed), ``last_pos`` / ids ``[len(index)]``.
        ``skipped`` and ``warnings`` are copied unchanged."""
        rows = list(range(self.n))[index] if isinstance(index, slice) else [int(i) for i in index]
        idx = torch.tensor(rows, dtype=torch.long, device=self.clean_tokens.device)
        last = self.last_pos[idx]
        width = int(last.max().item()) + 1 if rows else 1
        return PairBatch(
            self.clean_tokens[idx, :width],
            self.corrupted_tokens[idx, :width],
            last,
            self.answer_ids[idx],
            self.wrong_ids[idx],
            self.valid_mask[idx, :width],
            [self.pairs[i] for i in rows],
            list(self.skipped),
            list(self.warnings),
        )


def _quote(s: str) -> str:
    return repr(s)


def _answer_problem(tokenizer, text: str, label: str) -> tuple[list[int], str | None]:
    ids = encode(tokenizer, text)
    if not ids:
        return ids, f"{label} {_quote(text)} gives no tokens"
    return ids, None


def _tokens_text(tokens: Sequence[str]) -> str:
    """``'The', ' key'``: token strings quoted and comma-separated (how messages name tokens)."""
    return ", ".join(_quote(t) for t in tokens)


def align_last(clean_ids: Sequence[int], corrupted_ids: Sequence[int]) -> tuple[list[int], list[int], str | None, list[int]]:
    """Align a pair's prompts at their last token (the ``length_mismatch="align_last"`` rule, owned here).

    Args:
        clean_ids, corrupted_ids: token ids of the two prompts, BOS not included (lengths ``a`` and ``b``).

    Returns:
        ``(clean_ids, corrupted_ids, which, dropped)``: both id lists of length ``min(a, b)``, ``which`` the prompt
        that lost tokens (``"clean"``, ``"corrupted"``, or ``None`` when the lengths were equal) and ``dropped``
        its first ``|a − b|`` ids, the ones removed.
    """
    clean_ids, corrupted_ids = list(clean_ids), list(corrupted_ids)
    drop = abs(len(clean_ids) - len(corrupted_ids))
    if drop == 0:
        return clean_ids, corrupted_ids, None, []
    if len(clean_ids) > len(corrupted_ids):
        return clean_ids[drop:], corrupted_ids, "clean", clean_ids[:drop]
    return clean_ids, corrupted_ids[drop:], "corrupted", corrupted_ids[:drop]


def _drop_phrase(which: str, dropped: Sequence[str]) -> str:
    """``"the corrupted prompt loses its first 2 tokens 'The', ' key' (the clean prompt keeps them)"``."""
    other = "clean" if which == "corrupted" else "corrupted"
    n = len(dropped)
    what = "token" if n == 1 else f"{n} tokens"
    return (f"the {which} prompt loses its first {what} {_tokens_text(dropped)} "
            f"(the {other} prompt keeps {'it' if n == 1 else 'them'})")


def check_pair_option(option: str, value: str) -> str:
    """``value`` itself once it is a valid setting of ``option`` (``"multi_token"`` or ``"length_mismatch"``).

    Raises:
        InputError: another value (named plainly, no keyword syntax: the CLI passes its flags' values in).
    """
    if option == "multi_token" and value not in ("reject", "truncate"):
        raise InputError(f"answers longer than one token can be rejected ('reject') or cut to their first token "
                         f"('truncate'), not {value!r}")
    if option == "length_mismatch" and value not in ("skip", "align_last"):
        raise InputError(f"pairs whose prompts differ in token length can be skipped ('skip') or aligned at the "
                         f"last token ('align_last'), not {value!r}")
    return value


def tokenize_pairs(
    model: Any,
    pairs: Sequence[PromptPair],
    multi_token: MultiToken = "reject",
    length_mismatch: LengthMismatch = "skip",
    max_tokens: int = defaults.MAX_PROMPT_TOKENS,
) -> PairBatch:
    """Tokenize prompt pairs into a :class:`PairBatch`.

    Args:
        model: a ``HookedTransformer`` (its ``.tokenizer`` is used) or a tokenizer.
        pairs: the pairs, in order.
        multi_token: what to do with an answer of several tokens: ``"reject"`` raises an
            :class:`InputError` listing every offending row; ``"truncate"`` keeps its first token
            and adds a warning.
        length_mismatch: what to do with a pair whose clean and corrupted prompts have different
            token lengths: ``"skip"`` drops it (listed in ``skipped`` and ``warnings``);
            ``"align_last"`` drops the earliest non-BOS tokens of the longer prompt until the
            lengths match (so the last positions line up, :func:`align_last`) and names the prompt and the
            dropped tokens in a warning (see the module doc: warn and show, never silently).
        max_tokens: longest prompt accepted, in tokens, BOS not counted.

    Pairs whose answer and wrong answer map to the same token id are skipped (their logit
    difference is identically 0).

    Returns:
        A :class:`PairBatch` with the kept pairs (see its docstring for shapes). Its ``warnings`` are
        :class:`~sfc_core.errors.Notice` strings; a skipped length mismatch's carries the fix
        ``("length_mismatch", "align_last")``.

    Raises:
        InputError: no pairs; unknown option; an empty prompt or answer; a prompt longer than
            ``max_tokens`` (names the row); multi-token answers with ``multi_token="reject"``
            (names the rows; ``fix=("multi_token", "truncate")``); every pair was skipped ("no valid
            pairs: ..."; ``fix=("length_mismatch", "align_last")`` when a length mismatch was among the
            reasons); or the model has no tokenizer, or its tokenizer neither a BOS nor an EOS token.
    """
    check_pair_option("multi_token", multi_token)
    check_pair_option("length_mismatch", length_mismatch)
    pairs = list(pairs)
    if not pairs:
        raise InputError("no prompt pairs given")
    tok = get_tokenizer(model)
    bos = bos_id(tok)
    pad = pad_id(tok)

    warnings: list[Notice] = []
    skipped: list[tuple[int, str]] = []
    multi: list[tuple[int, str, int]] = []  # (row, text, n_tokens)
    rows: list[tuple[int, PromptPair, list[int], list[int], int, int]] = []

    for i, pair in enumerate(pairs):
        row = i + 1
        if not isinstance(pair, PromptPair):
            raise InputError(f"row {row}: expected a PromptPair, got {type(pair).__name__}")
        prompt_ids: dict[str, list[int]] = {}
        for label, text in (("clean", pair.clean), ("corrupted", pair.corrupted)):
            if not text or not text.strip():
                raise InputError(f"row {row}: empty {label} prompt")
            ids = encode(tok, text)
            if not ids:
                raise InputError(f"row {row}: {label} prompt {_quote(text)} gives no tokens")
            if len(ids) > max_tokens:
                raise InputError(
                    f"row {row}: {label} prompt has {len(ids)} tokens, more than the limit of {max_tokens}"
                )
            prompt_ids[label] = ids
        answer_tok: dict[str, int] = {}
        for label, text in (("answer", pair.answer), ("wrong_answer", pair.wrong_answer)):
            if not text:
                raise InputError(f"row {row}: empty {label}")
            ids, problem = _answer_problem(tok, text, label)
            if problem:
                raise InputError(f"row {row}: {problem}")
            if len(ids) > 1:
                multi.append((row, text, len(ids)))
            answer_tok[label] = ids[0]
        rows.append((i, pair, prompt_ids["clean"], prompt_ids["corrupted"], answer_tok["answer"], answer_tok["wrong_answer"]))

    if multi:
        bad_rows = sorted({r for r, _, _ in multi})
        rows_txt = ("rows " if len(bad_rows) > 1 else "row ") + ", ".join(str(r) for r in bad_rows)
        detail = "; ".join(f"{_quote(text)} -> {k} tokens" for _, text, k in multi[:5])
        if len(multi) > 5:
            detail += f"; ... ({len(multi) - 5} more)"
        if multi_token == "reject":
            raise InputError(
                f"multi-token answers in {rows_txt}: {detail}; the metric reads one token per answer, so give "
                "one-token answers or use each answer's first token",
                fix=Fix("multi_token", "truncate"),
            )
        for r, text, k in multi:
            first = token_strs(tok, encode(tok, text)[:1])[0]
            warnings.append(Notice(f"row {r}: answer {_quote(text)} has {k} tokens; using its first token {_quote(first)}"))

    kept: list[tuple[PromptPair, list[int], list[int], int, int]] = []
    n_mismatched = 0
    for i, pair, clean_ids, corr_ids, ans, wrong in rows:
        row = i + 1
        if ans == wrong:
            reason = f"answer and wrong answer are the same token {_quote(token_strs(tok, [ans])[0])}"
            skipped.append((i, reason))
            warnings.append(Notice(f"row {row} skipped: {reason}"))
            continue
        if len(clean_ids) != len(corr_ids):
            aligned_clean, aligned_corr, which, dropped_ids = align_last(clean_ids, corr_ids)
            dropped = token_strs(tok, dropped_ids)
            if length_mismatch == "skip":
                n_mismatched += 1
                reason = (
                    f"clean prompt has {len(clean_ids)} tokens, corrupted has {len(corr_ids)}; patching needs "
                    f"equal lengths (aligning at the last token would drop the {which} prompt's first "
                    f"{len(dropped)}: {_tokens_text(dropped)})"
                )
                skipped.append((i, reason))
                warnings.append(Notice(f"row {row} skipped: {reason}", fix=Fix("length_mismatch", "align_last")))
                continue
            clean_ids, corr_ids = aligned_clean, aligned_corr
            warnings.append(Notice(f"row {row}: aligned at the last token: {_drop_phrase(which, dropped)}"))
        kept.append((pair, clean_ids, corr_ids, ans, wrong))

    if not kept:
        reasons = "; ".join(f"row {i + 1}: {r}" for i, r in skipped[:3])
        if len(skipped) > 3:
            reasons += f"; ... ({len(skipped) - 3} more)"
        # Aligning would keep the length-mismatched pairs: say so as the fix (nothing keeps same-token pairs).
        raise InputError(f"no valid pairs: {reasons}",
                         fix=Fix("length_mismatch", "align_last") if n_mismatched else None)

    n = len(kept)
    width = 1 + max(len(c) for _, c, _, _, _ in kept)
    clean_t = torch.full((n, width), pad, dtype=torch.long)
    corr_t = torch.full((n, width), pad, dtype=torch.long)
    valid = torch.zeros((n, width), dtype=torch.bool)
    last = torch.empty(n, dtype=torch.long)
    for r, (_, c, k, _, _) in enumerate(kept):
        length = len(c)
        clean_t[r, 0] = bos
        corr_t[r, 0] = bos
        clean_t[r, 1 : 1 + length] = torch.tensor(c, dtype=torch.long)
        corr_t[r, 1 : 1 + length] = torch.tensor(k, dtype=torch.long)
        valid[r, 1 : 1 + length] = True
        last[r] = length
    return PairBatch(
        clean_tokens=clean_t,
        corrupted_tokens=corr_t,
        last_pos=last,
        answer_ids=torch.tensor([a for _, _, _, a, _ in kept], dtype=torch.long),
        wrong_ids=torch.tensor([w for _, _, _, _, w in kept], dtype=torch.long),
        valid_mask=valid,
        pairs=[p for p, _, _, _, _ in kept],
        skipped=skipped,
        warnings=warnings,
    )


def pair_report(
    model: Any, pairs: Sequence[PromptPair], max_tokens: int = defaults.MAX_PROMPT_TOKENS
) -> list[dict]:
    """Per-pair tokenization report for the app; never raises on bad pairs.

    Returns:
        One dict per input pair: ``row`` (1-based), ``index`` (0-based), ``clean_tokens`` and
        ``corrupted_tokens`` (token strings, BOS not shown), ``answer_tokens``, ``wrong_tokens``
        (token strings), ``valid`` (True if :func:`tokenize_pairs` with the defaults would keep the
        pair), ``problem`` (one line, or None) and ``align_drop``: for a pair whose prompts differ in
        token length, what aligning at the last token (:func:`align_last`) would drop,
        ``{"prompt": "clean" | "corrupted", "tokens": [token strings]}``, whatever option the caller
        uses (so the cost is visible before choosing it); else None. Problems: empty prompt/answer,
        prompt over ``max_tokens``, multi-token answer, identical answer tokens, length mismatch.

    Raises:
        InputError: the model has no tokenizer (the only error; bad pairs are reported, not raised).
    """
    tok = get_tokenizer(model)
    report: list[dict] = []
    for i, pair in enumerate(pairs):
        entry: dict[str, Any] = {
            "row": i + 1,
            "index": i,
            "clean_tokens": [],
            "corrupted_tokens": [],
            "answer_tokens": [],
            "wrong_tokens": [],
            "valid": False,
            "problem": None,
            "align_drop": None,
        }
        problems: list[str] = []
        try:
            texts = {
                "clean": getattr(pair, "clean", None),
                "corrupted": getattr(pair, "corrupted", None),
                "answer": getattr(pair, "answer", None),
                "wrong_answer": getattr(pair, "wrong_answer", None),
            }
            ids: dict[str, list[int]] = {}
            for key, text in texts.items():
                if not isinstance(text, str) or (not text.strip() if key in ("clean", "corrupted") else not text):
                    problems.append(f"empty {key}" + (" prompt" if key in ("clean", "corrupted") else ""))
                    ids[key] = []
                    continue
                ids[key] = encode(tok, text)
            entry["clean_tokens"] = token_strs(tok, ids["clean"])
            entry["corrupted_tokens"] = token_strs(tok, ids["corrupted"])
            entry["answer_tokens"] = token_strs(tok, ids["answer"])
            entry["wrong_tokens"] = token_strs(tok, ids["wrong_answer"])
            for key in ("clean", "corrupted"):
                if len(ids[key]) > max_tokens:
                    problems.append(f"{key} prompt has {len(ids[key])} tokens (limit {max_tokens})")
            for key in ("answer", "wrong_answer"):
                if len(ids[key]) > 1:
                    problems.append(f"{key} {texts[key]!r} is {len(ids[key])} tokens")
            if ids["answer"] and ids["wrong_answer"] and ids["answer"][0] == ids["wrong_answer"][0]:
                problems.append("answer and wrong answer are the same token")
            if ids["clean"] and ids["corrupted"] and len(ids["clean"]) != len(ids["corrupted"]):
                problems.append(
                    f"length mismatch: clean {len(ids['clean'])} tokens, corrupted {len(ids['corrupted'])}"
                )
                _, _, which, dropped = align_last(ids["clean"], ids["corrupted"])
                entry["align_drop"] = {"prompt": which, "tokens": token_strs(tok, dropped)}
        except Exception as exc:  # a report must never raise
            problems.append(f"cannot tokenize: {exc}")
        entry["problem"] = "; ".join(problems) if problems else None
        entry["valid"] = not problems
        report.append(entry)
    return report
