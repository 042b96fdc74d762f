"""Sync without the user asking: try when the farm office answers, and a background thread that keeps trying.

``probe`` asks whether the server answers at all; ``sync_when_reachable`` runs ``client.sync_once`` only then;
``AutoSync`` does that every ``interval`` seconds (and on ``trigger``) on a thread of its own and hands each
run's result to the app; ``app_sync_callback`` is the app's "Sync now".
"""

from __future__ import annotations

import os
import threading
from typing import Callable

import httpx

from fieldlog_app.database import OUTBOX_PENDING as PENDING
from fieldlog_app.database import Store
from fieldlog_app.database.demo_mark import is_demo

from .common import SyncBusyError, SyncConfigError, SyncResult, utc_datetime, open_store, parse_iso, resolve_config
from .client import sync_once
from .protocol import PROTOCOL


def probe(server: str, *, timeout: float = 3.0, transport: httpx.BaseTransport | None = None) -> bool:
    """True when ``server`` answers /v1/health as a fieldlog server (no token needed)."""
    try:
        with httpx.Client(base_url=server, timeout=timeout, transport=transport) as c:
            resp = c.get("/v1/health")
            return resp.status_code == 200 and resp.json().get("protocol") == PROTOCOL
    except (httpx.HTTPError, ValueError, AttributeError):
        return False


def sync_when_reachable(db: Store | str | os.PathLike, server: str | None = None, token: str | None = None, *,
                        probe_timeout: float = 3.0, **kw) -> SyncResult | None:
    """For the app's timer: sync only if there is something to send and the server answers.

    Returns None (cheaply, without logging anything) when nothing is pending, no
    server is configured, the server is unreachable, the queue is backing off, or
    another sync is running; otherwise the SyncResult. Respects back-off (force=False).
    """
    try:
        server, token = resolve_config(server, token)
    except SyncConfigError:
        return None
    with open_store(db) as store:
        if is_demo(store):
            return None  # the demo never syncs; "Sync now" says why (sync_once raises)
        counts = store.outbox_counts()
        if not (counts.get("queued") or counts.get("sending")):
            # nothing to send, but reports sent earlier may have their office verdict now: fetch it
            if not store.office_awaiting() or not probe(server, timeout=probe_timeout, transport=kw.get("transport")):
                return None
            kw.setdefault("force", False)
            try:
                result = sync_once(store, server, token, **kw)
            except SyncBusyError:
                return None
            return result if result.office_checks else None
        head = store.outbox_items(PENDING, limit=1)
        if head and not kw.get("force", False):
            t = parse_iso(head[0].get("next_attempt_at"))
            if t is not None and t > utc_datetime():
                return None
        if not probe(server, timeout=probe_timeout, transport=kw.get("transport")):
            return None
        kw.setdefault("force", False)
        try:
            return sync_once(store, server, token, **kw)
        except SyncBusyError:
            return None


APP_CONNECT_TIMEOUT = 3.0  # seconds: a LAN server answers a connect in milliseconds


def app_sync_callback(db: Store | str | os.PathLike, server: str | None = None, token: str | None = None,
                      **sync_kw) -> Callable[[], SyncResult] | None:
    """The app's "Sync now" (``FieldlogApp(sync_callback=...)``): a zero-argument callable that
    runs ``sync_once`` (force: the user asked) and returns the SyncResult; None when no server
    or token is configured, so the screen can say sync is not set up. A server that does not
    answer fails at once with a plain message (short connect timeout, no retries before the
    first answer); once it answers, batches are retried as usual."""
    try:
        server, token = resolve_config(server, token)
    except SyncConfigError:
        return None
    sync_kw.setdefault("connect_timeout", APP_CONNECT_TIMEOUT)
    sync_kw.setdefault("first_contact_tries", 1)

    def sync_now() -> SyncResult:
        return sync_once(db, server, token, force=True, **sync_kw)

    return sync_now


class AutoSync:
    """Background sync for the app: every ``interval`` seconds (and at once on ``trigger()``),
    ``sync_when_reachable``; ``on_result(result_or_exception)`` is called from the worker
    thread with each SyncResult that did something, or with an exception (the UI shows it;
    the thread keeps running). Uses the app's Store, whose calls are thread-safe."""

    def __init__(self, db: Store | str | os.PathLike, *, interval: float = 60.0,
                 on_result: Callable[[SyncResult | Exception], None] | None = None,
                 server: str | None = None, token: str | None = None, **sync_kw):
        self.db = db
        self.interval = interval
        self.on_result = on_result
        self.server = server
        self.token = token
        self.sync_kw = sync_kw
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "AutoSync":
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="fieldlog-autosync", daemon=True)
            self._thread.start()
        return self

    def trigger(self) -> None:
        """Check now (e.g. the network just came back, or a sighting was finalized)."""
        self._wake.set()

    def stop(self, timeout: float | None = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                result = sync_when_reachable(self.db, self.server, self.token, **self.sync_kw)
            except Exception as e:  # never let the worker die: report and keep going
                result = e
            # Delivered even when stop() came meanwhile: the rows are already marked sent, and a
            # result dropped here is a screen that never learns it (issue 14, item 10).
            if result is not None and self.on_result is not None:
                try:
                    self.on_result(result)
                except Exception:
                    pass
            self._wake.wait(self.interval)
            self._wake.clear()


# ---------------------------------------------------------------------------------- status & repair
