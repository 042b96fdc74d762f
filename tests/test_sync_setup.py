"""Sync set up inside the app: settings saved in the user config (env still overrides), "Sync now" against a
stopped server fails at once and says why, a background retry refreshes the screen, the demo never syncs."""

from __future__ import annotations

import json
import stat

import httpx
import pytest
from textual.widgets import Button, DataTable, Input, Static

from fieldlog_app import cli as fieldlog_cli
from fieldlog_app.database import Store
from fieldlog_app.database.demo_mark import is_demo, mark_demo
from fieldlog_app.demo import seed_demo
from fieldlog_app.screens.sync import SyncScreen
from fieldlog_app.sync.bundle import BundleError, export_bundle
from fieldlog_app.sync.background import APP_CONNECT_TIMEOUT, AutoSync, app_sync_callback, sync_when_reachable
from fieldlog_app.sync.common import DemoDatabaseError, SyncConfigError, resolve_config
from fieldlog_app.sync.client import sync_once
from fieldlog_app.sync.config import ENV_CONFIG, SyncSettings, load_settings, save_settings
from fieldlog_app.sync.testing import free_port, make_sightings
from test_app import make_app, wait_for
from test_sync_client import FAST, env, http_server  # noqa: F401  (fixtures)


@pytest.fixture(autouse=True)
def settings_file(tmp_path, monkeypatch):
    """Every test reads and writes its own settings file, never this machine's."""
    path = tmp_path / "config" / "sync.json"
    monkeypatch.setenv(ENV_CONFIG, str(path))
    monkeypatch.delenv("FIELDLOG_SERVER", raising=False)
    monkeypatch.delenv("FIELDLOG_TOKEN", raising=False)
    return path


# ------------------------------------------------------------------------------------------ settings file
def test_saved_settings_are_private_and_env_overrides_them(settings_file, monkeypatch):
    with pytest.raises(SyncConfigError, match="Sync screen"):
        resolve_config()
    save_settings(SyncSettings("http://office:8765/", "tok-1"))
    assert stat.S_IMODE(settings_file.stat().st_mode) == 0o600  # the token is a secret
    assert resolve_config() == ("http://office:8765", "tok-1")
    monkeypatch.setenv("FIELDLOG_SERVER", "http://other:9000")
    assert resolve_config() == ("http://other:9000", "tok-1")  # env wins, the saved token still fills in
    monkeypatch.setenv("FIELDLOG_TOKEN", "tok-env")
    assert resolve_config() == ("http://other:9000", "tok-env")
    assert resolve_config("http://cli:1", "tok-cli") == ("http://cli:1", "tok-cli")  # arguments win over both


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"server": 5}'])
def test_a_broken_settings_file_is_named(settings_file, content):
    settings_file.parent.mkdir(parents=True)
    settings_file.write_text(content)
    with pytest.raises(SyncConfigError, match="sync.json"):
        resolve_config()
    assert load_settings(settings_file.parent / "absent.json") == SyncSettings()


# ------------------------------------------------------------------------------------------ the screen
@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "device.db")
    yield s
    s.close()


async def open_sync(pilot):
    await pilot.press("s")
    await pilot.pause()
    assert isinstance(pilot.app.screen, SyncScreen)
    return pilot.app.screen


@pytest.mark.asyncio
async def test_server_and_token_are_entered_in_the_app_and_saved(store, settings_file):
    app = make_app(store)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await open_sync(pilot)
        assert screen.query_one("#sync-now", Button).disabled and app.sync_callback is None
        assert "not configured" in str(screen.query_one("#sync-result", Static).render())
        token = screen.query_one("#sync-token", Input)
        assert token.password  # typed into a password field
        screen.query_one("#sync-server", Input).value = "office:8765"  # no scheme: refused, nothing saved
        token.value = "secret-token"
        screen.action_save_settings()
        await pilot.pause()
        assert "http://HOST:PORT" in str(screen.query_one("#sync-settings-info", Static).render())
        assert not settings_file.exists() and app.sync_callback is None
        screen.query_one("#sync-server", Input).value = "http://office:8765"
        screen.action_save_settings()
        await pilot.pause()
        assert json.loads(settings_file.read_text()) == {"server": "http://office:8765", "token": "secret-token"}
        assert token.value == "" and "saved" in token.placeholder  # never echoed back
        assert app.sync_callback is not None and not screen.query_one("#sync-now", Button).disabled
        # a new server with the token left empty keeps the saved token
        screen.query_one("#sync-server", Input).value = "http://office2:8765"
        screen.action_save_settings()
        await pilot.pause()
        assert load_settings() == SyncSettings("http://office2:8765", "secret-token")


