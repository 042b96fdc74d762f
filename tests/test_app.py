"""Pilot tests of the fieldlog app: form, validation, drafts, finalize, generate/cancel, search, sync.

A scripted fake generator (real Chunk/Done/TokenRecord events, short sleeps)
stands in for the engine so these run in seconds; one test at the end drives
the real engine on tiny random-weight models when that fixture exists.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
from pathlib import Path
import time

import pytest

pytest.importorskip("textual")

from rich.text import Text  # noqa: E402
from textual.widgets import DataTable, Input, Select, Static  # noqa: E402

from edgespec import ModelFileError  # noqa: E402
from edgespec.events import Chunk, Done, Stats, TokenRecord  # noqa: E402
from fieldlog_app.app import FieldlogApp  # noqa: E402
from fieldlog_app.demo import seed_demo  # noqa: E402
from fieldlog_app.database import Store  # noqa: E402
from fieldlog_app.screens.form_model import (  # noqa: E402
    OBS_BY_KEY,
    TOP_BY_KEY,
    check_value,
    error_key,
    note_to_form,
    parse_form,
)
from fieldlog_app.screens.generate import GenerateScreen  # noqa: E402
from fieldlog_app.screens.log import LogScreen  # noqa: E402
from fieldlog_app.screens.report import ReportScreen  # noqa: E402
from fieldlog_app.screens.sighting_detail import SightingDetailScreen  # noqa: E402
from fieldlog_app.screens.sighting_form import SightingFormScreen  # noqa: E402
from fieldlog_app.screens.sync import SyncScreen, summarize  # noqa: E402
from fieldlog_app.widgets.gen_status import LiveStats, describe_pair, status_line as gen_status_line  # noqa: E402
from vineyard.status import status_line  # noqa: E402
from fieldlog_app.widgets.provenance import (  # noqa: E402
    STYLES,
    Run,
    runs_from_records,
    runs_from_stored,
    styled_text,
)

TODAY = dt.date(2026, 7, 21)
NOTE = {
    "block": "B4", "variety": "Riesling", "rows": "12-18", "date": "2026-07-21", "scout": "M. Ortiz",
    "observations": [{"pest": "grape berry moth", "life_stage": "larva", "unit": "clusters",
                      "sampled": 50, "infested": 4}],
    "weather": "22C, dry", "notes": "Damage on the wood edge next to the tree line.",
}

# (text, source): one token per entry; "unverified" is drafted text the oracle never checked
SCRIPT = [
    ("Summary", "oracle"), (":", "drafted"), (" grape", "drafted"), (" berry", "corrected"),
    (" moth", "bonus"), (" larvae", "drafted"), (" in", "drafted"), (" 4", "corrected"), (" of", "drafted"),
    (" 50", "drafted"), (" clusters", "bonus"), (".", "unverified"), ("\nAction", "oracle"), (":", "drafted"),
    (" monitor", "drafted"), (".", "bonus"),
]
SCRIPT_TEXT = "".join(t for t, _ in SCRIPT)


class FakeGenerator:
    """Yields scripted Chunk/Done events like vineyard.writer.ReportWriter.stream_report.

    ``hold_after``: after that many chunks, wait (up to 10 s) for the cancel event, so a
    test can cancel at a known point. ``crash_after``: raise after that many chunks.
    """

    power_mode = "balanced"
    model_pair = {"oracle": "/models/tiny-oracle.gguf", "drafter": "model", "draft_model": "/models/tiny-draft.gguf"}

    def __init__(self, script=SCRIPT, *, delay=0.002, findings=(), hold_after=None, crash_after=None, release=None):
        self.release = release  # a threading.Event that lets a held stream continue
        self.script = list(script)
        self.delay = delay
        self.findings = list(findings)
        self.hold_after = hold_after
        self.crash_after = crash_after
        self.calls = 0
        self.history: list[str] = []
        self.closed = False

    def stream_report(self, note, *, cancel=None, **kw):
        self.calls += 1
        self.note = note
        assert note["block"]  # the app passes a validated field note
        records: list[TokenRecord] = []
        pos = 0
        stop = "eos"
        for i, (text, source) in enumerate(self.script):
            if self.crash_after is not None and i >= self.crash_after:
                raise RuntimeError("llama_decode returned -1")
            if self.hold_after is not None and i >= self.hold_after:
                deadline = time.monotonic() + 10
                while not (cancel is not None and cancel.is_set()) and not (self.release and self.release.is_set()):
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.005)
            if cancel is not None and cancel.is_set():
                stop = "cancelled"
                break
            time.sleep(self.delay)
            rec = TokenRecord(token=i, text=text, source=source, verified=source != "unverified",
                              start=pos, end=pos + len(text))
            pos += len(text)
            records.append(rec)
            yield Chunk(text, [rec])
        drafted = sum(r.source == "drafted" for r in records)
        corrected = sum(r.source == "corrected" for r in records)
        stats = Stats(tokens=len(records), drafted_tokens=drafted + corrected + 2, accepted_tokens=drafted,
                      wall_s=2.0, stop_reason=stop, drafter="model", power_mode="balanced")
        text = "".join(r.text for r in records)
        yield Done(text, [r.token for r in records], records, stats)

    def report_record(self, done):
        return {
            "text": done.text,
            "model_pair": dict(self.model_pair),
            "policy": {"mode": "balanced", "max_draft": 6},
            "stats": done.stats.to_dict(),
            "provenance": [{"token": r.token, "start": r.start, "end": r.end, "source": r.source,
                            "verified": r.verified} for r in done.records],
            "spans": [{"kind": "pest", "text": "grape berry moth", "start": 9, "end": 25, "verified_rate": 1.0}],
            "findings": list(self.findings),
        }

    def add_to_history(self, text):
        self.history.append(text)

    def close(self):
        self.closed = True


def missing_models():
    raise ModelFileError("qwen2.5-coder-0.5b-instruct: not in the model cache")


@pytest.fixture
def store():
    s = Store(":memory:")
    yield s
    s.close()


def make_app(store, gen=None, factory=None, **kw) -> FieldlogApp:
    if factory is None:
        factory = (lambda: gen) if gen is not None else missing_models
    return FieldlogApp(store, generator_factory=factory, today=lambda: TODAY, **kw)


async def wait_for(pilot, predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


async def type_into(pilot, selector: str, text: str, *, keys: bool = False) -> None:
    """Focus an input, replace its text, and let the app react (Changed → validation).

    ``keys=True`` presses one key per character like a user; otherwise the text is
    inserted at the cursor in one go (same events, much faster).
    """
    widget = pilot.app.screen.query_one(selector, Input)
    widget.focus()
    await pilot.pause()
    widget.select_all()
    if keys:
        await pilot.press("backspace", *text)
    else:
        widget.delete_selection()
        widget.insert_text_at_cursor(text)
    await pilot.pause()


def table_keys(table: DataTable) -> list[str]:
    return [str(table.coordinate_to_cell_key((i, 0)).row_key.value) for i in range(table.row_count)]


def finalized_sighting(store, note=NOTE) -> str:
    sid = store.save_draft(dict(note))
    store.finalize(sid)
    return sid


# --------------------------------------------------------------------------- pure helpers


def test_check_value_rules():
    assert check_value(TOP_BY_KEY["date"], "2026-07-21") == ("2026-07-21", None)
    assert check_value(TOP_BY_KEY["date"], "2026-02-30")[1] == "2026-02-30 is not a real date"
    assert "YYYY-MM-DD" in check_value(TOP_BY_KEY["date"], "21/07/2026")[1]
    assert check_value(TOP_BY_KEY["time"], "07:45") == ("07:45", None)
    assert check_value(TOP_BY_KEY["time"], "7:45") == ("07:45", None)
    assert check_value(TOP_BY_KEY["time"], "25:00")[1] == "use 24-hour HH:MM"
    assert check_value(TOP_BY_KEY["lat"], "42,5") == (42.5, None)  # decimal comma
    assert check_value(TOP_BY_KEY["lat"], "91")[1] == "must be -90–90"
    assert check_value(TOP_BY_KEY["lon"], "-181")[1] == "must be -180–180"
    assert check_value(OBS_BY_KEY["sampled"], "0")[1] == "must be ≥ 1"
    assert check_value(OBS_BY_KEY["sampled"], "2.5")[1] == "enter a whole number"
    assert check_value(OBS_BY_KEY["severity_pct"], "100.5")[1] == "must be 0–100"
    assert check_value(OBS_BY_KEY["severity_pct"], "nan")[1] == "enter a number"
    assert check_value(OBS_BY_KEY["count"], "") == (None, None)
    assert check_value(TOP_BY_KEY["risk_class"], "High") == ("high", None)
    assert check_value(TOP_BY_KEY["risk_class"], "") == (None, None)
    assert check_value(TOP_BY_KEY["risk_class"], "severe")[1] == "choose low, intermediate, high or leave it blank"


def test_parse_form_draft_vs_final_and_cross_field():
    top = {"block": "B4", "rows": "", "date": "2026-07-21"}
    obs = [{"pest": "grape berry moth", "life_stage": "larva", "unit": "clusters", "sampled": "5", "infested": "9"},
           {}]  # a blank row is ignored
    draft = parse_form(top, obs, strict=False)
    assert draft.errors == {"observations[0].infested": "must be ≤ sampled (5)"}
    assert len(draft.note["observations"]) == 1
    final = parse_form(top, obs, strict=True)
    assert final.errors["rows"] == "required"
    assert "observations[0].infested" in final.errors
    # no observation at all is fine for a draft, not for finalize
    assert parse_form({"block": "B4"}, [{}], strict=False).ok
    assert parse_form({"block": "B4", "rows": "1", "date": "2026-07-21"}, [], strict=True).errors == {
        "observations": 'enter what you found, or tick "Nothing found"'}
    # one coordinate without the other
    assert parse_form({"lat": "42.1"}, [], strict=False).errors == {"lon": "give both latitude and longitude"}


def test_parse_form_output_passes_edgespec_validation():
    from vineyard.fieldnote import validate

    top, obs = note_to_form({**NOTE, "lat": 42.5461, "lon": -76.8662, "accuracy_m": 6.0, "risk_class": "high"})
    assert top["risk_class"] == "high"
    result = parse_form(top, obs, strict=True)
    assert result.ok, result.errors
    note = validate(result.note)
    assert note["observations"][0]["infested"] == 4 and note["accuracy_m"] == 6 and note["risk_class"] == "high"
    assert parse_form({**top, "risk_class": ""}, obs, strict=True).note["risk_class"] is None
    # and the round trip through the form strings is lossless
    assert note_to_form(result.note) == (top, obs)


def test_parse_form_nothing_found_and_scouted_for():
    top = {"block": "B4", "rows": "1-10", "date": "2026-07-21"}
    walk = parse_form(top, [{}], strict=True, nothing_found=True)
    assert walk.ok and walk.note["observations"] == []
    scouted = {"pest": "spotted lanternfly", "life_stage": "adult", "unit": "vines", "sampled": "40"}
    # a row under "Nothing found" says what was scouted for: it needs its 0, and more than 0 is a contradiction
    assert parse_form(top, [scouted], strict=True, nothing_found=True).errors == {
        "observations[0].infested": "enter 0 (scouted for, none found)"}
    assert parse_form(top, [{**scouted, "infested": "0"}], strict=True, nothing_found=True).ok
    assert parse_form(top, [{**scouted, "count": "3"}], strict=False, nothing_found=True).errors == {
        "observations[0].count": "must be 0: Nothing found is ticked"}
    # rows written backwards are caught in the form, as the field note refuses them
    assert check_value(TOP_BY_KEY["rows"], "20-5") == (None, "'20-5' runs backwards; write 5-20")
    assert parse_form({**top, "rows": "20-5"}, [], strict=False).errors == {"rows": "'20-5' runs backwards; write 5-20"}


def test_hints_never_look_like_values():
    """A grey "B4" in an empty Block field reads as filled in: examples say "e.g.", other hints are no value."""
    from fieldlog_app.screens.form_model import OBS_FIELDS, TOP_FIELDS
    from vineyard.pests import all_names

    words = {n.lower() for n in all_names()} | {"larva", "clusters", "leaves", "vines"}
    for spec in TOP_FIELDS + OBS_FIELDS:
        hint = spec.placeholder
        if spec.kind != "text":
            assert hint and check_value(spec, hint)[1] is not None, (spec.key, hint)  # "≥ 1", "YYYY-MM-DD"
        elif any(ch.isdigit() for ch in hint) or hint.lower() in words or spec.key in ("block", "variety", "rows"):
            assert hint.startswith("e.g. "), (spec.key, hint)
    css = (Path(__file__).resolve().parents[1] / "fieldlog_app" / "app.tcss").read_text()
    assert re.search(r"Input > \.input--placeholder \{[^}]*text-style: italic", css)


@pytest.mark.parametrize("typed, end, want", [
    ("2026-07-21", False, ("2026-07-21", None)), ("2026-7-1", False, ("2026-07-01", None)),
    ("2026-07", False, ("2026-07-01", None)), ("2026-02", True, ("2026-02-28", None)),
    ("2024-02", True, ("2024-02-29", None)), ("2026", True, ("2026-12-31", None)), ("", False, (None, None)),
    ("2026-13", False, (None, "'2026-13' is not a date (YYYY-MM-DD, or YYYY-MM for a month)")),
    ("21/07/2026", False, (None, "'21/07/2026' is not a date (YYYY-MM-DD, or YYYY-MM for a month)")),
])
def test_filter_dates_take_days_months_and_years(typed, end, want):
    from fieldlog_app.screens.form_model import parse_filter_date

    assert parse_filter_date(typed, end=end) == want


def test_pests_cell_says_nothing_found_for_a_walk_that_scouted_at_zero():
    from fieldlog_app.screens.common import pests_cell

    zero = {"pest": "spotted lanternfly", "life_stage": "adult", "unit": "vines", "sampled": 40, "infested": 0,
            "count": None}
    assert pests_cell({"status": "finalized", "observations": [zero]}) == "nothing found (spotted lanternfly)"
    assert pests_cell({"status": "finalized", "observations": [{**zero, "infested": 2}]}) == "spotted lanternfly"
    assert pests_cell({"status": "finalized", "observations": []}) == "nothing found"
    assert pests_cell({"status": "draft", "observations": []}) == "—"  # not finished, not "nothing"


def test_report_badge_shows_a_persons_verdict_first():
    from fieldlog_app.screens.common import report_badge

    gen = {"status": "complete", "created_at": "2026-07-21T08:00", "findings": [{"kind": "wrong_count"}]}
    assert str(report_badge([gen])) == "⚠ 1 finding"
    approved = {**gen, "created_at": "2026-07-21T09:00", "version": 2, "review_status": "approved"}
    assert str(report_badge([gen, approved])) == "✓ approved"
    flagged = {**gen, "created_at": "2026-07-21T09:00", "version": 3, "review_status": "flagged"}
    assert str(report_badge([approved, flagged])) == "⚑ flagged"


def test_error_key_splits_store_messages():
    assert error_key("observations[0].infested: 9 is out of range (0..5)") == (
        "observations[0].infested", "9 is out of range (0..5)")
    assert error_key("date: required") == ("date", "required")
    assert error_key("the database is busy") == (None, "the database is busy")


def test_provenance_runs_and_styles():
    recs = [TokenRecord(1, "ab", "drafted", True, 0, 2), TokenRecord(2, "c", "drafted", True, 2, 3),
            TokenRecord(3, "d", "corrected", True, 3, 4), TokenRecord(4, "e", "drafted", False, 4, 5)]
    runs = runs_from_records(recs, "abcde")
    assert runs == [Run(0, 3, "drafted", True), Run(3, 4, "corrected", True), Run(4, 5, "drafted", False)]
    t = styled_text("abcde", runs)
    styles = {t.plain[s.start:s.end]: str(s.style) for s in t.spans}
    assert styles == {"abc": STYLES["drafted"], "d": STYLES["corrected"], "e": STYLES["unverified"]}
    # stored shapes: record dicts, triples, and junk (ignored, text still shown)
    stored = [{"source": "drafted", "start": 0, "end": 2, "verified": True}, {"source": "oracle", "start": 2, "end": 5}]
    assert runs_from_stored(stored, "abcde") == [Run(0, 2, "drafted", True), Run(2, 5, "oracle", True)]
    assert runs_from_stored([[0, 1, "corrected"]], "abc") == [Run(0, 1, "corrected", True)]
    assert runs_from_stored({"runs": [["unverified", 1, 3]]}, "abc") == [Run(1, 3, "unverified", False)]
    assert runs_from_stored("garbage", "abc") == [] and runs_from_stored([object()], "abc") == []
    assert styled_text("abc", []).plain == "abc"


def test_status_line_and_pair():
    live = LiveStats(started=0.0)
    live.add([TokenRecord(0, "a", "drafted", True), TokenRecord(1, "b", "drafted", True),
              TokenRecord(2, "c", "corrected", True), TokenRecord(3, "d", "drafted", False)], now=1.0)
    assert live.tokens == 4 and live.unverified == 1
    line = gen_status_line("● generating", live, now=2.0, power_mode="saver",
                       model_pair={"oracle": "/m/qwen.gguf", "drafter": "model", "draft_model": "/m/smol.gguf"})
    assert line == "● generating · 4 tok · 2.0 tok/s · accept ~67% · 1 unverified · power saver · smol → qwen"
    final = Stats(tokens=10, drafted_tokens=8, accepted_tokens=6, wall_s=4.0, power_mode="balanced").to_dict()
    assert gen_status_line("✓ done", live, final=final) == "✓ done · 10 tok · 2.5 tok/s · accept 75% · power balanced"
    assert gen_status_line("✓ done", live, final=final, headline="written in 4.0 s") == "✓ done · written in 4.0 s"
    assert describe_pair({"oracle": "q.gguf", "drafter": "cascade", "draft_model": None}) == "cascade → q"
    assert describe_pair(None) == ""


def test_summarize_sync_results():
    assert summarize({"sent": 3, "conflicts": 0}) == "sync finished: sent 3, conflicts 0"
    assert summarize("offline") == "offline"
    assert summarize(None) == "sync finished"

    class Result:  # the shape of fieldlog_app.sync.client.SyncResult
        error = "server returned 503"

        def summary(self):
            return "sent 2, conflicts 0"

    assert summarize(Result()) == "sync finished: sent 2, conflicts 0 — stopped early: server returned 503"


# --------------------------------------------------------------------------- form


async def open_new_form(pilot, app) -> SightingFormScreen:
    """The empty form for a new sighting ("n" on the log screen)."""
    await pilot.press("n")
    await pilot.pause()
    assert isinstance(app.screen, SightingFormScreen)
    return app.screen


async def from_detail(pilot, app, sighting_id: str, key: str, screen_type):
    """Open a sighting's detail screen and press ``key``; the screen it leads to must be a ``screen_type``."""
    app.push_screen(SightingDetailScreen(sighting_id))
    await pilot.pause()
    await pilot.press(key)
    await pilot.pause()
    assert isinstance(app.screen, screen_type)
    return app.screen


