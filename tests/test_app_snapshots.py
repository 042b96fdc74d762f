"""Snapshot tests of fieldlog's main screens at a handheld size (80x24) and a laptop size (120x40).

Data is deterministic: the demo notes, ids from a counter and a frozen clock, a
scripted generator with fixed stats. Regenerate the baselines after an
intended UI change with ``pytest tests/test_app_snapshots.py --snapshot-update``
and look at the SVGs before committing them.
"""

from __future__ import annotations

import itertools
import uuid
from pathlib import Path

import pytest
from textual.widgets import Input

pytest.importorskip("pytest_textual_snapshot")

from fieldlog_app.demo import seed_demo  # noqa: E402
from fieldlog_app.database import Store  # noqa: E402
from fieldlog_app.screens.report import ReportScreen  # noqa: E402
from fieldlog_app.screens.sighting_detail import SightingDetailScreen  # noqa: E402
from test_app import NOTE, FakeGenerator, make_app  # noqa: E402

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]
FINDING = {"kind": "number_mismatch", "message": "report says 5 infested clusters, the note says 4"}


@pytest.fixture
def frozen_store(monkeypatch):
    """A store whose ids and timestamps are the same on every run."""
    import fieldlog_app.database.store as store_mod

    counter = itertools.count(1)
    monkeypatch.setattr(store_mod.uuid, "uuid4",
                        lambda: uuid.UUID(int=(next(counter) * 0x9E3779B97F4A7C15F39CC0605CEDC835) % (1 << 128), version=4))
    ticks = itertools.count(0)
    monkeypatch.setattr(store_mod, "utc_now", lambda: f"2026-07-21T08:{next(ticks) % 60:02d}:00Z")
    store = Store(":memory:")
    seed_demo(store)
    b4 = store.list_sightings(block="B4", date_from="2026-07-21", date_to="2026-07-21")[0]["id"]
    gen = FakeGenerator(findings=[FINDING])
    done = list(gen.stream_report(NOTE))[-1]
    store.save_report(b4, **gen.report_record(done))
    store.save_draft({"block": "C2", "rows": "4-6", "date": "2026-09-03", "notes": "half done, rain"})
    yield store
    store.close()


def _b4(store) -> str:
    return store.list_sightings(block="B4", date_from="2026-07-21", date_to="2026-07-21")[0]["id"]


