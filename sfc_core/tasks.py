"""Built-in tasks: template-generated prompt pairs, deterministic from a seed.

Every generator draws candidates from a seeded ``random.Random`` and keeps only pairs that the
loaded tokenizer can patch cleanly: ``answer`` and ``wrong_answer`` are single, distinct tokens and
the clean and corrupted prompts have the same token length (so no pair of a built-in task is ever
skipped or truncated by :func:`~sfc_core.pairs.tokenize_pairs`). Candidates are generated until ``n``
pairs are kept; a repeated (clean, corrupted) prompt is dropped.

Every pair records ``meta["template"]``, the index of the template it filled (``IOI_TEMPLATES``,
``GT_TEMPLATES``, ``PRONOUN_TEMPLATES``; ``sva``: 0 "The {noun}", 1 "The {adj} {noun}"; tasks with a single
template: 0), so per-position means and position-resolved nodes align positions by template role
(:mod:`sfc_core.alignment`).

Tasks (``wrong_answer`` is always the correct continuation of the corrupted prompt):

- ``ioi`` — indirect object identification, ABBA and BABA templates. Clean "When Mary and John went to
  the store, John gave a drink to" → " Mary"; corrupted flips the subject's second mention to the
  other name ("…, Mary gave a drink to" → " John"), so the correct name swaps.
- ``sva`` — subject–verb agreement: "The author" → " is" / corrupted "The authors" → " are" (also
  was/were, has/have); half the pairs have a plural clean subject.
- ``sva_pp`` — agreement across a prepositional phrase: "The author near the doctors" → " is" /
  "The authors near the doctors" → " are" (the attractor's number is random).
- ``induction`` — a random sequence of word tokens, then a repeat of its beginning: the answer is the
  token that followed in the first occurrence. Corrupted: that token is replaced (in the first
  occurrence only) by another word, which becomes ``wrong_answer``. Built at token level; prompts whose
  decoded text does not re-tokenize to the same ids are dropped.
- ``dict_key`` — Python dictionary lookup with two worked examples (a missing key → ``KeyError``, a
  present key → its value): the answer is the looked-up value (" red"); the corrupted prompt looks
  up a missing key, answer " KeyError".
- ``list_index`` — the same for a list index in range (the element) vs. out of range (" IndexError").
- ``greater_than`` — "The war lasted from the year 1752 to the year 17" → the next token is the
  tens digit of the end year (digits are single tokens for this tokenizer). ``answer`` is the start
  year's tens digit ("5": a later year in the same decade; the start's ones digit is at most 7 so such
  a year exists) and ``wrong_answer`` the digit below ("4": necessarily an earlier, impossible year).
  Corrupted: the start year's tens digit is lowered by one ("1742"), which makes "4" the same-decade
  digit. In the corrupted run "5" stays possible too, so the corrupted logit difference is only
  mildly negative — like the original greater-than task's "01" corruption, it removes the constraint
  rather than reversing it.
- ``gendered_pronoun`` — "Yesterday, John went to the store because" → " he" / corrupted with a
  female name → " she" (half the pairs start from a female name).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .errors import InputError
from .pairs import PromptPair, encode, get_tokenizer, special_token_ids, tokenize_pairs

Generator = Callable[[Any, int, int], "list[PromptPair]"]

#: Pairs per task when ``n`` is not given.
DEFAULT_N = 64
#: Candidate draws allowed per requested pair before a generator gives up.
_ATTEMPTS_PER_PAIR = 60


@dataclass(frozen=True)
class TaskSpec:
    """A built-in task.

    Attributes:
        name: registry key (``"ioi"``).
        description: one line for the UI / ``sfc tasks``.
        generator: ``(tokenizer or model, n, seed) -> list[PromptPair]`` (exactly ``n`` pairs).
        default_n: pairs returned when ``n`` is not given.
    """

    name: str
    description: str
    generator: Generator
    default_n: int = DEFAULT_N


# --------------------------------------------------------------------------- filtering helpers


def pair_is_clean(tokenizer, pair: PromptPair) -> bool:
    """True if both answers are single distinct tokens and both prompts have the same token length."""
    a, w = encode(tokenizer, pair.answer), encode(tokenizer, pair.wrong_answer)
    if len(a) != 1 or len(w) != 1 or a == w:
        return False
    return len(encode(tokenizer, pair.clean)) == len(encode(tokenizer, pair.corrupted))


def _single_token_words(tokenizer, words: list[str], prefix: str = " ") -> list[str]:
    """The words of ``words`` that are one token after ``prefix`` (order kept)."""
    return [w for w in words if len(encode(tokenizer, prefix + w)) == 1]


def _collect(
    tokenizer, n: int, seed: int, draw: Callable[[random.Random], PromptPair | None], task: str
) -> list[PromptPair]:
    """Call ``draw(rng)`` until ``n`` valid pairs with distinct (clean, corrupted) prompts are kept.

    Raises:
        InputError: ``n < 1``, or not enough valid pairs after ``n * 60`` draws.
    """
    if not isinstance(n, int) or n < 1:
        raise InputError(f"n must be a positive integer, got {n!r}")
    rng = random.Random(f"{task}:{seed}")
    out: list[PromptPair] = []
    seen: set[tuple[str, str]] = set()
    for _ in range(max(n * _ATTEMPTS_PER_PAIR, 500)):
        pair = draw(rng)
        if pair is None:
            continue
        key = (pair.clean, pair.corrupted)
        if key in seen or not pair_is_clean(tokenizer, pair):
            continue
        seen.add(key)
        out.append(pair)
        if len(out) == n:
            return out
    raise InputError(
        f"task '{task}' could only make {len(out)} valid pairs for this tokenizer (asked for {n}); ask for fewer"
    )


def _pool(tokenizer, words: list[str], need: int, what: str, prefix: str = " ") -> list[str]:
    pool = _single_token_words(tokenizer, words, prefix)
    if len(pool) < need:
        raise InputError(f"this tokenizer has too few single-token {what} for the task ({len(pool)} < {need})")
    return pool


# --------------------------------------------------------------------------- word lists

MALE_NAMES = (
    "John Mark James Robert Michael William David Richard Joseph Thomas Charles Daniel Matthew Anthony "
    "Paul Steven Andrew Kevin Brian George Edward Peter Tom Jack Sam Ben Dan Tim Max Henry Frank Jason"
).split()
FEMALE_NAMES = (
    "Mary Patricia Jennifer Linda Elizabeth Barbara Susan Jessica Sarah Karen Lisa Nancy Betty Sandra "
    "Ashley Emily Michelle Laura Anna Kate Alice Rose Emma Lucy Amy Jane Helen Ruth Julia Grace Sophie"
).split()
PLACES = "store garden restaurant school hospital office station park market library beach house".split()
OBJECTS = "drink book ring bone snack basketball computer necklace letter bottle".split()

IOI_TEMPLATES = (
    "When{A} and{B} went to the {place},{S} gave a {obj} to",
    "After{A} and{B} went to the {place},{S} gave a {obj} to",
    "While{A} and{B} were working at the {place},{S} gave a {obj} to",
    "Then,{A} and{B} went to the {place}.{S} gave a {obj} to",
    "When{A} and{B} got a {obj} at the {place},{S} decided to give it to",
    "Friends{A} and{B} found a {obj} at the {place}.{S} gave it to",
)

SVA_NOUNS = (
    "author doctor teacher farmer pilot senator manager officer customer student lawyer painter dancer "
    "singer writer guard driver nurse engineer artist athlete baker banker chef clerk friend guest judge "
    "minister player professor scientist soldier surgeon worker"
).split()
SVA_VERBS = ((" is", " are"), (" was", " were"), (" has", " have"))
SVA_ADJECTIVES = "old young new tall famous local".split()
PREPOSITIONS = ("near", "behind", "beside", "with", "next to", "for", "from")

INDUCTION_LEN = 10
_WORD_TOKEN = re.compile(r"^ [a-z]{3,10}$")

FRUITS = "apple pear plum fig kiwi lime lemon mango peach grape melon cherry berry date olive".split()
COLORS = "red green blue yellow black white brown pink orange purple gray gold silver".split()

GT_TEMPLATES = (
    "The war lasted from the year {c}{a}{d} to the year {c}",
    "The expedition lasted from the year {c}{a}{d} to the year {c}",
    "The dynasty ruled from the year {c}{a}{d} to the year {c}",
    "The contract lasted from the year {c}{a}{d} to the year {c}",
    "The building was used from the year {c}{a}{d} to the year {c}",
)

PRONOUN_TEMPLATES = (
    "Yesterday,{N} went to the store because",
    "After{N} finished the exam,",
    "I asked{N} what",
    "When{N} woke up this morning,",
    "Yesterday,{N} called the doctor because",
)


def _names(tokenizer) -> list[str]:
    return _pool(tokenizer, MALE_NAMES + FEMALE_NAMES, 3, "names")


# --------------------------------------------------------------------------- generators


def make_ioi(model_or_tokenizer: Any, n: int, seed: int = 0) -> list[PromptPair]:
    """IOI pairs (Wang et al. 2023; ABBA and BABA, half each) with the subject's second mention flipped in the
    corrupted prompt.

    Returns exactly ``n`` pairs, deterministic in ``(tokenizer, n, seed)``.

    Raises:
        InputError: ``n < 1``, no tokenizer, fewer than 3 single-token names, or fewer than ``n`` valid
            pairs after the allowed draws.
    """
    tok = get_tokenizer(model_or_tokenizer)
    names = _names(tok)

    def draw(rng: random.Random) -> PromptPair:
        io, s = rng.sample(names, 2)
        template = rng.choice(IOI_TEMPLATES)
        case = rng.choice(("ABBA", "BABA"))
        first, second = (io, s) if case == "ABBA" else (s, io)
        fill = dict(A=" " + first, B=" " + second, place=rng.choice(PLACES), obj=rng.choice(OBJECTS))
        clean = template.format(S=" " + s, **fill)
        corrupted = template.format(S=" " + io, **fill)
        return PromptPair(clean, corrupted, " " + io, " " + s,
                          {"task": "ioi", "template": IOI_TEMPLATES.index(template), "case": case})

    return _collect(tok, n, seed, draw, "ioi")


def _plural(noun: str) -> str:
    return noun + ("es" if noun.endswith(("s", "sh", "ch")) else "s")


def make_sva(model_or_tokenizer: Any, n: int, seed: int = 0) -> list[PromptPair]:
    """Simple agreement: "The author" → " is" vs "The authors" → " are" (clean number random; the simple
    subject–verb agreement task of Marks et al. 2024).

    Returns exactly ``n`` pairs, deterministic in ``(tokenizer, n, seed)``.

    Raises:
        InputError: ``n < 1``, no tokenizer, or fewer than ``n`` valid pairs
            after the allowed draws.
    """
    tok = get_tokenizer(model_or_tokenizer)

    def draw(rng: random.Random) -> PromptPair:
        noun = rng.choice(SVA_NOUNS)
        sing, plur = rng.choice(SVA_VERBS)
        adj = rng.choice(SVA_ADJECTIVES + [""] * len(SVA_ADJECTIVES))
        lead = f"The {adj} " if adj else "The "
        s_prompt, p_prompt = lead + noun, lead + _plural(noun)
        meta = {"task": "sva", "template": 1 if adj else 0}  # "The {noun}" or "The {adj} {noun}"
        if rng.random() < 0.5:
            return PromptPair(s_prompt, p_prompt, sing, plur, {**meta, "clean_number": "singular"})
        return PromptPair(p_prompt, s_prompt, plur, sing, {**meta, "clean_number": "plural"})

    return _collect(tok, n, seed, draw, "sva")


def make_sva_pp(model_or_tokenizer: Any, n: int, seed: int = 0) -> list[PromptPair]:
    """Agreement across a PP: "The author near the doctors" → " is" vs "The authors near the doctors" → " are"
    (Marks et al. 2024's across-PP agreement task).

    Returns exactly ``n`` pairs, deterministic in ``(tokenizer, n, seed)``.

    Raises:
        InputError: ``n < 1``, no tokenizer, or fewer than ``n`` valid pairs
            after the allowed draws.
    """
    tok = get_tokenizer(model_or_tokenizer)

    def draw(rng: random.Random) -> PromptPair:
        head, attractor = rng.sample(SVA_NOUNS, 2)
        sing, plur = rng.choice(SVA_VERBS)
        attr_plural = rng.random() < 0.5
        tail = f" {rng.choice(PREPOSITIONS)} the {_plural(attractor) if attr_plural else attractor}"
        s_prompt, p_prompt = f"The {head}{tail}", f"The {_plural(head)}{tail}"
        meta = {"task": "sva_pp", "template": 0, "attractor": "plural" if attr_plural else "singular"}
        if rng.random() < 0.5:
            return PromptPair(s_prompt, p_prompt, sing, plur, {**meta, "clean_number": "singular"})
        return PromptPair(p_prompt, s_prompt, plur, sing, {**meta, "clean_number": "plural"})

    return _collect(tok, n, seed, draw, "sva_pp")


def _word_tokens(tokenizer) -> list[int]:
    """Ids of tokens that decode to a space and 3–10 lowercase letters (e.g. " table"), sorted."""
    ids = []
    size = len(tokenizer) if hasattr(tokenizer, "__len__") else tokenizer.vocab_size
    special = set(special_token_ids(tokenizer))
    for i in range(size):
        if i in special:
            continue
        text = tokenizer.decode([i])
        if _WORD_TOKEN.match(text):
            ids.append(i)
    return ids


def make_induction(model_or_tokenizer: Any, n: int, seed: int = 0) -> list[PromptPair]:
    """Repeated random word tokens: clean = seq + seq[:j], answer seq[j]; corrupted changes seq[j] in the first copy
    (the induction pattern of Olsson et al. 2022).

    Returns exactly ``n`` pairs, deterministic in ``(tokenizer, n, seed)``.

    Raises:
        InputError: ``n < 1``, no tokenizer, fewer than 20 word tokens in the vocabulary, or fewer than ``n``
            valid pairs after the allowed draws.
    """
    tok = get_tokenizer(model_or_tokenizer)
    vocab = _word_tokens(tok)
    if len(vocab) < 2 * INDUCTION_LEN:
        raise InputError(f"this tokenizer has too few word tokens for the induction task ({len(vocab)})")

    def draw(rng: random.Random) -> PromptPair | None:
        seq = rng.sample(vocab, INDUCTION_LEN + 1)
        seq, substitute = seq[:-1], seq[-1]
        j = rng.randint(2, INDUCTION_LEN - 2)
        clean_ids = seq + seq[:j]
        corr_seq = list(seq)
        corr_seq[j] = substitute
        corr_ids = corr_seq + seq[:j]
        clean, corrupted = tok.decode(clean_ids), tok.decode(corr_ids)
        # the text must re-tokenize to exactly the ids we built
        if encode(tok, clean) != clean_ids or encode(tok, corrupted) != corr_ids:
            return None
        return PromptPair(
            clean, corrupted, tok.decode([seq[j]]), tok.decode([substitute]),
            {"task": "induction", "template": 0, "repeat_len": j},
        )

    return _collect(tok, n, seed, draw, "induction")


def make_dict_key(model_or_tokenizer: Any, n: int, seed: int = 0) -> list[PromptPair]:
    """Dict lookup after two worked examples: present key → its value; missing key (corrupted) → " KeyError".

    Returns exactly ``n`` pairs, deterministic in ``(tokenizer, n, seed)``.

    Raises:
        InputError: ``n < 1``, no tokenizer, fewer than 3 single-token colour words, or fewer than ``n`` valid pairs
            after the allowed draws.
    """
    tok = get_tokenizer(model_or_tokenizer)
    colors = _pool(tok, COLORS, 3, "colour words")
    fruits = FRUITS

    def draw(rng: random.Random) -> PromptPair:
        a, b, miss, query_missing = rng.sample(fruits, 4)
        x, y = rng.sample(colors, 2)
        key, value = (a, x) if rng.random() < 0.5 else (b, y)
        shown_key, shown_val = (b, y) if key == a else (a, x)

        def prompt(k: str) -> str:
            return (
                f'd = {{"{a}": "{x}", "{b}": "{y}"}}\n'
                f'print(d["{miss}"])  # KeyError\n'
                f'print(d["{shown_key}"])  # {shown_val}\n'
                f'print(d["{k}"])  #'
            )

        return PromptPair(prompt(key), prompt(query_missing), " " + value, " KeyError", {"task": "dict_key", "template": 0})

    return _collect(tok, n, seed, draw, "dict_key")


def make_list_index(model_or_tokenizer: Any, n: int, seed: int = 0) -> list[PromptPair]:
    """List indexing after two worked examples: index in range → the element; out of range → " IndexError".

    Returns exactly ``n`` pairs, deterministic in ``(tokenizer, n, seed)``.

    Raises:
        InputError: ``n < 1``, no tokenizer, fewer than 3 single-token colour words, or fewer than ``n`` valid pairs
            after the allowed draws.
    """
    tok = get_tokenizer(model_or_tokenizer)
    colors = _pool(tok, COLORS, 3, "colour words")

    def draw(rng: random.Random) -> PromptPair:
        xs = rng.sample(colors, 3)
        shown, k = rng.sample(range(3), 2)
        bad, bad_query = rng.sample(range(4, 10), 2)
        items = ", ".join(f'"{v}"' for v in xs)

        def prompt(i: int) -> str:
            return (
                f"xs = [{items}]\n"
                f"print(xs[{bad}])  # IndexError\n"
                f"print(xs[{shown}])  # {xs[shown]}\n"
                f"print(xs[{i}])  #"
            )

        return PromptPair(prompt(k), prompt(bad_query), " " + xs[k], " IndexError", {"task": "list_index", "template": 0})

    return _collect(tok, n, seed, draw, "list_index")


def make_greater_than(model_or_tokenizer: Any, n: int, seed: int = 0) -> list[PromptPair]:
    """Year spans "from 1752 to 17": answer the start's tens digit, wrong the digit below (see module doc; after
    the greater-than task of Hanna et al. 2023).

    Returns exactly ``n`` pairs, deterministic in ``(tokenizer, n, seed)``.

    Raises:
        InputError: ``n < 1``, no tokenizer, or fewer than ``n`` valid pairs
            after the allowed draws.
    """
    tok = get_tokenizer(model_or_tokenizer)

    def draw(rng: random.Random) -> PromptPair:
        century = rng.randint(11, 19)
        a = rng.randint(1, 9)
        d = rng.randint(0, 7)
        template = rng.choice(GT_TEMPLATES)
        clean = template.format(c=century, a=a, d=d)
        corrupted = template.format(c=century, a=a - 1, d=d)
        return PromptPair(clean, corrupted, str(a), str(a - 1), {"task": "greater_than", "template": GT_TEMPLATES.index(template),
                                                          "start_year": f"{century}{a}{d}"})

    return _collect(tok, n, seed, draw, "greater_than")


def make_gendered_pronoun(model_or_tokenizer: Any, n: int, seed: int = 0) -> list[PromptPair]:
    """"Yesterday, John went to the store because" → " he"; corrupted with a female name → " she" (and vice versa).

    Returns exactly ``n`` pairs, deterministic in ``(tokenizer, n, seed)``.

    Raises:
        InputError: ``n < 1``, no tokenizer, fewer than 2 single-token male or female names, or fewer than
            ``n`` valid pairs after the allowed draws.
    """
    tok = get_tokenizer(model_or_tokenizer)
    males = _pool(tok, MALE_NAMES, 2, "male names")
    females = _pool(tok, FEMALE_NAMES, 2, "female names")

    def draw(rng: random.Random) -> PromptPair:
        template = rng.choice(PRONOUN_TEMPLATES)
        male, female = " " + rng.choice(males), " " + rng.choice(females)
        meta = {"task": "gendered_pronoun", "template": PRONOUN_TEMPLATES.index(template)}
        if rng.random() < 0.5:
            return PromptPair(template.format(N=male), template.format(N=female), " he", " she",
                              {**meta, "clean_gender": "male"})
        return PromptPair(template.format(N=female), template.format(N=male), " she", " he",
                          {**meta, "clean_gender": "female"})

    return _collect(tok, n, seed, draw, "gendered_pronoun")


#: Built-in tasks by name.
TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("ioi", "Indirect object identification (ABBA/BABA; corrupted flips the subject's second mention)", make_ioi),
        TaskSpec("sva", "Subject–verb agreement: 'The author' → is / 'The authors' → are", make_sva),
        TaskSpec("sva_pp", "Agreement across a prepositional phrase: 'The author near the doctors' → is", make_sva_pp),
        TaskSpec("induction", "Induction: repeated random word tokens, predict the next repeated token", make_induction),
        TaskSpec("dict_key", "Python dict lookup: value of a present key vs KeyError for a missing key", make_dict_key),
        TaskSpec("list_index", "Python list indexing: element in range vs IndexError out of range", make_list_index),
        TaskSpec("greater_than", "Years: 'from 1752 to 17' → a tens digit making the end year later", make_greater_than),
        TaskSpec("gendered_pronoun", "Pronoun after a name: 'Yesterday, John went … because' → he / she", make_gendered_pronoun),
    )
}


def get_task(name: str) -> TaskSpec:
    """The :class:`TaskSpec` named ``name``.

    Raises:
        InputError: unknown task (the message lists the known ones).
    """
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None


def get_task_pairs(model: Any, name: str, n: int | None = None, seed: int = 0) -> list[PromptPair]:
    """``n`` pairs (default :attr:`TaskSpec.default_n`) of the built-in task ``name`` for ``model``'s tokenizer.

    Deterministic in ``(tokenizer, name, n, seed)``; a smaller ``n`` gives a prefix of a larger one.

    Raises:
        InputError: unknown task, ``n < 1``, or the tokenizer cannot make ``n`` valid pairs.
    """
    spec = get_task(name)
    return spec.generator(model, spec.default_n if n is None else n, seed)


def last_position_logits(model: Any, tokens: torch.Tensor, last_pos: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """Plain forward passes in batches of ≤ ``batch_size`` rows under ``torch.inference_mode``.

    Args:
        tokens: ``[n, pos]`` long, right-padded.
        last_pos: ``[n]`` long.

    Returns:
        ``[n, d_vocab]`` logits at each row's ``last_pos`` (float32, on the CPU).
    """
    device = getattr(getattr(model, "cfg", None), "device", None) or "cpu"
    out = []
    with torch.inference_mode():
        for start in range(0, tokens.shape[0], batch_size):
            rows = tokens[start : start + batch_size]
            last = last_pos[start : start + batch_size]
            width = int(last.max()) + 1
            logits = model(rows[:, :width].to(device))
            out.append(logits[torch.arange(rows.shape[0]), last.to(logits.device)].float().cpu())
    return torch.cat(out)


def task_accuracy(
    model: Any, name: str, n: int = 50, seed: int = 0, batch_size: int = 16, include_corrupted: bool = True
) -> dict:
    """How well ``model`` does task ``name`` on ``n`` generated pairs.

    Returns:
        ``{"name", "n", "accuracy", "mean_logit_diff", "can_do", "corrupted_accuracy",
        "mean_corrupted_logit_diff"}``: ``accuracy`` is the fraction of clean prompts where
        ``logit[answer] > logit[wrong_answer]`` at the last position; ``mean_logit_diff`` is the mean of
        that difference (logits); ``can_do`` is ``accuracy >= 0.7 and mean_logit_diff > 0``. The
        ``corrupted_*`` entries are the same on the corrupted prompts, where a model that does the task
        prefers ``wrong_answer`` (accuracy = fraction with ``logit[wrong] > logit[answer]``; the mean
        difference is still ``answer − wrong`` and should be below the clean one); they are left out when
        ``include_corrupted`` is False (half the forward passes).

    Raises:
        InputError: unknown task or invalid ``n``.
    """
    from .metrics import logit_diff

    pairs = get_task_pairs(model, name, n=n, seed=seed)
    batch = tokenize_pairs(model, pairs)
    clean = logit_diff(last_position_logits(model, batch.clean_tokens, batch.last_pos, batch_size), batch)
    accuracy = float((clean > 0).float().mean())
    mean_ld = float(clean.mean())
    result = {
        "name": name,
        "n": batch.n,
        "accuracy": accuracy,
        "mean_logit_diff": mean_ld,
        "can_do": bool(accuracy >= 0.7 and mean_ld > 0),
    }
    if include_corrupted:
        corrupted = logit_diff(last_position_logits(model, batch.corrupted_tokens, batch.last_pos, batch_size), batch)
        result["corrupted_accuracy"] = float((corrupted < 0).float().mean())
        result["mean_corrupted_logit_diff"] = float(corrupted.mean())
    return result
