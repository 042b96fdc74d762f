"""A report a person corrects: who wrote each character, and the fact check of the corrected text.

A generated report carries per-token provenance (``data``, ``drafted``, ``oracle`` ...). When a
manager edits it, the characters they typed become provenance ``person``; every character they
left alone keeps its token's record, moved to where it now sits. The span audit and the fact
check then run again on the new text, so a corrected report is checked exactly as a generated
one is, and a wrong figure typed by a person is a finding too.

Review statuses: ``generated`` (as the model wrote it), ``edited`` (a person changed the text),
``approved`` and ``flagged`` (a person checked it; flagged with a reason). Each change is a new
version of the report (the store keeps every version, as it keeps sighting versions).
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from edgespec.events import TokenRecord
from edgespec.spans import audit

from .facts import check_spans
from .spans import CatalogSpanPolicy

REVIEW_STATUSES = ("generated", "edited", "approved", "flagged")
PERSON = "person"


def _records(provenance: Any) -> list[dict]:
    """Token records of a stored provenance (a list of dicts with start/end/source); other shapes give none."""
    if isinstance(provenance, dict):
        for key in ("records", "tokens", "runs"):
            if isinstance(provenance.get(key), list):
                return _records(provenance[key])
        return []
    if not isinstance(provenance, list):
        return []
    return [r for r in provenance if isinstance(r, dict) and isinstance(r.get("start"), int)
            and isinstance(r.get("end"), int) and r["end"] > r["start"]]


def edit_provenance(old_text: str, provenance: Any, new_text: str) -> list[dict]:
    """Provenance of ``new_text`` made by editing ``old_text``: kept characters keep their token's record
    (clipped and moved), inserted or replaced ones are ``person`` records (``verified`` False: no oracle
    checked them; a person wrote them)."""
    old = _records(provenance)
    out: list[dict] = []
    # compared word by word, not letter by letter: "low" corrected to "moderate" is the person's word,
    # not an "o" kept from the oracle between typed letters
    a_units, b_units = _UNIT_RE.findall(old_text), _UNIT_RE.findall(new_text)
    a_pos, b_pos = _offsets(a_units), _offsets(b_units)
    matcher = difflib.SequenceMatcher(None, a_units, b_units, autojunk=False)
    for op, i0, i1, j0, j1 in matcher.get_opcodes():
        a0, a1, b0, b1 = a_pos[i0], a_pos[i1], b_pos[j0], b_pos[j1]
        if op == "equal":
            shift = b0 - a0
            for r in old:
                s, e = max(r["start"], a0), min(r["end"], a1)
                if e > s:
                    out.append({**r, "start": s + shift, "end": e + shift})
        elif b1 > b0:  # insert or replace: the person's characters
            out.append({"token": None, "start": b0, "end": b1, "source": PERSON, "verified": False})
    out.sort(key=lambda r: (r["start"], r["end"]))
    return out


_UNIT_RE = re.compile(r"\w+|\s+|[^\w\s]", re.S)


def _offsets(units: list[str]) -> list[int]:
    """Character offset of each unit's start, and of the end (one more entry than units)."""
    out = [0]
    for u in units:
        out.append(out[-1] + len(u))
    return out


def person_share(provenance: Any) -> float:
    """Fraction of the characters a person wrote (0 for a report as generated)."""
    recs = _records(provenance)
    total = sum(r["end"] - r["start"] for r in recs)
    mine = sum(r["end"] - r["start"] for r in recs if r.get("source") == PERSON)
    return mine / total if total else 0.0


def recheck(text: str, note: dict, provenance: Any) -> dict:
    """Span audit and fact check of an edited report (``note`` validated): ``{"spans", "findings"}``,
    as ``ReportWriter`` stores them for a generated one."""
    policy = CatalogSpanPolicy(note)
    spans = policy.find_spans(text)
    records = [TokenRecord(r.get("token") if isinstance(r.get("token"), int) else -1, text[r["start"]:r["end"]],
                           str(r.get("source") or "oracle"), bool(r.get("verified", True)), r["start"], r["end"])
               for r in _records(provenance)]
    span_audit = audit(spans, records, text)
    findings = [f.to_dict() for f in check_spans(text, note, policy, spans)]
    return {"spans": span_audit.spans, "findings": findings}
