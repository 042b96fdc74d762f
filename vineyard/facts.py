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
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import asdict, dataclass, field

from pathlib import Path

from edgespec import read_json_file
from edgespec.spans import Span

from .fieldnote import validate
from .pests import GENERIC_TERMS, lookup, lookup_member, normalize, singular, stage_forms, threshold_status
from .record import NUM_RE, Facts, any_match, matches, to_float
from .spans import ACTION_STEMS, CatalogSpanPolicy, sentence_start

SEVERITIES = ("error", "warning")
FINDING_KINDS = (
    "unobserved_pest",  # a pest/disease the sighting does not record
    "misspelled_pest",  # a recognised misspelling of an observed pest
    "wrong_count",  # a count or "x of n" that is not in the record
    "wrong_percent",  # a percentage that matches no recorded or derived figure
    "wrong_density",  # a per-unit figure that matches no recorded or derived density
    "wrong_threshold",  # a threshold value the catalog does not have for that pest
    "wrong_comparison",  # above/below the threshold stated against the facts
    "wrong_date",
    "wrong_location",  # rows or block not in the record
    "unknown_number",  # any other number not traceable to the record
    "wrong_life_stage",  # a life stage next to a recorded pest that the sighting does not record for it
    "wrong_presence",  # a pest reported present that the sighting scouted for and found none of
    "repeated_text",  # a sentence said twice (a looping model)
    "unknown_pest",  # a pest named that is in neither the sighting nor the pest catalog
    "unobserved_crop",  # a crop or grape variety that is not this sighting's
)


@dataclass
class Finding:
    kind: str
    message: str
    start: int
    end: int
    severity: str = "error"
    text: str = ""
    expected: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------- numbers
_RATIO_RE = re.compile(r"\s*(?:/|\bout\s+of\b|\bof\b|\bin\b)\s*(\d+(?:,\d{3})*)(?![\d.])", re.I)
_PCT_RE = re.compile(r"\s*(?:%|\bpercent\b|\bper\s+cent\b)", re.I)
_TEMP_RE = re.compile(r"\s?(?:\u00b0\s?[CF]\b|[CF]\b|degrees?\b)", re.I)
_PER_RE = re.compile(r"\s*(?:[a-z]+\s+){0,2}?(?:per|/|a|each)\s*(leaf|leaves|cluster|clusters|vine|vines|shoot|shoots|trunk|trunks|plant|plants|trap|traps|site|sites|sample|samples|unit|units)\b", re.I)
_INTERVAL_RE = re.compile(r"\s*(?:(?:-|\u2013|to)\s*\d+\s*)?(?:days?|weeks?|hours?|months?)\b", re.I)
_COUNT_WORD_RE = re.compile(r"\s+([a-z-]+)(?:\s+([a-z]+))?", re.I)
_SENT_END_RE = re.compile(r"(?<!\d)\.(?!\d)|\.(?=\s|$)|[!?\n]")
_ENUM_RE = re.compile(r"^[ \t>*#-]*$")
_NEGATION_RE = re.compile(r"\b(?:no|not|without|absence|absent|free\s+of|nor|none|neither|zero|never)\b", re.I)
_BENEFICIAL_RE = re.compile(r"\b(?:predatory|predator|predators|beneficial|parasitic|parasitoid)\s*$", re.I)
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


# ------------------------------------------------------------------- check
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
                resolved = _resolve(text[s.start : s.end])
                if resolved and resolved not in names:
                    names.append(resolved)
        return names

    findings += _check_pests(text, pest_spans, facts, policy)
    findings += _check_presence(text, pest_spans, facts)
    findings += _check_unknown_names(text, spans, facts)
    findings += _check_life_stages(text, spans, facts)
    claimed = _check_thresholds(text, spans, facts, sentence_of, pests_in, findings)
    _check_dates_locations(text, spans, facts, in_action, findings)
    skip = [(s.start, s.end) for s in spans if s.kind in ("date", "location")] + claimed
    _check_numbers(text, facts, skip, in_action, sentence_of, pests_in, findings)
    findings += _check_repeats(text)
    findings.sort(key=lambda f: (f.start, f.end, f.kind))
    return findings


def _resolve(name: str) -> str | None:
    """Canonical pest for an unambiguous mention; None for generic words ("mildew")."""
    key = singular(normalize(name))
    if key in GENERIC_TERMS and len(GENERIC_TERMS[key]) > 1:
        return None
    p = lookup(name)
    return p.name if p else None


