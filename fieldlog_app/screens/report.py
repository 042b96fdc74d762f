"""A stored report: the manager's status line and integrity findings first, then the text in provenance colours;
the engine's stats and the critical spans behind `d` (details)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Label, Static

from vineyard.status import status_line

from ..widgets.gen_status import describe_pair
from ..widgets.provenance import ProvenanceLegend, runs_from_stored, source_counts, styled_text
from .common import findings_of, format_finding, format_number, format_span, loads_maybe, short_id
from .messages import OpenSighting
from .review import ReportEditScreen, ReviewAnswer, ReviewScreen

REVIEW_STYLE = {"generated": "dim", "edited": "cyan", "approved": "bold green", "flagged": "bold red"}


def review_line(report: dict, versions: list[dict]) -> Text:
    """"v3 approved by B. Owner 2026-07-22 10:04 · v1 generated → v2 edited → v3 approved"; empty for an
    unreviewed report with no other version."""
    status = report.get("review_status") or "generated"
    t = Text()
    if status == "generated" and len(versions) <= 1:
        return t
    t.append(f"v{report.get('version') or 1} {status}", style=REVIEW_STYLE.get(status, ""))
    if report.get("reviewed_by"):
        when = str(report.get("reviewed_at") or "")[:16].replace("T", " ")
        t.append(f" by {report['reviewed_by']}" + (f" {when}" if when else ""))
    if report.get("review_note"):
        t.append(f": {report['review_note']}", style="italic")
    if len(versions) > 1:
        t.append("  ·  " + " → ".join(f"v{v.get('version') or 1} {v.get('review_status') or 'generated'}"
                                       for v in versions), style="dim")
    return t

STAT_KEYS = ("tokens", "tokens_per_s", "acceptance_rate", "mean_accepted_length", "drafted_tokens",
             "accepted_tokens", "oracle_passes", "cycles", "wall_s", "prefill_s", "stop_reason", "drafter",
             "power_mode", "critical_verified_rate", "other_verified_rate", "energy_j", "fallback_events", "error")


ALWAYS = frozenset({"tokens", "tokens_per_s", "acceptance_rate", "stop_reason"})


LABELS = {"tokens_per_s": "tok/s", "energy_j": "energy J", "wall_s": "wall s", "prefill_s": "prefill s",
          "cpu_s": "cpu s"}


def _stat_value(key: str, value: object) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return format_number(value)
    if key.endswith("_rate"):
        return f"{100 * value:.0f}%"
    if key == "tokens_per_s":
        return f"{value:.1f}"
    if key.endswith("_s") or key.endswith("_j"):
        return f"{value:.2f}"
    return format_number(value)


def stats_text(stats: dict) -> Text:
    """The interesting stats first, the rest after, zeros left out; two per line to fit a narrow screen."""

    def shown(k: str) -> bool:
        v = stats.get(k)
        return v not in (None, "", [], {}) and (k in ALWAYS or v != 0)

    keys = [k for k in STAT_KEYS if shown(k)]
    keys += sorted(k for k in stats if k not in STAT_KEYS and shown(k))
    cells = [f"{LABELS.get(k, k.replace('_', ' '))}: {_stat_value(k, stats[k])}" for k in keys]
    t = Text()
    for i in range(0, len(cells), 2):
        row = cells[i:i + 2]
        t.append(("\n" if i else "") + row[0].ljust(36) + (row[1] if len(row) > 1 else ""))
    return t


class ReportScreen(Screen):
    """Read one stored report."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("s", "open_sighting", "Sighting"),
        Binding("e", "edit", "Edit"),
        Binding("a", "review('approve')", "Approve"),
        Binding("f", "review('flag')", "Flag"),
        Binding("d", "toggle_details", "Details"),
    ]

    def __init__(self, report_id: str) -> None:
        super().__init__()
        self.report_id = report_id
        self.report: dict | None = None
        self.styled = Text()  # the report text with provenance styles, as shown

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="report-meta")
        yield Static("", id="report-status")
        yield ProvenanceLegend(id="report-legend")
        with VerticalScroll(id="report-scroll"):
            yield Static("", id="report-findings")
            yield Static("", id="report-office")
            yield Static("", id="report-text")
            with Vertical(id="report-details"):
                yield Static("", id="report-mix")
                yield Label("Stats", classes="section-title")
                yield Static("", id="report-stats")
                yield Label("Critical spans", classes="section-title")
                yield Static("", id="report-spans")
        yield Footer()

    def on_mount(self) -> None:
        self.load()

    def load(self) -> None:
        ok, r = self.app.store_call("Reading the report", self.app.store.get_report, self.report_id)
        if not ok:
            self.query_one("#report-meta", Static).update(Text(f"Report {short_id(self.report_id)} not found."))
            return
        self.report = r
        self.sub_title = f"report {short_id(r.get('id'))}"
        try:
            s = self.app.store.get_sighting(r.get("sighting_id"))
        except Exception:
            s = {}
        status = r.get("status") or "complete"
        office = r.get("office") or {}
        # the office model's disagreements are integrity findings too, listed with the handheld's own
        findings = findings_of(r) + ((office.get("check") or {}).get("findings") or [])
        meta = Text()
        block = f"{s.get('block') or '?'}" + (f" ({s['risk_class']} risk)" if s.get("risk_class") else "")
        meta.append(f"{block} · {s.get('date') or '?'}", style="bold")
        meta.append(f"  {status}", style="green" if status == "complete" else "yellow")
        created = str(r.get("created_at") or "")[:16].replace("T", " ")
        if created:
            meta.append(f" · {created}")
        review = review_line(r, self._versions())
        if review:
            meta.append("\n")
            meta.append_text(review)
        pair = describe_pair(loads_maybe(r.get("model_pair"), None))
        if pair:
            meta.append(f"\n{pair}", style="dim")
        self.query_one("#report-meta", Static).update(meta)
        # what a manager asks of a report: how long it took and how much of its facts the oracle checked
        self.query_one("#report-status", Static).update(Text(status_line(r)))

        box = self.query_one("#report-findings", Static)
        box.remove_class("-warning", "-ok")
        if findings:
            t = Text(f"⚠ {len(findings)} integrity finding{'s' if len(findings) != 1 else ''} — not a clean report",
                     style="bold yellow")
            for f in findings:
                t.append("\n • " + format_finding(f), style="yellow")
            box.update(t)
            box.add_class("-warning")
        elif status == "complete":
            box.update(Text("✓ Clean: no integrity findings.", style="bold green"))
            box.add_class("-ok")
        else:
            box.update(Text(f"{status}: incomplete report", style="bold yellow"))
            box.add_class("-warning")

        self._show_office(r.get("office"))

        text = str(r.get("text") or "")
        runs = runs_from_stored(loads_maybe(r.get("provenance"), []), text)
        self.styled = styled_text(text, runs)
        self.query_one("#report-text", Static).update(self.styled if text else Text("(empty)", style="dim"))
        self.query_one("#report-legend", ProvenanceLegend).show_person(any(run.source == "person" for run in runs))
        counts = source_counts(runs)
        total = sum(counts.values())
        if total:
            mix = " · ".join(f"{k} {100 * v / total:.0f}%" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
            self.query_one("#report-mix", Static).update(Text(f"characters by source: {mix}", style="dim"))
        stats = loads_maybe(r.get("stats"), {}) or {}
        policy = loads_maybe(r.get("policy"), {}) or {}
        st = stats_text(stats if isinstance(stats, dict) else {})
        if isinstance(policy, dict) and policy:
            st.append("\npolicy: " + ", ".join(f"{k}={format_number(v)}" for k, v in policy.items()), style="dim")
        self.query_one("#report-stats", Static).update(st)
        spans = loads_maybe(r.get("spans"), []) or []
        self.query_one("#report-spans", Static).update(
            Text("\n".join(format_span(x) for x in spans)) if spans else Text("none recorded", style="dim"))

    def action_toggle_details(self) -> None:
        self.query_one("#report-details").toggle_class("-shown")

    def _show_office(self, office: dict | None) -> None:
        """The office model's verdict (store.get_report's ``office``), hidden until the report was sent."""
        box = self.query_one("#report-office", Static)
        box.remove_class("-warning", "-ok")
        box.display = bool(office and office.get("state"))
        if not box.display:
            return
        state = office["state"]
        if state == "disputed":  # the disagreements themselves are in the findings above
            t = Text("⚠ " + office["line"], style="bold yellow")
            box.add_class("-warning")
        elif state == "agrees":
            t = Text("✓ " + office["line"], style="bold green")
            box.add_class("-ok")
        else:
            t = Text("◌ " + office["line"], style="dim")
        version = (office.get("check") or {}).get("office_version")
        if version:  # the office model's own report, beside the field report (never replacing it)
            when = str(version.get("created_at") or "")[:16].replace("T", " ")
            t.append(f"\n\nOffice version by {version.get('model') or 'the office model'}"
                     + (f", {when}" if when else "") + ":\n", style="bold")
            t.append(str(version.get("text") or ""), style="italic")
        box.update(t)

    def _versions(self) -> list[dict]:
        try:
            return self.app.store.report_versions(self.report_id)
        except Exception:
            return []

    # ---------------------------------------------------------------- review (a new version each time)

    def _reviewable(self) -> bool:
        r = self.report
        if not r:
            return False
        if (r.get("status") or "complete") != "complete":
            self.notify("Only a complete report can be reviewed; generate it again.", severity="warning", timeout=4)
            return False
        versions = self._versions()
        if versions and versions[-1]["id"] != r["id"]:
            self.notify("This is an older version; open the latest to review it.", severity="warning", timeout=4)
            return False
        return True

    def action_edit(self) -> None:
        if not self._reviewable():
            return
        self.app.push_screen(ReportEditScreen(str(self.report.get("text") or ""), self.app.reviewer), self._reviewed)

    def action_review(self, action: str) -> None:
        if not self._reviewable():
            return
        self.app.push_screen(ReviewScreen(action, self.app.reviewer, len(findings_of(self.report))), self._reviewed)

    def _reviewed(self, answer: ReviewAnswer | None) -> None:
        if answer is None:
            return
        ok, new_id = self.app.store_call("Saving the review", self.app.store.review_report, self.report_id,
                                         answer.action, by=answer.by, text=answer.text, note=answer.note)
        if not ok:
            return
        self.app.reviewer = answer.by  # the next review is most likely by the same person
        self.report_id = new_id
        self.load()
        r = self.report or {}
        n = len(findings_of(r))
        self.notify(f"Saved as version {r.get('version')} ({r.get('review_status')})"
                    + (f"; the fact check found {n} issue{'s' if n != 1 else ''}" if n else ""), timeout=4)

    def action_open_sighting(self) -> None:
        if self.report and self.report.get("sighting_id"):
            self.post_message(OpenSighting(self.report["sighting_id"]))
