"""The history index: report texts and per-tokenizer token ids in SQLite, bounds, seeding, bad input."""

from __future__ import annotations

import sqlite3

import pytest

from edgespec.drafters.history import HistoryDrafter
from edgespec.drafters.history_index import HistoryError, HistoryIndex
from vineyard.seeds import template_reports
from edgespec.testing.words import WordTokenizer


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
    with HistoryIndex(db, templates=template_reports) as idx:
        assert idx.count() == len(templates)
        assert {s for _i, s, _t in idx.documents()} == {"template"}
        idx.add_report("a real report")
    with HistoryIndex(db, templates=template_reports) as idx:  # not re-seeded once it holds anything
        assert idx.count() == len(templates) + 1
    with HistoryIndex(tmp_path / "bare.db") as idx:  # the runtime alone seeds nothing: it knows no domain
        assert idx.count() == 0


def test_history_seed_reports_are_injectable(tmp_path):
    seeds = [("a.txt", "Summary : block A1 clean"), ("b.txt", "Summary : block B2 moth larvae")]
    calls = []

    def templates():
        calls.append(1)
        return seeds

    db = tmp_path / "h.db"
    with HistoryIndex(db, templates=templates) as idx:
        assert [(s, t) for _i, s, t in idx.documents()] == [("template", t) for _n, t in seeds]
    with HistoryIndex(db, templates=templates) as idx:
        assert idx.count() == len(seeds)
    assert len(calls) == 1  # read only while the index is empty
    with HistoryIndex(":memory:", templates=templates, seed_templates=False) as idx:
        assert idx.count() == 0
    assert len(calls) == 1
    with pytest.raises(HistoryError, match="templates"):
        HistoryIndex(":memory:", templates=seeds)  # type: ignore[arg-type]

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