async def open_form_for(pilot, app, sighting_id: str) -> SightingFormScreen:
    """The form the user edits a sighting in ("e" on its detail screen)."""
    return await from_detail(pilot, app, sighting_id, "e", SightingFormScreen)


@pytest.mark.asyncio
async def test_validation_errors_are_shown_inline_and_nothing_is_saved(store):
    app = make_app(store)
    async with app.run_test(size=(80, 24)) as pilot:
        form = await open_new_form(pilot, app)
        assert isinstance(form, SightingFormScreen)
        assert form.top_field("date").value == "2026-07-21"  # defaults to today
        await type_into(pilot, "#f-block", "B4")
        await type_into(pilot, "#f-date", "2026-13-40", keys=True)
        # typing an invalid date shows the reason at once
        assert form.top_field("date").error == "2026-13-40 is not a real date"
        row = form.obs_rows()[0]
        await type_into(pilot, f"#{row.id}-pest", "grape berry moth")
        await type_into(pilot, f"#{row.id}-sampled", "10")
        await type_into(pilot, f"#{row.id}-infested", "12")
        await type_into(pilot, f"#{row.id}-severity_pct", "150")
        assert row.field("severity_pct").error == "must be 0–100"
        await type_into(pilot, "#f-lat", "95")
        await pilot.press("ctrl+f")
        await pilot.pause()
        assert form.top_field("rows").error == "required"
        assert form.top_field("date").error == "2026-13-40 is not a real date"
        assert form.top_field("lat").error == "must be -90–90"
        assert row.field("infested").error == "must be ≤ sampled (10)"
        assert row.field("life_stage").error == "required"
        assert row.field("severity_pct").error == "must be 0–100"
        message = form.query_one("#form-message", Static)
        assert "Fix 7 fields" in str(message.render())
        assert isinstance(app.screen, SightingFormScreen)  # still on the form
        assert store.list_sightings(include_superseded=True) == []
        # fixing a field clears its message as you type
        await type_into(pilot, f"#{row.id}-severity_pct", "15")
        assert row.field("severity_pct").error is None


