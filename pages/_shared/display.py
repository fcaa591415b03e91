"""Display helpers of the Streamlit app: pure functions with no Streamlit import (app code, not engine code).

The app (``app.py``, ``pages/``) gathers inputs, calls these and the engine, and renders.
Everything here is deterministic and cheap so it can run on every rerun:

* prompt-pair tables ⇄ :class:`~sfc_core.pairs.PromptPair` lists, JSONL uploads, per-row
  tokenization reports as tables;
* the *input key* under which a session caches a :class:`~sfc_core.discovery.Discovery`
  (so slider moves re-select from cached effects and never recompute);
* node descriptions for the node list and panel (read through :mod:`sfc_core.nodes`, which owns node
  ids), feature labels for the graph hover, activation highlighting as HTML, slider steps;
* tables of ablation / steering / logit-effect results and of the bundle's quality figures;
* the words of the screen: an engine error's or warning's fix worded as the control the app shows
  (:data:`UI_CONTROLS`, :func:`screen_message`), and sentences that read a number back to the learner
  (faithfulness, completeness, AtP against exact patching, the metric, an SAE's encoding, error nodes).
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


#: The app's control for each engine option an error or warning can name as its fix (``exc.fix``,
#: :mod:`sfc_core.errors`): option -> ``(control label, {engine value: choice label})``, in the order the
#: choices are offered. The explorer's sidebar builds its controls from these, so a fix and the control it
#: points at always read the same. A control whose choices are ``on`` / ``off`` is a toggle.
UI_CONTROLS: dict[str, tuple[str, dict[str, str]]] = {
    "multi_token": ("Answers longer than one token", {"reject": "refuse them (error)",
                                                      "truncate": "use the first token"}),
    "length_mismatch": ("Pairs whose prompts differ in token length", {"skip": "skip them",
                                                                       "align_last": "align at the last token"}),
    "aggregation": ("Aggregate over positions", {"sum": "on", "none": "off"}),
}


def fix_words(fix, where: str | None = "in the sidebar", controls: Iterable[str] | None = None) -> str | None:
    """A fix ``(option, value)`` as an instruction about the app's control, e.g.
    ``"Fix: in the sidebar, set *Answers longer than one token* to *use the first token*."``; a toggle reads
    ``"Fix: in the sidebar, switch *Aggregate over positions* on."``.

    Args:
        fix: an :class:`~sfc_core.errors.Fix` or ``(option, value)`` pair, or ``None``.
        where: where the control is on the page showing the message (``"in the sidebar"``, ``"above"``), or
            ``None`` to leave the place out.
        controls: the options the page showing the message has a control for (``None``: every option of
            :data:`UI_CONTROLS`, as on the explorer); a fix for any other option is left out.

    Returns:
        The sentence, or ``None`` when there is no fix or the page has no control for it (then no instruction
        is better than one the user cannot follow).
    """
    if fix is None:
        return None
    option, value = fix
    if controls is not None and option not in set(controls):
        return None
    control = UI_CONTROLS.get(option)
    if control is None or value not in control[1]:
        return None
    label, choices = control
    lead = f"Fix: {where}, " if where else "Fix: "
    if set(choices.values()) == {"on", "off"}:
        return f"{lead}switch *{label}* {choices[value]}."
    return f"{lead}set *{label}* to *{choices[value]}*."


def screen_message(exc, where: str | None = "in the sidebar", controls: Iterable[str] | None = None) -> str:
    """The text the app shows for an engine error or warning: its message, then its fix in the screen's
    words (:func:`fix_words`) when it carries one the app has a control for.

    Args:
        exc: an :class:`~sfc_core.errors.SFCError`, a :class:`~sfc_core.errors.Notice` (a batch warning) or
            any string; the fix is read from its ``fix`` attribute.
        where, controls: where the control is, and which options the page has controls for, as for
            :func:`fix_words` (a page without the control passes ``controls=()``: no fix is named).

    Returns:
        ``"multi-token answers in row 3: ' Christopher' -> 2 tokens; … first token. Fix: in the sidebar, set
        *Answers longer than one token* to *use the first token*."``; the bare message when there is no fix.
    """
    text = str(exc).strip()
    fix = fix_words(getattr(exc, "fix", None), where, controls)
    if not fix:
        return text
    return f"{as_sentence(text)} {fix}"


def as_sentence(text: str) -> str:
    """``text`` ending with a full stop (engine messages are one line without one), to append a sentence to."""
    text = str(text).strip()
    return text if not text or text.endswith((".", "!", "?")) else text + "."


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


def align_drop_text(entry: dict) -> str:
    """What aligning a pair at its last token drops (a :func:`~sfc_core.pairs.pair_report` entry's
    ``align_drop``): ``"corrupted: 'The', ' key'"``; ``""`` when its prompts have the same length."""
    drop = entry.get("align_drop")
    if not drop:
        return ""
    return f"{drop['prompt']}: " + ", ".join(repr(t) for t in drop["tokens"])


#: Columns of :func:`report_table`.
REPORT_COLUMNS = ["row", "ok", "clean tokens", "corrupted tokens", "answer", "wrong answer", "problem",
                  "aligning drops"]


def report_table(report: Sequence[dict]) -> pd.DataFrame:
    """:func:`~sfc_core.pairs.pair_report` as a display table (one row per pair); ``aligning drops`` names the
    prompt and the tokens that aligning at the last token would remove (:func:`align_drop_text`)."""
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
            "aligning drops": align_drop_text(r),
        })
    return pd.DataFrame(rows, columns=REPORT_COLUMNS)


def report_problems(report: Sequence[dict]) -> list[str]:
    """One line per invalid pair: ``"row 3: answer ' Christopher' is 2 tokens"``; a length mismatch also says
    what aligning it would drop: ``"row 2: length mismatch: clean 5 tokens, corrupted 7 (aligning at the last
    token drops the corrupted prompt's 'The', ' key')"``."""
    lines = []
    for r in report:
        if r["valid"]:
            continue
        line = f"row {r['row']}: {r['problem']}"
        drop = r.get("align_drop")
        if drop:
            line += (f" (aligning at the last token drops the {drop['prompt']} prompt's "
                     + ", ".join(repr(t) for t in drop["tokens"]) + ")")
        lines.append(line)
    return lines


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


