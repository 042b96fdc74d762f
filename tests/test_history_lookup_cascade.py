"""Prompt lookup, the history drafter and its index, the cascade, and the policy's per-step source decisions."""

from __future__ import annotations

import random
import sqlite3
import time

import pytest

from edgespec.drafters.base import Candidate, Draft
from edgespec.drafters.cascade import CascadeDrafter
from edgespec.drafters.history import (
    HistoryDrafter,
    HistoryError,
    HistoryIndex,
    SuffixAutomaton,
    template_reports,
)
from edgespec.drafters.lookup import ContextIndex, PromptLookupDrafter, copy_continuation
from edgespec.policy import CostCurve, DraftPolicy, LengthEstimate, PolicyParams, best_choice
from edgespec.testing.reference import oracle_greedy


class WordTokenizer:
    """Whitespace tokenizer with its own vocabulary: stands in for the oracle's tokenizer."""

    def __init__(self, offset: int = 0):
        self.vocab: dict[str, int] = {}
        self.offset = offset
        self.calls = 0

    def __call__(self, text: str) -> list[int]:
        self.calls += 1
        return [self.vocab.setdefault(w, len(self.vocab)) + self.offset for w in text.split()]

    def words(self, ids: list[int]) -> list[str]:
        inv = {v + self.offset: k for k, v in self.vocab.items()}
        return [inv[i] for i in ids]


def brute_lookup(ctx: list[int], min_n: int, max_n: int) -> tuple[int, int]:
    """Reference: longest suffix (<= max_n) with an earlier occurrence; position after its most recent one."""
    size = len(ctx)
    for n in range(min(max_n, size - 1), min_n - 1, -1):
        suffix = ctx[size - n :]
        for e in range(size - 1, n - 1, -1):
            if ctx[e - n : e] == suffix:
                return n, e
    return 0, -1


# ---------------------------------------------------------------------------------------------------- lookup


def test_lookup_copies_continuation_of_longest_suffix():
    d = PromptLookupDrafter(min_match=2, max_match=8)
    draft = d.propose([1, 2, 3, 4, 5, 1, 2, 3], 2)
    assert draft.tokens == [4, 5]
    assert draft.match_len == 3 and d.last_match_len == 3
    assert draft.probs is None and draft.source == "lookup"


def test_lookup_prefers_longest_then_most_recent():
    d = PromptLookupDrafter(min_match=1, max_match=8)
    # "2 3" was followed by 6 most recently, but the longer "1 2 3" was followed by 4
    assert d.propose([5, 1, 2, 3, 4, 9, 2, 3, 6, 1, 2, 3], 1).tokens == [4]
    d2 = PromptLookupDrafter(min_match=1, max_match=8)
    # equal length: the most recent occurrence wins
    assert d2.propose([1, 2, 9, 1, 2, 7, 8, 1, 2], 2).tokens == [7, 8]


def test_lookup_nothing_below_min_match():
    d = PromptLookupDrafter(min_match=3)
    draft = d.propose([1, 2, 3, 9, 2, 3], 4)  # only "2 3" repeats
    assert draft.tokens == [] and draft.match_len == 0
    assert d.propose([1, 2, 3, 4, 5, 6], 4).tokens == []


def test_lookup_repeating_pattern_continues_past_the_end():
    d = PromptLookupDrafter(min_match=2, max_match=4)
    draft = d.propose([7, 8, 7, 8, 7, 8], 5)
    assert draft.tokens == [7, 8, 7, 8, 7]
    assert copy_continuation([1, 2, 3], 1, 5) == [2, 3, 2, 3, 2]


