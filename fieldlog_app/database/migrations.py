"""Schema versions of the fieldlog store and the migrations between them.

A handheld may run an old app version for months, so the database carries its
schema version in ``_migrations`` and every open brings it forward, one
migration per transaction (a power cut mid-upgrade leaves the previous version,
never half of the next one). Migrations are append-only: never edit a released
one, add a new one.

v1  base tables: sightings, observations, reports, audit_log
v2  outbox (sync queue, backfilled from what v1 finalized), FTS5 search with
    triggers (sightings.pests column added for it), immutability triggers
v3  sightings.risk_class (the block's pest-risk class, vineyard.fieldnote.RISK_CLASSES),
    NULL for every existing row; the immutability trigger covers it
v4  report review: reports.version, replaces, review_status (generated, edited, approved,
    flagged), reviewed_by, reviewed_at, review_note; every existing report is version 1, generated;
    sightings.pests (the search column) recomputed with catalog names and NFKC folding
v5  office_checks: the farm office model's verdict on each report, fetched at sync (a new table only;
    no existing row is touched)
v6  office_checks.office_version (the office model's own version of the report, JSON, NULL until one
    arrives) and office_version_pending (the office said one is coming); existing rows get NULL and 0
v7  sightings.nothing_found (the form's "Nothing found" choice, kept with a draft: 1 ticked, 0 not), NULL for
    every existing row (not said: the form derives it from the observations, as before)

The file says whose it is: SQLite's header ``application_id`` is APPLICATION_ID
and ``user_version`` the schema version (both kept by ``migrate``).
``identify`` reads them before anything else opens a file, so a database of
another application given as ``--db`` is refused untouched, not switched to WAL
and given a ``_migrations`` table. Files from before the stamp (application_id
0) are recognised by their ``_migrations``, ``sightings`` and ``observations`` tables.
"""

from __future__ import annotations

import json
import os
import sqlite3
import urllib.parse
from typing import Callable

import sqlite_utils

from .canonical import canonical_json, payload_sha256, utc_now
from .errors import StoreError

V1_SQL = """
CREATE TABLE sightings (
    id TEXT PRIMARY KEY NOT NULL,
    status TEXT NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'finalized', 'superseded')),
    version INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1),
    replaces TEXT REFERENCES sightings(id),
    block TEXT, variety TEXT, rows TEXT, date TEXT, time TEXT, scout TEXT, weather TEXT, notes TEXT,
    lat REAL, lon REAL, accuracy_m REAL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    finalized_at TEXT,
    payload_sha256 TEXT,
    content_sha256 TEXT
);
-- one successor per version: the edit history of a sighting is a line, never a fork
CREATE UNIQUE INDEX idx_sightings_replaces ON sightings(replaces) WHERE replaces IS NOT NULL;
CREATE INDEX idx_sightings_date ON sightings(date, time);
CREATE INDEX idx_sightings_block ON sightings(block);
CREATE INDEX idx_sightings_status ON sightings(status);
CREATE INDEX idx_sightings_content ON sightings(content_sha256);

CREATE TABLE observations (
    id INTEGER PRIMARY KEY,
    sighting_id TEXT NOT NULL REFERENCES sightings(id),
    idx INTEGER NOT NULL,
    pest TEXT, life_stage TEXT, unit TEXT,
    sampled INTEGER, infested INTEGER, count INTEGER,
    severity_pct REAL, defoliation_pct REAL,
    UNIQUE (sighting_id, idx)
);
CREATE INDEX idx_observations_pest ON observations(pest COLLATE NOCASE);

CREATE TABLE reports (
    id TEXT PRIMARY KEY NOT NULL,
    sighting_id TEXT NOT NULL REFERENCES sightings(id),
    created_at TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('complete', 'cancelled', 'failed')),
    text TEXT NOT NULL,
    model_pair TEXT, policy TEXT, stats TEXT, provenance TEXT, spans TEXT, findings TEXT,
    clean INTEGER NOT NULL,
    payload_sha256 TEXT,
    sighting_sha256 TEXT
);
CREATE INDEX idx_reports_sighting ON reports(sighting_id, created_at);

CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    entity TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX idx_audit_entity ON audit_log(entity_id, id);
"""

