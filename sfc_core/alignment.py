"""Template groups: which token positions of different prompt pairs play the same role.

The engine indexes activations by raw token position (batches are right-padded, BOS at 0). Position ``p``
means the same thing in two pairs only when both come from the same template and have the same token
length; IOI's six templates, for instance, put ``,`` at position 9 in one pair and `` gave`` in another.
The rule, owned here and used by per-position means (mean ablation, hence masks and FAP-Synergy) and by
position-resolved nodes:

* A pair's **template group** is ``(template id, token length)``: the template id is the pair's
  ``meta["template"]`` (built-in tasks record the index of the template they filled; a pair file may carry
  a ``"template"`` field), or none; the length is its number of tokens (BOS included).
* Within a group, positions align by raw index: same template and same length is taken to mean same roles
  (exact when every slot of the template fills with the same number of tokens; a pair file whose slots
  vary in token count should give each slot-length pattern its own ``"template"``).
* Across groups, nothing is aligned: a per-position mean is taken within the pair's own group, and
  position-resolved nodes need pairs of a single group (:func:`check_position_resolved`).
"""

from __future__ import annotations

import json

import torch

from .errors import Fix, InputError


def template_id(pair) -> str | None:
    """A pair's template id as a string (``meta["template"]``; ``None`` when it has none)."""
    meta = getattr(pair, "meta", None) or {}
    value = meta.get("template")
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def template_groups(batch) -> tuple[torch.Tensor, list[tuple[str | None, int]]]:
    """Each pair's template group (see the module doc).

    Args:
        batch: a :class:`~sfc_core.pairs.PairBatch` (or anything with ``last_pos`` ``[n]`` and, optionally,
            ``pairs``, row-aligned).

    Returns:
        ``(group [n] long, keys)``: ``group[i]`` indexes ``keys``, the ``(template id, token length)`` of each
        group in order of first appearance.
    """
    n = int(batch.last_pos.shape[0])
    pairs = list(getattr(batch, "pairs", None) or [])
    pairs = pairs if len(pairs) == n else [None] * n
    keys: list[tuple[str | None, int]] = []
    index: dict[tuple[str | None, int], int] = {}
    group = []
    for pair, last in zip(pairs, batch.last_pos.tolist()):
        key = (template_id(pair), int(last) + 1)
        if key not in index:
            index[key] = len(keys)
            keys.append(key)
        group.append(index[key])
    return torch.tensor(group, dtype=torch.long), keys


def check_position_resolved(batch) -> None:
    """Position-resolved nodes (``aggregation="none"``) name a raw position: refuse pairs of several groups.

    Raises:
        InputError: the pairs come from more than one template group; its fix is summing over positions,
            ``fix=("aggregation", "sum")`` (each surface names its own control for it).
    """
    _, keys = template_groups(batch)
    if len(keys) > 1:
        n = int(batch.last_pos.shape[0])
        raise InputError(f"position-resolved nodes need pairs of one template and length: these {n} pairs come from "
                         f"{len(keys)} groups (template, length); keep one template and length, or aggregate "
                         "over positions", fix=Fix("aggregation", "sum"))
