"""fieldlog store: migrations, validation, versioned edits, outbox, FTS, exports, import."""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import sqlite3
import threading
from pathlib import Path

import pytest
import sqlite_utils

from fieldlog_app.database import (
    SCHEMA_VERSION,
    NotFoundError,
    StateError,
    Store,
    StoreError,
    ValidationError,
    canonical_json,
    current_version,
    migrate,
    payload_sha256,
    sighting_payload,
)
from fieldlog_app.database.payloads import note_of

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "vineyard" / "samples"


def sample(name: str) -> dict:
    return json.loads((SAMPLES / "notes" / f"{name}.json").read_text())


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "f.db")
    yield s
    s.close()


def finalized(store: Store, note: dict) -> str:
    return store.finalize(store.save_draft(note))


def report_kwargs(**over):
    kw = dict(text="Summary: grape berry moth larvae in 4 of 50 clusters.", model_pair={"oracle": "o", "drafter": "d"},
              policy={"mode": "balanced"}, stats={"tokens": 12, "acceptance_rate": 0.5},
              provenance=[{"token": 1, "start": 0, "end": 8, "source": "drafted", "verified": True}],
              spans=[], findings=[])
    kw.update(over)
    return kw


def outbox(store: Store) -> list[dict]:
    return store.outbox_items()


# ---------------------------------------------------------------------------------------------- migrations
def test_new_database_is_at_latest_schema_with_wal_full_sync_and_foreign_keys(tmp_path):
    path = tmp_path / "sub" / "dir" / "f.db"  # parent folders are created
    with Store(path) as s:
        assert current_version(s.db) == SCHEMA_VERSION == 7
        versions = [r["version"] for r in s.db["_migrations"].rows]
        assert versions == [1, 2, 3, 4, 5, 6, 7]
        assert s.db.journal_mode == "wal"
        assert s.db.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert s.db.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert {"sightings", "observations", "reports", "audit_log", "outbox", "sightings_fts", "reports_fts"} <= set(
            s.db.table_names()
        )
    with Store(path) as s:  # reopening applies nothing
        assert migrate(s.db) == []


def _v1_fixture(path: Path) -> dict:
    """A database as the v1 app left it: base tables only, rows written with plain SQL."""
    db = sqlite_utils.Database(path)
    assert migrate(db, target=1) == [1]
    assert current_version(db) == 1
    assert "outbox" not in db.table_names()
    now = "2026-07-21T10:00:00.000Z"
    fin = {"id": "11111111-1111-4111-8111-111111111111", "status": "finalized", "version": 1, "replaces": None,
           "block": "B4", "variety": "Riesling", "rows": "12-18", "date": "2026-07-21", "scout": "M. Ortiz",
           "notes": "Damage on the wood edge near the hedgerow.", "lat": 42.5, "lon": -76.8, "accuracy_m": 5.0,
           "created_at": now, "updated_at": now, "finalized_at": now}
    obs = [{"sighting_id": fin["id"], "idx": 0, "pest": "grape berry moth", "life_stage": "larva",
            "unit": "clusters", "sampled": 50, "infested": 4}]
    fin_payload = sighting_payload({**fin, "observations": obs})
    fin["payload_sha256"] = payload_sha256(fin_payload)
    fin["content_sha256"] = payload_sha256(note_of({**fin, "observations": obs}))
    draft = {"id": "22222222-2222-4222-8222-222222222222", "status": "draft", "version": 1, "block": "C1",
             "notes": "half done", "created_at": now, "updated_at": now}
    db["sightings"].insert_all([fin, draft], alter=False)
    db["observations"].insert_all(obs + [{"sighting_id": draft["id"], "idx": 0, "pest": "powdery mildew",
                                          "life_stage": "colonies", "unit": "leaves"}])
    rep = {"id": "33333333-3333-4333-8333-333333333333", "sighting_id": fin["id"], "created_at": "2026-07-21T10:05:00.000Z",
           "status": "complete", "text": "Hedgerow edge pressure from berry moth.", "model_pair": "{}", "policy": "{}",
           "stats": '{"tokens": 9}', "provenance": "[]", "spans": "[]", "findings": "[]", "clean": 1,
           "sighting_sha256": fin["content_sha256"]}
    cancelled = {**rep, "id": "44444444-4444-4444-8444-444444444444", "status": "cancelled", "text": "Partial tex"}
    db["reports"].insert_all([rep, cancelled])
    db.close()
    return {"fin": fin, "fin_payload": fin_payload, "draft": draft, "report": rep, "cancelled": cancelled}


def test_migrating_a_v1_database_backfills_outbox_and_search(tmp_path):
    path = tmp_path / "v1.db"
    fx = _v1_fixture(path)
    with Store(path) as s:
        assert current_version(s.db) == SCHEMA_VERSION
        # data survived
        got = s.get_sighting(fx["fin"]["id"])
        assert got["status"] == "finalized" and got["observations"][0]["pest"] == "grape berry moth"
        assert s.get_sighting(fx["draft"]["id"])["status"] == "draft"
        # the outbox got exactly the finalized sighting, then its complete report; not the draft or cancelled report
        rows = outbox(s)
        assert [(r["kind"], r["item_id"]) for r in rows] == [("sighting", fx["fin"]["id"]), ("report", fx["report"]["id"])]
        assert json.loads(rows[0]["payload"]) == fx["fin_payload"]
        assert rows[0]["sha256"] == fx["fin"]["payload_sha256"]
        for r in rows:
            assert r["sha256"] == hashlib.sha256(r["payload"].encode()).hexdigest()
            assert r["state"] == "queued"
        # FTS covers old rows: by notes, by pest (new pests column), by report text, and drafts too
        assert [h["id"] for h in s.search("hedgerow") if h["kind"] == "sighting"] == [fx["fin"]["id"]]
        assert {h["id"] for h in s.search("berry moth")} == {fx["fin"]["id"], fx["report"]["id"]}
        assert [h["id"] for h in s.search("mildew")] == [fx["draft"]["id"]]
        # guards are active on migrated data
        with pytest.raises(sqlite3.IntegrityError, match="immutable"):
            s.db.conn.execute("UPDATE sightings SET notes = 'x' WHERE id = ?", (fx["fin"]["id"],))


def _v2_fixture(path: Path) -> dict:
    """A database as the v2 app left it (no risk_class column): the v1 rows, migrated to v2."""
    fx = _v1_fixture(path)
    db = sqlite_utils.Database(path)
    assert migrate(db, target=2) == [2]
    assert "risk_class" not in db["sightings"].columns_dict
    fx["sightings"] = list(db.query("SELECT * FROM sightings ORDER BY id"))
    fx["outbox"] = list(db.query("SELECT * FROM outbox ORDER BY seq"))
    fx["audit"] = list(db.query("SELECT * FROM audit_log ORDER BY id"))
    db.close()
    return fx