def test_lookup_incremental_matches_brute_force_and_rebuilds_on_rewind():
    rng = random.Random(3)
    d = PromptLookupDrafter(min_match=2, max_match=6)
    ctx = [rng.randrange(5) for _ in range(10)]
    d.begin(ctx)
    for step in range(300):
        ctx = ctx + [rng.randrange(5) for _ in range(rng.randint(1, 3))]
        if step % 50 == 49:  # a context that is not an extension (new request / rewind)
            ctx = ctx[: len(ctx) // 2]
        draft = d.propose(ctx, 4)
        n, e = brute_lookup(ctx, 2, 6)
        assert draft.match_len == n
        assert draft.tokens == (copy_continuation(ctx, e, 4) if n else [])


def test_lookup_rejects_bad_arguments():
    with pytest.raises(ValueError):
        PromptLookupDrafter(min_match=0)
    with pytest.raises(ValueError):
        PromptLookupDrafter(min_match=5, max_match=3)
    with pytest.raises(ValueError):
        ContextIndex(2, 1)


def test_lookup_index_is_incremental_not_a_rescan():
    d = PromptLookupDrafter(min_match=2, max_match=16)
    rng = random.Random(0)
    ctx = [rng.randrange(1000) for _ in range(4000)]
    d.begin(ctx)
    t0 = time.perf_counter()
    for _ in range(1000):
        ctx.append(rng.randrange(1000))
        d.propose(ctx, 8)
    per = (time.perf_counter() - t0) / 1000
    # a rescan of 4000 tokens x 15 n-gram sizes would cost tens of ms per step
    assert per < 1e-3, f"{per * 1e6:.0f} us per propose"


# ---------------------------------------------------------------------------------------------------- automaton


def count_occurrences(docs: list[list[int]], pattern: list[int]) -> int:
    n = len(pattern)
    return sum(1 for d in docs for i in range(len(d) - n + 1) if d[i : i + n] == pattern)


def test_suffix_automaton_counts_and_matches_agree_with_brute_force():
    rng = random.Random(7)
    docs = [[rng.randrange(3) for _ in range(rng.randint(5, 25))] for _ in range(8)]
    sam = SuffixAutomaton()
    for d in docs:
        sam.add_doc(d)
    for _ in range(200):
        query = [rng.randrange(3) for _ in range(rng.randint(1, 12))]
        state, length = 0, 0
        for t in query:
            state, length = sam.step(state, length, t)
        # length = longest suffix of the query that occurs in some document (never across documents)
        expect = max((n for n in range(len(query) + 1) if n == 0 or count_occurrences(docs, query[-n:]) > 0))
        assert length == expect
        if length:
            assert sam.cnt[state] == count_occurrences(docs, query[-length:])
            toks, confs = sam.greedy(state, 3)
            if toks:  # the first greedy token is a most frequent continuation of the match
                counts = {t: count_occurrences(docs, query[-length:] + [t]) for t in range(3)}
                assert counts[toks[0]] == max(counts.values())
                assert confs[0] == pytest.approx(counts[toks[0]] / sam.cnt[state])


def test_suffix_automaton_builds_looping_text_in_linear_time():
    # small models sometimes loop; per-position suffix-link walks would make this quadratic
    t0 = time.perf_counter()
    sam = SuffixAutomaton()
    sam.add_doc([1, 2, 3, 4] * 6000)
    assert time.perf_counter() - t0 < 1.0
    state, length = 0, 0
    for t in [1, 2, 3, 4, 1, 2]:
        state, length = sam.step(state, length, t)
    assert sam.cnt[state] == 6000 - 1  # "1 2 3 4 1 2" starts at each of the first 5999 periods
    assert sam.greedy(state, 5)[0] == [3, 4, 1, 2, 3]


def test_suffix_automaton_matches_do_not_cross_documents():
    sam = SuffixAutomaton()
    sam.add_doc([1, 2, 3])
    sam.add_doc([4, 5])
    state, length = 0, 0
    for t in [3, 4]:
        state, length = sam.step(state, length, t)
    assert length == 1  # "3 4" only exists across the boundary
    state, length = 0, 0
    for t in [2, 3]:
        state, length = sam.step(state, length, t)
    assert sam.greedy(state, 4) == ([], [])  # the report ended there: nothing to draft


# ---------------------------------------------------------------------------------------------------- history


@pytest.fixture
def index():
    idx = HistoryIndex(":memory:", seed_templates=False)
    yield idx
    idx.close()


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


def test_history_sees_reports_saved_through_another_connection(tmp_path):
    db = tmp_path / "fieldlog.db"
    tok = WordTokenizer()
    with HistoryIndex(db, seed_templates=False) as reader:
        d = HistoryDrafter(reader, tok, "words")
        ctx = tok("x y spray the border rows")
        d.begin(ctx)
        assert d.propose(ctx, 4).tokens == []
        with HistoryIndex(db, seed_templates=False) as app:  # e.g. the fieldlog app saving a report
            app.add_report("then spray the border rows before rain")
        d.begin(ctx)  # a new generation refreshes from the database
        assert tok.words(d.propose(ctx, 4).tokens) == ["before", "rain"]


def test_history_index_is_bounded_by_documents_oldest_first(index):
    small = HistoryIndex(":memory:", max_docs=3, seed_templates=False)
    ids = [small.add_report(f"report number {i} of the season") for i in range(5)]
    assert small.count() == 3
    assert small.doc_ids() == ids[2:]
    # saving an existing text again refreshes it, so it survives the next eviction
    small.add_report("report number 2 of the season")
    small.add_report("report number 5 of the season")
    assert [t for _i, _s, t in small.documents()] == [
        "report number 4 of the season",
        "report number 2 of the season",
        "report number 5 of the season",
    ]
    small.close()


def test_history_index_is_bounded_by_tokens_and_drafter_forgets_evicted(index):
    tok = WordTokenizer()
    idx = HistoryIndex(":memory:", max_tokens=20, seed_templates=False)
    d = HistoryDrafter(idx, tok, "words")
    d.add_report("alpha beta gamma delta epsilon zeta eta theta")  # 8 tokens
    d.add_report("one two three four five six seven eight")  # 16
    ctx = tok("q alpha beta gamma")
    d.begin(ctx)
    assert tok.words(d.propose(ctx, 2).tokens) == ["delta", "epsilon"]
    d.add_report("red orange yellow green blue indigo violet white")  # 24 > 20: evict the oldest
    assert idx.total_tokens("words") <= 20
    assert idx.count() == 2
    d.begin(ctx)
    draft = d.propose(ctx, 2)
    # the evicted report no longer drafts: now nothing matches the prompt's end, so the drafter stands at
    # the start of a report and offers how the newest one began
    assert tok.words(draft.tokens) == ["red", "orange"] and draft.source == "history-start"
    assert d.n_docs == 2
    idx.close()


def test_history_persists_across_reopen_without_retokenizing(tmp_path):
    db = tmp_path / "history.db"
    tok = WordTokenizer()
    with HistoryIndex(db, seed_templates=False) as idx:
        d = HistoryDrafter(idx, tok, "words")
        d.add_report("leafhopper nymphs on basal leaves below threshold")
        d.add_report("mites on the road edge leaves bronzed")
    calls = tok.calls
    with HistoryIndex(db, seed_templates=False) as idx:
        assert idx.count() == 2
        d = HistoryDrafter(idx, tok, "words")
        assert tok.calls == calls + 1  # only the tokenizer probe; token ids came from the database
        ctx = tok("the leafhopper nymphs on")
        d.begin(ctx)
        assert tok.words(d.propose(ctx, 3).tokens) == ["basal", "leaves", "below"]


def test_history_model_ids_are_isolated(index):
    tok_a, tok_b = WordTokenizer(offset=0), WordTokenizer(offset=1000)
    index.add_report("botrytis on tight clusters near harvest")
    da = HistoryDrafter(index, tok_a, "vocab-a")
    db_ = HistoryDrafter(index, tok_b, "vocab-b")
    assert set(index.tokens("vocab-a", index.doc_ids())[1]) < set(range(1000))
    assert min(index.tokens("vocab-b", index.doc_ids())[1]) >= 1000
    ctx_b = tok_b("rot botrytis on tight")
    db_.begin(ctx_b)
    draft = db_.propose(ctx_b, 3)
    assert draft.tokens and all(t >= 1000 for t in draft.tokens)
    ctx_a = tok_a("rot botrytis on tight")
    da.begin(ctx_a)
    assert all(t < 1000 for t in da.propose(ctx_a, 3).tokens)


def test_history_retokenizes_when_tokenizer_behind_an_id_changes(index):
    index.add_report("downy mildew oil spots after rain")
    HistoryDrafter(index, WordTokenizer(offset=0), "same-id")
    d = HistoryDrafter(index, WordTokenizer(offset=500), "same-id")  # same id, different token ids
    assert min(index.tokens("same-id", index.doc_ids())[1]) >= 500
    assert d.n_docs == 1


def test_history_templates_seed_an_empty_index(tmp_path):
    templates = template_reports()
    assert 8 <= len(templates) <= 12
    for name, text in templates:
        for section in ("Summary", "Observations", "Risk", "Action"):
            assert section in text, f"{name} lacks {section}"
    db = tmp_path / "h.db"
    with HistoryIndex(db) as idx:
        assert idx.count() == len(templates)
        assert {s for _i, s, _t in idx.documents()} == {"template"}
        idx.add_report("a real report")
    with HistoryIndex(db) as idx:  # not re-seeded once it holds anything
        assert idx.count() == len(templates) + 1


def test_history_tables_do_not_clash_with_the_fieldlog_database(tmp_path):
    db = tmp_path / "fieldlog.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE reports (id TEXT PRIMARY KEY, text TEXT)")
    con.execute("INSERT INTO reports VALUES ('r1', 'kept')")
    con.commit()
    con.close()
    with HistoryIndex(db, seed_templates=False) as idx:
        idx.add_report("some report")
    con = sqlite3.connect(db)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'index')")}
    assert "reports" in tables
    assert all(t == "reports" or t.startswith(("history_", "sqlite_")) for t in tables), tables
    assert con.execute("SELECT text FROM reports").fetchall() == [("kept",)]
    con.close()