@pytest.mark.asyncio
async def test_fill_save_draft_then_finalize(store):
    app = make_app(store)
    async with app.run_test(size=(80, 24)) as pilot:
        form = await open_new_form(pilot, app)
        await type_into(pilot, "#f-block", "B4")
        await type_into(pilot, "#f-variety", "Riesling")
        await type_into(pilot, "#f-time", "07:45")
        await type_into(pilot, "#f-notes", "wood edge [b]damage[/b]")  # markup-looking text is just text
        await type_into(pilot, "#f-lat", "42.5461")
        await type_into(pilot, "#f-lon", "-76.8662")
        row = form.obs_rows()[0]
        await type_into(pilot, f"#{row.id}-pest", "grape berry moth")
        await type_into(pilot, f"#{row.id}-sampled", "50")
        await pilot.press("ctrl+s")  # rows still empty: fine for a draft
        await pilot.pause()
        drafts = store.list_sightings(status="draft")
        assert len(drafts) == 1
        sid = drafts[0]["id"]
        assert form.sighting_id == sid
        saved = store.get_sighting(sid)
        assert saved["block"] == "B4" and saved["time"] == "07:45" and saved["rows"] is None
        assert saved["lat"] == pytest.approx(42.5461) and saved["notes"] == "wood edge [b]damage[/b]"
        assert saved["observations"][0]["pest"] == "grape berry moth"
        assert saved["observations"][0]["sampled"] == 50

        # finalize is refused until the required fields are there
        await pilot.press("ctrl+f")
        await pilot.pause()
        assert form.top_field("rows").error == "required"
        assert store.get_sighting(sid)["status"] == "draft"
        await type_into(pilot, "#f-rows", "12-18")
        await type_into(pilot, f"#{row.id}-life_stage", "larva")
        await type_into(pilot, f"#{row.id}-unit", "clusters")
        await type_into(pilot, f"#{row.id}-infested", "4")
        await pilot.press("ctrl+f")
        await wait_for(pilot, lambda: isinstance(app.screen, SightingDetailScreen), what="detail screen")
        final = store.get_sighting(sid)
        assert final["status"] == "finalized" and final["rows"] == "12-18"
        assert final["observations"][0]["infested"] == 4
        assert [r["item_id"] for r in store.outbox_items()] == [sid]
        # the detail view shows user text literally (no markup parsing)
        summary = app.screen.query_one("#detail-summary", Static).render()
        assert "[b]damage[/b]" in str(summary)
        assert len(store.list_sightings(include_superseded=True)) == 1  # saved in place, no duplicates