def test_migrating_a_v2_database_adds_risk_class_and_keeps_every_row(tmp_path):
    path = tmp_path / "v2.db"
    fx = _v2_fixture(path)
    with Store(path) as s:
        assert current_version(s.db) == SCHEMA_VERSION
        # existing rows are untouched: same values, plus risk_class NULL (and v7's nothing_found NULL)
        after = list(s.db.query("SELECT * FROM sightings ORDER BY id"))
        assert [{k: v for k, v in r.items() if k not in ("risk_class", "nothing_found")} for r in after] == \
            fx["sightings"]
        assert [r["risk_class"] for r in after] == [None, None]
        assert list(s.db.query("SELECT * FROM outbox ORDER BY seq")) == fx["outbox"]
        assert list(s.db.query("SELECT * FROM audit_log ORDER BY id")) == fx["audit"]
        # an old finalized sighting still hashes as it did (a NULL risk_class is left out of its payload)
        old = s.get_sighting(fx["fin"]["id"])
        assert old["risk_class"] is None and "risk_class" not in sighting_payload(old)
        assert payload_sha256(sighting_payload(old)) == old["payload_sha256"] == fx["fin"]["payload_sha256"]
        # the immutability guard covers the new column
        with pytest.raises(sqlite3.IntegrityError, match="immutable"):
            s.db.conn.execute("UPDATE sightings SET risk_class = 'high' WHERE id = ?", (fx["fin"]["id"],))
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            s.db.conn.execute("UPDATE sightings SET risk_class = 'extreme' WHERE id = ?", (fx["draft"]["id"],))
        # the old rows take a risk class the normal way: a draft in place, a finalized one by revision
        s.save_draft({**note_of(s.get_sighting(fx["draft"]["id"])), "risk_class": "Low"}, id=fx["draft"]["id"])
        assert s.get_sighting(fx["draft"]["id"])["risk_class"] == "low"
        v2 = s.revise(fx["fin"]["id"], {"risk_class": "high"})
        assert s.get_sighting(v2)["risk_class"] == "high" and s.get_sighting(fx["fin"]["id"])["risk_class"] is None
        assert json.loads(outbox(s)[-1]["payload"])["risk_class"] == "high"


def test_the_risk_class_migration_is_one_transaction(tmp_path, monkeypatch):
    """A failure inside v3 leaves the database at v2, without half of v3 (no column, old trigger)."""
    from fieldlog_app.database import migrations

    path = tmp_path / "v2.db"
    _v2_fixture(path)
    monkeypatch.setattr(migrations, "V3_RISK_CLASS_SQL", migrations.V3_RISK_CLASS_SQL + "SELECT no_such_function();\n")
    with pytest.raises(StoreError):
        Store(path)
    db = sqlite_utils.Database(path)
    assert current_version(db) == 2 and "risk_class" not in db["sightings"].columns_dict
    assert db.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'sightings_immutable'").fetchone()[0] == 1
    db.close()
    monkeypatch.undo()
    with Store(path) as s:  # and the next open applies it properly
        assert current_version(s.db) == SCHEMA_VERSION and "risk_class" in s.db["sightings"].columns_dict


def test_a_database_from_a_newer_fieldlog_is_refused(tmp_path):
    path = tmp_path / "f.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO _migrations VALUES (99, 'future', 'now')")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        Store(path)


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path):
    p = tmp_path / "junk.db"
    p.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable fieldlog database"):
        Store(p)
    with pytest.raises(StoreError, match="directory"):
        Store(tmp_path)


# ---------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "sighting, field",
    [
        ({"date": "2026-02-30"}, "date"),
        ({"time": "25:99"}, "time"),
        ({"lat": 91, "lon": 0}, "lat"),
        ({"lat": 42.0}, "lon"),
        ({"observations": [{"pest": "x", "sampled": "ten"}]}, "observations[0].sampled"),
        ({"observations": [{"sampled": 10, "infested": 11}]}, "observations[0].infested"),
        ({"observations": [{"severity_pct": 120}]}, "observations[0].severity_pct"),
        ({"observations": [{"count": -1}]}, "observations[0].count"),
        ({"observations": [{"pests": "typo"}]}, "observations[0].pests"),
        ({"observations": "mites"}, "observations"),
        ({"blok": "B4"}, "blok"),
        ({"notes": "x" * 10_001}, "notes"),
        ({"block": ["B4"]}, "block"),
        ({"risk_class": "extreme"}, "risk_class"),
        ({"risk_class": True}, "risk_class"),
    ],
)
def test_draft_typed_fields_must_be_valid_and_errors_name_the_field(store, sighting, field):
    with pytest.raises(ValidationError) as ei:
        store.save_draft(sighting)
    assert ei.value.field == field
    assert str(ei.value).startswith(field + ":")
    assert store.counts()["draft"] == 0  # nothing written


def test_risk_class_is_optional_case_insensitive_and_stored_lower_case(store):
    from vineyard.fieldnote import RISK_CLASSES

    note = sample("b4-berry-moth")
    assert "risk_class" not in note
    ids = {}
    for given, stored in [(" High ", "high"), ("INTERMEDIATE", "intermediate"), ("low", "low"), ("", None), (None, None)]:
        sid = store.save_draft({**note, "risk_class": given})
        assert store.get_sighting(sid)["risk_class"] == stored, given
        ids[given] = sid
    sid = store.finalize(ids[" High "])
    s = store.get_sighting(sid)
    payload = sighting_payload(s)
    assert payload["risk_class"] == "high" and note_of(s)["risk_class"] == "high"
    assert json.loads(outbox(store)[0]["payload"]) == payload
    assert payload_sha256(payload) == s["payload_sha256"]
    # not set: left out of the note (so notes without it hash as before), not sent as null
    assert "risk_class" not in note_of(store.get_sighting(ids[""]))
    # a different risk class is different content: same note otherwise, but not a duplicate
    assert s["content_sha256"] != payload_sha256(note_of(store.get_sighting(ids["low"])))
    with pytest.raises(ValidationError) as ei:
        store.save_draft({**note, "risk_class": "very high"})
    assert ei.value.field == "risk_class"
    assert str(ei.value) == "risk_class: 'very high' is not one of " + ", ".join(RISK_CLASSES)
    with pytest.raises(ValidationError, match="risk_class"):
        store.revise(sid, {"risk_class": "medium"})
    v2 = store.revise(sid, {"risk_class": None})  # clearing it is an edit like any other
    assert store.get_sighting(v2)["risk_class"] is None and store.get_sighting(v2)["version"] == 2


def test_validation_error_is_also_a_fieldnote_error():
    from vineyard import FieldNoteError

    assert issubclass(ValidationError, FieldNoteError) and issubclass(ValidationError, StoreError)


def test_incomplete_draft_saves_but_cannot_finalize(store):
    sid = store.save_draft({"block": "B4", "observations": [{"pest": "grape berry moth", "sampled": 50}]})
    s = store.get_sighting(sid)
    assert s["status"] == "draft" and s["rows"] is None and s["observations"][0]["sampled"] == 50
    with pytest.raises(ValidationError) as ei:
        store.finalize(sid)
    assert ei.value.field == "rows"
    assert store.get_sighting(sid)["status"] == "draft"
    assert outbox(store) == []
    # fill in the rest, finalize works
    note = {**sample("b4-berry-moth"), "id": sid}
    store.save_draft(note)
    assert store.finalize(sid) == sid
    with pytest.raises(ValidationError) as ei:
        store.finalize(store.save_draft({**sample("a1-short"), "rows": "9-2"}))
    assert ei.value.field == "rows" and "runs backwards" in str(ei.value)


