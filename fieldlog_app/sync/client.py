"""The device side of sync: drain the store's outbox to the farm-office server, exactly once.

Every outbox row moves through these states (the Store inserts rows as ``queued``;
this module decides every later transition and makes it through ``store.outbox``,
fieldlog_app/database/outbox.py)::

    queued ──claim──► sending ──receipt──► sent
       ▲                 │ ├─409────────► needs-attention   (the user must look)
       └─network/5xx/429─┘ └─other 4xx──► failed            (a bug or bad data; shown)

Why it cannot lose or duplicate anything:

* A row is only ``sent`` after the server's receipt for exactly that item id and
  sha256 is stored with it, and the server only answers after a durable commit.
* A process killed while rows are ``sending`` leaves them ``sending``; the next run
  (which holds the single-flight lock, so nobody else is sending) sends them again.
  The server recognises the same id + same hash and answers ``duplicate`` with the
  original receipt, so a resend never creates a second copy.
* Rows go out in ``seq`` order, so a revision never overtakes the version it
  replaces; a row waiting for its back-off blocks the rows behind it.
* Single flight: an exclusive ``flock`` on ``<db>.sync-lock``. The kernel drops it
  when the holder dies, even by SIGKILL, so a crash never leaves a stale lock.

Transient failures (network errors, timeouts, 408, 429, 5xx) are retried with
exponential back-off and full jitter, capped, honouring ``Retry-After``; when a
run gives up, the rows stay queued with ``next_attempt_at`` and ``last_error``.
They never become ``failed``: a handheld offline for a week is normal.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from datetime import timedelta
from typing import Callable

import httpx

from fieldlog_app.database import OUTBOX_PENDING as PENDING
from fieldlog_app.database import Store, StoreError
from fieldlog_app.database.canonical import canonical_json, payload_sha256, utc_now


from .common import (RetryPolicy, SyncError, SyncResult, iso, utc_datetime, open_store, parse_iso, parse_retry_after, refuse_demo,
                     resolve_config, server_message, sync_lock)
from .protocol import PROTOCOL, item_to_wire, validate_receipt

__all__ = ["sync_once", "fetch_office_checks", "pull_office_checks"]

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
CONFIG_STATUS = frozenset({401, 403, 404, 405})  # about the server/token, not the items: nothing is marked failed
ITEM_OVERHEAD = 300       # bytes an item adds around its payload on the wire (ids, hash, keys)
ENVELOPE_OVERHEAD = 200   # bytes of the batch envelope
USER_AGENT = "fieldlog-sync/1"


class _Transient(Exception):
    """A request that kept failing in a retryable way; the run stops, the rows stay queued."""

    def __init__(self, message: str, wait: float | None = None):
        super().__init__(message)
        self.wait = wait


class _Fatal(Exception):
    """The server/token is unusable (401/403/404/...): stop, leave the rows as they are."""


# ---------------------------------------------------------------------------------- the sync run
class _Run:
    def __init__(self, store: Store, server: str, token: str, *, batch_size: int, max_batch_bytes: int,
                 retry: RetryPolicy, timeout: float, force: bool, rng: random.Random,
                 sleep: Callable[[float], None], progress: Callable[[SyncResult], None] | None,
                 transport: httpx.BaseTransport | None, connect_timeout: float | None = None,
                 first_contact_tries: int | None = None):
        self.store = store
        self.server = server
        self.first_contact_tries = first_contact_tries
        self.retry = retry
        self.force = force
        self.rng = rng
        self.sleep = sleep
        self.progress = progress
        self.batch_size = max(1, int(batch_size))
        self.max_bytes = max(1024, int(max_batch_bytes))  # what we aim for per request
        self.hard_limit = self.max_bytes                  # what the server takes (learnt from /v1/health)
        self.result = SyncResult(server=server, started_at=utc_now())
        self.http = httpx.Client(
            base_url=server,
            headers={"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT, "Accept": "application/json"},
            timeout=httpx.Timeout(timeout, connect=min(connect_timeout or 10.0, timeout)),
            follow_redirects=False,
            transport=transport,
        )

    # -- HTTP with retries -------------------------------------------------------------
    def request(self, method: str, path: str, *, on_attempt: Callable[[], None] | None = None,
                tries: int | None = None, **kw) -> httpx.Response:
        tries = max(1, tries or self.retry.tries)
        for attempt in range(tries):
            if on_attempt and attempt:
                on_attempt()
            wait: float | None = None
            try:
                resp = self.http.request(method, path, **kw)
            except httpx.TimeoutException as e:
                err = f"timed out talking to the server ({type(e).__name__})"
            except httpx.TransportError as e:
                err = f"network error: {e or type(e).__name__}"
            else:
                if resp.status_code not in RETRYABLE_STATUS and resp.status_code < 500:
                    return resp
                err = f"HTTP {resp.status_code}: {server_message(resp)}"
                wait = parse_retry_after(resp.headers.get("retry-after"))
            if attempt + 1 >= tries:
                raise _Transient(err, wait)
            if wait is None:
                wait = self.retry.delay(attempt, self.rng)
            elif wait > self.retry.max_wait:
                raise _Transient(f"{err} (server asks to wait {wait:.0f} s)", wait)
            self.result.retries += 1
            self.sleep(wait)
        raise AssertionError("unreachable")

    def health(self) -> dict:
        try:
            resp = self.request("GET", "/v1/health", tries=self.first_contact_tries)
        except _Transient as e:
            if self.first_contact_tries is None:
                raise
            # "Sync now" in the app: a server that does not answer at all is said at once, not after a
            # minute of retries (the background sync retries later; the items stay queued)
            raise _Transient(f"cannot reach the farm office at {self.server} ({e}); is the server running "
                             f"and is the address right? The items stay queued") from None
        if resp.status_code != 200:
            raise _Fatal(f"{self.http.base_url} answered HTTP {resp.status_code} to /v1/health: "
                         f"{server_message(resp)}; is this a fieldlog server?")
        try:
            info = resp.json()
        except ValueError:
            info = None
        if not isinstance(info, dict) or info.get("protocol") != PROTOCOL:
            raise _Fatal(f"{self.http.base_url} is not a fieldlog server speaking protocol {PROTOCOL}")
        return info

    # -- outbox transitions ---------------------------------------------------------------
    def recover(self) -> None:
        """Rows left 'sending' by a killed run: we hold the lock, so nobody is sending them."""
        self.result.recovered = self.store.outbox.recover()

    def claim(self) -> list[dict] | None:
        """The next batch in seq order, marked 'sending'; [] when the queue is empty,
        None when the head of the queue is still backing off (and not forced)."""
        now = utc_now()
        outbox = self.store.outbox
        with self.store.transaction():
            rows = outbox.items(PENDING, limit=self.batch_size)
            if not rows:
                return []
            head_wait = parse_iso(rows[0]["next_attempt_at"])
            if not self.force and head_wait is not None and head_wait > utc_datetime():
                self.result.deferred_until = rows[0]["next_attempt_at"]
                return None
            batch, size, bad = [], 0, []
            for r in rows:
                n = len(r["payload"].encode("utf-8")) + ITEM_OVERHEAD
                if n > self.hard_limit:
                    if not batch:
                        bad.append(r)  # too large for the server even alone: it can never go
                        continue
                    break
                if batch and size + n > self.max_bytes:
                    break  # a single item above max_bytes (but within the server's limit) goes alone
                batch.append(r)
                size += n
            for r in bad:
                self._fail_local(r, f"too large to upload ({len(r['payload'])} bytes; the server accepts "
                                             f"requests up to {self.hard_limit + ENVELOPE_OVERHEAD} bytes)", now)
            if bad and not batch:
                return _CLAIM_AGAIN  # type: ignore[return-value]  # the next rows may fit
            outbox.claim([r["seq"] for r in batch], now)  # the first POST attempt is counted in the same commit
        return batch

    def _fail_local(self, row: dict, message: str, now: str, state: str = "failed") -> None:
        self.store.outbox.fail(row["seq"], message, state=state, now=now)
        if state == "failed":
            self.result.failed += 1
        else:
            self.result.conflicts += 1
        self.result.messages.append(f"{row['kind']} {row['item_id']}: {message}")

    def bump_attempts(self, batch: list[dict]) -> None:
        self.store.outbox.count_attempt([r["seq"] for r in batch])

    def requeue(self, rows: list[dict], *, error: str | None = None, wait: float | None = None) -> None:
        seqs = [r["seq"] for r in rows]
        outbox = self.store.outbox
        with self.store.transaction():
            next_at = None
            if wait is not None:  # one time for the whole batch: it goes out together again
                delay = max(wait, self.retry.persisted_delay(outbox.max_attempts(seqs), self.rng))
                next_at = iso(utc_datetime() + timedelta(seconds=delay))
            outbox.requeue(seqs, error=error, next_attempt_at=next_at)

    # -- one batch ------------------------------------------------------------------------
    def wire(self, rows: list[dict]) -> tuple[bytes, list[dict]]:
        """The request body; rows whose stored payload no longer matches its hash are refused locally."""
        items, good = [], []
        now = utc_now()
        corrupt = []
        for r in rows:
            try:
                payload = json.loads(r["payload"])
                ok = payload_sha256(payload) == r["sha256"] and canonical_json(payload) == r["payload"]
            except ValueError:
                ok = False
            if not ok:
                corrupt.append(r)
                continue
            items.append(item_to_wire(r["item_id"], r["kind"], r["replaces"], r["sha256"], payload))
            good.append(r)
        if corrupt:
            with self.store.transaction():
                for r in corrupt:
                    self._fail_local(r, "the queued payload does not match its sha256 (damaged on the "
                                                 "device); not sent", now)
        body = {"protocol": PROTOCOL, "batch_id": str(uuid.uuid4()), "items": items}
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8"), good

    def send(self, rows: list[dict]) -> None:
        body, rows = self.wire(rows)
        if not rows:
            return
        self.result.batches += 1
        try:
            resp = self.request("POST", "/v1/batches", content=body,
                                headers={"Content-Type": "application/json"},
                                on_attempt=lambda: self.bump_attempts(rows))
        except _Transient as e:
            self.requeue(rows, error=str(e), wait=e.wait or 0.0)
            raise
        code = resp.status_code
        if code == 200:
            self.on_receipts(rows, resp)
        elif code == 409:
            self.on_item_errors(rows, resp, "conflicts", "needs-attention")
        elif code in (400, 422):
            self.on_item_errors(rows, resp, "errors", "failed")
        elif code == 413:
            if len(rows) == 1:
                self._fail_local(rows[0], f"rejected as too large: {server_message(resp)}", utc_now())
            else:
                self.batch_size = max(1, len(rows) // 2)
                self.max_bytes = max(1024, len(body) // 2)
                self.requeue(rows)
        elif code in CONFIG_STATUS or 300 <= code < 400:
            msg = f"HTTP {code}: {server_message(resp)}"
            self.requeue(rows, error=msg)
            raise _Fatal(msg)
        else:
            msg = f"HTTP {code}: {server_message(resp)}"
            now = utc_now()
            with self.store.transaction():
                for r in rows:
                    self._fail_local(r, msg, now)

    def on_receipts(self, rows: list[dict], resp: httpx.Response) -> None:
        try:
            body = resp.json()
            receipts = body["receipts"]
            if not isinstance(receipts, list):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            self.requeue(rows, error="the server's answer had no receipts")
            raise _Transient("the server answered 200 without receipts") from None
        by_id = {}
        for r in receipts:
            if validate_receipt(r) is None:
                by_id[r["item_id"]] = r
        now = utc_now()
        missing = []
        with self.store.transaction():
            for row in rows:
                rec = by_id.get(row["item_id"])
                if rec is None:
                    missing.append(row)
                elif rec["sha256"] != row["sha256"]:
                    self._fail_local(row, f"the server's receipt names sha256 {rec['sha256'][:12]}…, "
                                                   "not this version's", now, state="needs-attention")
                else:
                    self.store.outbox.mark_sent(row["seq"], rec, now)
                    if rec["status"] == "accepted":
                        self.result.sent += 1
                    else:
                        self.result.duplicate += 1
        if missing:
            self.requeue(missing, error="no receipt from the server")
            raise _Transient(f"the server returned no receipt for {len(missing)} item(s)")

    def on_item_errors(self, rows: list[dict], resp: httpx.Response, key: str, state: str) -> None:
        """409/422: mark the named items, send the others again (the batch stored nothing)."""
        try:
            body = resp.json()
        except ValueError:
            body = {}
        entries = body.get(key) if isinstance(body, dict) else None
        message = server_message(resp)
        named: dict[str, list[str]] = {}
        for e in entries if isinstance(entries, list) else []:
            if isinstance(e, dict) and isinstance(e.get("item_id"), str):
                named.setdefault(e["item_id"], []).append(str(e.get("message") or e.get("reason") or message))
            elif isinstance(e, dict) and isinstance(e.get("index"), int) and 0 <= e["index"] < len(rows):
                named.setdefault(rows[e["index"]]["item_id"], []).append(str(e.get("message") or message))
        hit = [r for r in rows if r["item_id"] in named]
        now = utc_now()
        with self.store.transaction():
            if not hit:  # the server blamed the batch as a whole: every item in it carries the message
                for r in rows:
                    self._fail_local(r, f"HTTP {resp.status_code}: {message}", now, state=state)
                return
            for r in hit:
                self._fail_local(r, "; ".join(named[r["item_id"]])[:2000], now, state=state)
        rest = [r for r in rows if r["item_id"] not in named]
        if rest:
            self.requeue(rest)

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> SyncResult:
        try:
            self.recover()
            pending = self.count_pending()
            if pending:
                info = self.health()
                limit = info.get("max_body_bytes")
                if isinstance(limit, int) and limit > ENVELOPE_OVERHEAD:
                    self.hard_limit = limit - ENVELOPE_OVERHEAD
                    self.max_bytes = min(self.max_bytes, self.hard_limit)
                max_items = info.get("max_items")
                if isinstance(max_items, int) and max_items > 0:
                    self.batch_size = min(self.batch_size, max_items)
            guard = 2 * pending + 20  # every pass marks rows or halves the batch; this only stops a bug
            while guard > 0:
                guard -= 1
                batch = self.claim()
                if batch is _CLAIM_AGAIN:
                    continue
                if not batch:
                    break
                self.send(batch)
                if self.progress:
                    self.progress(self.result)
        except _Transient as e:
            self.result.error = f"server unreachable, will retry later: {e}"
        except _Fatal as e:
            self.result.error = str(e)
        finally:
            self.http.close()
            self.result.remaining = self.count_pending()
            self.result.finished_at = utc_now()
        return self.result

    def count_pending(self) -> int:
        return self.store.outbox.pending_count()


_CLAIM_AGAIN = object()


def _log_run(store: Store, result: SyncResult) -> None:
    """One audit entry per run that did something or failed: the Sync screen's 'last success'."""
    detail = {k: v for k, v in result.to_dict().items() if k not in ("messages",)}
    detail["messages"] = result.messages[:20]
    store.outbox.log_run(detail, ok=result.error is None, at=result.finished_at or None)


