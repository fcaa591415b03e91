"""Display helpers of the Streamlit app: pure functions with no Streamlit import (app code, not engine code).

The app (``app.py``, ``pages/``) gathers inputs, calls these and the engine, and renders.
Everything here is deterministic and cheap so it can run on every rerun:

* prompt-pair tables ⇄ :class:`~sfc_core.pairs.PromptPair` lists, JSONL uploads, per-row
  tokenization reports as tables;
* the *input key* under which a session caches a :class:`~sfc_core.discovery.Discovery`
  (so slider moves re-select from cached effects and never recompute);
* node descriptions for the node list and panel (read through :mod:`sfc_core.nodes`, which owns node
  ids), feature labels for the graph hover, activation highlighting as HTML, slider steps;
* tables of ablation / steering / logit-effect results and of the bundle's quality figures.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from sfc_core import hooks, nodes
from sfc_core.ablation import DESCRIPTIONS as ABLATION_DESCRIPTIONS
from sfc_core.errors import InputError
from sfc_core.metrics import metric_label
from sfc_core.pairs import FIELDS, PromptPair, pairs_from_records, read_pairs

PAIR_COLUMNS: tuple[str, ...] = FIELDS  # clean, corrupted, answer, wrong_answer
#: The editor table's columns: the pair's four fields and its template id (``meta["template"]``, which
#: :mod:`sfc_core.alignment` groups positions by; blank when the pair has none).
TABLE_COLUMNS: tuple[str, ...] = PAIR_COLUMNS + ("template",)
#: ``node_info`` kind of each node kind of :data:`sfc_core.nodes.KINDS` (the panel's words: a latent is a "feature").
PANEL_KINDS = {k: "feature" if k == "latent" else k for k in nodes.KINDS}

#: Largest pair file the app accepts (bytes).
MAX_UPLOAD_BYTES = 5_000_000
#: Largest number of pairs the app runs at once (CPU budget).
MAX_APP_PAIRS = 200


# ------------------------------------------------------------------ prompt pairs
def empty_table() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in TABLE_COLUMNS})


def table_from_pairs(pairs: Iterable[PromptPair]) -> pd.DataFrame:
    """The editor table (one row per pair: our four columns and the template id, strings)."""
    rows = [{**{c: getattr(p, c) for c in PAIR_COLUMNS}, "template": _cell(p.meta.get("template"))} for p in pairs]
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS)) if rows else empty_table()


def _cell(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, float) and math.isnan(v):
        return None
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return v if isinstance(v, str) else str(v)


def _template(v: Any) -> int | str | None:
    """A template cell as the id the built-in tasks record (an int where it is one), ``None`` when blank."""
    v = _cell(v)
    if v is None or not v.strip():
        return None
    v = v.strip()
    return int(v) if v.lstrip("-").isdigit() else v


def records_from_table(table: pd.DataFrame | Sequence[dict]) -> list[dict]:
    """Rows of an editor table as dicts of our four keys (NaN / missing → ``None``), plus ``template`` where the
    row has one."""
    if isinstance(table, pd.DataFrame):
        raw = table.to_dict("records")
    else:
        raw = list(table)
    out = []
    for r in raw:
        rec = {c: _cell(r.get(c)) for c in PAIR_COLUMNS}
        if _template(r.get("template")) is not None:
            rec["template"] = _template(r.get("template"))
        out.append(rec)
    return out


def pairs_from_table(table: pd.DataFrame | Sequence[dict]) -> list[PromptPair]:
    """Validated pairs from the editor table (fresh empty rows are ignored).

    Raises:
        InputError: a row lacks a prompt or answer (names the 1-based row), no pair at all, or
            more than :data:`MAX_APP_PAIRS` pairs.
    """
    pairs = pairs_from_records(records_from_table(table))
    if len(pairs) > MAX_APP_PAIRS:
        raise InputError(f"{len(pairs)} pairs is more than the app runs at once ({MAX_APP_PAIRS}); "
                         "use the 'sfc discover' CLI for larger sets")
    return pairs


def parse_pairs_upload(data: bytes, name: str = "the uploaded file") -> list[PromptPair]:
    """Prompt pairs from an uploaded JSON Lines file (our spelling or feature-circuits').

    Raises:
        InputError: too large, not UTF-8 text, a line that is not a JSON object with the four
            keys (names the line), or no pair at all.
    """
    if len(data) > MAX_UPLOAD_BYTES:
        raise InputError(f"{name} is {len(data) / 1e6:.1f} MB; the limit is {MAX_UPLOAD_BYTES / 1e6:.0f} MB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{name} is not UTF-8 text; upload a JSON Lines file (one JSON object per line)") from None
    try:
        pairs = read_pairs(text.splitlines())
    except InputError as exc:
        raise InputError(f"{name}: {exc} — expected JSON Lines with keys "
                         f"{', '.join(PAIR_COLUMNS)} (or clean_prefix, patch_prefix, clean_answer, patch_answer)") from None
    if len(pairs) > MAX_APP_PAIRS:
        raise InputError(f"{name} has {len(pairs)} pairs; the app runs at most {MAX_APP_PAIRS} at once")
    return pairs


def _toks(tokens: Sequence[str]) -> str:
    return " | ".join(repr(t)[1:-1] for t in tokens)


def report_table(report: Sequence[dict]) -> pd.DataFrame:
    """:func:`~sfc_core.pairs.pair_report` as a display table (one row per pair)."""
    rows = []
    for r in report:
        rows.append({
            "row": r["row"],
            "ok": "✓" if r["valid"] else "✗",
            "clean tokens": f"{len(r['clean_tokens'])}: {_toks(r['clean_tokens'])}",
            "corrupted tokens": f"{len(r['corrupted_tokens'])}: {_toks(r['corrupted_tokens'])}",
            "answer": _toks(r["answer_tokens"]),
            "wrong answer": _toks(r["wrong_tokens"]),
            "problem": r["problem"] or "",
        })
    return pd.DataFrame(rows, columns=["row", "ok", "clean tokens", "corrupted tokens", "answer", "wrong answer",
                                       "problem"])


def report_problems(report: Sequence[dict]) -> list[str]:
    """One line per invalid pair: ``"row 3: answer ' Christopher' is 2 tokens"``."""
    return [f"row {r['row']}: {r['problem']}" for r in report if not r["valid"]]


# ------------------------------------------------------------------ cache keys
def input_key(**parts: Any) -> str:
    """A short stable hash of everything a discovery depends on (JSON of ``parts``)."""
    blob = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def sae_signature(saes: dict) -> list[list[str]]:
    """``[[hook_name, source], ...]`` of an SAE dict, for cache keys and captions."""
    return [[h, str(getattr(s, "source", "custom"))] for h, s in saes.items()]


# ------------------------------------------------------------------ nodes
def _node(G, node_id: str):
    """The :class:`~sfc_core.nodes.Node` of a graph node (``None`` if neither its attributes nor its id
    describe one)."""
    try:
        return nodes.graph_node(node_id, dict(G.nodes[node_id]) if node_id in G else None)
    except InputError:
        return None


def node_info(G, node_id: str) -> dict:
    """``{"id", "hook_name", "feature", "position", "effect", "activation", "kind"}`` of a node
    (kind: ``feature``, ``error``, ``embed`` or ``metric``; feature: the latent's index, else the kind's word).

    Raises:
        InputError: neither the node's attributes nor its id describe a node.
    """
    data = dict(G.nodes[node_id]) if node_id in G else {}
    node = nodes.graph_node(node_id, data)
    return {"id": node_id, "hook_name": data.get("hook_name") or node.hook_name, "feature": node.feature,
            "position": node.position, "effect": data.get("effect"), "activation": data.get("activation"),
            "kind": PANEL_KINDS.get(node.kind, node.kind)}


def inner_node_ids(G) -> list[str]:
    """Feature and error nodes of ``G`` in graph order (the embedding / metric end points left out)."""
    return [n for n in G.nodes if not nodes.is_end_id(n)]


def ranked_node_ids(G) -> list[str]:
    """Feature and error nodes of ``G`` by ``|effect|``, largest first (embed / metric excluded)."""
    return sorted(inner_node_ids(G), key=lambda n: (-abs(float(G.nodes[n].get("effect") or 0.0)), n))


def node_label(G, node_id: str) -> str:
    """Selectbox text of a node: ``"L7 #1234 (effect −0.53) · its label · node id"``."""
    if not node_id:
        return "—"
    info = node_info(G, node_id)
    layer = G.nodes[node_id].get("layer") if node_id in G else None
    feat = "ε" if info["kind"] == "error" else f"#{info['feature']}"
    pos = f" @{info['position']}" if info["position"] is not None else ""
    eff = info["effect"]
    eff_s = f" (effect {eff:+.3g})" if isinstance(eff, (int, float)) else ""
    from sfc_core.annotations import display_label

    label = display_label(G, node_id)
    return f"L{layer} {feat}{pos}{eff_s}  ·  " + (f"{label}  ·  " if label else "") + node_id


def circuit_hooks(G) -> list[str]:
    """Hook points of a circuit's feature and error nodes, in depth order."""
    seen: dict[str, int] = {}
    for n, d in G.nodes(data=True):
        node = _node(G, n)
        if node is None or node.is_end or not node.hook_name or node.hook_name in seen:
            continue
        seen[node.hook_name] = int(d["layer"]) if d.get("layer") is not None else hooks.layer_of(node.hook_name)
    return sorted(seen, key=lambda h: (seen[h], h))


def feature_labels(G, logit_tokens, flags=None) -> dict[str, str]:
    """Text per node for the graph (its first 18 characters are drawn next to the node, the rest is in the
    hover): the node's label (the user's rename, else its automatic label, :func:`sfc_core.annotations.display_label`),
    then ``"promotes: ' Mary', ' John', ' she'"``; led by ``"⚠ massive · "`` for a degenerate latent.

    Args:
        logit_tokens: ``callable(hook_name, feature) -> list[str] | None`` (top promoted tokens).
        flags: optional ``callable(hook_name, feature) -> list[str]`` (degenerate-latent flags).
    """
    from sfc_core.annotations import display_label

    out = {}
    for n in G.nodes:
        node = _node(G, n)
        if node is None or node.is_end:
            continue
        parts = [display_label(G, n)]
        if node.is_latent:
            try:
                toks = logit_tokens(node.hook_name, node.index)
            except Exception:  # noqa: BLE001 - a label is never worth an error
                toks = None
            try:
                warn = list(flags(node.hook_name, node.index) or []) if flags is not None else []
            except Exception:  # noqa: BLE001 - a label is never worth an error
                warn = []
            parts.append("promotes: " + ", ".join(repr(t) for t in toks[:3]) if toks else "")
            if warn:
                parts.insert(0, f"⚠ {', '.join(warn)}")
        text = " · ".join(p for p in parts if p)
        if text:
            out[n] = text
    return out


# ------------------------------------------------------------------ selection widgets
def effect_range(d) -> tuple[float, float]:
    """``(max |node effect|, max |edge weight|)`` of a :class:`~sfc_core.discovery.Discovery` (≥ tiny)."""
    emax = 0.0
    for e in d.attribution.effects:
        if e.numel():
            emax = max(emax, float(e.abs().max()))
    wmax = max((abs(float(w)) for w in d.edges.values()), default=0.0)
    return max(emax, 1e-6), max(wmax, 1e-6)


def nice_step(vmax: float) -> float:
    """A slider step about 1/200 of ``vmax`` rounded to 1, 2 or 5 × 10^k."""
    raw = max(vmax, 1e-9) / 200.0
    exp = math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * 10 ** exp >= raw:
            return float(m * 10 ** exp)
    return float(10 ** (exp + 1))


def round_up(v: float, step: float) -> float:
    return float(math.ceil(v / step) * step)


def curve_sizes(n_nodes: int) -> list[int]:
    """Circuit sizes for a faithfulness curve of a circuit with ``n_nodes`` nodes."""
    sizes = [s for s in (1, 2, 5, 10, 20, 50, 100, 200, 500) if s < n_nodes]
    return sizes + [n_nodes] if n_nodes > 0 else [1]


def _int_list(text: str, empty: str, not_int: str, seps: str = ",") -> list[int]:
    """The integers of a comma-separated text (``;`` too when in ``seps``). Raises InputError ``empty`` / ``not_int``."""
    raw = str(text or "")
    for sep in seps[1:]:
        raw = raw.replace(sep, ",")
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    if not parts:
        raise InputError(empty)
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise InputError(not_int) from None


def parse_sizes(text: str) -> list[int]:
    """``"5, 10,20"`` → ``[5, 10, 20]``.

    Raises:
        InputError: empty, not integers, or a size ≤ 0.
    """
    sizes = _int_list(text, "give circuit sizes as comma-separated positive integers, e.g. 5,10,20,50",
                      f"circuit sizes must be integers, e.g. 5,10,20,50 (got {text!r})", seps=",;")
    if any(s <= 0 for s in sizes):
        raise InputError("circuit sizes must be positive")
    if len(sizes) > 12:
        raise InputError("give at most 12 circuit sizes")
    return sorted(set(sizes))


# ------------------------------------------------------------------ feature panel
def token_text(tok: str) -> str:
    """A token as displayed: newlines as ↵, tabs as →."""
    return tok.replace("\n", "↵").replace("\t", "→")


def highlight_html(tokens: Sequence[str], activations: Sequence[float], max_activation: float | None = None,
                   mark: int | None = None) -> str:
    """One context as HTML spans whose background alpha is ∝ the token's activation
    (``activation / max_activation``, clipped to [0, 1]); the token at ``mark`` is underlined."""
    top = max_activation if max_activation and max_activation > 0 else max([a for a in activations if a] + [0.0])
    top = top if top > 0 else 1.0
    spans = []
    for i, (tok, act) in enumerate(zip(tokens, activations)):
        a = float(act or 0.0)
        alpha = min(max(a / top, 0.0), 1.0)
        style = f"background-color: rgba(255, 127, 14, {alpha:.3f}); border-radius: 2px;"
        if i == mark:
            style += " border-bottom: 2px solid #7c2d12; font-weight: 600;"
        spans.append(f'<span class="sfc-tok" title="activation {a:.3g}" style="{style}">'
                     f"{html.escape(token_text(tok))}</span>")
    return ('<div class="sfc-example" style="font-family: ui-monospace, monospace; white-space: pre-wrap; '
            'line-height: 1.9; margin-bottom: 0.35rem;">' + "".join(spans) + "</div>")


def first_live_feature(index) -> int:
    """The first feature of a feature index that has at least one activating example (else 0)."""
    try:
        live = (index.tensors["top_seq"][:, 0] >= 0).nonzero().flatten()
        return int(live[0]) if len(live) else 0
    except Exception:  # noqa: BLE001
        return 0


def logit_table(items: Sequence[tuple], decode=None) -> pd.DataFrame:
    """``[(token or token_id, value)]`` → table ``token, logit per unit``."""
    rows = []
    for tok, val in items:
        text = decode(tok) if decode is not None and not isinstance(tok, str) else str(tok)
        rows.append({"token": repr(text), "logit / unit activation": round(float(val), 4)})
    return pd.DataFrame(rows, columns=["token", "logit / unit activation"])


def ablation_help(kinds, lead: str = "", tail: str = "") -> str:
    """Help text of an ablation choice: ``lead``, one ``kind: description`` per kind
    (:data:`sfc_core.ablation.DESCRIPTIONS`), ``tail``."""
    body = "; ".join(f"{k}: {ABLATION_DESCRIPTIONS.get(k, k)}" for k in kinds)
    return " ".join(part for part in (lead, body + ".", tail) if part)


def ablation_table(result: dict, pairs: Sequence[PromptPair] | None = None) -> pd.DataFrame:
    """Per pair: metric before → after one feature's ablation, and the change."""
    rows = []
    for i, (b, a) in enumerate(zip(result["before"], result["after"])):
        row = {"pair": str(i + 1)}
        if pairs is not None and i < len(pairs):
            row["clean prompt"] = pairs[i].clean
        row.update({"before": round(float(b), 4), "after": round(float(a), 4), "change": round(float(a) - float(b), 4)})
        rows.append(row)
    rows.append({"pair": "mean", **({"clean prompt": ""} if pairs is not None else {}),
                 "before": round(result["mean_before"], 4), "after": round(result["mean_after"], 4),
                 "change": round(result["mean_after"] - result["mean_before"], 4)})
    return pd.DataFrame(rows)


def ablation_summary(result: dict) -> str:
    """``"logit difference: 3.214 → 1.052 (change −2.162; mean over 6 pairs, zero ablation)"``."""
    b, a = result["mean_before"], result["mean_after"]
    return (f"{metric_label(result.get('metric'), long=True)}: {b:.3f} → {a:.3f} (change {a - b:+.3f}; mean over "
            f"{len(result['before'])} pairs, {result.get('ablation', 'zero')} ablation)")


def token_change_table(result: dict) -> pd.DataFrame:
    """The ablation's largest next-token log-prob rises and falls side by side."""
    up, down = result.get("promoted", []), result.get("suppressed", [])
    rows = []
    for i in range(max(len(up), len(down))):
        row = {}
        if i < len(up):
            row.update({"more likely": repr(up[i][0]), "Δ log-prob (up)": round(up[i][1], 4)})
        if i < len(down):
            row.update({"less likely": repr(down[i][0]), "Δ log-prob (down)": round(down[i][1], 4)})
        rows.append(row)
    return pd.DataFrame(rows)


def steering_table(result: dict) -> pd.DataFrame:
    """Top next tokens before / after steering, side by side (probabilities)."""
    rows = []
    for i, (b, a) in enumerate(zip(result["before"], result["after"])):
        rows.append({"rank": i + 1, "before": repr(b[0]), "p before": round(b[1], 4),
                     "after": repr(a[0]), "p after": round(a[1], 4)})
    return pd.DataFrame(rows)


def neuronpedia_url(neuronpedia_id: str | None, feature: int) -> str | None:
    """Neuronpedia page of a feature (``None`` without an id)."""
    if not neuronpedia_id:
        return None
    return f"https://www.neuronpedia.org/{neuronpedia_id.strip('/')}/{int(feature)}"


# ------------------------------------------------------------------ bundle / SAEs
def quality_table(manifest: dict) -> pd.DataFrame:
    """The bundle's recorded quality figures, one row per SAE, with the bar each must pass."""
    from sfc_core.bundle import QUALITY_BAR, passes_bar

    rows = []
    for hook, q in (manifest.get("quality") or {}).items():
        try:
            ok = passes_bar(q)
        except Exception:  # noqa: BLE001
            ok = None
        rows.append({"hook point": hook, "FVE": q.get("fve"), "CE loss recovered": q.get("ce_recovered"),
                     "L0": q.get("l0"), "dead fraction": q.get("dead_frac"),
                     "passes bar": {True: "yes", False: "no", None: "?"}[ok]})
    df = pd.DataFrame(rows, columns=["hook point", "FVE", "CE loss recovered", "L0", "dead fraction", "passes bar"])
    df.attrs["bar"] = (f"bar: FVE ≥ {QUALITY_BAR['fve']}, CE recovered ≥ {QUALITY_BAR['ce_recovered']}, "
                       f"L0 ≤ {QUALITY_BAR['l0']:g}, dead ≤ {QUALITY_BAR['dead_frac']}")
    return df


def sae_table(saes: dict) -> pd.DataFrame:
    rows = []
    for hook, s in saes.items():
        sae = getattr(s, "sae", s)
        cfg = getattr(sae, "cfg", None)
        arch = None
        if cfg is not None:
            arch = getattr(cfg, "architecture", None)
            arch = arch() if callable(arch) else arch
        rows.append({"hook point": hook, "source": getattr(s, "source", "custom"),
                     "d_sae": int(cfg.d_sae) if cfg is not None else None,
                     "architecture": str(arch or type(sae).__name__),
                     "neuronpedia": getattr(s, "neuronpedia_id", None) or ""})
    return pd.DataFrame(rows, columns=["hook point", "source", "d_sae", "architecture", "neuronpedia"])


def parse_layers(text: str) -> list[int]:
    """``"3, 7,11"`` → ``[3, 7, 11]``.

    Raises:
        InputError: empty or not non-negative integers.
    """
    layers = _int_list(text, "give the layers to load, e.g. 3,7,11",
                       f"layers must be integers separated by commas, e.g. 3,7,11 (got {text!r})")
    if any(v < 0 for v in layers):
        raise InputError("layers must be ≥ 0")
    return sorted(set(layers))


def fmt_seconds(s: float) -> str:
    return f"{s:.2f} s" if s < 10 else f"{s:.1f} s"