def test_history_bad_input_raises_clear_errors(tmp_path, index):
    with pytest.raises(HistoryError):
        index.add_report("   ")
    with pytest.raises(HistoryError):
        index.add_report(None)  # type: ignore[arg-type]
    with pytest.raises(HistoryError, match="directory"):
        HistoryIndex(tmp_path)
    bad = tmp_path / "corrupt.db"
    bad.write_bytes(b"this is not an sqlite database at all" * 100)
    with pytest.raises(HistoryError):
        HistoryIndex(bad)
    with pytest.raises(HistoryError):
        HistoryIndex(":memory:", max_docs=0)
    with pytest.raises(HistoryError):
        HistoryDrafter(index, WordTokenizer(), "")
    with pytest.raises(HistoryError):
        HistoryDrafter(index, lambda s: ["not", "ids"], "x")  # type: ignore[list-item]
    index.close()
    with pytest.raises(HistoryError, match="closed"):
        index.count()


def synthetic_season(n_reports: int, seed: int = 0) -> list[str]:
    """Reports in the style of the templates with varied blocks, numbers and sentence choices."""
    rng = random.Random(seed)
    base = [t for _n, t in template_reports()]
    out = []
    for i in range(n_reports):
        words = rng.choice(base).split()
        for _ in range(12):
            j = rng.randrange(len(words))
            words[j] = rng.choice([str(rng.randrange(100)), f"B{rng.randrange(20)}", words[j].upper(), "rows"])
        out.append(f"report {i} " + " ".join(words))
    return out


