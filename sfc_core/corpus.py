"""Offline text corpus for SAE training and the feature index, deterministic from a seed.

Two sources, neither needs the network:

* English text sampled from the bundled model itself (chat-formatted requests
  for stories, explanations, dialogue, news-like reports, lists, letters, ...;
  only the model's answers are kept);
* Python source from the CPython standard library installed on the machine.

Documents are tokenized with the model's tokenizer, joined with ``<|endoftext|>``
and cut into fixed-length sequences that each start with BOS. Each document goes
wholly to the train or the held-out split (by a seeded hash of its index).
Generation writes one JSON Lines shard per batch so an interrupted build resumes.
"""

from __future__ import annotations

import hashlib
import json
import random
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

KINDS = (
    "Write a short story about {topic}.",
    "Explain {topic} to a curious twelve-year-old.",
    "Write a dialogue between two friends who disagree about {topic}.",
    "Write a short news report about {topic}.",
    "Give a numbered list of facts about {topic}.",
    "Write a friendly email to a colleague about {topic}.",
    "Describe {topic} in vivid detail.",
    "Write a short encyclopedia entry about {topic}.",
    "Write a how-to guide about {topic}.",
    "Write a diary entry by someone thinking about {topic}.",
    "Write a product review that mentions {topic}.",
    "Summarize the history of {topic}.",
)
TOPICS = (
    "a lighthouse keeper", "the water cycle", "a lost dog", "volcanoes", "the first day of school",
    "chess", "a small bakery", "the moon landing", "photosynthesis", "a rainy city",
    "ancient Rome", "a robot that learns to paint", "the stock market", "honeybees", "a long train journey",
    "the human heart", "a football match", "climate change", "a birthday party", "the printing press",
    "a mountain village", "electric cars", "a detective and a missing ring", "the ocean floor", "jazz music",
    "a family dinner", "black holes", "learning a new language", "a garden in spring", "the internet",
    "a king and his advisor", "recycling", "an old library", "the Olympic games", "a storm at sea",
    "friendship", "the solar system", "a job interview", "penguins", "a haunted house",
    "cooking pasta", "the French Revolution", "a science fair", "rain forests", "a hospital night shift",
    "mathematics", "a marathon runner", "medieval castles", "a music teacher", "the desert",
    "computers", "a wedding", "bicycles", "an island", "the brain", "a farmer and his horse",
    "coffee", "a museum", "winter holidays", "a space station",
)


@dataclass(frozen=True)
class CorpusConfig:
    """Corpus size and shape (token counts are approximate for generated text)."""

    seed: int = 0
    generated_tokens: int = 65_000
    code_tokens: int = 200_000
    seq_len: int = 128
    heldout_frac: float = 0.08
    gen_batch: int = 128
    max_new_tokens: int = 160
    temperature: float = 0.9


def generation_requests(seed: int, n: int) -> list[str]:
    """``n`` varied, deterministic requests (kind × topic) for the chat model."""
    rng = random.Random(seed)
    return [rng.choice(KINDS).format(topic=rng.choice(TOPICS)) for _ in range(n)]


def _generate_shard(hf_model, tokenizer, requests: list[str], cfg: CorpusConfig, seed: int) -> list[str]:
    chats = [
        tokenizer.apply_chat_template([{"role": "user", "content": r}], tokenize=False, add_generation_prompt=True)
        for r in requests
    ]
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    enc = tokenizer(chats, return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(seed)
    with torch.no_grad():
        out = hf_model.generate(
            **enc,
            do_sample=True,
            temperature=cfg.temperature,
            top_p=0.95,
            max_new_tokens=cfg.max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
        )
    new = out[:, enc.input_ids.shape[1]:]
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in new]


def generate_text(work_dir: Path, cfg: CorpusConfig, hf_model=None, tokenizer=None) -> list[str]:
    """Sample English documents from the bundled model (≈ ``cfg.generated_tokens`` tokens); resumable shards in
    ``work_dir/gen``.

    Raises:
        AssetError: a shard is missing and the bundled GGUF to generate it is missing or corrupted.
    """
    from .model import load_hf_bundled

    gen_dir = work_dir / "gen"
    gen_dir.mkdir(parents=True, exist_ok=True)
    tokens_per_batch = cfg.gen_batch * cfg.max_new_tokens * 0.8
    n_batches = max(1, int(cfg.generated_tokens / tokens_per_batch + 0.999))
    requests = generation_requests(cfg.seed, n_batches * cfg.gen_batch)
    docs: list[str] = []
    for b in tqdm(range(n_batches), desc="generating text"):
        shard = gen_dir / f"shard_{b:05d}.jsonl"
        if not shard.is_file():
            if hf_model is None:
                hf_model, tokenizer = load_hf_bundled()
                # bf16 samples 2x faster on CPU; a corpus does not need fp32 sampling.
                hf_model = hf_model.to(torch.bfloat16)
            batch = requests[b * cfg.gen_batch:(b + 1) * cfg.gen_batch]
            texts = _generate_shard(hf_model, tokenizer, batch, cfg, seed=cfg.seed * 100_003 + b)
            tmp = shard.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps({"request": r, "text": t}) + "\n" for r, t in zip(batch, texts)))
            tmp.rename(shard)
        docs.extend(json.loads(line)["text"] for line in shard.read_text().splitlines())
    return [d for d in docs if d]


