"""Log browser (the home screen): every sighting, filters, full-text search.

Two modes share one table. With an empty search box the table lists sightings
from ``store.list_sightings`` narrowed by the filters; with a query it lists
``store.search`` hits (sightings and reports), still narrowed by the filters,
so "mildew in block C1 last week" is one search plus two filters.

A sighting with an observation above its catalog threshold is marked ▲ in the
table, and a block whose latest scouted week is above a threshold is named in an
alert line under it (t opens that block's season).
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.suggester import SuggestFromList
from textual.widgets import DataTable, Footer, Header, Input, Static

from vineyard.pests import filter_matches, threshold_status
from vineyard.season import BlockSeason

from ..database import season as season_db
from .common import pests_cell, pests_of, report_badge
from .form_model import TOP_BY_KEY, parse_filter_date
from .messages import EditSighting, OpenReport, OpenSeason, OpenSighting

STATUS_STYLE = {"draft": "yellow", "finalized": "green", "superseded": "dim"}


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def _clean_snippet(snippet: Any) -> Text:
    """FTS snippets mark matched words (the store uses «…»); show them highlighted, never as markup."""
    s = str(snippet or "").replace("\n", " ")
    t = Text()
    for open_, close in (("«", "»"), ("<b>", "</b>")):
        if open_ in s and close in s:
            pos = 0
            while True:
                i = s.find(open_, pos)
                j = s.find(close, i + len(open_)) if i >= 0 else -1
                if i < 0 or j < 0:
                    t.append(s[pos:])
                    break
                t.append(s[pos:i])
                t.append(s[i + len(open_):j], style="bold reverse")
                pos = j + len(close)
            return t
    return Text(s)


class LogScreen(Screen):
    """All sightings with filters and search; Enter opens one."""

    BINDINGS = [
        Binding("n", "new_sighting", "New"),
        Binding("slash", "focus_search", "Search"),
        Binding("ctrl+l", "clear_filters", "Clear"),
        Binding("t", "season", "Season"),
        Binding("s", "app.open_sync", "Sync"),
        Binding("r", "refresh", "Refresh", show=False),
        Binding("escape", "focus_table", "Table", show=False),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        date_ph = TOP_BY_KEY["date"].placeholder
        with Horizontal(id="log-filters"):
            yield Input(placeholder=f"from {date_ph}", id="filter-from", compact=True)
            yield Input(placeholder=f"to {date_ph}", id="filter-to", compact=True)
            yield Input(placeholder="block", id="filter-block", compact=True)
            yield Input(placeholder="pest", id="filter-pest", compact=True,
                        suggester=SuggestFromList(self.app.pests, case_sensitive=False))
        yield Input(placeholder="/ search notes, pests, report text", id="log-search", compact=True)
        yield DataTable(id="log-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="log-info")
        yield Static("", id="log-alerts")
        yield Static("", id="log-queue")
        yield Footer()

    def on_mount(self) -> None:
        self._blocks: dict[str, str] = {}
        self.refresh_alerts()
        self.refresh_queue()
        self.refresh_table()
        self.query_one("#log-table", DataTable).focus()

    def on_screen_resume(self) -> None:
        # coming back from the form/detail: data may have changed
        self.refresh_alerts()
        self.refresh_queue()
        self.refresh_table()

    def on_background_sync(self) -> None:
        # the "waiting to sync" count under the table
        self.refresh_table()

    def on_queued_report_done(self) -> None:
        # a report written on the charger: its sighting's report column and the waiting count change
        self.refresh_queue()
        self.refresh_table()

    def refresh_queue(self) -> None:
        """How many reports wait for the charger, and which (a critical battery deferred them)."""
        jobs = self.app.queued_reports()
        widget = self.query_one("#log-queue", Static)
        widget.set_class(bool(jobs), "-shown")
        if not jobs:
            widget.update("")
            return
        n = len(jobs)
        which = ", ".join(f"{j.input.get('block', '?')} {j.input.get('date', '?')}" for j in jobs[:3])
        more = f" and {n - 3} more" if n > 3 else ""
        charging = "writing them now" if getattr(self.app, "charger_running", False) else "written when the charger is connected"
        widget.update(Text(f"⏳ {n} report{'s' if n != 1 else ''} wait{'s' if n == 1 else ''} for the charger "
                           f"({which}{more}): {charging}", style="bold yellow"))

    # ---------------------------------------------------------------- threshold alerts

    def refresh_alerts(self) -> None:
        """Blocks whose latest week is above a threshold (all sightings: not on every keystroke)."""
        try:
            self.alerts: list[BlockSeason] = season_db.alerts(self.app.store)
        except Exception:  # a broken row must not keep the log from opening
            self.alerts = []
        widget = self.query_one("#log-alerts", Static)
        widget.set_class(bool(self.alerts), "-shown")
        t = Text()
        for s in self.alerts[:3]:
            if t:
                t.append("\n")
            pests = ", ".join(f"{p.pest} {p.latest.label}" for p in s.alerts)
            t.append(f"▲ {s.block}: above threshold in its latest week ({pests})", style="bold red")
        if len(self.alerts) > 3:
            t.append(f"\n▲ and {len(self.alerts) - 3} more blocks", style="bold red")
        if self.alerts:
            t.append("  t: season", style="dim")
        widget.update(t)

    @staticmethod
    def above_threshold(s: dict) -> bool:
        """Any observation of this sighting above the threshold that applies on its date."""
        if not s.get("date"):
            return False
        for o in s.get("observations") or []:
            try:
                if threshold_status(o, s["date"], risk=s.get("risk_class")).status == "above":
                    return True
            except Exception:  # a malformed draft observation is not a threshold alert
                continue
        return False

    # ---------------------------------------------------------------- filters

    def _filters(self) -> tuple[dict[str, Any], list[str]]:
        filters: dict[str, Any] = {}
        problems: list[str] = []
        for key, wid in (("date_from", "#filter-from"), ("date_to", "#filter-to")):
            inp = self.query_one(wid, Input)
            value, err = parse_filter_date(inp.value, end=key == "date_to")
            inp.set_class(bool(err), "-invalid")
            if err:
                problems.append(f"{'from' if key == 'date_from' else 'to'}: {err}, not applied")
            elif value:
                filters[key] = value
        block = self.query_one("#filter-block", Input).value.strip()
        pest = self.query_one("#filter-pest", Input).value.strip()
        if block:
            filters["block"] = block
        if pest:
            filters["pest"] = pest
        return filters, problems

    @on(Input.Changed, "#log-filters Input")
    def _filters_changed(self) -> None:
        self.refresh_table()

    @on(Input.Changed, "#log-search")
    def _search_changed(self) -> None:
        self.refresh_table()

    @on(Input.Submitted, "#log-search")
    @on(Input.Submitted, "#log-filters Input")
    def _submitted(self) -> None:
        self.query_one("#log-table", DataTable).focus()

    # ---------------------------------------------------------------- table

    def refresh_table(self) -> None:
        table = self.query_one("#log-table", DataTable)
        filters, problems = self._filters()
        query = self.query_one("#log-search", Input).value.strip()
        keep = self.selected_key()
        table.clear(columns=True)
        if query:
            n = self._fill_search(table, query, filters)
            what = f"{n} match{'es' if n != 1 else ''} for {query!r}"
        else:
            n = self._fill_sightings(table, filters)
            what = f"{n} sighting{'s' if n != 1 else ''}"
        if keep is not None:
            try:  # stay on the row the user was on (coming back from a detail screen)
                table.move_cursor(row=table.get_row_index(keep), animate=False)
            except Exception:
                pass
        info = Text(what)
        if problems:
            # first, where it is read: these rows are NOT narrowed by the date the user typed
            info = Text("; ".join(problems), style="bold red")
            info.append(f"  ·  {what}" + (" (other filters applied)" if filters else ""))
        elif filters:
            info.append("  (filtered)", style="dim")
        elif n == 0 and not query:
            info = Text("No sightings yet — press n to log one.")
        pending = self._pending_sync()
        if pending:
            info.append(f"  · {pending} waiting to sync (s)", style="yellow")
        self.query_one("#log-info", Static).update(info)

    def _pending_sync(self) -> int:
        try:
            counts = self.app.store.outbox_counts()
        except Exception:
            return 0
        return sum(counts.get(k, 0) for k in ("queued", "sending", "failed", "needs-attention"))

    def _reports_by_sighting(self) -> dict[str, list[dict]]:
        """All reports (without provenance) grouped by sighting: one query for the whole table."""
        try:
            reports = self.app.store.list_reports(limit=100_000)
        except Exception:
            return {}
        out: dict[str, list[dict]] = {}
        for r in reports:
            out.setdefault(r.get("sighting_id"), []).append(r)
        return out

    def _office_states(self, reports: dict[str, list[dict]]) -> dict[str, str | None]:
        """The office model's verdict per report (awaiting, agrees, disputed; None before it was sent)."""
        try:
            return self.app.store.office_states([r["id"] for rs in reports.values() for r in rs])
        except Exception:
            return {}

    def _flex_width(self, fixed: tuple[int, ...]) -> int:
        """Width left for the one stretchy column, so the table never scrolls sideways at 80 columns."""
        width = self.query_one("#log-table", DataTable).size.width or (self.app.size.width - 2)
        padding = 2 * (len(fixed) + 1)  # one cell of padding each side of every column
        return max(12, width - sum(fixed) - padding - 2)  # 2: vertical scrollbar

    def on_resize(self) -> None:
        self.call_after_refresh(self.refresh_table)

    def _fill_sightings(self, table: DataTable, filters: dict[str, Any]) -> int:
        reports = self._reports_by_sighting()
        office = self._office_states(reports)
        report_w = 13 if any(office.values()) else 11  # room for the office mark once a report was sent
        pests_w = self._flex_width((10, 6, 10, report_w))
        table.add_column("Date", key="date", width=10)
        table.add_column("Block", key="block", width=6)
        table.add_column("Pests", key="pests", width=pests_w)
        table.add_column("Status", key="status", width=10)
        table.add_column("Report", key="report", width=report_w)
        ok, rows = self.app.store_call("Listing sightings", self.app.store.list_sightings, **filters)
        if not ok:
            return 0
        for s in rows:
            status = s.get("status") or "draft"
            self._blocks[f"s:{s['id']}"] = str(s.get("block") or "")
            pests = Text(_clip(pests_cell(s), pests_w))
            if self.above_threshold(s):
                pests = Text("▲ ", style="bold red") + Text(_clip(", ".join(pests_of(s)), pests_w - 2), style="red")
            table.add_row(
                s.get("date") or "—",
                Text(str(s.get("block") or "?")),
                pests,
                Text(status, style=STATUS_STYLE.get(status, "")),
                report_badge(reports.get(s["id"], []), office),
                key=f"s:{s['id']}",
            )
        return len(rows)

    def _fill_search(self, table: DataTable, query: str, filters: dict[str, Any]) -> int:
        match_w = self._flex_width((8, 10, 6))
        table.add_column("Kind", key="kind", width=8)
        table.add_column("Date", key="date", width=10)
        table.add_column("Block", key="block", width=6)
        table.add_column("Match", key="match", width=match_w)
        ok, hits = self.app.store_call("Search", self.app.store.search, query)
        if not ok:
            return 0
        cache: dict[str, dict | None] = {}
        n = 0
        seen: set[str] = set()
        for hit in hits:
            sid = hit.get("sighting_id")
            info = {"date": hit.get("date"), "block": hit.get("block")}
            if "pest" in filters or info["date"] is None:
                if sid not in cache:
                    try:
                        cache[sid] = self.app.store.get_sighting(sid)
                    except Exception:
                        cache[sid] = None
                if cache[sid] is None:
                    continue
                info = cache[sid]
            if not self._matches(info, filters):
                continue
            kind = hit.get("kind") or "sighting"
            snippet = _clean_snippet(hit.get("snippet") or "")
            snippet.truncate(match_w, overflow="ellipsis")
            key = f"{'r' if kind == 'report' else 's'}:{hit.get('id')}"
            if key in seen:
                continue
            seen.add(key)
            self._blocks[key] = str(info.get("block") or "")
            table.add_row(
                Text(kind, style="cyan" if kind == "report" else ""),
                info.get("date") or "—",
                Text(str(info.get("block") or "?")),
                snippet,
                key=key,
            )
            n += 1
        return n

    @staticmethod
    def _matches(s: dict, filters: dict[str, Any]) -> bool:
        date = str(s.get("date") or "")
        if "date_from" in filters and date < filters["date_from"]:
            return False
        if "date_to" in filters and date > filters["date_to"]:
            return False
        if "block" in filters and str(s.get("block") or "").lower() != filters["block"].lower():
            return False
        # same rule as store.list_sightings: part of a pest name or its catalog name, or the same catalog entry
        if "pest" in filters and not any(filter_matches(filters["pest"], p) for p in pests_of(s)):
            return False
        return True

    @on(DataTable.RowSelected, "#log-table")
    def _open_row(self, event: DataTable.RowSelected) -> None:
        key = str(event.row_key.value or "")
        kind, _, ident = key.partition(":")
        if kind == "s":
            self.post_message(OpenSighting(ident))
        elif kind == "r":
            self.post_message(OpenReport(ident))

    # ---------------------------------------------------------------- actions

    def action_new_sighting(self) -> None:
        self.post_message(EditSighting())

    def action_season(self) -> None:
        """The season of the block under the cursor (else of the first alerting block, else the first)."""
        block = self._blocks.get(self.selected_key() or "") or None
        if block is None and getattr(self, "alerts", None):
            block = self.alerts[0].block
        self.post_message(OpenSeason(block))

    def action_focus_search(self) -> None:
        self.query_one("#log-search", Input).focus()

    def action_focus_table(self) -> None:
        self.query_one("#log-table", DataTable).focus()

    def action_clear_filters(self) -> None:
        with self.prevent(Input.Changed):
            for inp in self.query("#log-filters Input, #log-search").results(Input):
                inp.value = ""
        self.refresh_table()
        self.action_focus_table()

    def action_refresh(self) -> None:
        self.refresh_table()
        self.notify("Refreshed", timeout=1.5)

    def selected_key(self) -> str | None:
        """Row key under the cursor ("s:<id>" or "r:<id>"), for tests and actions."""
        table = self.query_one("#log-table", DataTable)
        if table.row_count == 0:
            return None
        try:
            return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        except Exception:
            return None

