"""The words of the screen (issue 13 point 6), through ``streamlit.testing.v1.AppTest`` on the bundled model:
fixes worded as the page's own controls, alignment that names what it drops, an ablation table whose numbers
and mean row are all there, and Tour / Evaluate sentences that read the shown numbers back."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 600

GOOD = {"clean": "When Mary and John went to the store, John gave a drink to",
        "corrupted": "When Mary and John went to the store, Mary gave a drink to", "answer": " Mary",
        "wrong_answer": " John"}
MISMATCH = {"clean": "The keys to the old wooden cabinet", "corrupted": "The key to the cabinet",
            "answer": " are", "wrong_answer": " is"}
MULTI = {**GOOD, "answer": " Maryanne-Christabel"}


def _app(page: str):
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(ROOT / page), default_timeout=TIMEOUT)


def _ok(at) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _said(at) -> str:
    return " | ".join([e.value for e in at.error] + [w.value for w in at.warning])


def test_feature_page_ablation_table_has_its_numbers_first_and_a_full_mean_row():
    at = _app("pages/1_Feature.py")
    at.run()
    _ok(at)
    [table] = [df.value for df in at.dataframe if list(df.value.columns)[:4] == ["pair", "before", "after", "change"]]
    assert list(table.columns) == ["pair", "before", "after", "change", "prompt"]
    rows, mean = table.iloc[:-1], table.iloc[-1]
    assert mean["pair"] == "mean" and mean["prompt"] == f"mean of {len(rows)} pairs"
    assert table[["before", "after", "change"]].notna().all().all()
    for col in ("before", "after"):
        assert mean[col] == pytest.approx(rows[col].mean(), abs=2e-3)  # rows are rounded to 3 decimals
    assert mean["change"] == pytest.approx(mean["after"] - mean["before"], abs=2e-3)
    assert [c.value for c in at.caption if c.value.startswith("Ablation runs on")], "the page says which pairs"


def test_evaluate_page_words_fixes_as_its_sidebar_controls():
    from pages._shared.display import UI_CONTROLS

    at = _app("pages/2_Evaluate.py")
    at.session_state["current_records"] = [GOOD, MISMATCH, MULTI]
    at.run()
    _ok(at)
    assert at.sidebar.selectbox(key="multi_token").label == UI_CONTROLS["multi_token"][0]
    at.text_input(key="eval_sizes").set_value("5")
    at.button(key="eval_run").click().run()
    _ok(at)
    assert any(e.value.startswith("multi-token answers in row 3") and e.value.endswith(
        "Fix: in the sidebar, set *Answers longer than one token* to *use the first token*.") for e in at.error), _said(at)
    assert not any("multi_token=" in e.value or "--multi-token" in e.value for e in at.error)
    # the fix, applied: the run goes on, and the skipped pair names its own fix and what aligning would drop
    at.sidebar.selectbox(key="multi_token").set_value("truncate")
    at.button(key="eval_run").click().run()
    _ok(at)
    assert not at.error, _said(at)
    warnings = [w.value for w in at.warning]
    assert any("row 3: answer ' Maryanne-Christabel' has" in w and "using its first token" in w for w in warnings)
    [skipped] = [w for w in warnings if w.startswith("row 2 skipped")]
    assert "aligning at the last token would drop the clean prompt's first" in skipped
    assert skipped.endswith("Fix: in the sidebar, set *Pairs whose prompts differ in token length* to *align at "
                            "the last token*.")
    assert any(t.value.startswith("**atp**, top 5 nodes: ") for t in at.markdown)
    assert any(c.value.startswith("m(full) = ") for c in at.caption)
    at.sidebar.selectbox(key="length_mismatch").set_value("align_last")
    at.button(key="eval_run").click().run()
    _ok(at)
    assert any(w.value.startswith("row 2: aligned at the last token: the clean prompt loses its first")
               and "(the corrupted prompt keeps them)" in w.value for w in at.warning), _said(at)


@pytest.mark.parametrize("step", ["1", "2", "3", "4", "5", "6"])
def test_tour_reads_its_numbers_back(step):
    from pages._shared.display import short_node

    at = _app("pages/4_Tour.py")
    at.run()
    _ok(at)
    [name] = [s for s in at.radio(key="tour_step").options if s.startswith(step)]
    at.radio(key="tour_step").set_value(name).run()
    _ok(at)
    assert not at.error, _said(at)
    texts = [t.value for t in at.markdown]
    metrics = {m.label: m.value for m in at.metric}
    if step == "1":
        table = at.dataframe[0].value
        assert any(t.startswith("The model's first choice is the expected answer") or "expected answer" in t
                   for t in texts)
        top_p = f"{100 * table['probability'].iloc[0]:.0f} %"
        assert any(top_p in t for t in texts if "expected answer" in t)
    elif step == "2":
        active = metrics["active features at the last token"]
        assert any(t.startswith(f"{active} of the SAE's ") for t in texts)
    elif step == "3":
        table = at.dataframe[0].value
        mean = table["m(clean)"].mean()
        assert any(t.startswith(f"On average m(clean) = {mean:+.2f}") for t in texts), texts
    elif step == "4":
        table = at.dataframe[0].value
        atp, exact = table["AtP effect"], table["exact effect"]
        agree = int(((atp > 0) == (exact > 0)).sum())
        assert f"AtP gets the sign right for {agree} of {len(table)} nodes." in texts
        worst = table.iloc[int((exact - atp).abs().values.argmax())]
        assert any(t.startswith(f"The largest miss is **{short_node(worst['node'])}**") for t in texts), texts
    elif step == "5":
        f15 = metrics["faithfulness of the top 15 nodes"]
        assert any(t.startswith(f"**The top 15 nodes.** {f15}: the 15 nodes alone") for t in texts), texts
        assert any("Completeness " in t for t in texts)
    else:
        assert any(t.startswith("Most nodes sit at L") and "error node" in t for t in texts), texts
        assert any(t.startswith("For comparison, IOI's top 15 nodes on the same SAEs: ") for t in texts)