def sync_once(db: Store | str | os.PathLike, server: str | None = None, token: str | None = None, *,
              batch_size: int = 50, max_batch_bytes: int = 1_000_000, retry: RetryPolicy | None = None,
              timeout: float = 30.0, force: bool = True, seed: int | None = None,
              sleep: Callable[[float], None] = time.sleep, progress: Callable[[SyncResult], None] | None = None,
              transport: httpx.BaseTransport | None = None, connect_timeout: float | None = None,
              first_contact_tries: int | None = None) -> SyncResult:
    """Upload every pending outbox row once; returns the counts.

    ``db`` is the app's Store or a database path. ``force=True`` (a user pressing
    "sync now") ignores the rows' back-off time; the periodic sync passes False.
    Raises SyncBusyError if another sync runs, SyncConfigError for a missing/bad
    server or token, DemoDatabaseError for the demo database, SyncError for an unusable
    database; network trouble is not an exception but ``result.error`` (the rows stay
    queued). ``connect_timeout`` bounds each connection attempt; ``first_contact_tries``
    (the app's "Sync now": 1) gives up on a server that does not answer its first
    request at once instead of retrying with back-off.
    """
    server, token = resolve_config(server, token)
    rng = random.Random(seed)
    with open_store(db) as store:
        refuse_demo(store)
        with sync_lock(store):
            run = _Run(store, server, token, batch_size=batch_size, max_batch_bytes=max_batch_bytes,
                       retry=retry or RetryPolicy(), timeout=timeout, force=force, rng=rng, sleep=sleep,
                       progress=progress, transport=transport, connect_timeout=connect_timeout,
                       first_contact_tries=first_contact_tries)
            result = run.run()
            if result.error is None and store.office_awaiting():  # the office answered: bring its verdicts back
                pull_office_checks(store, server, token, result, timeout=timeout, transport=transport)
            if result.error or result.sent or result.duplicate or result.conflicts or result.failed \
                    or result.office_checks:
                try:
                    _log_run(store, result)
                except StoreError:
                    pass  # the outbox states are what matter; a missing log line is not worth failing for
    return result


