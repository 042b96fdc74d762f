"""The history drafter: drafts from past reports and from the context, which of the two, branches, cost."""

from __future__ import annotations

import pytest

from edgespec.drafters.history import HistoryDrafter
from edgespec.drafters.history_index import HistoryError, HistoryIndex
from edgespec.testing.words import WordTokenizer
from vineyard.testing import season_drafting


def test_history_drafts_most_frequent_continuation(index):
    tok = WordTokenizer()
    index.add_report("risk is low . re-scout in 7 days")
    index.add_report("risk is low . no action needed")
    index.add_report("overall risk is low . re-scout in 7 days and count again")
    d = HistoryDrafter(index, tok, "words", k_max=16)
    ctx = tok("field note text risk is low .")
    d.begin(ctx)
    draft = d.propose(ctx, 16)
    assert tok.words(draft.tokens)[:4] == ["re-scout", "in", "7", "days"]
    assert draft.source == "history" and draft.match_len == 4 and draft.support == 3
    assert draft.confidence[0] == pytest.approx(2 / 3)
    assert draft.probs is None
    assert len(d.propose(ctx, 2).tokens) == 2  # max_tokens bounds the draft
    assert len(d.propose(ctx, 100).tokens) <= 16  # and so does k_max


def test_history_add_report_makes_it_draftable_immediately(index):
    tok = WordTokenizer()
    d = HistoryDrafter(index, tok, "words")
    ctx = tok("begin the clusters were clean and")
    d.begin(ctx)
    assert d.propose(ctx, 8).tokens == []
    d.add_report("today the clusters were clean and dry after rain")
    assert index.count() == 1
    d.begin(ctx)
    assert tok.words(d.propose(ctx, 8).tokens) == ["dry", "after", "rain"]


def test_history_drafts_along_a_long_season():
    """300 reports in the history: most steps get a real draft, and branching gives several.

    What a propose costs is measured by ``tools/bench_micro.py``, not here: a wall-clock bound
    in a unit test fails on a loaded 2-core box for reasons that are not the code's."""
    w = season_drafting(300)
    d, target = w.drafter, w.target
    ctx = list(w.prompt)
    hits = 0
    for i in range(1000):
        ctx.append(target[i % len(target)])
        draft = d.propose(ctx, 16)
        hits += bool(draft.tokens)
    assert hits > 500  # the drafts are real, not empty shortcuts
    cands = d.propose_candidates(ctx, 16, n=4)
    assert 1 <= len(cands) <= 4 and all(c.tokens for c in cands)
    w.close()


def test_history_branching_candidates(index):
    tok = WordTokenizer()
    index.add_report("action : re-scout in 7 days")
    index.add_report("then action : re-scout in 7 days please")
    index.add_report("action : spray the edge rows")
    index.add_report("final action : treat now")
    d = HistoryDrafter(index, tok, "words", k_max=8)
    ctx = tok("summary ... action :")
    d.begin(ctx)
    cands = d.propose_candidates(ctx, 4, n=4)
    words = [" ".join(tok.words(c.tokens)) for c in cands]
    assert words[0] == "re-scout in 7 days"  # the most frequent branch first, same as propose()
    assert d.propose(ctx, 4).tokens == cands[0].tokens
    assert "spray the edge rows" in words and "treat now" in words
    assert len(set(words)) == len(words) == 3
    assert cands[0].confidence[0] == pytest.approx(0.5)
    assert len(d.propose_candidates(ctx, 4, n=2)) == 2
    with pytest.raises(HistoryError):
        d.propose_candidates(ctx, 4, n=0)


def test_history_also_matches_inside_the_context(index):
    tok = WordTokenizer()
    index.add_report("block C1 ( Chardonnay ) rows 4-10")
    d = HistoryDrafter(index, tok, "words")
    prompt = tok("note : block B4 ( Riesling ) rows 12-18 . report : block B4 (")
    d.begin(prompt)
    draft = d.propose(prompt, 4)
    # "block B4 (" occurred earlier in the context (3 tokens); the history report only matches "("
    assert tok.words(draft.tokens) == ["Riesling", ")", "rows", "12-18"]
    assert draft.source == "lookup"
    d_off = HistoryDrafter(index, tok, "words", use_context=False)
    d_off.begin(prompt)
    assert d_off.propose(prompt, 4).tokens == []  # history alone has only a 1-token match