def test_history_propose_costs_well_under_a_millisecond():
    tok = WordTokenizer()
    idx = HistoryIndex(":memory:", seed_templates=False)
    for text in synthetic_season(300):
        idx.add_report(text)
    t0 = time.perf_counter()
    d = HistoryDrafter(idx, tok, "words", k_max=16)
    build_s = time.perf_counter() - t0
    target = tok(synthetic_season(1, seed=99)[0])
    prompt = tok("Field note: block B4 rows 12-18 Write the scouting report.")
    d.begin(prompt)
    ctx = list(prompt)
    hits = 0
    t0 = time.perf_counter()
    for i in range(1000):
        ctx.append(target[i % len(target)])
        draft = d.propose(ctx, 16)
        hits += bool(draft.tokens)
    per = (time.perf_counter() - t0) / 1000
    print(f"history: {d.n_tokens} tokens in {d.n_docs} reports, build {build_s * 1e3:.0f} ms, propose {per * 1e6:.1f} us")
    assert hits > 500  # the drafts are real, not empty shortcuts
    assert per < 1e-3
    t0 = time.perf_counter()
    for _ in range(200):
        d.propose_candidates(ctx, 16, n=4)
    assert (time.perf_counter() - t0) / 200 < 2e-3
    idx.close()


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


# ---------------------------------------------------------------------------------------------------- cascade


def estimate_from_trace(trace: list[tuple[int, int]]) -> LengthEstimate:
    est = LengthEstimate()
    for acc, drafted in trace:
        est.update(acc, drafted)
    return est