V2_OUTBOX_SQL = """
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('sighting', 'report')),
    replaces TEXT,
    payload TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued'
        CHECK (state IN ('queued', 'sending', 'sent', 'failed', 'needs-attention')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT,
    last_error TEXT,
    receipt TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX idx_outbox_state ON outbox(state, seq);
"""

# Defence in depth: the Store never does these things, but a bug elsewhere (or a
# hand-run UPDATE) must not be able to rewrite what was finalized or queued.
V2_GUARD_SQL = """
CREATE TRIGGER outbox_frozen BEFORE UPDATE ON outbox
WHEN NEW.item_id IS NOT OLD.item_id OR NEW.kind IS NOT OLD.kind OR NEW.replaces IS NOT OLD.replaces
  OR NEW.payload IS NOT OLD.payload OR NEW.sha256 IS NOT OLD.sha256 OR NEW.seq IS NOT OLD.seq
BEGIN SELECT RAISE(ABORT, 'fieldlog: an outbox payload is frozen once queued'); END;

CREATE TRIGGER sightings_immutable BEFORE UPDATE ON sightings
WHEN OLD.status <> 'draft' AND (
     NEW.status NOT IN (OLD.status, 'superseded')
  OR NEW.id IS NOT OLD.id OR NEW.version IS NOT OLD.version OR NEW.replaces IS NOT OLD.replaces
  OR NEW.block IS NOT OLD.block OR NEW.variety IS NOT OLD.variety OR NEW.rows IS NOT OLD.rows
  OR NEW.date IS NOT OLD.date OR NEW.time IS NOT OLD.time OR NEW.scout IS NOT OLD.scout
  OR NEW.weather IS NOT OLD.weather OR NEW.notes IS NOT OLD.notes
  OR NEW.lat IS NOT OLD.lat OR NEW.lon IS NOT OLD.lon OR NEW.accuracy_m IS NOT OLD.accuracy_m
  OR NEW.created_at IS NOT OLD.created_at OR NEW.finalized_at IS NOT OLD.finalized_at
  OR NEW.payload_sha256 IS NOT OLD.payload_sha256 OR NEW.content_sha256 IS NOT OLD.content_sha256
  OR NEW.pests IS NOT OLD.pests)
BEGIN SELECT RAISE(ABORT, 'fieldlog: a finalized sighting is immutable; revise it instead'); END;

CREATE TRIGGER sightings_no_delete BEFORE DELETE ON sightings WHEN OLD.status <> 'draft'
BEGIN SELECT RAISE(ABORT, 'fieldlog: only drafts can be deleted'); END;

CREATE TRIGGER observations_immutable_ins BEFORE INSERT ON observations
WHEN (SELECT status FROM sightings WHERE id = NEW.sighting_id) <> 'draft'
BEGIN SELECT RAISE(ABORT, 'fieldlog: observations of a finalized sighting are immutable'); END;
CREATE TRIGGER observations_immutable_upd BEFORE UPDATE ON observations
WHEN (SELECT status FROM sightings WHERE id = OLD.sighting_id) <> 'draft'
BEGIN SELECT RAISE(ABORT, 'fieldlog: observations of a finalized sighting are immutable'); END;
CREATE TRIGGER observations_immutable_del BEFORE DELETE ON observations
WHEN (SELECT status FROM sightings WHERE id = OLD.sighting_id) <> 'draft'
BEGIN SELECT RAISE(ABORT, 'fieldlog: observations of a finalized sighting are immutable'); END;

CREATE TRIGGER reports_immutable BEFORE UPDATE ON reports
BEGIN SELECT RAISE(ABORT, 'fieldlog: a stored report is immutable'); END;
CREATE TRIGGER reports_no_delete BEFORE DELETE ON reports
WHEN (SELECT status FROM sightings WHERE id = OLD.sighting_id) <> 'draft'
BEGIN SELECT RAISE(ABORT, 'fieldlog: reports of a finalized sighting cannot be deleted'); END;

CREATE TRIGGER audit_append_only_upd BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'fieldlog: the audit log is append-only'); END;
CREATE TRIGGER audit_append_only_del BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'fieldlog: the audit log is append-only'); END;
"""

