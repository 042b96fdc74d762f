"""The fieldlog store: sightings, reports, audit log, outbox and search in one SQLite file.

Durability choices, because the device is a handheld whose battery can die at
any moment:

* WAL journal: readers (the UI) never block the writer, and a crash leaves the
  last committed state.
* ``synchronous=FULL``: every commit fsyncs the WAL. ``NORMAL`` is also
  corruption-safe in WAL mode, but after a *power loss* it may roll back the
  last few commits — a sighting the scout saw "saved" would vanish. Commits here
  are a few per minute, so the fsync costs nothing a user can feel.
* Every public write is one ``BEGIN IMMEDIATE`` transaction (sighting row,
  observations, outbox row and audit entry together, or nothing). IMMEDIATE
  takes the write lock up front so a second process (``fieldlog sync``) waits
  instead of failing half-way with SQLITE_BUSY.
* Finalized sightings, reports, the audit log and queued outbox payloads are
  protected by triggers as well as by this code.

One Store may be used from several threads (the app saves reports from a
worker thread); calls are serialised by a lock.

``Store(path, readonly=True)`` is for the read commands (list, export,
export-bundle, sync status): a read-only connection, no switch to WAL, no
migration, so they work on a read-only filesystem and on a full disk. Every
open first checks that the file is fieldlog's (migrations.identify).
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import sqlite_utils

from .canonical import canonical_json, payload_sha256, utc_now
from .errors import NotFoundError, StateError, StoreError, ValidationError
from .guard import guarded
from .migrations import (
    LATEST,
    REPORT_FTS_COLUMNS,
    SIGHTING_FTS_COLUMNS,
    connect_readonly,
    current_version,
    identify,
    migrate,
    stamp,
)
from .outbox import Outbox
from .queries import SIGHTING_STATUSES, QueryMethods, fts_query
from .reports import ReportMethods
from .transfer import ImportResult, TransferMethods, unknown_pests
from .payloads import note_of, report_payload, sighting_payload
from vineyard.pests import canonical_name

from .validation import (
    GEO_FIELDS,
    OBS_FIELDS,
    STORE_FIELDS,
    TEXT_FIELDS,
    check_uuid,
    fold,
    nothing_found_flag,
    pests_text,
    validate_draft,
    validate_final,
)

CONTENT_COLUMNS = TEXT_FIELDS + GEO_FIELDS


class Store(QueryMethods, ReportMethods, TransferMethods):
    """The device's database. ``Store(":memory:")`` works for tests. Sightings, the audit log and the
    plumbing live here; the reports (reports.py), the log's queries (queries.py) and files in and out
    (transfer.py) are mixins over the same connection, lock and transactions."""

    def __init__(self, path: str | os.PathLike, *, timeout: float = 10.0, readonly: bool = False):
        self._lock = threading.RLock()
        self._closed = True
        self._sp = itertools.count(1)
        self.outbox = Outbox(self)  # the sync queue's table API (outbox.py)
        self.path = str(path)
        self.readonly = readonly
        memory = self.path == ":memory:"
        if memory and readonly:
            raise StoreError("an in-memory store cannot be read-only")
        if not memory:
            p = Path(self.path).expanduser()
            self.path = str(p)
            if p.is_dir():
                raise StoreError(f"{p} is a directory, not a database file")
            if identify(self.path) == "new":
                if readonly:
                    raise StoreError(f"no fieldlog database at {p}")
            if not readonly:
                try:
                    p.parent.mkdir(parents=True, exist_ok=True)
                except OSError as e:
                    raise StoreError(f"cannot create the folder for {p}: {e}") from None
        try:
            if readonly:
                conn = connect_readonly(self.path, timeout=timeout)
            else:
                conn = sqlite3.connect(self.path, timeout=timeout, check_same_thread=False)
        except sqlite3.Error as e:
            raise StoreError(f"cannot open {self.path}: {e}") from None
        # the pest filter matches by catalog entry too ("GBM" finds "berry moht"): SQL asks vineyard's lookup
        conn.create_function("fieldlog_pest", 1, canonical_name, deterministic=True)
        conn.create_function("fieldlog_fold", 1, lambda t: fold(t) if isinstance(t, str) else t, deterministic=True)
        try:
            self.db = sqlite_utils.Database(conn)
            if readonly:
                conn.execute("PRAGMA query_only = ON")
                version = current_version(self.db)
                if version != LATEST:
                    newer = "a newer fieldlog; upgrade fieldlog" if version > LATEST else \
                        "an older fieldlog; start fieldlog once with write access to upgrade it"
                    raise StoreError(f"{self.path} has schema version {version}, from {newer}")
            else:
                conn.execute("PRAGMA foreign_keys = ON")
                stamp(self.db)
                if not memory:
                    self.db.enable_wal()
                conn.execute("PRAGMA synchronous = FULL")
                migrate(self.db)
        except sqlite3.DatabaseError as e:
            conn.close()
            raise StoreError(f"{self.path}: not a usable fieldlog database ({e})") from None
        except BaseException:
            conn.close()
            raise
        self._closed = False

    # ------------------------------------------------------------------ plumbing
    def _now(self) -> str:
        """One clock for every timestamp the store writes (the tests pin it)."""
        return utc_now()

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self.db.conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.path!r})"

    @contextmanager
    def transaction(self) -> Iterator[sqlite_utils.Database]:
        """One atomic write (BEGIN IMMEDIATE); nested use becomes a savepoint.

        Other modules (sync) should write through this, not ``with db.conn:``,
        so their writes are serialised with the store's own.
        """
        with self._lock:
            conn = self.db.conn
            if conn.in_transaction:
                name = f"fieldlog_sp{next(self._sp)}"
                conn.execute(f"SAVEPOINT {name}")
                try:
                    yield self.db
                except BaseException:
                    if conn.in_transaction:
                        conn.execute(f"ROLLBACK TO {name}")
                        conn.execute(f"RELEASE {name}")
                    raise
                else:
                    conn.execute(f"RELEASE {name}")
                return
            conn.execute("BEGIN" if self.readonly else "BEGIN IMMEDIATE")  # a read-only one is a consistent view
            try:
                yield self.db
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            else:
                try:
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise

    def _rows(self, sql: str, params: Iterable | dict = ()) -> list[dict]:
        cur = self.db.conn.execute(sql, params)
        keys = [d[0] for d in cur.description]
        return [dict(zip(keys, r)) for r in cur.fetchall()]

    def _one(self, sql: str, params: Iterable | dict = ()) -> dict | None:
        rows = self._rows(sql, params)
        return rows[0] if rows else None

    def _audit(self, entity: str, entity_id: str, action: str, detail: dict | None = None, at: str | None = None) -> None:
        self.db["audit_log"].insert(
            {
                "at": at or utc_now(),
                "entity": entity,
                "entity_id": entity_id,
                "action": action,
                "detail": canonical_json(detail) if detail is not None else None,
            }
        )

    # ------------------------------------------------------------------ sightings
    def _row(self, sighting_id: str) -> dict | None:
        return self._one("SELECT * FROM sightings WHERE id = ?", (sighting_id,))

    def _require(self, sighting_id: Any) -> dict:
        sid = check_uuid(sighting_id, "sighting id")
        row = self._row(sid)
        if row is None:
            raise NotFoundError(f"no sighting with id {sid}")
        return row

    def _observations(self, ids: list[str]) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {i: [] for i in ids}
        if not ids:
            return out
        for o in self._rows(
            "SELECT * FROM observations WHERE sighting_id IN (SELECT value FROM json_each(?)) ORDER BY sighting_id, idx",
            (json.dumps(ids),),
        ):
            out[o["sighting_id"]].append(o)
        return out

    def _present(self, row: dict, observations: list[dict]) -> dict:
        s = {k: v for k, v in row.items() if k != "pests"}
        if "nothing_found" in s:  # stored 0/1, NULL when not said
            s["nothing_found"] = None if s["nothing_found"] is None else bool(s["nothing_found"])
        s["observations"] = [{k: o[k] for k in ("id", "idx") + OBS_FIELDS} for o in observations]
        return s

    def _content_columns(self, norm: dict) -> dict:
        cols = {k: norm.get(k) for k in CONTENT_COLUMNS}
        cols["pests"] = pests_text(norm["observations"]) or None
        flag = norm.get("nothing_found")  # only a draft's (save_draft); a revision or an import does not say
        cols["nothing_found"] = None if flag is None else int(flag)
        return cols

    def _write_observations(self, sighting_id: str, observations: list[dict]) -> None:
        self.db.conn.execute("DELETE FROM observations WHERE sighting_id = ?", (sighting_id,))
        if observations:
            self.db["observations"].insert_all(
                [{"sighting_id": sighting_id, "idx": i, **{k: o.get(k) for k in OBS_FIELDS}} for i, o in enumerate(observations)]
            )

    def _insert_draft_row(self, sid: str, norm: dict, now: str, *, version: int = 1, replaces: str | None = None) -> None:
        self.db["sightings"].insert(
            {
                "id": sid,
                "status": "draft",
                "version": version,
                "replaces": replaces,
                **self._content_columns(norm),
                "created_at": now,
                "updated_at": now,
            }
        )
        self._write_observations(sid, norm["observations"])

    def _finalize_in_tx(self, sid: str, now: str) -> dict:
        """Draft → finalized inside the caller's transaction; queues it and its pending reports."""
        row = self._row(sid)
        obs = self._observations([sid])[sid]
        validate_final(self._present(row, obs))
        snapshot = {**row, "observations": obs, "finalized_at": now}
        payload = sighting_payload(snapshot)
        content_sha = payload_sha256(note_of(snapshot))
        self.db["sightings"].update(
            sid,
            {
                "status": "finalized",
                "finalized_at": now,
                "updated_at": now,
                "payload_sha256": payload_sha256(payload),
                "content_sha256": content_sha,
            },
        )
        self.outbox.enqueue("sighting", payload, now)
        # Reports generated while this was a draft go out now, after the sighting,
        # but only those written from exactly the content being finalized.
        for r in self._rows(
            "SELECT * FROM reports WHERE sighting_id = ? AND status = 'complete' AND sighting_sha256 = ? ORDER BY created_at, rowid",
            (sid, content_sha),
        ):
            self.outbox.enqueue("report", report_payload(self._decode_report(r)), now)
        return payload

    @guarded
    def save_draft(self, sighting: dict, id: str | None = None) -> str:
        """Insert or update a draft; returns its id.

        The id comes from ``id`` or, failing that, ``sighting["id"]`` (so a dict
        from get_sighting can be saved back); a new uuid4 otherwise.
        Drafts are checked leniently: missing fields are fine, wrong ones are not.
        ``sighting["nothing_found"]`` is the form's "Nothing found" choice, kept with the draft (True or
        False; absent or None: not said) and handed back by get_sighting; it is in no payload or hash.
        """
        norm = validate_draft(sighting)
        norm["nothing_found"] = nothing_found_flag(sighting.get("nothing_found"), norm["observations"])
        if id is None and isinstance(sighting, dict) and sighting.get("id"):
            id = sighting["id"]
        sid = check_uuid(id) if id is not None else str(uuid.uuid4())
        now = utc_now()
        with self.transaction():
            row = self._row(sid)
            if row is None:
                self._insert_draft_row(sid, norm, now)
                self._audit("sighting", sid, "create_draft", {"fields": sorted(k for k, v in norm.items() if v)}, now)
                return sid
            if row["status"] != "draft":
                raise StateError(f"sighting {sid} is {row['status']} and cannot be edited; use revise()")
            old = self._present(row, self._observations([sid])[sid])
            changed = _changed_fields(note_of(old), note_of(norm))
            if old.get("nothing_found") != norm["nothing_found"]:  # the choice alone is a change too
                changed["nothing_found"] = [old.get("nothing_found"), norm["nothing_found"]]
            if not changed:
                return sid
            self.db["sightings"].update(sid, {**self._content_columns(norm), "updated_at": now})
            self._write_observations(sid, norm["observations"])
            self._audit("sighting", sid, "update_draft", {"changed": changed}, now)
        return sid

    @guarded
    def finalize(self, id: str) -> str:
        """Fully validate a draft and make it immutable; queue it for sync. Idempotent."""
        with self.transaction():
            row = self._require(id)
            sid = row["id"]
            if row["status"] == "finalized":
                return sid
            if row["status"] == "superseded":
                raise StateError(f"sighting {sid} was superseded by a newer version")
            now = utc_now()
            payload = self._finalize_in_tx(sid, now)
            self._audit("sighting", sid, "finalize", {"sha256": payload_sha256(payload), **unknown_pests(payload)}, now)
        return sid

    @guarded
    def revise(self, id: str, changes: dict) -> str:
        """Make a new finalized version of a finalized sighting with ``changes`` applied.

        The old version is kept (status superseded); the new one has a new id,
        ``replaces`` = the old id and version + 1. ``changes`` holds field-note
        keys; ``observations`` replaces the whole list; ``None`` clears a field.
        Returns the new id, or ``id`` itself when nothing actually changed.
        """
        if not isinstance(changes, dict):
            raise ValidationError(f"changes: expected an object, got {type(changes).__name__}")
        for key in changes:
            if key in STORE_FIELDS:
                raise ValidationError(f"{key}: cannot be changed by a revision")
        with self.transaction():
            row = self._require(id)
            sid = row["id"]
            if row["status"] == "draft":
                raise StateError(f"sighting {sid} is a draft; edit it with save_draft()")
            if row["status"] == "superseded":
                latest = self._latest_id(sid)
                raise StateError(f"sighting {sid} was already revised; revise the latest version {latest}")
            old = self._present(row, self._observations([sid])[sid])
            merged = {**note_of(old), **changes}
            norm = validate_final(merged)
            changed = _changed_fields(note_of(old), note_of(norm))
            if not changed:
                return sid
            now = utc_now()
            new_id = str(uuid.uuid4())
            self.db["sightings"].update(sid, {"status": "superseded", "updated_at": now})
            self._insert_draft_row(new_id, norm, now, version=row["version"] + 1, replaces=sid)
            payload = self._finalize_in_tx(new_id, now)
            self._audit("sighting", sid, "supersede", {"by": new_id}, now)
            self._audit(
                "sighting", new_id, "revise",
                {"replaces": sid, "version": payload["version"], "changed": changed, "sha256": payload_sha256(payload),
                 **unknown_pests(payload)},
                now,
            )
        return new_id

    @guarded
    def delete_draft(self, id: str) -> None:
        """Delete a draft (and reports generated from it); the audit log keeps its content."""
        with self.transaction():
            row = self._require(id)
            sid = row["id"]
            if row["status"] != "draft":
                raise StateError(f"sighting {sid} is {row['status']}; only drafts can be deleted")
            snapshot = note_of(self._present(row, self._observations([sid])[sid]))
            report_ids = [r["id"] for r in self._rows("SELECT id FROM reports WHERE sighting_id = ?", (sid,))]
            self.db.conn.execute("DELETE FROM reports WHERE sighting_id = ?", (sid,))
            self.db.conn.execute("DELETE FROM observations WHERE sighting_id = ?", (sid,))
            self.db.conn.execute("DELETE FROM sightings WHERE id = ?", (sid,))
            self._audit("sighting", sid, "delete_draft", {"content": snapshot, "reports": report_ids})

    def _latest_id(self, sid: str) -> str:
        return self._latest_in_chain("sightings", sid)

    def _latest_in_chain(self, table: str, id: str) -> str:
        """The newest version of ``id`` along its ``replaces`` links (sightings and reports version alike)."""
        seen = {id}
        while True:
            nxt = self._one(f"SELECT id FROM {table} WHERE replaces = ?", (id,))
            if nxt is None or nxt["id"] in seen:
                return id
            id = nxt["id"]
            seen.add(id)

    @guarded
    def get_sighting(self, id: str) -> dict:
        """The sighting with its observations, ``superseded_by`` and ``latest_report_id``."""
        row = self._require(id)
        s = self._present(row, self._observations([row["id"]])[row["id"]])
        nxt = self._one("SELECT id FROM sightings WHERE replaces = ?", (row["id"],))
        s["superseded_by"] = nxt["id"] if nxt else None
        s["latest_report_id"] = self._latest_report_id(row["id"])
        return s

    @guarded
    def versions(self, id: str) -> list[dict]:
        """Every version of the sighting ``id`` belongs to, oldest first (its edit history)."""
        row = self._require(id)
        first = row
        seen = {row["id"]}
        while first["replaces"] and first["replaces"] not in seen:
            prev = self._row(first["replaces"])
            if prev is None:
                break
            seen.add(prev["id"])
            first = prev
        chain = [first]
        while True:
            nxt = self._one("SELECT * FROM sightings WHERE replaces = ?", (chain[-1]["id"],))
            if nxt is None or nxt["id"] in {c["id"] for c in chain}:
                break
            chain.append(nxt)
        obs = self._observations([c["id"] for c in chain])
        return [self._present(c, obs[c["id"]]) for c in chain]

    # ------------------------------------------------------------------ audit / outbox / maintenance
    @guarded
    def audit_log(self, entity_id: str | None = None, limit: int | None = None) -> list[dict]:
        """Audit entries oldest first (all, or for one sighting/report id), detail decoded."""
        sql, params = "SELECT * FROM audit_log", []
        if entity_id is not None:
            sql += " WHERE entity_id = ?"
            params.append(str(entity_id))
        sql += " ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        rows = self._rows(sql, params)
        for r in rows:
            r["detail"] = json.loads(r["detail"]) if r["detail"] else None
        return rows

    def outbox_items(self, state: str | Iterable[str] | None = None, limit: int | None = None) -> list[dict]:
        """Outbox rows in upload order (``store.outbox.items``)."""
        return self.outbox.items(state, limit)

    def outbox_counts(self) -> dict[str, int]:
        """Rows per outbox state (``store.outbox.counts``)."""
        return self.outbox.counts()

    @guarded
    def counts(self) -> dict[str, int]:
        """Sightings per status plus reports: for status lines and the demo seeder."""
        out = {s: 0 for s in SIGHTING_STATUSES}
        for r in self._rows("SELECT status, COUNT(*) AS n FROM sightings GROUP BY status"):
            out[r["status"]] = r["n"]
        out["reports"] = self._one("SELECT COUNT(*) AS n FROM reports")["n"]
        return out

    @guarded
    def check(self) -> str:
        """``PRAGMA integrity_check`` result ("ok" when the file is sound)."""
        return "\n".join(r[0] for r in self.db.conn.execute("PRAGMA integrity_check").fetchall())

    @guarded
    def vacuum(self) -> None:
        """Compact the file. VACUUM may renumber implicit rowids, which the FTS index
        points at, so the index is rebuilt right after."""
        self.db.conn.execute("VACUUM")
        with self.transaction():
            self.db["sightings"].rebuild_fts()
            self.db["reports"].rebuild_fts()


def _changed_fields(old: dict, new: dict) -> dict:
    """{field: [old, new]} for every field-note key that differs (observations compared whole)."""
    out = {}
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            out[key] = [old.get(key), new.get(key)]
    return out


__all__ = ["Store", "ImportResult", "fts_query", "SIGHTING_FTS_COLUMNS", "REPORT_FTS_COLUMNS"]