@pytest.mark.asyncio
async def test_the_screen_says_when_the_environment_overrides_the_saved_settings(store, monkeypatch):
    monkeypatch.setenv("FIELDLOG_SERVER", "http://env:1")
    app = make_app(store)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await open_sync(pilot)
        assert "FIELDLOG_SERVER set in the environment: it overrides" in \
            str(screen.query_one("#sync-settings-info", Static).render())


def test_sync_now_against_a_stopped_server_fails_at_once_with_a_plain_message(store):
    """One connection attempt with the short connect timeout, no back-off sleeps, items kept queued."""
    make_sightings(store, 2, seed=31)
    attempts, sleeps = [], []

    def refuse(request: httpx.Request):
        attempts.append(request.extensions["timeout"]["connect"])
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    sync_now = app_sync_callback(store, "http://office:8765", "tok", transport=httpx.MockTransport(refuse),
                                 sleep=sleeps.append)
    result = sync_now()
    assert attempts == [APP_CONNECT_TIMEOUT] and sleeps == []
    assert result.error.startswith("server unreachable") and "cannot reach the farm office at http://office:8765" \
        in result.error and "Connection refused" in result.error
    assert store.outbox_counts()["queued"] == 2
    # the command line keeps retrying with back-off (a script may wait)
    attempts.clear()
    sync_once(store, "http://office:8765", "tok", transport=httpx.MockTransport(refuse), sleep=sleeps.append,
              retry=FAST)
    assert len(attempts) == FAST.tries and len(sleeps) == FAST.tries - 1


@pytest.mark.asyncio
async def test_a_background_retry_refreshes_the_counts_and_clears_the_old_error(env):  # noqa: F811
    make_sightings(env.store, 1, seed=32)
    dead = f"http://127.0.0.1:{free_port()}"
    auto = AutoSync(env.store, interval=3600, server=env.url, token=env.token, retry=FAST)
    app = make_app(env.store, sync_callback=app_sync_callback(env.store, dead, env.token), autosync=auto)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await open_sync(pilot)
        await pilot.press("s")  # Sync now against the stopped server
        await wait_for(pilot, lambda: not screen.syncing and "cannot reach" in str(
            screen.query_one("#sync-result", Static).render()), timeout=60, what="the refused sync")
        counts = screen.query_one("#sync-counts", DataTable)
        assert str(counts.get_row("queued")[1]) == "1"
        auto.start()
        auto.trigger()  # the farm office is reachable again: the background sync sends the item
        await wait_for(pilot, lambda: "background sync finished" in str(
            screen.query_one("#sync-result", Static).render()), timeout=120, what="the background result")
        text = str(screen.query_one("#sync-result", Static).render())
        assert "cannot reach" not in text and "sent 1" in text
        assert str(counts.get_row("queued")[1]) == "0" and str(counts.get_row("sent")[1]) == "1"
    auto.stop()


# ------------------------------------------------------------------------------------------ the demo
@pytest.fixture
def demo_db(tmp_path):
    path = tmp_path / "demo.db"
    with Store(path) as s:
        seed_demo(s)
        assert is_demo(s) and s.outbox_counts()["queued"] > 0
    return path


