"""The fact check of a report's numbers: counts, ratios, percentages, densities, thresholds and the
above/below claim, dates and locations, each against the sighting and what it implies (``record.Facts``).

Numbers that are legitimately in a correct report are allowed on purpose: section numbering, figures
from the weather and notes text, the note's year, catalog threshold values for the observed pests, and
intervals or later dates inside a recommended action ("re-scout in 7 days").
"""

from __future__ import annotations

import datetime as _dt
import re

from edgespec.spans import Span

from .findings import Finding
from .pests import normalize, resolve_mention, singular, threshold_status
from .record import NUM_RE, Facts, any_match, matches, to_float

_RATIO_RE = re.compile(r"\s*(?:/|\bout\s+of\b|\bof\b|\bin\b)\s*(\d+(?:,\d{3})*)(?![\d.])", re.I)
_PCT_RE = re.compile(r"\s*(?:%|\bpercent\b|\bper\s+cent\b)", re.I)
_TEMP_RE = re.compile(r"\s?(?:\u00b0\s?[CF]\b|[CF]\b|degrees?\b(?!\s*Brix))", re.I)
_PER_RE = re.compile(r"\s*(?:[a-z]+\s+){0,2}?(?:per|/|a|each)\s*(leaf|leaves|cluster|clusters|vine|vines|shoot|shoots|trunk|trunks|plant|plants|trap|traps|site|sites|sample|samples|unit|units)\b", re.I)
_INTERVAL_RE = re.compile(r"\s*(?:(?:-|\u2013|to)\s*\d+\s*)?(?:days?|weeks?|hours?|months?)\b", re.I)
_COUNT_WORD_RE = re.compile(r"\s+([a-z-]+)(?:\s+([a-z]+))?", re.I)
_ENUM_RE = re.compile(r"^[ \t>*#-]*$")
_THRESHOLD_WORD_RE = re.compile(r"\b(?:thresholds?|action\s+levels?|economic\s+injury\s+levels?|tolerance)\b", re.I)
_ABOVE_RE = re.compile(r"\b(?:above|exceed(?:s|ed|ing)?|over|greater|higher|surpass(?:es|ed|ing)?|beyond|passed|reached|reaches|met)\b", re.I)
_BELOW_RE = re.compile(r"\b(?:below|under|less|lower|within|short\s+of)\b", re.I)
_NO_THRESHOLD_RE = re.compile(
    r"\b(?:no|not\s+an?|without\s+an?|lacks?\s+an?)\s+(?:\w+\s+){0,3}?(?:thresholds?|action\s+levels?)\b"
    r"|\bthresholds?\b\s+(?:\w+\s+){0,3}?(?:not|has\s+not|have\s+not)\s+(?:been\s+)?(?:established|published|set|defined|available)"
    r"|\bno\s+(?:\w+\s+){0,2}?threshold",
    re.I,
)
COUNT_WORDS = {
    "cluster", "leaf", "leave", "vine", "shoot", "trunk", "berry", "berrie", "plant", "trap", "site", "sample",
    "larva", "larvae", "nymph", "adult", "egg", "crawler", "colony", "colonie", "gall", "mite", "beetle", "moth",
    "lanternfly", "lanternflie", "leafhopper", "mealybug", "insect", "individual", "pupa", "pupae", "lesion",
    "spot", "grub", "damaged", "infested", "infected", "sampled", "counted", "inspected", "examined",
}
MONTHS = {m: i for i, m in enumerate(
    ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november", "december"], 1)}
MONTHS.update({k[:3]: v for k, v in list(MONTHS.items())})
MONTHS["sept"] = 9


def _parse_figure(text: str, pos: int) -> tuple[str, float, int, int] | None:
    """The figure starting at ``pos``: (kind, value, start, end); kind is pct, ratio, density or count."""
    m = NUM_RE.match(text, pos)
    if not m:
        return None
    num = m.group(1)
    end = m.end()
    r = _RATIO_RE.match(text, end)
    if r:
        n = to_float(r.group(1))
        if n > 0:
            return "ratio", 100.0 * to_float(num) / n, m.start(), r.end()
    p = _PCT_RE.match(text, end)
    if p:
        return "pct", to_float(num), m.start(), p.end()
    d = _PER_RE.match(text, end)
    if d:
        return "density", to_float(num), m.start(), d.end()
    return "count", to_float(num), m.start(), end


def check_thresholds(text, spans, facts: Facts, sentence_of, pests_in, findings) -> list[tuple[int, int]]:
    """Threshold values and above/below claims; returns the character ranges of threshold figures it judged."""
    judged: list[tuple[int, int]] = []
    seen_sentences: set[tuple[int, int, str]] = set()
    for kw in _THRESHOLD_WORD_RE.finditer(text):
        a, b = sentence_of(kw.start())
        names = pests_in(a, b)
        if not names:
            before = [s for s in spans if s.kind == "pest" and s.end <= a]
            for s in reversed(before):
                r = resolve_mention(text[s.start : s.end])
                if r:
                    names = [r]
                    break
        if not names and len(facts.obs) == 1:
            names = [facts.obs[0].name]
        obs = [o for n in names for o in facts.obs_for(n)]
        if not obs:
            continue
        # When a sentence names several pests, the one closest before the keyword is the subject; of several
        # observations of that pest (two leafhopper species, one catalog entry), the one whose figure it states.
        if len(obs) > 1:
            best = None
            for s in spans:
                if s.kind == "pest" and a <= s.start < kw.start():
                    r = resolve_mention(text[s.start : s.end])
                    if r and facts.obs_for(r):
                        best = facts.obs_for(r)
            obs = _stated(text[a:kw.start()], best or obs, facts)
        o = obs[0]
        pest = o.pest
        if pest is None:
            continue
        clause_end = re.compile(r"[;\n]|(?<!\d)\.(?!\d)|\.(?=\s|$)").search(text, kw.end())
        clause_end = clause_end.start() if clause_end else len(text)
        fig = _threshold_figure(text, kw, a, clause_end)
        no_threshold = bool(_NO_THRESHOLD_RE.search(text[a:b]))
        if fig is not None:
            kind, value, fs, fe = fig
            judged.append((fs, fe))
            said = text[fs:fe]
            if not pest.thresholds:
                findings.append(Finding("wrong_threshold", f"{pest.name} has no action threshold in the catalog, but the report states one ({said})",
                                        fs, fe, "error", said, ["no published threshold"]))
                continue
            ok = False
            for t in pest.thresholds:
                if kind in ("pct", "ratio") and t.metric.endswith("_pct") and matches(_fmt(value), t.value):
                    ok = True
                elif kind in ("density", "count") and t.metric == "per_unit" and any_match(said.split()[0], [t.value]):
                    ok = True
                elif kind == "count" and t.metric.endswith("_pct") and any_match(said.split()[0], [t.value]):
                    ok = True  # "the 6 percent threshold" written without the sign
            if not ok:
                findings.append(Finding("wrong_threshold", f"{said} is not an action threshold for {pest.name}",
                                        fs, fe, "error", said, [t.describe() for t in pest.thresholds]))
                continue
        elif not pest.thresholds and not no_threshold:
            claim = _comparison(text[a:b], kw.start() - a)
            if claim and (a, b, "nt") not in seen_sentences:
                seen_sentences.add((a, b, "nt"))
                findings.append(Finding("wrong_threshold", f"the report compares {pest.name} with an action threshold, but none is published",
                                        kw.start(), kw.end(), "error", text[kw.start():kw.end()], ["no published threshold"]))
            continue
        claim = _comparison(text[a:clause_end], kw.start() - a)
        if claim and (a, b, "cmp") not in seen_sentences:
            seen_sentences.add((a, b, "cmp"))
            st = threshold_status(o.raw, facts.date, risk=facts.note.get("risk_class"))
            if st.status in ("above", "below") and st.status != claim:
                findings.append(Finding("wrong_comparison", f"the report says {claim} the threshold; the record says {st.reason}",
                                        a, b, "error", text[a:b].strip(), [st.status]))
    return judged


def _stated(said: str, obs: list, facts: Facts) -> list:
    """``obs`` with those whose own figures ``said`` states first."""
    nums = [m.group(1) for m in NUM_RE.finditer(said)]
    return sorted(obs, key=lambda o: not any(any_match(n, facts.counts(o) + facts.percents(o) + facts.densities(o))
                                             for n in nums))


def _fmt(v: float) -> str:
    return f"{v:.4f}".rstrip("0").rstrip(".")


def _threshold_figure(text: str, kw: re.Match, a: int, clause_end: int):
    """The figure stated as the threshold: right before the keyword or right after it."""
    # "the 6% threshold", "6 percent damage threshold", "a 6% damaged-cluster threshold"
    before = text[max(a, kw.start() - 60) : kw.start()]
    m = None
    for m2 in re.finditer(r"(?<![\w.])\d+(?:\.\d+)?", before):
        m = m2
    if m is not None:
        fig = _parse_figure(text, kw.start() - len(before) + m.start())
        if fig is not None:
            between = text[fig[3] : kw.start()]
            if len(between.split()) <= 2 and not re.search(r"[,;.]\s", between):
                return fig
    # "threshold of 6%", "threshold (6% damaged clusters)", "threshold is 5 nymphs per leaf"
    after = re.compile(r"\s*(?:\(|:|=|is|was|of|at|set\s+at|level\s+of|value\s+of|being|around|about|approximately|\s)*\s*", re.I).match(text, kw.end())
    pos = after.end() if after else kw.end()
    if pos < clause_end:
        fig = _parse_figure(text, pos)
        if fig is not None:
            return fig
    return None


def _comparison(s: str, anchor: int | None = None) -> str | None:
    """'above' / 'below' as claimed about a threshold: the comparison word nearest ``anchor``, negation flips it."""
    words = [(m.start(), "above") for m in _ABOVE_RE.finditer(s)] + [(m.start(), "below") for m in _BELOW_RE.finditer(s)]
    if not words:
        return None
    anchor = len(s) if anchor is None else anchor
    pos, claim = min(words, key=lambda w: abs(w[0] - anchor))
    if re.search(r"\b(?:not|n't|never|no\s+longer)\b(?:\s+\w+){0,2}?\s*$", s[max(0, pos - 30) : pos], re.I):
        claim = "below" if claim == "above" else "above"
    return claim


def check_dates_locations(text, spans: list[Span], facts: Facts, in_action, findings) -> None:
    for s in spans:
        said = text[s.start : s.end]
        if s.kind == "date":
            d = _parse_date(said, facts.date.year)
            if d is None or isinstance(d, tuple) or d == facts.date:
                continue  # unparsable, or a month alone ("early August")
            if in_action(s.start) and d > facts.date:
                continue  # a date for the recommended action
            findings.append(Finding("wrong_date", f"{said} is not the sighting date ({facts.note['date']})", s.start, s.end, "error", said, [facts.note["date"]]))
        elif s.kind == "location":
            low = said.lower()
            if re.match(r"(panels?|sections?)\b", low):
                continue  # the note records no panels or sections to compare with
            if low.startswith("row"):
                nums = [int(x) for x in re.findall(r"\d+", said)]
                rng = re.search(r"(\d+)\s*(?:-|\u2013|\u2014|to|through)\s*(\d+)", said)
                if rng:
                    lo, hi = sorted((int(rng.group(1)), int(rng.group(2))))
                    if hi - lo <= 2000:
                        nums = list(range(lo, hi + 1))
                bad = [n for n in nums if n not in facts.rows]
                if bad:
                    findings.append(Finding("wrong_location", f"{said}: the sighting covers rows {facts.note['rows']}", s.start, s.end, "error", said, [facts.note["rows"]]))
            else:
                ident = re.sub(r"^(?:blocks?)\s+", "", said, flags=re.I)
                at = s.start + len(said) - len(ident)
                whole = text[at:at + len(facts.note["block"])]  # "B-12 upper" in full, not the span's "B-12"
                if not text[at + len(whole):at + len(whole) + 1].isalnum() and normalize(whole).replace(" ", "") == facts.block:
                    continue
                if normalize(ident).replace(" ", "") != facts.block:
                    findings.append(Finding("wrong_location", f"{said}: the sighting is from block {facts.note['block']}", s.start, s.end, "error", said, [facts.note["block"]]))


def _parse_date(s: str, year: int):
    m = re.fullmatch(r"(\d{4})-(\d{1,2})-(\d{1,2})", s.strip())
    try:
        if m:
            return _dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        words = re.findall(r"[A-Za-z]+|\d+", s)
        month = next((MONTHS[w.lower()] for w in words if w.lower() in MONTHS), None)
        nums = [int(w) for w in words if w.isdigit()]
        day = next((n for n in nums if n <= 31), None)
        yr = next((n for n in nums if n > 31), year)
        if month is None:
            return None
        if day is None:
            return ("month", month)
        return _dt.date(yr, month, day)
    except ValueError:
        return None


def check_numbers(text, facts: Facts, skip, in_action, sentence_of, pests_in, findings) -> None:
    pos = 0
    skip = sorted(skip)
    while True:
        m = NUM_RE.search(text, pos)
        if not m:
            return
        start = m.start()
        if any(a <= start < b for a, b in skip):
            pos = m.end()
            continue
        line_start = text.rfind("\n", 0, start) + 1
        if _ENUM_RE.match(text[line_start:start]) and re.match(r"\d{1,2}[.)](?:\s|$)", text[start:]):
            pos = m.end()  # section numbering "1." / "2)"
            continue
        fig = _parse_figure(text, start)
        kind, value, fs, fe = fig
        said = text[fs:fe]
        num = m.group(1)
        pos = fe
        a, b = sentence_of(start)
        names = [n for n in pests_in(a, b) if facts.obs_for(n)]
        scope = [o for n in names for o in facts.obs_for(n)] or facts.obs
        others = [o for o in facts.obs if o not in scope]

        def judge(kind_name: str, ok_scope: bool, ok_other: bool, expected: list[str]) -> None:
            if ok_scope:
                return
            if ok_other:
                findings.append(Finding(kind_name, f"{said} belongs to another observation, not {', '.join(names)}", fs, fe, "error", said, expected))
            else:
                findings.append(Finding(kind_name, f"{said} is not in the sighting or derived from it", fs, fe, "error", said, expected))

        if kind == "ratio":
            x = to_float(num)
            n = to_float(_RATIO_RE.match(text, m.end()).group(1))
            if (x, n) == (facts.date.month, facts.date.day):
                continue  # 7/21 written as a date
            def ratio_ok(obs):
                return any(abs(x - p) < 1e-9 and abs(n - q) < 1e-9 for o in obs for p, q in facts.ratios(o))
            exp = [f"{p:g} of {q:g}" for o in facts.obs for p, q in facts.ratios(o)]
            judge("wrong_count", ratio_ok(scope), ratio_ok(others), exp)
        elif kind == "pct":
            pct_scope = [p for o in scope for p in facts.percents(o)] + [t.value for o in scope for t in facts.thresholds(o) if t.metric.endswith("_pct")]
            pct_other = facts.all_percents()
            judge("wrong_percent", any_match(num, pct_scope + facts.note_percents),
                  any_match(num, pct_other), [f"{p:.3g}%" for o in facts.obs for p in facts.percents(o)])
        elif kind == "density":
            d_scope = [d for o in scope for d in facts.densities(o)] + [t.value for o in scope for t in facts.thresholds(o) if t.metric == "per_unit"]
            judge("wrong_density", any_match(num, d_scope), any_match(num, facts.all_densities()),
                  [f"{d:.3g}" for o in facts.obs for d in facts.densities(o)])
        else:
            tail = text[m.end() : m.end() + 40]
            if _TEMP_RE.match(tail):
                if not any_match(num, facts.weather_numbers):
                    findings.append(Finding("unknown_number", f"{said} does not match the weather in the note ({facts.note.get('weather', 'none recorded')})",
                                            fs, fe + len(_TEMP_RE.match(tail).group(0)), "warning", said, []))
                continue
            iv = _INTERVAL_RE.match(tail)
            if iv:
                if in_action(start) or any_match(num, facts.text_numbers):
                    continue
                findings.append(Finding("unknown_number", f"{said}{iv.group(0)} is not in the sighting", fs, fe + len(iv.group(0)), "warning", said, []))
                continue
            cw = _COUNT_WORD_RE.match(tail)
            is_count = bool(cw) and any(w and singular(w.lower()) in COUNT_WORDS for w in cw.groups())
            if is_count:
                counts_scope = [c for o in scope for c in facts.counts(o)]
                judge("wrong_count", any_match(num, counts_scope) or any_match(num, facts.text_numbers),
                      any_match(num, facts.all_counts()), [f"{c:g}" for o in facts.obs for c in facts.counts(o)])
            elif not any_match(num, facts.plain()):
                findings.append(Finding("unknown_number", f"{said} is not in the sighting or derived from it", fs, fe, "error", said, []))
