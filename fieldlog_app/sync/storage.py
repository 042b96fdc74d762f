"""The office database through SQLAlchemy Core: SQLite by default, PostgreSQL given a database URL.

One schema (the tables below), one migration step, one set of SQL statements
(``text()`` with named parameters, in the SQL both databases speak); what
differs is said here and only here:

* **Writers one at a time.** SQLite takes its write lock at ``BEGIN IMMEDIATE``;
  PostgreSQL takes a transaction-scoped advisory lock. Either way the ingest's
  check-then-insert runs alone, so its idempotency rules need no retry loop.
* **Durability.** SQLite runs in WAL mode with ``synchronous=FULL``; PostgreSQL
  commits durably by default (``synchronous_commit=on``).
* **Stored items are immutable.** A trigger in each database's own language
  refuses to change or delete a stored version.

A farm keeps one SQLite file beside the server; a cooperative or an agronomy
service running one office for many farms points it at PostgreSQL
(``--database-url postgresql+psycopg://user@host/db``).
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import (BigInteger, CheckConstraint, Column, Index, Integer, MetaData, Table, Text, create_engine,
                        event, inspect, text)
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

metadata = MetaData()
# SQLite's rowid alias must be INTEGER; PostgreSQL's sequence should outlive 2**31 rows
_SEQ = BigInteger().with_variant(Integer(), "sqlite")
ADVISORY_LOCK = 0x666C6F67  # "flog": the writers' lock on PostgreSQL

devices = Table(
    "devices", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", Text, nullable=False, unique=True),
    Column("token_sha256", Text, nullable=False, unique=True),
    Column("created_at", Text, nullable=False),
    Column("revoked_at", Text),
    Column("last_seen_at", Text),
    Column("role", Text, nullable=False, server_default="sync"),
)
items = Table(
    "items", metadata,
    Column("server_seq", _SEQ, primary_key=True, autoincrement=True),
    Column("item_id", Text, nullable=False, unique=True),
    Column("kind", Text, CheckConstraint("kind IN ('sighting', 'report')"), nullable=False),
    Column("replaces", Text),
    Column("chain_id", Text, nullable=False),
    Column("version", Integer),
    Column("sighting_id", Text),
    Column("sha256", Text, nullable=False),
    Column("payload", Text, nullable=False),
    Column("device", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("batch_id", Text),
    Column("received_at", Text, nullable=False),
    Column("superseded_by", Text, unique=True),
    Index("idx_items_kind", "kind", "server_seq"),
    Index("idx_items_chain", "chain_id"),
    sqlite_autoincrement=True,
)
conflicts = Table(
    "conflicts", metadata,
    Column("id", _SEQ, primary_key=True, autoincrement=True),
    Column("at", Text, nullable=False),
    Column("device", Text, nullable=False),
    Column("item_id", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("sha256", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("message", Text, nullable=False),
    sqlite_autoincrement=True,
)
# the office (fieldlog_app/office): its users, their sessions, what they did and decided.
# Office decisions live beside the items, never in them, so a stored version stays evidence.
users = Table(
    "users", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", Text, nullable=False, unique=True),
    Column("password_hash", Text, nullable=False),
    Column("role", Text, CheckConstraint("role IN ('viewer', 'manager')"), nullable=False),
    Column("created_at", Text, nullable=False),
    Column("disabled_at", Text),
)
sessions = Table(
    "sessions", metadata,
    Column("token_sha256", Text, primary_key=True),
    Column("user_id", Integer, nullable=False),
    Column("csrf", Text, nullable=False),
    Column("created_at", Text, nullable=False),
    Column("expires_at", Text, nullable=False),
)
audit = Table(
    "audit", metadata,
    Column("id", _SEQ, primary_key=True, autoincrement=True),
    Column("at", Text, nullable=False),
    Column("actor", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("target", Text, nullable=False, server_default=""),
    Column("detail", Text, nullable=False, server_default=""),
    sqlite_autoincrement=True,
)
reviews = Table(
    "reviews", metadata,
    Column("id", _SEQ, primary_key=True, autoincrement=True),
    Column("report_id", Text, nullable=False),
    Column("status", Text, CheckConstraint("status IN ('approved', 'flagged')"), nullable=False),
    Column("reviewer", Text, nullable=False),
    Column("at", Text, nullable=False),
    Column("note", Text, nullable=False, server_default=""),
    Index("idx_reviews_report", "report_id", "id"),
    sqlite_autoincrement=True,
)
# an archived sighting leaves the office's default views; a deleted one leaves every read and export
marks = Table(
    "marks", metadata,
    Column("chain_id", Text, primary_key=True),
    Column("state", Text, CheckConstraint("state IN ('archived', 'deleted')"), nullable=False),
    Column("marked_by", Text, nullable=False),
    Column("at", Text, nullable=False),
)
# migration 2 (office oracle, fieldlog_app/office/check.py): one row per report the office model checked or
# tried to; a report without a row is "awaiting office check". New table only: create_all adds it to an
# older database.
office_checks = Table(
    "office_checks", metadata,
    Column("report_id", Text, primary_key=True),
    Column("status", Text, CheckConstraint("status IN ('awaiting', 'checked', 'error')"), nullable=False),
    Column("model", Text),
    Column("checked_at", Text),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", Text),
    Column("error", Text),
    Column("findings", Text, nullable=False, server_default="[]"),
    Column("summary", Text, nullable=False, server_default="{}"),
    Column("updated_at", Text, nullable=False),
    Index("idx_office_checks_updated", "updated_at"),
)

# migration 3 (office rewrite, fieldlog_app/office/rewrite.py): the office model's own version of a report, stored
# as a report item (source "office") whose payload replaces the field report; this row links the two and keeps
# the rewrite's passes and time. New table only, as above.
office_rewrites = Table(
    "office_rewrites", metadata,
    Column("office_report_id", Text, primary_key=True),
    Column("report_id", Text, nullable=False),
    Column("model", Text),
    Column("summary", Text, nullable=False, server_default="{}"),
    Column("created_at", Text, nullable=False),
    Index("idx_office_rewrites_report", "report_id"),
)

_SQLITE_TRIGGERS = [
    """CREATE TRIGGER IF NOT EXISTS items_frozen BEFORE UPDATE ON items
