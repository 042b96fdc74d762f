"""Errors the store raises. Every one is a StoreError, so callers (UI, CLI, sync)
can show a message instead of crashing."""

from __future__ import annotations

import re

from vineyard import FieldNoteError


class StoreError(Exception):
    """Base class: bad input or an operation the current state does not allow."""


class NotFoundError(StoreError, LookupError):
    """No sighting/report with that id."""


class StateError(StoreError):
    """The record is in the wrong state for the operation (e.g. editing a finalized sighting)."""


_FIELD_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\[\d+\])?(?:\.[A-Za-z_][A-Za-z0-9_]*)?): ")


class ValidationError(StoreError, FieldNoteError):
    """A sighting/report value is invalid. ``field`` names it (e.g. ``observations[0].sampled``)
    so a form can put the message next to the right input."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        if field is None:
            m = _FIELD_RE.match(message)
            field = m.group(1) if m else None
        self.field = field

    @classmethod
    def from_fieldnote(cls, err: FieldNoteError) -> "ValidationError":
        return cls(str(err))
