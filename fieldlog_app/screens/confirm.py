"""A yes/no modal for destructive actions (delete a draft, discard unsaved edits)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, yes: str = "Yes", no: str = "No") -> None:
        super().__init__()
        self.question, self.yes, self.no = question, yes, no

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-box"):
            yield Static(Text(self.question), id="confirm-question")
            with Horizontal(id="confirm-buttons"):
                # the keys are on the buttons: y is the only key that does the destructive thing, and
                # Enter (the focused, safe button), n and Esc all keep what is there
                yield Button(f"y  {self.yes}", id="confirm-yes", variant="error", compact=True)
                yield Button(f"n  {self.no}", id="confirm-no", variant="primary", compact=True)
            yield Static(Text(f"y {self.yes.lower()} · Enter, n or Esc {self.no.lower()}", style="dim"),
                         id="confirm-keys")

    def on_mount(self) -> None:
        self.query_one("#confirm-no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm-yes")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)