# verify cost of Qwen2.5-Coder-0.5B measured on this 2-core machine (seconds for a batch of n tokens)
QWEN = CostCurve([1, 4, 8, 16], [0.019, 0.048, 0.080, 0.117])
COST = {"model": 0.004, "history": 0.0, "lookup": 0.0}  # seconds per drafted token


def picked(stats, candidates, draft_cost) -> int | None:
    """Index (into ``candidates``) of the candidate the policy drafts from, or None to decode without a draft."""
    choice = best_choice(stats, candidates, QWEN, draft_cost=draft_cost)
    return None if choice is None else next(i for i, c in enumerate(candidates) if c is choice.candidate)


def test_choose_source_prefers_cheap_source_with_good_record():
    stats = {
        "history:16+": estimate_from_trace([(16, 16)] * 6 + [(10, 16)] * 2),
        "model": estimate_from_trace([(3, 4), (4, 4), (2, 4)] * 3),
    }
    cands = [Candidate(0, "history", "history:16+", 16), Candidate(1, "model", "model", 16)]
    assert picked(stats, cands, COST) == 0


def test_choose_source_falls_back_to_model_when_short_matches_keep_failing():
    stats = {
        "lookup:<4": estimate_from_trace([(0, 8)] * 10),
        "model": estimate_from_trace([(3, 4), (4, 4), (2, 4)] * 3),
    }
    cands = [Candidate(0, "lookup", "lookup:<4", 8), Candidate(1, "model", "model", 16)]
    assert picked(stats, cands, COST) == 1
    # without the model drafter: decode plainly rather than verify drafts that lose
    assert picked(stats, cands[:1], COST) is None


def test_choose_source_refuses_a_model_that_costs_more_than_it_saves():
    stats = {"model": estimate_from_trace([(8, 8)] * 8 + [(5, 8)])}
    cands = [Candidate(0, "model", "model", 16)]
    assert picked(stats, cands, COST) == 0
    # drafts that die early (first token right 3 times in 5, rarely more) do not pay for a 4 ms/token drafter
    assert picked({"model": estimate_from_trace([(1, 4), (0, 4), (2, 4), (0, 4), (1, 4)])}, cands, COST) is None
    expensive = {"model": 0.019}  # as slow per token as the oracle
    assert picked(stats, cands, expensive) is None


def test_choose_source_ties_go_to_the_cheaper_earlier_source():
    est = estimate_from_trace([(6, 8)] * 4)
    stats = {"history:8-": est, "lookup:8-": est}
    cands = [Candidate(0, "history", "history:8-", 8), Candidate(1, "lookup", "lookup:8-", 8)]
    assert picked(stats, cands, COST) == 0
    assert picked(stats, list(reversed(cands)), COST) == 0  # position, not name
    assert picked(stats, [Candidate(0, "history", "history:8-", 0)], COST) is None  # nothing on offer


def test_plan_draft_length_follows_acceptance():
    good = {"history:16+": estimate_from_trace([(16, 16)] * 10)}
    poor = {"history:16+": estimate_from_trace([(1, 16), (2, 16), (0, 16)] * 3)}
    c = [Candidate(0, "history", "history:16+", 16)]
    g, p = best_choice(good, c, QWEN, draft_cost=COST), best_choice(poor, c, QWEN, draft_cost=COST)
    assert g is not None and g.n_tokens >= 8
    assert p is None or p.n_tokens < g.n_tokens


class ScriptedCheap:
    """A cheap source whose drafts are scripted: ``offers[step]`` = (tokens, match_len) or None."""

    cheap = True
    multi_candidate = False

    def __init__(self, name: str, offer):
        self.name = name
        self.offer = offer
        self.feedback: list[tuple[int, int]] = []

    def begin(self, prompt_tokens):
        pass

    def propose(self, context, max_tokens, *, sample=None):
        got = self.offer(context)
        if got is None:
            return Draft(source=self.name, match_len=0)
        toks, m = got
        return Draft(tokens=list(toks[:max_tokens]), source=self.name, match_len=m)

    def accepted(self, context, n_accepted, n_drafted):
        self.feedback.append((n_accepted, n_drafted))

    def close(self):
        pass


