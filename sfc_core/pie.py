"""PIE's evaluation protocol on transcoder features: FAP, FAP-Synergy and random budgets, removal by patching,
behavioural fidelity (Prune → Interpret → Evaluate; PIE-Pipeline's ``run_pruning.py``).

Everything is **per prompt**, as in PIE: a unit is a feature *occurrence* ``(layer, position, feature)`` of one
prompt, active on its clean or its corrupted run (zero mode: on its clean run), and each prompt keeps its own
``K`` occurrences.

* **Write difference** of an occurrence: ``Δ = (a_clean − a_target) · W_dec[k]`` ``[d_model]``, with ``a_target``
  the feature's activation on the corrupted prompt (``mode="corrupted"``) or 0 (``mode="zero"``).
* **FAP score**: ``∂m/∂mlp_out[L, pos] · Δ`` (gradient × write difference, the gradient of the task metric ``m``
  through the real model on the clean prompt).
* **Removal** of every occurrence outside the kept set: the real model runs on the clean prompt with each MLP
  output shifted by ``−Σ_removed Δ`` at its position (constant patches, so the removed features' writes take their
  target values while the MLPs' reconstruction errors and the kept features stay as the model computes them).
* **Behavioural fidelity**: the last token's ``KL(p_clean ‖ p_patched)`` (nats), mean over prompts; the
  prediction-change rate (argmax differs); and ``fidelity = 1 − min(KL, 1)``.
* **FAP-Synergy** (PIE's boundary re-ranking): the top ``K − b/2`` occurrences by ``|FAP|`` are kept (core, with
  ``b = boundary_percent % · K``), the next ``b`` (at most ``boundary_cap``) compete for the remaining places by
  ``|FAP| / median|FAP|_topK + λ · max(0, median syn) / median|eff(partner)|``, where ``eff(S) = m_clean − m(S
  removed)`` and ``syn(c, p) = eff({c, p}) − eff(c) − eff(p)`` over ``partners_per_candidate`` partners drawn from
  the first ``partners`` core occurrences (pairs with a non-positive single effect are skipped, as in PIE).
* **Random**: ``K`` occurrences drawn uniformly per prompt (mean over ``draws`` seeds).
"""

from __future__ import annotations

import math
import random
import statistics
import time
from dataclasses import asdict, dataclass

import torch

from .errors import InputError
from .nodes import Node

MODES = ("corrupted", "zero")
#: The selections :func:`pie_compare` scores.
PIE_METHODS = ("fap", "fap-synergy", "random")
#: PIE's budgets (occurrences kept per prompt).
PIE_BUDGETS = (10, 25, 50, 75, 100, 200, 400, 800)


@dataclass(frozen=True)
class SynergyConfig:
    """FAP-Synergy's boundary re-ranking (PIE-Pipeline ``run_pruning.py`` flags; PIE's defaults).

    Attributes:
        lambda_syn: weight of the synergy term; boundary_percent: boundary width in % of K; boundary_cap: most
            boundary candidates; partners: core occurrences whose single effects are measured;
            partners_per_candidate: partners drawn per candidate; seed: the draw's seed.
    """

    lambda_syn: float = 5.0
    boundary_percent: float = 50.0
    boundary_cap: int = 32
    partners: int = 32
    partners_per_candidate: int = 8
    seed: int = 0


def check_transcoder_runs(runs) -> None:
    """PIE's protocol needs transcoder sites (a feature's write into an MLP output).

    Raises:
        InputError: a site of ``runs`` is not a transcoder.
    """
    bad = [s.hook_name for s in runs.sites if not getattr(s.sae, "is_transcoder", False)]
    if bad:
        raise InputError(f"--protocol pie needs transcoder features (--features transcoders); {bad[0]} is not a "
                         "transcoder site")


@dataclass
class Occurrences:
    """Every prompt's feature occurrences with their write differences and FAP scores.

    Attributes:
        active: per site ``[n, pos, d_sae]`` bool: the occurrence exists (valid, non-BOS position; active on the
            clean or target run).
        delta: per site ``[n, pos, d_sae]``: ``a_clean − a_target`` (activation units).
        scores: per site ``[n, pos, d_sae]``: FAP score (metric units), 0 where not active.
        counts: ``[n]`` occurrences per prompt.
    """

    active: list[torch.Tensor]
    delta: list[torch.Tensor]
    scores: list[torch.Tensor]
    counts: torch.Tensor

    def flat_scores(self) -> torch.Tensor:
        """``[n, U]``: the |FAP score| of every unit (site, position, feature) of each prompt, ``−inf`` where it is
        not an occurrence (the ranking key); ``U = Σ_sites pos · d_sae``."""
        parts = [torch.where(a, s.abs(), torch.full_like(s, -math.inf)).flatten(1)
                 for a, s in zip(self.active, self.scores)]
        return torch.cat(parts, dim=1)


