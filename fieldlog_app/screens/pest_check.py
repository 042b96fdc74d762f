"""Before a sighting is finalized: pest names the catalog knows under another name, or not at all.

A misspelling ("berry moht") stored as typed is missed by every filter and search for the right
name, and an unknown pest ("grape cicada") gets no threshold; so both are put to the scout once,
at finalize, with the catalog's name where it has one. The answer is "use the catalog names"
(misspellings and synonyms replaced, unknown pests kept), "keep as typed", or back to the form.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from vineyard.pests import PestName, check_name


def names_to_check(observations: list[dict]) -> list[tuple[int, PestName]]:
    """(observation index, check) for every pest name that is not the catalog's own."""
    out = []
    for i, o in enumerate(observations):
        if o.get("pest"):
            c = check_name(o["pest"])
            if c.status != "catalog":
                out.append((i, c))
    return out


def apply_catalog_names(observations: list[dict], checks: list[tuple[int, PestName]]) -> list[dict]:
    """The observations with each synonym or misspelling replaced by its catalog name (unknown ones kept)."""
    out = [dict(o) for o in observations]
    for i, c in checks:
        if c.status in ("synonym", "misspelling") and c.suggestion:
            out[i]["pest"] = c.suggestion
    return out


class PestCheckScreen(ModalScreen[str | None]):
    """Answers "catalog" (use the catalog names), "keep" (keep as typed) or None (back to the form)."""

    BINDINGS = [
        Binding("y", "answer('catalog')", "Use catalog names"),
        Binding("k", "answer('keep')", "Keep as typed"),
        Binding("escape", "answer(None)", "Back"),
    ]

    def __init__(self, checks: list[tuple[int, PestName]]) -> None:
        super().__init__()
        self.checks = checks

    @property
    def replaceable(self) -> bool:
        return any(c.status in ("synonym", "misspelling") for _, c in self.checks)

    def compose(self) -> ComposeResult:
        t = Text("Pest names the catalog does not use:", style="bold")
        for i, c in self.checks:
            t.append(f"\n Observation {i + 1}: ")
            t.append(repr(c.typed), style="bold")
            if c.status in ("synonym", "misspelling"):
                t.append(f" → {c.suggestion}", style="green")
                t.append(f" ({c.status})", style="dim")
            else:
                t.append(" not in the pest catalog", style="yellow")
                if c.suggestion:
                    t.append(f" (nearest: {c.suggestion})", style="dim")
        if any(c.status == "unknown" for _, c in self.checks):
            t.append("\nAn unknown pest is kept as typed and marked as not in the catalog (no threshold).", style="dim")
        with Vertical(id="pest-check-box"):
            yield Static(t, id="pest-check-list")
            with Horizontal(id="pest-check-buttons"):
                if self.replaceable:
                    yield Button("y  Use catalog names", id="pest-check-catalog", variant="success", compact=True)
                yield Button("k  Keep as typed" if self.replaceable else "k  Keep (unknown pest)",
                             id="pest-check-keep", variant="warning", compact=True)
                yield Button("Esc  Back", id="pest-check-back", variant="primary", compact=True)

    def on_mount(self) -> None:
        self.query_one("#pest-check-catalog" if self.replaceable else "#pest-check-keep", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss({"pest-check-catalog": "catalog", "pest-check-keep": "keep"}.get(event.button.id or ""))

    def action_answer(self, value: str | None) -> None:
        if value == "catalog" and not self.replaceable:
            value = "keep"  # nothing to replace: "y" confirms the unknown names
        self.dismiss(value)
