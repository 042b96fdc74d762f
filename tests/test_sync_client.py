"""The device side against a real server on loopback (uvicorn in a thread), through a fault proxy."""

from __future__ import annotations

import csv
import io
import json
import shutil
import sqlite3
import threading
import uuid
import zipfile

import httpx
import pytest

from fieldlog_app.cli import main as fieldlog_main
from fieldlog_app.database import Store, canonical_json, payload_sha256
from fieldlog_app.sync.bundle import BundleError, export_bundle, import_bundle, read_receipts, write_receipts
from fieldlog_app.sync.background import AutoSync, app_sync_callback, sync_when_reachable
from fieldlog_app.sync.common import RetryPolicy, SyncBusyError, sync_lock
from fieldlog_app.sync.client import sync_once
from fieldlog_app.sync.status import apply_receipts, outbox_status, retry_items
from fieldlog_app.sync.app import create_app
from fieldlog_app.sync.server import ServerDB
from fieldlog_app.sync.signing import key_from_token, sign_receipt
from fieldlog_app.sync.server_cli import main as server_main
from fieldlog_app.sync.testing import (
    FaultProxy,
    SwappableApp,
    ThreadServer,
    free_port,
    make_sightings,
)

FAST = RetryPolicy(tries=8, base=0.01, cap=0.05, max_wait=1.0)


@pytest.fixture(scope="module")
def http_server():
    swap = SwappableApp()
    with ThreadServer(swap) as srv:
        yield swap, srv


class Env:
    def __init__(self, tmp_path, swap, srv, target):
        self.tmp = tmp_path
        self.sdb = ServerDB(target)
        self.token = self.sdb.add_device("handheld-1")
        swap.app = create_app(self.sdb, max_body_bytes=256 * 1024)
        self.srv = srv
        self.url = srv.url
        self.db_path = tmp_path / "device.db"
        self.store = Store(self.db_path)

    def server_items(self) -> dict[str, str]:
        return {r["item_id"]: r["sha256"] for r in self.sdb.list_items()}

    def device_rows(self, store=None) -> list[dict]:
        return (store or self.store).outbox_items()

    def sync(self, url=None, store=None, **kw):
        kw.setdefault("retry", FAST)
        return sync_once(store or self.store, url or self.url, kw.pop("token", self.token), **kw)


@pytest.fixture
def env(tmp_path, http_server, server_db_target):
    swap, srv = http_server
    e = Env(tmp_path, swap, srv, server_db_target)
    yield e
    e.store.close()


def assert_server_matches_device(env, store=None):
    rows = env.device_rows(store)
    assert all(r["state"] == "sent" for r in rows), [(r["state"], r["last_error"]) for r in rows]
    assert env.server_items() == {r["item_id"]: r["sha256"] for r in rows}
    seqs = {r["item_id"]: r["server_seq"] for r in env.sdb.list_items()}
    for r in rows:
        rec = json.loads(r["receipt"])
        assert rec["item_id"] == r["item_id"] and rec["sha256"] == r["sha256"]
        assert rec["server_seq"] == seqs[r["item_id"]]


def test_round_trip_n_items_exactly_once(env):
    ids = make_sightings(env.store, 20, seed=1)
    v2 = env.store.revise(ids[3], {"notes": "re-counted"})
    env.store.save_report(v2, text="Summary: moth pressure low.", model_pair={"oracle": "o"}, policy={},
                          stats={}, provenance=[], spans=[], findings=[])
    result = env.sync(batch_size=4)
    assert result.ok, result
    assert (result.sent, result.duplicate, result.batches) == (22, 0, 6)
    assert_server_matches_device(env)
    # the server's copies are byte-identical to the frozen device payloads
    held = {r["item_id"]: r["payload"] for r in env.sdb.list_items(with_payload=True)}
    assert all(canonical_json(held[r["item_id"]]) == r["payload"] for r in env.device_rows())
    assert [r["item_id"] for r in env.sdb.list_items(kind="sighting", current=True)].count(v2) == 1
    again = env.sync()
    assert (again.sent, again.duplicate, again.batches, again.remaining) == (0, 0, 0, 0)
    st = outbox_status(env.store)
    assert st.counts["sent"] == 22 and st.pending == 0 and st.last_success_at is not None