#: Columns of :func:`ablation_table`, key columns first (a narrow panel cuts the last ones off, never the numbers).
ABLATION_COLUMNS = ["pair", "before", "after", "change", "prompt"]


def ablation_table(result: dict, pairs: Sequence[PromptPair] | None = None) -> pd.DataFrame:
    """Per pair: metric before → after one feature's ablation and the change (metric units, 3 decimals), then
    the clean prompt; a last ``mean`` row over the pairs.

    Columns: :data:`ABLATION_COLUMNS`. The numbers come first because the panel's column is narrow: with the
    prompt first, the numbers were cut off at the right and the ``mean`` row, whose prompt cell is its only
    text, looked blank. That row's prompt cell now says what it is (``"mean of 6 pairs"``).
    """
    rows = []
    for i, (b, a) in enumerate(zip(result["before"], result["after"])):
        rows.append({"pair": str(i + 1), "before": round(float(b), 3), "after": round(float(a), 3),
                     "change": round(float(a) - float(b), 3),
                     "prompt": pairs[i].clean if pairs is not None and i < len(pairs) else ""})
    mb, ma = float(result["mean_before"]), float(result["mean_after"])
    rows.append({"pair": "mean", "before": round(mb, 3), "after": round(ma, 3), "change": round(ma - mb, 3),
                 "prompt": f"mean of {len(result['before'])} pairs"})
    return pd.DataFrame(rows, columns=ABLATION_COLUMNS)