def test_a_nothing_found_walk_is_finalized_queued_and_found_again(store):
    """ "observations": [] is a record of its own (issue 15): stored, synced and listed, no fake pest."""
    note = {**sample("a1-short"), "observations": [], "notes": "walked all rows, nothing found"}
    sid = finalized(store, note)
    s = store.get_sighting(sid)
    assert s["status"] == "finalized" and s["observations"] == []
    [item] = [i for i in outbox(store) if i["item_id"] == sid]
    assert json.loads(item["payload"])["observations"] == []
    assert [x["id"] for x in store.list_sightings(block="A1")] == [sid]
    assert store.search("nothing")[0]["id"] == sid
    # the same walk imported from a file is the same content: skipped, not a second row
    f = Path(store.path).with_name("walk.jsonl")
    f.write_text(json.dumps(note) + "\n" + json.dumps({**note, "date": "2026-06-12"}) + "\n")
    res = store.import_notes(f)
    assert (res.imported, res.skipped, res.errors) == (1, 1, [])
    assert store.get_sighting(res.ids[0])["observations"] == []


def test_save_draft_updates_in_place_and_audits(store):
    sid = store.save_draft({"block": "B4"})
    assert store.save_draft({"block": "B4", "rows": "1-4", "notes": "first pass"}, id=sid) == sid
    assert store.save_draft({"block": "B4", "rows": "1-4", "notes": "first pass"}, id=sid) == sid  # no-op
    s = store.get_sighting(sid)
    assert (s["rows"], s["notes"]) == ("1-4", "first pass")
    actions = [a["action"] for a in store.audit_log(sid)]
    assert actions == ["create_draft", "update_draft"]
    assert store.audit_log(sid)[1]["detail"]["changed"]["rows"] == [None, "1-4"]
    # a dict from get_sighting can be saved back (store fields are ignored, its id is used)
    s["notes"] = "second pass"
    assert store.save_draft(s) == sid
    assert store.get_sighting(sid)["notes"] == "second pass"
    with pytest.raises(ValidationError, match="not a UUID"):
        store.save_draft({"block": "B4"}, id="not-a-uuid")


def test_the_nothing_found_choice_is_kept_with_a_draft(store):
    """A draft saved with "Nothing found" and no observation has nothing else to show the choice by."""
    note = {"block": "B4", "rows": "1-40", "date": "2026-07-21", "observations": []}
    sid = store.save_draft({**note, "nothing_found": True})
    s = store.get_sighting(sid)
    assert s["nothing_found"] is True and s["observations"] == []
    assert [x["nothing_found"] for x in store.list_sightings(status="draft")] == [True]
    assert store.save_draft(s) == sid and store.get_sighting(sid)["nothing_found"] is True  # saved back as it was
    assert [a["action"] for a in store.audit_log(sid)] == ["create_draft"]  # nothing changed: no entry
    # unticked and saved again: cleared, and the choice alone is a change the audit log names
    store.save_draft({**note, "nothing_found": False}, id=sid)
    assert store.get_sighting(sid)["nothing_found"] is False
    assert store.audit_log(sid)[-1]["detail"]["changed"] == {"nothing_found": [True, False]}
    # a caller that does not say leaves it unsaid (None): the form then derives it from the observations
    store.save_draft(note, id=sid)
    assert store.get_sighting(sid)["nothing_found"] is None
    assert store.get_sighting(store.save_draft(note))["nothing_found"] is None
    # rows scouted at 0 go with it; a find contradicts it, and a flag is a flag
    scouted = {"pest": "grape berry moth", "life_stage": "larva", "unit": "clusters", "sampled": 50, "infested": 0}
    store.save_draft({**note, "observations": [scouted], "nothing_found": True}, id=sid)
    assert store.get_sighting(sid)["nothing_found"] is True
    with pytest.raises(ValidationError, match=r"observations\[0\]\.infested: must be 0 when nothing_found"):
        store.save_draft({**note, "observations": [{**scouted, "infested": 3}], "nothing_found": True}, id=sid)
    for bad in ("yes", 2, 1.0, []):
        with pytest.raises(ValidationError, match="nothing_found: expected true or false"):
            store.save_draft({**note, "nothing_found": bad}, id=sid)
    assert store.get_sighting(sid)["observations"][0]["infested"] == 0  # nothing half-written
    # finalized, the upload is the field note as before: no flag in the payload, the same hash
    store.save_draft({**note, "nothing_found": True}, id=sid)
    store.finalize(sid)
    [item] = outbox(store)
    payload = json.loads(item["payload"])
    assert "nothing_found" not in payload and payload["observations"] == []
    plain = finalized(store, {**note, "date": "2026-07-22"})
    plain_payload = json.loads(outbox(store)[-1]["payload"])
    assert {k: v for k, v in payload.items() if k not in ("id", "created_at", "finalized_at", "date")} == \
        {k: v for k, v in plain_payload.items() if k not in ("id", "created_at", "finalized_at", "date")}
    assert store.get_sighting(plain)["content_sha256"] == payload_sha256(note_of({**note, "date": "2026-07-22"}))
    # a revision is finalized: its nothing-found is what its observations say, not a choice to set
    with pytest.raises(ValidationError, match="nothing_found: cannot be changed by a revision"):
        store.revise(sid, {"nothing_found": False})


def _v6_fixture(path: Path) -> dict:
    """A database as the v6 app left it (no nothing_found column): the v1 rows plus a draft with no
    observation, migrated to v6."""
    fx = _v1_fixture(path)
    db = sqlite_utils.Database(path)
    assert migrate(db, target=6) == [2, 3, 4, 5, 6]
    assert "nothing_found" not in db["sightings"].columns_dict
    now = "2026-07-22T09:00:00.000Z"
    fx["empty_draft"] = {"id": "66666666-6666-4666-8666-666666666666", "status": "draft", "version": 1,
                         "block": "B4", "rows": "1-40", "date": "2026-07-22", "created_at": now, "updated_at": now}
    with db.conn:
        db["sightings"].insert(fx["empty_draft"])
    fx["sightings"] = list(db.query("SELECT * FROM sightings ORDER BY id"))
    fx["observations"] = list(db.query("SELECT * FROM observations ORDER BY id"))
    fx["outbox"] = list(db.query("SELECT * FROM outbox ORDER BY seq"))
    fx["audit"] = list(db.query("SELECT * FROM audit_log ORDER BY id"))
    db.close()
    return fx


