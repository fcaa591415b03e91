"""Bounds of every numeric option (library, CLI and app read them from here), and their one check.

Why bounds at all: an option without an upper bound is a way to hang the machine (IG with 10⁷ steps runs for
weeks), and a float where a count is meant (``top_k=1.5``) must be refused, not rounded. The ranges are wide
enough for any real use on the bundled model and are printed in ``sfc … --help``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from .errors import InputError


class Bound(NamedTuple):
    """Closed range ``[lo, hi]`` of an option; ``integer`` options refuse floats and booleans;
    ``open_lo`` makes the low end exclusive (``lo < value``)."""

    lo: float
    hi: float
    integer: bool = True
    open_lo: bool = False


#: Option name (engine keyword) -> its bound.
BOUNDS: dict[str, Bound] = {
    "top_k": Bound(1, 100_000),
    "top_k_per_layer": Bound(1, 100_000),
    "steps": Bound(1, 1_000),            # IG α values (Marks et al. use 10)
    "mask_steps": Bound(1, 100_000),
    "mask_lambda": Bound(0.0, 1e3, integer=False, open_lo=True),
    "mask_t_max": Bound(1.0, 1e6, integer=False, open_lo=True),
    "budget": Bound(1, 100_000),         # FAP's K
    "synergy_pool": Bound(2, 500),       # one ablated run per pair of the pool
    "node_threshold": Bound(0.0, 1e9, integer=False),
    "edge_threshold": Bound(0.0, 1e9, integer=False),
    "n": Bound(1, 100_000),              # prompt pairs
    "size": Bound(1, 1_000_000),         # circuit sizes of a curve
    "chunk": Bound(1, 4_096),
    "pair_batch": Bound(1, 100_000),     # pairs per forward/backward batch
    "memory_gb": Bound(0.25, 1024.0, integer=False),
    "corpus_tokens": Bound(1_000, 1_000_000_000),  # sfc bundle build: generated tokens
    "epochs": Bound(0.0, 100.0, integer=False, open_lo=True),
    "check_seqs": Bound(0, 100_000),     # sfc bundle check: held-out sequences (0: as recorded)
}


def describe(name: str) -> str:
    """``"1-1000"`` (or ``"> 0 and ≤ 1000"``) for ``--help`` texts."""
    b = BOUNDS[name]
    lo, hi = (str(int(b.lo)), str(int(b.hi))) if b.integer else (f"{b.lo:g}", f"{b.hi:g}")
    return f"> {lo} and ≤ {hi}" if b.open_lo else f"{lo}-{hi}"


def check(name: str, value, what: str | None = None):
    """``value`` itself, once it is inside ``BOUNDS[name]`` (``None`` passes: an option not given).

    Args:
        name: a key of :data:`BOUNDS`.
        what: how the message names the option (default: ``name`` with spaces).

    Raises:
        InputError: not a number, not finite, a non-integer for a count, or out of range.
    """
    if value is None:
        return None
    b = BOUNDS[name]
    what = what or name.replace("_", " ")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{what} must be a number, not {value!r}")
    if b.integer and not isinstance(value, int):
        if not (isinstance(value, float) and value.is_integer()):
            raise InputError(f"{what} must be a whole number, not {value!r}")
        value = int(value)
    if not math.isfinite(value):
        raise InputError(f"{what} must be finite, not {value!r}")
    low_ok = value > b.lo if b.open_lo else value >= b.lo
    if not low_ok or value > b.hi:
        raise InputError(f"{what} must be {describe(name)}, not {value!r}")
    return value
