"""The office model's verdict back on the device (issue 17): fetched at sync, kept in the store (v5), shown on the
report screen and marked in the log. The office's checks are recorded with the office's own code
(check_queue.record_check, what its checker calls after scoring), so no model is needed here; the scoring itself is
tested against a real llama_cpp.server in test_office_check.py."""

from __future__ import annotations

import sqlite3
import uuid

import pytest
import sqlite_utils
from rich.text import Text
from textual.widgets import DataTable, Static

from fieldlog_app.database import SCHEMA_VERSION, Store, current_version
from fieldlog_app.office import check_queue
from fieldlog_app.screens.common import report_badge
from fieldlog_app.screens.report import ReportScreen
from fieldlog_app.sync.background import sync_when_reachable
from fieldlog_app.sync.client import sync_once
from fieldlog_app.sync.app import create_app
from fieldlog_app.sync.server import ServerDB
from fieldlog_app.sync.testing import SwappableApp, ThreadServer
from test_app import make_app, saved_report as report_of

DISAGREE = {"kind": "office-disagreement", "severity": "warning", "field": "risk", "span_kind": "threshold",
            "start": 120, "end": 125, "written": "below", "office": "above", "gap_nats": 4.2, "bounded": False,
            "message": "office model would write 'above', field report says 'below'"}


@pytest.fixture(scope="module")
def http_server():
    swap = SwappableApp()
    with ThreadServer(swap) as srv:
        yield swap, srv


@pytest.fixture
def office(tmp_path, http_server):
    """(office db, device token, server url): a fresh office behind the module's loopback server."""
    swap, srv = http_server
    sdb = ServerDB(tmp_path / "office.sqlite3")
    token = sdb.add_device("handheld-1")
    swap.app = create_app(sdb)
    return sdb, token, srv.url


# ---------------------------------------------------------------------------------- the store (v5, v6)
def test_v5_adds_office_checks_to_a_v4_database_and_keeps_every_row(tmp_path):
    path = tmp_path / "v4.db"
    with Store(path) as s:  # today's rows, then the file put back to what v4 left
        sid, rid = report_of(s)
        before = {t: list(s.db.query(f"SELECT * FROM {t} ORDER BY rowid")) for t in
                  ("sightings", "observations", "reports", "outbox", "audit_log")}
    conn = sqlite3.connect(path)
    conn.executescript("DROP TABLE office_checks; ALTER TABLE sightings DROP COLUMN nothing_found; "  # v7's
                       "DELETE FROM _migrations WHERE version >= 5; PRAGMA user_version = 4;")
    conn.close()
    db = sqlite_utils.Database(path)
    assert current_version(db) == 4 and "office_checks" not in db.table_names()
    db.close()
    with Store(path) as s:
        assert current_version(s.db) == SCHEMA_VERSION
        after = {t: list(s.db.query(f"SELECT * FROM {t} ORDER BY rowid")) for t in before}
        assert after == before  # not a row touched
        assert s.get_report(rid)["office"]["state"] is None  # not sent: nothing awaited
        assert s.save_office_checks([{"report_id": rid, "status": "checked", "model": "m", "checked_at": "t",
                                      "findings": [], "updated_at": "2026-07-22T10:00:00Z"}])["saved"] == 1
        # the reports stay immutable, and a verdict cannot point at a report that is not there
        with pytest.raises(sqlite3.IntegrityError):
            s.db.conn.execute("INSERT INTO office_checks (report_id, status, findings, updated_at, received_at) "
                              "VALUES (?, 'checked', '[]', 'x', 'x')", (str(uuid.uuid4()),))


