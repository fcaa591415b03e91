"""Built-in tasks: registry, pair validity for the bundled tokenizer, determinism, accuracy."""

import pytest

from sfc_core.errors import InputError
from sfc_core.pairs import PromptPair, tokenize_pairs
from sfc_core.tasks import TASKS, TaskSpec, get_task_pairs, task_accuracy

EXPECTED = {"ioi", "sva", "sva_pp", "induction", "dict_key", "list_index", "greater_than", "gendered_pronoun"}


def test_registry():
    assert EXPECTED <= set(TASKS)
    for name, spec in TASKS.items():
        assert isinstance(spec, TaskSpec) and spec.name == name and spec.description and spec.default_n >= 50


def test_unknown_task_lists_known_ones():
    with pytest.raises(InputError, match="unknown task 'nope'; known tasks: ioi, sva"):
        get_task_pairs(None, "nope")


@pytest.fixture(scope="module")
def model():
    from sfc_core.model import load_model

    return load_model()


def enc(tok, s):
    return tok.encode(s, add_special_tokens=False)


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_task_pairs_are_valid(model, name):
    tok = model.tokenizer
    pairs = get_task_pairs(model, name)
    assert len(pairs) >= 50
    assert len({(p.clean, p.corrupted) for p in pairs}) == len(pairs)
    for p in pairs:
        assert isinstance(p, PromptPair)
        a, w = enc(tok, p.answer), enc(tok, p.wrong_answer)
        assert len(a) == 1 and len(w) == 1 and a != w, p
        assert len(enc(tok, p.clean)) == len(enc(tok, p.corrupted)), p
        assert p.clean != p.corrupted
    batch = tokenize_pairs(model, pairs)
    assert batch.n == len(pairs) and not batch.skipped and not batch.warnings


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_task_pairs_record_their_template(model, name):
    """meta["template"] names the template a pair filled, so positions align by role (sfc_core.alignment)."""
    import re

    from sfc_core.alignment import template_groups
    from sfc_core.tasks import GT_TEMPLATES, IOI_TEMPLATES, PRONOUN_TEMPLATES

    pairs = get_task_pairs(model, name)
    assert all(isinstance(p.meta.get("template"), int) for p in pairs)
    tables = {"ioi": IOI_TEMPLATES, "greater_than": GT_TEMPLATES, "gendered_pronoun": PRONOUN_TEMPLATES}
    if name in tables:  # the recorded template, filled with anything, matches the prompt
        for p in pairs:
            pattern = re.sub(r"\\\{\w+\\\}", ".+", re.escape(tables[name][p.meta["template"]]))
            assert re.fullmatch(pattern, p.clean) and re.fullmatch(pattern, p.corrupted), p
        assert len({p.meta["template"] for p in pairs}) > 1
    elif name == "sva":
        assert all(p.meta["template"] == (1 if len(p.clean.split()) == 3 else 0) for p in pairs)
    else:
        assert {p.meta["template"] for p in pairs} == {0}
    group, keys = template_groups(tokenize_pairs(model, pairs))
    assert len(group) == len(pairs) and 1 <= len(keys) <= len(pairs)


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_task_pairs_are_deterministic(model, name):
    first = get_task_pairs(model, name, n=50, seed=3)
    assert get_task_pairs(model, name, n=50, seed=3) == first
    assert get_task_pairs(model, name, n=10, seed=3) == first[:10]
    assert get_task_pairs(model, name, n=50, seed=4) != first


@pytest.mark.integration
def test_task_examples(model):
    ioi = get_task_pairs(model, "ioi", n=20)
    for p in ioi:
        # the corrupted prompt differs only in the subject's second mention, which becomes the answer
        assert p.answer.strip() in p.clean and p.wrong_answer.strip() in p.clean
        assert p.corrupted.count(p.answer.strip()) == 2 and p.clean.count(p.wrong_answer.strip()) == 2
    sva = get_task_pairs(model, "sva", n=20)
    assert all({p.answer, p.wrong_answer} in ({" is", " are"}, {" was", " were"}, {" has", " have"}) for p in sva)


@pytest.mark.integration
def test_bad_n(model):
    with pytest.raises(InputError, match="positive integer"):
        get_task_pairs(model, "ioi", n=0)


@pytest.mark.integration
@pytest.mark.parametrize("name", ["ioi", "sva"])
def test_bundled_model_can_do_core_tasks(model, name):
    result = task_accuracy(model, name, n=50, include_corrupted=False)
    assert set(result) >= {"name", "n", "accuracy", "mean_logit_diff", "can_do"}
    assert result["name"] == name and result["n"] == 50
    assert result["can_do"], result
    assert result["accuracy"] >= 0.7 and result["mean_logit_diff"] > 0
