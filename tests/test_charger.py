"""Reports deferred on a critical battery and written on the charger (fieldlog_app/charger.py), in the app with a
simulated battery (edgespec.power.SimulatedPower) and edgespec's job queue in a temporary folder."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("textual")

from textual.widgets import DataTable, Static  # noqa: E402

from edgespec.jobqueue import JobQueue  # noqa: E402
from edgespec.power import SimulatedPower  # noqa: E402
from fieldlog_app import charger  # noqa: E402
from fieldlog_app.database import Store  # noqa: E402
from fieldlog_app.screens.generate import GenerateScreen  # noqa: E402
from fieldlog_app.screens.log import LogScreen  # noqa: E402
from test_app import NOTE, SCRIPT_TEXT, finalized_sighting, make_app  # noqa: E402
from test_app_snapshots import frozen_store  # noqa: E402,F401  (fixture)
from test_app import FakeGenerator as ScriptedGenerator  # noqa: E402


class FakeGenerator(ScriptedGenerator):
    """The scripted generator, noting whether each report was forced past the generator's own power check."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.forced: list[bool] = []

    def stream_report(self, note, *, cancel=None, force=False, **kw):
        self.forced.append(force)
        return super().stream_report(note, cancel=cancel, **kw)


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "log.db"))
    yield s
    s.close()


@pytest.fixture
def queue(tmp_path):
    return JobQueue(tmp_path / "queue")


def app_on(store, queue, battery, gen=None):
    return make_app(store, gen or FakeGenerator(delay=0), power_source=battery, job_queue=queue)


async def settle(app, pilot):
    await app.workers.wait_for_complete()
    await pilot.pause()


async def defer_report(app, pilot, store, sid):
    app.push_screen(GenerateScreen(store.get_sighting(sid)))
    await pilot.pause()
    await settle(app, pilot)
    screen = app.screen
    assert isinstance(screen, GenerateScreen) and screen.state == "deferred"
    return screen


@pytest.mark.asyncio
async def test_a_critical_battery_queues_the_report_and_the_charger_writes_it(store, queue):
    sid = finalized_sighting(store)
    battery = SimulatedPower(4, charging=False)
    gen = FakeGenerator(delay=0)
    app = app_on(store, queue, battery, gen)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await defer_report(app, pilot, store, sid)
        outcome = str(screen.query_one("#gen-outcome", Static).render())
        assert "Battery critical (on battery at 4%" in outcome and "position 1 of 1" in outcome
        assert "Press n to write it now" in outcome
        assert gen.calls == 0 and store.reports_for(sid) == []
        (job,) = queue.jobs()  # edgespec's own queue: `edgespec queue list` shows it
        assert job.kind == "notes" and job.input["block"] == NOTE["block"]
        assert job.options == {charger.SIGHTING_OPTION: sid, charger.DB_OPTION: store.path}
        # asking again does not queue it twice
        await pilot.press("escape")
        await defer_report(app, pilot, store, sid)
        assert len(queue.jobs()) == 1
        await pilot.press("escape")
        await pilot.pause()
        log = app.screen
        assert isinstance(log, LogScreen)
        line = log.query_one("#log-queue", Static)
        assert line.display and "1 report waits for the charger" in str(line.render())
        # still on battery: nothing runs
        app.poll_power()
        await settle(app, pilot)
        assert gen.calls == 0 and len(queue.jobs()) == 1
        # the charger is connected: the queue runs in the background and the log shows the report
        battery.set(4, charging=True)
        app.poll_power()
        await settle(app, pilot)
        await pilot.pause()
        (report,) = store.reports_for(sid)
        assert gen.calls == 1 and report["status"] == "complete" and report["text"] == SCRIPT_TEXT and gen.forced == [True]
        assert queue.jobs() == []
        (done_file,) = queue.done_dir.glob("*.json")
        done = json.loads(done_file.read_text())
        assert done["job"]["id"] == job.id and done["output"]["text"] == report["text"]
        assert not line.display
        row = log.query_one("#log-table", DataTable).get_row(f"s:{sid}")
        assert "clean" in str(row[4])
        assert any("written on the charger: written in" in n.message for n in app._notifications)


@pytest.mark.asyncio
async def test_now_writes_it_on_battery_and_takes_it_off_the_queue(store, queue):
    sid = finalized_sighting(store)
    gen = FakeGenerator(delay=0)
    app = app_on(store, queue, SimulatedPower(4, charging=False), gen)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await defer_report(app, pilot, store, sid)
        assert len(queue.jobs()) == 1
        await pilot.press("n")
        await settle(app, pilot)
        assert screen.state == "done" and gen.calls == 1 and gen.forced == [True]
        assert queue.jobs() == [] and len(store.reports_for(sid)) == 1