@pytest.mark.parametrize("size", SIZES)
def test_log_browser(snap_compare, frozen_store, size):
    app = make_app(frozen_store)
    assert snap_compare(app, terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
def test_log_search(snap_compare, frozen_store, size):
    app = make_app(frozen_store)
    assert snap_compare(app, terminal_size=size, press=["slash", *"moth"])


@pytest.mark.parametrize("size", SIZES)
def test_form_with_validation_errors(snap_compare, frozen_store, size):
    async def fill(pilot):
        await pilot.press("n")
        await pilot.pause()
        screen = pilot.app.screen
        screen.top_field("block").input.value = "B4"
        screen.top_field("date").input.value = "2026-13-01"
        screen.top_field("risk_class").input.value = "high"
        row = screen.obs_rows()[0]
        row.field("pest").input.value = "grape berry moth"
        row.field("sampled").input.value = "10"
        row.field("infested").input.value = "12"
        await pilot.press("ctrl+f")
        await pilot.pause()
        screen.query_one("#form-scroll").scroll_home(animate=False)
        for inp in screen.query(Input):  # a blinking cursor makes the picture depend on the timer
            inp.cursor_blink = False
        await pilot.pause()

    app = make_app(frozen_store)
    assert snap_compare(app, terminal_size=size, run_before=fill)


@pytest.mark.parametrize("size", SIZES)
def test_sighting_detail(snap_compare, frozen_store, size):
    async def open_detail(pilot):
        pilot.app.push_screen(SightingDetailScreen(_b4(frozen_store)))
        await pilot.pause()

    app = make_app(frozen_store)
    assert snap_compare(app, terminal_size=size, run_before=open_detail)


@pytest.mark.parametrize("size", SIZES)
def test_generate_done_with_findings(snap_compare, frozen_store, size):
    async def generate(pilot):
        pilot.app.push_screen(SightingDetailScreen(_b4(frozen_store)))
        await pilot.pause()
        await pilot.press("g")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()

    app = make_app(frozen_store, FakeGenerator(findings=[FINDING]))
    assert snap_compare(app, terminal_size=size, run_before=generate)


@pytest.mark.parametrize("size", SIZES)
def test_generate_models_missing(snap_compare, frozen_store, size):
    async def generate(pilot):
        pilot.app.push_screen(SightingDetailScreen(_b4(frozen_store)))
        await pilot.pause()
        await pilot.press("g")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()

    app = make_app(frozen_store)
    assert snap_compare(app, terminal_size=size, run_before=generate)


@pytest.mark.parametrize("size", SIZES)
def test_report_viewer(snap_compare, frozen_store, size):
    async def open_report(pilot):
        rid = frozen_store.reports_for(_b4(frozen_store))[0]["id"]
        pilot.app.push_screen(ReportScreen(rid))
        await pilot.pause()

    app = make_app(frozen_store)
    assert snap_compare(app, terminal_size=size, run_before=open_report)


@pytest.mark.parametrize("size", SIZES)
def test_sync_screen(snap_compare, frozen_store, size, monkeypatch):
    # the settings line names the file: the same on every machine, and never this user's own settings
    monkeypatch.setenv("FIELDLOG_CONFIG", str(Path.home() / ".config" / "fieldlog-snapshot" / "sync.json"))
    monkeypatch.delenv("FIELDLOG_SERVER", raising=False)
    monkeypatch.delenv("FIELDLOG_TOKEN", raising=False)
    app = make_app(frozen_store, sync_callback=lambda: {"sent": 0})
    assert snap_compare(app, terminal_size=size, press=["s"])


@pytest.mark.parametrize("size", SIZES)
def test_report_after_edit_and_approval(snap_compare, frozen_store, size):
    """Issue 15: a person's words in their colour, the re-checked findings, who approved it and the versions."""
    async def review(pilot):
        first = frozen_store.reports_for(_b4(frozen_store))[0]
        edited = frozen_store.review_report(first["id"], "edit", by="A. Manager",
                                            text=first["text"].replace("monitor", "re-scout on Friday"))
        approved = frozen_store.review_report(edited, "approve", by="A. Manager")
        pilot.app.push_screen(ReportScreen(approved))
        await pilot.pause()

    app = make_app(frozen_store)
    assert snap_compare(app, terminal_size=size, run_before=review)


@pytest.mark.parametrize("size", SIZES)
def test_pest_name_check_before_finalize(snap_compare, frozen_store, size):
    async def fill(pilot):
        await pilot.press("n")
        await pilot.pause()
        screen = pilot.app.screen
        screen.top_field("block").input.value = "K9"
        screen.top_field("rows").input.value = "1-4"
        row = screen.obs_rows()[0]
        for key, value in dict(pest="berry moht", life_stage="larva", unit="clusters", sampled="50", infested="3").items():
            row.field(key).input.value = value
        await pilot.press("ctrl+o")
        await pilot.pause()
        row = screen.obs_rows()[1]
        for key, value in dict(pest="grape cicada", life_stage="adult", unit="vines", sampled="20", count="4").items():
            row.field(key).input.value = value
        for inp in screen.query(Input):
            inp.cursor_blink = False
        await pilot.press("ctrl+f")
        await pilot.pause()

    app = make_app(frozen_store)
    assert snap_compare(app, terminal_size=size, run_before=fill)


@pytest.mark.parametrize("size", SIZES)
def test_nothing_found_walk_in_the_form(snap_compare, frozen_store, size):
    async def fill(pilot):
        await pilot.press("n")
        await pilot.pause()
        screen = pilot.app.screen
        screen.top_field("block").input.value = "B4"
        screen.top_field("rows").input.value = "1-40"
        screen.query_one("#form-nothing-found").value = True
        for inp in screen.query(Input):
            inp.cursor_blink = False
        screen.query_one("#form-scroll").scroll_end(animate=False)
        await pilot.pause()

    app = make_app(frozen_store)
    assert snap_compare(app, terminal_size=size, run_before=fill)
