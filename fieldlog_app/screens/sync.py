"""Sync screen: what is waiting in the outbox, and a "Sync now" button.

This is the app side only. The sync engine (``fieldlog_app/sync/``) is handed
in as ``FieldlogApp(sync_callback=...)``: a zero-argument callable that runs one
sync pass (it is called in a worker thread, so it may block on the network) and
returns a summary — a dict of counts such as ``{"sent": 3, "conflicts": 1}``,
an object with such attributes, or a string. It may raise; the error is shown.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Header, Label, Static

from ..database import OUTBOX_STATES as STATES

STATE_HELP = {
    "queued": "waiting to upload",
    "sending": "in flight (retried if interrupted)",
    "sent": "acknowledged by the farm office",
    "failed": "will be retried with backoff",
    "needs-attention": "rejected (conflict): check it",
}
STATE_STYLE = {"sent": "green", "failed": "yellow", "needs-attention": "bold red", "sending": "cyan"}


def summarize(result: Any) -> str:
    """A sync pass's result as one line, whatever shape the sync engine returns."""
    if result is None:
        return "sync finished"
    if isinstance(result, str):
        return result
    summary = getattr(result, "summary", None)  # fieldlog_app.sync.client.SyncResult
    if callable(summary):
        text = f"sync finished: {summary()}"
        error = getattr(result, "error", None)
        return text + (f" — stopped early: {error}" if error else "")
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        result = dataclasses.asdict(result)
    if isinstance(result, dict):
        parts = [f"{k.replace('_', ' ')} {v}" for k, v in result.items() if isinstance(v, (int, float, str)) and v != ""]
        return "sync finished: " + (", ".join(parts) if parts else "nothing to do")
    return f"sync finished: {result}"


class SyncScreen(Screen):
    """Outbox state by count, recent problems, and a manual sync trigger."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("s", "sync_now", "Sync now"),
        Binding("r", "refresh", "Refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.syncing = False
        self.last_result: str | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="sync-scroll"):
            yield Label("Outbox", classes="section-title")
            yield DataTable(id="sync-counts", cursor_type="none", show_cursor=False)
            yield Static("", id="sync-last")
            yield Static("", id="sync-problems")
            with Horizontal(id="sync-buttons"):
                yield Button("Sync now", id="sync-now", variant="primary", compact=True)
            yield Static("", id="sync-result")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "sync"
        table = self.query_one("#sync-counts", DataTable)
        table.add_column("State", key="state", width=15)
        table.add_column("Items", key="n", width=5)
        table.add_column("Meaning", key="help")
        if self.app.sync_callback is None:
            self.query_one("#sync-now", Button).disabled = True
            self.query_one("#sync-result", Static).update(
                Text("Sync is not configured on this device yet (no farm-office server set).", style="dim"))
        self.refresh_counts()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "sync_now":
            return self.app.sync_callback is not None and not self.syncing
        return True

    def counts(self) -> dict[str, int]:
        return dict(self.app.store.outbox.counts())

    def refresh_counts(self) -> None:
        ok, counts = self.app.store_call("Reading the outbox", self.counts)
        table = self.query_one("#sync-counts", DataTable)
        table.clear()
        if not ok:
            return
        for state in list(STATES) + sorted(k for k in counts if k not in STATES):
            n = counts.get(state, 0)
            table.add_row(Text(state, style=STATE_STYLE.get(state, "") if n else "dim"), str(n),
                          Text(STATE_HELP.get(state, ""), style="dim"), key=state)
        pending = sum(counts.get(s, 0) for s in ("queued", "sending", "failed"))
        last = self._last_sent()
        line = Text(f"{pending} item{'s' if pending != 1 else ''} waiting to upload", style="bold" if pending else "")
        if last:
            line.append(f" · last upload acknowledged {last[:16].replace('T', ' ')} UTC", style="dim")
        self.query_one("#sync-last", Static).update(line)
        self.query_one("#sync-problems", Static).update(self._problems())

    def _last_sent(self) -> str | None:
        try:
            return self.app.store.outbox.last_sent_at()
        except Exception:
            return None

    def _problems(self) -> Text:
        try:
            rows = self.app.store.outbox.attention(limit=5)
        except Exception:
            return Text()
        t = Text()
        for r in rows:
            if t:
                t.append("\n")
            t.append(f"{r.get('state')}: {r.get('kind')} {str(r.get('item_id'))[:8]}", style="yellow")
            if r.get("last_error"):
                t.append(f" — {r['last_error']}")
        return t

    def action_refresh(self) -> None:
        self.refresh_counts()

    def action_sync_now(self) -> None:
        if self.app.sync_callback is None or self.syncing:
            return
        self.syncing = True
        self.query_one("#sync-now", Button).disabled = True
        self.query_one("#sync-result", Static).update(Text("syncing…", style="cyan"))
        self.refresh_bindings()
        self._run_sync(self.app.sync_callback)

    @work(thread=True, exclusive=True, group="sync", exit_on_error=False)
    def _run_sync(self, callback: Any) -> None:
        try:
            result = callback()
        except Exception as e:
            message, ok = f"sync failed: {type(e).__name__}: {e}", False
        else:
            message, ok = summarize(result), True
        try:
            self.app.call_from_thread(self._sync_done, message, ok)
        except Exception:
            pass

    def _sync_done(self, message: str, ok: bool) -> None:
        if not self.is_attached:
            return
        self.syncing = False
        self.last_result = message
        self.query_one("#sync-now", Button).disabled = False
        self.query_one("#sync-result", Static).update(Text(message, style="green" if ok else "bold red"))
        self.refresh_bindings()
        self.refresh_counts()

    @on(Button.Pressed, "#sync-now")
    def _b_sync(self) -> None:
        self.action_sync_now()