def ablation_summary(result: dict) -> str:
    """``"logit difference: 3.214 → 1.052 (change −2.162; mean over 6 pairs, zero ablation)"``."""
    b, a = result["mean_before"], result["mean_after"]
    return (f"{metric_label(result.get('metric'), long=True)}: {b:.3f} → {a:.3f} (change {a - b:+.3f}; mean over "
            f"{len(result['before'])} pairs, {result.get('ablation', 'zero')} ablation)")


#: Columns of :func:`token_change_table` (short: it shares the panel's width with the ablation table).
TOKEN_CHANGE_COLUMNS = ["more likely", "Δ up", "less likely", "Δ down"]


def token_change_table(result: dict) -> pd.DataFrame:
    """The ablation's largest next-token log-prob rises and falls side by side (nats, 3 decimals)."""
    up, down = result.get("promoted", []), result.get("suppressed", [])
    rows = []
    for i in range(max(len(up), len(down))):
        row = {}
        if i < len(up):
            row.update({"more likely": repr(up[i][0]), "Δ up": round(up[i][1], 3)})
        if i < len(down):
            row.update({"less likely": repr(down[i][0]), "Δ down": round(down[i][1], 3)})
        rows.append(row)
    return pd.DataFrame(rows, columns=TOKEN_CHANGE_COLUMNS)


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


def transcoder_quality_table(manifest: dict) -> pd.DataFrame:
    """The shipped transcoders' recorded quality figures (``manifest["transcoders"]``), one row per layer, plus a
    last row for every MLP replaced at once; empty when none are shipped."""
    from sfc_core.transcoders import QUALITY_BAR

    tc = manifest.get("transcoders") or {}
    cols = ["hook point", "FVE", "CE loss recovered", "L0", "dead fraction", "passes bar"]
    rows = []
    for hook, q in (tc.get("quality") or {}).items():
        ok = q.get("fve", 0) >= QUALITY_BAR["fve"] and q.get("dead_frac", 1) <= QUALITY_BAR["dead_frac"] and \
            q.get("ce_recovered", 0) >= QUALITY_BAR["ce_recovered"]
        rows.append({"hook point": hook, "FVE": q.get("fve"), "CE loss recovered": q.get("ce_recovered"),
                     "L0": q.get("l0"), "dead fraction": q.get("dead_frac"), "passes bar": "yes" if ok else "no"})
    everything = tc.get("all_layers")
    if everything:
        ok = everything.get("ce_recovered", 0) >= QUALITY_BAR["ce_recovered_all"]
        rows.append({"hook point": f"all {len(rows)} MLPs at once", "CE loss recovered": everything.get("ce_recovered"),
                     "passes bar": "yes" if ok else "no"})
    df = pd.DataFrame(rows, columns=cols)
    df.attrs["bar"] = (f"bar: FVE of the MLP output ≥ {QUALITY_BAR['fve']}, CE recovered ≥ {QUALITY_BAR['ce_recovered']} "
                       f"per layer and with all layers replaced, dead ≤ {QUALITY_BAR['dead_frac']}")
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
    """``3.21 s``, ``42.0 s``, ``4 min 10 s`` (minutes from 2 minutes on)."""
    if s >= 120:
        return f"{int(s // 60)} min {int(round(s % 60))} s"
    return f"{s:.2f} s" if s < 10 else f"{s:.1f} s"


# ------------------------------------------------------------------ numbers read back to the learner
# Each function turns numbers the page has just shown into a sentence built from those numbers, so the
# words can never disagree with the figure beside them. Percentages are written "8 %".
def num(x: float, digits: int = 2) -> str:
    """``x`` with ``digits`` decimals, never ``"-0.00"`` (a tiny negative reads as zero, as it is shown)."""
    text = f"{float(x):.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def pct(x: float) -> str:
    """``0.0812`` → ``"8 %"`` (whole percent; ``"<1 %"`` for small non-zero shares)."""
    v = 100.0 * float(x)
    if 0 < abs(v) < 0.5:
        return "<1 %"
    return f"{v:.0f} %"