@pytest.mark.asyncio
async def test_a_nothing_found_walk_is_logged_without_a_fake_pest(store):
    gen = FakeGenerator()
    app = make_app(store, gen)
    async with app.run_test(size=(80, 24)) as pilot:
        form = await open_new_form(pilot, app)
        await type_into(pilot, "#f-block", "B4")
        await type_into(pilot, "#f-rows", "1-40")
        await pilot.press("ctrl+f")
        await pilot.pause()
        # the message sits on the empty Observation 1 the user is looking at, and names the way out
        row = form.obs_rows()[0]
        assert row.field("pest").error == 'enter what you found, or tick "Nothing found"'
        assert "Fix 1 field " in str(form.query_one("#form-message", Static).render())
        form.query_one("#form-nothing-found").toggle()
        await pilot.pause()
        # ticking it clears the error and the banner at once (the form re-checks while a save is pending)
        assert row.field("pest").error is None
        assert not form.query_one("#form-message", Static).has_class("-shown")
        await pilot.press("ctrl+f")
        await wait_for(pilot, lambda: isinstance(app.screen, SightingDetailScreen), what="detail screen")
        [s] = store.list_sightings()
        assert s["status"] == "finalized" and s["observations"] == []
        assert "nothing found" in str(app.screen.query_one("#detail-summary", Static).render())
        # editing it again shows the choice ticked
        await pilot.press("e")
        await pilot.pause()
        assert app.screen.nothing_found is True
        await pilot.press("escape")
        await pilot.pause()
        # and a report can be written on it: the generator gets the empty walk as a field note
        await pilot.press("g")
        await wait_for(pilot, lambda: gen.calls == 1 and store.reports_for(s["id"]), what="report saved")
        assert gen.note["observations"] == []


@pytest.mark.asyncio
async def test_a_nothing_found_draft_reopens_ticked_and_unticking_is_kept_too(store):
    """A draft saved with "Nothing found" ticked and no rows comes back exactly as it was saved."""
    app = make_app(store)
    async with app.run_test(size=(80, 24)) as pilot:
        form = await open_new_form(pilot, app)
        await type_into(pilot, "#f-block", "B4")
        await type_into(pilot, "#f-rows", "1-40")
        form.query_one("#form-nothing-found").toggle()
        await pilot.pause()
        await pilot.press("ctrl+s")
        await pilot.pause()
        [draft] = store.list_sightings(status="draft")
        sid = draft["id"]
        assert draft["observations"] == [] and draft["nothing_found"] is True
        await pilot.press("escape")  # saved: leaves without asking
        await pilot.pause()
        assert isinstance(app.screen, LogScreen)

        form = await open_form_for(pilot, app, sid)
        assert form.mode == "draft" and form.nothing_found is True
        assert not form.dirty  # reopened exactly as saved
        # unticking and saving again is kept as well
        form.query_one("#form-nothing-found").toggle()
        await pilot.pause()
        assert form.dirty
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert store.get_sighting(sid)["nothing_found"] is False
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("e")
        await pilot.pause()
        form = app.screen
        assert isinstance(form, SightingFormScreen) and form.nothing_found is False and not form.dirty
        # ticked again, saved, reopened: finalize takes it without asking for observations
        form.query_one("#form-nothing-found").toggle()
        await pilot.pause()
        await pilot.press("ctrl+s")
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("e")
        await pilot.pause()
        form = app.screen
        assert isinstance(form, SightingFormScreen) and form.nothing_found is True
        await pilot.press("ctrl+f")
        await wait_for(pilot, lambda: isinstance(app.screen, SightingDetailScreen), what="detail screen")
        final = store.get_sighting(sid)
        assert final["status"] == "finalized" and final["observations"] == []
        assert "nothing_found" not in json.loads(store.outbox_items()[-1]["payload"])  # the upload is as before


async def fill_row(pilot, row, **values) -> None:
    for key, value in values.items():
        await type_into(pilot, f"#{row.id}-{key}", value)


@pytest.mark.asyncio
async def test_misspelled_and_unknown_pests_are_put_to_the_scout_at_finalize(store):
    app = make_app(store)
    async with app.run_test(size=(80, 24)) as pilot:
        form = await open_new_form(pilot, app)
        await type_into(pilot, "#f-block", "K9")
        await type_into(pilot, "#f-rows", "1-4")
        row = form.obs_rows()[0]
        await fill_row(pilot, row, pest="berry moht", life_stage="larva", unit="clusters", sampled="50", infested="3")
        assert row.field("pest").note == "misspelling of grape berry moth · ctrl+y uses it"
        await pilot.press("ctrl+o")
        await pilot.pause()
        row2 = form.obs_rows()[1]
        await fill_row(pilot, row2, pest="grape cicada", life_stage="adult", unit="vines", sampled="20", count="4")
        assert row2.field("pest").note == "not in the pest catalog"
        await pilot.press("ctrl+f")
        await pilot.pause()
        assert type(app.screen).__name__ == "PestCheckScreen"
        await pilot.press("escape")  # back: nothing saved
        await pilot.pause()
        assert app.screen is form and store.list_sightings(include_superseded=True) == []
        await pilot.press("ctrl+f")
        await pilot.pause()
        await pilot.press("y")  # use the catalog names: the misspelling is replaced, the unknown pest kept
        await wait_for(pilot, lambda: isinstance(app.screen, SightingDetailScreen), what="detail screen")
        [s] = store.list_sightings()
        assert [o["pest"] for o in s["observations"]] == ["grape berry moth", "grape cicada"]
        assert store.audit_log(s["id"])[-1]["detail"]["unknown_pests"] == ["grape cicada"]
        summary = str(app.screen.query_one("#detail-summary", Static).render())
        assert "grape cicada (adult)" in summary and "(not in the pest catalog)" in summary
        await pilot.press("escape")
        await pilot.pause()
        await type_into(pilot, "#filter-pest", "grape berry moth")
        assert table_keys(app.screen.query_one("#log-table", DataTable)) == [f"s:{s['id']}"]


@pytest.mark.asyncio
async def test_ctrl_y_takes_the_catalog_name_and_keep_as_typed_keeps_it(store):
    app = make_app(store)
    async with app.run_test(size=(80, 24)) as pilot:
        form = await open_new_form(pilot, app)
        await type_into(pilot, "#f-block", "K9")
        await type_into(pilot, "#f-rows", "1-4")
        row = form.obs_rows()[0]
        await fill_row(pilot, row, pest="japanese beatle", life_stage="adult", unit="vines", sampled="20", count="1")
        row.field("pest").input.focus()
        await pilot.press("ctrl+y")
        await pilot.pause()
        assert row.field("pest").value == "Japanese beetle" and row.field("pest").note is None
        await type_into(pilot, f"#{row.id}-pest", "GBM")
        await pilot.press("ctrl+f")
        await pilot.pause()
        await pilot.press("k")  # keep as typed
        await wait_for(pilot, lambda: isinstance(app.screen, SightingDetailScreen), what="detail screen")
        assert store.list_sightings()[0]["observations"][0]["pest"] == "GBM"


@pytest.mark.asyncio
async def test_the_fix_banner_counts_down_as_fields_are_fixed(store):
    app = make_app(store)
    async with app.run_test(size=(80, 24)) as pilot:
        form = await open_new_form(pilot, app)
        row = form.obs_rows()[0]
        await type_into(pilot, f"#{row.id}-pest", "grape berry moth")
        await pilot.press("ctrl+f")
        await pilot.pause()
        message = form.query_one("#form-message", Static)
        assert "Fix 5 fields" in str(message.render())  # block, rows, stage, unit, sampled
        await type_into(pilot, "#f-block", "B4")
        await type_into(pilot, "#f-rows", "20-5")
        assert "Fix 4 fields" in str(message.render())  # block fixed; rows is still wrong, differently
        assert form.top_field("rows").error == "'20-5' runs backwards; write 5-20"
        await type_into(pilot, "#f-rows", "5-20")
        await type_into(pilot, f"#{row.id}-life_stage", "larva")
        assert "Fix 2 fields" in str(message.render())
        await type_into(pilot, f"#{row.id}-unit", "clusters")
        await type_into(pilot, f"#{row.id}-sampled", "50")
        assert not message.has_class("-shown") and str(message.render()).strip() == ""
        await type_into(pilot, f"#{row.id}-sampled", "")  # breaking it again brings the banner back
        assert "Fix 1 field " in str(message.render())


