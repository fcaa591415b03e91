"""Nodes: the one typed model of a circuit's nodes, their id strings and their place in per-site tensors.

A :class:`Node` is ``(hook_name, kind, index, position)``. Kinds live in one registry, :data:`KINDS`:

========  =====================  ===================================================  =========
kind      id                     meaning                                              in a site
========  =====================  ===================================================  =========
latent    ``{hook}/{k}``         SAE feature / latent ``k`` at a hook point            column k
error     ``{hook}/error``       the SAE's error node ε = x − x̂ (Marks et al. 2024)    column d_sae
neuron    ``{hook}/n{k}``        MLP neuron ``k`` at ``blocks.L.mlp.hook_post``          column k
embed     ``embed``              the token (and position) embedding: edges start here  —
metric    ``metric``             the metric (logit difference …): edges end here        —
========  =====================  ===================================================  =========

Transcoder features are latents too: a transcoder site sits at ``blocks.L.hook_mlp_out``
(:mod:`sfc_core.transcoders`), its latents are ``blocks.L.hook_mlp_out/{k}`` and its error node is the MLP output's
reconstruction error (circuit-tracer's "mlp reconstruction error").

Ids of nodes resolved by position carry ``@{position}`` (``blocks.7.hook_resid_post/12@5``). A new kind
(attention head, supernode) is one :class:`NodeKind` registered here with its
own id prefix (as ``n`` for neurons: ``blocks.3.mlp.hook_post/n17``) and, if it has one, its column rule in
:meth:`NodeSpace.column`. Nothing else in the engine builds or parses an id.

**Unit kind of a site.** A site's columns hold one kind of unit, read off its hook point by
:func:`unit_kind`: MLP neurons at ``blocks.L.mlp.hook_post`` (:mod:`sfc_core.neurons`; Marks et al. 2024's
neuron baseline), SAE latents everywhere else — unless :attr:`NodeSpace.units` says otherwise (the residual
stream's own basis directions, "neurons" of a residual hook point, ids ``blocks.7.hook_resid_post/n17``). A neuron site has **no error node**: its column ``d`` holds the
rest of the residual stream (everything but the neurons' write), which is never a node, never ranked and never
ablated.

**Per-site tensors.** The engine keeps one tensor per SAE site (sites sorted by depth): ``[d_sae + 1]``
for whole-prompt nodes (``aggregation="sum"``) or ``[pos, d_sae + 1]`` per position (``"none"``), with the
latents in columns ``0..d_sae−1`` and ε in column ``d_sae``. :class:`NodeSpace` is the mapping between node
lists, flat indices into those tensors and the tensors themselves; the error node is never a latent index
(a file naming latent ``d_sae`` is rejected, not read as ε).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import hooks
from .errors import InputError


@dataclass(frozen=True)
class NodeKind:
    """One kind of node.

    Attributes:
        name: the kind's name (``"latent"``, ``"error"``, ``"embed"``, ``"metric"``).
        id_word: for kinds without an index, the id part after the hook (``"error"``) or the whole id
            (``"embed"`` / ``"metric"`` when ``at_hook`` is false).
        id_prefix: for indexed kinds, the text before the index in the id (``""``: a bare integer).
        at_hook: the node belongs to a hook point (its id starts with the hook name).
        label: legend text.
    """

    name: str
    label: str
    id_word: str | None = None
    id_prefix: str | None = None
    at_hook: bool = True

    @property
    def indexed(self) -> bool:
        """Whether nodes of this kind carry an index (latent ``k``) in their id."""
        return self.id_prefix is not None


#: The node kinds, by name. Add a kind here (and its column rule in :meth:`NodeSpace.column`).
KINDS: dict[str, NodeKind] = {k.name: k for k in (
    NodeKind("latent", "features", id_prefix=""),
    NodeKind("error", "error nodes (ε)", id_word="error"),
    NodeKind("neuron", "MLP neurons", id_prefix="n"),
    NodeKind("embed", "embedding", id_word="embed", at_hook=False),
    NodeKind("metric", "metric", id_word="metric", at_hook=False),
)}
#: Kinds that are circuit end points rather than model components.
END_KINDS = frozenset({"embed", "metric"})


@dataclass(frozen=True)
class Node:
    """One node of a circuit.

    Attributes:
        hook_name: TransformerLens hook point of the node (``""`` for the embedding / metric end points).
        kind: a key of :data:`KINDS`.
        index: the unit's index for indexed kinds (latent ``k`` of an SAE with ``0 ≤ k < d_sae``), else −1.
        position: token position for position-resolved nodes, ``None`` for a node over the whole prompt.
    """

    hook_name: str
    kind: str = "latent"
    index: int = -1
    position: int | None = None

    @property
    def id(self) -> str:
        """The node's id string (format in the module doc)."""
        spec = KINDS[self.kind]
        if not spec.at_hook:
            base = spec.id_word
        else:
            part = f"{spec.id_prefix}{self.index}" if spec.indexed else spec.id_word
            base = f"{self.hook_name}/{part}"
        return base if self.position is None else f"{base}@{self.position}"

    @property
    def is_latent(self) -> bool:
        """Whether the node is an SAE latent."""
        return self.kind == "latent"

    @property
    def is_error(self) -> bool:
        """Whether the node is an SAE error node ε."""
        return self.kind == "error"

    @property
    def is_end(self) -> bool:
        """The embedding or the metric (not a model component inside a site)."""
        return self.kind in END_KINDS

    @property
    def feature(self) -> int | str:
        """The circuit file's ``feature`` field: the index of an indexed kind, else the kind's word."""
        spec = KINDS[self.kind]
        return self.index if spec.indexed else spec.id_word

    @property
    def layer(self) -> int:
        """Block index of the node's hook point (−1 for the embedding; the metric's layer is the model's
        ``n_layers``, which the node does not know: see :func:`node_attrs`)."""
        return hooks.layer_of(self.hook_name) if self.hook_name else -1

    def at(self, position: int | None) -> Node:
        """The same node at another position (``None``: over the whole prompt)."""
        return Node(self.hook_name, self.kind, self.index, position)


