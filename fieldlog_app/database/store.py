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

import datetime as _dt
import itertools
import json
import os
import re
import sqlite3
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

import sqlite_utils

from . import export as _export
from .canonical import canonical_json, jsonable, payload_sha256, strict_loads, utc_now
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
from . import office_checks as _office
from .outbox import Outbox
from .payloads import note_of, report_payload, sighting_payload
from vineyard import FieldNoteError, fieldnote, review
from vineyard.pests import canonical_name, check_name

from .validation import (
    GEO_FIELDS,
    OBS_FIELDS,
    STORE_FIELDS,
    TEXT_FIELDS,
    check_uuid,
    fold,
    validate_text_field,
    pests_text,
    validate_draft,
    validate_final,
)

SIGHTING_STATUSES = ("draft", "finalized", "superseded")
REPORT_STATUSES = ("complete", "cancelled", "failed")
REVIEW_STATUSES = review.REVIEW_STATUSES
MAX_REPORT_TEXT = 200_000  # the sync protocol's limit: a longer report could never reach the office
REPORT_JSON = ("model_pair", "policy", "stats", "provenance", "spans", "findings")
CONTENT_COLUMNS = TEXT_FIELDS + GEO_FIELDS


@dataclass
class ImportResult:
    """Outcome of import_notes: counts plus (line number, message) for every bad line."""

    imported: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)
    skipped: int = 0  # lines whose note is already in the log (re-importing a file is harmless)
    ids: list[str] = field(default_factory=list)
    # (line number, message) for pest names the catalog knows under another name or not at all: imported
    # as written (a file is the scout's record), but said, so a misspelling can be revised
    warnings: list[tuple[int, str]] = field(default_factory=list)


def _like_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def fts_query(text: str) -> str | None:
    """A user's words as a safe FTS5 query: every word must match, as a prefix.

    Quoting each token means punctuation and words like NOT/OR are plain text,
    so no user input can raise an FTS syntax error. The query is NFKC-folded first, so
    full-width letters typed on an East Asian keyboard ("ｍｏｔｈ") search as "moth".
    """
    import re

    tokens = re.findall(r"\w+", fold(text or ""))
    if not tokens:
        return None
    return " ".join('"' + t.replace('"', '""') + '"*' for t in tokens)