def short_node(node_id: str) -> str:
    """A node id as the Tour names it: ``"ε at L7"`` for an error node, ``"L7 #1234"`` for a latent
    (``"@pos"`` added for a position-resolved node); the raw id when it describes no node."""
    try:
        node = nodes.parse_id(node_id)
    except InputError:
        return str(node_id)
    layer = hooks.layer_of(node.hook_name)
    where = f"L{layer}" if layer >= 0 else node.hook_name
    pos = f" @{node.position}" if node.position is not None else ""
    if node.is_error:
        return f"ε at {where}{pos}"
    if node.is_latent:
        return f"{where} #{node.index}{pos}"
    return f"{node.kind} at {where}{pos}" if node.hook_name else f"{node.kind}{pos}"


def _is_error(node_id: str) -> bool:
    """Whether a node id names an error node ε (``False`` for an id that names no node)."""
    try:
        return nodes.parse_id(node_id).is_error
    except InputError:
        return False


def next_token_sentence(top: Sequence[tuple[str, float]], answer: str) -> str:
    """Read the model's next-token table back: where the expected answer ranks and with what probability.

    Args:
        top: ``[(token, probability)]``, most likely first.
        answer: the expected next token (e.g. ``" Mary"``).
    """
    if not top:
        return "The model gave no next tokens."
    ranks = [i for i, (tok, _) in enumerate(top) if tok == answer]
    first, p_first = top[0]
    if not ranks:
        return (f"The expected answer {answer!r} is not among the model's top {len(top)}: its first choice is "
                f"{first!r} ({pct(p_first)}).")
    i = ranks[0]
    p = top[i][1]
    if i == 0:
        runner = f"; the runner-up {top[1][0]!r} gets {pct(top[1][1])}" if len(top) > 1 else ""
        return f"The model's first choice is the expected answer {answer!r}, with {pct(p)} of the probability{runner}."
    return (f"The expected answer {answer!r} is the model's choice number {i + 1} ({pct(p)}); it prefers {first!r} "
            f"({pct(p_first)}).")


def faithfulness_sentence(f: float | None, n_nodes: int, metric: str = "logit difference") -> str:
    """What a faithfulness ``f`` of a circuit of ``n_nodes`` nodes means, from ``f`` itself.

    Faithfulness is ``(m(C) − m(∅)) / (m(M) − m(∅))`` (DESIGN.md): the share of the way from the fully
    ablated model to the full model that the circuit alone (every other node ablated) recovers.

    Returns:
        e.g. ``"0.08: the 30 nodes alone recover 8 % of the clean-vs-corrupted logit difference; the rest of
        the behaviour (92 %) runs through nodes outside them."``; negative, above-1 and undefined (``None``)
        values get their own reading.
    """
    one = n_nodes == 1
    nodes_txt = f"the {n_nodes:,} node{'' if one else 's'}"
    s_ = "s" if one else ""  # verb ending: "the 1 node recovers", "the 30 nodes recover"
    if f is None or not math.isfinite(float(f)):
        return ("Faithfulness is undefined here: the full model and the fully ablated one give the same "
                f"{metric}, so there is no behaviour to recover.")
    f = float(f)
    head = f"{num(f)}: {nodes_txt} alone"
    if abs(f) < 0.005:
        return (f"{head} recover{s_} none of the clean-vs-corrupted {metric}: the behaviour runs through nodes "
                f"outside {'it' if one else 'them'}.")
    if f < 0:
        return (f"{head} do{'es' if one else ''} worse than ablating every node: {'it pushes' if one else 'they push'} "
                f"the {metric} away from the full model's value, and the behaviour runs through nodes outside "
                f"{'it' if one else 'them'}.")
    if f > 1.05:
        return (f"{head} overshoot{s_} the full model by {pct(f - 1)}: nodes outside {'it' if one else 'them'} pull "
                f"the {metric} back, so the circuit leaves out parts that work against the behaviour.")
    if f >= 0.95:
        return (f"{head} recover{s_} {pct(min(f, 1.0))} of the clean-vs-corrupted {metric}: nearly all of the "
                f"behaviour runs through {'it' if one else 'them'}.")
    return (f"{head} recover{s_} {pct(f)} of the clean-vs-corrupted {metric}; the rest of the behaviour "
            f"({pct(1 - f)}) runs through nodes outside {'it' if one else 'them'}.")


