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