def test_v7_adds_nothing_found_to_a_v6_database_and_keeps_every_row(tmp_path):
    path = tmp_path / "v6.db"
    fx = _v6_fixture(path)
    with Store(path) as s:
        assert current_version(s.db) == SCHEMA_VERSION == 7
        assert s.db.conn.execute("PRAGMA user_version").fetchone()[0] == 7
        # every row as it was, plus nothing_found NULL: not said (the form derives it as before)
        after = list(s.db.query("SELECT * FROM sightings ORDER BY id"))
        assert [{k: v for k, v in r.items() if k != "nothing_found"} for r in after] == fx["sightings"]
        assert [r["nothing_found"] for r in after] == [None, None, None]
        assert list(s.db.query("SELECT * FROM observations ORDER BY id")) == fx["observations"]
        assert list(s.db.query("SELECT * FROM outbox ORDER BY seq")) == fx["outbox"]
        assert list(s.db.query("SELECT * FROM audit_log ORDER BY id")) == fx["audit"]
        old = s.get_sighting(fx["fin"]["id"])
        assert old["nothing_found"] is None and "nothing_found" not in sighting_payload(old)
        assert payload_sha256(sighting_payload(old)) == old["payload_sha256"] == fx["fin"]["payload_sha256"]
        # an old draft takes the choice the normal way, and keeps it
        draft = s.get_sighting(fx["empty_draft"]["id"])
        assert draft["nothing_found"] is None and draft["observations"] == []
        s.save_draft({**draft, "nothing_found": True})
        assert s.get_sighting(draft["id"])["nothing_found"] is True
    with Store(path) as s:  # reopening applies nothing
        assert migrate(s.db) == []
        assert s.get_sighting(fx["empty_draft"]["id"])["nothing_found"] is True
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):  # hand-run SQL: 0, 1 or NULL only
            s.db.conn.execute("UPDATE sightings SET nothing_found = 2 WHERE id = ?", (fx["draft"]["id"],))


def test_the_nothing_found_migration_is_one_transaction(tmp_path, monkeypatch):
    """A failure inside v7 leaves the database at v6, without the column; the next open applies it."""
    from fieldlog_app.database import migrations

    path = tmp_path / "v6.db"
    _v6_fixture(path)
    monkeypatch.setattr(migrations, "V7_NOTHING_FOUND_SQL",
                        migrations.V7_NOTHING_FOUND_SQL + "SELECT no_such_function();\n")
    with pytest.raises(StoreError):
        Store(path)
    db = sqlite_utils.Database(path)
    assert current_version(db) == 6 and "nothing_found" not in db["sightings"].columns_dict
    db.close()
    monkeypatch.undo()
    with Store(path) as s:
        assert current_version(s.db) == SCHEMA_VERSION and "nothing_found" in s.db["sightings"].columns_dict


# ---------------------------------------------------------------------------------------------- finalize / revise
def test_finalize_freezes_the_sighting_and_queues_it_once(store):
    sid = store.save_draft(sample("d3-mixed"))
    assert store.finalize(sid) == sid
    assert store.finalize(sid) == sid  # idempotent: a double tap queues nothing twice
    s = store.get_sighting(sid)
    assert s["status"] == "finalized" and s["finalized_at"] and len(s["observations"]) == 3
    rows = outbox(store)
    assert len(rows) == 1 and rows[0]["item_id"] == sid and rows[0]["kind"] == "sighting"
    payload = json.loads(rows[0]["payload"])
    assert rows[0]["payload"] == canonical_json(payload)
    assert rows[0]["sha256"] == payload_sha256(payload) == s["payload_sha256"]
    assert payload["observations"][2]["pest"] == "botrytis" and payload["version"] == 1 and payload["replaces"] is None
    with pytest.raises(StateError, match="revise"):
        store.save_draft({"block": "Z9"}, id=sid)
    with pytest.raises(StateError):
        store.delete_draft(sid)
    # even raw SQL cannot edit what was finalized or queued
    conn = store.db.conn
    for sql in (
        "UPDATE sightings SET block = 'Z9' WHERE id = ?",
        "UPDATE sightings SET status = 'draft' WHERE id = ?",
        "DELETE FROM sightings WHERE id = ?",
        "UPDATE observations SET sampled = 1 WHERE sighting_id = ?",
        "DELETE FROM observations WHERE sighting_id = ?",
        "UPDATE outbox SET payload = '{}' WHERE item_id = ?",
    ):
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(sql, (sid,))
    conn.rollback()
    assert store.get_sighting(sid)["block"] == "D3"
    # the sync code may move outbox state
    conn.execute("UPDATE outbox SET state = 'sent', attempts = 1 WHERE item_id = ?", (sid,))
    conn.commit()
    assert store.outbox_counts()["sent"] == 1


def test_revise_makes_a_new_version_and_keeps_the_old_one(store):
    v1 = finalized(store, sample("b4-berry-moth"))
    before = store.get_sighting(v1)
    obs = copy.deepcopy(before["observations"])
    obs[0]["infested"] = 6
    v2 = store.revise(v1, {"observations": obs, "notes": "Recount: 6 of 50."})
    assert v2 != v1
    new, old = store.get_sighting(v2), store.get_sighting(v1)
    assert (new["version"], new["replaces"], new["status"]) == (2, v1, "finalized")
    assert new["observations"][0]["infested"] == 6 and new["notes"] == "Recount: 6 of 50."
    assert new["variety"] == "Riesling"  # untouched fields carried over
    assert old["status"] == "superseded" and old["superseded_by"] == v2
    assert old["observations"][0]["infested"] == 4 and old["payload_sha256"] == before["payload_sha256"]
    # outbox: v1 then v2 naming it
    rows = outbox(store)
    assert [(r["item_id"], r["replaces"]) for r in rows] == [(v1, None), (v2, v1)]
    assert json.loads(rows[1]["payload"])["replaces"] == v1
    # audit
    assert [a["action"] for a in store.audit_log(v1)] == ["create_draft", "finalize", "supersede"]
    rev = store.audit_log(v2)[-1]
    assert rev["action"] == "revise" and set(rev["detail"]["changed"]) == {"notes", "observations"}
    # history, third version, and the rules
    with pytest.raises(StateError, match=v2):
        store.revise(v1, {"notes": "stale edit"})
    assert store.revise(v2, {"notes": "Recount: 6 of 50."}) == v2  # nothing changed → no new version
    v3 = store.revise(v2, {"weather": None})  # None clears a field
    assert store.get_sighting(v3)["weather"] is None
    assert [v["id"] for v in store.versions(v2)] == [v1, v2, v3]
    assert [v["version"] for v in store.versions(v1)] == [1, 2, 3]
    with pytest.raises(ValidationError) as ei:
        store.revise(v3, {"observations": [{"pest": "x", "life_stage": "y", "unit": "z", "sampled": 0}]})
    assert ei.value.field == "observations[0].sampled"
    with pytest.raises(ValidationError, match="status"):
        store.revise(v3, {"status": "draft"})
    assert store.get_sighting(v3)["status"] == "finalized" and len(outbox(store)) == 3
    draft = store.save_draft({"block": "A1"})
    with pytest.raises(StateError, match="draft"):
        store.revise(draft, {"rows": "1"})
    with pytest.raises(NotFoundError):
        store.revise("5f0c5d7e-0000-4000-8000-000000000000", {"rows": "1"})


