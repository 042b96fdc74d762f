"""Form building blocks: a labelled one-line input with its own inline error, and an observation row.

Compact (one-line) inputs so the whole stop fits a handheld's 80x24 terminal.
Each input validates as the user types (Textual ``Validator``) using the same
rules as the form model, and shows the reason right under the field. A field
with a fixed set of values (``kind="choice"``) is a compact Select instead,
with a blank entry for "not set".
"""

from __future__ import annotations

from itertools import count
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.suggester import SuggestFromList
from textual.validation import ValidationResult, Validator
from textual.widget import Widget
from textual.widgets import Button, Input, Label, Select, Static

from vineyard.pests import check_name

from ..screens.form_model import LIFE_STAGES, OBS_FIELDS, UNITS, FieldSpec, check_value


class SpecValidator(Validator):
    """Textual validator backed by ``form_model.check_value`` (one rule set, two callers)."""

    def __init__(self, spec: FieldSpec) -> None:
        super().__init__()
        self.spec = spec

    def validate(self, value: str) -> ValidationResult:
        _, err = check_value(self.spec, value)
        return self.failure(err, value) if err else self.success()


class FieldInput(Input):
    """Input where Enter first takes the autocomplete suggestion (one key on a handheld, not →)."""

    async def action_submit(self) -> None:
        if self.cursor_at_end:
            self.action_cursor_right()  # accepts a pending suggestion; no-op otherwise
        await super().action_submit()