def test_risk_class_round_trips_to_the_server_and_its_exports(env):
    ids = make_sightings(env.store, 2, seed=21)
    v2 = env.store.revise(ids[0], {"risk_class": "HIGH"})
    draft = env.store.save_draft({"block": "Z9", "risk_class": "low"})  # drafts stay on the device
    result = env.sync()
    assert result.ok and result.sent == 3, result
    assert_server_matches_device(env)
    held = {r["item_id"]: r["payload"] for r in env.sdb.list_items(with_payload=True)}
    assert held[v2]["risk_class"] == "high" and "risk_class" not in held[ids[1]] and draft not in held
    assert held[v2] == json.loads([r for r in env.device_rows() if r["item_id"] == v2][0]["payload"])
    # the handheld's own token uploads only (issue 16); an office reader device reads the exports
    auth = {"Authorization": f"Bearer {env.sdb.add_device('office-pc', role='reader')}"}
    rows = list(csv.DictReader(io.StringIO(httpx.get(env.url + "/v1/export.csv", headers=auth).text)))
    assert {r["sighting_id"]: r["risk_class"] for r in rows} == {v2: "high", ids[1]: ""}
    gj = httpx.get(env.url + "/v1/export.geojson", headers=auth).json()
    assert {f["id"]: f["properties"].get("risk_class") for f in gj["features"]} == {v2: "high", ids[1]: None}


def test_a_malformed_risk_class_is_refused_with_the_server_message(env):
    make_sightings(env.store, 1, seed=22)
    # an outbox row a buggy or tampered device could hold: hash matches, risk class does not
    for value in ("extreme", "High"):
        payload = json.loads(env.device_rows()[0]["payload"])
        payload.update({"id": str(uuid.uuid4()), "risk_class": value})
        with sqlite3.connect(env.db_path) as c:
            c.execute("INSERT INTO outbox (item_id, kind, replaces, payload, sha256, state, attempts, created_at,"
                      " updated_at) VALUES (?, 'sighting', NULL, ?, ?, 'queued', 0, 'x', 'x')",
                      (payload["id"], canonical_json(payload), payload_sha256(payload)))
    result = env.sync(batch_size=10)
    assert (result.sent, result.failed) == (1, 2)
    failed = [r for r in env.device_rows() if r["state"] == "failed"]
    assert len(failed) == 2 and len(env.server_items()) == 1
    assert "payload.risk_class: 'extreme' is not one of low, intermediate, high" in failed[0]["last_error"]
    assert "payload.risk_class: 'High' is not one of" in failed[1]["last_error"]


def test_dropped_connections_and_5xx_429_are_retried_without_duplicates(env):
    make_sightings(env.store, 12, seed=2)
    script = ["drop_before", "drop_mid_body", "drop_after", "status:500", "status:503", "status:429:0.07"]
    sleeps = []
    with FaultProxy(env.srv.port, script) as proxy:
        result = env.sync(proxy.url, batch_size=3, sleep=lambda s: sleeps.append(s), seed=5)
    assert result.ok, result
    assert [a for _, a in proxy.log[:6]] == script
    assert result.retries == 6
    # drop_after: the server committed batch 1 but the answer was lost; the resend is a duplicate
    assert (result.sent, result.duplicate) == (9, 3)
    assert 0.07 in sleeps  # Retry-After honoured
    assert all(0 <= s <= FAST.cap for s in sleeps if s != 0.07)
    assert_server_matches_device(env)
    attempts = [r["attempts"] for r in env.device_rows()]
    assert attempts[:3] == [7, 7, 7] and set(attempts[3:]) == {1}


def test_retries_exhausted_leave_rows_queued_with_backoff(env):
    make_sightings(env.store, 3, seed=3)
    with FaultProxy(env.srv.port, ["status:503"] * 3) as proxy:
        result = env.sync(proxy.url, retry=RetryPolicy(tries=3, base=0.01, cap=0.02), seed=1)
        assert result.error and result.error.startswith("server unreachable") and "503" in result.error
        rows = env.device_rows()
        assert {r["state"] for r in rows} == {"queued"}
        assert all(r["last_error"] and "503" in r["last_error"] and r["next_attempt_at"] for r in rows)
        assert env.server_items() == {}
        # the periodic sync respects the back-off: no request is made
        n = len(proxy.log)
        deferred = env.sync(proxy.url, force=False)
        assert deferred.deferred_until and deferred.sent == 0 and len(proxy.log) == n
        # "sync now" does not wait
        assert env.sync(proxy.url, force=True).ok
    assert_server_matches_device(env)
    assert outbox_status(env.store).last_error is None


