"""The sighting form: one scouting stop with several observations.

Three modes, chosen by what is opened: a new sighting, an existing draft
(saved in place), or a finalized sighting (saving makes a new version through
``store.revise`` — finalized records are never edited in place). Validation
runs as the user types (per field) and again on save: lenient for a draft,
complete for finalize, and anything the store still rejects is pinned back to
the field it names.
"""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Checkbox, Footer, Header, Input, Label, Select, Static

from vineyard.fieldnote import nothing_found

from .. import gps
from ..widgets.fields import FormField, ObservationRow
from .common import short_id
from .confirm import ConfirmScreen
from .form_model import TOP_FIELDS, WIDE_FIELDS, FormResult, error_key, note_to_form, parse_form
from .messages import SightingSaved
from .pest_check import PestCheckScreen, apply_catalog_names, names_to_check


# the longest top label ("Risk class") plus the label's right padding and one column of air,
# so every input in a column starts at the same place
TOP_LABEL_WIDTH = max(len(spec.label) + spec.required for spec in TOP_FIELDS) + 2


class SightingFormScreen(Screen):
    """New sighting, edit a draft, or revise a finalized sighting."""

    BINDINGS = [
        Binding("ctrl+s", "save_draft", "Save draft"),
        Binding("ctrl+f", "finalize", "Finalize"),
        Binding("ctrl+o", "add_observation", "Add obs"),
        Binding("escape", "leave", "Back"),
        Binding("ctrl+y", "use_catalog_name", "Catalog name", show=False),
        Binding("ctrl+g", "gps", "GPS"),
    ]

    def __init__(self, sighting: dict | None = None) -> None:
        super().__init__()
        self.sighting = sighting
        self.sighting_id: str | None = sighting.get("id") if sighting else None
        status = (sighting or {}).get("status") or "draft"
        self.mode = "revise" if sighting and status == "finalized" else ("draft" if sighting else "new")
        self._saved_snapshot: tuple | None = None
        # strictness of the last save attempt that failed: while set, every edit re-checks the form
        # the same way, so the "Fix N fields" banner counts what is still wrong (and goes when nothing is)
        self._recheck: bool | None = None
        self._extra: str | None = None

    # ---------------------------------------------------------------- layout

    def compose(self) -> ComposeResult:
        yield Header()
        if self.sighting:
            top, obs = note_to_form(self.sighting)
        else:
            top, obs = {"date": self.app.today().isoformat()}, []
        if not obs:
            obs = [{}]
        with VerticalScroll(id="form-scroll"):
            yield Static("", id="form-message")
            yield Static("", id="form-gps")
            with Grid(id="form-top"):
                for spec in TOP_FIELDS:
                    wide = " -wide-field" if spec.key in WIDE_FIELDS else ""
                    yield FormField(spec, top.get(spec.key, ""), input_id=f"f-{spec.key}",
                                    classes=f"top-{spec.key}{wide}", label_width=TOP_LABEL_WIDTH)
            with Horizontal(id="form-obs-head"):
                yield Label("Observations", classes="section-title")
                # a walk with no pest found is a record of its own, not a fake "none" pest
                yield Checkbox("Nothing found", self._nothing_found_at_start(), id="form-nothing-found", compact=True)
                yield Button("+ add observation", id="form-add-obs", compact=True, variant="primary")
            with Vertical(id="form-obs"):
                for i, values in enumerate(obs, 1):
                    yield ObservationRow(values, pests=self.app.pests, number=i)
            with Horizontal(id="form-buttons"):
                if self.mode == "revise":
                    yield Button("Save new version", id="form-revise", variant="success", compact=True)
                else:
                    yield Button("Save draft", id="form-save", variant="primary", compact=True)
                    yield Button("Finalize", id="form-finalize", variant="success", compact=True)
                yield Button("Back", id="form-back", compact=True)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = {
            "new": "new sighting",
            "draft": f"draft {short_id(self.sighting_id)}",
            "revise": f"revise {short_id(self.sighting_id)} (saves a new version)",
        }[self.mode]
        self._saved_snapshot = self._snapshot() if self.mode != "new" else None
        self.query_one("#f-block", Input).focus()

    def _nothing_found_at_start(self) -> bool:
        """A draft as it was saved (the store keeps the choice with it); a finalized walk ticked when it found
        nothing. A draft saved before the choice was kept (or by a caller that did not say) is judged by its
        observations: without any it may just be unfinished."""
        s = self.sighting or {}
        obs = s.get("observations") or []
        if (s.get("status") or "draft") == "draft":
            if s.get("nothing_found") is not None:
                return bool(s["nothing_found"])
            if not obs:
                return False
        return bool(self.sighting) and nothing_found(s)

    @property
    def nothing_found(self) -> bool:
        return self.query_one("#form-nothing-found", Checkbox).value

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "finalize" and self.mode == "revise":
            return False
        return True

    # ---------------------------------------------------------------- position from gpsd

    def action_gps(self) -> None:
        """Fill latitude, longitude and accuracy from gpsd (in a worker: a receiver may take seconds)."""
        self._gps_message(Text("GPS: asking gpsd for a position…", style="dim"))
        self.read_gps()

    @work(thread=True, exclusive=True, group="gps", exit_on_error=False)
    def read_gps(self) -> None:
        try:
            fix = gps.read_fix()
        except gps.GpsError as e:
            self.app.call_from_thread(self._gps_failed, str(e))
        except Exception as e:  # never a crash over a position: the scout can type it
            self.app.call_from_thread(self._gps_failed, f"{type(e).__name__}: {e}")
        else:
            self.app.call_from_thread(self._gps_fix, fix)

    def _gps_fix(self, fix: gps.Fix) -> None:
        if not self.is_attached:
            return
        self.top_field("lat").input.value = f"{fix.lat:.6f}"
        self.top_field("lon").input.value = f"{fix.lon:.6f}"
        self.top_field("accuracy_m").input.value = f"{fix.accuracy_m:g}" if fix.accuracy_m is not None else ""
        acc = f" ± {fix.accuracy_m:g} m" if fix.accuracy_m is not None else " (gpsd gave no accuracy)"
        self._gps_message(Text(f"GPS: {fix.lat:.6f}, {fix.lon:.6f}{acc} from gpsd", style="green"))

    def _gps_failed(self, why: str) -> None:
        if self.is_attached:
            self._gps_message(Text(f"No GPS position: {why}. Type the position in, or leave it empty.",
                                   style="bold yellow"))

    def _gps_message(self, text: Text) -> None:
        widget = self.query_one("#form-gps", Static)
        widget.update(text)
        widget.add_class("-shown")

    # ---------------------------------------------------------------- reading the form

    def obs_rows(self) -> list[ObservationRow]:
        return list(self.query(ObservationRow))

    def top_field(self, key: str) -> FormField:
        return self.query_one(f".top-{key}", FormField)

    def raw_values(self) -> tuple[dict[str, str], list[dict[str, str]]]:
        top = {spec.key: self.top_field(spec.key).value for spec in TOP_FIELDS}
        return top, [row.values() for row in self.obs_rows()]

    def _snapshot(self) -> tuple:
        top, obs = self.raw_values()
        rows = tuple(tuple(sorted(o.items())) for o in obs if any(v.strip() for v in o.values()))
        return tuple(sorted(top.items())), rows, self.nothing_found

    @property
    def dirty(self) -> bool:
        snap = self._snapshot()
        if self._saved_snapshot is None:
            # a new, never-saved form is dirty once anything beyond the default date is typed
            top, obs = dict(snap[0]), snap[1]
            return bool(obs) or snap[2] or any(v.strip() for k, v in top.items() if k != "date")
        return snap != self._saved_snapshot

    def validate_form(self, *, strict: bool) -> FormResult:
        top, obs = self.raw_values()
        result = parse_form(top, obs, strict=strict, nothing_found=self.nothing_found)
        self._extra = None
        self._recheck = None if result.ok else strict
        self.show_errors(result.errors)
        return result

    def _live_recheck(self) -> None:
        if self._recheck is None:
            return
        top, obs = self.raw_values()
        result = parse_form(top, obs, strict=self._recheck, nothing_found=self.nothing_found)
        # stays on until the next save attempt: clearing a fixed field again brings its error back
        self.show_errors(result.errors, extra=self._extra, focus=False)

    @on(Input.Changed)
    @on(Select.Changed)
    @on(Checkbox.Changed)
    def _changed(self) -> None:
        # the field's own handler has run already: the message bubbles up from the input to the screen
        self._live_recheck()

    # ---------------------------------------------------------------- errors

    def _field_for(self, key: str) -> FormField | None:
        if key == "observations":
            # "enter what you found": on the empty Observation 1 the user is looking at, if there is one
            rows = self.obs_rows()
            return rows[0].field("pest") if rows else None
        if key.startswith("observations[") and "]." in key:
            idx = int(key[len("observations["):key.index("]")])
            rows = [r for r in self.obs_rows() if any(v.strip() for v in r.values().values())]
            if idx < len(rows):
                return rows[idx].field(key.split("].", 1)[1])
            return None
        try:
            return self.top_field(key)
        except Exception:
            return None

    def show_errors(self, errors: dict[str, str], extra: str | None = None, *, focus: bool = True) -> None:
        for ff in self.query(FormField):
            ff.set_error(None)
        unplaced: list[str] = []
        first: FormField | None = None
        for key, msg in errors.items():
            ff = self._field_for(key)
            if ff is None:
                unplaced.append(f"{key}: {msg}")
                continue
            ff.set_error(msg)
            first = first or ff
        msg_widget = self.query_one("#form-message", Static)
        if errors or extra:
            n = len(errors)
            text = Text()
            if n:
                text.append(f"Fix {n} field{'s' if n != 1 else ''} marked in red before saving.", style="bold red")
            for u in unplaced:
                text.append(("\n" if text else "") + u, style="red")
            if extra:
                text.append(("\n" if text else "") + extra, style="red")
            msg_widget.update(text)
            msg_widget.add_class("-error", "-shown")
        else:
            msg_widget.update("")
            msg_widget.remove_class("-error", "-shown")
        if not focus:
            return
        if first is not None:
            first.input.focus()
            first.scroll_visible()
        elif errors or extra:
            msg_widget.scroll_visible()

    def _store_rejected(self, exc: Exception) -> None:
        key, msg = error_key(str(exc))
        key = getattr(exc, "field", None) or key
        if key is not None and self._field_for(key) is not None:
            self._recheck, self._extra = None, None
            self.show_errors({key: msg})
        else:
            # a store message with no field (a disk error): it stays up until the next save attempt
            self._recheck, self._extra = False, str(exc)
            self.show_errors({}, extra=str(exc))

    def _info(self, message: str) -> None:
        w = self.query_one("#form-message", Static)
        w.remove_class("-error")
        w.add_class("-shown")
        w.update(Text(message, style="green"))

    # ---------------------------------------------------------------- actions

    def _save_draft(self) -> bool:
        result = self.validate_form(strict=False)
        if not result.ok:
            return False
        store = self.app.store
        # the choice is kept with the draft, so it reopens as saved (a revision derives it from the rows)
        draft = {**result.note, "nothing_found": self.nothing_found}
        try:
            new_id = store.save_draft(draft, id=self.sighting_id) if self.sighting_id else store.save_draft(draft)
        except Exception as e:  # the store's own validation or a disk error: keep the form as typed
            self._store_rejected(e)
            return False
        self.sighting_id = new_id
        if self.mode == "new":
            self.mode = "draft"
            self.sub_title = f"draft {short_id(new_id)}"
        self._saved_snapshot = self._snapshot()
        return True

    def action_save_draft(self) -> None:
        if self.mode == "revise":
            self.action_revise()
            return
        if self._save_draft():
            self._info(f"Draft saved ({short_id(self.sighting_id)}). Finalize when the stop is complete.")
            self.notify("Draft saved", timeout=2)

    def _after_pest_check(self, note: dict, go) -> None:
        """Run ``go(note)`` once the scout has answered for pest names the catalog does not use."""
        checks = names_to_check(note["observations"])
        if not checks:
            go(note)
            return

        def answer(choice: str | None) -> None:
            if choice is None:
                return  # back to the form, nothing saved
            final = note
            if choice == "catalog":
                final = {**note, "observations": apply_catalog_names(note["observations"], checks)}
                filled = [r for r in self.obs_rows() if any(v.strip() for v in r.values().values())]
                for row, o in zip(filled, final["observations"]):
                    if row.field("pest").value != o["pest"]:
                        row.field("pest").input.value = o["pest"]
            go(final)

        self.app.push_screen(PestCheckScreen(checks), answer)

    def action_finalize(self) -> None:
        if self.mode == "revise":
            return
        result = self.validate_form(strict=True)
        if not result.ok:
            return
        self._after_pest_check(result.note, lambda note: self._finalize())

    def _finalize(self) -> None:
        if not self._save_draft():
            return
        try:
            self.app.store.finalize(self.sighting_id)
        except Exception as e:
            self._store_rejected(e)
            return
        self.notify("Sighting finalized", timeout=3)
        self.post_message(SightingSaved(self.sighting_id))

    def action_use_catalog_name(self) -> None:
        focused = self.focused
        for row in self.obs_rows():
            if focused is not None and row in focused.ancestors_with_self:
                if not row.use_catalog_name():
                    self.notify("This pest name is the catalog's own, or the catalog does not know it", timeout=3)
                return

    def action_revise(self) -> None:
        result = self.validate_form(strict=True)
        if not result.ok:
            return
        self._after_pest_check(result.note, self._revise)

    def _revise(self, note: dict) -> None:
        try:
            new_id = self.app.store.revise(self.sighting_id, note)
        except Exception as e:
            self._store_rejected(e)
            return
        self.notify(f"Saved as a new version ({short_id(new_id)})", timeout=3)
        self.post_message(SightingSaved(new_id))

    async def action_add_observation(self) -> None:
        rows = self.obs_rows()
        row = ObservationRow({}, pests=self.app.pests, number=len(rows) + 1)
        await self.query_one("#form-obs", Vertical).mount(row)
        row.field("pest").input.focus()
        row.scroll_visible()

    @on(ObservationRow.RemoveRequested)
    async def _remove_observation(self, event: ObservationRow.RemoveRequested) -> None:
        await event.row.remove()
        for i, row in enumerate(self.obs_rows(), 1):
            row.set_number(i)

    def action_leave(self) -> None:
        if not self.dirty:
            self.app.pop_screen()
            return

        def _answer(discard: bool | None) -> None:
            if discard:
                self.app.pop_screen()

        self.app.push_screen(ConfirmScreen("Leave without saving? Unsaved changes are lost.",
                                           yes="Discard", no="Keep editing"), _answer)

    @on(Button.Pressed, "#form-save")
    def _b_save(self) -> None:
        self.action_save_draft()

    @on(Button.Pressed, "#form-finalize")
    def _b_finalize(self) -> None:
        self.action_finalize()

    @on(Button.Pressed, "#form-revise")
    def _b_revise(self) -> None:
        self.action_revise()

    @on(Button.Pressed, "#form-add-obs")
    async def _b_add(self) -> None:
        await self.action_add_observation()

    @on(Button.Pressed, "#form-back")
    def _b_back(self) -> None:
        self.action_leave()

    @on(Input.Submitted)
    def _next_field(self, event: Input.Submitted) -> None:
        # Enter moves on like Tab: handheld keyboards reach Enter more easily
        event.stop()
        self.focus_next()
