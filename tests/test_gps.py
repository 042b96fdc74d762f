"""GPS in the sighting form (fieldlog_app/gps.py): against gpsd's own simulator, gpsfake (Debian's gpsd-clients,
with gpsd), replaying tests/data/vineyard-walk.nmea on a free port; without gpsd the form says so and works."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("textual")

from textual.widgets import Input, Static  # noqa: E402

from fieldlog_app import gps  # noqa: E402
from fieldlog_app.screens.sighting_form import SightingFormScreen  # noqa: E402
from test_app import make_app  # noqa: E402

NMEA = Path(__file__).parent / "data" / "vineyard-walk.nmea"
SBIN_PATH = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"  # gpsfake starts gpsd, which Debian puts in sbin


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def gpsfake(tmp_path):
    """gpsfake replaying the NMEA log on a free port; stopped (its whole process group) after the test."""
    exe = shutil.which("gpsfake", path=SBIN_PATH)
    if exe is None or shutil.which("gpsd", path=SBIN_PATH) is None:
        pytest.skip("gpsfake and gpsd are not installed (Debian: apt-get install gpsd gpsd-clients)")
    port = free_port()
    log = tmp_path / "gpsfake.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([exe, "-q", "-P", str(port), str(NMEA)], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PATH": SBIN_PATH}, start_new_session=True)
    try:
        # a hang guard while gpsfake starts its gpsd, not a time bound on anything tested
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"gpsfake exited with {proc.returncode}: {log.read_text(errors='replace')[-500:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("gpsfake's gpsd never listened")
                time.sleep(0.1)
        yield ("127.0.0.1", port)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_read_fix_from_gpsfake(gpsfake):
    fix = gps.read_fix(gpsfake)
    assert (round(fix.lat, 6), round(fix.lon, 6)) == (42.8731, -76.9813)  # 42°52.386' N, 76°58.878' W
    assert fix.accuracy_m is not None and fix.accuracy_m > 0


@pytest.mark.asyncio
async def test_ctrl_g_fills_the_position_from_gpsd(gpsfake, store, monkeypatch):
    monkeypatch.setenv(gps.ENV_GPSD, f"{gpsfake[0]}:{gpsfake[1]}")
    app = make_app(store)
    async with app.run_test(size=(100, 40)) as pilot:
        app.push_screen(SightingFormScreen())
        await pilot.pause()
        await pilot.press("ctrl+g")
        await app.workers.wait_for_complete()
        await pilot.pause()
        form = app.screen
        assert form.top_field("lat").value == "42.873100" and form.top_field("lon").value == "-76.981300"
        acc = form.top_field("accuracy_m").value
        assert float(acc) == gps.read_fix(gpsfake).accuracy_m
        assert f"GPS: 42.873100, -76.981300 ± {acc} m from gpsd" in str(form.query_one("#form-gps", Static).render())


@pytest.mark.asyncio
async def test_no_gpsd_is_a_clear_message_and_the_form_goes_on(store, monkeypatch):
    monkeypatch.setenv(gps.ENV_GPSD, f"127.0.0.1:{free_port()}")  # nobody listens there
    app = make_app(store)
    async with app.run_test(size=(100, 40)) as pilot:
        app.push_screen(SightingFormScreen())
        await pilot.pause()
        form = app.screen
        form.top_field("lat").input.value = "42.1"
        await pilot.press("ctrl+g")
        await app.workers.wait_for_complete()
        await pilot.pause()
        msg = str(form.query_one("#form-gps", Static).render())
        assert "No GPS position: gpsd is not running at 127.0.0.1:" in msg and "Type the position in" in msg
        assert form.top_field("lat").value == "42.1" and form.top_field("lon").value == ""  # nothing touched
        assert isinstance(app.screen, SightingFormScreen)


def test_fix_of_reads_only_tpv_reports_with_a_fix():
    assert gps.fix_of({"class": "TPV", "mode": 1, "lat": 1.0, "lon": 2.0}) is None  # no fix yet
    assert gps.fix_of({"class": "SKY", "mode": 3}) is None
    assert gps.fix_of({"class": "TPV", "mode": 2, "lat": 95.0, "lon": 2.0}) is None
    assert gps.fix_of({"class": "TPV", "mode": 3, "lat": 1.0, "lon": 2.0, "eph": 4.26}) == gps.Fix(1.0, 2.0, 4.3)
    assert gps.fix_of({"class": "TPV", "mode": 2, "lat": 1.0, "lon": 2.0, "epx": 3.0, "epy": 5.0}).accuracy_m == 5.0
    assert gps.fix_of({"class": "TPV", "mode": 2, "lat": 1.0, "lon": 2.0}).accuracy_m is None


def test_gpsd_address_from_the_environment(monkeypatch):
    monkeypatch.delenv(gps.ENV_GPSD, raising=False)
    assert gps.gpsd_address() == ("127.0.0.1", 2947)
    monkeypatch.setenv(gps.ENV_GPSD, "handheld.local:3000")
    assert gps.gpsd_address() == ("handheld.local", 3000)
    monkeypatch.setenv(gps.ENV_GPSD, "host:port")
    with pytest.raises(gps.GpsError, match="expected HOST:PORT"):
        gps.gpsd_address()


def test_something_that_is_not_gpsd_is_a_gps_error():
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]
        import threading

        def answer():
            conn, _ = srv.accept()
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            conn.close()

        t = threading.Thread(target=answer)
        t.start()
        with pytest.raises(gps.GpsError, match="cannot read gpsd at 127.0.0.1:.*version header"):
            gps.read_fix(("127.0.0.1", port), wait_s=5)
        t.join()


@pytest.fixture
def store():
    from fieldlog_app.database import Store

    s = Store(":memory:")
    yield s
    s.close()


@pytest.mark.parametrize("size", [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")])
def test_form_filled_from_gpsd_snapshot(snap_compare, gpsfake, store, monkeypatch, size):
    pytest.importorskip("pytest_textual_snapshot")
    monkeypatch.setenv(gps.ENV_GPSD, f"{gpsfake[0]}:{gpsfake[1]}")
    app = make_app(store)

    async def fill(pilot):
        app.push_screen(SightingFormScreen())
        await pilot.pause()
        app.screen.top_field("block").input.value = "B4"
        for inp in app.screen.query(Input):
            inp.cursor_blink = False  # a blinking cursor is drawn or not by the clock
        await pilot.press("ctrl+g")
        await app.workers.wait_for_complete()
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=fill)