def test_a_malformed_check_is_refused_with_its_reason_and_the_others_are_kept(store):
    _, rid = report_of(store)
    _, rid2 = report_of(store)
    good = {"report_id": rid, "status": "checked", "model": "office-7b", "checked_at": "2026-07-22T10:00:00Z",
            "findings": [DISAGREE], "updated_at": "2026-07-22T10:00:00Z"}
    got = store.save_office_checks([
        good,
        {**good, "report_id": rid2, "status": "approved"},
        {**good, "report_id": rid2, "findings": "lots"},
        {**good, "report_id": "not-a-uuid"},
        {**good, "report_id": str(uuid.uuid4())},  # not a report of this device: skipped
        {**good, "report_id": rid2, "findings": [{"message": "x" * 5000, "start": True}]},
    ])
    assert got["saved"] == 2 and got["skipped"] == 1 and len(got["errors"]) == 3
    assert any("status 'approved'" in e for e in got["errors"]) and any("not a UUID" in e for e in got["errors"])
    office = store.get_report(rid)["office"]
    assert office["state"] == "disputed" and office["check"]["model"] == "office-7b"
    assert office["check"]["findings"][0]["message"] == DISAGREE["message"]
    long = store.get_report(rid2)["office"]["check"]["findings"][0]
    assert len(long["message"]) == 1000 and "start" not in long  # cut to size; a bool is no offset
    # an older copy of a check never replaces a newer one
    assert store.save_office_checks([{**good, "findings": [], "updated_at": "2026-07-21T00:00:00Z"}])["saved"] == 0
    assert store.get_report(rid)["office"]["state"] == "disputed"
    assert store.office_checks_since() == "2026-07-22T10:00:00Z"



def test_v6_adds_the_office_version_to_a_v5_database_and_keeps_its_checks(tmp_path):
    path = tmp_path / "v5.db"
    with Store(path) as s:
        _, rid = report_of(s)
        s.save_office_checks([{"report_id": rid, "status": "checked", "model": "m", "checked_at": "t",
                               "findings": [DISAGREE], "updated_at": "2026-07-22T10:00:00Z"}])
    conn = sqlite3.connect(path)
    conn.executescript("ALTER TABLE office_checks DROP COLUMN office_version_pending; "
                       "ALTER TABLE office_checks DROP COLUMN office_version; "
                       "ALTER TABLE sightings DROP COLUMN nothing_found; "  # v7's
                       "DELETE FROM _migrations WHERE version >= 6; PRAGMA user_version = 5;")
    before = list(conn.execute("SELECT * FROM office_checks"))
    conn.close()
    with Store(path) as s:
        assert current_version(s.db) == SCHEMA_VERSION
        after = list(s.db.conn.execute("SELECT * FROM office_checks"))
        assert [tuple(r)[:-2] for r in after] == [tuple(r) for r in before]  # the v5 row as it was
        assert [tuple(r)[-2:] for r in after] == [(None, 0)]
        office = s.get_report(rid)["office"]
        assert office["state"] == "disputed" and office["check"]["office_version"] is None


@pytest.mark.parametrize("bad, why", [
    ({"office_version": "the text"}, "office_version is not an object"),
    ({"office_version": {"report_id": "nope", "text": "t"}}, "office_version.report_id is not a UUID"),
    ({"office_version": {"report_id": str(uuid.uuid4()), "text": "x" * 20_001}}, "office_version.text"),
    ({"office_version": {"report_id": str(uuid.uuid4())}}, "office_version.text"),
    ({"office_version_pending": "yes"}, "office_version_pending is not true or false"),
])
def test_a_malformed_office_version_is_refused_with_its_reason(store, bad, why):
    _, rid = report_of(store)
    got = store.save_office_checks([{"report_id": rid, "status": "checked", "model": "m", "findings": [],
                                     "updated_at": "2026-07-22T10:00:00Z", **bad}])
    assert got["saved"] == 0 and len(got["errors"]) == 1 and why in got["errors"][0]
    assert store.get_report(rid)["office"]["check"] is None

@pytest.fixture
def store():
    s = Store(":memory:")
    yield s
    s.close()


# ---------------------------------------------------------------------------------- sync brings the verdict
def test_sync_fetches_the_office_checks_and_a_later_sync_the_new_ones(store, office):
    sdb, token, url = office
    _, rid = report_of(store)
    first = sync_once(store, url, token)
    assert first.ok and first.sent == 2 and first.office_checks == 0
    assert store.get_report(rid)["office"]["state"] == "awaiting" and store.office_awaiting() == 1

    check_queue.record_check(sdb, rid, status="error", error="OracleAnswerError: answer is not JSON")
    assert sync_once(store, url, token).office_checks == 1
    assert store.get_report(rid)["office"]["state"] == "error" and store.office_awaiting() == 1
    check_queue.record_check(sdb, rid, status="checked", model="office-7b", findings=[DISAGREE], summary={})
    # nothing left to upload: the background sync still asks, because a sent report awaits its verdict
    got = sync_when_reachable(store, url, token)
    assert got is not None and got.office_checks == 1 and "office checks received 1" in got.summary()
    office_ = store.get_report(rid)["office"]
    assert office_["state"] == "disputed"
    assert office_["line"] == "checked at the office by office-7b: 1 disagreement"
    assert store.office_awaiting() == 0
    assert sync_when_reachable(store, url, token) is None  # nothing to send, nothing awaited: no request