class ScriptedModel:
    """A 'model drafter' that predicts the target with a fixed per-token accuracy and counts its calls."""

    name = "model"
    cheap = False
    multi_candidate = False

    def __init__(self, target: list[int], accuracy: float, seed: int = 0):
        self.target = target
        self.accuracy = accuracy
        self.rng = random.Random(seed)
        self.calls = 0

    def begin(self, prompt_tokens):
        pass

    def propose(self, context, max_tokens, *, sample=None):
        self.calls += 1
        pos = len(context)
        toks = []
        for i in range(max_tokens):
            if pos + i >= len(self.target):
                break
            ok = self.rng.random() < self.accuracy
            toks.append(self.target[pos + i] if ok else -1)
        return Draft(tokens=toks, passes=len(toks), source="model")

    def accepted(self, context, n_accepted, n_drafted):
        pass

    def close(self):
        pass


def cascade_step(policy: DraftPolicy, cascade: CascadeDrafter, ctx: list[int], max_tokens: int):
    """Engine stand-in for one propose step: (draft, choice) from the candidate the policy picks."""
    choice = policy.choose(cascade.candidates(ctx, max_tokens))
    if choice is None:
        return Draft(), None
    t0 = time.perf_counter()
    draft = cascade.take(choice.candidate, choice.n_tokens, ctx)
    if choice.candidate.draft is None:
        policy.record_draft_time(choice.candidate.name, time.perf_counter() - t0, max(len(draft.tokens), 1))
    return draft, choice


def verdict(policy: DraftPolicy, cascade: CascadeDrafter, choice, ctx: list[int], n_acc: int, n_drafted: int) -> None:
    """Engine stand-in: the verdict on a draft goes to the picked source's estimate and, through the cascade, the source."""
    if choice is not None and n_drafted > 0:
        policy.record_source(choice.candidate, n_acc, n_drafted)
    cascade.accepted(ctx, n_acc, n_drafted)


def run_cascade(cascade: CascadeDrafter, policy: DraftPolicy, target: list[int], start: int, steps: int) -> list[str]:
    """Engine stand-in: verify each draft against the target text; returns the source used per step."""
    ctx = target[:start]
    used = []
    cascade.begin(ctx)
    for _ in range(steps):
        if len(ctx) >= len(target) - 1:
            break
        draft, choice = cascade_step(policy, cascade, list(ctx), 16)
        truth = target[len(ctx) : len(ctx) + len(draft.tokens)]
        n_acc = next((i for i, (a, b) in enumerate(zip(draft.tokens, truth)) if a != b), len(draft.tokens))
        used.append(draft.source if draft.tokens else "none")
        ctx = ctx + truth[:n_acc] + [target[len(ctx) + n_acc]]
        if draft.tokens:
            verdict(policy, cascade, choice, list(ctx), n_acc, len(draft.tokens))
    return used