def _check_pests(text: str, pest_spans: list[Span], facts: Facts, policy: CatalogSpanPolicy) -> list[Finding]:
    out: list[Finding] = []
    observed = {o.name for o in facts.obs}
    members: dict[str, set[str]] = {}
    for o in facts.obs:
        if o.pest and o.member:
            members.setdefault(o.pest.name, set()).add(o.member)
    # Pests the scout mentioned in the free-text notes are part of the record too.
    extra_text = " ".join(str(facts.note.get(k) or "") for k in ("notes", "weather"))
    mentioned = {_resolve(extra_text[s.start : s.end]) for s in policy.find_spans(extra_text) if s.kind == "pest"}
    allowed = observed | {m for m in mentioned if m}
    for s in pest_spans:
        said = text[s.start : s.end]
        if _BENEFICIAL_RE.search(text[max(0, s.start - 20) : s.start]):
            continue  # "predatory mites" are not the pest
        clause_start = max(text.rfind(ch, 0, s.start) for ch in ".;:\n,")
        negated = bool(_NEGATION_RE.search(text[clause_start + 1 : s.start]))
        key = singular(normalize(said))
        if key in GENERIC_TERMS:
            cands = set(GENERIC_TERMS[key])
            in_note = key in {singular(w) for w in normalize(extra_text).split()}
            if not cands & allowed and not in_note and not any(singular(normalize(o.raw["pest"])) == key for o in facts.obs):
                out.append(Finding("unobserved_pest", f"'{said}' could be {' or '.join(sorted(cands))}, none of which the sighting records",
                                   s.start, s.end, "warning", said, sorted(observed)))
            continue
        res = lookup_member(said)
        if res is None:
            continue  # a name taken from the note itself that the catalog does not know
        pest, member = res
        if pest.name not in allowed:
            sev = "warning" if negated else "error"
            msg = (f"'{said}' ({pest.name}) is mentioned as absent but the sighting does not record checking for it"
                   if negated else f"'{said}' ({pest.name}) is not in the sighting")
            out.append(Finding("unobserved_pest", msg, s.start, s.end, sev, said, sorted(observed)))
            continue
        if member and pest.name in members and member not in members[pest.name] and not negated:
            out.append(Finding("unobserved_pest", f"'{said}' is {member}; the sighting records {', '.join(sorted(members[pest.name]))}",
                               s.start, s.end, "error", said, sorted(members[pest.name])))
            continue
        correct = {normalize(n) for n in pest.names(misspellings=False)}
        if normalize(said) in {normalize(m) for m in pest.misspellings} - correct:
            out.append(Finding("misspelled_pest", f"'{said}' is a misspelling of {pest.name}", s.start, s.end, "warning", said, [pest.name]))
    return out


_PRESENCE_RE = re.compile(r"\b(?:found|present|presence|detected|observed|infested|infesting|infestations?|seen|active)\b", re.I)
_ZERO_RE = re.compile(r"(?<![\w.])0(?![\w.])")


def _check_presence(text: str, pest_spans: list[Span], facts: Facts) -> list[Finding]:
    """A pest the sighting scouted for and found none of (0 infested, 0 counted) must not be reported as
    present: "spotted lanternfly adults were found on the trunks" after "0 of 40 vines" is a false alarm."""
    zero = {o.name for o in facts.obs if o.name not in {p.name for p in facts.obs if _found(p.raw)}}
    if not zero:
        return []
    out: list[Finding] = []
    for s in pest_spans:
        name = _resolve(text[s.start : s.end])
        if name not in zero:
            continue
        a = max(text.rfind(ch, 0, s.start) for ch in ".;:\n") + 1
        a += len(text[a:s.start]) - len(text[a:s.start].lstrip())
        m = re.compile(r"[;\n]|(?<!\d)\.(?!\d)").search(text, s.end)
        b = m.start() if m else len(text)
        clause = text[a:b]
        if _NEGATION_RE.search(clause) or _ZERO_RE.search(clause) or not _PRESENCE_RE.search(clause):
            continue
        out.append(Finding("wrong_presence", f"the report says {name} is present; the sighting scouted for it and found none",
                           a, b, "error", clause.strip(), ["none found"]))
    return out


