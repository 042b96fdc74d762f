"""Generate a scouting report for one finalized sighting, streaming it as it is written.

The engine runs in a worker thread (``generator.stream_report(note,
cancel=event)``); each Chunk is handed to the UI thread with
``call_from_thread`` and painted in its provenance colours. Store writes only
happen on the UI thread (the sqlite connection belongs to it).

What gets stored:
- Done, not cancelled → ``store.save_report(..., status="complete")`` with
  ``generator.report_record(done)``. Clean only when it has no findings.
- Cancelled, or the engine crashed mid-way → if any text was produced it is
  kept as ``status="cancelled"`` / ``"failed"`` with an ``incomplete`` finding,
  so it can never count as a clean report (and, per the store contract, it is
  not queued for sync). Nothing is stored when no text was produced. The
  sighting itself is never touched.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, is_dataclass
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Static

from vineyard.fieldnote import validate
from vineyard.status import status_line

from ..generator import MODELS_HELP, EngineUnavailable, ModelsMissing
from ..widgets.gen_status import GenerationStatus
from ..widgets.provenance import ProvenanceLegend, StreamingReport, runs_from_records
from .common import format_finding, short_id
from .messages import OpenReport

REPORT_KEYS = ("text", "model_pair", "policy", "stats", "provenance", "spans", "findings")


def _meta(gen: Any, name: str) -> Any:
    """Read an optional descriptive attribute of the generator (attribute or zero-arg method)."""
    try:
        value = getattr(gen, name, None)
        return value() if callable(value) else value
    except Exception:
        return None


def generator_info(gen: Any) -> tuple[Any, Any]:
    """(power mode, model pair) for the status line, read from the generator without generating.

    ``vineyard.writer.ReportWriter`` (and ``edgespec.api.Generator``) expose ``power_policy.mode``
    and ``model_pair``; test doubles may expose ``power_mode`` directly.
    """
    power = _meta(gen, "power_mode")
    if power is None:
        power = getattr(_meta(gen, "power_policy"), "mode", None)
    return power, _meta(gen, "model_pair")


def _records_to_json(records: list[Any]) -> list[dict]:
    out = []
    for r in records:
        if is_dataclass(r):
            out.append(asdict(r))
        elif isinstance(r, dict):
            out.append(dict(r))
    return out


class GenerateScreen(Screen):
    """Stream a report for a sighting; cancel at any time."""

    BINDINGS = [
        Binding("c", "cancel", "Cancel"),
        Binding("escape", "leave", "Back"),
        Binding("o", "open_report", "Open report"),
        Binding("n", "now", "Write now"),
    ]

    def __init__(self, sighting: dict) -> None:
        super().__init__()
        self.sighting = sighting
        self.cancel_event = threading.Event()
        self.state = "starting"  # starting | running | done | cancelled | failed | missing | deferred
        self.force_now = False  # the user said "now" on a critical battery
        self.report_id: str | None = None
        self.records: list[Any] = []
        self.error: str | None = None
        self.result_findings: list | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        s = self.sighting
        title = Text(f"Report for {s.get('block') or '?'} · {s.get('date') or '?'}", style="bold")
        title.append(f"  ({short_id(s.get('id'))})", style="dim")
        yield Static(title, id="gen-title")
        yield ProvenanceLegend(id="gen-legend")
        with VerticalScroll(id="gen-scroll"):
            yield StreamingReport(id="gen-text")
        # outside the text scroll, so findings / install help are on screen however long the report is
        with VerticalScroll(id="gen-outcome-box"):
            yield Static("", id="gen-outcome")
        yield GenerationStatus(id="gen-status")
        with Horizontal(id="gen-buttons"):
            yield Button("Cancel", id="gen-cancel", variant="error", compact=True)
            yield Button("Back", id="gen-back", compact=True)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "generate report"
        self.query_one("#gen-status", GenerationStatus).set_state("loading models…")
        self.set_interval(0.5, self._tick)
        self.start()

    def on_unmount(self) -> None:
        # leaving (or quitting the app) must stop the engine, not leave it running headless
        self.cancel_event.set()

    def _tick(self) -> None:
        if self.state == "running":
            self.query_one("#gen-status", GenerationStatus).refresh_line()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "cancel":
            return self.state in ("starting", "running")
        if action == "open_report":
            return self.report_id is not None
        if action == "now":
            return self.state == "deferred"
        return True

    def _set_state(self, state: str) -> None:
        self.state = state
        self.query_one("#gen-cancel", Button).disabled = state not in ("starting", "running")
        self.refresh_bindings()

    # ---------------------------------------------------------------- the worker

    def start(self) -> None:
        try:
            note = validate(self.sighting)
        except Exception as e:
            self._set_state("failed")
            self._show_outcome(Text(f"This sighting cannot be reported on: {e}", style="bold red"))
            return
        policy = self.app.power_policy()
        if policy is not None and not policy.run_now and not self.force_now:
            self._defer(note, policy.reason)
            return
        self._set_state("starting")
        # the app decided on power itself (or the user said now): the generator's own check is skipped
        self.generate(note, force=self.force_now or policy is not None)

    def _defer(self, note: dict, reason: str) -> None:
        """A critical battery: queue the report for the charger instead of failing, and say how to go on."""
        self._set_state("deferred")
        self.query_one("#gen-status", GenerationStatus).set_state("waiting for the charger")
        t = Text(f"Battery critical ({reason}): this report is not written now.\n", style="bold yellow")
        try:
            job, position, total = self.app.queue_report(self.sighting["id"], note)
        except Exception as e:
            t.append(f"It could not be queued either ({e}). ", style="bold red")
        else:
            t.append(f"Queued for the charger (position {position} of {total}; `edgespec queue list` shows it): "
                     "it is written in the background when the charger is connected, and shows up in the log.\n")
        t.append("Press n to write it now anyway (it drains the battery), Esc to go back.")
        self._show_outcome(t, css="-warning")

    @work(thread=True, exclusive=True, group="generate", exit_on_error=False)
    def generate(self, note: dict, force: bool = False) -> None:
        from edgespec.api import PowerDeferred
        from edgespec.events import Done

        app = self.app
        post = self._post
        try:
            gen = app.get_generator()
        except ModelsMissing as e:
            post(self._models_missing, str(e))
            return
        except EngineUnavailable as e:
            post(self._failed, str(e), None)
            return
        if self.cancel_event.is_set():
            post(self._finished, None, None)
            return
        post(self._started, *generator_info(gen))
        done = None
        record = None
        with app.generation_lock:
            try:
                # run the stream to its end (Done is last) so its own cleanup, e.g. the energy meter, runs
                for event in gen.stream_report(note, cancel=self.cancel_event, force=force):
                    if isinstance(event, Done):
                        done = event
                    else:
                        post(self._chunk, event)
                if done is not None:
                    record = gen.report_record(done)
                    clean = not self.cancel_event.is_set() and getattr(done.stats, "stop_reason", "") != "cancelled" \
                        and not (record or {}).get("findings")
                    add = getattr(gen, "add_to_history", None)
                    if clean and callable(add):
                        try:  # teach the history drafter only from clean reports; never fatal
                            add(done.text)
                        except Exception:
                            pass
            except PowerDeferred as e:  # no power source in the app: the generator's own governor said wait
                post(self._defer, note, str(e))
                return
            except Exception as e:  # a crash mid-generation: keep what was written, mark it failed
                post(self._failed, f"{type(e).__name__}: {e}", gen)
                return
        post(self._finished, done, record, gen)

    def _post(self, fn: Any, *args: Any) -> None:
        """call_from_thread, but quiet when the screen is gone or the app is shutting down."""
        try:
            self.app.call_from_thread(self._guarded, fn, *args)
        except Exception:
            self.cancel_event.set()

    def _guarded(self, fn: Any, *args: Any) -> None:
        if self.is_attached:
            fn(*args)

    # ---------------------------------------------------------------- UI-thread callbacks

    def _started(self, power_mode: Any, model_pair: Any) -> None:
        self._set_state("running")
        self.query_one("#gen-status", GenerationStatus).start(power_mode=power_mode, model_pair=model_pair)

    def _chunk(self, chunk: Any) -> None:
        tokens = list(getattr(chunk, "tokens", []) or [])
        self.records.extend(tokens)
        self.query_one("#gen-text", StreamingReport).append_chunk(chunk)
        self.query_one("#gen-status", GenerationStatus).add(tokens)
        self.query_one("#gen-scroll", VerticalScroll).scroll_end(animate=False)

    def _models_missing(self, detail: str) -> None:
        self._set_state("missing")
        self.query_one("#gen-status", GenerationStatus).set_state("models not installed")
        t = Text(MODELS_HELP, style="bold")
        if detail:
            t.append(f"\n\n({detail})", style="dim")
        self._show_outcome(t, css="-warning")

    def _finished(self, done: Any, record: dict | None, gen: Any = None) -> None:
        view = self.query_one("#gen-text", StreamingReport)
        status = self.query_one("#gen-status", GenerationStatus)
        cancelled = self.cancel_event.is_set() or (
            done is not None and getattr(done.stats, "stop_reason", "") == "cancelled")
        if done is None and not cancelled:
            self._failed("the engine stopped without finishing the report", gen)
            return
        if done is not None:
            view.show(done.text, runs_from_records(done.records, done.text))
        final = done.stats.to_dict() if done is not None else None
        if cancelled:
            self._set_state("cancelled")
            status.finish("■ cancelled", final)
            self._store_incomplete("cancelled", "generation cancelled by the user; this report is partial",
                                   gen, record)
            return
        self._set_state("done")
        rec = {k: (record or {}).get(k) for k in REPORT_KEYS}
        rec["text"] = rec["text"] if rec["text"] is not None else done.text
        for k, default in (("model_pair", {}), ("policy", {}), ("stats", final or {}), ("provenance", []),
                           ("spans", []), ("findings", [])):
            if rec[k] is None:
                rec[k] = default
        ok, rid = self.app.store_call("Saving the report", self.app.store.save_report, self.sighting["id"],
                                      status="complete", **rec)
        findings = list(rec["findings"] or [])
        self.result_findings = findings
        n = len(findings)
        status.finish(f"⚠ done, {n} finding{'s' if n != 1 else ''}" if n else "✓ done", final,
                      headline=status_line({**rec, "stats": rec["stats"] or final or {}}))
        if not ok:
            self._show_outcome(Text("The report could not be saved (see the message). The sighting is unchanged.",
                                    style="bold red"), css="-error")
            return
        self.report_id = rid
        self.refresh_bindings()
        if findings:
            t = Text(f"⚠ {len(findings)} integrity finding{'s' if len(findings) != 1 else ''} — "
                     "this report is NOT clean; check it against the sighting:", style="bold yellow")
            for f in findings:
                t.append("\n • " + format_finding(f), style="yellow")
            self._show_outcome(t, css="-warning")
        else:
            self._show_outcome(Text("✓ Clean report saved: no integrity findings.", style="bold green"), css="-ok")

    def _failed(self, message: str, gen: Any) -> None:
        self.error = message
        self._set_state("failed")
        self.query_one("#gen-status", GenerationStatus).finish("✗ failed")
        self._store_incomplete("failed", f"generation failed: {message}", gen, None)

    def _store_incomplete(self, status: str, why: str, gen: Any, record: dict | None) -> None:
        """Keep a partial report for the record, flagged so it can never pass as clean."""
        view = self.query_one("#gen-text", StreamingReport)
        text = (record or {}).get("text") or view.plain
        head = Text(("Cancelled. " if status == "cancelled" else f"Generation failed: {self.error}\n"),
                    style="bold red" if status == "failed" else "bold yellow")
        if not text:
            head.append("Nothing was stored; the sighting is unchanged.")
            self._show_outcome(head, css="-error" if status == "failed" else "-warning")
            return
        rec = {k: (record or {}).get(k) for k in REPORT_KEYS}
        stats = dict(rec.get("stats") or {})
        stats.setdefault("tokens", len(self.records))
        stats["stop_reason"] = status
        if self.error:
            stats["error"] = self.error
        findings = list(rec.get("findings") or [])
        findings.insert(0, {"kind": "incomplete", "message": why})
        rec.update(
            text=text,
            model_pair=rec.get("model_pair") or (generator_info(gen)[1] if gen is not None else None) or {},
            policy=rec.get("policy") or {},
            stats=stats,
            provenance=rec.get("provenance") or _records_to_json(self.records),
            spans=rec.get("spans") or [],
            findings=findings,
        )
        ok, rid = self.app.store_call("Saving the partial report", self.app.store.save_report,
                                      self.sighting["id"], status=status, **rec)
        if ok:
            self.report_id = rid
            self.refresh_bindings()
            head.append(f"The partial text was kept as a {status} report (not clean, not synced). "
                        "The sighting is unchanged.")
        else:
            head.append("The sighting is unchanged.")
        self._show_outcome(head, css="-error" if status == "failed" else "-warning")

    def _show_outcome(self, text: Text, css: str = "") -> None:
        out = self.query_one("#gen-outcome", Static)
        out.update(text)
        out.remove_class("-ok", "-warning", "-error")
        if css:
            out.add_class(css)
        self.query_one("#gen-outcome-box").display = True

    # ---------------------------------------------------------------- actions

    def action_cancel(self) -> None:
        if self.state in ("starting", "running"):
            self.cancel_event.set()
            self.query_one("#gen-status", GenerationStatus).set_state("cancelling…")

    def action_leave(self) -> None:
        if self.state in ("starting", "running") and not self.cancel_event.is_set():
            # first Escape cancels; the stream stops at the next verify step (a second one leaves anyway)
            self.action_cancel()
            return
        self.app.pop_screen()

    def on_queued_report_done(self, message) -> None:
        """The charger wrote this deferred report while the screen was open: say so, and `o` opens it."""
        if self.state != "deferred" or message.sighting_id != self.sighting.get("id"):
            return
        if message.report_id is None:
            self._show_outcome(Text(f"Writing it on the charger failed: {message.error}. It stays queued; "
                                    "press n to try now.", style="bold red"), css="-error")
            return
        self.report_id = message.report_id
        self._set_state("done")
        self.query_one("#gen-status", GenerationStatus).set_state("✓ written on the charger")
        self._show_outcome(Text("✓ Written on the charger and saved: press o to open it.", style="bold green"),
                           css="-ok")

    def action_now(self) -> None:
        """The user's explicit "now" on a critical battery: take it off the queue and write it."""
        if self.state != "deferred":
            return
        try:
            self.app.drop_queued_report(self.sighting["id"])
        except Exception as e:
            self.notify(f"Could not take the report off the queue ({e}); it may be written again on the charger",
                        severity="warning", timeout=6)
        self.force_now = True
        self.query_one("#gen-outcome-box").display = False
        self.start()

    def action_open_report(self) -> None:
        if self.report_id:
            self.post_message(OpenReport(self.report_id))

    @on(Button.Pressed, "#gen-cancel")
    def _b_cancel(self) -> None:
        self.action_cancel()

    @on(Button.Pressed, "#gen-back")
    def _b_back(self) -> None:
        self.action_leave()

