"""Small display helpers shared by the screens (pure: dicts in, strings/Text out)."""

from __future__ import annotations

import json
from typing import Any

from rich.text import Text

from vineyard.fieldnote import nothing_found
from vineyard.pests import canonical_name


def loads_maybe(value: Any, default: Any = None) -> Any:
    """Stored JSON columns may come back as text or already decoded; accept both."""
    if isinstance(value, (bytes, str)):
        try:
            return json.loads(value)
        except ValueError:
            return default if default is not None else value
    return default if value is None else value


def short_id(value: Any) -> str:
    return str(value or "")[:8]


def pests_of(sighting: dict) -> list[str]:
    """Distinct pest names of a sighting, in order (from observations or a denormalised 'pests' field)."""
    names: list[str] = []
    obs = sighting.get("observations")
    if isinstance(obs, list):
        names = [str(o.get("pest")) for o in obs if isinstance(o, dict) and o.get("pest")]
    else:
        raw = sighting.get("pests")
        if isinstance(raw, str):
            raw = loads_maybe(raw, raw)
            if isinstance(raw, str):
                raw = [p.strip() for p in raw.replace(";", ",").split(",")]
        if isinstance(raw, list):
            names = [str(p) for p in raw if p]
    seen: set[str] = set()
    out = []
    for n in names:
        if n.lower() not in seen:
            seen.add(n.lower())
            out.append(n)
    return out


def findings_of(report: dict) -> list:
    f = loads_maybe(report.get("findings"), [])
    return f if isinstance(f, list) else [f]


def is_clean(report: dict) -> bool:
    """A clean report is complete and has no integrity findings (whatever the stored flag says)."""
    return (report.get("status") or "complete") == "complete" and not findings_of(report)


OFFICE_MARKS = {"awaiting": ("◌", "dim"), "error": ("◌", "dim"), "agrees": ("◉", "green"),
                "disputed": ("✗", "bold red")}


def report_badge(reports: list[dict], office: dict[str, str | None] | None = None) -> Text:
    """One cell summarising a sighting's reports: the newest complete one wins. ``office`` (report id -> office
    state, store.office_states) adds a mark once it was sent: ◌ awaiting the office check, ◉ the office model
    agrees, ✗ it disputes the report (then the cell says so whatever else it would say)."""
    badge = _report_badge(reports)
    complete = [r for r in reports if (r.get("status") or "complete") == "complete"]
    state = (office or {}).get(_newest(complete)["id"]) if complete and office else None
    if state is None:
        return badge
    mark, style = OFFICE_MARKS[state]
    if state == "disputed" and (_newest(complete).get("review_status") or "generated") not in ("approved", "flagged"):
        badge = Text("⚠ disputed", style="bold red")
    return badge + Text(" " + mark, style=style)


def _newest(complete: list[dict]) -> dict:
    return max(complete, key=lambda r: (str(r.get("created_at") or ""), int(r.get("version") or 1)))


def _report_badge(reports: list[dict]) -> Text:
    if not reports:
        return Text("—", style="dim")
    complete = [r for r in reports if (r.get("status") or "complete") == "complete"]
    if not complete:
        return Text(str(reports[0].get("status") or "?"), style="dim")
    newest = _newest(complete)
    review = newest.get("review_status")
    if review == "approved":  # a person checked it: that is what a manager looks for first
        return Text("✓ approved", style="bold green")
    if review == "flagged":
        return Text("⚑ flagged", style="bold red")
    n = len(findings_of(newest))
    if n:
        return Text(f"⚠ {n} finding{'s' if n != 1 else ''}", style="bold yellow")
    return Text("✓ clean", style="green")


def format_finding(f: Any) -> str:
    """A finding as one readable line, whatever keys the span/fact checker used."""
    if not isinstance(f, dict):
        return str(f)
    kind = f.get("kind") or f.get("type") or f.get("code") or f.get("check") or ""
    msg = f.get("message") or f.get("detail") or f.get("text") or f.get("reason") or ""
    if not msg:
        rest = {k: v for k, v in f.items() if k not in ("kind", "type", "code", "check")}
        msg = ", ".join(f"{k}={v}" for k, v in rest.items())
    return f"{kind}: {msg}" if kind else str(msg)


