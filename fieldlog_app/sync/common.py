"""What every sync path shares (the uploader in client.py, the background sync, the status screen, bundles):
its errors and results, the retry policy, the server address and token, the store opened for one run and the
one-sync-at-a-time lock, and reading the server's answers (Retry-After, error messages)."""

from __future__ import annotations

import contextlib
import email.utils
import errno
import os
import random
import threading
import weakref
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import httpx

from fieldlog_app.database import Store, StoreError
from fieldlog_app.database.demo_mark import is_demo

from .config import SyncSettingsError, load_settings

ENV_SERVER = "FIELDLOG_SERVER"
ENV_TOKEN = "FIELDLOG_TOKEN"


class SyncError(Exception):
    """A sync that could not run at all (bad configuration, unusable database)."""


class SyncBusyError(SyncError):
    """Another process (or thread) is already syncing this database."""


class SyncConfigError(SyncError):
    """No server URL or token, or a malformed one."""


class DemoDatabaseError(SyncConfigError):
    """The database holds the demo's sample data: it never goes to a farm office."""


DEMO_REFUSAL = ("this is the demo database (sample sightings): it never syncs to a farm office, which could not "
                "delete them; log real sightings in your own database (fieldlog without --demo)")


def refuse_demo(store: Store) -> None:
    if is_demo(store):
        raise DemoDatabaseError(DEMO_REFUSAL)


@dataclass
class RetryPolicy:
    """Exponential back-off with full jitter (AWS architecture blog, 2015): the wait before
    retry ``n`` is uniform in ``[0, min(cap, base * 2**n)]``, which spreads a fleet of
    handhelds that all regain signal at the same moment."""

    tries: int = 6            # attempts per batch within one run (1 + 5 retries)
    base: float = 0.5         # seconds
    cap: float = 30.0         # seconds, the longest single wait
    max_wait: float = 120.0   # a Retry-After longer than this ends the run instead of blocking it
    persist_base: float = 5.0   # back-off between runs (the rows' next_attempt_at) ...
    persist_cap: float = 900.0  # ... at most 15 minutes

    def delay(self, retry: int, rng: random.Random) -> float:
        return rng.uniform(0.0, min(self.cap, self.base * (2 ** retry)))

    def persisted_delay(self, attempts: int, rng: random.Random) -> float:
        """Back-off between runs from the rows' attempt count. "Equal jitter" (half fixed, half
        random) rather than full: a periodic sync must not retry a dead server straight away."""
        ceiling = min(self.persist_cap, self.persist_base * (2 ** min(max(attempts - 1, 0), 30)))
        return ceiling * rng.uniform(0.5, 1.0)


@dataclass
class SyncResult:
    """What one run did. ``error`` says why it stopped early (None: the queue was drained)."""

    sent: int = 0           # accepted by the server now
    duplicate: int = 0      # the server already had them (a resend after a lost answer, or a bundle)
    conflicts: int = 0      # → needs-attention
    failed: int = 0         # → failed (permanent 4xx)
    remaining: int = 0      # still queued/sending after the run
    recovered: int = 0      # rows found 'sending' from an interrupted run, re-sent
    batches: int = 0
    retries: int = 0
    error: str | None = None
    deferred_until: str | None = None  # nothing sent: the head of the queue waits for its back-off
    office_checks: int = 0  # the office model's verdicts received (and stored) after the upload
    messages: list[str] = field(default_factory=list)
    server: str | None = None
    started_at: str = ""
    finished_at: str = ""

    @property
    def ok(self) -> bool:
        """Everything that was pending has a receipt and nothing needs the user."""
        return self.error is None and self.conflicts == 0 and self.failed == 0 and self.remaining == 0

    def summary(self) -> str:
        s = (f"sent {self.sent}, already present {self.duplicate}, conflicts {self.conflicts}, "
             f"failed {self.failed}, still queued {self.remaining}")
        if self.deferred_until:
            s += f" (waiting until {self.deferred_until})"
        if self.office_checks:
            s += f"; office checks received {self.office_checks}"
        return s

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SyncStatus:
    """What a Sync screen or ``fieldlog sync status`` shows."""

    counts: dict[str, int]
    pending: int
    last_run_at: str | None
    last_success_at: str | None
    last_error: str | None
    next_attempt_at: str | None
    attention: list[dict]   # failed / needs-attention rows: item_id, kind, state, last_error, attempts, updated_at
    last_result: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_config(server: str | None = None, token: str | None = None) -> tuple[str, str]:
    """Server URL and token from the arguments, else ``$FIELDLOG_SERVER`` / ``$FIELDLOG_TOKEN``, else
    the settings saved on this device (the app's Sync screen, ``sync/config.py``)."""
    server = (server or os.environ.get(ENV_SERVER) or "").strip()
    token = (token or os.environ.get(ENV_TOKEN) or "").strip()
    if not (server and token):
        try:
            saved = load_settings()
        except SyncSettingsError as e:
            raise SyncConfigError(str(e)) from None
        server, token = server or saved.server, token or saved.token
    if not server:
        raise SyncConfigError(f"no server: pass --server URL, set {ENV_SERVER}, or set it in the app's Sync screen")
    if not token:
        raise SyncConfigError(f"no device token: pass --token TOKEN, set {ENV_TOKEN}, or set it in the app's Sync screen")
    return check_server_url(server), token


def check_server_url(server: str) -> str:
    """``server`` as a base URL without a trailing slash; SyncConfigError when it is not http(s)://HOST."""
    server = server.strip()
    try:
        url = httpx.URL(server)
    except Exception as e:  # httpx.InvalidURL and friends
        raise SyncConfigError(f"server URL {server!r} is not valid: {e}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise SyncConfigError(f"server URL {server!r} must look like http://HOST:PORT or https://HOST")
    return server.rstrip("/")


def utc_datetime() -> datetime:
    return datetime.now(timezone.utc)


def iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(s: str | None) -> datetime | None:
    if not s:
        return None
    try:
        t = datetime.fromisoformat(s)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None if absent/garbled."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or utc_datetime())).total_seconds())


def server_message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    text = resp.text.strip().replace("\n", " ")
    return text[:300] or resp.reason_phrase


@contextlib.contextmanager
def open_store(db: Store | str | os.PathLike, *, readonly: bool = False) -> Iterator[Store]:
    """Use the caller's Store, or open one: read-only for commands that only read (they then work on a
    read-only or full disk), else writable (which also migrates an old database)."""
    if isinstance(db, Store):
        yield db
        return
    if str(db) != ":memory:" and not Path(db).expanduser().is_file():
        # Opening would create an empty database and report "nothing to send": a typo must say so.
        raise SyncError(f"no fieldlog database at {db}")
    try:
        store = Store(db, readonly=readonly)
    except StoreError as e:
        raise SyncError(str(e)) from None
    try:
        yield store
    finally:
        store.close()


_memory_locks: "weakref.WeakKeyDictionary[Store, threading.Lock]" = weakref.WeakKeyDictionary()
_memory_locks_guard = threading.Lock()


@contextlib.contextmanager
def sync_lock(store: Store) -> Iterator[None]:
    """Exclusive, non-blocking: raises SyncBusyError when another sync holds it."""
    if store.path == ":memory:":
        with _memory_locks_guard:
            lock = _memory_locks.setdefault(store, threading.Lock())
        if not lock.acquire(blocking=False):
            raise SyncBusyError("a sync of this database is already running")
        try:
            yield
        finally:
            lock.release()
        return
    import fcntl

    path = store.path + ".sync-lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise SyncBusyError("another fieldlog sync is already running for this database") from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the flock