def test_cascade_uses_cheap_source_where_it_has_a_long_match_and_model_elsewhere():
    target = list(range(10_000))
    # history knows the text in even "paragraphs" of 50 tokens (long matches), nothing in the odd ones
    def offer(ctx):
        pos = len(ctx)
        if (pos // 50) % 2 == 0:
            return target[pos : pos + 16], 20
        return None

    hist = ScriptedCheap("history", offer)
    model = ScriptedModel(target, accuracy=0.8)
    cascade = CascadeDrafter([hist, model])
    policy = DraftPolicy(QWEN, draft_cost={"model": 0.002})
    used = run_cascade(cascade, policy, target, 10, 400)
    assert used.count("history") > 0 and used.count("model") > 0
    assert model.calls == used.count("model")  # the model ran only when chosen
    assert policy.source_estimates["history:16+"].alpha > 0.9


def test_cascade_turns_away_from_a_failing_cheap_bucket_to_the_model():
    target = list(range(5_000))
    wrong = ScriptedCheap("lookup", lambda ctx: ([-5] * 8, 7))  # matches that look fair but always fail
    model = ScriptedModel(target, accuracy=0.85)
    cascade = CascadeDrafter([wrong, model])
    policy = DraftPolicy(QWEN, PolicyParams(source_probe_interval=8), draft_cost={"model": 0.002})
    used = run_cascade(cascade, policy, target, 5, 600)
    lookup_uses = [i for i, u in enumerate(used) if u == "lookup"]
    assert len(lookup_uses) < 25  # a handful of early tries, then only backed-off probes
    late = [i for i in lookup_uses if i > len(used) // 2]
    assert len(late) <= 3
    assert used.count("model") > len(used) * 0.8
    assert policy.source_estimates["lookup:<8"].alpha < policy.source_estimates["model"].alpha


def test_cascade_with_only_cheap_sources_decodes_plainly_when_nothing_pays():
    target = list(range(2_000))
    # a short match is never even probed: its prior says it cannot pay
    params = PolicyParams(source_probe_interval=8)
    short = CascadeDrafter([ScriptedCheap("lookup", lambda ctx: ([-5] * 8, 2))])
    assert run_cascade(short, DraftPolicy(QWEN, params), target, 5, 400).count("lookup") == 0
    wrong = ScriptedCheap("lookup", lambda ctx: ([-5] * 8, 9))  # long-looking matches that always fail
    cascade = CascadeDrafter([wrong])
    used = run_cascade(cascade, DraftPolicy(QWEN, params), target, 5, 400)
    assert used.count("none") > 0.9 * len(used)
    # the losing bucket is re-tried with probes whose spacing doubles
    tries = [i for i, u in enumerate(used) if u == "lookup"]
    assert 3 <= len(tries) <= 10
    gaps = [b - a for a, b in zip(tries[1:], tries[2:])]
    assert all(g2 > g1 for g1, g2 in zip(gaps, gaps[1:])), tries


def test_cascade_forwards_feedback_and_closes_every_source():
    closed = []

    class Closing(ScriptedCheap):
        def close(self):
            closed.append(self.name)

    a = Closing("history", lambda ctx: ([len(ctx)], 20))
    b = Closing("lookup", lambda ctx: None)
    cascade = CascadeDrafter([a, b])
    policy = DraftPolicy(QWEN)
    cascade.begin([0, 1, 2])
    draft, choice = cascade_step(policy, cascade, [0, 1, 2], 4)
    assert draft.source == "history"
    verdict(policy, cascade, choice, [0, 1, 2, 3, 4], 1, 1)
    assert a.feedback == [(1, 1)] and b.feedback == [(0, 0)]
    cascade.close()
    assert closed == ["history", "lookup"]
    with pytest.raises(Exception):
        CascadeDrafter([])


def test_cascade_over_real_history_and_lookup_sources(index):
    tok = WordTokenizer()
    index.add_report("risk : low . action : re-scout in 7 days and record the count")
    hist = HistoryDrafter(index, tok, "words")
    cascade = CascadeDrafter([hist, PromptLookupDrafter()])
    policy = DraftPolicy(QWEN)
    ctx = tok("note for block B4 . report : risk : low . action :")
    cascade.begin(ctx)
    truth = tok("re-scout in 7 days and record the count")
    draft, _ = cascade_step(policy, cascade, ctx, 8)
    assert draft.source == "history" and draft.match_len == 6
    first_len = len(draft.tokens)
    assert 1 <= first_len and draft.tokens == truth[:first_len]
    for _ in range(6):  # every draft from this bucket is accepted: the policy learns to draft longer
        _, choice = cascade_step(policy, cascade, ctx, 8)
        verdict(policy, cascade, choice, ctx, first_len, first_len)
    longer, _ = cascade_step(policy, cascade, ctx, 8)
    assert len(longer.tokens) > first_len and longer.tokens == truth[: len(longer.tokens)]
    choice = policy.choose(cascade.candidates(ctx, 8))
    cands = cascade.take_candidates(choice.candidate, choice.n_tokens, ctx, n=3) if choice else []
    assert cands and cands[0].tokens == longer.tokens


# ---------------------------------------------------------------------------------------------------- engine
# Strict greedy equivalence on the tiny F32 models (batch-invariant kernels): the engine's text with these
# drafters must be the oracle's own one-token-at-a-time greedy text. Uses the tiny-model fixtures of
# tests/conftest.py; skipped where that fixture is not available.


def _fixture(request, name):
    try:
        return request.getfixturevalue(name)
    except pytest.FixtureLookupError:
        pytest.skip(f"fixture {name} is not available")


ENGINE_WORDS = "the vine leaf moth mite row block larva cluster spray rain dry scout count damage edge wood".split()


@pytest.fixture(scope="module")
def tiny_pair(request):
    from edgespec.llama import LlamaModel

    oracle_path = _fixture(request, "tiny_oracle_path")
    oracle = LlamaModel(oracle_path, n_ctx=512, n_threads=1, flash_attn=False, kv_f32=True)
    yield oracle, request
    oracle.close()




def _engine_tokens(oracle, drafter, prompt: list[int], max_tokens: int, engine=None):
    from edgespec.engine import Engine, GenerationParams
    from edgespec.events import Done

    oracle.reset()
    eng = engine or Engine(oracle, drafter, curve=CostCurve.linear(0.01), adaptive=False)
    done = list(eng.generate(list(prompt), GenerationParams(max_tokens=max_tokens)))[-1]
    assert isinstance(done, Done)
    return done


def _prompts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(ENGINE_WORDS) for _ in range(rng.randint(2, 12))) for _ in range(n)]


