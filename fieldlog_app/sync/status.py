"""What the outbox holds and how to repair it: the status the sync screen shows, retrying items that need
attention, and marking items sent from a receipts file the farm office signed (the SD-card route back).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

from fieldlog_app.database import OUTBOX_ATTENTION as ATTENTION
from fieldlog_app.database import Store
from fieldlog_app.database.canonical import utc_now

from .common import ENV_TOKEN, SyncConfigError, SyncStatus, open_store, sync_lock
from .protocol import validate_receipt
from .signing import key_from_token, receipt_is_signed


def outbox_status(db: Store | str | os.PathLike, *, attention_limit: int = 100) -> SyncStatus:
    with open_store(db, readonly=True) as store:
        outbox = store.outbox
        with store.transaction():  # one consistent view
            counts = outbox.counts()
            attention = outbox.attention(attention_limit)
            last = outbox.last_run()
            last_success = outbox.last_success_at()
            next_at = outbox.next_attempt_at()
    detail = last["detail"] if last else None
    return SyncStatus(
        counts=counts,
        pending=counts.get("queued", 0) + counts.get("sending", 0),
        last_run_at=last["at"] if last else None,
        last_success_at=last_success,
        last_error=(detail or {}).get("error") if last and last["action"] == "sync-error" else None,
        next_attempt_at=next_at,
        attention=attention,
        last_result=detail,
    )


def retry_items(db: Store | str | os.PathLike, item_ids: Iterable[str] | None = None, *,
                states: Iterable[str] = ATTENTION) -> int:
    """Put failed / needs-attention rows (all, or those ids) back in the queue; returns how many.

    For after the cause was fixed (a server upgraded, a conflict resolved at the
    office). The frozen payload is sent again as it is."""
    states = [s for s in states if s in ATTENTION]
    if not states:
        return 0
    with open_store(db) as store, sync_lock(store):
        return store.outbox.retry(item_ids, states=states)


@dataclass
class ReceiptResult:
    marked_sent: int = 0
    already_sent: int = 0
    unknown: int = 0      # no such item on this device
    mismatched: int = 0   # same id, other hash: not this version
    unverified: int = 0   # not signed by the office for this device: proves nothing, changes nothing


def apply_receipts(db: Store | str | os.PathLike, receipts: Iterable[dict], *, token: str) -> ReceiptResult:
    """Mark rows sent from receipts the office returned for a bundle import: only a receipt the office
    signed for this device (its ``token``) counts, and then only for an exact item id + sha256 match
    (the same rule as over HTTP)."""
    if not token:
        raise SyncConfigError(f"receipts are checked with this device's token: pass --token TOKEN or set {ENV_TOKEN}")
    key = key_from_token(token)
    out = ReceiptResult()
    with open_store(db) as store, sync_lock(store):
        now = utc_now()
        with store.transaction():
            for rec in receipts:
                if validate_receipt(rec) is not None:
                    out.unknown += 1
                    continue
                if not receipt_is_signed(key, rec):
                    out.unverified += 1
                    continue
                row = store.outbox.get(rec["item_id"])
                if row is None:
                    out.unknown += 1
                elif row["sha256"] != rec["sha256"]:
                    out.mismatched += 1
                elif row["state"] == "sent":
                    out.already_sent += 1
                else:
                    store.outbox.mark_sent(row["seq"], rec, now)
                    out.marked_sent += 1
    return out