def _found(o: dict) -> bool:
    """Did this observation find the pest? (no figures at all: a sighting of it, as the schema reads it)"""
    return bool(o.get("infested") or o.get("count")) or ("infested" not in o and "count" not in o)


# Words that end the name of a pest or disease. A name ending in one that the catalog does not know and
# the note does not use ("grape cicada", "codling moth", "sour rot") is a pest the report made up.
_PEST_HEADS = (
    "moth", "beetle", "mite", "aphid", "cicada", "rot", "mildew", "blight", "weevil", "worm", "borer", "fly",
    "flies", "wasp", "thrips", "hopper", "sharpshooter", "bug", "caterpillar", "psyllid", "whitefly",
    "nematode", "leafroller", "roller", "sawfly", "midge", "earwig", "canker", "scale insect", "drosophila",
    "gallmaker", "chafer", "mould", "mold", "anthracnose",
)
_HEAD_RE = re.compile(r"\b[A-Za-z-]*(?:" + "|".join(sorted(_PEST_HEADS, key=len, reverse=True)) + r")(?:e?s)?\b", re.I)
_MODIFIER_RE = re.compile(r"([A-Za-z][A-Za-z-]*)[ \t]+$")
_NOT_MODIFIERS = frozenset(
    "a an the any no of and or for with these this that those some more other adult adults larva larvae larval "
    "nymph nymphs egg eggs few many all new first second next its their on in at to by from is are was were be "
    "been per each low high moderate severe possible potential active early late damaged infested signs sign "
    "block row rows fruit found saw seen check checked counted watch scout scouted look looked about against "
    "kill kills target targets".split()
)
_GENERIC_HEADS = frozenset(GENERIC_TERMS) | {"rot", "mold", "mould", "fly", "flie", "bug", "worm", "insect", "pest"}
_CROPS_PATH = Path(__file__).with_name("crop_names.json")


def _crop_names() -> list[str]:
    data = read_json_file(_CROPS_PATH, ValueError)
    return [str(n) for key in ("grape_varieties", "other_crops") for n in data.get(key, [])]


_CROP_RE = re.compile(r"\b(?:" + "|".join(re.escape(n) for n in sorted(_crop_names(), key=len, reverse=True))
                      + r")(?:e?s)?\b", re.I)


def _check_unknown_names(text: str, spans: list[Span], facts: Facts) -> list[Finding]:
    """Pests and crops named that are in neither the note nor the catalog (issue 13, point 5)."""
    covered = [(s.start, s.end) for s in spans if s.kind == "pest"]
    note_text = normalize(" ".join([str(facts.note.get(k) or "") for k in ("variety", "notes", "weather", "block")]
                                   + [str(o.raw.get("pest") or "") for o in facts.obs]))
    note_words = f" {note_text} "
    out: list[Finding] = []
    for m in _HEAD_RE.finditer(text):
        cover = next(((a, b) for a, b in covered if a <= m.start() < b or a < m.end() <= b), None)
        if cover is not None and singular(normalize(text[cover[0]:cover[1]])) not in _GENERIC_HEADS:
            continue  # a catalog pest, or one the note itself names
        if _BENEFICIAL_RE.search(text[max(0, m.start() - 20) : m.start()]):
            continue
        start, words = m.start(), []
        for _ in range(2):  # up to two words before the head ("grape cicada", "glassy-winged sharpshooter")
            w = _MODIFIER_RE.search(text, 0, start)
            low = w.group(1).lower() if w else ""
            # a verb is not part of a pest's name ("spot-treat mites", "monitor mites")
            if not w or low in _NOT_MODIFIERS or any(stem in low for stem in ACTION_STEMS):
                break
            words.insert(0, w.group(1))
            start = w.start(1)
        head = m.group(0)
        if not words and (cover is not None or singular(normalize(head)) in _GENERIC_HEADS):
            continue  # a bare generic word ("the moth"): the span check judges those
        name = " ".join(words + [head])
        if lookup(name) is not None or any(lookup(" ".join(words[i:] + [head])) for i in range(len(words))):
            continue
        if f" {normalize(name)} " in note_words or f" {singular(normalize(name))}" in note_words:
            continue  # the scout's own word for it
        clause_start = max(text.rfind(ch, 0, start) for ch in ".;:\n,")
        negated = bool(_NEGATION_RE.search(text[clause_start + 1 : start]))
        out.append(Finding("unknown_pest", f"'{name}' is not in the pest catalog or the sighting",
                           start, m.end(), "warning" if negated else "error", name, sorted({o.name for o in facts.obs})))
    for m in _CROP_RE.finditer(text):
        if any(a <= m.start() < b for a, b in covered):
            continue  # part of a pest's name ("potato leafhopper")
        said = m.group(0)
        key = normalize(said)
        if f" {key} " in note_words or f" {singular(key)} " in note_words or key in note_text:
            continue
        out.append(Finding("unobserved_crop", f"'{said}' is not the crop or variety of this sighting"
                           + (f" ({facts.note['variety']})" if facts.note.get("variety") else ""),
                           m.start(), m.end(), "error", said, [str(facts.note.get("variety") or "")]))
    return out