def _seeded_history(oracle, n_reports: int = 6):
    """A history of the oracle's own continuations (drafts get accepted) plus unrelated text (they get rejected)."""
    tokenize = lambda s: oracle.tokenize(s, add_bos=False, special=False)  # noqa: E731
    idx = HistoryIndex(":memory:", seed_templates=False)
    for text in _prompts(n_reports, seed=11):
        toks = tokenize(text)
        cont = oracle_greedy(oracle, toks, 48)
        idx.add_report(text + oracle.detokenize(cont, special=False).decode("utf-8", "replace"))
    for text in _prompts(n_reports, seed=12):
        idx.add_report(text + " " + text)
    return idx, tokenize


def test_engine_greedy_identical_with_history_and_lookup(tiny_pair):
    oracle, _request = tiny_pair
    idx, tokenize = _seeded_history(oracle)
    hist = HistoryDrafter(idx, tokenize, oracle.vocab_fingerprint(), k_max=8, min_match=1)
    look = PromptLookupDrafter(min_match=1, max_match=8)
    accepted = 0
    # prompts that overlap the history (long matches) and fresh ones (short or none)
    for text in _prompts(6, seed=11)[:3] + _prompts(10, seed=5):
        prompt = oracle.tokenize(text)
        ref = oracle_greedy(oracle, prompt, 40)
        for drafter in (hist, look):
            done = _engine_tokens(oracle, drafter, prompt, 40)
            assert done.tokens == ref, f"{drafter.name} diverged on {text!r}"
            accepted += done.stats.accepted_tokens
    assert accepted > 0  # the drafters were really exercised, not silently empty
    idx.close()


def test_engine_greedy_identical_with_cascade(tiny_pair):
    from edgespec.drafters.model import ModelDrafter
    from edgespec.engine import Engine
    from edgespec.llama import LlamaModel

    oracle, request = tiny_pair
    drafter_path = _fixture(request, "tiny_drafter_close_path")
    idx, tokenize = _seeded_history(oracle)
    with LlamaModel(drafter_path, n_ctx=512, n_threads=1, flash_attn=False, kv_f32=True) as lm:
        model = ModelDrafter(lm, oracle_vocab=oracle.n_vocab)
        model.close = lambda: None  # the `with` block owns the model
        cascade = CascadeDrafter(
            [HistoryDrafter(idx, tokenize, oracle.vocab_fingerprint(), min_match=1), PromptLookupDrafter(1, 8), model],
        )
        # verifying extra tokens is cheap: drafting pays; one engine, so what its policy learns carries over
        eng = Engine(oracle, cascade, curve=CostCurve.linear(0.001, fixed=0.01), adaptive=False)
        used: set[str] = set()
        for text in _prompts(6, seed=11)[:2] + _prompts(8, seed=21):
            prompt = oracle.tokenize(text)
            ref = oracle_greedy(oracle, prompt, 40)
            done = _engine_tokens(oracle, cascade, prompt, 40, engine=eng)
            assert done.tokens == ref, f"cascade diverged on {text!r}"
            used |= {k for k, v in cascade.chosen.items() if v}
        print("cascade drafts per source:", cascade.chosen)
        assert used  # at least one source drafted
    idx.close()