def test_an_office_without_the_way_back_never_fails_the_sync(store, office, http_server):
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    sdb, token, url = office
    _, rid = report_of(store)
    swap, _ = http_server
    real = swap.app

    async def broken(request):
        return JSONResponse({"checks": [{"report_id": rid, "findings": "no"}]})

    async def through(scope, receive, send):  # the real office, except a garbage answer for the checks
        if scope["type"] == "http" and scope["path"] == "/v1/office-checks":
            return await Starlette(routes=[Route("/v1/office-checks", broken)])(scope, receive, send)
        return await real(scope, receive, send)

    swap.app = through
    result = sync_once(store, url, token)
    assert result.ok and result.sent == 2 and result.office_checks == 0
    assert any(m.startswith("office checks not fetched") for m in result.messages)
    assert store.get_report(rid)["office"]["state"] == "awaiting"



@pytest.mark.asyncio
async def test_the_office_version_of_a_disputed_report_comes_back_and_is_shown(store, office):
    from fieldlog_app.office import rewrite

    sdb, token, url = office
    _, rid = report_of(store)
    assert sync_once(store, url, token).sent == 2
    # the office's checker with --rewrite-disputed says so in the check of a disputed report
    check_queue.record_check(sdb, rid, status="checked", model="office-7b", findings=[DISAGREE],
                             summary={"office_version": "queued"})
    assert sync_when_reachable(store, url, token).office_checks == 1
    office_ = store.get_report(rid)["office"]
    assert office_["check"]["office_version_pending"] is True and office_["check"]["office_version"] is None
    assert office_["line"].endswith("; the office model's own version is to come")
    assert store.office_awaiting() == 1  # so the background sync keeps asking

    note, report = check_queue.report_inputs(sdb, rid)
    text = report["text"].replace("monitor", "re-scout in 3 days", 1)
    assert text != report["text"]
    row = rewrite.save_office_version(sdb, rid, note, report, rewrite.RewriteResult(
        text=text, passes=[{"kind": "score", "chars": 10, "seconds": 1.0}], seconds=1.0, accepted_chars=10,
        generated_chars=len(text) - 10, model="office-7b", finished=True))
    [sent] = check_queue.checks_for_device(sdb, "handheld-1")
    assert sent["office_version"] == {"report_id": row["office_report_id"], "model": "office-7b",
                                      "created_at": row["created_at"], "text": text}
    assert sent["office_version_pending"] is False
    got = sync_when_reachable(store, url, token)
    assert got is not None and got.office_checks == 1  # the check changed when its office version was stored
    check = store.get_report(rid)["office"]["check"]
    assert check["office_version"]["text"] == text and check["office_version_pending"] is False
    assert store.office_awaiting() == 0 and sync_when_reachable(store, url, token) is None
    assert store.get_report(rid)["text"] == report["text"]  # beside the field report, never over it

    app = make_app(store)
    async with app.run_test(size=(100, 40)) as pilot:
        box = await _report_screen(app, pilot, rid)
        shown = str(box.render())
        assert "the office model's own version is below" in shown and "Office version by office-7b" in shown
        assert "re-scout in 3 days" in shown


def announced_office_version(store, office) -> str:
    """A sent report the office disputed, its check saying an office version is coming, fetched: its id."""
    sdb, token, url = office
    _, rid = report_of(store)
    sync_once(store, url, token)
    check_queue.record_check(sdb, rid, status="checked", model="office-7b", findings=[DISAGREE],
                             summary={"office_version": "queued"})
    sync_once(store, url, token)
    assert store.office_awaiting() == 1
    return rid


def test_a_given_up_office_version_stops_the_asking(store, office):
    sdb, token, url = office
    rid = announced_office_version(store, office)
    check_queue.office_version_given_up(sdb, rid, "OracleAnswerError: not JSON")
    assert sync_when_reachable(store, url, token).office_checks == 1
    assert store.office_awaiting() == 0
    assert store.get_report(rid)["office"]["line"] == "checked at the office by office-7b: 1 disagreement"