def python_sources(seed: int, max_chars: int) -> list[str]:
    """Python files of the installed CPython standard library (tests excluded), seeded order."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(
        p for p in stdlib.rglob("*.py")
        if "site-packages" not in p.parts and "test" not in p.parts and "tests" not in p.parts
    )
    random.Random(seed).shuffle(files)
    docs, total = [], 0
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        text = text[:20_000]  # many files, not a few huge ones
        docs.append(text)
        total += len(text)
        if total >= max_chars:
            break
    return docs


def _is_heldout(seed: int, source: str, index: int, frac: float) -> bool:
    h = hashlib.sha256(f"{seed}:{source}:{index}".encode()).digest()
    return int.from_bytes(h[:4], "little") / 2**32 < frac


def pack(token_docs: list[list[int]], seq_len: int, bos_id: int, sep_id: int) -> torch.Tensor:
    """Join documents (token id lists) with ``sep_id`` and cut into ``[n_seq, seq_len]`` int32 rows each starting
    with BOS (the tail shorter than a row is dropped)."""
    stream: list[int] = []
    for doc in token_docs:
        stream.extend(doc)
        stream.append(sep_id)
    body = seq_len - 1
    n = len(stream) // body
    rows = torch.tensor(stream[: n * body], dtype=torch.int32).view(n, body)
    return torch.cat([torch.full((n, 1), bos_id, dtype=torch.int32), rows], dim=1)


def build_corpus(work_dir: Path, cfg: CorpusConfig, tokenizer, hf_model=None) -> dict[str, torch.Tensor]:
    """Build (or resume) the corpus; returns ``{"train": [n, seq_len], "heldout": [m, seq_len]}`` int32.

    Also saved to ``work_dir/corpus.safetensors``. ``tokenizer`` must be the bundled model's.

    Raises:
        AssetError: text must be generated and the bundled GGUF is missing or corrupted.
    """
    from safetensors.torch import load_file, save_file

    out = work_dir / "corpus.safetensors"
    if out.is_file():
        return load_file(str(out))
    text_docs = generate_text(work_dir, cfg, hf_model, tokenizer if hf_model is not None else None)
    code_docs = python_sources(cfg.seed, max_chars=cfg.code_tokens * 3)
    splits: dict[str, list[list[int]]] = {"train": [], "heldout": []}
    for source, docs in (("text", text_docs), ("code", code_docs)):
        for i, doc in enumerate(tqdm(docs, desc=f"tokenizing {source}")):
            ids = tokenizer(doc, add_special_tokens=False).input_ids
            split = "heldout" if _is_heldout(cfg.seed, source, i, cfg.heldout_frac) else "train"
            splits[split].append(ids)
    bos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    result = {}
    for split, docs in splits.items():
        random.Random(cfg.seed).shuffle(docs)
        result[split] = pack(docs, cfg.seq_len, bos, bos)
    save_file(result, str(out))
    return result


# ---------------------------------------------------------------- held-out corpus for the feature index
@dataclass(frozen=True)
class HeldoutConfig:
    """Size and mix of the extended held-out corpus (:func:`build_heldout_corpus`).

    Attributes:
        new_tokens: tokens to add after the SAE corpus' own held-out rows (approximate: each source stops at
            its share, whole documents).
        shares: fraction of ``new_tokens`` per source (see :data:`HELDOUT_SOURCES`).
        max_doc_chars: documents are cut to this many characters (many texts rather than a few long ones).
        overlap_n / max_overlap: a document is dropped when more than ``max_overlap`` of its ``overlap_n``-token
            n-grams also occur in the SAE training split's code (stdlib copies vendored by packages, licence
            headers).
    """

    seed: int = 0
    new_tokens: int = 200_000
    seq_len: int = 128
    shares: tuple[tuple[str, float], ...] = (
        ("package_readme", 0.24), ("package_docs", 0.14), ("license", 0.07),
        ("docstring", 0.35), ("stdlib_code", 0.20),
    )
    max_doc_chars: int = 4_000
    overlap_n: int = 16
    max_overlap: float = 0.05


#: Sources of the extended held-out corpus; none was in the SAE training split (generated chat text and the
#: stdlib files :func:`python_sources` selected for ``CorpusConfig.code_tokens``).
HELDOUT_SOURCES = {
    "package_readme": "long descriptions (README) in the METADATA of the packages installed in the venv",
    "package_docs": ".md / .rst / .txt documentation files shipped inside installed packages (prose only)",
    "license": "licence texts of the installed packages (each distinct text once)",
    "docstring": "module / class / function docstrings of installed packages' Python sources",
    "stdlib_code": "CPython standard-library modules that the SAE training corpus never selected",
}
_SKIP_PARTS = {"test", "tests", "testing", "__pycache__", "_vendor", "vendored", "data", "datasets"}


def stdlib_files(seed: int) -> list[Path]:
    """The standard library's ``.py`` files (tests excluded) in the seeded order :func:`python_sources` reads."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(
        p for p in stdlib.rglob("*.py")
        if "site-packages" not in p.parts and "test" not in p.parts and "tests" not in p.parts
    )
    random.Random(seed).shuffle(files)
    return files