@pytest.mark.asyncio
async def test_risk_class_chosen_in_the_form_is_stored_shown_and_given_to_the_generator(store):
    gen = FakeGenerator()
    notes: list[dict] = []
    stream = gen.stream_report
    gen.stream_report = lambda note, **kw: (notes.append(note), stream(note, **kw))[1]
    app = make_app(store, gen)
    async with app.run_test(size=(80, 24)) as pilot:
        form = await open_new_form(pilot, app)
        await type_into(pilot, "#f-block", "B4")
        await type_into(pilot, "#f-rows", "12-18")
        row = form.obs_rows()[0]
        for key, value in (("pest", "grape berry moth"), ("life_stage", "larva"), ("unit", "clusters"),
                           ("sampled", "50"), ("infested", "4")):
            await type_into(pilot, f"#{row.id}-{key}", value)
        select = form.top_field("risk_class").input
        assert isinstance(select, Select) and select.is_blank()
        select.focus()
        await pilot.press("enter")  # opens the list on the blank entry
        await pilot.pause()
        await pilot.press("down", "down", "down", "enter")  # low, intermediate, high
        await pilot.pause()
        assert form.top_field("risk_class").value == "high"
        await pilot.press("ctrl+s")
        await pilot.pause()
        (draft,) = store.list_sightings(status="draft")
        assert draft["risk_class"] == "high"
        await pilot.press("ctrl+f")
        await wait_for(pilot, lambda: isinstance(app.screen, SightingDetailScreen), what="detail screen")
        sid = app.screen.sighting_id
        assert store.get_sighting(sid)["status"] == "finalized"
        assert json.loads(store.outbox_items()[0]["payload"])["risk_class"] == "high"
        summary = str(app.screen.query_one("#detail-summary", Static).render())
        assert "B4 · rows 12-18 · high risk" in summary
        # the note handed to the engine (and so to the fact check's thresholds) carries it
        await pilot.press("g")
        await pilot.pause()
        await app.workers.wait_for_complete()
        await wait_for(pilot, lambda: app.screen.state == "done", what="done")
        assert [n["risk_class"] for n in notes] == ["high"]
        (report,) = store.reports_for(sid)
        app.push_screen(ReportScreen(report["id"]))
        await pilot.pause()
        assert "B4 (high risk) · 2026-07-21" in str(app.screen.query_one("#report-meta", Static).render())


@pytest.mark.asyncio
async def test_risk_class_shows_when_editing_and_can_be_cleared_by_a_revision(store):
    sid = finalized_sighting(store, {**NOTE, "risk_class": "Intermediate"})
    app = make_app(store)
    async with app.run_test(size=(80, 24)) as pilot:
        form = await open_form_for(pilot, app, sid)
        assert form.mode == "revise"
        assert form.top_field("risk_class").value == "intermediate" and not form.dirty
        form.top_field("risk_class").input.focus()
        await pilot.press("enter", "up", "up", "enter")  # back to the blank entry: not set
        await pilot.pause()
        assert form.top_field("risk_class").value == "" and form.dirty
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, SightingDetailScreen) and app.screen.sighting_id != sid,
                       what="detail of the new version")
        new = store.get_sighting(app.screen.sighting_id)
        assert new["risk_class"] is None and new["replaces"] == sid
        assert store.get_sighting(sid)["risk_class"] == "intermediate"
        assert "risk" not in str(app.screen.query_one("#detail-summary", Static).render()).splitlines()[0]


@pytest.mark.asyncio
async def test_several_observations_add_remove_and_autocomplete(store):
    app = make_app(store, pests=["grape berry moth", "grape leafhopper", "powdery mildew"])
    async with app.run_test(size=(80, 24)) as pilot:
        form = await open_new_form(pilot, app)
        await type_into(pilot, "#f-block", "C1")
        await type_into(pilot, "#f-rows", "1-3")
        for i, (prefix, sampled) in enumerate((("pow", "20"), ("grape l", "30"), ("grape b", "40"))):
            if i:
                await pilot.press("ctrl+o")
                await pilot.pause()
            row = form.obs_rows()[i]
            pest = row.field("pest").input
            pest.focus()
            for ch in prefix:
                await pilot.press(ch)
            await wait_for(pilot, lambda: pest._suggestion != "", what="pest suggestion")
            await pilot.press("enter")  # Enter takes the suggestion and moves on
            await pilot.pause()
            await type_into(pilot, f"#{row.id}-life_stage", "adult")
            await type_into(pilot, f"#{row.id}-unit", "leaves")
            await type_into(pilot, f"#{row.id}-sampled", sampled)
        assert [r.field("pest").value for r in form.obs_rows()] == [
            "powdery mildew", "grape leafhopper", "grape berry moth"]
        # remove the middle one
        middle = form.obs_rows()[1]
        await pilot.click(f"#{middle.id}-remove")
        await pilot.pause()
        rows = form.obs_rows()
        assert [r.field("pest").value for r in rows] == ["powdery mildew", "grape berry moth"]
        assert "Observation 2" in str(rows[1].query_one(".obs-title").render())
        await pilot.press("ctrl+f")
        await wait_for(pilot, lambda: isinstance(app.screen, SightingDetailScreen), what="detail screen")
        (s,) = store.list_sightings()
        assert [(o["pest"], o["sampled"]) for o in s["observations"]] == [("powdery mildew", 20),
                                                                          ("grape berry moth", 40)]


@pytest.mark.asyncio
async def test_leaving_a_dirty_form_asks_first(store):
    app = make_app(store)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("n")
        await pilot.pause()
        await type_into(pilot, "#f-block", "Z9")
        await pilot.press("escape")
        await pilot.pause()
        assert type(app.screen).__name__ == "ConfirmScreen"
        # the keys are shown: y discards, Enter (on the focused safe button) keeps editing
        shown = " ".join(str(w.render()) for w in app.screen.query("Button, #confirm-keys"))
        assert "y  Discard" in shown and "n  Keep editing" in shown and "Enter, n or Esc keep editing" in shown
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, SightingFormScreen)
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("n")  # keep editing
        await pilot.pause()
        assert isinstance(app.screen, SightingFormScreen)
        assert app.screen.top_field("block").value == "Z9"
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert isinstance(app.screen, LogScreen)
        assert store.list_sightings(include_superseded=True) == []


@pytest.mark.asyncio
async def test_editing_a_draft_saves_in_place_and_clean_form_leaves_without_asking(store):
    sid = store.save_draft({"block": "A1", "date": "2026-07-20", "time": "06:30",
                            "observations": [{"pest": "grape leafhopper", "sampled": 20}]})
    app = make_app(store)
    async with app.run_test(size=(80, 24)) as pilot:
        form = await open_form_for(pilot, app, sid)
        assert form.mode == "draft"
        assert form.top_field("time").value == "06:30"
        assert form.obs_rows()[0].field("sampled").value == "20"
        assert not form.dirty
        await pilot.press("escape")  # nothing changed: no question
        await pilot.pause()
        assert isinstance(app.screen, SightingDetailScreen)
        await pilot.press("e")
        await pilot.pause()
        await type_into(pilot, "#f-time", "7:05")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert store.get_sighting(sid)["time"] == "07:05"
        assert len(store.list_sightings(include_superseded=True)) == 1


@pytest.mark.asyncio
async def test_revise_a_finalized_sighting_makes_a_new_version(store):
    sid = finalized_sighting(store)
    app = make_app(store)
    async with app.run_test(size=(80, 24)) as pilot:
        form = await open_form_for(pilot, app, sid)
        assert form.mode == "revise"
        assert form.top_field("block").value == "B4"
        await type_into(pilot, "#f-notes", "Re-checked: damage also in row 19.")
        await pilot.press("ctrl+s")  # in revise mode this saves the new version
        await wait_for(pilot, lambda: isinstance(app.screen, SightingDetailScreen) and app.screen.sighting_id != sid,
                       what="detail of the new version")
        new_id = app.screen.sighting_id
        new = store.get_sighting(new_id)
        assert new["replaces"] == sid and new["version"] == 2 and new["status"] == "finalized"
        assert new["notes"] == "Re-checked: damage also in row 19."
        assert store.get_sighting(sid)["status"] == "superseded"
        assert store.get_sighting(sid)["notes"] == NOTE["notes"]  # never edited in place
        assert [type(s).__name__ for s in app.screen_stack[1:]] == ["LogScreen", "SightingDetailScreen"]