def test_long_retry_after_ends_the_run_and_is_persisted(env):
    make_sightings(env.store, 2, seed=4)
    with FaultProxy(env.srv.port, ["status:429:600"]) as proxy:
        result = env.sync(proxy.url)
    assert "600" in result.error and result.retries == 0
    row = env.device_rows()[0]
    from datetime import datetime, timezone

    wait = datetime.fromisoformat(row["next_attempt_at"]) - datetime.now(timezone.utc)
    assert 590 < wait.total_seconds() <= 600


def test_conflicts_go_to_needs_attention_and_the_rest_is_sent(env):
    # Two copies of one device database (a restored backup): the same draft finalized differently,
    # and the same finalized sighting revised on both.
    base_ids = make_sightings(env.store, 1, seed=6)
    draft = env.store.save_draft({"block": "C2", "rows": "1-4", "date": "2026-07-02",
                                  "observations": [{"pest": "mealybug", "life_stage": "crawler", "unit": "vines",
                                                    "sampled": 10}]})
    env.store.close()
    copy_path = env.tmp / "copy.db"
    shutil.copy(env.db_path, copy_path)
    env.store = Store(env.db_path)
    other = Store(copy_path)
    try:
        env.store.finalize(draft)
        env.store.revise(base_ids[0], {"notes": "edit on handheld A"})
        make_sightings(env.store, 2, seed=7)
        assert env.sync().ok

        other.save_draft({"block": "C2", "rows": "1-4", "date": "2026-07-02", "notes": "B's content",
                          "observations": [{"pest": "mealybug", "life_stage": "crawler", "unit": "vines",
                                            "sampled": 12}]}, id=draft)
        other.finalize(draft)
        stale = other.revise(base_ids[0], {"notes": "edit on handheld B"})
        fresh = make_sightings(other, 2, seed=8)
        result = env.sync(store=other, batch_size=10)
        assert (result.conflicts, result.failed, result.duplicate, result.sent) == (2, 0, 1, 2)
        states = {r["item_id"]: (r["state"], r["last_error"]) for r in other.outbox_items()}
        assert states[draft][0] == "needs-attention" and "different content" in states[draft][1]
        assert states[stale][0] == "needs-attention" and "current version" in states[stale][1]
        assert all(states[i][0] == "sent" for i in fresh)
        status = outbox_status(other)
        assert {a["item_id"] for a in status.attention} == {draft, stale}
        assert any(draft in m for m in result.messages)
        assert not result.ok

        # "retry" queues them again; the server still refuses, nothing is stored twice
        assert retry_items(other) == 2
        again = env.sync(store=other)
        assert again.conflicts == 2 and again.sent == 0
        assert len(env.server_items()) == 7  # base, A: draft, edit, 2 new; B: 2 new
    finally:
        other.close()


def test_items_the_server_rejects_are_failed_with_its_message(env):
    make_sightings(env.store, 2, seed=9)
    # a newer app's payload with a field this server does not know (the outbox row is genuine:
    # canonical JSON with a matching hash; only the server can say no)
    payload = json.loads(env.device_rows()[0]["payload"])
    payload.update({"id": str(uuid.uuid4()), "soil_moisture": 0.3})
    with sqlite3.connect(env.db_path) as c:
        c.execute("INSERT INTO outbox (item_id, kind, replaces, payload, sha256, state, attempts, created_at,"
                  " updated_at) VALUES (?, 'sighting', NULL, ?, ?, 'queued', 0, 'x', 'x')",
                  (payload["id"], canonical_json(payload), payload_sha256(payload)))
    make_sightings(env.store, 1, seed=10)
    result = env.sync(batch_size=10)
    assert (result.sent, result.failed) == (3, 1)
    bad = [r for r in env.device_rows() if r["item_id"] == payload["id"]][0]
    assert bad["state"] == "failed" and "soil_moisture: unknown field" in bad["last_error"]
    assert payload["id"] not in env.server_items() and len(env.server_items()) == 3

    with FaultProxy(env.srv.port, ["status:400"]) as proxy:
        make_sightings(env.store, 1, seed=11)
        r2 = env.sync(proxy.url)
    assert r2.failed == 1 and "HTTP 400: injected fault" in r2.messages[0]


