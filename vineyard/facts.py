"""Check a generated report against the sighting it was written from.

Small oracles hallucinate (measured: Qwen2.5-Coder-0.5B wrote "consistent with
the observed threshold of 3 of 50 clusters" for a powdery mildew count, and
mildew has no such threshold). Every pest name and every number in the report is
matched against the field note and the values derived from it (incidence =
infested/sampled as a percentage and as "x of n", density = count/sampled,
severity and defoliation, catalog thresholds and the above/below comparison,
dates, rows, block). A mismatch becomes a ``Finding`` attached to the report,
so the report is never silently stored as clean.

Numbers that are legitimately in a correct report are allowed on purpose:
section numbering, figures from the weather and notes text, the note's year,
catalog threshold values (and their citations) for the observed pests, and
intervals or later dates inside a recommended action ("re-scout in 7 days").

This module runs the whole check; what a report names (pests, life stages,
presence, crops) is checked in ``name_check``, its numbers, thresholds, dates
and locations in ``number_check``, and each finding is a ``findings.Finding``.
"""

from __future__ import annotations

import re

from edgespec.spans import Span

from .fieldnote import validate
from .findings import Finding
from .name_check import check_absence, check_life_stages, check_pests, check_presence, check_unknown_names
from .number_check import check_dates_locations, check_numbers, check_thresholds
from .pests import resolve_mention
from .record import Facts
from .spans import CatalogSpanPolicy, sentence_start

_SENT_END_RE = re.compile(r"(?<!\d)\.(?!\d)|\.(?=\s|$)|[!?\n]")


def check_report(text: str, note: dict) -> list[Finding]:
    """Integrity findings for ``text`` written from ``note`` (empty list: nothing contradicts the record)."""
    if not isinstance(text, str):
        raise TypeError(f"report text must be a str, got {type(text).__name__}")
    note = validate(note)
    policy = CatalogSpanPolicy(note)
    return check_spans(text, note, policy, policy.find_spans(text))


_SENTENCE_RE = re.compile(r"[^\n.!?]*(?:\.\d[^\n.!?]*)*[.!?]?")


def _check_repeats(text: str) -> list[Finding]:
    """A line or sentence said twice: what a small model does when it loops; such a report is not clean."""
    seen: set[str] = set()
    out = []
    for m in _SENTENCE_RE.finditer(text):
        key = " ".join(m.group().lower().split()).strip(" -:.")
        if len(key) < 16:
            continue
        if key in seen:
            out.append(Finding("repeated_text", "this sentence repeats an earlier one", m.start(), m.end(),
                               "warning", m.group().strip()))
        seen.add(key)
    return out


def check_spans(text: str, note: dict, policy: CatalogSpanPolicy, spans: list[Span]) -> list[Finding]:
    """``check_report`` for a note already validated, given the policy built for it and the spans it
    found in ``text`` (the report writer shares them with the span audit instead of finding them twice)."""
    facts = Facts(note)
    findings: list[Finding] = []
    pest_spans = [s for s in spans if s.kind == "pest"]
    action_spans = [s for s in spans if s.kind == "action"]

    def in_action(pos: int) -> bool:
        return any(s.start <= pos < s.end for s in action_spans)

    def sentence_of(pos: int) -> tuple[int, int]:
        m = _SENT_END_RE.search(text, pos)
        return sentence_start(text, pos), (m.start() if m else len(text))

    def pests_in(a: int, b: int) -> list[str]:
        names = []
        for s in pest_spans:
            if a <= s.start < b:
                resolved = resolve_mention(text[s.start : s.end])
                if resolved and resolved not in names:
                    names.append(resolved)
        return names

    findings += check_pests(text, pest_spans, facts, policy)
    findings += check_presence(text, pest_spans, facts)
    findings += check_absence(text, pest_spans, facts)
    findings += check_unknown_names(text, spans, facts)
    findings += check_life_stages(text, spans, facts)
    claimed = check_thresholds(text, spans, facts, sentence_of, pests_in, findings)
    check_dates_locations(text, spans, facts, in_action, findings)
    skip = [(s.start, s.end) for s in spans if s.kind in ("date", "location")] + claimed
    check_numbers(text, facts, skip, in_action, sentence_of, pests_in, findings)
    findings += _check_repeats(text)
    findings.sort(key=lambda f: (f.start, f.end, f.kind))
    return findings