@pytest.mark.asyncio
async def test_delete_draft_needs_confirmation(store):
    sid = store.save_draft({"block": "A1"})
    app = make_app(store)
    async with app.run_test(size=(80, 24)) as pilot:
        app.push_screen(SightingDetailScreen(sid))
        await pilot.pause()
        await pilot.press("d")
        await pilot.pause()
        await pilot.press("escape")  # = no
        await pilot.pause()
        assert store.get_sighting(sid)["status"] == "draft"
        await pilot.press("d")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert store.list_sightings(include_superseded=True) == []
        assert isinstance(app.screen, LogScreen)


# --------------------------------------------------------------------------- generation


async def open_generate(pilot, app, sid):
    return await from_detail(pilot, app, sid, "g", GenerateScreen)


@pytest.mark.asyncio
async def test_generate_streams_colours_and_stores_a_clean_report(store):
    sid = finalized_sighting(store)
    release = threading.Event()
    gen = FakeGenerator(hold_after=4, release=release)
    app = make_app(store, gen)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_generate(pilot, app, sid)
        # mid-stream: part of the text is already on screen, status line is live
        await wait_for(pilot, lambda: len(screen.records) >= 4, what="first chunks")
        view = screen.query_one("#gen-text")
        assert view.plain == "Summary: grape berry"
        assert "● generating · 4 tok" in str(screen.query_one("#gen-status").render())
        assert store.reports_for(sid) == []  # nothing stored mid-stream
        release.set()
        await app.workers.wait_for_complete()
        await wait_for(pilot, lambda: screen.state == "done", what="done")
        assert view.plain == SCRIPT_TEXT
        # provenance colours on the finished text
        rendered: Text = view.text
        styled = [(rendered.plain[s.start:s.end], str(s.style)) for s in rendered.spans if str(s.style)]
        assert styled == [(": grape", STYLES["drafted"]), (" berry", STYLES["corrected"]),
                          (" larvae in", STYLES["drafted"]), (" 4", STYLES["corrected"]),
                          (" of 50", STYLES["drafted"]), (".", STYLES["unverified"]),
                          (": monitor", STYLES["drafted"])]
        status = str(screen.query_one("#gen-status").render())
        # done: the manager's line (seconds, pest facts checked), not the engine's figures
        assert status.startswith("✓ done · written in ") and "checked by the large model: " in status
        assert "accept" not in status and "tiny-draft → tiny-oracle" not in status
        (report,) = store.reports_for(sid)
        assert report["status"] == "complete" and report["clean"] is True
        assert report["text"] == SCRIPT_TEXT
        assert report["model_pair"]["oracle"] == "/models/tiny-oracle.gguf"
        assert len(report["provenance"]) == len(SCRIPT) and report["spans"][0]["kind"] == "pest"
        assert report["stats"]["tokens"] == len(SCRIPT)
        assert status == f"✓ done · {status_line(report)}"
        assert "Clean report saved" in str(screen.query_one("#gen-outcome").render())
        assert screen.report_id == report["id"]
        # queued for sync after the sighting; the drafter history learned the clean text
        assert [r["kind"] for r in store.outbox_items()] == ["sighting", "report"]
        assert gen.history == [SCRIPT_TEXT]
        # back on the detail screen the report is listed and opens
        await pilot.press("escape")
        await pilot.pause()
        table = app.screen.query_one("#detail-reports", DataTable)
        assert table_keys(table) == [report["id"]]
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ReportScreen)


@pytest.mark.asyncio
async def test_report_with_findings_is_not_clean_and_says_so(store):
    sid = finalized_sighting(store)
    finding = {"kind": "number_mismatch", "message": "report says 5 infested, the note says 4"}
    gen = FakeGenerator(findings=[finding])
    app = make_app(store, gen)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_generate(pilot, app, sid)
        await app.workers.wait_for_complete()
        await wait_for(pilot, lambda: screen.state == "done", what="done")
        outcome = str(screen.query_one("#gen-outcome").render())
        assert "NOT clean" in outcome and "report says 5 infested" in outcome
        assert screen.query_one("#gen-outcome").has_class("-warning")
        assert str(screen.query_one("#gen-status").render()).startswith("⚠ done, 1 finding")
        (report,) = store.reports_for(sid)
        assert report["clean"] is False and report["findings"] == [finding]
        assert gen.history == []  # unclean text is not taught to the drafter


@pytest.mark.asyncio
async def test_cancel_leaves_sighting_intact_and_no_clean_report(store):
    sid = finalized_sighting(store)
    before = store.get_sighting(sid)
    gen = FakeGenerator(hold_after=5)
    app = make_app(store, gen)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_generate(pilot, app, sid)
        await wait_for(pilot, lambda: len(screen.records) >= 5, what="five chunks")
        await pilot.press("c")
        await app.workers.wait_for_complete()
        await wait_for(pilot, lambda: screen.state == "cancelled", what="cancelled")
        assert screen.query_one("#gen-text").plain == "".join(t for t, _ in SCRIPT[:5])
        assert "cancelled" in str(screen.query_one("#gen-status").render())
        # the partial text is kept as a cancelled report that can never count as clean or be synced
        (report,) = store.reports_for(sid)
        assert report["status"] == "cancelled" and report["clean"] is False
        assert report["findings"][0]["kind"] == "incomplete"
        assert report["text"] == "".join(t for t, _ in SCRIPT[:5])
        assert [r["kind"] for r in store.outbox_items()] == ["sighting"]
        after = store.get_sighting(sid)
        assert {k: after[k] for k in before if k != "latest_report_id"} == {
            k: before[k] for k in before if k != "latest_report_id"}
        assert after["latest_report_id"] is None  # no complete report
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, SightingDetailScreen)


@pytest.mark.asyncio
async def test_escape_during_generation_cancels_first(store):
    sid = finalized_sighting(store)
    app = make_app(store, FakeGenerator(hold_after=3))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_generate(pilot, app, sid)
        await wait_for(pilot, lambda: len(screen.records) >= 3, what="chunks")
        await pilot.press("escape")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert screen.cancel_event.is_set() and isinstance(app.screen, GenerateScreen)
        assert screen.state == "cancelled"


@pytest.mark.asyncio
async def test_crash_mid_generation_keeps_sighting_and_marks_report_failed(store):
    sid = finalized_sighting(store)
    app = make_app(store, FakeGenerator(crash_after=6))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_generate(pilot, app, sid)
        await app.workers.wait_for_complete()
        await wait_for(pilot, lambda: screen.state == "failed", what="failed")
        assert "llama_decode returned -1" in str(screen.query_one("#gen-outcome").render())
        (report,) = store.reports_for(sid)
        assert report["status"] == "failed" and report["clean"] is False
        assert "llama_decode" in report["stats"]["error"]
        assert store.get_sighting(sid)["status"] == "finalized"
        assert [r["kind"] for r in store.outbox_items()] == ["sighting"]


@pytest.mark.asyncio
async def test_missing_models_explain_install_and_logging_still_works(store):
    sid = finalized_sighting(store)
    app = make_app(store)  # factory raises ModelFileError
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_generate(pilot, app, sid)
        await app.workers.wait_for_complete()
        await wait_for(pilot, lambda: screen.state == "missing", what="missing models")
        text = str(screen.query_one("#gen-outcome").render())
        assert "edgespec models fetch" in text and "not in the model cache" in text
        assert store.reports_for(sid) == []
        await pilot.press("escape", "escape")
        await pilot.pause()
        assert isinstance(app.screen, LogScreen)
        await pilot.press("n")
        await pilot.pause()
        await type_into(pilot, "#f-block", "A1")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert len(store.list_sightings(status="draft")) == 1


@pytest.mark.asyncio
async def test_file_not_found_from_factory_is_also_missing_models(store):
    sid = finalized_sighting(store)

    def factory():
        raise FileNotFoundError("/root/.cache/edgespec/models/x.gguf")

    app = make_app(store, factory=factory)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_generate(pilot, app, sid)
        await app.workers.wait_for_complete()
        await wait_for(pilot, lambda: screen.state == "missing", what="missing models")


@pytest.mark.asyncio
async def test_generate_on_an_incomplete_draft_is_refused_clearly(store):
    sid = store.save_draft({"block": "A1", "date": "2026-07-21"})
    gen = FakeGenerator()
    app = make_app(store, gen)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_generate(pilot, app, sid)
        await pilot.pause()
        assert screen.state == "failed"
        assert "cannot be reported on" in str(screen.query_one("#gen-outcome").render())
        assert gen.calls == 0 and store.reports_for(sid) == []


