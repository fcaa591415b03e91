"""Held-out splits of the built-in tasks for the bundled tokenizer (sfc_core/generalisation.py)."""

from __future__ import annotations

import pytest

from sfc_core.errors import InputError
from sfc_core.generalisation import heldout_split


@pytest.fixture(scope="module")
def model():
    from sfc_core.model import load_model

    return load_model()


def test_ioi_held_out_names_are_other_names(model):
    inside, held = heldout_split(model, "ioi", 20, "names")
    assert len(inside) == len(held) == 20
    names_in = {p.answer for p in inside} | {p.wrong_answer for p in inside}
    names_out = {p.answer for p in held} | {p.wrong_answer for p in held}
    assert names_in and names_out and not names_in & names_out
    assert heldout_split(model, "ioi", 20, "names") == (inside, held)  # deterministic


def test_templates_and_seed_splits(model):
    inside, held = heldout_split(model, "ioi", 10, "templates")
    assert {p.meta["template"] % 2 for p in inside} == {0} and {p.meta["template"] % 2 for p in held} == {1}
    inside, held = heldout_split(model, "sva_pp", 10, "seed")
    assert not {(p.clean, p.corrupted) for p in inside} & {(p.clean, p.corrupted) for p in held}


def test_splits_a_task_cannot_make_are_refused(model):
    inside, held = heldout_split(model, "sva", 10, "names")  # SVA: other verbs
    assert not ({p.answer for p in inside} | {p.wrong_answer for p in inside}) & {p.answer for p in held}
    with pytest.raises(InputError, match="one template"):
        heldout_split(model, "sva_pp", 10, "templates")