def completeness_sentence(c: float | None, n_nodes: int) -> str:
    """What a completeness ``c`` (the same score for the circuit's complement; lower is better) means.

    Returns:
        e.g. ``"0.12: with these 30 nodes ablated and every other node intact, the model keeps 12 % of the
        behaviour, so the circuit holds most of what matters."``
    """
    if c is None or not math.isfinite(float(c)):
        return "Completeness is undefined here: there is no behaviour to measure it against."
    c = float(c)
    head = f"{num(c)}: with these {n_nodes:,} nodes ablated and every other node intact, the model keeps"
    if c <= 0:
        return f"{head} none of the behaviour, so the circuit holds all of what matters."
    if c < 0.25:
        return f"{head} {pct(c)} of the behaviour, so the circuit holds most of what matters."
    if c < 0.75:
        return f"{head} {pct(c)} of the behaviour: other routes outside the circuit carry a good part of it."
    return (f"{head} {pct(min(c, 1.0)) if c <= 1 else 'more than all'} of the behaviour: the model mostly does "
            "without these nodes, through other routes.")


def _miss(atp: float, exact: float) -> str:
    """How AtP's estimate relates to the exact effect of one node, as words with the factor read from both."""
    if exact == 0 and atp == 0:
        return "both see no effect"
    if atp == 0:
        return f"AtP sees no effect at all, exact patching {exact:+.3f}"
    if exact == 0:
        return f"AtP gives {atp:+.3f}, exact patching no effect at all"
    if (atp > 0) != (exact > 0):
        return f"AtP gets its sign wrong ({atp:+.3f} against an exact {exact:+.3f})"
    f = abs(exact) / abs(atp)
    if f >= 1:
        return f"AtP's linear approximation misses it by a factor {f:.1f} ({atp:+.3f} against an exact {exact:+.3f})"
    return f"AtP overstates it by a factor {1 / f:.1f} ({atp:+.3f} against an exact {exact:+.3f})"


def atp_exact_sentences(rows: Sequence[tuple[str, float, float]]) -> list[str]:
    """Read an AtP-vs-exact table back: sign agreement, the node AtP misses most, and why a large error node
    that AtP underrates matters.

    Args:
        rows: ``(node id, AtP effect, exact effect)`` per node (metric units).

    Returns:
        Sentences (Markdown), e.g. ``["AtP gets the sign right for 9 of 10 nodes.", "The largest miss is ε at
        L7: AtP's linear approximation misses it by a factor 4.0 (−0.300 against an exact −1.200).", "An error
        node …"]``; ``[]`` for no rows.
    """
    rows = [(str(n), float(a), float(e)) for n, a, e in rows]
    if not rows:
        return []
    n = len(rows)
    agree = sum(1 for _, a, e in rows if (a > 0) == (e > 0) or (a == 0 and e == 0))
    out = [f"AtP gets the sign right for {agree} of {n} nodes."]
    worst = max(rows, key=lambda r: abs(r[2] - r[1]))
    out.append(f"The largest miss is **{short_node(worst[0])}**: {_miss(worst[1], worst[2])}.")
    # An error node whose exact effect is large but AtP's small is the case a learner must not overlook.
    under = [r for r in rows if _is_error(r[0]) and abs(r[2]) > abs(r[1]) and
             (r[1] > 0) == (r[2] > 0) and r[1] != 0]
    err = max(under, key=lambda r: abs(r[2]) / abs(r[1]), default=None)
    if err is not None and abs(err[2]) / abs(err[1]) >= 1.5:
        f = abs(err[2]) / abs(err[1])
        lead = ("It is an error node" if err is worst else
                f"The error node **{short_node(err[0])}** is underrated too: AtP misses it by a factor {f:.1f}")
        out.append(f"{lead}. ε holds everything the SAE has not learned at that layer, and its effect runs "
                   "through non-linear steps (attention patterns, layer norms) that AtP's one linear step cannot "
                   f"see: ranked by AtP, a node {f:.1f}× more important than it looks can fall out of a circuit, "
                   "and the circuit then hides how much of the behaviour the features do not explain. Exact "
                   "patching (`sfc verify`) measures it.")
    elif any(_is_error(r[0]) for r in rows):
        out.append("AtP does not underrate any error node here by a factor of 1.5 or more.")
    return out