@pytest.mark.asyncio
async def test_generator_is_loaded_once_and_closed_on_exit(store):
    sid = finalized_sighting(store)
    made: list[FakeGenerator] = []

    def factory():
        made.append(FakeGenerator())
        return made[-1]

    app = make_app(store, factory=factory)
    async with app.run_test(size=(80, 24)) as pilot:
        for _ in range(2):
            screen = await open_generate(pilot, app, sid)
            await app.workers.wait_for_complete()
            await wait_for(pilot, lambda: screen.state == "done", what="done")
            await pilot.press("escape", "escape")
            await pilot.pause()
    assert len(made) == 1 and made[0].calls == 2 and made[0].closed
    assert len(store.reports_for(sid)) == 2


# --------------------------------------------------------------------------- log browser


@pytest.mark.asyncio
async def test_log_filters_search_and_open_report(store):
    seed_demo(store)
    b4 = store.list_sightings(block="B4", date_from="2026-07-21", date_to="2026-07-21")[0]["id"]
    gen = FakeGenerator()
    done = list(gen.stream_report(NOTE))[-1]
    rid = store.save_report(b4, **gen.report_record(done))
    app = make_app(store)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        assert isinstance(screen, LogScreen)
        table = screen.query_one("#log-table", DataTable)
        everything = [f"s:{s['id']}" for s in store.list_sightings()]
        assert len(everything) >= 10 and table_keys(table) == everything  # newest first, like the store
        await type_into(pilot, "#filter-block", "B4")
        assert table.row_count == 2
        await type_into(pilot, "#filter-from", "2026-07-22")
        assert table_keys(table) == [f"s:{s['id']}" for s in store.list_sightings(block="B4", date_from="2026-07-22")]
        await type_into(pilot, "#filter-from", "2026-7-1")  # a day without zero padding is still that day
        assert table_keys(table) == [f"s:{s['id']}" for s in store.list_sightings(block="B4", date_from="2026-07-01")]
        await type_into(pilot, "#filter-from", "2026-7-40")  # not a date: flagged, and said first, not ignored
        assert screen.query_one("#filter-from").has_class("-invalid")
        info = str(screen.query_one("#log-info").render())
        assert info.startswith("from: '2026-7-40' is not a date") and "not applied" in info
        assert "2 sightings (other filters applied)" in info
        await pilot.press("ctrl+l")
        await pilot.pause()
        assert table_keys(table) == everything
        await type_into(pilot, "#filter-pest", "mildew")
        mildew = store.list_sightings(pest="mildew")
        assert {p for s in mildew for p in (o["pest"] for o in s["observations"])} >= {"powdery mildew", "downy mildew"}
        assert table_keys(table) == [f"s:{s['id']}" for s in mildew]
        await pilot.press("ctrl+l")
        await pilot.pause()
        # the report column marks the sighting that has a clean report
        row = table.get_row(f"s:{b4}")
        assert "clean" in str(row[4])
        # full-text search finds report text and sighting notes
        await pilot.press("slash")
        for ch in "clusters monitor":
            await pilot.press(ch)
        await pilot.pause()
        assert table_keys(table) == [f"r:{rid}"]
        await pilot.press("enter")  # submit moves focus to the table
        await pilot.press("enter")
        await pilot.pause()
        report_screen = app.screen
        assert isinstance(report_screen, ReportScreen) and report_screen.report_id == rid
        text = report_screen.styled
        assert text.plain == SCRIPT_TEXT
        assert any(str(s.style) == STYLES["corrected"] for s in text.spans)
        assert "Clean" in str(report_screen.query_one("#report-findings").render())
        stats = str(report_screen.query_one("#report-stats").render())
        assert f"tokens: {len(SCRIPT)}" in stats and "acceptance rate: 67%" in stats
        assert "grape berry moth" in str(report_screen.query_one("#report-spans").render())
        await pilot.press("escape")
        await pilot.pause()
        await type_into(pilot, "#log-search", "tree line")
        assert table_keys(table) == [f"s:{b4}"]


def saved_report(store, findings=()) -> tuple[str, str]:
    """A finalized sighting and the fake generator's report of it, stored: (sighting id, report id)."""
    sid = finalized_sighting(store)
    gen = FakeGenerator(findings=list(findings))
    done = list(gen.stream_report(NOTE))[-1]
    return sid, store.save_report(sid, **gen.report_record(done))


@pytest.mark.asyncio
async def test_opening_a_report_with_findings_shows_them_first(store):
    _, rid = saved_report(store, findings=[{"kind": "pest_not_in_note", "message": "mentions powdery mildew"}])
    app = make_app(store)
    async with app.run_test(size=(80, 24)) as pilot:
        app.push_screen(ReportScreen(rid))
        await pilot.pause()
        box = app.screen.query_one("#report-findings", Static)
        assert "not a clean report" in str(box.render()) and "mentions powdery mildew" in str(box.render())
        assert box.has_class("-warning")


@pytest.mark.asyncio
async def test_report_headline_is_the_managers_line_and_the_engine_figures_are_behind_d(store):
    _, rid = saved_report(store)
    app = make_app(store)
    async with app.run_test(size=(80, 24)) as pilot:
        app.push_screen(ReportScreen(rid))
        await pilot.pause()
        screen = app.screen
        headline = str(screen.query_one("#report-status", Static).render())
        assert headline == status_line(store.get_report(rid)) and "checked by the large model" in headline
        details = screen.query_one("#report-details")
        assert not details.display and "acceptance" in str(screen.query_one("#report-stats").render())
        await pilot.press("d")
        await pilot.pause()
        assert details.display
        await pilot.press("d")
        await pilot.pause()
        assert not details.display


# --------------------------------------------------------------------------- report review (issue 15)
REVIEW_TEXT = ("Summary: Grape berry moth larvae damaged 4 of 50 clusters in block B4.\n"
               "Risk: moderate, above the 6% threshold.\nAction: Treat the border rows next to the tree line.")


def stored_report(store, sid, text=REVIEW_TEXT) -> str:
    prov = [{"token": i, "start": a, "end": min(a + 6, len(text)), "source": "drafted", "verified": True}
            for i, a in enumerate(range(0, len(text), 6))]
    return store.save_report(sid, text=text, model_pair={"oracle": "q.gguf"}, policy={}, stats={"tokens": len(prov)},
                             provenance=prov, spans=[], findings=[])


async def edit_report_text(pilot, app, new_text: str) -> None:
    from textual.widgets import TextArea

    area = app.screen.query_one("#edit-text", TextArea)
    area.text = new_text
    await pilot.pause()


@pytest.mark.asyncio
async def test_edit_recheck_approve_a_report(store):
    sid = finalized_sighting(store)
    rid = stored_report(store, sid)
    app = make_app(store, reviewer="A. Manager")
    async with app.run_test(size=(80, 24)) as pilot:
        app.push_screen(ReportScreen(rid))
        await pilot.pause()
        screen = app.screen
        await pilot.press("e")
        await pilot.pause()
        assert type(app.screen).__name__ == "ReportEditScreen"
        assert app.screen.query_one("#edit-by", Input).value == "A. Manager"
        await edit_report_text(pilot, app, REVIEW_TEXT.replace("4 of 50", "14 of 50"))  # a person's mistake
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is screen
        v2 = screen.report
        assert (v2["version"], v2["review_status"], v2["replaces"]) == (2, "edited", rid)
        # the fact check ran again on the edited text, and the person's words are marked as theirs
        box = str(screen.query_one("#report-findings", Static).render())
        assert "not a clean report" in box and "14 of 50" in box
        person = [sp for sp in screen.styled.spans if str(sp.style) == STYLES["person"]]
        assert [screen.styled.plain[sp.start:sp.end] for sp in person] == ["14"]
        assert "person" in str(screen.query_one("#report-legend", Static).render())
        assert "v2 edited by A. Manager" in str(screen.query_one("#report-meta", Static).render())
        # fix it, then approve: the approval notes who and when, and the findings are gone
        await pilot.press("e")
        await pilot.pause()
        await edit_report_text(pilot, app, REVIEW_TEXT.replace("next to the tree line", "by the woods"))
        await pilot.press("ctrl+g")  # save and approve in one go
        await pilot.pause()
        v3 = screen.report
        assert (v3["version"], v3["review_status"], v3["findings"]) == (3, "approved", [])
        meta = str(screen.query_one("#report-meta", Static).render())
        assert "v3 approved by A. Manager" in meta and "v1 generated → v2 edited → v3 approved" in meta
        assert "Clean" in str(screen.query_one("#report-findings", Static).render())
    queued = [json.loads(i["payload"]) for i in store.outbox_items() if i["kind"] == "report"]
    assert [q.get("review_status") for q in queued] == [None, "edited", "approved"]