def test_an_office_approval_cancels_the_announced_office_version(store, office):
    from fieldlog_app.office.accounts import Office

    sdb, token, url = office
    rid = announced_office_version(store, office)
    office_ = Office(sdb)
    maria = office_.add_user("maria", "a-long-password-1", "manager")
    office_.review(maria, rid, "flagged")
    assert check_queue.checks_for_device(sdb, "handheld-1")[0]["office_version_pending"] is True
    office_.review(maria, rid, "approved")  # as written: the policy will not rewrite it
    assert sync_when_reachable(store, url, token).office_checks == 1
    assert store.office_awaiting() == 0 and sync_when_reachable(store, url, token) is None

# ---------------------------------------------------------------------------------- what the app shows
def test_the_log_badge_marks_awaiting_agreeing_and_disputed_reports():
    r = {"id": "r1", "status": "complete", "created_at": "t", "findings": []}
    assert report_badge([r]).plain == "✓ clean"
    assert report_badge([r], {"r1": None}).plain == "✓ clean"  # not sent: no mark
    assert report_badge([r], {"r1": "awaiting"}).plain == "✓ clean ◌"
    assert report_badge([r], {"r1": "agrees"}).plain == "✓ clean ◉"
    assert report_badge([r], {"r1": "disputed"}).plain == "⚠ disputed ✗"
    assert report_badge([{**r, "review_status": "approved"}], {"r1": "disputed"}).plain == "✓ approved ✗"


async def _report_screen(app, pilot, rid) -> Static:
    app.push_screen(ReportScreen(rid))
    await pilot.pause()
    return app.screen.query_one("#report-office", Static)


@pytest.mark.asyncio
async def test_the_report_screen_says_what_the_office_model_said(store, office):
    sdb, token, url = office
    _, rid = report_of(store)
    _, other = report_of(store)
    app = make_app(store)
    async with app.run_test(size=(100, 30)) as pilot:
        box = await _report_screen(app, pilot, rid)
        assert box.display is False  # not sent yet: nothing to say
        app.pop_screen()
        sync_once(store, url, token)
        box = await _report_screen(app, pilot, rid)
        assert box.display and "awaiting office check" in str(box.render())
        app.pop_screen()
        check_queue.record_check(sdb, rid, status="checked", model="office-7b", findings=[DISAGREE], summary={})
        check_queue.record_check(sdb, other, status="checked", model="office-7b", findings=[], summary={})
        sync_once(store, url, token)
        box = await _report_screen(app, pilot, rid)
        assert "checked at the office by office-7b: 1 disagreement" in str(box.render())
        assert box.has_class("-warning")
        found = str(app.screen.query_one("#report-findings", Static).render())
        assert "not a clean report" in found
        assert "office-disagreement: office model would write 'above', field report says 'below'" in found
        app.pop_screen()
        box = await _report_screen(app, pilot, other)
        assert "checked at the office by office-7b: agrees" in str(box.render()) and box.has_class("-ok")
        app.pop_screen()
        await pilot.pause()
        table = app.screen.query_one("#log-table", DataTable)
        cells = [table.get_cell_at((i, 4)) for i in range(table.row_count)]
        assert sorted(c.plain for c in cells if isinstance(c, Text)) == ["⚠ disputed ✗", "✓ clean ◉"]


@pytest.mark.parametrize("size", [pytest.param((80, 24), id="80x24")])
def test_snapshot_a_disputed_report(snap_compare, office, size, monkeypatch):
    pytest.importorskip("pytest_textual_snapshot")
    import itertools

    import fieldlog_app.database.store as store_mod

    counter = itertools.count(1)
    monkeypatch.setattr(store_mod.uuid, "uuid4", lambda: uuid.UUID(int=next(counter) * 7919, version=4))
    ticks = itertools.count(0)
    monkeypatch.setattr(store_mod, "utc_now", lambda: f"2026-07-21T08:{next(ticks) % 60:02d}:00Z")
    sdb, token, url = office
    s = Store(":memory:")
    _, rid = report_of(s)
    sync_once(s, url, token)
    check_queue.record_check(sdb, rid, status="checked", model="qwen2.5-7b-instruct", findings=[DISAGREE], summary={})
    sync_once(s, url, token)

    async def open_it(pilot):
        pilot.app.push_screen(ReportScreen(rid))
        await pilot.pause()

    try:
        assert snap_compare(make_app(s), terminal_size=size, run_before=open_it)
    finally:
        s.close()
