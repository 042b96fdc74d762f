"""A block's season at a glance: weekly figures against the catalog threshold, the season screen,
the log's threshold marks and alert, on the demo data (with block B4's sample season)."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid

import pytest
from textual.widgets import DataTable, Static

from fieldlog_app.database import Store
from fieldlog_app.database import season as season_db
from fieldlog_app.demo import season_notes, seed_demo
from fieldlog_app.screens.log import LogScreen
from fieldlog_app.screens.season import SeasonChart, SeasonScreen, nice_step
from test_app import make_app, table_keys
from vineyard.pests import threshold_status
from vineyard.season import block_season, blocks_with_alerts


def note(date: str, *obs: dict, block: str = "Z9", risk: str | None = None) -> dict:
    n = {"block": block, "date": date, "rows": "1-2", "scout": "T", "observations": list(obs)}
    if risk:
        n["risk_class"] = risk
    return n


def gbm(sampled: int, infested: int) -> dict:
    return {"pest": "grape berry moth", "life_stage": "larva", "unit": "clusters", "sampled": sampled,
            "infested": infested}


# ------------------------------------------------------------------------------------------ arithmetic
def test_the_sample_season_marks_the_weeks_a_report_would_call_above():
    notes = season_notes()
    s = block_season(notes, "b4")
    assert (s.block, s.year) == ("b4", 2026)
    moth = next(p for p in s.pests if p.pest == "grape berry moth")
    assert len(moth.weeks) == len(notes) == 20
    # the same rule as each week's report threshold line, note by note
    expected = {dt.date.fromisoformat(n["date"]).isocalendar()[1] for n in notes
                if threshold_status(n["observations"][0], n["date"]).status == "above"}
    assert {w.week for w in moth.weeks_above} == expected and expected
    w30 = next(w for w in moth.weeks if w.week == 30)
    assert (w30.metric, w30.observed, w30.threshold.value, w30.sampled) == ("incidence_pct", 8.0, 6.0, 50)
    assert moth.label == "% of clusters infested"
    mites = next(p for p in s.pests if p.pest == "spider mites")
    assert not mites.weeks_above and all(w.threshold is None for w in mites.weeks)  # the catalog gives none
    assert s.alerts == []  # the latest week (mid-September) is outside every threshold window


def test_a_week_pools_its_walks_and_the_latest_risk_class_applies():
    notes = [note("2026-07-20", gbm(50, 4)), note("2026-07-23", gbm(50, 1))]  # same ISO week
    (moth,) = block_season(notes, "Z9").pests
    (w,) = moth.weeks
    assert (w.sampled, w.observed, w.status, w.last_date) == (100, 5.0, "below", "2026-07-23")
    notes.append(note("2026-07-24", gbm(50, 10), risk="high"))  # high-risk blocks have no July threshold
    (w,) = block_season(notes, "Z9").pests[0].weeks
    assert w.status == "unknown" and w.observed == pytest.approx(100 * 15 / 150)


def test_alerts_name_blocks_whose_latest_week_is_above():
    above_then_below = [note("2026-07-14", gbm(50, 8), block="A"), note("2026-07-21", gbm(50, 1), block="A")]
    still_above = [note("2026-07-14", gbm(50, 1), block="B"), note("2026-07-21", gbm(50, 9), block="B")]
    unknown = [note("2026-07-21", {"pest": "grape cicada", "unit": "leaves", "sampled": 10, "infested": 9},
                    block="C")]
    alerts = blocks_with_alerts(above_then_below + still_above + unknown)
    assert [(s.block, [p.pest for p in s.alerts]) for s in alerts] == [("B", ["grape berry moth"])]
    c = block_season(unknown, "C").pests[0]
    assert (c.pest, c.in_catalog, c.latest.status, c.latest.observed) == ("grape cicada", False, "unknown", 90.0)
    density = block_season([note("2026-07-21", {"pest": "grape leafhopper", "unit": "leaves", "sampled": 10,
                                                "count": 14})], "Z9").pests[0]
    assert (density.metric, density.label, density.latest.observed) == ("per_unit", "per leaf sampled", 1.4)


def test_nice_steps():
    assert [nice_step(t) for t in (24.0, 1.4, 100.0, 7.0)] == [10, 0.5, 50, 2]


# ------------------------------------------------------------------------------------------ the app
@pytest.fixture
def demo_store():
    s = Store(":memory:")
    seed_demo(s, season=True)
    yield s
    s.close()


def test_the_demo_holds_b4s_season_without_doubling_the_sample_weeks(demo_store):
    b4 = demo_store.list_sightings(block="B4", status="finalized")
    dates = [s["date"] for s in b4]
    assert len(dates) == len(set(dates)) == 20
    assert seed_demo(demo_store, season=True) == 0  # a second start adds nothing


@pytest.mark.asyncio
async def test_season_screen_from_the_log_shows_chart_and_numbers(demo_store):
    app = make_app(demo_store)
    async with app.run_test(size=(100, 40)) as pilot:
        log = app.screen
        assert isinstance(log, LogScreen) and "t" in {b.key for b in log.BINDINGS if b.show}
        table = log.query_one("#log-table", DataTable)
        c1 = next(i for i, k in enumerate(table_keys(table))
                  if demo_store.get_sighting(k[2:])["block"] == "C1")
        table.move_cursor(row=c1)
        await pilot.press("t")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, SeasonScreen) and screen.block == "C1"  # the block under the cursor
        await pilot.press("right_square_bracket")
        await pilot.pause()
        assert screen.block == season_db.blocks(demo_store)[season_db.blocks(demo_store).index("C1") + 1]
        while screen.block != "B4":
            await pilot.press("left_square_bracket")
            await pilot.pause()
        expected = block_season([s for s in demo_store.list_sightings(status="finalized")], "B4")
        charts = list(screen.query(SeasonChart))
        assert [c.pest.pest for c in charts] == [p.pest for p in expected.pests]
        moth_table = screen.query_one("#season-table-0", DataTable)
        assert moth_table.row_count == len(expected.pests[0].weeks) == 20
        statuses = [str(moth_table.get_row_at(i)[-1]) for i in range(moth_table.row_count)]
        assert statuses.count("▲ above") == len(expected.pests[0].weeks_above) > 0
        assert "above threshold" in str(screen.query(".season-pest").first().render())
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is log


@pytest.mark.asyncio
async def test_the_log_marks_sightings_above_threshold_and_alerts_a_block_whose_latest_week_is(store_with_alert):
    store, hot, hot_id = store_with_alert
    app = make_app(store)
    async with app.run_test(size=(100, 30)) as pilot:
        log = app.screen
        alert = log.query_one("#log-alerts", Static)
        assert alert.has_class("-shown") and alert.display
        text = str(alert.render())
        assert f"▲ {hot}: above threshold in its latest week (grape berry moth W30)" in text and "B4" not in text
        table = log.query_one("#log-table", DataTable)
        keys = table_keys(table)
        row = table.get_row_at(keys.index(f"s:{hot_id}"))
        assert str(row[2]).startswith("▲ ")
        cool = [k for k in keys if k != f"s:{hot_id}" and not log.above_threshold(store.get_sighting(k[2:]))]
        assert cool and all(not str(table.get_row_at(keys.index(k))[2]).startswith("▲") for k in cool)
        table.move_cursor(row=keys.index(f"s:{hot_id}"))
        await pilot.press("t")
        await pilot.pause()
        assert isinstance(app.screen, SeasonScreen) and app.screen.block == hot
        assert app.screen.season.alerts[0].latest.above


@pytest.fixture
def store_with_alert():
    s = Store(":memory:")
    seed_demo(s)
    hot = "K7"
    s.finalize(s.save_draft(note("2026-07-14", gbm(50, 1), block=hot)))
    hot_id = s.finalize(s.save_draft(note("2026-07-21", gbm(50, 9), block=hot)))
    yield s, hot, hot_id
    s.close()


@pytest.mark.asyncio
async def test_no_alert_line_without_an_alerting_block(demo_store):
    app = make_app(demo_store)
    async with app.run_test(size=(100, 30)) as pilot:
        assert season_db.alerts(demo_store) == []
        assert not app.screen.query_one("#log-alerts", Static).display


@pytest.mark.asyncio
async def test_season_screen_without_sightings_says_so(store):
    app = make_app(store)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("t")
        await pilot.pause()
        assert isinstance(app.screen, SeasonScreen) and app.screen.block is None
        assert "No finalized sightings yet" in str(app.screen.query_one("#season-title", Static).render())


@pytest.fixture
def store():
    s = Store(":memory:")
    yield s
    s.close()


# ------------------------------------------------------------------------------------------ snapshots
SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]


@pytest.fixture
def frozen_demo(monkeypatch):
    import fieldlog_app.database.store as store_mod

    counter = itertools.count(1)
    monkeypatch.setattr(store_mod.uuid, "uuid4",
                        lambda: uuid.UUID(int=(next(counter) * 0x9E3779B97F4A7C15F39CC0605CEDC835) % (1 << 128), version=4))
    ticks = itertools.count(0)
    monkeypatch.setattr(store_mod, "utc_now", lambda: f"2026-09-15T08:{next(ticks) % 60:02d}:00Z")
    s = Store(":memory:")
    seed_demo(s, season=True)
    yield s
    s.close()


@pytest.mark.parametrize("size", SIZES)
def test_season_snapshot(snap_compare, frozen_demo, size):
    async def open_season(pilot):
        pilot.app.push_screen(SeasonScreen("B4"))
        await pilot.pause()
        await pilot.pause()

    assert snap_compare(make_app(frozen_demo), terminal_size=size, run_before=open_season)
