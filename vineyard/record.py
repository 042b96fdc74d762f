"""What a sighting records and implies: every figure a correct report of it may state.

The fact check (``vineyard.facts``) matches each number of a report against these
values: counts and "x of n" ratios, incidence as a percentage, densities per
sampled unit, catalog thresholds for the observed pests, figures from the note's
own text, rows, block, year, month and day.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from dataclasses import dataclass

from .pest_catalog import Pest
from .pests import lookup_member, normalize

NUM_RE = re.compile(r"(?<![\w.])(-?\d+(?:,\d{3})*(?:\.\d+)?)(?!\.\d)")


def to_float(s: str) -> float:
    return float(s.replace(",", ""))


def decimals(s: str) -> int:
    return len(s.split(".", 1)[1]) if "." in s else 0


def matches(num_text: str, target: float) -> bool:
    """Does a number as written match ``target`` at the precision written (rounded, floored or ceiled)?"""
    try:
        x = to_float(num_text)
    except ValueError:
        return False
    d = decimals(num_text)
    scale = 10**d
    t = target * scale
    cands = {round(t), math.floor(t + 1e-9), math.ceil(t - 1e-9)}
    return any(abs(x * scale - c) < 1e-6 for c in cands)


def any_match(num_text: str, targets) -> bool:
    return any(matches(num_text, t) for t in targets)


def numbers_in(text: str) -> list[float]:
    return [to_float(m.group(1)) for m in NUM_RE.finditer(text or "")]


@dataclass
class Observed:
    raw: dict
    pest: Pest | None
    member: str | None

    @property
    def name(self) -> str:
        return self.pest.name if self.pest else self.raw["pest"]


class Facts:
    """The record and every value derived from it, grouped by how a report may state them."""

    def __init__(self, note: dict) -> None:
        self.note = note
        self.date = _dt.date.fromisoformat(note["date"])
        self.obs: list[Observed] = []
        for o in note["observations"]:
            res = lookup_member(o["pest"])
            self.obs.append(Observed(o, res[0] if res else None, res[1] if res else None))
        text_fields = " ".join(str(note.get(k) or "") for k in ("weather", "notes", "variety", "scout", "time"))
        self.text_numbers = numbers_in(text_fields)
        self.weather_numbers = numbers_in(str(note.get("weather") or "")) + numbers_in(str(note.get("notes") or ""))
        temps = []
        for m in re.finditer(r"(-?\d+(?:\.\d+)?)\s?\u00b0?\s?([CF])\b", str(note.get("weather") or "")):
            v = float(m.group(1))
            temps.append(v * 9 / 5 + 32 if m.group(2).upper() == "C" else (v - 32) * 5 / 9)
        self.weather_numbers += temps
        self.rows = parse_rows(note["rows"])
        self.block = normalize(note["block"]).replace(" ", "")
        y = self.date.year
        self.years = {y - 1, y, y + 1}

    def counts(self, o: Observed) -> list[float]:
        r = o.raw
        out = [r["sampled"]]
        if "infested" in r:
            out += [r["infested"], r["sampled"] - r["infested"]]
        if "count" in r:
            out.append(r["count"])
        out += [t.value * r["sampled"] / 100 for t in self.thresholds(o) if t.metric == "incidence_pct"]
        return out

    def ratios(self, o: Observed) -> list[tuple[float, float]]:
        r = o.raw
        out = []
        if "infested" in r:
            out += [(r["infested"], r["sampled"]), (r["sampled"] - r["infested"], r["sampled"])]
        if "count" in r and r["count"] <= r["sampled"]:
            out.append((r["count"], r["sampled"]))
        return out

    def percents(self, o: Observed) -> list[float]:
        r = o.raw
        out = []
        if "infested" in r:
            inc = 100.0 * r["infested"] / r["sampled"]
            out += [inc, 100.0 - inc]
        for k in ("severity_pct", "defoliation_pct"):
            if k in r:
                out.append(r[k])
        return out

    def densities(self, o: Observed) -> list[float]:
        r = o.raw
        out = []
        if "count" in r:
            out.append(r["count"] / r["sampled"])
            if r.get("infested"):
                out.append(r["count"] / r["infested"])
        return out

    def thresholds(self, o: Observed):
        return o.pest.thresholds if o.pest else ()

    def all_counts(self) -> list[float]:
        out = [sum(o.raw["sampled"] for o in self.obs), len(self.obs)]
        for o in self.obs:
            out += self.counts(o)
        return out

    @property
    def note_percents(self) -> list[float]:
        """Percentages written in the note's own text (e.g. "80% RH"), which a report may repeat."""
        txt = " ".join(str(self.note.get(k) or "") for k in ("weather", "notes"))
        return [float(m.group(1)) for m in re.finditer(r"(\d+(?:\.\d+)?)\s*%", txt)]

    def all_percents(self) -> list[float]:
        out = list(self.note_percents)
        for o in self.obs:
            out += self.percents(o)
            out += [t.value for t in self.thresholds(o) if t.metric.endswith("_pct")]
        return out

    def all_densities(self) -> list[float]:
        out = []
        for o in self.obs:
            out += self.densities(o)
            out += [t.value for t in self.thresholds(o) if t.metric == "per_unit"]
        return out

    def plain(self) -> list[float]:
        out = self.all_counts() + self.all_percents() + self.all_densities() + list(self.text_numbers) + self.weather_numbers
        out += sorted(self.rows) + numbers_in(self.note["block"]) + list(self.years)
        out += [self.date.month, self.date.day]
        # the catalog's guidance for the observed pests is in the prompt ("from about 8 degrees Brix")
        out += [x for o in self.obs if o.pest for x in numbers_in(o.pest.notes)]
        for k in ("lat", "lon", "accuracy_m"):
            if k in self.note:
                out.append(self.note[k])
        for o in self.obs:
            for t in self.thresholds(o):
                out.append(t.value)
                out += numbers_in(t.source or "")  # a cited bulletin number
        return out

    def obs_for(self, pest_name: str) -> list[Observed]:
        return [o for o in self.obs if o.name == pest_name]


def parse_rows(rows: str) -> set[int]:
    out: set[int] = set()
    for part in re.split(r"\s*(?:,|;|\band\b|&)\s*", rows):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-|\u2013|to|through)\s*(\d+)\s*", part)
        if m:
            a, b = sorted((int(m.group(1)), int(m.group(2))))
            if b - a <= 2000:
                out.update(range(a, b + 1))
            continue
        out.update(int(x) for x in re.findall(r"\d+", part))
    return out