def training_code_selection(seed: int, max_chars: int) -> tuple[list[Path], list[str]]:
    """The stdlib files :func:`python_sources` selects (train and held-out splits alike) and their texts."""
    paths, docs, total = [], [], 0
    for path in stdlib_files(seed):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        text = text[:20_000]
        paths.append(path)
        docs.append(text)
        total += len(text)
        if total >= max_chars:
            break
    return paths, docs


def _prose_like(text: str) -> bool:
    """Mostly words and spaces, in lines of sentence length (not tables, data or code listings)."""
    if len(text) < 300:
        return False
    letters = sum(c.isalpha() or c == " " for c in text)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return letters / len(text) >= 0.75 and sum(len(ln) for ln in lines) / max(len(lines), 1) >= 30


def _site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def _skip(path: Path, root: Path) -> bool:
    return bool(_SKIP_PARTS & set(path.relative_to(root).parts[:-1]))


def _round_robin(groups: dict[str, list], rng: random.Random):
    """Items of every group in turn (groups in seeded order, each group's items as given)."""
    keys = sorted(groups)
    rng.shuffle(keys)
    iters = [iter(groups[k]) for k in keys]
    while iters:
        alive = []
        for it in iters:
            item = next(it, None)
            if item is not None:
                yield item
                alive.append(it)
        iters = alive