# ADD COLUMN leaves existing rows as they are (NULL = not set), so their payloads
# and hashes are unchanged: note_of() omits a NULL risk_class. The CHECK is defence
# in depth for hand-run SQL; the store validates and lower-cases before writing.
V3_RISK_CLASS_SQL = """
ALTER TABLE sightings ADD COLUMN risk_class TEXT
    CHECK (risk_class IS NULL OR risk_class IN ('low', 'intermediate', 'high'));

DROP TRIGGER sightings_immutable;
CREATE TRIGGER sightings_immutable BEFORE UPDATE ON sightings
WHEN OLD.status <> 'draft' AND (
     NEW.status NOT IN (OLD.status, 'superseded')
  OR NEW.id IS NOT OLD.id OR NEW.version IS NOT OLD.version OR NEW.replaces IS NOT OLD.replaces
  OR NEW.block IS NOT OLD.block OR NEW.variety IS NOT OLD.variety OR NEW.rows IS NOT OLD.rows
  OR NEW.risk_class IS NOT OLD.risk_class
  OR NEW.date IS NOT OLD.date OR NEW.time IS NOT OLD.time OR NEW.scout IS NOT OLD.scout
  OR NEW.weather IS NOT OLD.weather OR NEW.notes IS NOT OLD.notes
  OR NEW.lat IS NOT OLD.lat OR NEW.lon IS NOT OLD.lon OR NEW.accuracy_m IS NOT OLD.accuracy_m
  OR NEW.created_at IS NOT OLD.created_at OR NEW.finalized_at IS NOT OLD.finalized_at
  OR NEW.payload_sha256 IS NOT OLD.payload_sha256 OR NEW.content_sha256 IS NOT OLD.content_sha256
  OR NEW.pests IS NOT OLD.pests)
BEGIN SELECT RAISE(ABORT, 'fieldlog: a finalized sighting is immutable; revise it instead'); END;
"""

# A report a person reviews gets new versions, as a sighting does: the version row replaces the one before
# (one successor each), and says its review status, who and when. Existing reports are version 1,
# "generated"; their payloads and hashes are unchanged (report_payload leaves the defaults out).
V4_REPORT_REVIEW_SQL = """
ALTER TABLE reports ADD COLUMN version INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1);
ALTER TABLE reports ADD COLUMN replaces TEXT REFERENCES reports(id);
ALTER TABLE reports ADD COLUMN review_status TEXT NOT NULL DEFAULT 'generated'
    CHECK (review_status IN ('generated', 'edited', 'approved', 'flagged'));
ALTER TABLE reports ADD COLUMN reviewed_by TEXT;
ALTER TABLE reports ADD COLUMN reviewed_at TEXT;
ALTER TABLE reports ADD COLUMN review_note TEXT;
CREATE UNIQUE INDEX idx_reports_replaces ON reports(replaces) WHERE replaces IS NOT NULL;
"""

# What the office's model said of a report (fieldlog_app/office/check.py, fetched back at sync). Beside the
# immutable reports, never in them: a verdict may arrive, change status (awaiting → checked) or be refreshed.
V5_OFFICE_CHECKS_SQL = """
CREATE TABLE office_checks (
    report_id TEXT PRIMARY KEY NOT NULL REFERENCES reports(id),
    status TEXT NOT NULL CHECK (status IN ('awaiting', 'checked', 'error')),
    model TEXT,
    checked_at TEXT,
    findings TEXT NOT NULL DEFAULT '[]',
    updated_at TEXT NOT NULL,
    received_at TEXT NOT NULL
);
CREATE INDEX idx_office_checks_updated ON office_checks(updated_at);
"""

