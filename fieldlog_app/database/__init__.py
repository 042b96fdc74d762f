"""fieldlog's on-device SQLite store (sqlite-utils): sightings, reports, audit log,
outbox for sync, full-text search and exports. store.py explains the durability
choices (WAL, synchronous=FULL, one transaction per save)."""

from .canonical import canonical_json, payload_sha256, utc_now
from .errors import NotFoundError, StateError, StoreError, ValidationError
from .migrations import LATEST as SCHEMA_VERSION
from .migrations import current_version, migrate
from .outbox import ATTENTION as OUTBOX_ATTENTION
from .outbox import PENDING as OUTBOX_PENDING
from .outbox import STATES as OUTBOX_STATES
from .outbox import Outbox
from .payloads import note_of, report_payload, sighting_payload
from .store import ImportResult, Store, fts_query

__all__ = [
    "Store", "ImportResult", "Outbox", "OUTBOX_STATES", "OUTBOX_PENDING", "OUTBOX_ATTENTION", "StoreError", "ValidationError", "NotFoundError", "StateError",
    "canonical_json", "payload_sha256", "utc_now", "note_of", "sighting_payload", "report_payload",
    "migrate", "current_version", "SCHEMA_VERSION", "fts_query",
]