@pytest.mark.asyncio
async def test_approving_a_report_with_findings_says_they_stay_on_record(store):
    sid = finalized_sighting(store)
    rid = stored_report(store, sid, REVIEW_TEXT.replace("4 of 50", "9 of 50"))
    rid = store.review_report(rid, "edit", by="A", text=REVIEW_TEXT.replace("4 of 50", "7 of 50"))  # re-checked: 1 finding
    app = make_app(store, reviewer="A. Manager")
    async with app.run_test(size=(80, 24)) as pilot:
        app.push_screen(ReportScreen(rid))
        await pilot.pause()
        await pilot.press("a")
        await pilot.pause()
        assert "still has 1 finding on it" in str(app.screen.query_one("#review-question", Static).render())
        await pilot.press("enter")
        await pilot.pause()
        r = app.screen.report
        assert r["review_status"] == "approved" and [f["kind"] for f in r["findings"]] == ["wrong_count"]


@pytest.mark.asyncio
async def test_approve_and_flag_ask_who_and_why_and_old_versions_are_read_only(store):
    sid = finalized_sighting(store)
    rid = stored_report(store, sid)
    app = make_app(store, reviewer="")
    async with app.run_test(size=(80, 24)) as pilot:
        app.push_screen(ReportScreen(rid))
        await pilot.pause()
        screen = app.screen
        await pilot.press("f")
        await pilot.pause()
        assert type(app.screen).__name__ == "ReviewScreen"
        await pilot.press("enter")  # no name yet: asked for, nothing saved
        await pilot.pause()
        assert "Enter your name" in str(app.screen.query_one("#review-message", Static).render())
        await type_into(pilot, "#review-by", "B. Owner")
        await type_into(pilot, "#review-note", "the risk should be high")
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is screen
        r = screen.report
        assert (r["review_status"], r["reviewed_by"], r["review_note"]) == ("flagged", "B. Owner", "the risk should be high")
        assert app.reviewer == "B. Owner"  # prefilled next time
        await pilot.press("a")
        await pilot.pause()
        assert app.screen.query_one("#review-by", Input).value == "B. Owner"
        assert "still has" not in str(app.screen.query_one("#review-question", Static).render())  # clean: no warning
        await pilot.press("escape")  # back: nothing saved
        await pilot.pause()
        assert len(store.report_versions(rid)) == 2
        # the first version is history: it opens, but cannot be reviewed again
        app.push_screen(ReportScreen(rid))
        await pilot.pause()
        await pilot.press("a")
        await pilot.pause()
        assert isinstance(app.screen, ReportScreen) and len(store.report_versions(rid)) == 2


# --------------------------------------------------------------------------- sync


@pytest.mark.asyncio
async def test_sync_screen_counts_and_sync_now(store):
    finalized_sighting(store)
    calls: list[str] = []

    def sync():
        calls.append(threading.current_thread().name)
        return {"sent": 1, "already_present": 0, "conflicts": 0, "failed": 0}

    app = make_app(store, sync_callback=sync)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("s")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, SyncScreen)
        counts = screen.query_one("#sync-counts", DataTable)
        assert str(counts.get_row("queued")[1]) == "1"
        assert "1 item waiting" in str(screen.query_one("#sync-last").render())
        await pilot.press("s")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert len(calls) == 1 and calls[0] != threading.main_thread().name  # ran off the UI thread
        assert "sent 1" in str(screen.query_one("#sync-result").render())


@pytest.mark.asyncio
async def test_sync_screen_without_sync_configured_and_with_errors(store):
    app = make_app(store)
    async with app.run_test(size=(80, 24)) as pilot:
        app.action_open_sync()
        await pilot.pause()
        assert app.screen.query_one("#sync-now").disabled
        assert "not configured" in str(app.screen.query_one("#sync-result").render())

    def broken():
        raise ConnectionError("server unreachable")

    app = make_app(store, sync_callback=broken)
    async with app.run_test(size=(80, 24)) as pilot:
        app.action_open_sync()
        await pilot.pause()
        await pilot.click("#sync-now")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert "server unreachable" in str(app.screen.query_one("#sync-result").render())


# --------------------------------------------------------------------------- run() / demo


def test_run_opens_the_db_seeds_the_demo_once_and_closes(tmp_path, monkeypatch):
    from fieldlog_app import app as app_mod

    seen = []

    def fake_run(self):  # no terminal in tests: record what the app would have shown
        seen.append((len(self.store.list_sightings()), self.sync_callback))

    monkeypatch.setattr(app_mod.FieldlogApp, "run", fake_run)
    db = tmp_path / "data" / "demo.db"
    hook = object()
    app_mod.run(db, demo=True, sync_callback=hook)
    app_mod.run(db, demo=True)  # again: no duplicates
    app_mod.run(db)
    assert seen[0][0] > 0 and seen[0][1] is hook
    assert [n for n, _ in seen] == [seen[0][0]] * 3
    with Store(db) as s:  # closed cleanly: reopens, nothing lost
        assert len(s.list_sightings()) == seen[0][0]


def test_app_needs_a_store_or_a_path():
    with pytest.raises(ValueError):
        FieldlogApp()


@pytest.mark.asyncio
async def test_app_opens_a_db_path_and_closes_it(tmp_path):
    db = tmp_path / "sub" / "fieldlog.db"
    app = FieldlogApp(db_path=db, generator_factory=missing_models)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert "No sightings yet" in str(app.screen.query_one("#log-info").render())
    assert db.exists()
    with pytest.raises(Exception):
        app.store.list_sightings()  # closed with the app


def test_pest_names_for_autocomplete_come_from_the_catalog():
    from fieldlog_app.screens import form_model
    from vineyard.pest_catalog import PEST_CATALOG
    from vineyard.pests import lookup

    names = form_model.pest_names()
    # every catalog pest is offered under some name ("spider mite" stands for "spider mites")
    assert {p.name for p in PEST_CATALOG.values()} == {lookup(n).name for n in names if lookup(n)}
    assert names == sorted(names, key=str.lower) and len(set(names)) == len(names)


# --------------------------------------------------------------------------- the real engine


@pytest.mark.asyncio
async def test_generate_with_the_real_engine_on_tiny_models(store, request):
    """End to end through vineyard.writer and edgespec.api on tiny random-weight GGUFs (text is gibberish; the flow is real)."""
    from vineyard.writer import open_writer
    try:
        oracle = request.getfixturevalue("tiny_oracle_path")
        draft = request.getfixturevalue("tiny_drafter_close_path")
    except pytest.FixtureLookupError:
        pytest.skip("no tiny-model fixtures (tiny_oracle_path, tiny_drafter_close_path) in tests/conftest.py yet")

    def factory():
        return open_writer(oracle=str(oracle), drafter="model", draft_model=str(draft), n_ctx=1024,
                              power_mode="performance")

    sid = finalized_sighting(store)
    app = make_app(store, factory=factory)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_generate(pilot, app, sid)
        await app.workers.wait_for_complete()
        await wait_for(pilot, lambda: screen.state in ("done", "failed", "missing"), timeout=120,
                       what="real generation")
        assert screen.state == "done", screen.error or str(screen.query_one("#gen-outcome").render())
        (report,) = store.reports_for(sid)
        assert report["status"] == "complete"
        assert report["text"] == screen.query_one("#gen-text").plain
        assert len(report["provenance"]) == report["stats"]["tokens"] > 0
        assert {p["source"] for p in report["provenance"]} <= {"data", "drafted", "corrected", "bonus", "oracle", "unverified"}
        assert "data" in {p["source"] for p in report["provenance"]}  # the header and data lines came from the record