def pull_office_checks(store: Store, server: str, token: str, result: SyncResult, *, timeout: float = 30.0,
                       transport: httpx.BaseTransport | None = None) -> None:
    """Fetch the office checks changed since the newest one stored and store them (``result.office_checks``).
    Never fails the sync it follows: an office that cannot answer (an older server, a timeout) or a malformed
    check is a line in ``result.messages``, and the reports stay "awaiting office check"."""
    try:
        checks = fetch_office_checks(server, token, since=store.office_checks_since(), timeout=timeout,
                                     transport=transport)
        got = store.save_office_checks(checks)
    except (SyncError, StoreError) as e:
        result.messages.append(f"office checks not fetched: {e}")
        return
    result.office_checks = got["saved"]
    result.messages += [f"office check refused: {m}" for m in got["errors"][:10]]


def fetch_office_checks(server: str | None = None, token: str | None = None, *, since: str = "",
                        timeout: float = 30.0, transport: httpx.BaseTransport | None = None) -> list[dict]:
    """The office model's checks of this device's reports changed after ``since`` (the ``updated_at`` of the
    last one seen): ``[{"report_id", "status", "model", "checked_at", "findings", "updated_at"}]``.
    SyncError when the server cannot be reached or answers anything else."""
    server, token = resolve_config(server, token)
    try:
        with httpx.Client(base_url=server, timeout=timeout, transport=transport) as c:
            resp = c.get("/v1/office-checks", params={"since": since}, headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as e:
        raise SyncError(f"{server}: {type(e).__name__}: {e}") from None
    if resp.status_code != 200:
        raise SyncError(f"{server} answered {resp.status_code} for the office checks: {server_message(resp)}")
    try:
        checks = resp.json()["checks"]
        if not isinstance(checks, list) or not all(isinstance(c, dict) and isinstance(c.get("report_id"), str)
                                                   and isinstance(c.get("findings"), list) for c in checks):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise SyncError(f"{server}: the office checks answer is not a list of checks") from None
    return checks