def format_span(s: Any) -> str:
    """A critical span as one line: kind, text, where, and whether the oracle verified it."""
    if not isinstance(s, dict):
        return str(s)
    label = s.get("kind") or s.get("label") or s.get("type") or "span"
    bits = [str(label)]
    if s.get("text"):
        bits.append(repr(s["text"]))
    if s.get("start") is not None:
        bits.append(f"@{s.get('start')}–{s.get('end')}")
    tokens = s.get("tokens") if isinstance(s.get("tokens"), list) else []
    if any(isinstance(t, dict) and t.get("source") == "person" for t in tokens):
        bits.append("✎ typed by a person")  # no oracle checked it; the fact check did
    elif "verified" in s:
        bits.append("✓ verified" if s["verified"] else "✗ NOT verified")
    skip = {"kind", "label", "type", "start", "end", "text", "verified", "tokens", "value"}
    extra = {k: v for k, v in s.items() if k not in skip and not isinstance(v, (list, dict))}
    if extra:
        bits.append(", ".join(f"{k}={v}" for k, v in extra.items()))
    return " ".join(bits)


def format_number(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}" if abs(v) >= 0.01 or v == 0 else f"{v:.3g}"
    return str(v)


def pests_cell(s: dict) -> str:
    """The pests of a sighting for a table cell: a finalized walk without observations found nothing."""
    names = pests_of(s)
    obs = s.get("observations")
    if names and isinstance(obs, list) and nothing_found({"observations": [{k: v for k, v in o.items() if v is not None}
                                                                          for o in obs]}):
        # scouted for these and found none: listing them bare would read as a find
        return "nothing found (" + ", ".join(names) + ")"
    if names:
        return ", ".join(names)
    return "nothing found" if (s.get("status") or "draft") != "draft" and not s.get("observations") else "—"


def sighting_summary(s: dict) -> Text:
    """The sighting as a compact block of lines (detail screen header)."""
    t = Text()
    head = f"{s.get('block') or '?'}"
    if s.get("variety"):
        head += f" · {s['variety']}"
    head += f" · rows {s.get('rows') or '?'}"
    if s.get("risk_class"):
        head += f" · {s['risk_class']} risk"
    t.append(head, style="bold")
    status = s.get("status") or "draft"
    t.append(f"   [{status}", style="bold " + {"draft": "yellow", "finalized": "green"}.get(status, "dim"))
    t.append(f" v{s.get('version') or 1}]" if s.get("version") else "]",
             style="bold " + {"draft": "yellow", "finalized": "green"}.get(status, "dim"))
    when = " ".join(x for x in (s.get("date"), s.get("time")) if x)
    line2 = [when or "no date"]
    if s.get("scout"):
        line2.append(f"scout {s['scout']}")
    if s.get("weather"):
        line2.append(str(s["weather"]))
    t.append("\n" + " · ".join(line2))
    if s.get("lat") is not None and s.get("lon") is not None:
        gps = f"\nGPS {s['lat']:.5f}, {s['lon']:.5f}" if isinstance(s["lat"], (int, float)) else f"\nGPS {s['lat']}, {s['lon']}"
        if s.get("accuracy_m") is not None:
            gps += f" ±{format_number(s['accuracy_m'])} m"
        t.append(gps)
    if not s.get("observations") and (s.get("status") or "draft") != "draft":
        t.append("\n • nothing found", style="green")
    elif s.get("observations") and nothing_found({"observations": [{k: v for k, v in o.items() if v is not None}
                                                                  for o in s["observations"]]}):
        t.append("\n • nothing found; scouted for:", style="green")
    for o in s.get("observations") or []:
        parts = [f"{o.get('pest') or '?'} ({o.get('life_stage') or '?'})",
                 f"{format_number(o.get('sampled'))} {o.get('unit') or ''} sampled".replace("None", "?")]
        if o.get("infested") is not None:
            parts.append(f"{format_number(o['infested'])} infested")
        if o.get("count") is not None:
            parts.append(f"{format_number(o['count'])} counted")
        if o.get("severity_pct") is not None:
            parts.append(f"severity {format_number(o['severity_pct'])}%")
        if o.get("defoliation_pct") is not None:
            parts.append(f"defoliation {format_number(o['defoliation_pct'])}%")
        t.append("\n • " + ", ".join(parts))
        if o.get("pest") and canonical_name(o["pest"]) is None:
            t.append("  (not in the pest catalog)", style="yellow")
    if s.get("notes"):
        t.append("\n" + str(s["notes"]), style="italic")
    if s.get("replaces"):
        t.append(f"\nreplaces {short_id(s['replaces'])}", style="dim")
    return t