def metric_sentence(m_clean: Sequence[float], m_corrupted: Sequence[float]) -> str:
    """Read the logit difference on clean and corrupted prompts back: mean values, what they mean as odds
    between the two answer tokens (``m`` logits is ``p(answer) / p(wrong answer) = e^m``), how many pairs the
    model gets right, and the gap patching moves across.

    Args:
        m_clean, m_corrupted: the metric per pair ``[n]`` (logits).
    """
    mc = [float(v) for v in m_clean]
    mk = [float(v) for v in m_corrupted]
    if not mc or not mk:
        return "No pairs to measure."
    a, b = sum(mc) / len(mc), sum(mk) / len(mk)

    def odds(m: float) -> str:
        r = math.exp(min(abs(m), 50.0))
        return f"{r:,.0f} to 1" if r >= 10 else f"{r:.1f} to 1"

    clean = (f"on the clean prompts the model prefers the answer by {a:.2f} logits (odds of about {odds(a)} "
             "between the two tokens)" if a > 0 else
             f"on the clean prompts the model prefers the wrong answer by {-a:.2f} logits: it fails the task")
    corr = (f"on the corrupted prompts it prefers the wrong answer, the corrupted prompt's own, by {-b:.2f} logits "
            f"(odds of about {odds(b)})" if b < 0 else
            f"on the corrupted prompts it still prefers the answer, by {b:.2f} logits")
    return (f"On average m(clean) = {a:+.2f}: {clean}. m(corrupted) = {b:+.2f}: {corr}. It is right on "
            f"{sum(1 for v in mc if v > 0)} of {len(mc)} clean prompts (m > 0) and {sum(1 for v in mk if v < 0)} of "
            f"{len(mk)} corrupted ones (m < 0). " + (
                f"Running the corrupted activations through the clean prompt moves m across this whole gap of "
                f"{a - b:.2f} logits; a node's indirect effect is how far patching that node alone moves it."
                if a > b else "There is no gap from clean to corrupted here: these pairs do not test the behaviour."))


def sae_sentence(active: int, d_sae: int, fve: float, d_model: int | None = None) -> str:
    """Read an SAE's encoding of a prompt back: how many features are active at the last token, and how much of
    the residual's variance the reconstruction explains (the rest is the error node ε)."""
    vec = f"this {d_model}-number vector" if d_model else "this residual vector"
    share = f" ({pct(active / d_sae)} of them)" if d_sae else ""
    head = (f"{active} of the SAE's {d_sae:,} features are active at the last token{share}: the SAE writes {vec} "
            f"as a sum of {active} learned direction{'s' if active != 1 else ''}.")
    if not math.isfinite(float(fve)):
        return head
    if fve <= 0:
        return head + (" Over the prompt's tokens their reconstruction explains none of the residual's variance: "
                       "the error node ε carries all of it.")
    return head + (f" Over the prompt's tokens they explain {pct(min(fve, 1.0))} of the residual's variance; the "
                   f"other {pct(max(1 - fve, 0.0))} is the error node ε.")


def error_share(effects: dict[str, float]) -> tuple[int, float]:
    """``(number of error nodes, their share of the total |effect|)`` of a circuit's nodes (id -> effect)."""
    total = sum(abs(float(v)) for v in effects.values())
    err = [abs(float(v)) for n, v in effects.items() if _is_error(n)]
    return len(err), (sum(err) / total if total else 0.0)


