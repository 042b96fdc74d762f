"""A throwaway PostgreSQL database per test, for running the sync tests on PostgreSQL as well as SQLite.

The server is found at ``$FIELDLOG_TEST_POSTGRES_URL`` (default: the local cluster's Unix socket, as the
current OS user, which `.ci/run` makes a superuser); each test gets its own database, dropped after.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from typing import Iterator

DEFAULT_URL = "postgresql+psycopg:///postgres?host=/var/run/postgresql"


def admin_url() -> str:
    return os.environ.get("FIELDLOG_TEST_POSTGRES_URL") or DEFAULT_URL


_reason: list[str | None] = []


def unavailable() -> str | None:
    """Why the PostgreSQL tests cannot run here (None when a server answers); asked once per process."""
    if not _reason:
        try:
            import psycopg  # noqa: F401
            from sqlalchemy import create_engine, text
        except ImportError as e:
            _reason.append(f"PostgreSQL tests need sqlalchemy and psycopg ({e})")
            return _reason[0]
        try:
            engine = create_engine(admin_url(), connect_args={"connect_timeout": 3})
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            engine.dispose()
            _reason.append(None)
        except Exception as e:  # any failure to reach it is a reason to skip, said as it is
            _reason.append(f"no PostgreSQL server reachable at {admin_url()} ({str(e).splitlines()[0][:200]}); "
                           "set FIELDLOG_TEST_POSTGRES_URL or start one (.ci/run does)")
    return _reason[0]


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """The URL of a new, empty database on the test server; dropped (with its connections) afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = "fieldlog_test_" + uuid.uuid4().hex[:12]
    admin = create_engine(admin_url(), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(admin_url()).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
