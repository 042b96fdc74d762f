"""The farm-office sync database: devices and their tokens, the items devices upload and the rules that
decide each one, over its own database (SQLite, or PostgreSQL; storage.py). app.py serves it over HTTP.

A batch is **all-or-nothing**: it is committed in one transaction and either
every item gets a receipt (200) or nothing is stored (401/403/400/413/415/422/409/503).
On a conflict the answer is 409 listing every conflicting item; the client marks
those "needs-attention" and re-sends the rest. All-or-nothing keeps one simple
rule for the device ("a 200 means everything in it is safe at the office") and
lets 409 be a real HTTP status, as in ODK Central.

Idempotency (ODK Central style), decided per item inside that transaction:

* same ``item_id``, same sha256           → ``duplicate`` receipt (the original server_seq and
  received_at), nothing new stored: re-sending after a lost response is always safe;
* same ``item_id``, different sha256      → 409 ``diverging-payload``;
* a revision whose ``replaces`` is not the server's current version of that
  sighting (unknown, or already replaced)  → 409 ``unknown-base`` / ``stale-edit``;
* a revision whose ``version`` is not one more than the version it replaces → 409 ``wrong-version``;
* a report of a sighting version the server does not hold (earlier in the same
  batch counts)                             → 409 ``unknown-sighting``;
* a revision of, or a report on, a sighting another device logged → 409 ``other-device``;
* a reviewed report version (its payload's ``version`` and ``replaces``; the item's own ``replaces``
  stays null) is held to the same rules: it replaces a field report the server holds (earlier in the
  same batch counts) of the same sighting version, from the same device (``unknown-base`` /
  ``other-device``), one no other version replaced yet (``stale-edit``, with the current version), and
  its version is one more than that one's (``wrong-version``). The office's own version of a report
  (office/rewrite.py) stays beside the field report: it never makes a device's review stale, and no
  device version may replace it.

Who may revise what: a sighting belongs to the device that uploaded its first
version (over HTTP or in a bundle it signed), and only that device may upload
later versions of it or reports on it. A device's history is a line of edits
made on that handheld; another handheld never holds the sighting, so an edit
from it is a copied database or a forgery. A replacement handheld keeps the
sightings by being registered under the same name (``add-device NAME --replace``).

Durability: a receipt is only sent after its commit is on disk (SQLite in WAL mode with
``synchronous=FULL``; PostgreSQL's durable commit); a server killed at any moment has
either the whole batch or none of it. Writers take turns (storage.py), so the rules
above are decided against a database nobody else is changing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from fieldlog_app.database.canonical import canonical_json, utc_now

from .protocol import Item
from . import storage
from .signing import NoSuchSigner, hash_token, key_from_token_hash

log = logging.getLogger("fieldlog.server")

TOKEN_PREFIX = "fl_"
_DEVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}$")

DEVICE_ROLES = ("sync", "reader")  # sync: upload only; reader: may also read the farm's data through /v1

# Items of a deleted sighting chain (its versions and the reports on them), for WHERE clauses.
_VISIBLE = ("items.chain_id NOT IN (SELECT chain_id FROM marks WHERE state = 'deleted') AND (items.sighting_id IS NULL"
            " OR items.sighting_id NOT IN (SELECT v.item_id FROM items v JOIN marks m ON m.chain_id = v.chain_id"
            " WHERE m.state = 'deleted'))")


class ServerError(Exception):
    """A server-side operation the caller can show as a message (bad device name, unknown device ...)."""


class AuthError(ServerError):
    def __init__(self, message: str, status: int, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class BusyError(ServerError):
    """The database stayed locked longer than the busy timeout: the client should retry."""


@dataclass
class Conflict:
    index: int
    item_id: str
    kind: str
    sha256: str
    reason: str
    message: str
    server_sha256: str | None = None
    current_id: str | None = None

    def to_json(self) -> dict:
        out = {"index": self.index, "item_id": self.item_id, "reason": self.reason, "message": self.message}
        if self.server_sha256:
            out["server_sha256"] = self.server_sha256
        if self.current_id:
            out["current_id"] = self.current_id
        return out


@dataclass
class IngestResult:
    receipts: list[dict] = field(default_factory=list)   # committed (or, when conflicts and all-or-nothing, none)
    conflicts: list[Conflict] = field(default_factory=list)
    received_at: str = ""

    @property
    def accepted(self) -> int:
        return sum(r["status"] == "accepted" for r in self.receipts)

    @property
    def duplicate(self) -> int:
        return sum(r["status"] == "duplicate" for r in self.receipts)


def default_server_db() -> Path:
    """``$FIELDLOG_SERVER_DB`` or ``<user data dir>/fieldlog/server.sqlite3``."""
    env = os.environ.get("FIELDLOG_SERVER_DB")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("fieldlog")) / "server.sqlite3"


class ServerDB:
    """The office database. Opens one short-lived connection per operation, so it is
    safe from Starlette's thread pool and from a second process (``add-device`` while serving)."""

    def __init__(self, path: str | os.PathLike, *, busy_timeout: float = 5.0):
        """``path``: a SQLite file (created with its folder) or a database URL (``postgresql+psycopg://…``)."""
        self.busy_timeout = busy_timeout
        if storage.is_url(path):
            self.path = str(path)
        else:
            self.path = str(Path(path).expanduser())
            p = Path(self.path)
            if p.is_dir():
                raise ServerError(f"{p} is a directory, not a database file")
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ServerError(f"cannot create the folder for {p}: {e}") from None
        try:
            self.engine = storage.make_engine(path, busy_timeout=busy_timeout)
            self.postgres = self.engine.dialect.name == "postgresql"
            if self.postgres:  # never print a password that came in the URL
                self.path = self.engine.url.render_as_string(hide_password=True)
            storage.create_schema(self.engine)
        except ValueError as e:
            raise ServerError(str(e)) from None
        except sa_exc.SQLAlchemyError as e:
            raise ServerError(f"{self.path}: not a usable fieldlog server database "
                              f"({getattr(e, 'orig', None) or e})") from None

    @contextlib.contextmanager
    def connect(self) -> Iterator["_Conn"]:
        """A connection for reading (one per operation: safe from the thread pool and beside a CLI)."""
        with self.engine.connect() as conn:
            yield _Conn(conn)

    @contextlib.contextmanager
    def transaction(self) -> Iterator["_Conn"]:
        """A write transaction, one writer at a time (storage.py says how on each database)."""
        with self.engine.connect().execution_options(fieldlog_write=True) as conn:
            try:
                conn.begin()
                if self.postgres:
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": storage.ADVISORY_LOCK})
            except sa_exc.OperationalError as e:
                raise BusyError(f"the server database is busy ({e.orig})") from None
            try:
                yield _Conn(conn)
            except BaseException:
                if conn.in_transaction():
                    conn.rollback()
                raise
            else:
                if conn.in_transaction():  # the body may have rolled back on purpose
                    conn.commit()

    # ------------------------------------------------------------------ devices
    def add_device(self, name: str, *, replace: bool = False, role: str = "sync") -> str:
        """Register a device and return its new token (shown once; only its sha256 is stored).

        ``replace=True`` issues a fresh token for an existing device (the old one
        stops working, a revoked device is re-enabled). ``role`` "reader" lets the
        token read the farm's data through /v1 as well; "sync" (the default) only uploads."""
        name = (name or "").strip()
        if not _DEVICE_NAME.match(name):
            raise ServerError(
                f"device name {name!r}: use 1-64 letters, digits, spaces or . _ @ - (starting with a letter or digit)"
            )
        if role not in DEVICE_ROLES:
            raise ServerError(f"device role {role!r}: use one of {', '.join(DEVICE_ROLES)}")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = utc_now()
        with self.transaction() as conn:
            row = conn.execute("SELECT id FROM devices WHERE name = ?", (name,)).fetchone()
            if row is not None and not replace:
                raise ServerError(f"device {name!r} already exists; use --replace to issue a new token for it")
            if row is None:
                conn.execute("INSERT INTO devices (name, token_sha256, created_at, role) VALUES (?, ?, ?, ?)",
                             (name, hash_token(token), now, role))
            else:
                conn.execute("UPDATE devices SET token_sha256 = ?, revoked_at = NULL, role = ? WHERE id = ?",
                             (hash_token(token), role, row["id"]))
        return token

    def revoke_device(self, name: str) -> None:
        with self.transaction() as conn:
            row = conn.execute("SELECT id, revoked_at FROM devices WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise ServerError(f"no device named {name!r}")
            if row["revoked_at"] is None:
                conn.execute("UPDATE devices SET revoked_at = ? WHERE id = ?", (utc_now(), row["id"]))

    def list_devices(self) -> list[dict]:
        with self.connect() as conn:
            return [dict(r) for r in conn.execute(
                "SELECT d.name, d.role, d.created_at, d.revoked_at, d.last_seen_at, "
                "(SELECT COUNT(*) FROM items i WHERE i.device = d.name) AS items FROM devices d ORDER BY d.name"
            )]

    def card_key(self, name: Any) -> bytes:
        """The key that signs this device's bundles and receipts (signing.py); NoSuchSigner when no active
        device has that name."""
        if not isinstance(name, str) or not _DEVICE_NAME.match(name):
            raise NoSuchSigner(f"{str(name)[:80]!r} is not a device name")
        with self.connect() as conn:
            row = conn.execute("SELECT token_sha256, revoked_at FROM devices WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NoSuchSigner(f"no device named {name!r} on this server")
        if row["revoked_at"] is not None:
            raise NoSuchSigner(f"device {name!r} was revoked on {row['revoked_at']}")
        return key_from_token_hash(row["token_sha256"])

    def authenticate(self, authorization: str | None) -> str:
        """Device name for an ``Authorization`` header value, or AuthError (401 missing/invalid, 403 revoked).

        Tokens are looked up by their sha256, so the comparison never touches the
        secret itself and a stolen database does not reveal usable tokens."""
        if not authorization:
            raise AuthError("missing Authorization header (expected 'Bearer <device token>')", 401)
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError("malformed Authorization header (expected 'Bearer <device token>')", 401)
        with self.connect() as conn:
            row = conn.execute("SELECT name, revoked_at FROM devices WHERE token_sha256 = ?",
                               (hash_token(token),)).fetchone()
        if row is None:
            raise AuthError("invalid device token", 401)
        if row["revoked_at"] is not None:
            raise AuthError(f"device {row['name']!r} was revoked on {row['revoked_at']}", 403)
        return row["name"]

    def device_role(self, name: str) -> str | None:
        with self.connect() as conn:
            row = conn.execute("SELECT role FROM devices WHERE name = ?", (name,)).fetchone()
        return row["role"] if row else None

    # ------------------------------------------------------------------ ingest
    def ingest(self, items: list[Item], *, device: str, source: str = "http", batch_id: str | None = None,
               all_or_nothing: bool = True) -> IngestResult:
        """Store validated items in one transaction; see the module docstring for the rules.

        ``all_or_nothing`` (HTTP batches): any conflict rolls the whole batch back
        and the result has conflicts but no receipts. Otherwise (bundle import)
        every non-conflicting item is stored and the conflicts are reported."""
        now = utc_now()
        result = IngestResult(received_at=now)
        try:
            with self.transaction() as conn:
                for index, item in enumerate(items):
                    outcome = self._ingest_one(conn, index, item, device, source, batch_id, now)
                    if isinstance(outcome, Conflict):
                        result.conflicts.append(outcome)
                    else:
                        result.receipts.append(outcome)
                if result.conflicts and all_or_nothing:
                    conn.rollback()
                    result.receipts = []
                else:
                    conn.execute("UPDATE devices SET last_seen_at = ? WHERE name = ?", (now, device))
        except sa_exc.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                raise BusyError(f"the server database is busy ({e.orig})") from None
            raise
        if result.conflicts:
            self._log_conflicts(device, result.conflicts, now)
        return result

    def _ingest_one(self, conn: "_Conn", index: int, item: Item, device: str, source: str,
                    batch_id: str | None, now: str) -> dict | Conflict:
        def conflict(reason: str, message: str, **kw) -> Conflict:
            return Conflict(index, item.item_id, item.kind, item.sha256, reason, message, **kw)

        have = conn.execute("SELECT * FROM items WHERE item_id = ?", (item.item_id,)).fetchone()
        if have is not None:
            if have["kind"] != item.kind:
                return conflict("kind-mismatch", f"the server holds {item.item_id} as a {have['kind']}, not a {item.kind}",
                                server_sha256=have["sha256"])
            if have["sha256"] != item.sha256:
                return conflict(
                    "diverging-payload",
                    f"the server already holds {item.kind} {item.item_id} with different content "
                    f"(server sha256 {have['sha256'][:12]}…, device {item.sha256[:12]}…); a finalized version "
                    "never changes, so one of the two copies was altered",
                    server_sha256=have["sha256"],
                )
            return _receipt(have, "duplicate")
        chain_id = item.item_id
        if item.replaces is not None:
            base = conn.execute("SELECT * FROM items WHERE item_id = ?", (item.replaces,)).fetchone()
            if base is None:
                return conflict("unknown-base",
                                f"this edit replaces {item.replaces}, a version the server does not hold")
            if base["kind"] != "sighting":
                return conflict("unknown-base", f"this edit replaces {item.replaces}, which is a {base['kind']}")
            if base["superseded_by"] is not None:
                head = self._head(conn, base["item_id"])
                return conflict(
                    "stale-edit",
                    f"this edit replaces {item.replaces}, but the server's current version of that sighting "
                    f"is {head}; make the change on the current version",
                    current_id=head,
                )
            if base["device"] != device:
                return conflict("other-device",
                                f"this edit replaces {item.replaces}, a sighting logged by device {base['device']!r}; "
                                "only that device may revise it")
            if item.version != (base["version"] or 0) + 1:
                return conflict("wrong-version",
                                f"this edit says it is version {item.version}, but it replaces version "
                                f"{base['version']}, so it must be version {(base['version'] or 0) + 1}")
            chain_id = base["chain_id"]
        payload = item.payload
        if item.kind == "report":
            of = conn.execute("SELECT kind, device FROM items WHERE item_id = ?",
                              (payload.get("sighting_id"),)).fetchone()
            if of is None or of["kind"] != "sighting":
                return conflict("unknown-sighting",
                                f"this report is of sighting {payload.get('sighting_id')}, which the server does not "
                                "hold; send the sighting first")
            if of["device"] != device:
                return conflict("other-device",
                                f"this report is of sighting {payload.get('sighting_id')}, logged by device "
                                f"{of['device']!r}; only that device reports on it")
            if payload.get("replaces") is not None:
                refused = self._check_report_version(conn, item, device, conflict)
                if refused is not None:
                    return refused
        seq = conn.execute(
            "INSERT INTO items (item_id, kind, replaces, chain_id, version, sighting_id, sha256, payload, device,"
            " source, batch_id, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING server_seq",
            (item.item_id, item.kind, item.replaces, chain_id, item.version,
             payload.get("sighting_id") if item.kind == "report" else None,
             item.sha256, canonical_json(payload), device, source, batch_id, now),
        )
        if item.replaces is not None:
            conn.execute("UPDATE items SET superseded_by = ? WHERE item_id = ?", (item.item_id, item.replaces))
        return {"item_id": item.item_id, "kind": item.kind, "sha256": item.sha256, "status": "accepted",
                "server_seq": seq.fetchone()["server_seq"], "received_at": now}

    @staticmethod
    def _check_report_version(conn: "_Conn", item: Item, device: str, conflict) -> Conflict | None:
        """The conflict a reviewed report version is refused with, or None (see the module docstring).

        A report item's own ``replaces`` is null (the office keeps every version as its own report), so the
        chain is read from the payloads: the versions of one report are reports of one sighting version."""
        payload = item.payload
        rid, sid, version = payload["replaces"], payload.get("sighting_id"), payload.get("version")
        base = conn.execute("SELECT * FROM items WHERE item_id = ?", (rid,)).fetchone()
        if base is None:
            return conflict("unknown-base", f"this reviewed report replaces {rid}, a report the server does not "
                                            "hold; send that version first")
        if base["kind"] != "report":
            return conflict("unknown-base", f"this reviewed report replaces {rid}, which is a {base['kind']}, "
                                            "not a report")
        if base["source"] == "office":
            return conflict("unknown-base", f"this reviewed report replaces {rid}, the office's own version of a "
                                            "report; a device reviews the field report")
        if base["device"] != device:
            return conflict("other-device", f"this reviewed report replaces {rid}, a report from device "
                                            f"{base['device']!r}; only that device may review it")
        if base["sighting_id"] != sid:
            return conflict("unknown-base", f"this reviewed report is of sighting {sid}, but the report it "
                                            f"replaces, {rid}, is of sighting {base['sighting_id']}; a review "
                                            "keeps the sighting of the report it reviews")
        # every field report of that sighting version, in server order: which one replaces which
        successor: dict[str, str] = {}
        for r in conn.execute("SELECT item_id, payload FROM items WHERE kind = 'report' AND sighting_id = ?"
                              " AND source <> 'office' ORDER BY server_seq", (sid,)):
            replaced = json.loads(r["payload"]).get("replaces")
            if isinstance(replaced, str):
                successor.setdefault(replaced, r["item_id"])
        if rid in successor:
            head, seen = rid, {rid}
            while head in successor and successor[head] not in seen:
                head = successor[head]
                seen.add(head)
            return conflict("stale-edit", f"this reviewed report replaces {rid}, but the server's current version "
                                          f"of that report is {head}; review the current version",
                            current_id=head)
        base_version = json.loads(base["payload"]).get("version") or 1  # a report as generated is version 1
        if version != base_version + 1:
            return conflict("wrong-version", f"this reviewed report says it is version {version}, but it replaces "
                                             f"version {base_version}, so it must be version {base_version + 1}")
        return None

    @staticmethod
    def _head(conn: "_Conn", item_id: str) -> str:
        seen = {item_id}
        while True:
            row = conn.execute("SELECT superseded_by FROM items WHERE item_id = ?", (item_id,)).fetchone()
            nxt = row["superseded_by"] if row else None
            if nxt is None or nxt in seen:
                return item_id
            seen.add(nxt)
            item_id = nxt

    def _log_conflicts(self, device: str, conflicts: list[Conflict], now: str) -> None:
        try:
            with self.transaction() as conn:
                conn.executemany(
                    "INSERT INTO conflicts (at, device, item_id, kind, sha256, reason, message) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(now, device, c.item_id, c.kind, c.sha256, c.reason, c.message) for c in conflicts],
                )
        except (sa_exc.SQLAlchemyError, BusyError) as e:  # the log is a convenience; the answer matters more
            log.warning("could not log %d conflict(s): %s", len(conflicts), e)

    # ------------------------------------------------------------------ reading
    def list_items(self, *, kind: str | None = None, since: int = 0, limit: int = 1000, current: bool = False,
                   device: str | None = None, with_payload: bool = False, include_deleted: bool = False,
                   chain_id: str | None = None, item_id: str | None = None) -> list[dict]:
        """Stored items in server order; items the office deleted are left out unless ``include_deleted``."""
        sql = ("SELECT server_seq, item_id, kind, replaces, chain_id, version, sighting_id, sha256, device, source,"
               " batch_id, received_at, superseded_by" + (", payload" if with_payload else "") +
               " FROM items WHERE server_seq > ?")
        params: list[Any] = [since]
        if not include_deleted:
            sql += " AND " + _VISIBLE
        if chain_id is not None:
            sql += " AND chain_id = ?"
            params.append(chain_id)
        if item_id is not None:
            sql += " AND item_id = ?"
            params.append(item_id)
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        if current:
            sql += " AND superseded_by IS NULL"
        if device is not None:
            sql += " AND device = ?"
            params.append(device)
        sql += " ORDER BY server_seq LIMIT ?"
        params.append(limit)
        with self.connect() as conn:
            rows = [dict(r) for r in conn.execute(sql, params)]
        for r in rows:
            r["current"] = r["superseded_by"] is None
            if with_payload:
                r["payload"] = json.loads(r["payload"])
        return rows

    def counts(self) -> dict[str, int]:
        with self.connect() as conn:
            out = {"sighting": 0, "report": 0}
            for r in conn.execute("SELECT kind, COUNT(*) AS n FROM items GROUP BY kind"):
                out[r["kind"]] = r["n"]
            out["conflicts"] = conn.execute("SELECT COUNT(*) AS n FROM conflicts").fetchone()["n"]
            out["devices"] = conn.execute("SELECT COUNT(*) AS n FROM devices WHERE revoked_at IS NULL").fetchone()["n"]
        return out

    def conflicts(self, limit: int = 100, *, unresolved: bool = False) -> list[dict]:
        """Logged 409s, newest first; ``unresolved``: only those whose item the server still does not hold
        (a device that resolved one sends it again, under its id, or a new version in its place)."""
        where = " WHERE NOT EXISTS (SELECT 1 FROM items i WHERE i.item_id = conflicts.item_id)" if unresolved else ""
        with self.connect() as conn:
            return [dict(r) for r in conn.execute(f"SELECT * FROM conflicts{where} ORDER BY id DESC LIMIT ?", (limit,))]

    def export_sightings(self, *, all_versions: bool = False) -> list[dict]:
        """Sighting dicts (payload + status/device/received_at), ordered by date, for the writers below."""
        rows = self.list_items(kind="sighting", limit=10**9, current=not all_versions, with_payload=True)
        out = []
        for r in rows:
            s = dict(r["payload"])
            s["status"] = "finalized" if r["current"] else "superseded"
            s["device"] = r["device"]
            s["received_at"] = r["received_at"]
            s["server_seq"] = r["server_seq"]
            s["chain_id"] = r["chain_id"]
            out.append(s)
        out.sort(key=lambda s: (s.get("date") or "", s.get("time") or "", s["server_seq"]))
        reports = self._latest_reports()
        marks = self.marks()
        with self.connect() as conn:
            texts = {r["item_id"]: json.loads(r["payload"]).get("text") for r in conn.execute(
                "SELECT item_id, payload FROM items WHERE kind = 'report' AND " + _VISIBLE)}
        reviews = self.latest_reviews()
        for s in out:
            rid = reports.get(s["id"])
            s["latest_report_id"] = rid
            s["office_status"] = marks.get(s["chain_id"], {}).get("state", "active")
            review = reviews.get(rid) if rid else None
            s["report_review"] = review["status"] if review else ("unreviewed" if rid else "")
            s["report_reviewer"] = review["reviewer"] if review else ""
            s["report_text"] = texts.get(rid) if rid else ""
        return out

    # ------------------------------------------------------------------ office decisions (fieldlog_app/office)
    def marks(self) -> dict[str, dict]:
        """chain_id -> {"state": "archived" | "deleted", "marked_by", "at"}."""
        with self.connect() as conn:
            return {r["chain_id"]: dict(r) for r in conn.execute("SELECT * FROM marks")}

    def latest_reviews(self) -> dict[str, dict]:
        """report_id -> its latest office review {"status", "reviewer", "at", "note"}."""
        with self.connect() as conn:
            return {r["report_id"]: dict(r) for r in conn.execute(
                "SELECT * FROM reviews WHERE id IN (SELECT MAX(id) FROM reviews GROUP BY report_id)")}

    def _latest_reports(self) -> dict[str, str]:
        with self.connect() as conn:
            out: dict[str, str] = {}
            # the office's own version of a report (office/rewrite.py) stays beside the field report, not over it
            for r in conn.execute("SELECT item_id, sighting_id FROM items WHERE kind = 'report' AND source <> 'office'"
                                  " AND " + _VISIBLE + " ORDER BY server_seq"):
                out[r["sighting_id"]] = r["item_id"]
        return out


class _Conn:
    """A SQLAlchemy connection whose ``execute`` takes the statements as written in this module: SQL that
    SQLite and PostgreSQL both speak, with ``?`` placeholders bound as named ``text()`` parameters, and
    rows as mappings (``row["name"]``)."""

    def __init__(self, conn):
        self.conn = conn

    def execute(self, sql: str, params: Iterable[Any] = ()):
        parts = sql.split("?")
        named = parts[0] + "".join(f":p{i}{part}" for i, part in enumerate(parts[1:]))
        return self.conn.execute(text(named), {f"p{i}": v for i, v in enumerate(params)}).mappings()

    def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.execute(sql, row)

    def rollback(self) -> None:
        self.conn.rollback()


def _receipt(row, status: str) -> dict:
    return {"item_id": row["item_id"], "kind": row["kind"], "sha256": row["sha256"], "status": status,
            "server_seq": row["server_seq"], "received_at": row["received_at"]}
