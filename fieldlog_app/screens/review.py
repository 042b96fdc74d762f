"""A person corrects, approves or flags a stored report (``store.review_report``: each one a new version).

``ReportEditScreen`` is the report's text in an editor; saving it (optionally approving at once) gives
the report back with the typed words in provenance ``person`` and a fresh fact check.
``ReviewScreen`` asks who approves or flags (and why, for a flag). Both dismiss with what the report
screen needs to call the store, and never write anything themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Footer, Header, Input, Static, TextArea


@dataclass(frozen=True)
class ReviewAnswer:
    """What the person decided: ``action`` edit/approve/flag, who, the edited text (edits) and why (flags)."""

    action: str
    by: str
    text: str | None = None
    note: str | None = None


class ReportEditScreen(Screen[ReviewAnswer | None]):
    """Edit a report's text; ctrl+s saves a new version, ctrl+g saves and approves it."""

    BINDINGS = [
        Binding("ctrl+s", "save('edit')", "Save version"),
        Binding("ctrl+g", "save('approve')", "Save + approve"),  # ctrl+a selects all in the editor
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self, text: str, reviewer: str = "") -> None:
        super().__init__()
        self.original = text
        self.reviewer = reviewer

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(Text("Correct the report. What you type is marked as yours (person); the fact check runs "
                          "again when you save.", style="dim"), id="edit-help")
        yield TextArea(self.original, id="edit-text", soft_wrap=True, show_line_numbers=False)
        with Horizontal(id="edit-who"):
            yield Static("Reviewed by ", id="edit-who-label")
            yield Input(self.reviewer, placeholder="your name", id="edit-by", compact=True, max_length=200)
        yield Static("", id="edit-message")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "edit report (saves a new version)"
        self.query_one("#edit-text", TextArea).focus()

    @property
    def text(self) -> str:
        return self.query_one("#edit-text", TextArea).text

    def _say(self, message: str) -> None:
        self.query_one("#edit-message", Static).update(Text(message, style="bold red"))

    def action_save(self, action: str) -> None:
        by = self.query_one("#edit-by", Input).value.strip()
        if not self.text.strip():
            self._say("The report is empty; write it, or press Esc to leave it as it was.")
            return
        if action == "edit" and self.text == self.original:
            self._say("Nothing changed. Press ctrl+g to approve it as it is, or Esc to go back.")
            return
        if not by:
            self._say("Enter your name under the report: a reviewed report says who reviewed it.")
            self.query_one("#edit-by", Input).focus()
            return
        self.dismiss(ReviewAnswer(action, by, self.text if self.text != self.original else None))

    @on(Input.Submitted, "#edit-by")
    def _submitted(self) -> None:
        self.action_save("edit")

    def action_cancel(self) -> None:
        self.dismiss(None)


class ReviewScreen(ModalScreen[ReviewAnswer | None]):
    """Approve or flag: who (and, for a flag, why). Enter confirms, Esc goes back."""

    BINDINGS = [Binding("escape", "cancel", "Back")]

    def __init__(self, action: str, reviewer: str = "", findings: int = 0) -> None:
        super().__init__()
        self.action = action
        self.reviewer = reviewer
        self.findings = findings

    def compose(self) -> ComposeResult:
        with Vertical(id="review-box"):
            if self.action == "approve":
                t = Text("Approve this report: you checked it and it can go to the office as it is.", style="bold")
                if self.findings:
                    t.append(f"\n⚠ The fact check still has {self.findings} finding"
                             f"{'s' if self.findings != 1 else ''} on it; approving keeps them on record.", style="yellow")
            else:
                t = Text("Flag this report: it is wrong or needs a second look. Say why.", style="bold")
            yield Static(t, id="review-question")
            yield Input(self.reviewer, placeholder="your name", id="review-by", compact=True, max_length=200)
            if self.action == "flag":
                yield Input(placeholder="why (e.g. the risk level is wrong)", id="review-note", compact=True,
                            max_length=2000)
            yield Static("", id="review-message")
            with Horizontal(id="review-buttons"):
                yield Button("Approve" if self.action == "approve" else "Flag", id="review-ok",
                             variant="success" if self.action == "approve" else "warning", compact=True)
                yield Button("Esc  Back", id="review-back", variant="primary", compact=True)
            yield Static(Text("Enter confirms · Esc goes back", style="dim"), id="review-keys")

    def on_mount(self) -> None:
        first = "#review-note" if self.action == "flag" and self.reviewer else "#review-by"
        self.query_one(first, Input).focus()

    def _confirm(self) -> None:
        by = self.query_one("#review-by", Input).value.strip()
        note = self.query_one("#review-note", Input).value.strip() if self.action == "flag" else None
        if not by:
            self.query_one("#review-message", Static).update(Text("Enter your name.", style="bold red"))
            self.query_one("#review-by", Input).focus()
            return
        if self.action == "flag" and not note:
            self.query_one("#review-message", Static).update(Text("Say why it is flagged.", style="bold red"))
            self.query_one("#review-note", Input).focus()
            return
        self.dismiss(ReviewAnswer(self.action, by, None, note))

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._confirm()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "review-ok":
            self._confirm()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)
