"""The office's records of its model's checks, and the background queue that makes them.

A report synced to the office is "awaiting" until ``run_check`` (check.py's scoring, one request) records
it "checked" with its findings, or "error" with a retry time (``backoff``); ``OfficeChecker`` runs
``run_check`` over the pending reports in its own threads, bounded in concurrency, so an unreachable oracle
never blocks sync or the page. ``checks_for_device`` is what ``GET /v1/office-checks`` answers.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import httpx

from vineyard import FieldNoteError

from .check import OracleAnswerError, OracleConfig, OracleUnavailable, check_report

log = logging.getLogger("fieldlog.office.check")


def now_utc(later: float = 0.0) -> str:
    """The checks' clock, ``later`` seconds on: ISO-8601 UTC with microseconds (``updated_at`` sorts as text)."""
    return (_dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(seconds=later)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def pending_reports(sdb, *, limit: int = 100, retry_errors: bool = False, due_only: bool = True) -> list[str]:
    """Report ids with no check yet, or awaiting one whose retry time has come (errors too, if asked)."""
    states = "('awaiting', 'error')" if retry_errors else "('awaiting')"
    sql = ("SELECT i.item_id FROM items i LEFT JOIN office_checks c ON c.report_id = i.item_id "
           f"WHERE i.kind = 'report' AND i.source <> 'office' AND (c.report_id IS NULL OR (c.status IN {states}"
           + (" AND (c.next_attempt_at IS NULL OR c.next_attempt_at <= ?)" if due_only else "") +
           ")) ORDER BY i.server_seq LIMIT ?")
    with sdb.connect() as conn:
        return [r["item_id"] for r in conn.execute(sql, ((now_utc(),) if due_only else ()) + (limit,))]


def check_of(sdb, report_id: str) -> dict:
    """The report's office check: status "awaiting" (also when none was tried), "checked" or "error"."""
    with sdb.connect() as conn:
        row = conn.execute("SELECT * FROM office_checks WHERE report_id = ?", (report_id,)).fetchone()
    if row is None:
        return {"report_id": report_id, "status": "awaiting", "model": None, "checked_at": None, "attempts": 0,
                "error": None, "findings": [], "summary": {}}
    out = dict(row)
    out["findings"] = json.loads(out["findings"] or "[]")
    out["summary"] = json.loads(out["summary"] or "{}")
    return out


def checks_for_device(sdb, device: str, since: str = "") -> list[dict]:
    """The checks of a device's own reports changed after ``since`` (an ISO timestamp): what it gets back, each
    with ``office_version`` (the office model's own report, rewrite.py: id, model, created_at, text) or None."""
    from .rewrite import LATEST_REVIEW, WOULD_REWRITE

    with sdb.connect() as conn:
        rows = conn.execute(
            "SELECT c.*, w.office_report_id AS ov_id, w.model AS ov_model, w.created_at AS ov_at, o.payload AS ov, "
            f"CASE WHEN {WOULD_REWRITE} THEN 1 ELSE 0 END AS would_rewrite "
            f"FROM office_checks c JOIN items i ON i.item_id = c.report_id {LATEST_REVIEW} "
            "LEFT JOIN office_rewrites w ON w.office_report_id = (SELECT office_report_id FROM office_rewrites "
            "WHERE report_id = c.report_id ORDER BY created_at DESC, office_report_id LIMIT 1) "
            "LEFT JOIN items o ON o.item_id = w.office_report_id "
            "WHERE i.device = ? AND c.updated_at > ? ORDER BY c.updated_at LIMIT 1000", (device, since)).fetchall()
    out = []
    for r in rows:
        d = dict(r)
        ov_id, ov_model, ov_at, ov, would = (d.pop(k) for k in ("ov_id", "ov_model", "ov_at", "ov", "would_rewrite"))
        d["findings"] = json.loads(d["findings"] or "[]")
        d["summary"] = json.loads(d["summary"] or "{}")
        d["office_version"] = ({"report_id": ov_id, "model": ov_model, "created_at": ov_at,
                                "text": json.loads(ov)["text"]} if ov_id and ov else None)
        # coming: the checker announced it and the policy would still pick the report (not approved since, say)
        d["office_version_pending"] = bool(would) and d["summary"].get("office_version") == "queued"
        out.append(d)
    return out


def record_check(sdb, report_id: str, *, status: str, model: str | None = None, error: str | None = None,
            findings: list | None = None, summary: dict | None = None, retry_in: float | None = None) -> None:
    now = now_utc()
    with sdb.transaction() as conn:
        row = conn.execute("SELECT attempts FROM office_checks WHERE report_id = ?", (report_id,)).fetchone()
        attempts = (row["attempts"] if row else 0) + 1
        values = (status, model, now if status == "checked" else None, attempts,
                  now_utc(retry_in) if retry_in is not None else None, (error or "")[:1000] or None,
                  json.dumps(findings or [], ensure_ascii=False), json.dumps(summary or {}), now)
        if row is None:
            conn.execute("INSERT INTO office_checks (status, model, checked_at, attempts, next_attempt_at, error, "
                         "findings, summary, updated_at, report_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         values + (report_id,))
        else:
            conn.execute("UPDATE office_checks SET status = ?, model = ?, checked_at = ?, attempts = ?, "
                         "next_attempt_at = ?, error = ?, findings = ?, summary = ?, updated_at = ? "
                         "WHERE report_id = ?", values + (report_id,))


def report_inputs(sdb, report_id: str) -> tuple[dict, dict]:
    from fieldlog_app.database.payloads import note_of

    got = sdb.list_items(kind="report", item_id=report_id, limit=1, with_payload=True, include_deleted=True)
    if not got:
        raise OracleAnswerError(f"no report {report_id!r} on this server")
    report = got[0]["payload"]
    of = sdb.list_items(kind="sighting", item_id=got[0]["sighting_id"], limit=1, with_payload=True,
                        include_deleted=True)
    if not of:
        raise OracleAnswerError("the report's sighting is not on this server")
    return note_of(of[0]["payload"]), report


def office_version_given_up(sdb, report_id: str, why: str) -> None:
    """The policy's rewrite of a report failed for good: its check no longer says an office version is coming."""
    with sdb.transaction() as conn:
        row = conn.execute("SELECT summary FROM office_checks WHERE report_id = ?", (report_id,)).fetchone()
        if row is None:
            return
        summary = {**json.loads(row["summary"] or "{}"), "office_version": "failed", "office_version_error": why[:300]}
        conn.execute("UPDATE office_checks SET summary = ?, updated_at = ? WHERE report_id = ?",
                     (json.dumps(summary), now_utc(), report_id))


def backoff(attempts: int, base: float = 10.0, cap: float = 900.0) -> float:
    """Seconds before the next try of an unreachable oracle: doubling, capped."""
    return min(cap, base * 2 ** max(0, attempts - 1))


def run_check(sdb, config: OracleConfig, report_id: str, *, client: httpx.Client | None = None,
              rewrite_queued: bool = False) -> dict:
    """Check one stored report and record the outcome; returns the stored check (never raises OracleError).
    ``rewrite_queued``: the office rewrites disputed reports by policy, so a disputed check says its office
    version is coming (the device keeps asking for it)."""
    try:
        note, report = report_inputs(sdb, report_id)
        result = check_report(config, note, report, client=client)
    except OracleUnavailable as e:
        attempts = check_of(sdb, report_id)["attempts"] + 1
        record_check(sdb, report_id, status="awaiting", error=str(e), retry_in=backoff(attempts))
    except (OracleAnswerError, FieldNoteError, ValueError) as e:
        record_check(sdb, report_id, status="error", error=f"{type(e).__name__}: {e}")
    except Exception as e:  # noqa: BLE001 - one report the checker cannot handle must not wedge the queue
        log.exception("office check of %s failed", report_id)
        record_check(sdb, report_id, status="error", error=f"internal error: {type(e).__name__}: {e}")
    else:
        summary = {**result.summary, "seconds": round(result.seconds, 3), "margin": config.margin,
                   "layout": result.layout}
        if rewrite_queued and result.findings:
            summary["office_version"] = "queued"
        record_check(sdb, report_id, status="checked", model=result.model, findings=result.findings, summary=summary)
    return check_of(sdb, report_id)


def summary_line(check: dict) -> str:
    """One line per report for the CLI."""
    rid = check["report_id"]
    if check["status"] == "checked":
        s = check["summary"]
        by_field = ", ".join(f"{k} {a}/{t}" for k, (a, t) in sorted(s.get("by_field", {}).items()))
        return (f"{rid}: checked by {check['model'] or '?'}: {len(check['findings'])} disagreement(s); "
                f"agreement {by_field or 'n/a'}; {s.get('seconds', 0):.2f} s")
    if check["status"] == "error":
        return f"{rid}: error: {check['error']}"
    return f"{rid}: awaiting office check ({check['error'] or 'not tried yet'})"


class OfficeChecker:
    """The background queue: checks pending reports, at most ``concurrency`` requests at once, retrying an
    unreachable oracle with capped backoff. It never touches the sync path: ingest only stores, and this
    thread finds the new reports by polling the database.

    ``rewrite_disputed``: after the checks of a round, write the office version (rewrite.py) of one report the
    policy picks (``reports_to_rewrite``: disputed by its check or flagged in the office, not approved). An
    unreachable oracle is tried again with the checks' backoff; a report whose rewrite failed otherwise is not
    tried again by this process (``fieldlog-server rewrite`` can)."""

    def __init__(self, sdb, config: OracleConfig, *, concurrency: int = 1, poll_interval: float = 5.0,
                 on_checked: Callable[[dict], None] | None = None, rewrite_disputed: bool = False,
                 rewrite_chunk: int | None = None, clock: Callable[[], float] = time.monotonic):
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.sdb, self.config, self.concurrency, self.poll_interval = sdb, config, concurrency, poll_interval
        self.on_checked = on_checked
        self.rewrite_disputed, self.rewrite_chunk, self.clock = rewrite_disputed, rewrite_chunk, clock
        self.rewrite_failures: dict[str, str] = {}    # report id -> why its rewrite failed (not retried)
        self._rewrite_retry: dict[str, tuple[int, float]] = {}   # report id -> (attempts, next try at)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> list[dict]:
        """Check what is due now (up to ``concurrency`` at a time); the stored checks. Then one policy rewrite,
        if asked for and due."""
        ids = pending_reports(self.sdb, limit=self.concurrency * 4)
        done: list[dict] = []
        if ids:
            with httpx.Client(timeout=self.config.timeout, limits=httpx.Limits(max_connections=self.concurrency)) as c, \
                    ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="office-check") as pool:
                done = list(pool.map(lambda rid: run_check(self.sdb, self.config, rid, client=c,
                                                           rewrite_queued=self.rewrite_disputed), ids))
            for d in done:
                if self.on_checked:
                    self.on_checked(d)
        if self.rewrite_disputed and not self._stop.is_set():
            self.rewrite_one()
        return done

    def rewrite_one(self) -> dict | None:
        """The office version of the first report the policy picks that is due; its ``office_rewrites`` row."""
        from . import rewrite

        now = self.clock()
        for rid in rewrite.reports_to_rewrite(self.sdb, limit=len(self.rewrite_failures) + len(self._rewrite_retry) + 1):
            if rid in self.rewrite_failures or self._rewrite_retry.get(rid, (0, 0.0))[1] > now:
                continue
            kw = {"chunk": self.rewrite_chunk} if self.rewrite_chunk else {}
            try:
                row = rewrite.office_version(self.sdb, rid, self.config, **kw)
            except OracleUnavailable as e:
                attempts = self._rewrite_retry.get(rid, (0, 0.0))[0] + 1
                self._rewrite_retry[rid] = (attempts, now + backoff(attempts))
                log.info("office rewrite of %s waits for the office model: %s", rid, e)
                return None
            except (OracleAnswerError, FieldNoteError, ValueError) as e:
                self.rewrite_failures[rid] = f"{type(e).__name__}: {e}"
            except Exception as e:  # noqa: BLE001 - as in run_check: one report must not wedge the queue
                log.exception("office rewrite of %s failed", rid)
                self.rewrite_failures[rid] = f"internal error: {type(e).__name__}: {e}"
            else:
                self._rewrite_retry.pop(rid, None)
                return row
            log.warning("office rewrite of %s failed, not retried: %s", rid, self.rewrite_failures[rid])
            office_version_given_up(self.sdb, rid, self.rewrite_failures[rid])
            return None
        return None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # a database hiccup must not end the queue; the next round tries again
                log.exception("office check round failed")
            self._stop.wait(self.poll_interval)

    def start(self) -> "OfficeChecker":
        self._thread = threading.Thread(target=self._loop, name="office-checker", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