# The office's own version of a report (fieldlog_app/office/rewrite.py) rides on its check.
V6_OFFICE_VERSION_SQL = """
ALTER TABLE office_checks ADD COLUMN office_version TEXT;
ALTER TABLE office_checks ADD COLUMN office_version_pending INTEGER NOT NULL DEFAULT 0
    CHECK (office_version_pending IN (0, 1));
"""

# The scout's "Nothing found" choice as last saved with a draft: a draft with the box ticked and no observation
# rows has nothing else to show it by, so it reopened unticked. NULL (existing rows, and a caller that does not
# say) means not said, and the form derives the choice from the observations as it did before. It is no part of
# the field note: in no payload or hash, so no row's hash changes; a finalized sighting's nothing-found is what
# its observations say (vineyard.fieldnote.nothing_found), which is why the immutability trigger leaves it out.
V7_NOTHING_FOUND_SQL = """
ALTER TABLE sightings ADD COLUMN nothing_found INTEGER
    CHECK (nothing_found IS NULL OR nothing_found IN (0, 1));
"""

APPLICATION_ID = 0x464C4F47  # "FLOG" in SQLite's header (offset 68)
SQLITE_MAGIC = b"SQLite format 3\x00"

SIGHTING_FTS_COLUMNS = ("block", "variety", "scout", "weather", "notes", "pests")
REPORT_FTS_COLUMNS = ("text",)


def _rows(db: sqlite_utils.Database, sql: str, params=()) -> list[dict]:
    cur = db.conn.execute(sql, params)
    keys = [d[0] for d in cur.description]
    return [dict(zip(keys, r)) for r in cur.fetchall()]


def _m001_base(db: sqlite_utils.Database) -> None:
    db.executescript(V1_SQL)


def _m002_outbox_fts(db: sqlite_utils.Database) -> None:
    # Local imports: the payload builders are shared with the Store so that rows
    # backfilled here hash exactly like rows queued by a current finalize().
    from .payloads import report_payload, sighting_payload
    from .validation import pests_text

    db["sightings"].add_column("pests", str)
    obs_by_sighting: dict[str, list[dict]] = {}
    for o in _rows(db, "SELECT * FROM observations ORDER BY sighting_id, idx"):
        obs_by_sighting.setdefault(o["sighting_id"], []).append(o)
    for sid, obs in obs_by_sighting.items():
        db.conn.execute("UPDATE sightings SET pests = ? WHERE id = ?", (pests_text(obs), sid))

    db.executescript(V2_OUTBOX_SQL)
    # Backfill: v1 finalized data was never queued. Queue every finalized version
    # and every complete report of a non-draft sighting, in the order they happened.
    items: list[tuple[str, int, str, str, dict]] = []  # (time, order, kind, item_id, payload)
    for s in _rows(db, "SELECT * FROM sightings WHERE status <> 'draft'"):
        s["observations"] = obs_by_sighting.get(s["id"], [])
        items.append((s["finalized_at"] or s["created_at"], 0, "sighting", s["id"], sighting_payload(s)))
    for r in _rows(db, """SELECT r.* FROM reports r JOIN sightings s ON s.id = r.sighting_id
                          WHERE r.status = 'complete' AND s.status <> 'draft'"""):
        for key in ("model_pair", "policy", "stats", "provenance", "spans", "findings"):
            r[key] = json.loads(r[key]) if r[key] is not None else None
        items.append((r["created_at"], 1, "report", r["id"], report_payload(r)))
    now = utc_now()
    for _, _, kind, item_id, payload in sorted(items, key=lambda t: (t[0], t[1])):
        db.conn.execute(
            "INSERT INTO outbox (item_id, kind, replaces, payload, sha256, state, attempts, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, 'queued', 0, ?, ?)",
            (item_id, kind, payload.get("replaces"), canonical_json(payload), payload_sha256(payload), now, now),
        )

    db["sightings"].enable_fts(SIGHTING_FTS_COLUMNS, create_triggers=True, tokenize="porter")
    db["reports"].enable_fts(REPORT_FTS_COLUMNS, create_triggers=True, tokenize="porter")
    db.executescript(V2_GUARD_SQL)