def latent(hook_name: str, index: int, position: int | None = None) -> Node:
    """SAE latent ``index`` at ``hook_name``."""
    return Node(hook_name, "latent", int(index), position)


def neuron(hook_name: str, index: int, position: int | None = None) -> Node:
    """MLP neuron ``index`` at ``hook_name`` (``blocks.L.mlp.hook_post``)."""
    return Node(hook_name, "neuron", int(index), position)


def unit_kind(hook_name: str) -> str:
    """The kind of the units in a site's columns: ``"neuron"`` at an MLP's ``blocks.L.mlp.hook_post``, else
    ``"latent"`` (an SAE's)."""
    return "neuron" if hooks.is_neuron_hook(hook_name) else "latent"


def error(hook_name: str, position: int | None = None) -> Node:
    """The error node ε at ``hook_name``."""
    return Node(hook_name, "error", -1, position)


EMBED = Node("", "embed")
METRIC = Node("", "metric")
#: Ids of the two end points.
EMBED_ID, METRIC_ID = EMBED.id, METRIC.id


def is_end_id(node_id: str) -> bool:
    """``True`` for the ids of the embedding and the metric."""
    return node_id in (EMBED_ID, METRIC_ID)


def parse_id(node_id: str) -> Node:
    """The :class:`Node` of an id string (inverse of :attr:`Node.id`).

    Raises:
        InputError: not a node id (one line naming it).
    """
    text = str(node_id)
    for spec in KINDS.values():
        if not spec.at_hook and text == spec.id_word:
            return Node("", spec.name)
    hook, sep, rest = text.rpartition("/")
    if not sep or not hook:
        raise InputError(f"not a node id: {text!r}")
    part, at, pos = rest.partition("@")
    position = None
    if at:
        if not pos.isdigit():
            raise InputError(f"not a node id: {text!r}")
        position = int(pos)
    for spec in KINDS.values():
        if not spec.at_hook:
            continue
        if not spec.indexed and part == spec.id_word:
            return Node(hook, spec.name, -1, position)
        if spec.indexed and part.startswith(spec.id_prefix) and part[len(spec.id_prefix):].isdigit():
            return Node(hook, spec.name, int(part[len(spec.id_prefix):]), position)
    raise InputError(f"not a node id: {text!r}")