_PEST_STAGE_GAP_RE = re.compile(r"[ \t]*\(?[ \t]*")  # "moth (larva", "moth larvae"
_STAGE_PEST_GAP_RE = re.compile(r"[ \t]+")  # "adult moths"


def _check_life_stages(text: str, spans: list[Span], facts: Facts) -> list[Finding]:
    """A life stage written right next to a recorded pest ("grape berry moth (adult)", "adult berry
    moths") must be a stage the sighting records for it. Stages elsewhere (the biology in a Risk
    paragraph: "egg-laying", "the next larval generation") are not claims about this sighting."""
    out: list[Finding] = []
    pests = sorted((sp for sp in spans if sp.kind == "pest"), key=lambda sp: sp.start)
    for st in (sp for sp in spans if sp.kind == "life_stage"):
        before = [p for p in pests if p.end <= st.start and _PEST_STAGE_GAP_RE.fullmatch(text, p.end, st.start)]
        after = [p for p in pests if p.start >= st.end and _STAGE_PEST_GAP_RE.fullmatch(text, st.end, p.start)]
        link = before[-1] if before else (after[0] if after else None)
        if link is None:
            continue
        # the span's value is the pest as resolved against this sighting ("leafhoppers" -> grape leafhopper)
        name = link.value if facts.obs_for(link.value) else _resolve(text[link.start : link.end])
        obs = facts.obs_for(name) if name else []
        if not obs:
            continue
        recorded = {normalize(str(o.raw["life_stage"])) for o in obs}
        said = normalize(st.value)
        if said in recorded or any(said in stage_forms(r) for r in recorded):
            continue
        clause_start = max(text.rfind(ch, 0, min(st.start, link.start)) for ch in ".;:\n")
        if _NEGATION_RE.search(text[clause_start + 1 : st.start]):
            continue  # "no adults were seen"
        word = text[st.start : st.end]
        out.append(Finding("wrong_life_stage", f"'{word}' for {name}: the sighting records {', '.join(sorted(recorded))}",
                           st.start, st.end, "error", word, sorted(recorded)))
    return out


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


def _check_thresholds(text, spans, facts: Facts, sentence_of, pests_in, findings) -> list[tuple[int, int]]:
    """Threshold values and above/below claims; returns the character ranges of threshold figures it judged."""
    judged: list[tuple[int, int]] = []
    seen_sentences: set[tuple[int, int, str]] = set()
    for kw in _THRESHOLD_WORD_RE.finditer(text):
        a, b = sentence_of(kw.start())
        names = pests_in(a, b)
        if not names:
            before = [s for s in spans if s.kind == "pest" and s.end <= a]
            for s in reversed(before):
                r = _resolve(text[s.start : s.end])
                if r:
                    names = [r]
                    break
        if not names and len(facts.obs) == 1:
            names = [facts.obs[0].name]
        obs = [o for n in names for o in facts.obs_for(n)]
        if not obs:
            continue
        # When a sentence names several pests, the one closest before the keyword is the subject.
        if len(obs) > 1:
            best = None
            for s in spans:
                if s.kind == "pest" and a <= s.start < kw.start():
                    r = _resolve(text[s.start : s.end])
                    if r and facts.obs_for(r):
                        best = facts.obs_for(r)[0]
            obs = [best] if best else obs[:1]
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


def _check_dates_locations(text, spans: list[Span], facts: Facts, in_action, findings) -> None:
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


def _check_numbers(text, facts: Facts, skip, in_action, sentence_of, pests_in, findings) -> None:
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