def test_list_hides_superseded_versions_unless_asked(store):
    v1 = finalized(store, sample("c1-mildew"))
    v2 = store.revise(v1, {"notes": "more colonies"})
    assert [s["id"] for s in store.list_sightings()] == [v2]
    assert {s["id"] for s in store.list_sightings(include_superseded=True)} == {v1, v2}
    assert [s["id"] for s in store.list_sightings(status="superseded")] == [v1]


def test_delete_draft_removes_it_but_the_audit_log_keeps_its_content(store):
    sid = store.save_draft({"block": "E5", "notes": "lanternfly egg masses?"})
    rid = store.save_report(sid, **report_kwargs())
    store.delete_draft(sid)
    with pytest.raises(NotFoundError):
        store.get_sighting(sid)
    with pytest.raises(NotFoundError):
        store.get_report(rid)
    entry = store.audit_log(sid)[-1]
    assert entry["action"] == "delete_draft" and entry["detail"]["content"]["notes"] == "lanternfly egg masses?"
    assert entry["detail"]["reports"] == [rid]
    assert store.search("lanternfly") == []
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.db.conn.execute("DELETE FROM audit_log")


# ---------------------------------------------------------------------------------------------- reports
def test_reports_are_stored_decoded_and_queued_only_when_complete(store):
    sid = finalized(store, sample("b4-berry-moth"))
    rid = store.save_report(sid, **report_kwargs(findings=[{"kind": "number", "message": "8% not in note"}]))
    r = store.get_report(rid)
    assert r["sighting_id"] == sid and r["stats"]["tokens"] == 12 and r["provenance"][0]["source"] == "drafted"
    assert r["clean"] is False and r["status"] == "complete"
    cid = store.save_report(sid, **report_kwargs(text="Partial"), status="cancelled")
    assert store.get_report(cid)["clean"] is True
    assert [x["id"] for x in store.reports_for(sid)] == [cid, rid]
    assert store.get_sighting(sid)["latest_report_id"] == rid  # the latest *complete* one
    rows = outbox(store)
    assert [(x["kind"], x["item_id"]) for x in rows] == [("sighting", sid), ("report", rid)]
    payload = json.loads(rows[1]["payload"])
    assert payload["sighting_id"] == sid and payload["clean"] is False and payload["findings"][0]["kind"] == "number"
    listed = store.list_reports(sighting_id=sid)
    assert [x["id"] for x in listed] == [cid, rid] and "provenance" not in listed[0] and listed[0]["block"] == "B4"
    assert [x["id"] for x in store.list_reports(status="complete")] == [rid]
    with pytest.raises(sqlite3.IntegrityError, match="immutable"):
        store.db.conn.execute("UPDATE reports SET text = 'x' WHERE id = ?", (rid,))


@pytest.mark.parametrize(
    "over, field",
    [({"stats": {"x": float("nan")}}, "stats.x"), ({"spans": "none"}, "spans"), ({"text": None}, "text"),
     ({"status": "done"}, "status"), ({"model_pair": {1: "a"}}, "model_pair")],
)
def test_bad_report_values_are_validation_errors(store, over, field):
    sid = finalized(store, sample("a1-short"))
    kw = report_kwargs()
    status = over.pop("status", "complete")
    kw.update(over)
    with pytest.raises(ValidationError) as ei:
        store.save_report(sid, status=status, **kw)
    assert ei.value.field == field
    assert store.reports_for(sid) == []


def test_report_of_a_draft_is_queued_when_that_exact_draft_is_finalized(store):
    a = store.save_draft(sample("g2-mealybug"))
    ra = store.save_report(a, **report_kwargs(text="Mealybug report"))
    b = store.save_draft(sample("h7-phylloxera"))
    rb = store.save_report(b, **report_kwargs(text="Phylloxera report"))
    store.save_draft({**sample("h7-phylloxera"), "notes": "changed after the report"}, id=b)
    assert outbox(store) == []
    store.finalize(a)
    store.finalize(b)
    kinds = [(r["kind"], r["item_id"]) for r in outbox(store)]
    assert kinds == [("sighting", a), ("report", ra), ("sighting", b)]  # rb described other content: not sent
    assert store.get_report(rb)["text"] == "Phylloxera report"  # but kept on the device


# ---------------------------------------------------------------------------------------------- search
def test_search_finds_notes_pests_and_report_text_and_follows_revisions(store):
    b4 = finalized(store, sample("b4-berry-moth"))
    d3 = finalized(store, sample("d3-mixed"))
    rid = store.save_report(d3, **report_kwargs(text="Consider a miticide on the dusty headlands."))
    hits = store.search("tree line")  # notes
    assert [(h["kind"], h["id"]) for h in hits] == [("sighting", b4)]
    assert "«tree» «line»" in hits[0]["snippet"]
    assert {h["id"] for h in store.search("Japanese beetle")} == {d3}  # pest of the 2nd observation
    assert {h["id"] for h in store.search("beetles")} == {d3}  # stemming
    assert [(h["kind"], h["id"], h["sighting_id"]) for h in store.search("miticide")] == [("report", rid, d3)]
    assert store.search("Riesl")[0]["id"] == b4  # prefix
    # a revise: the superseded version drops out, the new text is found
    b4v2 = store.revise(b4, {"notes": "Damage mostly by the hedgerow."})
    assert store.search("tree line") == []
    old = store.search("tree line", include_superseded=True)
    assert [(h["id"], h["status"]) for h in old] == [(b4, "superseded")]
    assert [h["id"] for h in store.search("hedgerow")] == [b4v2]
    # reports of a superseded version drop out too
    d3v2 = store.revise(d3, {"weather": "rain at last"})
    assert store.search("miticide") == []
    assert [h["id"] for h in store.search("rain")] == [d3v2]
    # user input is never FTS syntax
    for q in ['"unbalanced', "NOT", "a OR", "col:val", "(", "*", "- -", ""]:
        assert isinstance(store.search(q), list)
    assert [s["id"] for s in store.list_sightings(query="hedgerow")] == [b4v2]


def test_list_filters(store):
    ids = {name: finalized(store, sample(name)) for name in ("b4-berry-moth", "b4-clean", "c1-mildew", "f1-downy", "d3-mixed")}
    draft = store.save_draft({"block": "b4", "date": "2026-09-01"})
    assert {s["id"] for s in store.list_sightings(block="b4")} == {ids["b4-berry-moth"], ids["b4-clean"], draft}
    assert {s["id"] for s in store.list_sightings(pest="MILDEW")} == {ids["c1-mildew"], ids["f1-downy"]}
    assert {s["id"] for s in store.list_sightings(pest="50%_")} == set()  # LIKE wildcards are literal
    dates = [s["date"] for s in store.list_sightings(date_from="2026-07-01", date_to="2026-07-31")]
    assert dates == sorted(dates, reverse=True) and all("2026-07-01" <= d <= "2026-07-31" for d in dates) and dates
    assert [s["id"] for s in store.list_sightings(status="draft")] == [draft]
    assert len(store.list_sightings(limit=2)) == 2
    with pytest.raises(ValidationError, match="date_from"):
        store.list_sightings(date_from="July")
    with pytest.raises(ValidationError, match="status"):
        store.list_sightings(status="deleted")


