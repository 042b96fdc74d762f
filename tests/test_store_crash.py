"""SIGKILL a process that is saving, finalizing, revising and storing reports, again and again.

After every kill the database must open cleanly, hold everything the child
reported as committed (it prints an id only after the call returned), with
content hashes intact, and the outbox must hold exactly one frozen row per
finalized version / complete report — no lost and no duplicated sync items.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fieldlog_app.database import Store, payload_sha256, report_payload, sighting_payload

ROOT = Path(__file__).resolve().parent.parent
NOTES = ROOT / "vineyard" / "samples" / "notes.jsonl"
ROUNDS = 15

CHILD = textwrap.dedent(
    """
    import json, random, sys
    from fieldlog_app.database import Store

    seed, path, notes_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    rng = random.Random(seed)
    notes = [json.loads(line) for line in open(notes_path, encoding="utf-8") if line.strip()]
    store = Store(path)
    current = [s["id"] for s in store.list_sightings(status="finalized")]
    print("ready", flush=True)
    n = 0
    while True:
        n += 1
        op = rng.random()
        if op < 0.45 or not current:
            note = dict(rng.choice(notes))
            note["notes"] = f"round {seed} op {n}"
            sid = store.save_draft(note)
            print("D", sid, flush=True)
            if rng.random() < 0.8:
                store.finalize(sid)
                print("F", sid, flush=True)
                current.append(sid)
        elif op < 0.7:
            old = current.pop(rng.randrange(len(current)))
            new = store.revise(old, {"notes": f"revised in round {seed} op {n}"})
            print("R", new, old, flush=True)
            current.append(new)
        else:
            sid = rng.choice(current)
            status = "complete" if rng.random() < 0.8 else "cancelled"
            rid = store.save_report(sid, text=f"report {seed}/{n} " * 20, model_pair={"oracle": "o"},
                                    policy={}, stats={"tokens": n}, provenance=[{"token": i} for i in range(50)],
                                    spans=[], findings=[], status=status)
            print("P", rid, sid, status, flush=True)
    """
)


def _check(path: Path, committed: dict) -> dict:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
    with Store(path) as s:
        sightings = {x["id"]: x for x in s.list_sightings(include_superseded=True, limit=100_000)}
        for sid in committed["D"]:
            assert sid in sightings, f"committed draft {sid} lost"
        for sid in committed["F"]:
            assert sightings[sid]["status"] in ("finalized", "superseded"), sid
        for new, old in committed["R"]:
            assert sightings[new]["replaces"] == old and sightings[old]["status"] == "superseded"
            assert sightings[new]["version"] == sightings[old]["version"] + 1
        reports = {}
        for sid in sightings:
            for r in s.reports_for(sid):
                reports[r["id"]] = r
        for rid, sid, status in committed["P"]:
            assert reports[rid]["sighting_id"] == sid and reports[rid]["status"] == status
        # every finalized version is intact: its stored hash matches its stored content
        for x in sightings.values():
            if x["status"] != "draft":
                assert payload_sha256(sighting_payload(x)) == x["payload_sha256"], x["id"]
        # outbox: exactly one frozen row per finalized version and per complete report of one
        rows = s.outbox_items()
        ids = [r["item_id"] for r in rows]
        assert len(ids) == len(set(ids))
        want_s = {i for i, x in sightings.items() if x["status"] != "draft"}
        want_r = {i for i, r in reports.items() if r["status"] == "complete" and sightings[r["sighting_id"]]["status"] != "draft"}
        assert {r["item_id"] for r in rows if r["kind"] == "sighting"} == want_s
        assert {r["item_id"] for r in rows if r["kind"] == "report"} == want_r
        seq_of = {r["item_id"]: r["seq"] for r in rows}
        for r in rows:
            payload = json.loads(r["payload"])
            assert r["sha256"] == payload_sha256(payload)
            if r["kind"] == "sighting":
                assert payload == sighting_payload(sightings[r["item_id"]])
                if payload["replaces"]:
                    assert seq_of[payload["replaces"]] < r["seq"]  # versions upload in order
            else:
                assert payload == report_payload(reports[r["item_id"]])
                assert seq_of[payload["sighting_id"]] < r["seq"]  # a report after its sighting
        return s.counts()


@pytest.mark.timeout(120)
def test_sigkill_during_saves_loses_nothing_committed(tmp_path):
    db = tmp_path / "crash.db"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    rng = random.Random(20260721)
    committed: dict[str, list] = {"D": [], "F": [], "R": [], "P": []}
    for rnd in range(ROUNDS):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(rnd), str(db), str(NOTES)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
        )
        try:
            first = proc.stdout.readline()
            assert first.strip() == "ready", proc.stderr.read()
            time.sleep(rng.uniform(0.02, 0.3))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            out = proc.stdout.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL
        for line in out.splitlines():  # lines were printed after commit; a torn last line has no newline
            parts = line.split()
            if not out.endswith("\n") and line == out.splitlines()[-1]:
                break
            if parts and parts[0] == "D":
                committed["D"].append(parts[1])
            elif parts and parts[0] == "F":
                committed["F"].append(parts[1])
            elif parts and parts[0] == "R":
                committed["R"].append((parts[1], parts[2]))
            elif parts and parts[0] == "P":
                committed["P"].append((parts[1], parts[2], parts[3]))
        _check(db, committed)
    counts = _check(db, committed)
    # the loop really exercised every kind of write
    assert len(committed["F"]) >= 20 and committed["R"] and committed["P"], {k: len(v) for k, v in committed.items()}
    assert counts["superseded"] >= len(committed["R"])
