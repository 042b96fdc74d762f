"""Crash tests with real processes: the server SIGKILLed and restarted mid-sync, and the
client SIGKILLed mid-sync again and again. Afterwards one sync completes and the server
holds exactly the device's items: no duplicates, no losses."""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import threading

import pytest

from fieldlog_app.database import Store
from fieldlog_app.sync.common import RetryPolicy
from fieldlog_app.sync.client import sync_once
from fieldlog_app.sync.server import ServerDB
from fieldlog_app.sync.testing import FaultProxy, ServerProcess, make_sightings, wait_for

pytestmark = pytest.mark.timeout(120)


def server_rows(path) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as c:
        return c.execute("SELECT item_id, sha256 FROM items ORDER BY server_seq").fetchall()


def device_states(path) -> dict[str, int]:
    c = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return dict(c.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall())
    finally:
        c.close()


def assert_exactly_once(store: Store, server_db) -> None:
    rows = store.outbox_items()
    assert {r["state"] for r in rows} == {"sent"}
    held = server_rows(server_db)
    assert len(held) == len({i for i, _ in held}), "duplicate item on the server"
    assert sorted(held) == sorted((r["item_id"], r["sha256"]) for r in rows)


def test_server_killed_and_restarted_mid_sync(tmp_path):
    store = Store(tmp_path / "device.db")
    make_sightings(store, 30, seed=41)
    server_db = tmp_path / "server.db"
    token = ServerDB(server_db).add_device("handheld")
    server = ServerProcess(server_db).start()
    proxy = FaultProxy(server.port, latency=0.03)
    out: dict = {}

    def run() -> None:
        out["result"] = sync_once(store, proxy.url, token, batch_size=2,
                                  retry=RetryPolicy(tries=80, base=0.05, cap=0.25), seed=3)

    t = threading.Thread(target=run)
    try:
        t.start()
        assert wait_for(lambda: len(server_rows(server_db)) >= 8, timeout=30)
        server.stop(kill=True)  # SIGKILL: no graceful shutdown, maybe mid-transaction
        held_at_kill = len(server_rows(server_db))
        assert held_at_kill < 30
        server.start()  # same port, same database
        t.join(timeout=60)
        assert not t.is_alive()
    finally:
        proxy.close()
        server.stop()
    result = out["result"]
    assert result.error is None and result.retries > 0, result
    assert result.sent + result.duplicate == 30
    assert_exactly_once(store, server_db)
    store.close()


def test_client_sigkilled_repeatedly_then_one_sync_completes(tmp_path):
    rng = random.Random(20260721)
    n = 40
    device_db = tmp_path / "device.db"
    store = Store(device_db)
    make_sightings(store, n, seed=42)
    store.close()
    server_db = tmp_path / "server.db"
    token = ServerDB(server_db).add_device("handheld")
    env = {**os.environ, "FIELDLOG_TOKEN": token}
    kills_mid_batch = 0
    with ServerProcess(server_db) as server, FaultProxy(server.port, latency=0.06) as proxy:
        for _ in range(4):
            before = device_states(device_db).get("sent", 0)
            target = before + rng.randint(1, 6)
            proc = subprocess.Popen(
                [sys.executable, "-m", "fieldlog_app.sync", "--db", str(device_db), "--server", proxy.url,
                 "--batch-size", "3"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            try:
                def mid_batch() -> bool:
                    s = device_states(device_db)
                    return s.get("sent", 0) >= target and s.get("sending", 0) > 0

                wait_for(lambda: mid_batch() or proc.poll() is not None, timeout=30, interval=0.005)
                wait_for(lambda: False, timeout=rng.uniform(0, 0.03))  # land anywhere in the window
            finally:
                proc.kill()
                proc.wait()
            assert proc.returncode == -9, "the client finished before it could be killed"
            kills_mid_batch += device_states(device_db).get("sending", 0) > 0
        assert len(server_rows(server_db)) < n
        assert kills_mid_batch >= 1  # at least one kill left a batch in flight

        store = Store(device_db)
        result = sync_once(store, proxy.url, token, retry=RetryPolicy(tries=3, base=0.01, cap=0.05))
        print(f"after {kills_mid_batch} mid-batch kills: {result.summary()}, recovered {result.recovered}")
        assert result.error is None and result.remaining == 0
        assert_exactly_once(store, server_db)
        assert len(server_rows(server_db)) == n
        store.close()