def from_fields(hook_name, feature, position=None, where: str = "node") -> Node:
    """A node from a circuit file's ``hook_name``, ``feature`` (an integer, ``"error"``, ``"embed"`` or
    ``"metric"``) and ``position`` fields.

    Raises:
        InputError: a feature that is neither an integer nor a kind's word, or a bad position.
    """
    if position is not None and (isinstance(position, bool) or not isinstance(position, int) or position < 0):
        raise InputError(f"{where}: position must be a non-negative integer, not {position!r}")
    for spec in KINDS.values():
        if not spec.indexed and feature == spec.id_word:
            return Node(str(hook_name or "") if spec.at_hook else "", spec.name, -1, position)
    if isinstance(feature, bool) or not isinstance(feature, (int, float, str)):
        raise InputError(f"{where}: feature must be an integer or 'error', not {feature!r}")
    try:
        index = int(feature)
        if isinstance(feature, float) and (not math.isfinite(feature) or feature != index):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{where}: feature must be an integer or 'error', not {feature!r}") from None
    return Node(str(hook_name), unit_kind(str(hook_name)), index, position)


def graph_node(node_id: str, data: dict | None = None) -> Node:
    """The :class:`Node` of a circuit graph's node: from its ``hook_name`` / ``feature`` / ``position`` attributes
    when it has them, else from its id.

    Raises:
        InputError: neither the attributes nor the id describe a node.
    """
    data = data or {}
    if is_end_id(node_id):
        return parse_id(node_id)
    if data.get("feature") is not None:
        return from_fields(data.get("hook_name"), data.get("feature"), data.get("position"), where=f"node {node_id}")
    return parse_id(node_id)


def kind_of(node_id: str, data: dict | None = None) -> str:
    """The kind of a circuit graph's node (``"latent"``, ``"error"``, ``"embed"``, ``"metric"``); ``"latent"`` for
    a node whose attributes and id are unreadable (drawn, never computed on)."""
    try:
        return graph_node(node_id, data).kind
    except InputError:
        return "latent"


def node_attrs(node: Node, space: NodeSpace | None = None, n_layers: int | None = None) -> dict:
    """Graph attributes of a node in the ``sfc-circuit`` contract: ``hook_name, layer, site, feature, position``.

    The embedding sits at layer −1 / site −1, the metric at layer ``n_layers`` / site ``len(space)``.

    Raises:
        InputError: ``space`` is given and the node's hook point has no SAE in it.
    """
    if node.kind == "embed":
        return {"hook_name": hooks.EMBED_HOOK, "layer": -1, "site": -1, "feature": node.feature, "position": None}
    if node.kind == "metric":
        return {"hook_name": "metric", "layer": n_layers, "site": len(space) if space is not None else None,
                "feature": node.feature, "position": None}
    return {"hook_name": node.hook_name, "layer": node.layer,
            "site": space.site(node) if space is not None else None,
            "feature": node.feature, "position": node.position}