def _m003_risk_class(db: sqlite_utils.Database) -> None:
    db.executescript(V3_RISK_CLASS_SQL)


def _m004_report_review(db: sqlite_utils.Database) -> None:
    db.executescript(V4_REPORT_REVIEW_SQL)
    # The search column of every sighting again, now with the catalog's name beside a misspelling
    # ("berry moht (grape berry moth)") and NFKC-folded, so a search for "moth" finds what was logged
    # before. ``pests`` is the store's index, in no payload or hash; the immutability trigger is lifted
    # for this one UPDATE and put back unchanged (the same statement v3 created), in this transaction.
    from .validation import pests_text

    trigger = V3_RISK_CLASS_SQL.split("DROP TRIGGER sightings_immutable;", 1)[1]
    db.conn.execute("DROP TRIGGER sightings_immutable")
    obs_by_sighting: dict[str, list[dict]] = {}
    for o in _rows(db, "SELECT * FROM observations ORDER BY sighting_id, idx"):
        obs_by_sighting.setdefault(o["sighting_id"], []).append(o)
    for sid, obs in obs_by_sighting.items():
        db.conn.execute("UPDATE sightings SET pests = ? WHERE id = ? AND pests IS NOT ?",
                        (pests_text(obs) or None, sid, pests_text(obs) or None))
    db.executescript(trigger)


def _m005_office_checks(db: sqlite_utils.Database) -> None:
    db.executescript(V5_OFFICE_CHECKS_SQL)


def _m006_office_version(db: sqlite_utils.Database) -> None:
    db.executescript(V6_OFFICE_VERSION_SQL)


def _m007_nothing_found(db: sqlite_utils.Database) -> None:
    db.executescript(V7_NOTHING_FOUND_SQL)


Migration = tuple[int, str, Callable[[sqlite_utils.Database], None]]
MIGRATIONS: list[Migration] = [
    (1, "base tables: sightings, observations, reports, audit_log", _m001_base),
    (2, "outbox, full-text search, immutability triggers", _m002_outbox_fts),
    (3, "sightings.risk_class", _m003_risk_class),
    (4, "report review: versions, status, who and when", _m004_report_review),
    (5, "office_checks: the office model's verdict on each report", _m005_office_checks),
    (6, "office_checks.office_version: the office model's own version of a report", _m006_office_version),
    (7, "sightings.nothing_found: the form's Nothing found choice kept with a draft", _m007_nothing_found),
]
LATEST = MIGRATIONS[-1][0]


def readonly_uri(path: str, *, immutable: bool = False) -> str:
    """SQLite URI opening ``path`` read-only; ``immutable`` also skips locks, -wal and -shm (only for a file nobody
    can be writing: a read-only filesystem, or a full disk with no WAL content)."""
    return f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro" + ("&immutable=1" if immutable else "")


def identify(path: str) -> str:
    """Whose file ``path`` is, read before SQLite opens it for writing: ``"new"`` (missing or empty),
    ``"fieldlog"``; raises StoreError for any other file, naming why."""
    try:
        with open(path, "rb") as f:
            head = f.read(100)
    except FileNotFoundError:
        return "new"
    except OSError as e:
        raise StoreError(f"cannot read {path}: {e.strerror or e}") from None
    if not head:
        return "new"
    if len(head) < 100 or not head.startswith(SQLITE_MAGIC):
        raise StoreError(f"{path}: not a usable fieldlog database (not an SQLite file)")
    app_id = int.from_bytes(head[68:72], "big")
    if app_id == APPLICATION_ID:
        return "fieldlog"
    if app_id != 0:
        raise StoreError(f"{path}: not a fieldlog database (its SQLite application_id is {app_id:#010x}, another "
                         "application's); fieldlog does not open it")
    return _inspect_unstamped(path)