def heldout_documents(source: str, seed: int, cfg: HeldoutConfig | None = None):
    """Yield the documents (str) of one :data:`HELDOUT_SOURCES` source in a deterministic, varied order
    (packages taken in turn, so no package dominates).

    Raises:
        KeyError: an unknown source.
    """
    import ast
    import email

    cfg = cfg or HeldoutConfig()
    rng = random.Random(f"{seed}:{source}")
    root = _site_packages()
    cut = cfg.max_doc_chars
    if source == "package_readme":
        for meta in sorted(root.glob("*.dist-info/METADATA")):
            body = email.message_from_string(meta.read_text(encoding="utf-8", errors="replace")).get_payload()
            if isinstance(body, str) and len(body.strip()) > 300:
                yield body.strip()[:cut]
    elif source == "package_docs":
        files = sorted(p for ext in ("*.md", "*.rst", "*.txt") for p in root.rglob(ext)
                       if ".dist-info" not in str(p) and not _skip(p, root)
                       and not p.name.upper().startswith(("LICENSE", "COPYING", "NOTICE")))
        rng.shuffle(files)
        for p in files:
            text = p.read_text(encoding="utf-8", errors="replace")[:cut]
            if _prose_like(text):
                yield text
    elif source == "license":
        files = sorted(p for p in root.rglob("*") if p.is_file()
                       and p.name.upper().startswith(("LICENSE", "COPYING", "NOTICE", "AUTHORS")))
        rng.shuffle(files)
        for p in files:
            yield p.read_text(encoding="utf-8", errors="replace")[:cut]
    elif source == "docstring":
        groups: dict[str, list[Path]] = {}
        for p in sorted(root.rglob("*.py")):
            rel = p.relative_to(root)
            if len(rel.parts) > 1 and not _skip(p, root):
                groups.setdefault(rel.parts[0], []).append(p)
        for files in groups.values():
            rng.shuffle(files)
        for p in _round_robin(groups, rng):
            try:
                tree = ast.parse(p.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
                continue
            docs = [ast.get_docstring(n) for n in ast.walk(tree)
                    if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
            docs = [d for d in docs if d and len(d) >= 80]
            if docs:
                yield "\n\n".join(docs)[:cut]
    elif source == "stdlib_code":
        selected = set(training_code_selection(seed, CorpusConfig().code_tokens * 3)[0])
        for p in stdlib_files(seed):
            if p not in selected:
                try:
                    yield p.read_text(encoding="utf-8")[:cut]
                except (UnicodeDecodeError, OSError):
                    continue
    else:
        raise KeyError(source)


def _ngrams(ids: list[int], n: int) -> set[int]:
    return {hash(tuple(ids[i:i + n])) for i in range(len(ids) - n + 1)}


def build_heldout_corpus(work_dir: Path, tokenizer, old_heldout: torch.Tensor,
                         cfg: HeldoutConfig | None = None) -> tuple[torch.Tensor, dict]:
    """The extended held-out corpus: ``old_heldout`` ``[m, seq_len]`` (the SAE corpus' held-out split, kept as the
    first rows so figures computed on the first rows stay valid) followed by ≈ ``cfg.new_tokens`` tokens of
    :data:`HELDOUT_SOURCES` text, packed like :func:`pack` (documents shuffled with the seed, ``<|endoftext|>``
    between them, BOS first).

    Nothing new was in the SAE training split, by construction: the SAEs trained on generated chat text and
    stdlib files; the new text comes from installed packages (never in training) and stdlib files the training
    selection never reached. As a check, documents sharing more than ``cfg.max_overlap`` of their
    ``cfg.overlap_n``-token n-grams with the training selection's code are dropped (counted in the report).

    Cached as ``work_dir/corpus_heldout.safetensors`` (+ ``heldout_report.json``); a second call loads it.

    Returns:
        ``(tokens [n, seq_len] int32, report)``; ``report`` holds tokens / documents per source, dropped
        documents and the row counts.
    """
    from safetensors.torch import load_file, save_file

    cfg = cfg or HeldoutConfig()
    out, rep_path = work_dir / "corpus_heldout.safetensors", work_dir / "heldout_report.json"
    if out.is_file() and rep_path.is_file():
        return load_file(str(out))["tokens"], json.loads(rep_path.read_text())
    work_dir.mkdir(parents=True, exist_ok=True)
    bos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    _, train_code = training_code_selection(cfg.seed, CorpusConfig().code_tokens * 3)
    seen = set()
    for doc in tqdm(train_code, desc="training n-grams"):
        seen |= _ngrams(tokenizer(doc, add_special_tokens=False).input_ids, cfg.overlap_n)
    docs: list[list[int]] = []
    report: dict = {"sources": {}, "dropped_overlap": 0, "dropped_duplicate": 0}
    digests: set[bytes] = set()
    for source, share in cfg.shares:
        budget, got, n_docs = int(cfg.new_tokens * share), 0, 0
        bar = tqdm(total=budget, desc=f"held-out {source}")
        for text in heldout_documents(source, cfg.seed, cfg):
            digest = hashlib.sha256(" ".join(text.split()).encode()).digest()
            if digest in digests:
                report["dropped_duplicate"] += 1
                continue
            digests.add(digest)
            ids = tokenizer(text, add_special_tokens=False).input_ids
            grams = _ngrams(ids, cfg.overlap_n)
            if grams and len(grams & seen) / len(grams) > cfg.max_overlap:
                report["dropped_overlap"] += 1
                continue
            docs.append(ids)
            got += len(ids) + 1
            n_docs += 1
            bar.update(len(ids) + 1)
            if got >= budget:
                break
        bar.close()
        report["sources"][source] = {"tokens": got, "documents": n_docs, "what": HELDOUT_SOURCES[source]}
    random.Random(cfg.seed).shuffle(docs)
    new = pack(docs, cfg.seq_len, bos, bos)
    tokens = torch.cat([old_heldout.to(torch.int32), new]).contiguous()
    report.update({"old_rows": int(len(old_heldout)), "new_rows": int(len(new)), "rows": int(len(tokens)),
                   "tokens": int(tokens.numel()), "seq_len": cfg.seq_len})
    save_file({"tokens": tokens}, str(out))
    rep_path.write_text(json.dumps(report, indent=1))
    return tokens, report
