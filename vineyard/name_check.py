"""The fact check of what a report names: pests, life stages, presence and absence, crops.

Every pest or disease a report names must be one the sighting records (or its notes mention), named
correctly, at a life stage the sighting records for it, not reported present where it was scouted for
and found at 0; a pest or crop in neither the note nor the catalog is a finding too.
"""

from __future__ import annotations

import re
from pathlib import Path

from edgespec import read_json_file
from edgespec.spans import Span

from .findings import Finding
from .pests import GENERIC_TERMS, lookup, lookup_member, normalize, resolve_mention, singular, stage_forms
from .record import Facts
from .spans import ACTION_STEMS, CatalogSpanPolicy

_NEGATION_RE = re.compile(r"\b(?:no|not|without|absence|absent|free\s+of|nor|none|neither|zero|never)\b", re.I)
_BENEFICIAL_RE = re.compile(r"\b(?:predatory|predator|predators|beneficial|parasitic|parasitoid)\s*$", re.I)


def check_pests(text: str, pest_spans: list[Span], facts: Facts, policy: CatalogSpanPolicy) -> list[Finding]:
    """Each pest a report names against the sighting: not recorded (nor in its notes), another species of
    a recorded group, a generic word no recorded pest fits, or a misspelling of a recorded one."""
    out: list[Finding] = []
    observed = {o.name for o in facts.obs}
    members: dict[str, set[str]] = {}
    for o in facts.obs:
        if o.pest and o.member:
            members.setdefault(o.pest.name, set()).add(o.member)
    # Pests the scout mentioned in the free-text notes are part of the record too.
    extra_text = " ".join(str(facts.note.get(k) or "") for k in ("notes", "weather"))
    mentioned = {resolve_mention(extra_text[s.start : s.end]) for s in policy.find_spans(extra_text) if s.kind == "pest"}
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


def check_presence(text: str, pest_spans: list[Span], facts: Facts) -> list[Finding]:
    """A pest the sighting scouted for and found none of (0 infested, 0 counted) must not be reported as
    present: "spotted lanternfly adults were found on the trunks" after "0 of 40 vines" is a false alarm."""
    zero = {o.name for o in facts.obs if o.name not in {p.name for p in facts.obs if _found(p.raw)}}
    return [Finding("wrong_presence", f"the report says {name} is present; the sighting scouted for it and found none",
                    a, b, "error", clause.strip(), ["none found"])
            for name, a, b, clause in _clauses_naming(text, pest_spans, zero)
            if not (_NEGATION_RE.search(clause) or _ZERO_RE.search(clause)) and _PRESENCE_RE.search(clause)]


def check_absence(text: str, pest_spans: list[Span], facts: Facts) -> list[Finding]:
    """The mirror of ``check_presence``: a pest the sighting found must not be reported absent ("No spider
    mites were found" after "1 of 40 leaves infested")."""
    found = {o.name for o in facts.obs if _found(o.raw)}
    return [Finding("wrong_absence", f"the report says no {name} was found; the sighting found some",
                    a, b, "error", clause.strip(), ["found"])
            for name, a, b, clause in _clauses_naming(text, pest_spans, found)
            if _NEGATION_RE.search(clause) and _PRESENCE_RE.search(clause)]


def _clauses_naming(text: str, pest_spans: list[Span], names: set[str]):
    """(catalog name, start, end, clause) for each mention of one of ``names``."""
    for s in pest_spans:
        name = resolve_mention(text[s.start : s.end])
        if name in names:
            a, b = _clause(text, s.start, s.end)
            yield name, a, b, text[a:b]


def _clause(text: str, start: int, end: int) -> tuple[int, int]:
    """The clause around a mention: from the last sentence or clause mark before it to the next one after
    (a decimal point is not one)."""
    a = max(text.rfind(ch, 0, start) for ch in ".;:\n") + 1
    a += len(text[a:start]) - len(text[a:start].lstrip())
    m = re.compile(r"[;\n]|(?<!\d)\.(?!\d)").search(text, end)
    return a, m.start() if m else len(text)


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
    "kill kills target targets "
    # function words ("as mealybugs spread leafroll", "such as mites"): never part of a pest's name
    "as like such than both only also but if when where while because so then into onto over under near after "
    "before during not nor which who whom what whether since until".split()
)
_GENERIC_HEADS = frozenset(GENERIC_TERMS) | {"rot", "mold", "mould", "fly", "flie", "bug", "worm", "insect", "pest"}
_CROPS_PATH = Path(__file__).with_name("crop_names.json")


def _crop_names() -> list[str]:
    data = read_json_file(_CROPS_PATH, ValueError)
    return [str(n) for key in ("grape_varieties", "other_crops") for n in data.get(key, [])]


_CROP_RE = re.compile(r"\b(?:" + "|".join(re.escape(n) for n in sorted(_crop_names(), key=len, reverse=True))
                      + r")(?:e?s)?\b", re.I)


def check_unknown_names(text: str, spans: list[Span], facts: Facts) -> list[Finding]:
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


def check_life_stages(text: str, spans: list[Span], facts: Facts) -> list[Finding]:
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
        name = link.value if facts.obs_for(link.value) else resolve_mention(text[link.start : link.end])
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