# ------------------------------------------------------------------ per-site tensors
@dataclass(frozen=True)
class NodeSpace:
    """The engine's sites (sorted by depth) and the layout of per-site node tensors.

    Attributes:
        hook_names: hook point of each site.
        d_sae: dictionary width of each site.
        n_positions: token positions of per-position tensors (``aggregation="none"``); ``None`` if unknown.
        units: per site, the kind of its units when not the hook's own (:func:`unit_kind`): ``"neuron"`` for the
            residual stream's basis directions at a residual hook point (:class:`~sfc_core.neurons.
            ResidualBasis`); ``None``: every site's from its hook name.
    """

    hook_names: tuple[str, ...]
    d_sae: tuple[int, ...]
    n_positions: int | None = None
    units: tuple[str, ...] | None = None

    def __post_init__(self):
        object.__setattr__(self, "_sites", {h: i for i, h in enumerate(self.hook_names)})

    def __len__(self) -> int:
        return len(self.hook_names)

    # ---------------------------------------------------------------- node ⇄ site and column
    def site(self, node: Node) -> int:
        """Site index of a node.

        Raises:
            InputError: the node's hook point has no SAE here.
        """
        try:
            return self._sites[node.hook_name]
        except KeyError:
            raise InputError(f"circuit node {node.id} is at {node.hook_name}, which has no SAE loaded") from None

    def width(self, site: int) -> int:
        """Columns of site ``site``'s tensors: ``d_sae + 1`` (latents, then ε; neurons, then the rest)."""
        return self.d_sae[site] + 1

    def unit(self, site: int) -> str:
        """Kind of the units in site ``site``'s columns ``0..d−1`` (:attr:`units`, else :func:`unit_kind`)."""
        return self.units[site] if self.units is not None else unit_kind(self.hook_names[site])

    def has_error(self, site: int) -> bool:
        """Whether column ``d`` of site ``site`` is an error node (SAE sites) rather than the never-ablated
        rest of the residual stream (neuron sites)."""
        return self.unit(site) == "latent"

    def column(self, node: Node) -> int:
        """Column of ``node`` in its site's tensors (latent ``k`` → ``k``, ε → ``d_sae``).

        Raises:
            InputError: no SAE at the node's hook point, a latent index outside ``0..d_sae−1``, or a node kind
                that has no column (the embedding / metric).
        """
        site = self.site(node)
        d = self.d_sae[site]
        unit = self.unit(site)
        if node.kind == unit:
            if not 0 <= node.index < d:
                what = "feature" if unit == "latent" else unit
                raise InputError(f"circuit node {node.id}: {what} {node.index} is out of range for "
                                 f"{'d_sae' if unit == 'latent' else 'd_mlp'}={d}")
            return node.index
        if node.kind == "error" and self.has_error(site):
            return d
        if node.kind in ("latent", "neuron", "error"):
            raise InputError(f"node {node.id} is a {node.kind} node, but {node.hook_name} holds {unit}s "
                             f"{'and its error node' if self.has_error(site) else 'and no error node'}")
        raise InputError(f"node {node.id} has no place in a site's tensors")

    def node_at(self, site: int, column: int, position: int | None = None) -> Node:
        """The node in column ``column`` of site ``site`` (inverse of :meth:`column`).

        Raises:
            InputError: column ``d`` of a neuron site (the rest of the residual stream is no node).
        """
        hook = self.hook_names[site]
        if column == self.d_sae[site]:
            if not self.has_error(site):
                raise InputError(f"{hook} has no error node: column {column} is not a node")
            return error(hook, position)
        return Node(hook, self.unit(site), int(column), position)

    def from_flat(self, site: int, flat: int, per_position: bool) -> Node:
        """The node at a flat index into site ``site``'s tensor (``[d+1]``, or ``[pos, d+1]`` flattened)."""
        if not per_position:
            return self.node_at(site, flat)
        pos, col = divmod(flat, self.width(site))
        return self.node_at(site, col, pos)

    def errors(self, position: int | None = None) -> list[Node]:
        """The error node ε of every SAE site, in site order (at ``position``, or over the whole prompt); neuron
        sites have none."""
        return [error(h, position) for i, h in enumerate(self.hook_names) if self.has_error(i)]

    def all_nodes(self, per_position: bool = False) -> list[Node]:
        """Every latent / neuron and error node, site by site (per position 0..n_positions−1 when
        ``per_position``)."""
        positions = list(range(self.n_positions or 0)) if per_position else [None]
        return [self.node_at(i, k, p) for i in range(len(self)) for p in positions
                for k in range(self.width(i) if self.has_error(i) else self.d_sae[i])]

    # ---------------------------------------------------------------- tensors
    def zeros(self, per_position: bool = False, dtype=torch.float32) -> list[torch.Tensor]:
        """Per-site zero tensors ``[d_sae + 1]`` or ``[n_positions, d_sae + 1]``."""
        return [torch.zeros((self.n_positions, self.width(i)) if per_position else (self.width(i),), dtype=dtype)
                for i in range(len(self))]

    def value(self, tensors: list[torch.Tensor], node: Node) -> float:
        """The entry of per-site tensors at ``node`` (a whole-prompt node on per-position tensors: the sum
        over positions), in the tensors' own units.

        Args:
            tensors: per site ``[d_sae + 1]`` or ``[pos, d_sae + 1]`` (latents, then ε).

        Raises:
            InputError: no SAE at the node's hook point, or a latent index outside ``0..d_sae−1``.
        """
        t = tensors[self.site(node)]
        col = self.column(node)
        if node.position is None:
            return float(t[..., col].sum())
        return float(t[node.position, col])

    def scatter(self, nodes: list[Node], values, per_position: bool = False, dtype=torch.float32) -> list[torch.Tensor]:
        """Per-site tensors holding ``values[j]`` at ``nodes[j]`` and 0 elsewhere.

        Args:
            nodes: latent / error nodes (a whole-prompt node on per-position tensors fills every position).
            values: one number per node, ``[len(nodes)]``.
            per_position: build ``[n_positions, d_sae + 1]`` tensors instead of ``[d_sae + 1]``.

        Returns:
            One tensor per site, ``[d_sae + 1]`` or ``[n_positions, d_sae + 1]``.

        Raises:
            InputError: a node at a hook point without an SAE, a latent index out of range, an end point
                (embedding / metric), or a node beyond ``n_positions``.
        """
        out = self.zeros(per_position, dtype)
        for node, v in zip(nodes, values):
            i, col = self.site(node), self.column(node)
            if node.position is None:
                out[i][..., col] = v
            else:
                if node.position >= out[i].shape[0]:
                    raise InputError(f"circuit node {node.id} is at position {node.position}, beyond these prompts")
                out[i][node.position, col] = v
        return out

    def keep_masks(self, nodes: list[Node], per_position: bool = False, complement: bool = False) -> list[torch.Tensor]:
        """Boolean per-site masks, ``[d_sae + 1]`` or ``[pos, d_sae + 1]``, True at ``nodes`` (a whole-prompt
        node on per-position masks: every position). Column ``d`` of a neuron site (the rest of the residual
        stream, no node) is always True: it is never ablated.

        Args:
            complement: True everywhere *except* at ``nodes`` (the circuit's complement; the rest of a neuron
                site stays True).

        Raises:
            InputError: a node at a hook point without an SAE, a latent index out of range, or an end point.
        """
        masks = [z.bool() for z in self.zeros(per_position, torch.bool)]
        if complement:
            masks = [~m for m in masks]
        for node in nodes:
            i, col = self.site(node), self.column(node)
            if node.position is None:
                masks[i][..., col] = not complement
            else:
                masks[i][node.position, col] = not complement
        for i, m in enumerate(masks):
            if not self.has_error(i):
                m[..., self.d_sae[i]] = True
        return masks

    def ranked(self, tensors: list[torch.Tensor], threshold: float | None = None, per_site: int | None = None,
               limit: int | None = None, kind: str | None = None) -> list[Node]:
        """Nodes with non-zero entries by ``|value|``, largest first; ties: shallower site, then lower flat index.

        Args:
            tensors: per-site ``[d_sae + 1]`` or ``[pos, d_sae + 1]`` values (e.g. indirect effects, logits).
            threshold: keep ``|value| ≥ threshold`` only.
            per_site: keep at most this many per site.
            limit: keep at most this many overall.
            kind: only nodes of this kind (``"latent"``, ``"neuron"`` or ``"error"``); column ``d`` of a neuron
                site (no node) is never ranked.

        Returns:
            The nodes (position-resolved when a tensor is ``[pos, d_sae + 1]``).
        """
        items = []
        for i, t in enumerate(tensors):
            if kind is not None or not self.has_error(i):
                keep = torch.zeros(t.shape[-1], dtype=torch.bool)
                keep[self.d_sae[i]:] = kind == "error" and self.has_error(i)
                keep[:self.d_sae[i]] = kind is None or kind == self.unit(i)
                t = torch.where(keep, t, torch.zeros_like(t))
            flat = t.abs().flatten()
            order = torch.argsort(flat, descending=True, stable=True)
            order = order[flat[order] > 0]
            if per_site is not None:
                order = order[:per_site]
            for j, v in zip(order.tolist(), flat[order].tolist()):
                if threshold is not None and v < threshold:
                    break
                items.append((v, i, j, t.dim() == 2))
        items.sort(key=lambda it: (-it[0], it[1], it[2]))
        if limit is not None:
            items = items[:limit]
        return [self.from_flat(i, j, per_pos) for _, i, j, per_pos in items]
