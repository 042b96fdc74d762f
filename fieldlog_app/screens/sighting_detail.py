"""One sighting: its fields, its reports, and what can be done with it next.

Drafts can be edited, finalized or deleted; finalized sightings can be revised
(the store makes a new version, never an in-place edit) and reported on;
superseded versions are read-only history.
"""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label, Static

from ..widgets.gen_status import describe_pair
from .common import findings_of, is_clean, loads_maybe, short_id, sighting_summary
from .confirm import ConfirmScreen
from .messages import EditSighting, GenerateReport, OpenReport


def _report_row(r: dict) -> tuple:
    status = r.get("status") or "complete"
    n = len(findings_of(r))
    if status != "complete":
        integrity = Text(status, style="dim")
    elif n:
        integrity = Text(f"⚠ {n} finding{'s' if n != 1 else ''}", style="bold yellow")
    else:
        integrity = Text("✓ clean", style="green")
    stats = loads_maybe(r.get("stats"), {}) or {}
    tps = stats.get("tokens_per_s") if isinstance(stats, dict) else None
    created = str(r.get("created_at") or "")[:16].replace("T", " ")
    return (
        created,
        integrity,
        Text(describe_pair(loads_maybe(r.get("model_pair"), None)) or "—"),
        f"{tps:.1f}" if isinstance(tps, (int, float)) else "—",
    )


class SightingDetailScreen(Screen):
    """Details of one sighting and its reports."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("e", "edit", "Edit"),
        Binding("f", "finalize", "Finalize"),
        Binding("g", "generate", "Generate"),
        Binding("d", "delete", "Delete draft"),
    ]

    def __init__(self, sighting_id: str) -> None:
        super().__init__()
        self.sighting_id = sighting_id
        self.sighting: dict | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="detail-scroll"):
            yield Static("", id="detail-summary")
            yield Label("Reports", id="detail-reports-title", classes="section-title")
            yield DataTable(id="detail-reports", cursor_type="row", zebra_stripes=True)
            yield Static("", id="detail-hint")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#detail-reports", DataTable)
        table.add_column("Created", key="created", width=16)
        table.add_column("Integrity", key="integrity", width=12)
        table.add_column("Models", key="models")
        table.add_column("tok/s", key="tps", width=6)
        self.load()

    def on_screen_resume(self) -> None:
        self.load()

    def on_queued_report_done(self, message) -> None:
        # a report of this sighting written on the charger joins its list
        if message.sighting_id == self.sighting_id:
            self.load()

    def load(self) -> None:
        ok, s = self.app.store_call("Reading the sighting", self.app.store.get_sighting, self.sighting_id)
        if not ok:
            self.query_one("#detail-summary", Static).update(Text(f"Sighting {short_id(self.sighting_id)} not found."))
            return
        self.sighting = s
        self.sub_title = f"sighting {short_id(s.get('id'))}"
        self.query_one("#detail-summary", Static).update(sighting_summary(s))
        table = self.query_one("#detail-reports", DataTable)
        table.clear()
        ok, reports = self.app.store_call("Reading reports", self.app.store.reports_for, self.sighting_id)
        reports = sorted(reports if ok else [], key=lambda r: str(r.get("created_at") or ""), reverse=True)
        for r in reports:
            table.add_row(*_report_row(r), key=str(r["id"]))
        if reports:
            table.focus()  # Enter opens the newest report
        status = s.get("status") or "draft"
        hint = {
            "draft": "Draft: e edit · f finalize · g report (synced once finalized unchanged) · d delete.",
            "finalized": "Finalized: g generate a report · e revise (makes a new version).",
            "superseded": "Superseded by a newer version: read-only history.",
        }.get(status, "")
        if not reports:
            hint = "No reports yet. " + hint
        elif not any(is_clean(r) for r in reports):
            hint = "No clean report yet. " + hint
        self.query_one("#detail-hint", Static).update(Text(hint, style="dim"))
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        """Only offer what the sighting's state allows (the Footer hides the rest)."""
        status = (self.sighting or {}).get("status") or "draft"
        if action in ("finalize", "delete"):
            return status == "draft"
        if action == "generate":
            return status in ("draft", "finalized")
        if action == "edit":
            return status in ("draft", "finalized")
        return True

    @on(DataTable.RowSelected, "#detail-reports")
    def _open_report(self, event: DataTable.RowSelected) -> None:
        self.post_message(OpenReport(str(event.row_key.value)))

    def action_edit(self) -> None:
        if self.sighting is None:
            return
        self.post_message(EditSighting(self.sighting))

    def action_finalize(self) -> None:
        if self.sighting is None:
            return
        ok, _ = self.app.store_call("Finalize", self.app.store.finalize, self.sighting_id)
        if ok:
            self.notify("Sighting finalized", timeout=3)
        self.load()

    def action_generate(self) -> None:
        if self.sighting is None:
            return
        self.post_message(GenerateReport(self.sighting))

    def action_delete(self) -> None:
        if self.sighting is None:
            return

        def _done(confirmed: bool | None) -> None:
            if confirmed:
                ok, _ = self.app.store_call("Delete draft", self.app.store.delete_draft, self.sighting_id)
                if ok:
                    self.notify("Draft deleted", timeout=3)
                    self.app.pop_screen()

        self.app.push_screen(ConfirmScreen("Delete this draft? This cannot be undone."), _done)