class FormField(Vertical):
    """Label + compact Input on one line, error message underneath (hidden when fine)."""

    DEFAULT_CSS = """
    FormField { height: auto; width: 1fr; }
    FormField > Horizontal { height: 1; }
    FormField Label.field-label { width: auto; min-width: 8; padding-right: 1; }
    FormField Input, FormField Select { width: 1fr; }
    FormField .field-error { color: $error; height: auto; display: none; padding-left: 1; }
    FormField.-has-error .field-error { display: block; }
    FormField.-has-note .field-error { display: block; color: $warning; }
    """

    def __init__(self, spec: FieldSpec, value: str = "", *, input_id: str,
                 suggestions: list[str] | None = None, label_width: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self._value = value
        self._input_id = input_id
        self._suggestions = suggestions
        self._label_width = label_width

    def compose(self) -> ComposeResult:
        label = self.spec.label + ("*" if self.spec.required else "")
        with Horizontal():
            lab = Label(Text(label), classes="field-label")
            if self._label_width:
                lab.styles.width = self._label_width
            yield lab
            if self.spec.kind == "choice":
                yield Select(
                    [(c, c) for c in self.spec.choices],
                    prompt=self.spec.placeholder or "not set",
                    allow_blank=True,
                    value=self._value if self._value in self.spec.choices else Select.NULL,
                    id=self._input_id,
                    compact=True,
                )
            else:
                yield FieldInput(
                    self._value,
                    placeholder=self.spec.placeholder,
                    id=self._input_id,
                    compact=True,
                    suggester=SuggestFromList(self._suggestions, case_sensitive=False) if self._suggestions else None,
                    validators=[SpecValidator(self.spec)],
                    validate_on=["changed", "submitted", "blur"],
                    valid_empty=False,
                    max_length=self.spec.max_len if self.spec.kind == "text" else 32,
                )
        yield Static("", classes="field-error")

    @property
    def input(self) -> Widget:
        """The editing widget: an Input, or a Select for a choice field (focus it, style it)."""
        return self.query_one(f"#{self._input_id}")

    @property
    def value(self) -> str:
        """The raw text, as the form model parses it ("" for a blank Select)."""
        widget = self.input
        if isinstance(widget, Select):
            return "" if widget.is_blank() else str(widget.value)
        return widget.value

    _error: str | None = None

    @property
    def error(self) -> str | None:
        return self._error

    _note: str | None = None

    @property
    def note(self) -> str | None:
        return self._note

    def set_error(self, message: str | None) -> None:
        self._error = message
        self.input.set_class(bool(message), "-invalid")
        self._show()

    def set_note(self, message: str | None) -> None:
        """A remark that is not an error (what the pest catalog makes of a name); an error shows first."""
        self._note = message
        self._show()

    def _show(self) -> None:
        text = self._error or self._note or ""
        self.query_one(".field-error", Static).update(Text(text))
        self.set_class(bool(self._error), "-has-error")
        self.set_class(bool(self._note) and not self._error, "-has-note")

    def on_input_changed(self, event: Input.Changed) -> None:
        # live feedback for typed fields; "required" is only reported on save
        result = event.validation_result
        if result is None or result.is_valid:
            self.set_error(None)
        else:
            self.set_error(result.failure_descriptions[0] if result.failure_descriptions else "invalid")

    def on_select_changed(self, event: Select.Changed) -> None:
        # every option is valid; a new pick clears an error the store reported for the old one
        self.set_error(None)


_row_ids = count(1)


class ObservationRow(Vertical):
    """One observation: pest/stage/unit on the first line, the numbers on the second."""

    DEFAULT_CSS = """
    ObservationRow { height: auto; padding: 0 0 1 0; }
    ObservationRow > .obs-head { height: 1; }
    ObservationRow > .obs-head > Label { width: 1fr; text-style: bold; }
    ObservationRow > .obs-line { height: auto; }
    ObservationRow FormField { padding-right: 1; }
    """

    class RemoveRequested(Message):
        def __init__(self, row: "ObservationRow") -> None:
            super().__init__()
            self.row = row

    def __init__(self, values: dict[str, str] | None = None, *, pests: list[str], number: int = 1,
                 **kwargs: Any) -> None:
        self.uid = next(_row_ids)
        super().__init__(id=f"obs-{self.uid}", classes="obs-row", **kwargs)
        self._values = values or {}
        self._pests = pests
        self._number = number

    def compose(self) -> ComposeResult:
        specs = {s.key: s for s in OBS_FIELDS}
        suggestions = {"pest": self._pests, "life_stage": LIFE_STAGES, "unit": UNITS}
        with Horizontal(classes="obs-head"):
            yield Label(f"Observation {self._number}", classes="obs-title")
            yield Button("✕ remove", id=f"obs-{self.uid}-remove", classes="obs-remove", compact=True,
                         variant="error")
        for keys in (("pest", "life_stage", "unit"), ("sampled", "infested", "count", "severity_pct", "defoliation_pct")):
            with Horizontal(classes="obs-line"):
                for key in keys:
                    yield FormField(specs[key], self._values.get(key, ""), input_id=f"obs-{self.uid}-{key}",
                                    suggestions=suggestions.get(key), classes=f"obs-{key}")

    def set_number(self, number: int) -> None:
        self._number = number
        if self.is_mounted:
            self.query_one(".obs-title", Label).update(f"Observation {number}")

    def field(self, key: str) -> FormField:
        return self.query_one(f".obs-{key}", FormField)

    def values(self) -> dict[str, str]:
        return {spec.key: self.field(spec.key).value for spec in OBS_FIELDS}

    def on_mount(self) -> None:
        self.check_pest()

    def check_pest(self) -> None:
        """Say under the pest what the catalog makes of it, as it is typed: a synonym or misspelling
        names the catalog's name (ctrl+y takes it), an unknown name says so."""
        typed = self.field("pest").value.strip()
        c = check_name(typed) if typed else None
        if c is None or c.status == "catalog":
            self.field("pest").set_note(None)
        elif c.suggestion and c.status != "unknown":
            self.field("pest").set_note(f"{c.status} of {c.suggestion} · ctrl+y uses it")
        else:
            self.field("pest").set_note(c.describe())

    def use_catalog_name(self) -> bool:
        """Replace the pest with its catalog name (a synonym or misspelling); False when there is none."""
        c = check_name(self.field("pest").value)
        if c.status in ("synonym", "misspelling") and c.suggestion:
            self.field("pest").input.value = c.suggestion
            return True
        return False

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == f"obs-{self.uid}-pest":
            self.check_pest()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.has_class("obs-remove"):
            event.stop()
            self.post_message(self.RemoveRequested(self))