@pytest.mark.parametrize("revoke", [False, True])
def test_bad_or_revoked_token_stops_the_run_and_keeps_rows_queued(env, revoke):
    make_sightings(env.store, 2, seed=12)
    token = env.token
    if revoke:
        env.sdb.revoke_device("handheld-1")
    else:
        token = "fl_wrong"
    result = env.sync(token=token)
    assert ("403" if revoke else "401") in result.error
    assert {r["state"] for r in env.device_rows()} == {"queued"}
    assert env.server_items() == {}


def test_single_flight_and_recovery_of_interrupted_rows(env):
    make_sightings(env.store, 5, seed=13)
    with sync_lock(env.store):
        with pytest.raises(SyncBusyError):
            env.sync()
        other = Store(env.db_path)  # a second process would see the same lock file
        try:
            with pytest.raises(SyncBusyError):
                env.sync(store=other)
        finally:
            other.close()
    # a killed sync leaves rows 'sending'; the next one sends them again
    with env.store.transaction() as db:
        db.conn.execute("UPDATE outbox SET state = 'sending' WHERE seq <= 2")
    result = env.sync()
    assert result.recovered == 2 and result.sent == 5
    assert_server_matches_device(env)


def test_oversized_item_fails_alone_and_413_halves_the_batch(env):
    ids = make_sightings(env.store, 3, seed=14)
    env.store.save_report(ids[0], text="x" * 300_000, model_pair={}, policy={}, stats={}, provenance=[], spans=[],
                          findings=[])
    make_sightings(env.store, 1, seed=15)
    result = env.sync()
    assert (result.sent, result.failed) == (4, 1)
    assert "too large" in result.messages[0]

    # a server that says 413 to anything above two items: the client halves until it fits
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/health":
            return httpx.Response(200, json={"protocol": 1})
        items = json.loads(request.content)["items"]
        seen.append(len(items))
        if len(items) > 2:
            return httpx.Response(413, json={"message": "too big"})
        return httpx.Response(200, json={"receipts": [
            {"item_id": i["item_id"], "sha256": i["sha256"], "status": "accepted", "server_seq": 1,
             "received_at": "t"} for i in items]})

    store2 = Store(env.tmp / "d2.db")
    make_sightings(store2, 7, seed=16)
    r = sync_once(store2, "http://fake", "t", transport=httpx.MockTransport(handler), batch_size=8, retry=FAST)
    assert r.ok and r.sent == 7 and seen[0] == 7 and max(seen[1:]) <= 2
    store2.close()


def test_receipt_for_another_version_needs_attention(env):
    make_sightings(env.store, 1, seed=17)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/health":
            return httpx.Response(200, json={"protocol": 1})
        (i,) = json.loads(request.content)["items"]
        return httpx.Response(200, json={"receipts": [{"item_id": i["item_id"], "sha256": "f" * 64,
                                                       "status": "duplicate", "server_seq": 9, "received_at": "t"}]})

    r = sync_once(env.store, "http://fake", "t", transport=httpx.MockTransport(handler), retry=FAST)
    assert r.conflicts == 1 and env.device_rows()[0]["state"] == "needs-attention"


@pytest.mark.parametrize("status, outcome", [(404, "stop"), (401, "stop"), (302, "stop"), (418, "failed")])
def test_configuration_errors_stop_the_run_other_4xx_fail_the_items(env, status, outcome):
    make_sightings(env.store, 2, seed=22)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/health":
            return httpx.Response(200, json={"protocol": 1})
        return httpx.Response(status, json={"message": f"nope {status}"}, headers={"Location": "http://elsewhere"})

    r = sync_once(env.store, "http://fake", "t", transport=httpx.MockTransport(handler), retry=FAST)
    states = {row["state"] for row in env.device_rows()}
    errors = {row["last_error"] for row in env.device_rows()}
    assert errors == {f"HTTP {status}: nope {status}"}
    if outcome == "stop":
        assert r.error == f"HTTP {status}: nope {status}" and states == {"queued"} and r.failed == 0
    else:
        assert r.error is None and states == {"failed"} and r.failed == 2


