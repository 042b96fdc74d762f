"""A demo database says so: one entry in its append-only audit log, which nothing can remove.

``fieldlog --demo`` marks the database it seeds; sync and bundle export refuse a
marked database, so sample sightings never reach a real farm office (which could
not delete them).
"""

from __future__ import annotations

from typing import Any

from .canonical import utc_now
from .guard import guarded

DEMO_ENTITY = ("database", "demo")  # (entity, entity_id) of the marker row


class DemoMark:
    def __init__(self, store: Any) -> None:
        self._store = store

    @guarded
    def is_demo(self) -> bool:
        row = self._store.db.conn.execute(
            "SELECT 1 FROM audit_log WHERE entity_id = ? AND entity = ? LIMIT 1", (DEMO_ENTITY[1], DEMO_ENTITY[0])
        ).fetchone()
        return row is not None

    def mark(self) -> None:
        """Mark the database as demo data (idempotent)."""
        if self.is_demo():
            return
        with self._store.transaction() as db:
            db["audit_log"].insert({"at": utc_now(), "entity": DEMO_ENTITY[0], "entity_id": DEMO_ENTITY[1],
                                    "action": "seed", "detail": '{"why":"sample data: never synced"}'})


def is_demo(store: Any) -> bool:
    return DemoMark(store).is_demo()


def mark_demo(store: Any) -> None:
    DemoMark(store).mark()
