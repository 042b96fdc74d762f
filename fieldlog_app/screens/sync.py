"""Sync screen: what is waiting in the outbox, a "Sync now" button, and this device's sync settings.

The farm-office server URL and device token are entered here and saved in the
user config by the app (``FieldlogApp.configure_sync``; the token is typed into a
password field and never shown again). A background sync's result
(``BackgroundSync``) refreshes the counts and replaces an older error. A demo
database never syncs and the screen says so.

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
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, Static

from ..database import OUTBOX_STATES as STATES
from .messages import BackgroundSync

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
    summary = getattr(result, "summary", None)  # fieldlog_app.sync.common.SyncResult
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
            yield Label("Farm office", classes="section-title")
            with Horizontal(classes="sync-setting"):
                yield Label("Server", classes="sync-label")
                yield Input(placeholder="http://office:8765", id="sync-server", compact=True)
            with Horizontal(classes="sync-setting"):
                yield Label("Token", classes="sync-label")
                yield Input(placeholder="device token from `fieldlog-server add-device`", id="sync-token",
                            password=True, compact=True)
            with Horizontal(id="sync-settings-buttons"):
                yield Button("Save", id="sync-save", compact=True)
            yield Static("", id="sync-settings-info")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "sync"
        table = self.query_one("#sync-counts", DataTable)
        table.add_column("State", key="state", width=15)
        table.add_column("Items", key="n", width=5)
        table.add_column("Meaning", key="help")
        self.demo = bool(getattr(self.app, "is_demo", lambda: False)())
        self.show_settings()
        self.update_sync_button()
        if self.demo:
            self.query_one("#sync-result", Static).update(Text(
                "This is the demo database (sample sightings): it never syncs to a farm office.", style="yellow"))
        elif self.app.sync_callback is None:
            self.query_one("#sync-result", Static).update(
                Text("Sync is not configured on this device yet: enter the farm-office server and this device's "
                     "token below.", style="dim"))
        self.refresh_counts()

    def update_sync_button(self) -> None:
        self.query_one("#sync-now", Button).disabled = self.syncing or self.demo or self.app.sync_callback is None
        self.refresh_bindings()

    def show_settings(self, message: Text | None = None) -> None:
        """Fill the settings fields from what is saved (the token only as "saved": never echoed)."""
        get = getattr(self.app, "sync_settings", None)
        if get is None:
            self.query_one("#sync-settings-info", Static).update(Text("settings unavailable", style="dim"))
            return
        st = get()
        self.query_one("#sync-server", Input).value = st["server"]
        token = self.query_one("#sync-token", Input)
        token.value = ""
        token.placeholder = ("saved (type a new one to replace it)" if st["has_token"]
                             else "device token from `fieldlog-server add-device`")
        info = message or Text(f"Saved in {st['path']}", style="dim")
        if st["env"]:
            info.append(f"\n{' and '.join(st['env'])} set in the environment: "
                        f"{'they override' if len(st['env']) > 1 else 'it overrides'} the saved setting.",
                        style="yellow")
        if st["error"]:
            info.append(f"\n{st['error']}", style="bold red")
        self.query_one("#sync-settings-info", Static).update(info)

    def action_save_settings(self) -> None:
        server = self.query_one("#sync-server", Input).value
        token = self.query_one("#sync-token", Input).value
        try:
            path = self.app.configure_sync(server, token)
        except ValueError as e:
            self.query_one("#sync-server", Input).set_class(not server.strip() or "URL" in str(e), "-invalid")
            self.query_one("#sync-settings-info", Static).update(Text(str(e), style="bold red"))
            return
        self.query_one("#sync-server", Input).remove_class("-invalid")
        self.show_settings(Text(f"Saved in {path}. Sync now to try the connection.", style="green"))
        if not self.demo and self.app.sync_callback is not None:
            self.query_one("#sync-result", Static).update(Text(""))
        self.update_sync_button()

    @on(Button.Pressed, "#sync-save")
    def _b_save(self) -> None:
        self.action_save_settings()

    @on(Input.Submitted, "#sync-server, #sync-token")
    def _submitted(self) -> None:
        self.action_save_settings()

    def on_background_sync(self, message: BackgroundSync) -> None:
        """A background retry ended: show it (replacing an older error) and refresh the counts."""
        if self.syncing:
            return  # our own "Sync now" reports when it ends
        result = message.result
        if isinstance(result, Exception):
            text = Text(f"background sync failed: {type(result).__name__}: {result}", style="bold red")
        else:
            error = getattr(result, "error", None)
            text = Text("background " + summarize(result) if error is None else f"background sync failed: {error}",
                        style="green" if error is None else "bold red")
        self.last_result = text.plain
        self.query_one("#sync-result", Static).update(text)
        self.refresh_counts()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "sync_now":
            return self.app.sync_callback is not None and not self.syncing and not getattr(self, "demo", False)
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
        if self.app.sync_callback is None or self.syncing or self.demo:
            return
        self.syncing = True
        self.update_sync_button()
        self.query_one("#sync-result", Static).update(Text("syncing…", style="cyan"))
        self._run_sync(self.app.sync_callback)

    @work(thread=True, exclusive=True, group="sync", exit_on_error=False)
    def _run_sync(self, callback: Any) -> None:
        try:
            result = callback()
        except Exception as e:
            message, ok = f"sync failed: {e}" if type(e).__name__.startswith(("Sync", "Demo")) else \
                f"sync failed: {type(e).__name__}: {e}", False
        else:
            error = getattr(result, "error", None)
            ok = error is None
            message = summarize(result) if ok else f"sync failed: {error}"
        try:
            self.app.call_from_thread(self._sync_done, message, ok)
        except Exception:
            pass

    def _sync_done(self, message: str, ok: bool) -> None:
        if not self.is_attached:
            return
        self.syncing = False
        self.last_result = message
        self.query_one("#sync-result", Static).update(Text(message, style="green" if ok else "bold red"))
        self.update_sync_button()
        self.refresh_counts()

    @on(Button.Pressed, "#sync-now")
    def _b_sync(self) -> None:
        self.action_sync_now()