class Store:
    """The device's database. ``Store(":memory:")`` works for tests."""

    SNIPPET_MARKS = ("«", "»")  # around matched words in search snippets (not Textual markup on purpose)

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
        s["observations"] = [{k: o[k] for k in ("id", "idx") + OBS_FIELDS} for o in observations]
        return s

    def _content_columns(self, norm: dict) -> dict:
        cols = {k: norm.get(k) for k in CONTENT_COLUMNS}
        cols["pests"] = pests_text(norm["observations"]) or None
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
        """
        norm = validate_draft(sighting)
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
            self._audit("sighting", sid, "finalize", {"sha256": payload_sha256(payload), **_unknown_pests(payload)}, now)
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
                 **_unknown_pests(payload)},
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
        seen = {sid}
        while True:
            nxt = self._one("SELECT id FROM sightings WHERE replaces = ?", (sid,))
            if nxt is None or nxt["id"] in seen:
                return sid
            sid = nxt["id"]
            seen.add(sid)

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

    def _latest_report_id(self, sid: str) -> str | None:
        r = self._one(
            "SELECT id FROM reports WHERE sighting_id = ? AND status = 'complete' ORDER BY created_at DESC, rowid DESC LIMIT 1",
            (sid,),
        )
        return r["id"] if r else None

    @guarded
    def find_sighting_id(self, prefix: str) -> str:
        """Resolve a full id or a unique prefix (>= 4 characters) as typed on a command line."""
        prefix = (prefix or "").strip().lower()
        if len(prefix) < 4:
            raise ValidationError("sighting id: give at least 4 characters")
        rows = self._rows(
            "SELECT id FROM sightings WHERE id LIKE ? ESCAPE '\\' LIMIT 2", (_like_escape(prefix) + "%",)
        )
        if not rows:
            raise NotFoundError(f"no sighting with id {prefix}")
        if len(rows) > 1:
            raise ValidationError(f"sighting id: {prefix!r} matches more than one sighting; give more characters")
        return rows[0]["id"]

    @guarded
    def find_report_id(self, prefix: str) -> str:
        """A report id from a full id or a unique prefix (>= 4 characters), as for sightings."""
        prefix = (prefix or "").strip().lower()
        if len(prefix) < 4:
            raise ValidationError("report id: give at least 4 characters")
        rows = self._rows("SELECT id FROM reports WHERE id LIKE ? ESCAPE '\\' LIMIT 2", (_like_escape(prefix) + "%",))
        if not rows:
            raise NotFoundError(f"no report with id {prefix}")
        if len(rows) > 1:
            raise ValidationError(f"report id: {prefix!r} matches more than one report; give more characters")
        return rows[0]["id"]

    @guarded
    def list_sightings(
        self,
        *,
        block: str | None = None,
        pest: str | None = None,
        date_from: str | None = None,
        date_to: str | None = None,
        status: str | Iterable[str] | None = None,
        query: str | None = None,
        include_superseded: bool = False,
        limit: int = 500,
    ) -> list[dict]:
        """Sightings newest first, with observations and latest_report_id.

        ``pest`` matches part of a pest name, case-insensitive ("mildew" finds both
        mildews); ``query`` is a full-text search over notes, pests, block, scout.
        Superseded versions are hidden unless asked for (they are history).
        """
        where, params = self._sighting_filters(
            block=block, pest=pest, date_from=date_from, date_to=date_to, status=status,
            query=query, include_superseded=include_superseded,
        )
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValidationError(f"limit: expected a positive whole number, got {limit!r}")
        rows = self._rows(
            f"SELECT s.* FROM sightings s WHERE {where} "
            "ORDER BY s.date DESC, s.time DESC, s.created_at DESC LIMIT ?",
            [*params, limit],
        )
        return self._with_details(rows)

    def _with_details(self, rows: list[dict]) -> list[dict]:
        obs = self._observations([r["id"] for r in rows])
        latest = {
            r["sighting_id"]: r["id"]
            for r in self._rows(
                "SELECT sighting_id, id FROM reports WHERE status = 'complete' "
                "AND sighting_id IN (SELECT value FROM json_each(?)) ORDER BY created_at, rowid",
                (json.dumps([r["id"] for r in rows]),),
            )
        }
        out = []
        for r in rows:
            s = self._present(r, obs[r["id"]])
            s["latest_report_id"] = latest.get(r["id"])
            out.append(s)
        return out

    def _sighting_filters(self, *, block, pest, date_from, date_to, status, query, include_superseded):
        where, params = ["1"], []
        if block:
            where.append("s.block = ? COLLATE NOCASE")
            params.append(str(block).strip())
        if pest:
            # part of the name as typed or of its catalog name, any case ("mildew" finds both mildews,
            # "moth" finds "berry moht"), or the same catalog entry ("GBM" finds "berry moht")
            typed = fold(str(pest)).strip()
            where.append(
                "EXISTS (SELECT 1 FROM observations o WHERE o.sighting_id = s.id AND (fieldlog_fold(o.pest) LIKE ? ESCAPE '\\'"
                " OR fieldlog_pest(o.pest) LIKE ? ESCAPE '\\' OR (? IS NOT NULL AND fieldlog_pest(o.pest) = ?)))"
            )
            canon = canonical_name(typed)
            like = "%" + _like_escape(typed) + "%"
            params += [like, like, canon, canon]
        for name, value, op in (("date_from", date_from, ">="), ("date_to", date_to, "<=")):
            if value:
                try:
                    _dt.date.fromisoformat(str(value))
                except ValueError:
                    raise ValidationError(f"{name}: {value!r} is not an ISO date (YYYY-MM-DD)") from None
                where.append(f"s.date {op} ?")
                params.append(str(value))
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            for st in statuses:
                if st not in SIGHTING_STATUSES:
                    raise ValidationError(f"status: {st!r} is not one of {', '.join(SIGHTING_STATUSES)}")
            where.append(f"s.status IN ({', '.join('?' * len(statuses))})")
            params.extend(statuses)
        elif not include_superseded:
            where.append("s.status <> 'superseded'")
        if query is not None and str(query).strip():
            q = fts_query(str(query))
            if q is None:
                where.append("0")
            else:
                where.append("s.rowid IN (SELECT rowid FROM sightings_fts WHERE sightings_fts MATCH ?)")
                params.append(q)
        return " AND ".join(where), params

    # ------------------------------------------------------------------ reports
    def _decode_report(self, r: dict, *, drop: tuple[str, ...] = ()) -> dict:
        out = {k: v for k, v in r.items() if k not in drop}
        for key in REPORT_JSON:
            if key in out:
                out[key] = json.loads(out[key]) if out[key] is not None else None
        if "clean" in out:
            out["clean"] = bool(out["clean"])
        return out

    @guarded
    def save_report(
        self,
        sighting_id: str,
        *,
        text: str,
        model_pair: dict,
        policy: dict,
        stats: dict,
        provenance: list | dict,
        spans: list,
        findings: list,
        status: str = "complete",
    ) -> str:
        """Store a generated report (immutable); returns its id.

        A complete report of a finalized sighting is queued for sync in the same
        transaction. One made from a draft waits and is queued when that draft is
        finalized unchanged (a report of other content would be misleading).
        Cancelled/failed reports stay on the device.
        """
        if status not in REPORT_STATUSES:
            raise ValidationError(f"status: {status!r} is not one of {', '.join(REPORT_STATUSES)}")
        if not isinstance(text, str):
            raise ValidationError(f"text: expected text, got {type(text).__name__}")
        values: dict[str, Any] = {}
        for name, value, types in (
            ("model_pair", model_pair, (dict,)),
            ("policy", policy, (dict,)),
            ("stats", stats, (dict,)),
            ("provenance", provenance, (list, dict)),
            ("spans", spans, (list,)),
            ("findings", findings, (list,)),
        ):
            try:
                v = jsonable(value if value is not None else types[0](), name)
            except ValueError as e:
                raise ValidationError(str(e)) from None
            if not isinstance(v, types):
                want = " or ".join(t.__name__ for t in types)
                raise ValidationError(f"{name}: expected {want}, got {type(value).__name__}")
            values[name] = v
        with self.transaction():
            row = self._require(sighting_id)
            sid = row["id"]
            now = utc_now()
            rid = str(uuid.uuid4())
            content_sha = row["content_sha256"] or payload_sha256(
                note_of(self._present(row, self._observations([sid])[sid]))
            )
            report = {
                "id": rid, "sighting_id": sid, "created_at": now, "status": status, "text": text,
                **values, "sighting_sha256": content_sha,
            }
            payload = report_payload(report)
            self.db["reports"].insert(
                {
                    **{k: report[k] for k in ("id", "sighting_id", "created_at", "status", "text", "sighting_sha256")},
                    **{k: canonical_json(values[k]) for k in REPORT_JSON},
                    "clean": payload["clean"],
                    "payload_sha256": payload_sha256(payload),
                }
            )
            if status == "complete" and row["status"] != "draft":
                self.outbox.enqueue("report", payload, now)
            self._audit(
                "report", rid, "create",
                {"sighting_id": sid, "status": status, "findings": len(values["findings"])}, now,
            )
        return rid

    @guarded
    def review_report(self, id: str, action: str, *, by: str, text: str | None = None, note: str | None = None) -> str:
        """A person's review of a report, as a new version of it (reports are immutable); returns its id.

        ``action``: ``"edit"`` (``text`` is the corrected report: the characters typed get provenance
        ``person``, the rest keep their tokens', and the span audit and fact check run again on the
        new text), ``"approve"`` or ``"flag"`` (``note`` says why); approving or flagging may carry a
        corrected ``text`` too. ``by`` names who. Only the latest version of a complete report can
        be reviewed. The new version is queued for the office like any report (its payload carries
        version, replaces, review_status, reviewed_by, reviewed_at, review_note).
        """
        if action not in ("edit", "approve", "flag"):
            raise ValidationError(f"action: {action!r} is not one of edit, approve, flag")
        who = validate_text_field(by, "reviewed_by", 200)
        if who is None:
            raise ValidationError("reviewed_by: required (who reviewed the report)")
        why = validate_text_field(note, "review_note", 2000)
        if text is not None and not isinstance(text, str):
            raise ValidationError(f"text: expected text, got {type(text).__name__}")
        if action == "edit" and (text is None or not text.strip()):
            raise ValidationError("text: required (the corrected report)")
        if text is not None and len(text) > MAX_REPORT_TEXT:
            raise ValidationError(f"text: too long ({len(text)} characters, max {MAX_REPORT_TEXT})")
        with self.transaction():
            old = self.get_report(id)
            rid = old["id"]
            if old["status"] != "complete":
                raise StateError(f"report {rid} is {old['status']}; only a complete report can be reviewed")
            nxt = self._one("SELECT id FROM reports WHERE replaces = ?", (rid,))
            if nxt is not None:
                raise StateError(f"report {rid} was already reviewed; review the latest version {self._latest_report_version(rid)}")
            row = self._require(old["sighting_id"])
            new_text = old["text"] if text is None else text
            edited = new_text != old["text"]
            if action == "edit" and not edited:
                raise ValidationError("text: unchanged; approve or flag the report instead")
            values = {k: old.get(k) for k in REPORT_JSON}
            if edited:
                values["provenance"] = review.edit_provenance(old["text"], old.get("provenance"), new_text)
                sighting = note_of(self._present(row, self._observations([row["id"]])[row["id"]]))
                try:
                    checked = review.recheck(new_text, fieldnote.validate(sighting, check_rows=False), values["provenance"])
                except FieldNoteError as e:
                    raise StateError(f"the sighting of this report is not a complete field note ({e})") from None
                values.update(checked)
            status = {"edit": "edited", "approve": "approved", "flag": "flagged"}[action]
            now = utc_now()
            new_id = str(uuid.uuid4())
            report = {
                "id": new_id, "sighting_id": old["sighting_id"], "created_at": now, "status": "complete",
                "text": new_text, **values, "sighting_sha256": old["sighting_sha256"],
                "version": int(old.get("version") or 1) + 1, "replaces": rid, "review_status": status,
                "reviewed_by": who, "reviewed_at": now, "review_note": why,
            }
            payload = report_payload(report)
            self.db["reports"].insert({
                **{k: report[k] for k in ("id", "sighting_id", "created_at", "status", "text", "sighting_sha256",
                                          "version", "replaces", "review_status", "reviewed_by", "reviewed_at",
                                          "review_note")},
                **{k: canonical_json(values[k]) if values[k] is not None else None for k in REPORT_JSON},
                "clean": payload["clean"],
                "payload_sha256": payload_sha256(payload),
            })
            if row["status"] != "draft":
                self.outbox.enqueue("report", payload, now)
            self._audit("report", new_id, "review", {
                "action": action, "by": who, "replaces": rid, "version": report["version"], "edited": edited,
                "findings": len(values.get("findings") or []), "note": why,
            }, now)
        return new_id

    def _latest_report_version(self, rid: str) -> str:
        seen = {rid}
        while True:
            nxt = self._one("SELECT id FROM reports WHERE replaces = ?", (rid,))
            if nxt is None or nxt["id"] in seen:
                return rid
            rid = nxt["id"]
            seen.add(rid)

    @guarded
    def report_versions(self, id: str) -> list[dict]:
        """Every version of the report ``id`` belongs to, oldest first (its review history), in full."""
        first = self.get_report(id)
        first.pop("office", None)  # every version as stored, alike
        seen = {first["id"]}
        while first.get("replaces") and first["replaces"] not in seen:
            prev = self._one("SELECT * FROM reports WHERE id = ?", (first["replaces"],))
            if prev is None:
                break
            seen.add(prev["id"])
            first = self._decode_report(prev)
        chain = [first]
        while True:
            nxt = self._one("SELECT * FROM reports WHERE replaces = ?", (chain[-1]["id"],))
            if nxt is None or nxt["id"] in {c["id"] for c in chain}:
                break
            chain.append(self._decode_report(nxt))
        return chain

    @guarded
    def get_report(self, id: str) -> dict:
        rid = check_uuid(id, "report id")
        r = self._one("SELECT * FROM reports WHERE id = ?", (rid,))
        if r is None:
            raise NotFoundError(f"no report with id {rid}")
        out = self._decode_report(r)
        # whether, and by which model, the office checked it (office_checks.py); not part of the payload
        out["office"] = self._office_of([rid]).get(rid)
        return out

    # ------------------------------------------------------------------ the office's verdicts (office_checks.py)
    @guarded
    def save_office_checks(self, checks: list) -> dict:
        """Store the office model's checks fetched at sync, in one transaction. A check of a report this device
        does not hold, or one older than the stored one, is skipped; a malformed one is refused with its reason
        and the others are still kept. ``{"saved", "skipped", "errors"}``."""
        if not isinstance(checks, list):
            raise ValidationError("office checks: expected a list")
        saved, skipped, errors = 0, 0, []
        now = utc_now()
        with self.transaction():
            for c in checks:
                try:
                    row = _office.normalise(c)
                except _office.OfficeCheckError as e:
                    errors.append(str(e))
                    continue
                have = self._one("SELECT r.id, c.updated_at FROM reports r LEFT JOIN office_checks c "
                                 "ON c.report_id = r.id WHERE r.id = ?", (row["report_id"],))
                if have is None or (have["updated_at"] or "") >= row["updated_at"]:
                    skipped += 1
                    continue
                self.db["office_checks"].upsert({**row, "findings": canonical_json(row["findings"]),
                                                 "received_at": now}, pk="report_id")
                saved += 1
            if saved:
                self._audit("office", "office-checks", "receive", {"saved": saved, "skipped": skipped,
                                                                   "errors": len(errors)}, now)
        return {"saved": saved, "skipped": skipped, "errors": errors}

    @guarded
    def office_checks_since(self) -> str:
        """The newest ``updated_at`` of the stored checks: what the next fetch asks for (``since=``)."""
        row = self._one("SELECT MAX(updated_at) AS m FROM office_checks")
        return (row or {}).get("m") or ""

    def _office_of(self, report_ids: list[str]) -> dict[str, dict]:
        rows = self._rows(
            "SELECT r.id AS rid, o.state AS outbox_state, c.* FROM reports r "
            "LEFT JOIN outbox o ON o.item_id = r.id LEFT JOIN office_checks c ON c.report_id = r.id "
            "WHERE r.id IN (SELECT value FROM json_each(?))", (json.dumps(report_ids),))
        out = {}
        for r in rows:
            check = None
            if r["report_id"] is not None:
                check = {k: r[k] for k in ("status", "model", "checked_at", "updated_at", "received_at")}
                check["findings"] = json.loads(r["findings"] or "[]")
            sent = r["outbox_state"] == "sent"
            out[r["rid"]] = {"state": _office.state_of(check, sent), "line": _office.describe(check, sent),
                             "check": check}
        return out

    @guarded
    def office_awaiting(self) -> int:
        """How many sent reports have no verdict from the office yet, or one the office could not give (the sync
        asks for them; a checked report is not asked about again)."""
        row = self._one("SELECT COUNT(*) AS n FROM outbox o LEFT JOIN office_checks c ON c.report_id = o.item_id "
                        "WHERE o.kind = 'report' AND o.state = 'sent' AND (c.status IS NULL OR c.status <> 'checked')")
        return row["n"]

    @guarded
    def office_states(self, report_ids: Iterable[str]) -> dict[str, str | None]:
        """report id -> its office state (awaiting, error, agrees, disputed; None: not sent yet)."""
        return {rid: v["state"] for rid, v in self._office_of([str(r) for r in report_ids]).items()}

    @guarded
    def reports_for(self, sighting_id: str) -> list[dict]:
        """Every report of one sighting version, newest first, in full."""
        sid = self._require(sighting_id)["id"]
        rows = self._rows("SELECT * FROM reports WHERE sighting_id = ? ORDER BY created_at DESC, rowid DESC", (sid,))
        return [self._decode_report(r) for r in rows]

    @guarded
    def list_reports(
        self,
        *,
        sighting_id: str | None = None,
        status: str | None = None,
        block: str | None = None,
        clean: bool | None = None,
        limit: int = 500,
    ) -> list[dict]:
        """Reports newest first, without the bulky provenance/spans (use get_report for those),
        with the sighting's block, date and status for a table view."""
        where, params = ["1"], []
        if sighting_id is not None:
            where.append("r.sighting_id = ?")
            params.append(check_uuid(sighting_id, "sighting id"))
        if status is not None:
            if status not in REPORT_STATUSES:
                raise ValidationError(f"status: {status!r} is not one of {', '.join(REPORT_STATUSES)}")
            where.append("r.status = ?")
            params.append(status)
        if block:
            where.append("s.block = ? COLLATE NOCASE")
            params.append(str(block).strip())
        if clean is not None:
            where.append("r.clean = ?")
            params.append(1 if clean else 0)
        rows = self._rows(
            "SELECT r.*, s.block AS block, s.date AS date, s.status AS sighting_status "
            f"FROM reports r JOIN sightings s ON s.id = r.sighting_id WHERE {' AND '.join(where)} "
            "ORDER BY r.created_at DESC, r.rowid DESC LIMIT ?",
            [*params, int(limit)],
        )
        return [self._decode_report(r, drop=("provenance", "spans")) for r in rows]

    # ------------------------------------------------------------------ search
    @guarded
    def search(self, query: str, limit: int = 50, *, include_superseded: bool = False) -> list[dict]:
        """Full-text search over sightings (notes, pests, block, variety, scout, weather) and report text.

        Each word must match (as a prefix, stemmed). Results, best first:
        ``{kind, id, sighting_id, snippet, rank, block, date, status}``; rank is
        FTS5 bm25 (lower is better). Superseded versions and their reports are
        left out unless ``include_superseded``: search shows the log as it stands.
        """
        q = fts_query(query)
        if q is None:
            return []
        a, b = self.SNIPPET_MARKS
        hide = "" if include_superseded else "AND s.status <> 'superseded'"
        # a report a person has reviewed since is history too: search shows its latest version
        hide_reviewed = "" if include_superseded else "AND NOT EXISTS (SELECT 1 FROM reports n WHERE n.replaces = r.id)"
        sightings = self._rows(
            f"""SELECT 'sighting' AS kind, s.id AS id, s.id AS sighting_id,
                       snippet(sightings_fts, -1, ?, ?, '…', 12) AS snippet, bm25(sightings_fts) AS rank,
                       s.block AS block, s.date AS date, s.status AS status
                FROM sightings_fts JOIN sightings s ON s.rowid = sightings_fts.rowid
                WHERE sightings_fts MATCH ? {hide} ORDER BY rank LIMIT ?""",
            (a, b, q, limit),
        )
        reports = self._rows(
            f"""SELECT 'report' AS kind, r.id AS id, r.sighting_id AS sighting_id,
                       snippet(reports_fts, -1, ?, ?, '…', 12) AS snippet, bm25(reports_fts) AS rank,
                       s.block AS block, s.date AS date, s.status AS status
                FROM reports_fts JOIN reports r ON r.rowid = reports_fts.rowid
                JOIN sightings s ON s.id = r.sighting_id
                WHERE reports_fts MATCH ? {hide} {hide_reviewed} ORDER BY rank LIMIT ?""",
            (a, b, q, limit),
        )
        return sorted(sightings + reports, key=lambda r: r["rank"])[:limit]

    # ------------------------------------------------------------------ export / import
    def _export_rows(self, include_drafts: bool, include_superseded: bool) -> list[dict]:
        statuses = ["finalized"] + (["draft"] if include_drafts else []) + (["superseded"] if include_superseded else [])
        rows = self._rows(
            f"SELECT * FROM sightings WHERE status IN ({', '.join('?' * len(statuses))}) "
            "ORDER BY date, time, created_at",
            statuses,
        )
        return self._with_details(rows)

    @guarded
    def export(
        self,
        fmt: str,
        out: str | os.PathLike | IO[str],
        *,
        include_drafts: bool = False,
        include_superseded: bool = False,
    ) -> int:
        """Write sightings as ``csv`` (one row per observation), ``geojson`` (a Point per
        sighting with coordinates) or ``jsonl`` (one sighting per line); returns rows written.

        By default only current finalized versions: what the farm office acts on.
        A path is written atomically (temp file + rename), so a crash never leaves
        half an export that looks complete.
        """
        writers = {"csv": _export.write_csv, "geojson": _export.write_geojson, "jsonl": _export.write_jsonl}
        if fmt not in writers:
            raise ValidationError(f"format: {fmt!r} is not one of csv, geojson, jsonl")
        rows = self._export_rows(include_drafts, include_superseded)
        if hasattr(out, "write"):
            return writers[fmt](rows, out)
        from ..atomic import atomic_write

        return atomic_write(out, lambda f: writers[fmt](rows, f), error=StoreError)

    @guarded
    def import_notes(self, path: str | os.PathLike) -> ImportResult:
        """Import field notes (JSON Lines, the ``edgespec generate --notes`` shape) as finalized sightings.

        Every line succeeds or fails on its own: a bad one (not UTF-8, not strict
        JSON — NaN, Infinity, nesting too deep — or not a valid note) is reported
        with its number and reason, and whatever goes wrong storing a line undoes
        only that line (a savepoint). A note already in the log (same content as an
        existing finalized or superseded version) is skipped, so importing twice is
        harmless. The good lines commit together: a crash mid-import imports nothing.
        """
        p = Path(path).expanduser()
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            raise StoreError(f"{p}: no such file") from None
        except OSError as e:
            raise StoreError(f"{p}: cannot read ({e.strerror or e})") from None
        result = ImportResult()
        seen: set[str] = set()
        with self.transaction():
            for line_no, raw in enumerate(data.splitlines(), start=1):
                if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                if not raw.strip():
                    continue
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    result.errors.append((line_no, "not UTF-8 text"))
                    continue
                try:
                    note = strict_loads(line)
                except json.JSONDecodeError as e:
                    result.errors.append((line_no, f"not valid JSON ({e.msg} at column {e.colno})"))
                    continue
                except ValueError as e:
                    result.errors.append((line_no, f"not valid JSON ({e})"))
                    continue
                try:
                    if isinstance(note, dict):
                        note = {k: v for k, v in note.items() if k not in STORE_FIELDS}
                    norm = validate_final(note)
                except ValidationError as e:
                    result.errors.append((line_no, str(e)))
                    continue
                content_sha = payload_sha256(note_of(norm))
                dup = self._one(
                    "SELECT id FROM sightings WHERE content_sha256 = ? AND status <> 'draft' LIMIT 1", (content_sha,)
                )
                if dup is not None or content_sha in seen:
                    result.skipped += 1
                    continue
                try:
                    with self.transaction():  # savepoint: a failure here undoes only this line
                        now = utc_now()
                        sid = str(uuid.uuid4())
                        self._insert_draft_row(sid, norm, now)
                        payload = self._finalize_in_tx(sid, now)
                        self._audit(
                            "sighting", sid, "import",
                            {"source": str(p), "line": line_no, "sha256": payload_sha256(payload),
                             **_unknown_pests(payload)}, now,
                        )
                except (StoreError, ValueError, OverflowError, sqlite3.DatabaseError) as e:
                    result.errors.append((line_no, f"not stored: {e}"))
                    continue
                seen.add(content_sha)
                result.imported += 1
                result.ids.append(sid)
                for i, o in enumerate(norm["observations"]):
                    c = check_name(o.get("pest"))
                    if c.status != "catalog":
                        result.warnings.append((line_no, f"observations[{i}].pest: {c.typed!r}: {c.describe()}"))
        return result

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


def _unknown_pests(payload: dict) -> dict:
    """{"unknown_pests": [...]} for the audit entry of a version naming pests the catalog does not know
    (the form has the scout confirm them; the log keeps that they were), else {}."""
    names = sorted({o["pest"] for o in payload.get("observations") or [] if o.get("pest") and not canonical_name(o["pest"])})
    return {"unknown_pests": names} if names else {}


def _changed_fields(old: dict, new: dict) -> dict:
    """{field: [old, new]} for every field-note key that differs (observations compared whole)."""
    out = {}
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            out[key] = [old.get(key), new.get(key)]
    return out


__all__ = ["Store", "ImportResult", "fts_query", "SIGHTING_FTS_COLUMNS", "REPORT_FTS_COLUMNS"]