# ---------------------------------------------------------------------------------------------- export
@pytest.fixture
def exported_store(store):
    ids = {name: finalized(store, sample(name)) for name in ("b4-berry-moth", "d3-mixed", "a1-short")}
    rid = store.save_report(ids["d3-mixed"], **report_kwargs())
    store.save_draft({"block": "Q1", "lat": 1.0, "lon": 2.0})  # drafts are not exported by default
    return store, ids, rid


def test_csv_export_has_one_row_per_observation_and_parses_back(exported_store):
    store, ids, rid = exported_store
    buf = io.StringIO()
    n = store.export("csv", buf)
    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert n == len(rows) == 1 + 3 + 1
    d3 = [r for r in rows if r["sighting_id"] == ids["d3-mixed"]]
    assert [r["pest"] for r in d3] == ["spider mites", "Japanese beetle", "botrytis"]
    assert all(r["block"] == "D3" and r["latest_report_id"] == rid for r in d3)
    assert d3[0]["count"] == "85" and d3[2]["severity_pct"] == "1.0" and d3[0]["severity_pct"] == ""
    assert d3[1]["observation"] == "2"
    b4 = [r for r in rows if r["sighting_id"] == ids["b4-berry-moth"]][0]
    assert (float(b4["lat"]), float(b4["lon"])) == (42.5461, -76.8662)
    assert b4["notes"] == sample("b4-berry-moth")["notes"]


def test_exports_include_risk_class(store, tmp_path):
    with_risk = finalized(store, {**sample("b4-berry-moth"), "risk_class": "High"})
    without = finalized(store, sample("d3-mixed"))
    buf = io.StringIO()
    store.export("csv", buf)
    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert "risk_class" in rows[0]
    assert {r["risk_class"] for r in rows if r["sighting_id"] == with_risk} == {"high"}
    assert {r["risk_class"] for r in rows if r["sighting_id"] == without} == {""}
    out = tmp_path / "out.geojson"
    store.export("geojson", out)
    (f,) = [f for f in json.loads(out.read_text())["features"] if f["id"] == with_risk]
    assert f["properties"]["risk_class"] == "high"
    buf = io.StringIO()
    store.export("jsonl", buf)
    by_id = {x["id"]: x for x in map(json.loads, buf.getvalue().splitlines())}
    assert by_id[with_risk]["risk_class"] == "high" and by_id[without]["risk_class"] is None
    # the export imports back with its risk class (and is recognised as already in this log)
    back = tmp_path / "back.jsonl"
    back.write_text(buf.getvalue())
    assert store.import_notes(back).skipped == 2
    with Store(tmp_path / "other.db") as other:
        res = other.import_notes(back)
        assert (res.imported, res.errors) == (2, [])
        assert {s["block"]: s["risk_class"] for s in other.list_sightings()} == {"B4": "high", "D3": None}


def test_csv_export_defuses_spreadsheet_formulas(store):
    """Free text that a spreadsheet would evaluate (=, +, -, @) is exported with a leading quote."""
    note = sample("b4-berry-moth")
    note["notes"] = '=HYPERLINK("http://evil.example","click")'
    note["scout"] = "@admin"
    sid = finalized(store, note)
    buf = io.StringIO()
    store.export("csv", buf)
    row = [r for r in csv.DictReader(io.StringIO(buf.getvalue())) if r["sighting_id"] == sid][0]
    assert row["notes"] == "'" + note["notes"] and row["scout"] == "'@admin"
    assert row["block"] == "B4" and row["sampled"] == "50"  # ordinary cells untouched


def test_geojson_export_has_points_lon_lat_for_sightings_with_coordinates(exported_store, tmp_path):
    store, ids, _ = exported_store
    out = tmp_path / "out.geojson"
    assert store.export("geojson", out) == 1
    gj = json.loads(out.read_text())
    assert gj["type"] == "FeatureCollection" and len(gj["features"]) == 1
    f = gj["features"][0]
    b4 = sample("b4-berry-moth")
    assert f["geometry"] == {"type": "Point", "coordinates": [b4["lon"], b4["lat"]]}
    assert f["properties"]["id"] == ids["b4-berry-moth"] and f["properties"]["pests"] == "grape berry moth"
    assert f["properties"]["observations"][0]["infested"] == 4
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.geojson")]  # no temp file left


def test_jsonl_export_round_trips_and_names_the_latest_report(exported_store, tmp_path):
    store, ids, rid = exported_store
    buf = io.StringIO()
    assert store.export("jsonl", buf) == 3
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    by_id = {x["id"]: x for x in lines}
    assert set(by_id) == set(ids.values())
    assert by_id[ids["d3-mixed"]]["latest_report_id"] == rid
    assert by_id[ids["a1-short"]]["latest_report_id"] is None
    assert len(by_id[ids["d3-mixed"]]["observations"]) == 3
    # an export line imports back as the same note (store fields ignored), and is recognised as already there
    path = tmp_path / "back.jsonl"
    path.write_text(buf.getvalue())
    res = store.import_notes(path)
    assert (res.imported, res.skipped, res.errors) == (0, 3, [])
    with Store(tmp_path / "other.db") as other:
        res = other.import_notes(path)
        assert (res.imported, res.errors) == (3, [])
        assert {s["block"] for s in other.list_sightings()} == {"B4", "D3", "A1"}
    assert store.export("jsonl", io.StringIO(), include_drafts=True) == 4
    with pytest.raises(ValidationError, match="format"):
        store.export("xml", io.StringIO())


# ---------------------------------------------------------------------------------------------- import
def test_import_reports_bad_lines_and_keeps_the_good_ones(store, tmp_path):
    good = (SAMPLES / "notes.jsonl").read_text().splitlines()
    bad_num = json.dumps({**sample("a1-short"), "observations": [{**sample("a1-short")["observations"][0], "sampled": "x"}]})
    lines = ["\ufeff" + good[0], "", "{not json", good[1], '["a list"]', bad_num]  # lines 1-6
    path = tmp_path / "notes.jsonl"
    # line 7 is not UTF-8; lines 8-9 are good again
    path.write_bytes("\n".join(lines).encode() + b"\n\xff\xfe\n" + "\n".join(good[2:4]).encode())
    res = store.import_notes(path)
    assert res.imported == 4 and len(res.ids) == 4
    assert [ln for ln, _ in res.errors] == [3, 5, 6, 7]
    msgs = dict(res.errors)
    assert "not valid JSON" in msgs[3] and "object" in msgs[5]
    assert msgs[6].startswith("observations[0].sampled:") and msgs[7] == "not UTF-8 text"
    assert store.counts()["finalized"] == 4 and len(outbox(store)) == 4
    assert store.audit_log(res.ids[0])[-1]["action"] == "import"
    again = store.import_notes(path)
    assert (again.imported, again.skipped) == (0, 4)
    with pytest.raises(StoreError, match="no such file"):
        store.import_notes(tmp_path / "missing.jsonl")