@pytest.mark.asyncio
async def test_enough_battery_writes_at_once(store, queue):
    sid = finalized_sighting(store)
    gen = FakeGenerator(delay=0)
    app = app_on(store, queue, SimulatedPower(60, charging=False), gen)
    async with app.run_test(size=(100, 30)) as pilot:
        app.push_screen(GenerateScreen(store.get_sighting(sid)))
        await pilot.pause()
        await settle(app, pilot)
        assert app.screen.state == "done" and queue.jobs() == [] and len(store.reports_for(sid)) == 1


@pytest.mark.asyncio
async def test_a_failing_queued_report_stays_queued_with_its_error(store, queue):
    sid = finalized_sighting(store)
    charger.queue_report(queue, store.path, sid, dict(NOTE))
    other = JobQueue(queue.folder)
    other.add("notes", dict(NOTE), {"oracle": "mine.gguf"})  # an `edgespec generate` job: left for the CLI
    gen = FakeGenerator(delay=0, crash_after=1)
    # started on the charger: what waits runs at once
    app = app_on(store, queue, SimulatedPower(50, charging=True), gen)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        assert gen.calls == 1 and store.reports_for(sid) == []
        jobs = queue.jobs()
        assert len(jobs) == 2
        mine = [j for j in jobs if j.options.get(charger.SIGHTING_OPTION) == sid]
        assert len(mine) == 1 and "llama_decode returned -1" in mine[0].error
        assert any("failed and stays queued" in n.message for n in app._notifications)


def test_power_watch_says_when_the_charger_was_connected():
    battery = SimulatedPower(30, charging=False)
    watch = charger.PowerWatch(battery)
    first = watch.read()
    assert not first.plugged_in and first.policy.mode == "saver"
    battery.set(5)
    assert watch.read().policy.run_now is False
    battery.set(5, charging=True)
    assert watch.read().plugged_in and watch.charging
    assert not watch.read().plugged_in  # still charging: not a new connection
    assert charger.PowerWatch(SimulatedPower(50, charging=True)).read().plugged_in  # started on the charger


@pytest.mark.parametrize("size", [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")])
def test_deferred_report_snapshot(snap_compare, frozen_store, queue, size):
    pytest.importorskip("pytest_textual_snapshot")
    b4 = frozen_store.list_sightings(block="B4", date_from="2026-07-21", date_to="2026-07-21")[0]["id"]
    app = app_on(frozen_store, queue, SimulatedPower(4, charging=False))

    async def open_it(pilot):
        app.push_screen(GenerateScreen(frozen_store.get_sighting(b4)))
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=open_it)


@pytest.mark.asyncio
async def test_unplugged_midway_the_rest_wait_for_the_next_charge(store, queue):
    first, second = finalized_sighting(store), finalized_sighting(store, {**NOTE, "block": "B5"})
    charger.queue_report(queue, store.path, first, dict(NOTE))
    charger.queue_report(queue, store.path, second, {**NOTE, "block": "B5"})
    battery = SimulatedPower(8, charging=True)

    class UnplugsWhileWriting(FakeGenerator):
        def stream_report(self, note, **kw):
            battery.set(8, charging=False)  # the scout takes the handheld off the charger mid-report
            return super().stream_report(note, **kw)

    gen = UnplugsWhileWriting(delay=0)
    app = app_on(store, queue, battery, gen)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        assert gen.calls == 1 and len(store.reports_for(first)) == 1 and store.reports_for(second) == []
        (left,) = queue.jobs()
        assert left.options[charger.SIGHTING_OPTION] == second and left.error is None
        assert "1 report waits for the charger (B5" in str(app.screen.query_one("#log-queue", Static).render())
        battery.set(8, charging=True)
        app.poll_power()
        await settle(app, pilot)
        assert gen.calls == 2 and len(store.reports_for(second)) == 1 and queue.jobs() == []


@pytest.mark.asyncio
async def test_the_open_generate_screen_shows_the_report_the_charger_wrote(store, queue):
    sid = finalized_sighting(store)
    battery = SimulatedPower(3, charging=False)
    app = app_on(store, queue, battery)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await defer_report(app, pilot, store, sid)
        battery.set(3, charging=True)
        app.poll_power()
        await settle(app, pilot)
        await pilot.pause()
        (report,) = store.reports_for(sid)
        assert screen.state == "done" and screen.report_id == report["id"]
        assert "Written on the charger" in str(screen.query_one("#gen-outcome", Static).render())
        await pilot.press("o")
        await pilot.pause()
        from fieldlog_app.screens.report import ReportScreen

        assert isinstance(app.screen, ReportScreen) and app.screen.report_id == report["id"]
