"""edgespec.spans: the domain-free audit of spans against token provenance (spans and records made by hand)."""

from __future__ import annotations

import json

import pytest

from edgespec.events import TokenRecord
from edgespec.spans import Span, audit


def _records(pieces):
    out, pos = [], 0
    for i, (t, source, verified) in enumerate(pieces):
        out.append(TokenRecord(100 + i, t, source, verified, pos, pos + len(t)))
        pos += len(t)
    return out


def test_audit_rates_from_synthetic_provenance():
    recs = _records([
        ("Found", "oracle", True), (" grape", "drafted", True), (" berry", "unverified", False), (" moth", "bonus", True),
        (" on", "unverified", False), (" the", "unverified", False), (" edge", "corrected", True), (".", "unverified", False),
    ])
    text = "".join(r.text for r in recs)
    spans = [Span(text.index("grape"), text.index("moth") + 4, "pest", "grape berry moth")]
    rep = audit(spans, recs, text)
    assert rep.critical_tokens == 3 and rep.unverified_critical == 1
    assert rep.critical_verified_rate == pytest.approx(2 / 3)
    assert rep.other_verified_rate == pytest.approx(2 / 5)
    (s,) = rep.spans
    assert s["text"] == "grape berry moth" and s["verified"] is False
    assert s["tokens"] == [{"source": "drafted", "verified": True}, {"source": "unverified", "verified": False}, {"source": "bonus", "verified": True}]
    json.dumps(rep.to_dict())
    assert rep.to_json() == rep.to_dict()
    # without the text, the audit rebuilds it from the records
    assert audit(spans, recs).spans == rep.spans


def test_audit_all_verified_and_edge_cases():
    recs = _records([("4", "oracle", True), (" of", "drafted", True), (" 50", "drafted", True), (" leaves", "unverified", False)])
    text = "".join(r.text for r in recs)
    # overlapping spans share a token but it is counted once
    spans = [Span(0, 5, "count", "4 of"), Span(0, 7, "count", "4 of 50")]
    rep = audit(spans, recs, text)
    assert rep.critical_verified_rate == 1.0 and rep.critical_tokens == 3
    assert rep.other_verified_rate == 0.0
    assert all(s["verified"] for s in rep.spans)
    # a zero-width record (mid UTF-8 sequence) inside a span is part of it
    z = TokenRecord(7, "", "unverified", False, 2, 2)
    rep = audit([Span(0, 7, "count", "x")], recs + [z], text)
    assert rep.spans[0]["verified"] is False
    empty = audit([], [], "")
    assert empty.critical_verified_rate is None and empty.other_verified_rate is None
    # a span no token covers is not reported as verified
    assert audit([Span(50, 60, "pest", "x")], recs, text).spans[0]["verified"] is False
