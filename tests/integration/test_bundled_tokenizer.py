"""Prompt pairs on the bundled model's tokenizer: rows match ``to_tokens``, multi-token names and length
mismatches are reported."""

import pytest

from sfc_core.errors import InputError
from sfc_core.pairs import PromptPair, pair_report, tokenize_pairs

pytestmark = pytest.mark.integration

IOI = PromptPair("When Mary and John went to the store, John gave a drink to",
                 "When Mary and John went to the store, Mary gave a drink to", " Mary", " John")


def enc(tok, text):
    return tok.encode(text, add_special_tokens=False)


@pytest.fixture(scope="module")
def bundled():
    from sfc_core.model import load_model

    return load_model()


def test_bundled_rows_match_to_tokens(bundled):
    batch = tokenize_pairs(bundled, [IOI])
    expected = bundled.to_tokens(IOI.clean, prepend_bos=True)[0]
    assert batch.clean_tokens[0].tolist() == expected.tolist()
    assert batch.clean_tokens[0, 0].item() == bundled.tokenizer.bos_token_id


def test_bundled_multi_token_name_and_mismatch(bundled):
    tok = bundled.tokenizer
    assert len(enc(tok, " Donna")) > 1
    with pytest.raises(InputError, match="multi-token answers in row 1:"):
        tokenize_pairs(bundled, [PromptPair(IOI.clean, IOI.corrupted, " Donna", " John")])
    mism = PromptPair("When Donna and John went", "When Mary and John went", " home", " away")
    assert len(enc(tok, mism.clean)) != len(enc(tok, mism.corrupted))
    report = pair_report(bundled, [mism])
    assert "length mismatch" in report[0]["problem"]