def test_the_demo_database_never_syncs(demo_db, env, capsys, monkeypatch):  # noqa: F811
    with pytest.raises(DemoDatabaseError, match="demo database"):
        sync_once(demo_db, env.url, env.token, retry=FAST)
    assert sync_when_reachable(demo_db, env.url, env.token) is None  # the background sync stays quiet
    with pytest.raises(BundleError, match="demo database"):
        export_bundle(demo_db, env.tmp / "card.zip", token=env.token)
    assert env.server_items() == {}  # nothing reached the office
    monkeypatch.setenv("FIELDLOG_SERVER", env.url)
    monkeypatch.setenv("FIELDLOG_TOKEN", env.token)  # the case: configured, then --demo
    assert fieldlog_cli.main(["sync", "--db", str(demo_db)]) == 2
    assert "demo database" in capsys.readouterr().err and env.server_items() == {}
    with Store(demo_db) as s:
        assert s.outbox_counts()["sent"] == 0


def test_a_real_database_is_not_marked_and_the_mark_stays(tmp_path):
    with Store(tmp_path / "real.db") as s:
        make_sightings(s, 1, seed=33)
        assert not is_demo(s)
        mark_demo(s)
        mark_demo(s)  # idempotent
        assert is_demo(s)
        assert s.db.conn.execute("SELECT count(*) FROM audit_log WHERE entity_id = 'demo'").fetchone()[0] == 1


@pytest.mark.asyncio
async def test_the_sync_screen_of_the_demo_says_it_never_syncs(demo_db):
    with Store(demo_db) as s:
        calls = []
        app = make_app(s, sync_callback=lambda: calls.append(1))
        async with app.run_test(size=(100, 40)) as pilot:
            screen = await open_sync(pilot)
            assert screen.query_one("#sync-now", Button).disabled
            assert "demo database" in str(screen.query_one("#sync-result", Static).render())
            await pilot.press("s")
            await pilot.pause()
        assert calls == []


def test_fieldlog_demo_marks_an_older_unmarked_demo_database(tmp_path, monkeypatch):
    import sys
    import types

    import fieldlog_app

    monkeypatch.delenv(fieldlog_cli.ENV_DB, raising=False)
    monkeypatch.setattr(fieldlog_cli, "data_dir", lambda: tmp_path / "userdata")
    mod = types.ModuleType("fieldlog_app.app")
    mod.run = lambda *a, **kw: None
    monkeypatch.setitem(sys.modules, "fieldlog_app.app", mod)
    monkeypatch.setattr(fieldlog_app, "app", mod, raising=False)
    old = fieldlog_cli.demo_db_path()
    old.parent.mkdir(parents=True)
    with Store(old) as s:  # what an older fieldlog --demo left: data, no mark
        make_sightings(s, 1, seed=34)
    assert fieldlog_cli.main(["--demo"]) == 0
    with Store(old) as s:
        assert is_demo(s)
    other = tmp_path / "mine.db"
    with Store(other) as s:
        make_sightings(s, 1, seed=35)
    assert fieldlog_cli.main(["--demo", "--db", str(other)]) == 0  # someone's own log with data: left alone
    with Store(other) as s:
        assert not is_demo(s)


# ------------------------------------------------------------------------------------------ snapshot
@pytest.mark.parametrize("size", [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")])
def test_sync_settings_snapshot(snap_compare, size, monkeypatch):
    """A device with a saved server and token (the token never shown) and one item queued."""
    from pathlib import Path

    path = Path.home() / ".config" / "fieldlog-snapshot" / "settings.json"  # shown as ~/...: same everywhere
    monkeypatch.setenv(ENV_CONFIG, str(path))
    monkeypatch.setattr("fieldlog_app.sync.config.load_settings",
                        lambda *a: SyncSettings("http://office:8765", "secret-token"))
    store = Store(":memory:")
    make_sightings(store, 1, seed=36)
    app = make_app(store, sync_callback=lambda: {"sent": 1})
    try:
        assert snap_compare(app, terminal_size=size, press=["s"])
    finally:
        store.close()