def error_nodes_sentence(effects: dict[str, float], task: str = "the task") -> str:
    """How much of a circuit is error nodes: their count, their share of the circuit's total |effect| and
    their layers (largest |effect| first).

    Args:
        effects: node id -> effect (metric units), feature and error nodes of the circuit.
        task: the behaviour's name, as the sentence says it (``"SVA"``).
    """
    n = len(effects)
    n_err, share = error_share(effects)
    if not n_err:
        return ((f"None of the {n} nodes is an error node" if n != 1 else "The one node is not an error node")
                + ": at this size the SAE features carry what the circuit shows.")
    err = {k: float(v) for k, v in effects.items() if _is_error(k)}
    are = "is an error node" if n_err == 1 else "are error nodes"
    return (f"{n_err} of the {n} nodes {are} (ε), with {pct(share)} of the circuit's total |effect|: that share of "
            f"what these nodes do for {task} passes through directions the SAEs have not learned, at "
            + ", ".join(short_node(k).removeprefix("ε at ") for k in sorted(err, key=lambda k: -abs(err[k])))
            + ".")


def error_comparison_sentence(a: tuple[str, dict[str, float]], b: tuple[str, dict[str, float]]) -> str:
    """Which of two circuits leans more on error nodes, by their share of |effect| (:func:`error_share`).

    Args:
        a, b: ``(task name, node id -> effect)`` of each circuit.
    """
    (na, ea), (nb, eb) = a, b
    sa, sb = error_share(ea)[1], error_share(eb)[1]
    if abs(sa - sb) < 0.05:
        return (f"Error nodes carry about the same share in both: {pct(sa)} of {na}'s |effect|, {pct(sb)} of "
                f"{nb}'s.")
    more, less = (na, nb) if sa > sb else (nb, na)
    return (f"Error nodes carry {pct(sa)} of {na}'s |effect| against {pct(sb)} of {nb}'s: {more} leans more on what "
            f"the SAEs have not learned than {less} does.")


def layers_sentence(nodes_per_layer: dict[int, int]) -> str:
    """Where a circuit's nodes sit: the layer holding most of them and the span of layers used."""
    if not nodes_per_layer:
        return "The circuit has no nodes."
    total = sum(nodes_per_layer.values())
    top = max(nodes_per_layer, key=lambda k: (nodes_per_layer[k], -k))
    lo, hi = min(nodes_per_layer), max(nodes_per_layer)
    return (f"Most nodes sit at L{top} ({nodes_per_layer[top]} of {total}); the circuit spans "
            + (f"L{lo}–L{hi}." if lo != hi else f"L{lo} alone."))


def baseline_sentence(m_full: float, m_empty: float, metric: str = "logit difference") -> str:
    """The two ends of the faithfulness scale: ``m(full)`` is faithfulness 1, ``m(∅)`` faithfulness 0."""
    return (f"m(full) = {m_full:.3f} and m(∅) = {m_empty:.3f} ({metric}): faithfulness 1 means a circuit alone "
            f"brings m back to {m_full:.3f}, the full model's value; 0 means it leaves m at {m_empty:.3f}, the "
            "value with every node ablated.")


def curve_sentence(method: str, sizes: Sequence[int], faithfulness: Sequence[float | None],
                   random_faithfulness: Sequence[float | None] | None = None) -> str:
    """Read one method's faithfulness curve back at its largest scored size, against random circuits of that
    size."""
    pts = [(int(s), f) for s, f in zip(sizes, faithfulness) if f is not None]
    if not pts:
        return f"{method}: no size could be scored."
    n, f = pts[-1]
    text = f"**{method}**, top {n:,} nodes: " + faithfulness_sentence(f, n)
    rnd = dict(zip([int(s) for s in sizes], random_faithfulness or []))
    r = rnd.get(n)
    if r is not None and math.isfinite(float(r)):
        text += f" Random circuits of {n:,} nodes reach {num(r)}."
    return text