def test_hostile_numbers_and_nesting_fail_their_own_line_only(store, tmp_path):
    good = (SAMPLES / "notes.jsonl").read_text().splitlines()
    obs = sample("a1-short")["observations"][0]

    def with_sampled(raw: str) -> str:
        return json.dumps({**sample("a1-short"), "observations": [{**obs, "sampled": 0}]}).replace(
            '"sampled": 0', f'"sampled": {raw}')

    lines = [
        good[0],
        with_sampled("NaN"),                             # 2: Python's json accepts it, JSON does not
        with_sampled("Infinity"),                        # 3
        with_sampled("1e400"),                           # 4: valid syntax, no finite double
        with_sampled(str(2**63)),                        # 5: overflows a SQLite integer
        with_sampled(str(10**20)),                       # 6
        '{"a": ' * 5000 + "1" + "}" * 5000,              # 7: RecursionError in the parser
        json.dumps({**sample("a1-short"), "lat": 1.0, "lon": 2.0}).replace('"lat": 1.0', '"lat": NaN'),  # 8
        good[1],
    ]
    path = tmp_path / "hostile.jsonl"
    path.write_text("\n".join(lines) + "\n")
    res = store.import_notes(path)
    assert res.imported == 2 and store.counts()["finalized"] == 2 and len(outbox(store)) == 2
    assert [ln for ln, _ in res.errors] == [2, 3, 4, 5, 6, 7, 8]
    msgs = dict(res.errors)
    assert all("not valid JSON" in msgs[n] for n in (2, 3, 4, 7))
    assert msgs[5].startswith("observations[0].sampled:") and msgs[6].startswith("observations[0].sampled:")
    assert "nested too deeply" in msgs[7] and "not valid JSON" in msgs[8]


@pytest.mark.parametrize("obs, field", [
    ({"sampled": 10**20}, "observations[0].sampled"),
    ({"sampled": 10, "count": 2**63}, "observations[0].count"),
    ({"sampled": float("nan")}, "observations[0].sampled"),
    ({"severity_pct": float("nan")}, "observations[0].severity_pct"),
    ({"sampled": float("inf")}, "observations[0].sampled"),
])
def test_non_finite_and_out_of_range_numbers_are_validation_errors(store, obs, field):
    with pytest.raises(ValidationError) as e:
        store.save_draft({"block": "B4", "observations": [{"pest": "grape berry moth", **obs}]})
    assert e.value.field == field
    for bad in ({"accuracy_m": float("inf"), "lat": 1.0, "lon": 2.0}, {"lat": float("nan"), "lon": 2.0},
                {"block": float("nan")}, {"block": 10**5000}):
        with pytest.raises(ValidationError):
            store.save_draft(bad)
    assert store.counts()["draft"] == 0


# ---------------------------------------------------------------------------------------------- misc
def test_canonical_json_is_deterministic_and_strict():
    a = {"b": 1, "a": [1.5, "é"], "c": None}
    assert canonical_json(a) == '{"a":[1.5,"é"],"b":1,"c":null}'
    assert canonical_json(dict(reversed(list(a.items())))) == canonical_json(a)
    assert payload_sha256(a) == hashlib.sha256(canonical_json(a).encode()).hexdigest()
    with pytest.raises(ValueError):
        canonical_json({"x": float("inf")})


def test_payload_hash_survives_the_round_trip_through_sqlite(store):
    note = sample("c1-mildew")  # severity_pct 2 (int) comes back from a REAL column as 2.0
    sid = finalized(store, note)
    s = store.get_sighting(sid)
    assert payload_sha256(sighting_payload(s)) == s["payload_sha256"]


def test_store_can_be_used_from_another_thread_and_by_two_connections(tmp_path):
    path = tmp_path / "f.db"
    a, b = Store(path), Store(path)
    ids, errors = [], []

    def worker(st):
        try:
            for _ in range(10):
                ids.append(st.finalize(st.save_draft(sample("a2-leafhopper") | {"notes": f"t{len(ids)}"})))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(st,)) for st in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(ids)) == 20 and a.counts()["finalized"] == 20 and len(b.outbox_items()) == 20
    a.close()
    b.close()
    with pytest.raises(StoreError, match="closed"):
        a.counts()


def test_memory_store_works_for_tests():
    with Store(":memory:") as s:
        sid = finalized(s, sample("e5-lanternfly"))
        assert s.get_sighting(sid)["status"] == "finalized" and s.search("lanternfly")[0]["id"] == sid


def test_search_stays_correct_after_vacuum(store):
    doomed = [store.save_draft({"block": "Z1", "notes": f"scratch {i}"}) for i in range(5)]
    keep = finalized(store, {**sample("f1-downy"), "notes": "oilspots under the canopy"})
    for sid in doomed:
        store.delete_draft(sid)
    store.vacuum()
    assert [h["id"] for h in store.search("oilspots")] == [keep]
    assert store.search("scratch") == []
    assert store.check() == "ok"


def test_pest_filter_and_search_find_other_spellings_and_fold_full_width(store):
    """Issue 15: "berry moht" was missed by the filter "grape berry moth" and by a search for "moth"."""
    base = {"rows": "1-4", "date": "2026-07-21"}
    obs = {"life_stage": "larva", "unit": "clusters", "sampled": 50, "infested": 3}
    k9 = finalized(store, {**base, "block": "K9", "observations": [{**obs, "pest": "berry moht"}]})
    k8 = finalized(store, {**base, "block": "K8", "observations": [{**obs, "pest": "ｇｒａｐｅ ｂｅｒｒｙ ｍｏｔｈ"}]})
    k7 = finalized(store, {**base, "block": "K7", "observations": [{**obs, "pest": "powdery mildew",
                                                                     "life_stage": "colonies"}]})
    for typed in ("grape berry moth", "GBM", "moth", "ｍｏｔｈ"):
        assert {s["id"] for s in store.list_sightings(pest=typed)} == {k9, k8}, typed
        if typed != "GBM":  # FTS matches words; an abbreviation is not in the text
            assert {h["id"] for h in store.search(typed)} == {k9, k8}, typed
    assert [s["id"] for s in store.list_sightings(pest="mildew")] == [k7]
    assert store.list_sightings(pest="100%_") == []  # LIKE wildcards are text
    # the unknown pest is marked in the audit log of the version that names it
    cic = finalized(store, {**base, "block": "K6", "observations": [{**obs, "pest": "grape cicada"}]})
    assert store.audit_log(cic)[-1]["detail"]["unknown_pests"] == ["grape cicada"]
    assert "unknown_pests" not in store.audit_log(k9)[-1]["detail"]
    # read-only opens (list, export) filter the same way
    with Store(store.path, readonly=True) as ro:
        assert {s["id"] for s in ro.list_sightings(pest="GBM")} == {k9, k8}


# ---------------------------------------------------------------------------------------------- report review
REPORT_TEXT = ("Summary: Grape berry moth larvae damaged 4 of 50 clusters in block B4.\n"
               "Risk: moderate, above the 6% threshold.\nAction: Treat the border rows next to the tree line.")