WHEN NEW.item_id IS NOT OLD.item_id OR NEW.payload IS NOT OLD.payload OR NEW.sha256 IS NOT OLD.sha256
  OR NEW.server_seq IS NOT OLD.server_seq OR NEW.kind IS NOT OLD.kind OR NEW.replaces IS NOT OLD.replaces
  OR (OLD.superseded_by IS NOT NULL AND NEW.superseded_by IS NOT OLD.superseded_by)
BEGIN SELECT RAISE(ABORT, 'fieldlog-server: stored items are immutable'); END""",
    """CREATE TRIGGER IF NOT EXISTS items_no_delete BEFORE DELETE ON items
BEGIN SELECT RAISE(ABORT, 'fieldlog-server: stored items are never deleted'); END""",
]
_POSTGRES_TRIGGERS = [
    """CREATE OR REPLACE FUNCTION fieldlog_items_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN RAISE EXCEPTION 'fieldlog-server: stored items are never deleted'; END IF;
  IF NEW.item_id IS DISTINCT FROM OLD.item_id OR NEW.payload IS DISTINCT FROM OLD.payload
     OR NEW.sha256 IS DISTINCT FROM OLD.sha256 OR NEW.server_seq IS DISTINCT FROM OLD.server_seq
     OR NEW.kind IS DISTINCT FROM OLD.kind OR NEW.replaces IS DISTINCT FROM OLD.replaces
     OR (OLD.superseded_by IS NOT NULL AND NEW.superseded_by IS DISTINCT FROM OLD.superseded_by) THEN
    RAISE EXCEPTION 'fieldlog-server: stored items are immutable';
  END IF;
  RETURN NEW;
END $$""",
    """CREATE OR REPLACE TRIGGER items_frozen BEFORE UPDATE OR DELETE ON items
FOR EACH ROW EXECUTE FUNCTION fieldlog_items_frozen()""",
]


def is_url(target: str | os.PathLike) -> bool:
    return isinstance(target, str) and "://" in target


def make_engine(target: str | os.PathLike, *, busy_timeout: float = 5.0) -> Engine:
    """An engine for a SQLite file path (or ``sqlite:///`` URL) or a PostgreSQL URL."""
    if is_url(target):
        url = str(target)
        if url.startswith("postgresql"):
            # pooled: a PostgreSQL connection is a backend process, too dear to open per operation (SQLite's
            # is a file open); pre-ping drops a connection the server closed (a restart) instead of failing on it
            return create_engine(url, pool_size=5, max_overflow=10, pool_pre_ping=True)
        if not url.startswith("sqlite:///"):
            raise ValueError(f"database URL {url.split('://')[0]}://…: use a SQLite path or postgresql+psycopg://")
        path = url[len("sqlite:///"):]
    else:
        path = str(Path(target).expanduser())
    engine = create_engine(f"sqlite:///{path}", poolclass=NullPool,
                           connect_args={"timeout": busy_timeout, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, record):
        dbapi_conn.isolation_level = None  # SQLAlchemy's begin below decides, not the driver
        dbapi_conn.execute("PRAGMA synchronous = FULL")

    @event.listens_for(engine, "begin")
    def _begin(conn):
        # a writer takes the write lock at once (no deadlock on upgrade); readers begin deferred (WAL)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("fieldlog_write") else "BEGIN")

    return engine


def create_schema(engine: Engine) -> None:
    """Create what is missing and run the migrations (idempotent; safe on a database from any earlier version)."""
    postgres = engine.dialect.name == "postgresql"
    if not postgres:  # outside any transaction, where SQLite allows the switch; it sticks to the file
        raw = engine.raw_connection()
        try:
            raw.driver_connection.execute("PRAGMA journal_mode = WAL")
        finally:
            raw.close()
    with engine.connect().execution_options(fieldlog_write=True) as conn:
        with conn.begin():
            if postgres:
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ADVISORY_LOCK})
            have = set(inspect(conn).get_table_names())
            metadata.create_all(conn, checkfirst=True)
            # migration 1 (office users): devices get a role; every device from before syncs only
            if "devices" in have and "role" not in {c["name"] for c in inspect(conn).get_columns("devices")}:
                conn.execute(text("ALTER TABLE devices ADD COLUMN role TEXT NOT NULL DEFAULT 'sync'"))
            for ddl in _POSTGRES_TRIGGERS if postgres else _SQLITE_TRIGGERS:
                conn.exec_driver_sql(ddl)
