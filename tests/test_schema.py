"""The report schema: data lines rendered from the note and the catalog, written fields bounded by the grammar."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from vineyard import fieldnote, schema
from vineyard.facts import check_report

ROOT = Path(__file__).resolve().parents[1]

BERRY_MOTH = {
    "block": "B4", "variety": "Riesling", "rows": "12-18", "date": "2026-07-21", "scout": "M. Ortiz",
    "observations": [{"pest": "grape berry moth", "life_stage": "larva", "unit": "clusters", "sampled": 50, "infested": 4}],
}


def _note(**obs):
    n = copy.deepcopy(BERRY_MOTH)
    n["observations"][0].update(obs)
    return n


def test_threshold_line_states_the_comparison_and_its_source():
    line = schema.threshold_line(BERRY_MOTH["observations"][0], BERRY_MOTH)
    assert line.startswith("- grape berry moth: 8% damaged clusters, above the 6% threshold")
    assert "third week of July" in line and "Cornell" in line


@pytest.mark.parametrize("infested, word", [(2, "below"), (3, "at"), (4, "above")])
def test_threshold_line_below_at_above(infested, word):
    n = _note(infested=infested)
    assert f", {word} the 6% threshold" in schema.threshold_line(n["observations"][0], n)


def test_threshold_line_outside_the_window_says_why():
    n = _note()
    n["date"] = "2026-06-02"
    line = schema.threshold_line(n["observations"][0], n)
    assert "no threshold applies" in line and "third week of July" in line
    assert "above" not in line and "below" not in line


def test_high_risk_block_gets_the_august_threshold():
    n = _note(infested=9)
    n["date"], n["risk_class"] = "2026-08-20", "high"
    line = schema.threshold_line(n["observations"][0], n)
    assert "18% damaged clusters, above the 15% threshold" in line


def test_unknown_pest_and_pest_without_threshold():
    n = _note(pest="grape cicada")
    assert schema.threshold_line(n["observations"][0], n) == "- grape cicada: not in the pest catalog; no threshold."
    n = _note(pest="powdery mildew", life_stage="colonies")
    assert schema.threshold_line(n["observations"][0], n) == "- powdery mildew: no published threshold."


def test_observation_line_figures():
    o = {"pest": "spider mites", "life_stage": "adult", "unit": "leaves", "sampled": 40, "infested": 12, "count": 85}
    assert schema.observation_line(o) == "- spider mites (adult): 12 of 40 leaves infested (30%), 85 counted (2.1 per leaf)."
    o = {"pest": "grape leafhopper", "life_stage": "adult", "unit": "leaves", "sampled": 20, "count": 3}
    assert schema.observation_line(o) == "- grape leafhopper (adult): 3 counted on 20 leaves (0.15 per leaf)."


def test_a_misspelled_pest_is_rendered_under_its_catalog_name_and_a_synonym_as_typed():
    o = {"pest": "berry moht", "life_stage": "larva", "unit": "clusters", "sampled": 50, "infested": 4}
    assert schema.observation_line(o).startswith("- grape berry moth (larva): ")
    o["pest"] = "GBM"
    assert schema.observation_line(o).startswith("- GBM (larva): ")


def test_the_written_fields_cite_the_data_lines_figures_and_invent_none():
    llguidance = pytest.importorskip("llguidance")
    assert schema.written_phrases(BERRY_MOTH) == ("4 of 50 clusters", "2026-07-21", "12-18", "6%", "8%", "B4")
    grammar = llguidance.LLMatcher.grammar_from_lark(schema.report_grammar(BERRY_MOTH))
    tok = llguidance.LLTokenizer("byte")

    def accepts(summary):
        m = llguidance.LLMatcher(tok, grammar, log_level=0)
        text = schema.rendered_text(BERRY_MOTH).replace(
            "Summary: \nRisk: \nAction: ", f"Summary: {summary}\nRisk: high, above the threshold.\nAction: Treat the edge.")
        toks = tok.tokenize_str(text)
        return m.try_consume_tokens(toks) == len(toks) and m.is_accepting()

    assert accepts("Moth larvae in 4 of 50 clusters (8%) on the wood edge of B4, rows 12-18, on 2026-07-21.")
    assert accepts("Moth larvae on the wood edge, above the 6% threshold.")
    for invented in ("Moth larvae in 5 of 50 clusters.", "Moth larvae in 4 of 50 leaves.", "Moth larvae in 100.00% of clusters.",
                     "Moth larvae in B5.", "Moth larvae on 2026-07-22.", "Moth larvae in rows 12-1 only.", "Three moths, 3 per cluster."):
        assert not accepts(invented), invented
    assert ('([^\\n.!?0-9] | "4 of 50 clusters" | "2026-07-21" | "12-18" | "6%" | "8%" | "B4")'
            in schema.report_gbnf(BERRY_MOTH))


@pytest.mark.parametrize("path", sorted((ROOT / "vineyard" / "samples").rglob("*.json")) + sorted((ROOT / "bench" / "unseen").rglob("*.json")),
                         ids=lambda p: p.name)
def test_the_fact_check_finds_nothing_in_the_rendered_lines(path):
    """What the schema renders is right by construction, so the fact check must agree: two leafhopper species
    of one catalog entry, a block named "B-12 upper", a misspelled pest."""
    note = fieldnote.validate(json.loads(path.read_text(encoding="utf-8")))
    data = schema.rendered_text(note).replace("Summary: \nRisk: \nAction: ", "")
    assert [(f.kind, data[f.start:f.end]) for f in check_report(data, note)] == []


def test_nothing_found_walk_renders_without_thresholds():
    n = copy.deepcopy(BERRY_MOTH)
    n["observations"] = []
    text = schema.rendered_text(n)
    assert "Observations:\n- nothing found.\n" in text and "Thresholds" not in text


def test_regulated_pest_renders_who_to_notify():
    n = _note(pest="spotted lanternfly", life_stage="adult", unit="vines", sampled=30, infested=9)
    assert "Notify: spotted lanternfly is a regulated pest" in schema.rendered_text(n)
    n = _note(pest="spotted lanternfly", life_stage="adult", unit="vines", sampled=30, infested=0)
    assert "Notify" not in schema.rendered_text(n)


def test_control_characters_in_free_text_do_not_reach_the_grammar():
    n = copy.deepcopy(BERRY_MOTH)
    n["scout"] = "M.\nOrtiz\x00"
    assert schema.header_line(n) == "Block B4 (Riesling), rows 12-18, 2026-07-21, scout M. Ortiz."


def test_segments_alternate_data_and_the_three_written_fields():
    segs = schema.segments(BERRY_MOTH)
    assert [s.field for s in segs if not s.is_data] == ["summary", "risk", "action"]
    assert segs[0].text.endswith("Summary: ")


def test_grammar_accepts_a_report_in_the_layout_and_refuses_a_changed_number():
    llguidance = pytest.importorskip("llguidance")
    good = schema.rendered_text(BERRY_MOTH).replace(
        "Summary: \nRisk: \nAction: ",
        "Summary: Berry moth damage on the wood edge.\nRisk: high, damage is above the July threshold.\n"
        "Action: Treat the border rows in early August.")
    grammar = llguidance.LLMatcher.grammar_from_lark(schema.report_grammar(BERRY_MOTH))
    tok = llguidance.LLTokenizer("byte")
    for text, ok in [(good, True), (good.replace("4 of 50", "5 of 50"), False), (good.replace("high,", "severe,"), False)]:
        m = llguidance.LLMatcher(tok, grammar, log_level=0)
        assert not m.is_error(), m.get_error()
        toks = tok.tokenize_str(text)
        assert (m.try_consume_tokens(toks) == len(toks) and m.is_accepting()) is ok


def test_written_fields_spans():
    text = schema.rendered_text(BERRY_MOTH).replace(
        "Summary: \nRisk: \nAction: ", "Summary: S.\nRisk: low, R.\nAction: A.")
    spans = schema.written_fields(text)
    assert {k: text[a:b] for k, (a, b) in spans.items()} == {"summary": "S.", "risk": "low, R.", "action": "A."}
    assert schema.written_fields("free text") is None


@pytest.mark.parametrize("obs, date, levels", [
    ({"infested": 0}, "2026-07-21", ("low",)),  # nothing found: low, forced
    ({"infested": 4}, "2026-07-21", ("moderate", "high")),  # 8% above the 6% late-July threshold
    ({"infested": 3}, "2026-07-21", ("low", "moderate", "high")),  # at 6%: the threshold is "exceeds"
    ({"infested": 2}, "2026-07-21", ("low", "moderate", "high")),  # found, below: the oracle judges
    ({"infested": 4}, "2026-06-02", ("low", "moderate", "high")),  # no threshold applies in June
])
def test_the_data_narrows_the_risk_level(obs, date, levels):
    llguidance = pytest.importorskip("llguidance")
    n = _note(**obs)
    n["date"] = date
    assert schema.risk_levels(n) == levels
    grammar = llguidance.LLMatcher.grammar_from_lark(schema.report_grammar(n))
    tok = llguidance.LLTokenizer("byte")
    for level in schema.RISK_LEVELS:
        text = schema.rendered_text(n).replace(
            "Summary: \nRisk: \nAction: ",
            f"Summary: Berry moth on the wood edge.\nRisk: {level}, as the threshold line says.\nAction: Scout again.")
        m = llguidance.LLMatcher(tok, grammar, log_level=0)
        toks = tok.tokenize_str(text)
        assert (m.try_consume_tokens(toks) == len(toks) and m.is_accepting()) is (level in levels), level
    assert f"level ::= {' | '.join(chr(34) + lv + chr(34) for lv in levels)}" in schema.report_gbnf(n)


def test_a_walk_that_found_nothing_and_a_regulated_pest_set_the_level():
    walk = copy.deepcopy(BERRY_MOTH)
    walk["observations"] = []
    assert schema.risk_levels(walk) == ("low",)
    lanternfly = _note(pest="spotted lanternfly", life_stage="adult", unit="vines", sampled=20, infested=1)
    assert "regulated" in schema.rendered_text(lanternfly)
    assert schema.risk_levels(lanternfly) == ("moderate", "high")