def generated_report(store: Store, sid: str, text: str = REPORT_TEXT) -> str:
    # one record per 8 characters, as drafted tokens the oracle verified
    prov = [{"token": i, "start": a, "end": min(a + 8, len(text)), "source": "drafted", "verified": True}
            for i, a in enumerate(range(0, len(text), 8))]
    return store.save_report(sid, text=text, model_pair={"oracle": "q"}, policy={}, stats={"tokens": len(prov)},
                             provenance=prov, spans=[], findings=[])


def test_an_edited_report_is_a_new_version_with_person_provenance_and_a_new_fact_check(store):
    sid = finalized(store, sample("b4-berry-moth"))
    rid = generated_report(store, sid)
    wrong = REPORT_TEXT.replace("4 of 50", "14 of 50")
    v2 = store.review_report(rid, "edit", by="A. Manager", text=wrong)
    r2 = store.get_report(v2)
    assert (r2["version"], r2["replaces"], r2["review_status"], r2["reviewed_by"]) == (2, rid, "edited", "A. Manager")
    assert r2["reviewed_at"] and r2["text"] == wrong
    person = [p for p in r2["provenance"] if p["source"] == "person"]
    assert [wrong[p["start"]:p["end"]] for p in person] == ["14"]  # only the word the person changed
    kept = "".join(wrong[p["start"]:p["end"]] for p in r2["provenance"] if p["source"] != "person")
    assert kept == REPORT_TEXT.replace("4 of 50", " of 50")  # every other character keeps its token's record
    # the fact check ran on the corrected text: the person's wrong figure is a finding, so not clean
    assert [f["kind"] for f in r2["findings"]] == ["wrong_count"] and r2["clean"] is False
    assert any(sp["kind"] == "pest" for sp in r2["spans"])
    v3 = store.review_report(v2, "edit", by="A. Manager", text=REPORT_TEXT)
    assert store.get_report(v3)["findings"] == [] and store.get_report(v3)["clean"] is True
    v4 = store.review_report(v3, "approve", by="B. Owner")
    assert [(r["version"], r["review_status"], r["reviewed_by"]) for r in store.report_versions(rid)] == [
        (1, "generated", None), (2, "edited", "A. Manager"), (3, "edited", "A. Manager"), (4, "approved", "B. Owner")]
    assert store.report_versions(v4) == store.report_versions(rid)
    assert store.get_sighting(sid)["latest_report_id"] == v4
    queued = [json.loads(i["payload"]) for i in outbox(store) if i["kind"] == "report"]
    assert [q.get("review_status") for q in queued] == [None, "edited", "edited", "approved"]
    assert all(i["replaces"] is None for i in outbox(store) if i["kind"] == "report")
    assert store.audit_log(v4)[-1]["detail"]["action"] == "approve"
    # search shows the latest version only, unless asked for history
    assert [h["id"] for h in store.search("border rows") if h["kind"] == "report"] == [v4]
    assert len([h for h in store.search("border rows", include_superseded=True) if h["kind"] == "report"]) == 4


def test_review_refuses_what_it_cannot_record(store):
    sid = finalized(store, sample("b4-berry-moth"))
    rid = generated_report(store, sid)
    for kwargs, words in [
        ({"action": "edit", "by": "A", "text": REPORT_TEXT}, "unchanged"),
        ({"action": "edit", "by": "A", "text": "  "}, "text: required"),
        ({"action": "approve", "by": " "}, "reviewed_by: required"),
        ({"action": "stamp", "by": "A"}, "not one of edit, approve, flag"),
        ({"action": "flag", "by": "A", "note": "x" * 2001}, "review_note: too long"),
    ]:
        with pytest.raises(ValidationError, match=words):
            store.review_report(rid, **kwargs)
    flagged = store.review_report(rid, "flag", by="A", note="risk level is wrong")
    assert store.get_report(flagged)["review_note"] == "risk level is wrong"
    with pytest.raises(StateError, match="already reviewed"):
        store.review_report(rid, "approve", by="A")  # only the latest version
    cancelled = store.save_report(sid, text="Summ", model_pair={}, policy={}, stats={}, provenance=[], spans=[],
                                  findings=[], status="cancelled")
    with pytest.raises(StateError, match="only a complete report"):
        store.review_report(cancelled, "approve", by="A")
    assert len(store.report_versions(rid)) == 2  # nothing half-written


def test_a_review_of_a_draft_report_waits_for_the_finalize(store):
    sid = store.save_draft(sample("b4-berry-moth"))
    rid = generated_report(store, sid)
    v2 = store.review_report(rid, "approve", by="A")
    assert [i for i in outbox(store) if i["kind"] == "report"] == []
    store.finalize(sid)
    assert [i["item_id"] for i in outbox(store) if i["kind"] == "report"] == [rid, v2]


def test_v4_reindexes_old_misspelled_pests_for_search_and_keeps_the_guard(tmp_path):
    """A "berry moht" finalized before the catalog names were indexed is found by a search for "moth"."""
    path = tmp_path / "v3.db"
    fx = _v2_fixture(path)
    db = sqlite_utils.Database(path)
    assert migrate(db, target=3) == [3]
    now = "2026-07-22T10:00:00.000Z"
    sid = "55555555-5555-4555-8555-555555555555"
    db["sightings"].insert({"id": sid, "status": "draft", "version": 1, "block": "K9", "rows": "1-4", "date": "2026-07-22",
                            "pests": "berry moht larva", "created_at": now, "updated_at": now})
    db["observations"].insert({"sighting_id": sid, "idx": 0, "pest": "berry moht", "life_stage": "larva",
                               "unit": "clusters", "sampled": 50, "infested": 3})
    db.conn.execute("UPDATE sightings SET status = 'finalized', finalized_at = ? WHERE id = ?", (now, sid))
    db.conn.commit()
    rowid = db.execute("SELECT rowid FROM sightings WHERE id = ?", [sid]).fetchone()[0]
    hits = [r[0] for r in db.execute("SELECT rowid FROM sightings_fts WHERE sightings_fts MATCH 'moth*'").fetchall()]
    assert hits and rowid not in hits  # the v3 index misses it
    db.close()
    with Store(path) as s:
        assert current_version(s.db) == SCHEMA_VERSION
        assert s.get_sighting(sid)["status"] == "finalized"
        assert {h["id"] for h in s.search("moth")} >= {sid}
        assert s.db.execute("SELECT pests FROM sightings WHERE id = ?", [sid]).fetchone()[0] == \
            "berry moht (grape berry moth) larva"
        # rows whose index did not change are untouched; the immutability guard is back
        before = [r for r in fx["sightings"] if r["id"] == fx["fin"]["id"]][0]
        after = list(s.db.query("SELECT * FROM sightings WHERE id = ?", [fx["fin"]["id"]]))[0]
        assert {k: v for k, v in after.items() if k not in ("risk_class", "nothing_found")} == before
        with pytest.raises(sqlite3.IntegrityError, match="immutable"):
            s.db.conn.execute("UPDATE sightings SET notes = 'x' WHERE id = ?", (sid,))
