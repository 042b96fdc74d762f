"""The outbox table and its state machine: ``store.outbox``.

Finalized sightings and complete reports are queued by the Store in the
transaction that saves them; from then on the payload is frozen (a trigger
enforces it) and only the state columns move, through these methods and no
other SQL::

    queued ──claim──► sending ──mark_sent──► sent
       ▲                 │ ├──fail(state="needs-attention")──► needs-attention
       ├──requeue────────┘ └──fail(state="failed")───────────► failed
       └──────────────────────retry──────────────────────────────┘

Every transition names the states it starts from and returns how many rows
moved, so a caller racing a stale view changes nothing instead of, say,
re-queueing a row that is already ``sent``. Each call is one transaction, or a
savepoint inside the caller's ``store.transaction()`` (the sync client claims a
batch and fails the rows that can never go in one commit).

Sync runs are logged in the audit log (entity ``sync``) through ``log_run``; the
Sync screen and ``fieldlog sync status`` read them back with ``last_run`` and
``last_success_at``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Iterable

from .canonical import canonical_json, payload_sha256, utc_now
from .errors import ValidationError
from .guard import guarded

if TYPE_CHECKING:
    from .store import Store

STATES = ("queued", "sending", "sent", "failed", "needs-attention")
PENDING = ("queued", "sending")
ATTENTION = ("failed", "needs-attention")
RUN_ENTITY, RUN_ID = "sync", "outbox"  # how sync runs are filed in the audit log


def _marks(n: int) -> str:
    return ", ".join("?" * n)


class Outbox:
    """The sync queue of one Store (``store.outbox``)."""

    def __init__(self, store: "Store"):
        self._store = store

    def _rows(self, sql: str, params: Iterable = ()) -> list[dict]:
        return self._store._rows(sql, list(params))

    def _update(self, sql: str, params: Iterable) -> int:
        with self._store.transaction() as db:
            return db.conn.execute(sql, list(params)).rowcount

    # ------------------------------------------------------------------ reading
    @guarded
    def items(self, state: str | Iterable[str] | None = None, limit: int | None = None) -> list[dict]:
        """Rows in upload (``seq``) order, every column; ``payload`` is the frozen canonical JSON text."""
        sql, params = "SELECT * FROM outbox", []
        if state is not None:
            states = [state] if isinstance(state, str) else list(state)
            sql += f" WHERE state IN ({_marks(len(states))})"
            params.extend(states)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        return self._rows(sql, params)

    @guarded
    def counts(self) -> dict[str, int]:
        """Rows per state (every state present, zero when empty)."""
        counts = {s: 0 for s in STATES}
        for r in self._rows("SELECT state, COUNT(*) AS n FROM outbox GROUP BY state"):
            counts[r["state"]] = r["n"]
        return counts

    @guarded
    def pending_count(self) -> int:
        """Rows still to upload (queued or sending)."""
        return self._rows(f"SELECT COUNT(*) AS n FROM outbox WHERE state IN ({_marks(2)})", PENDING)[0]["n"]

    @guarded
    def get(self, item_id: str) -> dict | None:
        """The row of one item id, or None."""
        rows = self._rows("SELECT * FROM outbox WHERE item_id = ?", (str(item_id),))
        return rows[0] if rows else None

    @guarded
    def attention(self, limit: int = 100) -> list[dict]:
        """Failed and needs-attention rows, oldest first: what the user has to look at."""
        return self._rows(
            "SELECT seq, item_id, kind, state, last_error, attempts, updated_at FROM outbox"
            f" WHERE state IN ({_marks(2)}) ORDER BY seq LIMIT ?", (*ATTENTION, int(limit)))

    @guarded
    def next_attempt_at(self) -> str | None:
        """When the head of the queue may be tried again (None: now, or nothing is pending)."""
        rows = self._rows(f"SELECT next_attempt_at FROM outbox WHERE state IN ({_marks(2)}) ORDER BY seq LIMIT 1",
                          PENDING)
        return rows[0]["next_attempt_at"] if rows else None

    @guarded
    def last_sent_at(self) -> str | None:
        """When the latest receipt was stored."""
        return self._rows("SELECT MAX(updated_at) AS t FROM outbox WHERE state = 'sent'")[0]["t"]

    @guarded
    def max_attempts(self, seqs: Iterable[int]) -> int:
        """The highest attempt count among these rows (the back-off of a batch that goes out together)."""
        seqs = list(seqs)
        if not seqs:
            return 0
        rows = self._rows(f"SELECT MAX(attempts) AS n FROM outbox WHERE seq IN ({_marks(len(seqs))})", seqs)
        return rows[0]["n"] or 0

    # ------------------------------------------------------------------ transitions
    def enqueue(self, kind: str, payload: dict, now: str) -> None:
        """Queue a frozen payload; called by the Store inside the transaction that finalizes it."""
        self._store.db["outbox"].insert(
            {
                "item_id": payload["id"],
                "kind": kind,
                # a report version names the version it replaces inside its payload; as an item it replaces
                # nothing (the office keeps every report version as a report of its own)
                "replaces": payload.get("replaces") if kind == "sighting" else None,
                "payload": canonical_json(payload),
                "sha256": payload_sha256(payload),
                "state": "queued",
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
            }
        )

    def _move(self, seqs: Iterable[int], to: str, from_: Iterable[str], now: str | None, **cols: Any) -> int:
        seqs, from_ = list(seqs), list(from_)
        if not seqs:
            return 0
        sets = ", ".join(f"{k} = ?" for k in ("state", "updated_at", *cols))
        return self._update(
            f"UPDATE outbox SET {sets} WHERE seq IN ({_marks(len(seqs))}) AND state IN ({_marks(len(from_))})",
            [to, now or utc_now(), *cols.values(), *seqs, *from_],
        )

    @guarded
    def recover(self) -> int:
        """sending → queued for rows a killed run left behind. Only under the sync lock: then nobody sends them."""
        return self._update("UPDATE outbox SET state = 'queued', updated_at = ? WHERE state = 'sending'",
                            (utc_now(),))

    @guarded
    def claim(self, seqs: Iterable[int], now: str | None = None) -> int:
        """queued → sending, counting the attempt in the same commit; clears the back-off."""
        seqs = list(seqs)
        if not seqs:
            return 0
        return self._update(
            "UPDATE outbox SET state = 'sending', attempts = attempts + 1, next_attempt_at = NULL, updated_at = ?"
            f" WHERE seq IN ({_marks(len(seqs))}) AND state IN ({_marks(2)})",
            [now or utc_now(), *seqs, *PENDING],
        )

    @guarded
    def count_attempt(self, seqs: Iterable[int]) -> int:
        """One more attempt for rows being sent (a retried request)."""
        seqs = list(seqs)
        if not seqs:
            return 0
        return self._update(
            f"UPDATE outbox SET attempts = attempts + 1, updated_at = ? WHERE seq IN ({_marks(len(seqs))})"
            " AND state = 'sending'", [utc_now(), *seqs])

    @guarded
    def mark_sent(self, seq: int, receipt: dict, now: str | None = None) -> int:
        """→ sent with the server's receipt (from any state but sent: a receipt is the last word)."""
        return self._move([seq], "sent", ("queued", "sending", *ATTENTION), now, receipt=canonical_json(receipt),
                          last_error=None, next_attempt_at=None)

    @guarded
    def fail(self, seq: int, message: str, *, state: str = "failed", now: str | None = None) -> int:
        """queued/sending → failed (bad data, a permanent 4xx) or needs-attention (a conflict), with why."""
        if state not in ATTENTION:
            raise ValidationError(f"state: {state!r} is not one of {', '.join(ATTENTION)}")
        return self._move([seq], state, PENDING, now, last_error=message, next_attempt_at=None)

    @guarded
    def requeue(self, seqs: Iterable[int], *, error: str | None = None, next_attempt_at: str | None = None,
                now: str | None = None) -> int:
        """sending → queued after a transient failure; ``error`` and ``next_attempt_at`` are kept when given."""
        cols: dict[str, Any] = {}
        if error is not None:
            cols["last_error"] = error
        if next_attempt_at is not None:
            cols["next_attempt_at"] = next_attempt_at
        return self._move(seqs, "queued", PENDING, now, **cols)

    @guarded
    def retry(self, item_ids: Iterable[str] | None = None, *, states: Iterable[str] = ATTENTION) -> int:
        """failed / needs-attention → queued (all, or those item ids), for after the cause was fixed."""
        states = [s for s in states if s in ATTENTION]
        if not states:
            return 0
        sql = (f"UPDATE outbox SET state = 'queued', next_attempt_at = NULL, updated_at = ? "
               f"WHERE state IN ({_marks(len(states))})")
        params: list[Any] = [utc_now(), *states]
        if item_ids is not None:
            ids = [str(i) for i in item_ids]
            if not ids:
                return 0
            sql += f" AND item_id IN ({_marks(len(ids))})"
            params += ids
        return self._update(sql, params)

    # ------------------------------------------------------------------ sync runs
    @guarded
    def log_run(self, detail: dict, *, ok: bool, at: str | None = None) -> None:
        """One audit entry for a sync run (``sync`` when it finished, ``sync-error`` when it stopped early)."""
        with self._store.transaction():
            self._store._audit(RUN_ENTITY, RUN_ID, "sync" if ok else "sync-error", detail, at)

    @guarded
    def last_run(self) -> dict | None:
        """The latest run's ``{at, action, detail}`` (detail decoded), or None."""
        rows = self._rows("SELECT at, action, detail FROM audit_log WHERE entity = ? AND entity_id = ?"
                          " ORDER BY id DESC LIMIT 1", (RUN_ENTITY, RUN_ID))
        if not rows:
            return None
        run = rows[0]
        run["detail"] = json.loads(run["detail"]) if run["detail"] else None
        return run

    @guarded
    def last_success_at(self) -> str | None:
        """When the latest run finished without error."""
        rows = self._rows("SELECT at FROM audit_log WHERE entity = ? AND entity_id = ? AND action = 'sync'"
                          " ORDER BY id DESC LIMIT 1", (RUN_ENTITY, RUN_ID))
        return rows[0]["at"] if rows else None