def occurrences(runs, mode: str = "corrupted") -> Occurrences:
    """:class:`Occurrences` of ``runs`` (a :class:`~sfc_core.attribution.PairRuns` with transcoder sites).

    Raises:
        InputError: an unknown mode, or a site that is not a transcoder.
    """
    from .attribution import clean_gradients

    if mode not in MODES:
        raise InputError(f"unknown PIE removal mode {mode!r}; choose from {', '.join(MODES)}")
    check_transcoder_runs(runs)
    grads = clean_gradients(runs)
    mask = runs.mask[..., None]
    active, delta, scores = [], [], []
    for i, g in enumerate(grads):
        f_clean = runs.clean[i].f
        f_target = runs.corrupted[i].f if mode == "corrupted" else torch.zeros_like(f_clean)
        act = ((f_clean != 0) | (f_target != 0)) & mask
        d = (f_clean - f_target) * act
        active.append(act)
        delta.append(d)
        scores.append((g @ runs.decoder(i).T) * d)
    counts = sum(a.flatten(1).sum(1) for a in active)
    return Occurrences(active, delta, scores, counts)


# ------------------------------------------------------------------ removal and fidelity
def _unflatten(runs, keep_flat: torch.Tensor) -> list[torch.Tensor]:
    """Per-site ``[rows, pos, d_sae]`` views of a ``[rows, U]`` mask."""
    out, start = [], 0
    pos = runs.mask.shape[1]
    for s in runs.sites:
        width = pos * s.d_sae
        out.append(keep_flat[:, start:start + width].view(-1, pos, s.d_sae))
        start += width
    return out


def removal_patches(runs, occ: Occurrences, keep_flat: torch.Tensor, prompt_rows: torch.Tensor) -> list[torch.Tensor]:
    """Per site ``[rows, pos, d_model]``: ``Σ_removed Δ`` for each row's prompt ``prompt_rows[r]`` with the
    occurrences of ``keep_flat`` ``[rows, U]`` kept (every other occurrence removed)."""
    keep = _unflatten(runs, keep_flat)
    out = []
    for i, k in enumerate(keep):
        removed = occ.active[i][prompt_rows] & ~k
        out.append((occ.delta[i][prompt_rows] * removed) @ runs.decoder(i))
    return out


def patched_last_logits(runs, patches: list[torch.Tensor], prompt_rows: torch.Tensor) -> torch.Tensor:
    """Last-position logits ``[rows, d_vocab]`` of the clean prompts ``prompt_rows`` with each site's MLP output
    shifted by ``−patches[i]`` (PIE's removal hooks at ``hook_mlp_out``; no-grad)."""
    from .splice import logits_of, run_from

    def edit(i: int, x: torch.Tensor) -> torch.Tensor:
        return x - patches[i]

    rows = torch.arange(len(prompt_rows))
    with torch.no_grad():
        final = run_from(runs.model, runs.sites, runs.embed_clean[prompt_rows], 0, edit,
                         stop_block=runs.model.cfg.n_layers)
        return logits_of(runs.model, final[rows, runs.batch.last_pos[prompt_rows]][:, None])[:, 0]