def _inspect_unstamped(path: str) -> str:
    """An SQLite file without an application id: fieldlog's from before the stamp, an empty one, or another's.
    Looked at through a read-only connection, so nothing is written whatever it is."""
    try:
        conn = connect_readonly(path, timeout=5.0)
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{path}: not a usable fieldlog database ({e})") from None
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{path}: not a usable fieldlog database ({e})") from None
    finally:
        conn.close()
    if app_id == APPLICATION_ID:  # stamped in a WAL commit the file header does not show yet
        return "fieldlog"
    if app_id != 0:
        raise StoreError(f"{path}: not a fieldlog database (its SQLite application_id is {app_id & 0xFFFFFFFF:#010x}, "
                         "another application's); fieldlog does not open it")
    if not tables:
        return "new"
    if {"_migrations", "sightings", "observations"} <= tables:
        return "fieldlog"
    names = ", ".join(sorted(tables)[:5]) + (" ..." if len(tables) > 5 else "")
    raise StoreError(f"{path}: not a fieldlog database (it holds tables {names}); fieldlog does not open it")


def connect_readonly(path: str, *, timeout: float = 10.0) -> sqlite3.Connection:
    """A read-only connection that also works where SQLite cannot create or grow its -shm file (a read-only
    folder, a full disk): then, if no WAL content is waiting, the file is opened immutable."""
    conn = sqlite3.connect(readonly_uri(path), uri=True, timeout=timeout, check_same_thread=False)
    try:
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError as e:
        conn.close()
        wal = path + "-wal"
        about_files = str(getattr(e, "sqlite_errorname", "")).startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN",
                                                                             "SQLITE_READONLY"))
        if not about_files or (os.path.exists(wal) and os.path.getsize(wal) > 0):
            raise  # busy, or committed data waits in the WAL: an immutable view would miss it
    conn = sqlite3.connect(readonly_uri(path, immutable=True), uri=True, timeout=timeout, check_same_thread=False)
    conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    return conn


def stamp(db: sqlite_utils.Database) -> None:
    """Mark the file as fieldlog's (application_id) if nobody has; run before the switch to WAL, so a new
    file's header says so at once."""
    if db.conn.execute("PRAGMA application_id").fetchone()[0] == 0:
        db.conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")


def _ensure_version_table(db: sqlite_utils.Database) -> None:
    db.conn.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    if db.conn.in_transaction:  # legacy sqlite3 transaction handling may have opened one
        db.conn.execute("COMMIT")


def current_version(db: sqlite_utils.Database) -> int:
    """The schema version of ``db`` (0 for an empty database)."""
    if "_migrations" not in db.table_names():
        return 0
    row = db.conn.execute("SELECT MAX(version) FROM _migrations").fetchone()
    return row[0] or 0


def migrate(db: sqlite_utils.Database, target: int | None = None) -> list[int]:
    """Apply pending migrations up to ``target`` (default: latest); returns the versions applied.

    Each migration runs in its own BEGIN IMMEDIATE transaction together with its
    ``_migrations`` row, so two processes opening the same file cannot both apply it.
    """
    target = LATEST if target is None else target
    if current_version(db) > LATEST:
        raise StoreError(
            f"this database has schema version {current_version(db)}, newer than this fieldlog "
            f"understands ({LATEST}); upgrade fieldlog"
        )
    stamp(db)
    _ensure_version_table(db)
    applied: list[int] = []
    conn = db.conn
    for version, name, fn in MIGRATIONS:
        if version > target:
            break
        conn.execute("BEGIN IMMEDIATE")
        try:
            done = conn.execute("SELECT 1 FROM _migrations WHERE version = ?", (version,)).fetchone()
            if not done:
                fn(db)
                conn.execute(
                    "INSERT INTO _migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (version, name, utc_now()),
                )
                applied.append(version)
            if conn.execute("PRAGMA user_version").fetchone()[0] < version:  # in the same commit
                conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return applied
