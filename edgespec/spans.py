"""Spans of generated text that must stay oracle-verified, and the audit that proves they were.

The runtime knows no vocabulary: what counts as a critical span is the caller's
business (a domain package finds them). The engine only asks a ``SpanGuard``
before it accepts drafted text unchecked in a power-saving mode, and
``audit`` overlaps the spans a caller found with the engine's token provenance.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .events import TokenRecord


@dataclass(frozen=True, slots=True)
class Span:
    start: int
    end: int
    kind: str  # what the caller's policy calls it (e.g. "count", "date")
    value: str  # its canonical value (a name, a number's text, an ISO date, ...)

    def to_dict(self, text: str | None = None) -> dict:
        d = {"start": self.start, "end": self.end, "kind": self.kind, "value": self.value}
        if text is not None:
            d["text"] = text[self.start : self.end]
        return d


@runtime_checkable
class SpanGuard(Protocol):
    """What the engine asks before accepting a draft without an oracle pass (relaxed mode only)."""

    def may_skip_verification(self, prefix_text: str, draft_text: str) -> bool:
        """True only when ``draft_text`` appended to ``prefix_text`` cannot touch a critical span."""
        ...


@dataclass
class SpanAudit:
    """Who wrote each token of each critical span and whether the oracle checked it."""

    spans: list[dict]
    critical_verified_rate: float | None  # None: no token overlaps a critical span
    other_verified_rate: float | None
    critical_tokens: int
    other_tokens: int
    unverified_critical: int

    def to_json(self) -> dict:
        return self.to_dict()

    def to_dict(self) -> dict:
        return {
            "spans": self.spans,
            "critical_verified_rate": self.critical_verified_rate,
            "other_verified_rate": self.other_verified_rate,
            "critical_tokens": self.critical_tokens,
            "other_tokens": self.other_tokens,
            "unverified_critical": self.unverified_critical,
        }


def _overlaps(r: TokenRecord, s: Span) -> bool:
    if r.end > r.start:
        return r.start < s.end and r.end > s.start
    return s.start <= r.start < s.end  # a zero-width record (mid UTF-8) inside the span


def audit(spans: list[Span], records: list[TokenRecord], text: str | None = None) -> SpanAudit:
    """Per-span provenance and the verified rate of critical vs other tokens.

    Every span given is critical (the caller's policy decides which spans exist).
    ``text`` (the generated text) fills each span's ``text``; without it the text
    is rebuilt from the records.
    """
    if text is None:
        text = "".join(r.text for r in sorted(records, key=lambda r: r.start))
    records = sorted(records, key=lambda r: (r.start, r.end))
    starts = [r.start for r in records]
    critical_ids: set[int] = set()
    out = []
    for s in spans:
        # records are sorted by start: scan from the first record that could overlap
        i = max(bisect.bisect_left(starts, s.start) - 1, 0)
        while i > 0 and records[i - 1].end > s.start:
            i -= 1
        toks = []
        for j in range(i, len(records)):
            r = records[j]
            if r.start >= s.end and r.end > r.start:
                break
            if _overlaps(r, s):
                toks.append({"source": r.source, "verified": bool(r.verified)})
                critical_ids.add(j)
        out.append(
            {
                "start": s.start,
                "end": s.end,
                "kind": s.kind,
                "value": s.value,
                "text": text[s.start : s.end],
                "tokens": toks,
                "verified": bool(toks) and all(t["verified"] for t in toks),
            }
        )
    crit = [records[j] for j in critical_ids]
    other = [r for j, r in enumerate(records) if j not in critical_ids]
    crit_v = sum(1 for r in crit if r.verified)
    other_v = sum(1 for r in other if r.verified)
    return SpanAudit(
        spans=out,
        critical_verified_rate=(crit_v / len(crit)) if crit else None,
        other_verified_rate=(other_v / len(other)) if other else None,
        critical_tokens=len(crit),
        other_tokens=len(other),
        unverified_critical=len(crit) - crit_v,
    )