def behaviour(clean_logits: torch.Tensor, patched_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(KL(p_clean ‖ p_patched) [rows] in nats, prediction changed [rows] bool)`` of last-token logits
    ``[rows, d_vocab]`` (PIE's ``behavior_kl`` with ``kl_last_token``)."""
    lp_c = torch.log_softmax(clean_logits.double(), -1)
    lp_p = torch.log_softmax(patched_logits.double(), -1)
    kl = (lp_c.exp() * (lp_c - lp_p)).sum(-1)
    return kl, clean_logits.argmax(-1) != patched_logits.argmax(-1)


def fidelity(kl_mean: float) -> float:
    """PIE's summary fidelity ``1 − min(KL, 1)`` of a mean KL in nats."""
    return 1.0 - min(float(kl_mean), 1.0)


def _clean_last_logits(runs) -> torch.Tensor:
    """The clean prompts' last-position log-probs ``[n, d_vocab]`` that the runs recorded (one forward pass only
    when they did not): KL and argmax read them as logits."""
    if runs.clean_logprobs is not None:
        return runs.clean_logprobs
    zero = [torch.zeros_like(runs.clean[i].x) for i in range(len(runs.sites))]
    return patched_last_logits(runs, zero, torch.arange(runs.n))


def evaluate_keeps(runs, occ: Occurrences, keeps: list[torch.Tensor], clean_logits: torch.Tensor | None = None,
                   chunk_rows: int = 64) -> list[dict]:
    """Fidelity of each keep set, ``keeps[j]`` ``[n, U]`` (one row per prompt).

    Returns:
        One ``{"kl", "kl_sem", "pred_change", "fidelity"}`` per keep set (KL in nats, mean over prompts and its
        standard error; prediction-change rate in [0, 1]).
    """
    clean_logits = clean_logits if clean_logits is not None else _clean_last_logits(runs)
    n = runs.n
    flat = torch.cat(keeps)  # [J·n, U]
    prompts = torch.arange(n).repeat(len(keeps))
    kls, changed = [], []
    per = max(1, chunk_rows // n) * n
    for c in range(0, len(flat), per):
        rows = prompts[c:c + per]
        with torch.no_grad():
            logits = patched_last_logits(runs, removal_patches(runs, occ, flat[c:c + per], rows), rows)
        kl, ch = behaviour(clean_logits[rows], logits)
        kls.append(kl)
        changed.append(ch)
    kl = torch.cat(kls).view(len(keeps), n)
    ch = torch.cat(changed).view(len(keeps), n).double()
    out = []
    for j in range(len(keeps)):
        mean = float(kl[j].mean())
        sem = float(kl[j].std() / math.sqrt(n)) if n > 1 else 0.0
        out.append({"kl": mean, "kl_sem": sem, "pred_change": float(ch[j].mean()), "fidelity": fidelity(mean)})
    return out


# ------------------------------------------------------------------ selection
def check_budgets(occ: Occurrences, budgets) -> list[int]:
    """Sorted budgets, each at least 1 and at most every prompt's occurrence count.

    Raises:
        InputError: an empty list, a budget < 1, or one larger than a prompt's occurrences.
    """
    ks = sorted({int(k) for k in budgets})
    if not ks or ks[0] < 1:
        raise InputError("budgets K must be positive integers")
    fewest = int(occ.counts.min())
    if ks[-1] > fewest:
        raise InputError(f"budget K={ks[-1]} is larger than the {fewest} active feature occurrences of a prompt")
    return ks


def fap_keep(occ: Occurrences, k: int) -> torch.Tensor:
    """``[n, U]`` bool: each prompt's ``k`` occurrences of largest ``|FAP|`` (PIE's global top-K)."""
    flat = occ.flat_scores()
    top = flat.topk(k, dim=1).indices
    return torch.zeros_like(flat, dtype=torch.bool).scatter_(1, top, True)


def random_keep(occ: Occurrences, k: int, seed: int) -> torch.Tensor:
    """``[n, U]`` bool: ``k`` occurrences per prompt drawn uniformly (seeded)."""
    flat = occ.flat_scores()
    gen = torch.Generator().manual_seed(seed)
    noise = torch.rand(flat.shape, generator=gen)
    noise[flat == -math.inf] = -1.0
    top = noise.topk(min(k, flat.shape[1]), dim=1).indices
    return torch.zeros_like(flat, dtype=torch.bool).scatter_(1, top, True)


def _metric_rows(runs, occ: Occurrences, sets: list[tuple[int, list[int]]], chunk_rows: int) -> torch.Tensor:
    """Task metric ``[len(sets)]`` of prompt ``b`` with only the occurrences ``units`` (flat indices) removed, for
    each ``(b, units)``."""
    U = occ.flat_scores().shape[1]
    out = []
    for c in range(0, len(sets), chunk_rows):
        chunk = sets[c:c + chunk_rows]
        rows = torch.tensor([b for b, _ in chunk])
        removed = torch.zeros(len(chunk), U, dtype=torch.bool)
        for r, (_, units) in enumerate(chunk):
            removed[r, units] = True
        with torch.no_grad():
            logits = patched_last_logits(runs, removal_patches(runs, occ, ~removed, rows), rows)
        out.append(runs.metric_of_rows(logits, rows))
    return torch.cat(out) if out else torch.zeros(0)


def fap_synergy_keep(runs, occ: Occurrences, k: int, cfg: SynergyConfig = SynergyConfig(),
                     chunk_rows: int = 64) -> torch.Tensor:
    """``[n, U]`` bool: PIE's FAP-Synergy selection of ``k`` occurrences per prompt (module doc)."""
    flat = occ.flat_scores()
    keep = torch.zeros_like(flat, dtype=torch.bool)
    half = int(round(cfg.boundary_percent / 100.0 * k * 0.5))
    core_k = max(0, k - half)
    m_clean = runs.m_clean
    plans = []
    sets: list[tuple[int, list[int]]] = []
    for b in range(runs.n):
        order = flat[b].argsort(descending=True)
        n_occ = int(occ.counts[b])
        core = order[:core_k].tolist()
        boundary = order[core_k:min(n_occ, k + half)][:cfg.boundary_cap].tolist()
        partners = core[:cfg.partners]
        rng = random.Random(cfg.seed + b)
        drawn = {c: rng.sample(range(len(partners)), min(cfg.partners_per_candidate, len(partners))) for c in boundary}
        plan = {"order": order, "core": core, "boundary": boundary, "partners": partners, "drawn": drawn,
                "single": {}, "pair": {}}
        for u in partners + boundary:
            plan["single"][u] = len(sets)
            sets.append((b, [u]))
        for c in boundary:
            for j in drawn[c]:
                plan["pair"][(c, partners[j])] = len(sets)
                sets.append((b, [c, partners[j]]))
        plans.append(plan)
    m = _metric_rows(runs, occ, sets, chunk_rows)
    for b, plan in enumerate(plans):
        eff = {u: float(m_clean[b] - m[i]) for u, i in plan["single"].items()}
        top = flat[b, plan["order"][:k]]
        base_scale = max(float(top.median()), 1e-6) if len(top) else 1.0
        partner_eff = [abs(eff[p]) for p in plan["partners"]]
        med_partner = max(statistics.median(partner_eff), 1e-6) if partner_eff else 1.0

        def boosted(c):
            syn = []
            for j in plan["drawn"][c]:
                p = plan["partners"][j]
                if eff[p] <= 0 or eff[c] <= 0:
                    continue
                syn.append(float(m_clean[b] - m[plan["pair"][(c, p)]]) - eff[c] - eff[p])
            syn_stat = statistics.median(syn) if syn else 0.0
            return float(flat[b, c]) / base_scale + cfg.lambda_syn * max(0.0, syn_stat) / (med_partner + 1e-6)

        chosen = list(plan["core"])
        ranked = sorted(plan["boundary"], key=lambda c: -boosted(c))
        chosen += ranked[:k - len(chosen)]
        if len(chosen) < k:  # fill from the FAP order
            have = set(chosen)
            chosen += [u for u in plan["order"].tolist() if u not in have][:k - len(chosen)]
        keep[b, chosen] = True
    return keep


def kept_nodes(runs, keep_row: torch.Tensor) -> list[Node]:
    """The kept occurrences of one prompt (``keep_row`` ``[U]``) as position-resolved latent nodes."""
    out = []
    for i, k in enumerate(_unflatten(runs, keep_row[None])):
        for p, f in k[0].nonzero().tolist():
            out.append(runs.space.node_at(i, int(f)).at(int(p)))
    return out


# ------------------------------------------------------------------ the comparison
def pie_compare(runs, budgets=PIE_BUDGETS, mode: str = "corrupted", methods=PIE_METHODS,
                synergy: SynergyConfig = SynergyConfig(), draws: int = 3, progress=None) -> dict:
    """FAP, FAP-Synergy and random at each budget under PIE's protocol (module doc), plus random at doubling
    budgets until it matches FAP's fidelity at K = 100 (or every occurrence is kept).

    Args:
        runs: :class:`~sfc_core.attribution.PairRuns` with transcoder sites at every layer to be scored.
        budgets: occurrences kept per prompt.
        mode: ``"corrupted"`` (removed writes take their corrupted-prompt values) or ``"zero"``.
        progress: optional ``callable(stage, fraction)``.

    Returns:
        ``{"protocol": "pie", "mode", "budgets", "n_pairs", "occurrences": {"min", "mean", "max"}, "methods":
        {name: {"budgets", "kl", "kl_sem", "pred_change", "fidelity", "seconds"}}, "random_to_match": {...}}``
        (KL in nats, rates and fidelity unitless, seconds wall-clock).

    Raises:
        InputError: a non-transcoder site, an unknown mode or method, or a budget larger than a prompt's
            occurrences.
    """
    say = progress or (lambda stage, frac: None)
    unknown = [m for m in methods if m not in PIE_METHODS]
    if unknown:
        raise InputError(f"unknown PIE methods {', '.join(unknown)}; choose from fap, fap-synergy, random")
    t0 = time.perf_counter()
    occ = occurrences(runs, mode)
    ks = check_budgets(occ, budgets)
    clean_logits = _clean_last_logits(runs)
    out = {"protocol": "pie", "mode": mode, "budgets": ks, "n_pairs": runs.n,
           "occurrences": {"min": int(occ.counts.min()), "mean": float(occ.counts.double().mean()),
                           "max": int(occ.counts.max())},
           "synergy": asdict(synergy), "methods": {}}
    for j, name in enumerate(methods):
        say(name, j / len(methods))
        t = time.perf_counter()
        if name == "random":
            rows = [evaluate_keeps(runs, occ, [random_keep(occ, k, s) for k in ks], clean_logits) for s in range(draws)]
            res = [{key: sum(r[i][key] for r in rows) / draws for key in rows[0][i]} for i in range(len(ks))]
        elif name == "fap":
            res = evaluate_keeps(runs, occ, [fap_keep(occ, k) for k in ks], clean_logits)
        else:
            res = evaluate_keeps(runs, occ, [fap_synergy_keep(runs, occ, k, synergy) for k in ks], clean_logits)
        out["methods"][name] = {"budgets": ks, **{key: [r[key] for r in res] for key in res[0]},
                                "seconds": round(time.perf_counter() - t, 2)}
    if "fap" in methods and "random" in methods:
        out["random_to_match"] = _random_to_match(runs, occ, out, clean_logits, draws)
    out["seconds"] = round(time.perf_counter() - t0, 2)
    say("done", 1.0)
    return out


def _random_to_match(runs, occ: Occurrences, out: dict, clean_logits, draws: int, reference: int = 100) -> dict:
    """The smallest doubling budget ``K = reference·2^j`` at which random's mean KL is at most FAP's at
    ``reference`` (K ≤ the fewest occurrences of a prompt)."""
    fap = out["methods"]["fap"]
    if reference not in fap["budgets"]:
        return {"reference": reference, "fap_kl": None, "k": None, "ratio": None, "curve": []}
    target = fap["kl"][fap["budgets"].index(reference)]
    fewest = int(occ.counts.min())
    curve, k = [], reference
    while True:
        rows = evaluate_keeps(runs, occ, [random_keep(occ, k, s) for s in range(draws)], clean_logits)
        kl = sum(r["kl"] for r in rows) / draws
        curve.append({"k": k, "kl": kl, "fidelity": fidelity(kl)})
        if kl <= target:
            return {"reference": reference, "fap_kl": target, "k": k, "ratio": k / reference, "curve": curve}
        if k >= fewest:
            return {"reference": reference, "fap_kl": target, "k": None, "ratio": None, "curve": curve,
                    "note": f"random never matched with all {fewest} occurrences of the smallest prompt kept"}
        k = min(2 * k, fewest)


def check_report(doc) -> dict:
    """A PIE report read from a user's file (:func:`pie_compare`'s JSON), checked field by field.

    Raises:
        InputError: not a PIE report, or a method row whose lists are missing, of unequal length or not finite
            numbers (one line naming it).
    """
    if not isinstance(doc, dict) or doc.get("protocol") != "pie" or not isinstance(doc.get("methods"), dict):
        raise InputError("not a PIE report: expected the JSON of 'sfc compare --features transcoders --protocol pie'")
    for name, row in doc["methods"].items():
        if not isinstance(row, dict):
            raise InputError(f"PIE report: method {name!r} is not an object")
        ks = row.get("budgets")
        if not isinstance(ks, list) or not ks:
            raise InputError(f"PIE report: method {name!r} has no budgets")
        for key in ("kl", "pred_change", "fidelity"):
            vals = row.get(key)
            if not isinstance(vals, list) or len(vals) != len(ks) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in vals):
                raise InputError(f"PIE report: method {name!r} needs {len(ks)} finite numbers in {key!r}")
    return doc


def seed_claims(report: dict) -> dict:
    """The two figures PIE's summary claims, read off a report: whether FAP-Synergy at K = 50 reaches FAP's
    fidelity at K = 75 (``None`` when either was not run), and the K at which random matches FAP at K = 100."""
    rows = report.get("methods", {})

    def at(name, k):
        row = rows.get(name) or {}
        ks = row.get("budgets") or []
        return row["kl"][ks.index(k)] if k in ks else None

    syn50, fap75 = at("fap-synergy", 50), at("fap", 75)
    match = report.get("random_to_match") or {}
    return {"synergy50_kl": syn50, "fap75_kl": fap75,
            "synergy50_reaches_fap75": None if syn50 is None or fap75 is None else bool(syn50 <= fap75),
            "random_k_to_match_fap100": match.get("k"), "random_ratio": match.get("ratio")}