def test_bundle_round_trip_double_import_and_receipts(env, capsys):
    ids = make_sightings(env.store, 6, seed=18)
    env.store.revise(ids[0], {"notes": "second visit"})
    bundle = env.tmp / "card" / "outbox.zip"
    bundle.parent.mkdir()
    db = str(env.db_path)
    assert fieldlog_main(["sync", "export-bundle", str(bundle), "--db", db, "--device", "handheld-1",
                          "--token", env.token]) == 0
    assert {r["state"] for r in env.device_rows()} == {"queued"}  # a bundle is not a receipt

    receipts = env.tmp / "receipts.jsonl"
    where = ["--database-url", env.sdb.engine.url.render_as_string(hide_password=False)] if env.sdb.postgres \
        else ["--db", env.sdb.path]  # the server's database, whichever it is
    assert server_main(["import-bundle", str(bundle), *where, "--receipts", str(receipts)]) == 0
    assert "7 new" in capsys.readouterr().out
    assert env.server_items() == {r["item_id"]: r["sha256"] for r in env.device_rows()}
    assert {r["device"] for r in env.sdb.list_items()} == {"handheld-1"}
    again = import_bundle(env.sdb, bundle)
    assert (again.accepted, again.duplicate, again.conflicts, again.invalid) == (0, 7, [], [])
    assert len(env.server_items()) == 7

    assert fieldlog_main(["sync", "import-receipts", str(receipts), "--db", db, "--token", env.token]) == 0
    assert_server_matches_device(env)
    result = env.sync()  # online later: nothing left to send
    assert result.batches == 0 and result.sent == 0