def test_history_takes_numbers_from_the_note_and_wording_from_the_history(index):
    """Last week's report matches longer, but this week's count is in the note; the note's lower-case pest
    name loses to how the reports spell it even where the note matches as long."""
    tok = WordTokenizer()
    index.add_report("Report for B4 rows 12-18 . - Grape berry moth : 50 sampled , 1 infested .")
    note = tok("note : B4 rows 12-18 . - grape berry moth : 50 sampled , 4 infested . report :")
    so_far = tok("Summary : B4 rows 12-18 . -")  # history and note both match "B4 rows 12-18 . -"
    line = tok("Grape berry moth : 50 sampled ,")  # history matches 11 tokens here and says 1; the note 5, says 4
    text_of = lambda t: tok.words([t])[0]  # noqa: E731

    plain = HistoryDrafter(index, tok, "words")  # no token texts: the longer match, the context on ties
    plain.begin(note)
    assert tok.words(plain.propose(note + so_far, 1).tokens) == ["grape"]
    assert tok.words(plain.propose(note + so_far + line, 1).tokens) == ["1"]

    d = HistoryDrafter(index, tok, "words", token_text=text_of)
    d.begin(note)
    assert tok.words(d.propose(note + so_far, 1).tokens) == ["Grape"]
    assert tok.words(d.propose(note + so_far + line, 2).tokens) == ["4", "infested"]
    with pytest.raises(HistoryError):
        HistoryDrafter(index, tok, "words", token_text="not callable")  # type: ignore[arg-type]


def test_history_drafts_the_start_of_a_report_from_how_earlier_ones_began(index):
    tok = WordTokenizer()
    index.add_report("Summary : block C1 rows 1-4 . nothing found")
    index.add_report("Summary : block B4 rows 12-18 . moth larvae on the edge")
    d = HistoryDrafter(index, tok, "words")
    prompt = tok("<chat> field note : B4 , moth , 4 of 50 <assistant>")  # its end matches nothing
    d.begin(prompt)
    first = d.propose(prompt, 3)
    assert tok.words(first.tokens) == ["Summary", ":", "block"] and first.source == "history-start"
    ctx = prompt + tok("Summary : block B4")
    nxt = d.propose(ctx, 2)
    # still matched from the start (B4 leads to the newest report's rows); the match is as deep as it has run
    assert tok.words(nxt.tokens) == ["rows", "12-18"] and nxt.source == "history-start" and nxt.match_len == 8 + 4
    ctx = ctx + tok("rows 99")  # a value no report has: the match falls back and leaves the report start
    assert d.propose(ctx + tok("."), 2).source == "history"
    # a prompt whose end already matches (a raw continuation, not a new report) is not moved to the start
    raw = tok("moth larvae on")
    d.begin(raw)
    assert tok.words(d.propose(raw, 2).tokens) == ["the", "edge"]


def test_history_spec_factor_caps_a_draft_by_its_match_length(index):
    tok = WordTokenizer()
    index.add_report("risk is low . re-scout in 7 days and count the clusters again next week")
    ctx = tok("field note text risk is low .")  # matched 4 words deep
    lengths = {}
    for factor in (None, 0.5, 1.0, 2.0):
        d = HistoryDrafter(index, tok, "words", k_max=16, spec_factor=factor)
        d.begin(ctx)
        draft = d.propose(ctx, 16)
        assert draft.match_len == 4
        lengths[factor] = len(draft.tokens)
    assert lengths == {None: 11, 0.5: 2, 1.0: 4, 2.0: 8}  # None: the whole rest of the report
    with pytest.raises(HistoryError):
        HistoryDrafter(index, tok, "words", spec_factor=0)
    with pytest.raises(HistoryError):
        HistoryDrafter(index, tok, "words", min_path_prob=1.5)
