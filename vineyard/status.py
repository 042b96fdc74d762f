"""A report's status line for the manager: how long it took to write and how much of its facts the oracle checked.

    written in 6.2 s · checked by the large model: 100% of pest facts

"Checked" is the span audit's figure (``edgespec.spans.audit``): the critical-span tokens (pests, life stages,
counts, thresholds, locations, dates, actions) whose provenance is oracle-verified or rendered from the data,
over all critical-span tokens. For a stored report it is run again on the stored spans and provenance, so a
report a person edited counts the words they typed as not checked by the model. The engineer's figures
(acceptance, oracle passes, drafter) stay in the report's stats and in ``--json``/``--details``.
"""

from __future__ import annotations

import json
from typing import Any

from edgespec.events import TokenRecord
from edgespec.spans import Span, audit

from .review import PERSON, _records


def _loads(value: Any, default: Any) -> Any:
    """Stored JSON columns come back as text or already decoded."""
    if isinstance(value, (str, bytes)):
        try:
            return json.loads(value)
        except ValueError:
            return default
    return default if value is None else value


def checked_share(report: dict) -> tuple[float | None, bool]:
    """(share of critical-span tokens checked, whether a person wrote any of them) for a report record.

    ``report`` is what ``ReportWriter.report_record`` returns or the store keeps (``text``, ``spans``,
    ``provenance``, ``stats``). None when no token touches a critical span. Without stored spans or
    provenance the generation's own audit figure (``stats.critical_verified_rate``) is used."""
    spans = _loads(report.get("spans"), [])
    records = _records(_loads(report.get("provenance"), []))
    text = str(report.get("text") or "")
    stats = _loads(report.get("stats"), {})
    stats = stats if isinstance(stats, dict) else {}
    if not isinstance(spans, list) or not spans or not records:
        rate = stats.get("critical_verified_rate")
        return (float(rate) if isinstance(rate, (int, float)) and not isinstance(rate, bool) else None), False
    span_objs = [Span(int(s["start"]), int(s["end"]), str(s.get("kind") or ""), str(s.get("value") or ""))
                 for s in spans if isinstance(s, dict) and isinstance(s.get("start"), int) and isinstance(s.get("end"), int)]
    recs = [TokenRecord(r.get("token") if isinstance(r.get("token"), int) else -1, text[r["start"]:r["end"]],
                        str(r.get("source") or "oracle"), bool(r.get("verified", True)), r["start"], r["end"])
            for r in records]
    result = audit(span_objs, recs, text)
    by_person = any(t.get("source") == PERSON for s in result.spans for t in s["tokens"])
    return result.critical_verified_rate, by_person


def _seconds(stats: dict) -> float | None:
    v = stats.get("wall_s")
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 else None


def status_line(report: dict) -> str:
    """"written in 6.2 s · checked by the large model: 100% of pest facts" for a report record."""
    stats = _loads(report.get("stats"), {})
    stats = stats if isinstance(stats, dict) else {}
    parts = []
    secs = _seconds(stats)
    if secs is not None:
        parts.append(f"written in {secs:.1f} s")
    share, by_person = checked_share(report)
    if share is None:
        parts.append("no pest facts to check")
    else:
        pct = 100 * share
        # floor, not round: 99.6% checked must not read as "100%"
        shown = "100" if share >= 1 else f"{min(int(pct), 99)}"
        line = f"checked by the large model: {shown}% of pest facts"
        if share < 1:
            line += " (the rest typed by a person)" if by_person else " (the rest not checked)"
        parts.append(line)
    return " · ".join(parts)


def engineer_line(stats: dict) -> str:
    """The engine's own figures, for whoever tunes it (not the headline)."""
    s = stats if isinstance(stats, dict) else {}
    bits = [f"{s.get('tokens', 0)} tokens"]
    if isinstance(s.get("tokens_per_s"), (int, float)):
        bits.append(f"{s['tokens_per_s']:.1f} tok/s")
    if isinstance(s.get("acceptance_rate"), (int, float)):
        bits.append(f"acceptance {s['acceptance_rate']:.2f}")
    for key, label in (("oracle_passes", "oracle passes"), ("drafter", "drafter"), ("power_mode", "power"),
                       ("stop_reason", "stop")):
        if s.get(key) not in (None, ""):
            bits.append(f"{label} {s[key]}")
    return ", ".join(bits)