def test_damaged_bundle_imports_nothing(env):
    make_sightings(env.store, 3, seed=19)
    path = env.tmp / "b.zip"
    export_bundle(env.store, path, token=env.token, device="handheld-1")
    with zipfile.ZipFile(path) as zf:
        manifest, items = zf.read("manifest.json"), zf.read("items.jsonl")
    damaged = env.tmp / "damaged.zip"
    with zipfile.ZipFile(damaged, "w") as zf:
        zf.writestr("manifest.json", manifest)
        zf.writestr("items.jsonl", items.replace(b"T. Test", b"T. Tesx", 1))
    with pytest.raises(BundleError, match="sha256"):
        import_bundle(env.sdb, damaged)
    (env.tmp / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(BundleError, match="not a fieldlog bundle"):
        import_bundle(env.sdb, env.tmp / "junk.zip")
    assert env.server_items() == {}
    # receipts that do not match this device's versions change nothing, even signed by the office
    key = key_from_token(env.token)
    write_receipts([sign_receipt(key, {"item_id": r["item_id"], "sha256": "0" * 64, "status": "accepted",
                                       "server_seq": 1, "received_at": "t"}) for r in env.device_rows()],
                   env.tmp / "r.jsonl")
    out = apply_receipts(env.store, read_receipts(env.tmp / "r.jsonl"), token=env.token)
    assert (out.marked_sent, out.mismatched) == (0, 3)


def test_forged_receipts_mark_nothing_sent(env, capsys):
    make_sightings(env.store, 4, seed=25)
    card = env.tmp / "card.zip"
    export_bundle(env.store, card, token=env.token, device="handheld-1")
    with zipfile.ZipFile(card) as zf:  # everything a forger needs is on the card: ids and hashes
        on_card = [json.loads(line) for line in zf.read("items.jsonl").splitlines()]
    forged = [{"item_id": i["item_id"], "kind": i["kind"], "sha256": i["sha256"], "status": "accepted",
               "server_seq": n, "received_at": "2026-07-21T10:00:00.000Z"} for n, i in enumerate(on_card, 1)]
    other_token = env.sdb.add_device("handheld-2")
    for receipts in (forged,                                                      # unsigned
                     [sign_receipt(key_from_token(other_token), r) for r in forged],  # another device's key
                     [{**sign_receipt(key_from_token(env.token), r), "server_seq": 99} for r in forged]):  # altered
        write_receipts(receipts, env.tmp / "forged.jsonl")
        assert fieldlog_main(["sync", "import-receipts", str(env.tmp / "forged.jsonl"), "--db", str(env.db_path),
                              "--token", env.token]) == 1
        assert "4 receipt(s) are not signed by the office" in capsys.readouterr().err
        assert {r["state"] for r in env.device_rows()} == {"queued"}
    assert fieldlog_main(["sync", "import-receipts", str(env.tmp / "forged.jsonl"), "--db", str(env.db_path)]) == 2
    assert "token" in capsys.readouterr().err
    result = env.sync()  # the items were never at the office: they still go
    assert result.sent == 4
    assert_server_matches_device(env)


def test_cli_sync_prints_counts_and_exit_codes(env, capsys, monkeypatch):
    make_sightings(env.store, 4, seed=20)
    db = str(env.db_path)
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("FIELDLOG_TOKEN", env.token)
    assert fieldlog_main(["sync", "--server", dead, "--db", db, "--timeout", "1", "--retries", "1"]) == 3
    err = capsys.readouterr().err
    assert "unreachable" in err
    assert fieldlog_main(["--db", db, "sync", "--server", env.url]) == 0
    out = capsys.readouterr().out
    assert "sent 4, already present 0, conflicts 0, failed 0" in out
    assert fieldlog_main(["sync", "status", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "sent 4" in out and "last success: 20" in out
    assert fieldlog_main(["sync", "--server", env.url, "--db", str(env.tmp / "typo.db")]) == 1
    assert "no fieldlog database" in capsys.readouterr().err and not (env.tmp / "typo.db").exists()
    monkeypatch.delenv("FIELDLOG_TOKEN")
    assert fieldlog_main(["sync", "--server", env.url, "--db", db]) == 2
    assert "token" in capsys.readouterr().err


def test_sync_when_reachable(env, monkeypatch):
    dead = f"http://127.0.0.1:{free_port()}"
    assert sync_when_reachable(env.store, env.url, env.token) is None  # nothing pending
    make_sightings(env.store, 2, seed=21)
    assert sync_when_reachable(env.store, dead, env.token, probe_timeout=0.5) is None
    assert env.store.outbox_counts()["queued"] == 2
    monkeypatch.setenv("FIELDLOG_SERVER", env.url)
    monkeypatch.setenv("FIELDLOG_TOKEN", env.token)
    result = sync_when_reachable(env.store)
    assert result is not None and result.ok and result.sent == 2


def test_autosync_sends_when_the_server_is_reachable(env):
    """Waits for the result to be delivered (an event), not for the outbox to change: the rows are
    'sent' before on_result runs, and stopping in between must not lose the result."""
    results = []
    delivered = threading.Event()

    def on_result(r):
        results.append(r)
        if sum(getattr(x, "sent", 0) for x in results) >= 3 or isinstance(r, Exception):
            delivered.set()

    auto = AutoSync(env.store, interval=0.05, on_result=on_result, server=env.url, token=env.token,
                    retry=FAST).start()
    try:
        make_sightings(env.store, 3, seed=23)
        auto.trigger()
        assert delivered.wait(timeout=120)  # liveness only: a hang fails, a slow box does not
    finally:
        auto.stop()
    assert results and all(not isinstance(r, Exception) for r in results)
    assert sum(r.sent for r in results) == 3
    assert env.store.outbox_counts()["sent"] == 3
    assert_server_matches_device(env)


def test_autosync_delivers_a_finished_run_even_when_stopped_meanwhile(env, monkeypatch):
    """The race of issue 14 item 10: stop() arrives after the run sent its rows, before on_result."""
    import fieldlog_app.sync.background as client

    finished, release = threading.Event(), threading.Event()
    real = client.sync_when_reachable

    def run_then_wait(*a, **kw):
        result = real(*a, **kw)
        if result is not None:
            finished.set()
            release.wait(60)
        return result

    monkeypatch.setattr(client, "sync_when_reachable", run_then_wait)
    results = []
    auto = AutoSync(env.store, interval=60, on_result=results.append, server=env.url, token=env.token,
                    retry=FAST)
    make_sightings(env.store, 2, seed=25)
    auto.start()
    assert finished.wait(60)
    auto._stop.set()  # what stop() does first; then the run returns
    release.set()
    auto.stop()
    assert [r.sent for r in results] == [2]


def test_app_sync_callback(env, monkeypatch):
    monkeypatch.delenv("FIELDLOG_SERVER", raising=False)
    monkeypatch.delenv("FIELDLOG_TOKEN", raising=False)
    monkeypatch.setenv("FIELDLOG_CONFIG", str(env.tmp / "no-settings.json"))  # not this machine's own settings
    assert app_sync_callback(env.db_path) is None  # not configured: the screen says so
    make_sightings(env.store, 2, seed=24)
    sync_now = app_sync_callback(env.db_path, env.url, env.token, retry=FAST)
    result = sync_now()
    assert result.ok and result.sent == 2
