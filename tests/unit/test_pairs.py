"""Prompt pairs: reading (both spellings), validation errors, tokenization, alignment, report."""

import json

import pytest
import torch

from sfc_core.errors import InputError, SFCError
from sfc_core.pairs import (
    PairBatch,
    PromptPair,
    pair_report,
    pairs_from_records,
    read_pairs,
    tokenize_pairs,
    write_pairs,
)

CORPUS = [
    "When Mary and John went to the store, John gave a drink to Mary.",
    "The author is here. The authors are here. The friend has left. The friends have left.",
    "Mark and Mary and John talked to the doctor.",
]


def make_tiny_tokenizer():
    """A byte-level BPE trained on CORPUS: its words are one token, unseen words split into bytes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1000,
        special_tokens=["<|endoftext|>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<pad>"
    )


@pytest.fixture(scope="module")
def tok():
    return make_tiny_tokenizer()


@pytest.fixture(scope="module")
def tiny_model(tok):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(0)
    cfg = HookedTransformerConfig(
        n_layers=2, d_model=32, d_head=8, n_heads=4, d_mlp=64, d_vocab=len(tok), n_ctx=64, act_fn="gelu"
    )
    model = HookedTransformer(cfg)
    model.tokenizer = tok  # set_tokenizer would re-load it by name
    model.eval()
    return model


def enc(tok, s):
    return tok.encode(s, add_special_tokens=False)


IOI = PromptPair(
    "When Mary and John went to the store, John gave a drink to",
    "When Mary and John went to the store, Mary gave a drink to",
    " Mary",
    " John",
)


# --------------------------------------------------------------------------- reading


def test_read_both_spellings_and_meta(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(
        json.dumps({"clean": "a b", "corrupted": "a c", "answer": " x", "wrong_answer": " y", "case": "ABBA"})
        + "\n\n   \n"
        + json.dumps({"clean_prefix": "The friends", "patch_prefix": "The friend", "clean_answer": " have",
                      "patch_answer": " has", "case": 3})
        + "\n"
    )
    pairs = read_pairs(path)
    assert pairs[0] == PromptPair("a b", "a c", " x", " y", {"case": "ABBA"})
    assert pairs[1].clean == "The friends" and pairs[1].corrupted == "The friend"
    assert pairs[1].answer == " have" and pairs[1].wrong_answer == " has" and pairs[1].meta == {"case": 3}
    # also from lines and from text
    assert read_pairs(path.read_text().splitlines()) == pairs
    assert read_pairs(path.read_text()) == pairs


def test_write_then_read_round_trip(tmp_path):
    pairs = [IOI, PromptPair("The author", "The authors", " is", " are", {"case": "sva"})]
    out = write_pairs(pairs, tmp_path / "sub" / "p.jsonl")
    assert read_pairs(out) == pairs
    first = json.loads(out.read_text().splitlines()[0])
    assert set(first) == {"clean", "corrupted", "answer", "wrong_answer"}


@pytest.mark.parametrize(
    "text, match",
    [
        ('{"clean": "a", "corrupted": "b", "answer": " x", "wrong_answer": " y"}\n\n{not json\n', "line 3: not valid JSON"),
        ('{"clean": "a", "corrupted": "b", "answer": " x"}\n', r"line 1: missing key\(s\) wrong_answer"),
        ('{"clean": "  ", "corrupted": "b", "answer": " x", "wrong_answer": " y"}\n', "line 1: empty clean prompt"),
        ('{"clean": "a", "corrupted": "b", "answer": "", "wrong_answer": " y"}\n', "line 1: empty answer"),
        ('{"clean": 3, "corrupted": "b", "answer": " x", "wrong_answer": " y"}\n', "line 1: 'clean' must be a string"),
        ('[1, 2]\n', "line 1: expected a JSON object"),
    ],
)
def test_read_errors_name_the_line(text, match, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(InputError, match=match):
        read_pairs(path)


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    with pytest.raises(InputError, match="no prompt pairs in"):
        read_pairs(empty)
    with pytest.raises(InputError, match="not found"):
        read_pairs(tmp_path / "nope.jsonl")


def test_pairs_from_records_rows():
    records = [
        {"clean": "a", "corrupted": "b", "answer": " x", "wrong_answer": " y", "note": 1},
        {"clean": None, "corrupted": "", "answer": None, "wrong_answer": None},  # fresh editor row
    ]
    pairs = pairs_from_records(records)
    assert len(pairs) == 1 and pairs[0].meta == {"note": 1}
    with pytest.raises(InputError, match="row 2: empty corrupted prompt"):
        pairs_from_records([records[0], {"clean": "a", "corrupted": " ", "answer": " x", "wrong_answer": " y"}])
    with pytest.raises(InputError, match="no prompt pairs"):
        pairs_from_records([])


def test_bad_pair_files_raise_one_line_sfc_errors(tmp_path):
    """What the CLI and the app catch: an SFCError with a one-line message naming the line."""
    path = tmp_path / "p.jsonl"
    path.write_text('{"clean": "a", "corrupted": "b", "answer": " x", "wrong_answer": " y"}\n{oops\n')
    with pytest.raises(SFCError) as info:
        read_pairs(path)
    assert isinstance(info.value, InputError) and "line 2" in str(info.value) and "\n" not in str(info.value)


# --------------------------------------------------------------------------- tokenization


def test_tokenize_shapes_padding_and_mask(tok):
    short = PromptPair("The author", "The authors", " is", " are")
    batch = tokenize_pairs(tok, [IOI, short])
    assert isinstance(batch, PairBatch) and batch.n == 2
    n_ioi = len(enc(tok, IOI.clean))
    n_short = len(enc(tok, short.clean))
    assert batch.clean_tokens.shape == batch.corrupted_tokens.shape == (2, 1 + n_ioi)
    assert batch.clean_tokens.dtype == torch.long
    assert (batch.clean_tokens[:, 0] == tok.bos_token_id).all()
    assert batch.clean_tokens[0, 1:].tolist() == enc(tok, IOI.clean)
    assert batch.corrupted_tokens[0, 1:].tolist() == enc(tok, IOI.corrupted)
    assert batch.clean_tokens[1, 1 : 1 + n_short].tolist() == enc(tok, short.clean)
    assert (batch.clean_tokens[1, 1 + n_short :] == tok.pad_token_id).all()
    assert batch.last_pos.tolist() == [n_ioi, n_short]
    assert batch.answer_ids.tolist() == [enc(tok, " Mary")[0], enc(tok, " is")[0]]
    assert batch.wrong_ids.tolist() == [enc(tok, " John")[0], enc(tok, " are")[0]]
    expected_mask = torch.zeros_like(batch.valid_mask)
    expected_mask[0, 1 : 1 + n_ioi] = True
    expected_mask[1, 1 : 1 + n_short] = True
    assert torch.equal(batch.valid_mask, expected_mask)
    assert batch.skipped == [] and batch.warnings == []
    assert batch.pairs == [IOI, short]


def test_multi_token_answer_reject_lists_rows(tok):
    bad = PromptPair(IOI.clean, IOI.corrupted, " Elizabeth", " John")
    n_tokens = len(enc(tok, " Elizabeth"))
    assert n_tokens > 1
    with pytest.raises(InputError, match=rf"multi-token answers in rows 2, 3: ' Elizabeth' -> {n_tokens} tokens") as info:
        tokenize_pairs(tok, [IOI, bad, bad])
    # the fix travels as data (each surface words it); the sentence itself names no API syntax
    assert info.value.fix == ("multi_token", "truncate")
    assert "first token" in str(info.value) and "=" not in str(info.value) and "--" not in str(info.value)


def test_multi_token_answer_truncate_warns(tok):
    bad = PromptPair(IOI.clean, IOI.corrupted, " Elizabeth", " John")
    batch = tokenize_pairs(tok, [bad], multi_token="truncate")
    assert batch.answer_ids.tolist() == [enc(tok, " Elizabeth")[0]]
    assert len(batch.warnings) == 1 and "row 1" in batch.warnings[0] and "first token" in batch.warnings[0]


def test_length_mismatch_skip(tok):
    mism = PromptPair("When Elizabeth went to", "When Mary went to", " John", " Mary")
    batch = tokenize_pairs(tok, [mism, IOI])
    assert batch.n == 1 and batch.pairs == [IOI]
    assert len(batch.skipped) == 1 and batch.skipped[0][0] == 0 and "tokens" in batch.skipped[0][1]
    [warning] = [w for w in batch.warnings if "row 1 skipped" in w]
    # the skipped pair says what aligning it would cost, and carries aligning as its fix
    dropped = [tok.decode([i]) for i in enc(tok, mism.clean)[: len(enc(tok, mism.clean)) - len(enc(tok, mism.corrupted))]]
    assert "would drop the clean prompt's first" in warning and repr(dropped[0]) in warning
    assert warning.fix == ("length_mismatch", "align_last") and "=" not in warning
    with pytest.raises(InputError, match="no valid pairs: row 1") as info:
        tokenize_pairs(tok, [mism])
    assert info.value.fix == ("length_mismatch", "align_last")
    same = PromptPair(IOI.clean, IOI.corrupted, " Mary", " Mary")
    with pytest.raises(InputError, match="no valid pairs: row 1") as info:
        tokenize_pairs(tok, [same])
    assert info.value.fix is None  # no option keeps a pair whose answers are one token


def test_length_mismatch_align_last_drops_earliest_tokens(tok):
    mism = PromptPair("When Elizabeth went to", "When Mary went to", " John", " Mary")
    long_ids, short_ids = enc(tok, mism.clean), enc(tok, mism.corrupted)
    drop = len(long_ids) - len(short_ids)
    batch = tokenize_pairs(tok, [mism], length_mismatch="align_last")
    assert batch.n == 1 and batch.last_pos.tolist() == [len(short_ids)]
    assert batch.clean_tokens[0].tolist() == [tok.bos_token_id] + long_ids[drop:]
    assert batch.corrupted_tokens[0].tolist() == [tok.bos_token_id] + short_ids
    # last tokens coincide
    assert batch.clean_tokens[0, -2:].tolist() == batch.corrupted_tokens[0, -2:].tolist()
    assert len(batch.warnings) == 1
    assert f"the clean prompt loses its first {drop} tokens 'When'" in batch.warnings[0]
    assert "(the corrupted prompt keeps them)" in batch.warnings[0] and batch.warnings[0].fix is None


def test_align_last_names_the_dropped_content_tokens(tok):
    """The user's case: the corrupted prompt is two tokens longer and loses 'The', ' friend' to the alignment."""
    pair = PromptPair("When John talked to", "The friend and John talked to", " the", " Mary")
    assert [tok.decode([i]) for i in enc(tok, pair.corrupted)][:2] == ["The", " friend"]
    batch = tokenize_pairs(tok, [IOI, pair], length_mismatch="align_last")
    assert batch.warnings == ["row 2: aligned at the last token: the corrupted prompt loses its first 2 tokens "
                              "'The', ' friend' (the clean prompt keeps them)"]
    assert batch.corrupted_tokens[1, : batch.last_pos[1] + 1].tolist() == [tok.bos_token_id] + enc(tok, pair.corrupted)[2:]
    one = PromptPair("When John talked to", "The friend John talked to", " the", " Mary")
    assert "loses its first token 'The' (the clean prompt keeps it)" in tokenize_pairs(
        tok, [one], length_mismatch="align_last").warnings[0]


