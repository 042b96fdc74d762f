"""Navigation requests a screen posts and the app routes (``FieldlogApp.on_*`` in app.py).

A screen never imports another screen: it says where the user wants to go
(``self.post_message(OpenSighting(id))``), the message bubbles to the app, and
the app pushes the screen. So screens depend only on this module, and the
app alone knows the map (as Posting and Harlequin route theirs).
"""

from __future__ import annotations

from typing import Any

from textual.message import Message


class OpenSighting(Message):
    """Show one sighting's detail screen."""

    def __init__(self, sighting_id: str) -> None:
        super().__init__()
        self.sighting_id = sighting_id


class OpenReport(Message):
    """Show one stored report."""

    def __init__(self, report_id: str) -> None:
        super().__init__()
        self.report_id = report_id


class EditSighting(Message):
    """Open the sighting form: empty for a new sighting (``sighting=None``), else to edit or revise it."""

    def __init__(self, sighting: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.sighting = sighting


class GenerateReport(Message):
    """Start generating a report for this sighting (its dict, as the detail screen holds it)."""

    def __init__(self, sighting: dict[str, Any]) -> None:
        super().__init__()
        self.sighting = sighting


class SightingSaved(Message):
    """The form finalized or revised a sighting: close the form, and the detail of an older version
    under it, and show ``sighting_id``."""

    def __init__(self, sighting_id: str) -> None:
        super().__init__()
        self.sighting_id = sighting_id


class OpenSeason(Message):
    """Show a block's season at a glance (``block=None``: the first block with sightings)."""

    def __init__(self, block: str | None = None) -> None:
        super().__init__()
        self.block = block


class BackgroundSync(Message):
    """A background sync ended (``result``: a SyncResult or the exception): screens that show the
    outbox refresh themselves. Posted by the app to every screen on its stack."""

    def __init__(self, result: Any) -> None:
        super().__init__()
        self.result = result


class QueuedReportDone(Message):
    """A report deferred on a critical battery was written on the charger (``report_id``), or its job failed
    (``report_id`` None, ``error`` says why). Posted by the app to every screen on its stack."""

    def __init__(self, sighting_id: str, report_id: str | None, error: str | None = None) -> None:
        super().__init__()
        self.sighting_id = sighting_id
        self.report_id = report_id
        self.error = error
