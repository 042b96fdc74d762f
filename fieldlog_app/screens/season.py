"""A block's season at a glance: per pest, the weekly figure against its catalog threshold.

Each pest gets a chart (textual-plotext: the observed figure as a line, the threshold
that applies each week as dashes, the weeks above it as red triangles) and the same
numbers as a table, so nothing is read off a chart alone. The arithmetic is
``vineyard.season`` (the same threshold rule as a report's threshold line); the
rows come from the store's finalized sightings (``database/season.py``).
"""

from __future__ import annotations

import math
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static
from textual_plotext import PlotextPlot

from vineyard.pest_catalog import PEST_CATALOG, fmt_quantity
from vineyard.season import BlockSeason, PestSeason, Week

from ..database import season as season_db


def _fmt(value: float | None, metric: str | None) -> str:
    if value is None:
        return "—"
    if metric and metric.endswith("_pct"):
        return f"{value:.3g}%"
    return f"{value:.3g}"


def week_status(w: Week) -> Text:
    if w.status == "above":
        return Text("▲ above", style="bold red")
    if w.status == "below":
        return Text("below", style="green")
    return Text("no threshold" if w.threshold is None else "—", style="dim")


def pest_heading(p: PestSeason) -> Text:
    t = Text(p.pest, style="bold")
    if p.label:
        t.append(f" · {p.label}", style="dim")
    if not p.in_catalog:
        t.append(" · not in the pest catalog, no threshold", style="yellow")
    elif not PEST_CATALOG[p.pest].thresholds:
        t.append(" · no published threshold", style="dim")
    above = p.weeks_above
    if p.latest is not None and p.latest.above:
        t.append(f"  ▲ above threshold in its latest week ({p.latest.label})", style="bold red")
    elif above:
        t.append(f"  {len(above)} week{'s' if len(above) != 1 else ''} above threshold: "
                 + ", ".join(w.label for w in above), style="red")
    return t


def nice_step(top: float, ticks: int = 4) -> float:
    """A 1, 2 or 5 times a power of ten step giving about ``ticks`` y labels up to ``top``."""
    raw = top / ticks
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


class SeasonChart(PlotextPlot):
    """One pest's season drawn with plotext (kept widget: textual-plotext)."""

    DEFAULT_CSS = "SeasonChart { height: 12; }"

    def __init__(self, pest: PestSeason, **kw: Any) -> None:
        super().__init__(**kw)
        self.pest = pest

    def on_mount(self) -> None:
        super().on_mount()
        self.draw()

    def draw(self) -> None:
        plt = self.plt
        plt.clear_figure()
        weeks = [w for w in self.pest.weeks if w.observed is not None]
        if not weeks:
            plt.title("nothing measurable to chart")
            return
        xs = [w.week for w in weeks]
        plt.plot(xs, [w.observed for w in weeks], marker="hd", color="cyan", label="observed")
        with_t = [w for w in weeks if w.threshold is not None and w.threshold.metric == w.metric]
        if with_t:
            plt.scatter([w.week for w in with_t], [w.threshold.value for w in with_t], marker="─",
                        color="yellow", label="threshold")
        above = [w for w in weeks if w.above]
        if above:
            plt.scatter([w.week for w in above], [w.observed for w in above], marker="▲", color="red",
                        label="above")
        step = max(1, len(xs) // 8)  # ~8 labels fit an 80-column handheld
        ticks = xs[::step]
        plt.xticks(ticks, [f"W{x:02d}" for x in ticks])
        top = max([w.observed for w in weeks] + [w.threshold.value for w in with_t]) or 1.0
        step_y = nice_step(top)
        plt.ylim(0, top * 1.1)
        plt.yticks([i * step_y for i in range(int(top / step_y) + 1)])


class SeasonScreen(Screen):
    """Per pest, week by week: chart + numbers for one block; [ and ] change the block."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("left_square_bracket", "block(-1)", "Prev block"),
        Binding("right_square_bracket", "block(1)", "Next block"),
    ]

    def __init__(self, block: str | None = None) -> None:
        super().__init__()
        self.block = block
        self.blocks: list[str] = []
        self.season: BlockSeason | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="season-title")
        yield VerticalScroll(id="season-scroll")
        yield Footer()

    async def on_mount(self) -> None:
        self.sub_title = "season"
        ok, notes = self.app.store_call("Reading the season", season_db.season_notes, self.app.store)
        self.notes = notes if ok else []
        self.blocks = season_db.blocks(self.app.store, self.notes)
        if self.block is None or self.block.lower() not in {b.lower() for b in self.blocks}:
            self.block = self.blocks[0] if self.blocks else None
        else:
            self.block = next(b for b in self.blocks if b.lower() == self.block.lower())
        await self.show()

    async def show(self) -> None:
        scroll = self.query_one("#season-scroll", VerticalScroll)
        await scroll.remove_children()
        title = self.query_one("#season-title", Static)
        if self.block is None:
            self.season = None
            title.update(Text("No finalized sightings yet: a season needs scouted weeks.", style="dim"))
            return
        self.season = s = season_db.season_of(self.app.store, self.block, notes=self.notes)
        head = Text(f"Block {s.block}", style="bold")
        head.append(f" · season {s.year}")
        weeks = {(w.year, w.week) for p in s.pests for w in p.weeks}
        head.append(f" · {len(weeks)} week{'s' if len(weeks) != 1 else ''} scouted")
        head.append(f" · {s.risk_class}-risk block" if s.risk_class else " · risk class not recorded", style="dim")
        if len(self.blocks) > 1:
            head.append(f"  (block {self.blocks.index(self.block) + 1} of {len(self.blocks)})", style="dim")
        title.update(head)
        sections = []
        for i, p in enumerate(s.pests):
            table = DataTable(id=f"season-table-{i}", cursor_type="none", show_cursor=False, zebra_stripes=True,
                              classes="season-table")
            self._fill(table, p)
            sections.append(Vertical(
                Static(pest_heading(p), classes="season-pest"),
                SeasonChart(p, id=f"season-chart-{i}"),
                table,
                classes="season-section",
            ))
        await scroll.mount_all(sections)

    @staticmethod
    def _fill(table: DataTable, p: PestSeason) -> None:
        table.add_column("Week", key="week", width=5)
        table.add_column("Scouted", key="date", width=10)
        table.add_column("Sampled", key="sampled", width=7)
        table.add_column("Observed", key="observed", width=9)
        table.add_column("Threshold", key="threshold", width=20)
        table.add_column("Status", key="status", width=12)
        for w in p.weeks:
            th = "—"
            if w.threshold is not None:
                th = fmt_quantity(w.threshold.value, w.threshold.unit)
            sampled = f"{w.sampled:g}" if w.sampled else "—"
            observed = Text(_fmt(w.observed, w.metric), style="bold red" if w.above else "")
            table.add_row(w.label, w.last_date, sampled, observed, Text(th, overflow="ellipsis"), week_status(w),
                          key=f"{w.year}-{w.week}")

    async def action_block(self, step: int) -> None:
        if len(self.blocks) < 2 or self.block is None:
            return
        self.block = self.blocks[(self.blocks.index(self.block) + step) % len(self.blocks)]
        await self.show()