def test_align_last_rule():
    from sfc_core.pairs import align_last

    assert align_last([1, 2, 3], [4, 5, 6]) == ([1, 2, 3], [4, 5, 6], None, [])
    assert align_last([1, 2, 3, 4], [5, 6]) == ([3, 4], [5, 6], "clean", [1, 2])
    assert align_last([5], [1, 2, 3]) == ([5], [3], "corrupted", [1, 2])


def test_same_answer_token_is_skipped(tok):
    same = PromptPair(IOI.clean, IOI.corrupted, " Mary", " Mary")
    batch = tokenize_pairs(tok, [same, IOI])
    assert batch.n == 1 and batch.skipped[0][0] == 0 and "same token" in batch.skipped[0][1]


@pytest.mark.parametrize(
    "pair, kwargs, match",
    [
        (PromptPair("", "x", " a", " b"), {}, "row 1: empty clean prompt"),
        (PromptPair("x", "x", "", " b"), {}, "row 1: empty answer"),
        (PromptPair(("Mary and John " * 3).strip(), ("John and Mary " * 3).strip(), " a", " b"), {"max_tokens": 5}, r"row 1: clean prompt has \d+ tokens, more than the limit of 5"),
    ],
)
def test_tokenize_errors(tok, pair, kwargs, match):
    with pytest.raises(InputError, match=match):
        tokenize_pairs(tok, [pair], **kwargs)


