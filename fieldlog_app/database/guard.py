"""The decorator every public Store (and Outbox) method goes through."""

from __future__ import annotations

import functools
import sqlite3

from .errors import StoreError


def guarded(method):
    """Serialise calls on the store's lock and turn sqlite errors into StoreError with a readable message.

    Works on the Store itself and on objects that hold it as ``_store`` (its table APIs)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        store = getattr(self, "_store", self)
        if store._closed:
            raise StoreError("the store is closed")
        with store._lock:
            try:
                return method(self, *args, **kwargs)
            except sqlite3.OperationalError as e:
                if "locked" in str(e) or "busy" in str(e):
                    raise StoreError("the database is busy (another fieldlog process is writing); try again") from e
                raise StoreError(f"database error: {e}") from e
            except sqlite3.DatabaseError as e:
                raise StoreError(f"database error: {e}") from e

    return wrapper