def test_tokenize_bad_options_and_empty(tok):
    with pytest.raises(InputError, match="no prompt pairs"):
        tokenize_pairs(tok, [])
    with pytest.raises(InputError, match=r"answers longer than one token .*'reject'.*'truncate'.*not 'keep'"):
        tokenize_pairs(tok, [IOI], multi_token="keep")
    with pytest.raises(InputError, match=r"differ in token length .*'skip'.*'align_last'.*not 'pad'"):
        tokenize_pairs(tok, [IOI], length_mismatch="pad")


def test_right_padding_keeps_last_position_logits(tiny_model, tok):
    short = PromptPair("The author", "The authors", " is", " are")
    batch = tokenize_pairs(tiny_model, [IOI, short])
    with torch.no_grad():
        together = tiny_model(batch.clean_tokens)
        alone = tiny_model(batch.clean_tokens[1:2, : batch.last_pos[1] + 1])
    torch.testing.assert_close(together[1, batch.last_pos[1]], alone[0, -1], atol=1e-5, rtol=1e-5)


def test_subset_trims_padding(tok):
    short = PromptPair("The author", "The authors", " is", " are")
    batch = tokenize_pairs(tok, [IOI, short])
    sub = batch.subset([1])
    assert sub.n == 1 and sub.clean_tokens.shape[1] == int(batch.last_pos[1]) + 1 and sub.pairs == [short]


def test_pair_report_never_raises(tok):
    pairs = [
        IOI,
        PromptPair(IOI.clean, IOI.corrupted, " Elizabeth", " John"),
        PromptPair("When Elizabeth went to", "When Mary went to", " John", " Mary"),
        PromptPair("", "x", "", " b"),
    ]
    report = pair_report(tok, pairs)
    assert [r["row"] for r in report] == [1, 2, 3, 4]
    assert report[0]["valid"] and report[0]["problem"] is None
    assert report[0]["answer_tokens"] == [" Mary"] and report[0]["clean_tokens"][0] == "When"
    assert not report[1]["valid"] and "answer ' Elizabeth' is" in report[1]["problem"]
    assert not report[2]["valid"] and "length mismatch" in report[2]["problem"]
    assert not report[3]["valid"] and "empty clean prompt" in report[3]["problem"]
    # what aligning at the last token would drop, shown before the user picks that option
    long_ids = enc(tok, "When Elizabeth went to")
    drop = len(long_ids) - len(enc(tok, "When Mary went to"))
    assert report[2]["align_drop"] == {"prompt": "clean", "tokens": [tok.decode([i]) for i in long_ids[:drop]]}
    assert report[0]["align_drop"] is None and report[1]["align_drop"] is None


def test_discovery_with_align_last_runs_the_aligned_prompts_and_says_so(tiny_model, tok):
    """End to end on a tiny model: the circuit is computed on the truncated corrupted prompt, and the batch the
    app and the CLI show warnings from names the two dropped tokens; with the default option the pair is refused
    with aligning as its fix."""
    from sfc_core.discovery import DiscoverConfig, discover
    from tests.tiny import tiny_sae

    hook = "blocks.0.hook_resid_post"
    saes = {hook: tiny_sae(d_in=32, hook=hook, dtype="float32")}
    pair = PromptPair("When John talked to", "The friend and John talked to", " the", " Mary")
    d = discover(tiny_model, saes, [pair], DiscoverConfig(length_mismatch="align_last", top_k=3, edges=False))
    assert d.runs.batch.warnings == ["row 1: aligned at the last token: the corrupted prompt loses its first 2 "
                                     "tokens 'The', ' friend' (the clean prompt keeps them)"]
    kept = enc(tok, pair.corrupted)[2:]
    with torch.no_grad():
        logits = tiny_model(torch.tensor([[tok.bos_token_id] + kept]))[0, -1]
    ids = [enc(tok, pair.answer)[0], enc(tok, pair.wrong_answer)[0]]
    assert float(d.runs.m_corrupted[0]) == pytest.approx(float(logits[ids[0]] - logits[ids[1]]), abs=1e-4)
    with pytest.raises(InputError, match="no valid pairs") as info:
        discover(tiny_model, saes, [pair], DiscoverConfig(top_k=3, edges=False))
    assert info.value.fix == ("length_mismatch", "align_last")
