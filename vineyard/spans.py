"""Critical spans of a scouting report: the vineyard vocabulary the engine's guard and the audit use.

A critical span is text that identifies a pest or carries a number or a decision:
pest/disease names, life stages, counts and figures, threshold statements,
rows/blocks, dates and the recommended action. The engine verifies every token
of such a span with the oracle; in power-saving relaxed mode it asks
``may_skip_verification`` (edgespec's ``SpanGuard``) before accepting drafted
text unchecked. The audit of the finished report is edgespec's domain-free
``audit`` over the spans found here.

Why the span rules look the way they do: the engine must decide *before* the
rest of the report exists. So every span here starts at a trigger (a catalog
word, a digit, a block id, an Action heading) and only extends forward, within
its clause (numbers, thresholds), sentence (action phrases) or section (the
Action section). ``may_skip_verification`` refuses any draft that contains a
trigger, could complete one across a token boundary, or sits where an open span
could still extend - so unverified text never lands inside a span found later.
"""

from __future__ import annotations

import re
from typing import Iterable, Protocol, runtime_checkable

from edgespec.spans import Span, SpanGuard

from .pest_catalog import PEST_CATALOG, Pest
from .pests import GENERIC_TERMS, normalize, number_variants, stage_forms

KINDS = ("pest", "life_stage", "count", "threshold", "location", "date", "action")
CRITICAL_KINDS = frozenset(KINDS)


@runtime_checkable
class SpanPolicy(SpanGuard, Protocol):
    """What the engine (as its guard) and the audit need from a span policy (pluggable)."""

    def find_spans(self, text: str, note: dict | None = None) -> list[Span]: ...

    def may_skip_verification(self, prefix_text: str, draft_text: str) -> bool: ...


# ------------------------------------------------------------------ vocabulary
STOPWORDS = frozenset(
    "a an and or of in on to the per at for by with from is it its this them out as be".split()
)
MONTHS = (
    "january", "february", "march", "april", "june", "july", "august",
    "september", "october", "november", "december",
)
# Case-sensitive month words: "May" the month, not "may" the verb; abbreviations only capitalised.
CASED_MONTHS = ("May", "Jan", "Feb", "Mar", "Apr", "Jun", "Jul", "Aug", "Sep", "Sept", "Oct", "Nov", "Dec")

# Action words match with any ending (spray, sprayed, spraying, sprayer...).
ACTION_STEMS = (
    "spray", "treat", "apply", "applie", "applic", "insecticid", "fungicid", "miticid", "acaricid",
    "pesticid", "monitor", "rescout", "re-scout", "recheck", "re-check", "resampl", "re-sampl",
    "reinspect", "re-inspect", "remov", "prun", "destroy", "notif", "control", "manag",
    "recommend", "advis", "consider", "continu", "resum", "repeat", "schedul", "protect",
    "action", "interven", "retreat", "re-treat", "quarantin",
)
ACTION_WORDS = ("should", "must")
ACTION_PHRASES = (
    "scout again", "check again", "need to", "needs to", "report to", "report it to",
    "report sightings to", "report this to", "report the sighting to", "report them to",
    "hold off", "no action", "no treatment", "next step", "next steps", "follow up", "follow-up",
)
THRESHOLD_STEMS = ("threshold", "exceed", "surpass", "toleran")
THRESHOLD_WORDS = ("above", "below", "under", "over", "beyond")
THRESHOLD_PHRASES = ("action level", "economic injury level", "injury level")
LOCATION_WORDS = ("row", "rows", "block", "blocks", "panel", "panels", "section", "sections")
UNIT_WORDS = (
    "cluster", "clusters", "leaf", "leaves", "vine", "vines", "shoot", "shoots", "trunk", "trunks",
    "berry", "berries", "plant", "plants", "trap", "traps", "site", "sites", "sample", "samples",
    "damaged", "infested", "infected", "sampled", "counted", "inspected", "examined", "checked",
    "days", "day", "weeks", "week", "hours", "hour", "mm", "cm", "m", "km", "metres", "meters",
    "percent", "individuals", "insects", "colonies", "galls", "adults", "nymphs", "larvae", "eggs",
    "crawlers", "mites", "beetles", "moths", "lanternflies", "leafhoppers", "mealybugs", "spots",
    "lesions", "degrees", "total",
)
# Adjectives a report uses for a stage ("larval damage").
STAGE_ADJECTIVES = {"larva": "larval", "pupa": "pupal", "nymph": "nymphal", "egg": "egg-laying"}
ACTION_HEADINGS = (
    "action", "actions", "recommended action", "recommended actions", "recommendation",
    "recommendations", "next steps", "next step", "management", "treatment", "action plan",
)
OTHER_HEADINGS = (
    "summary", "observations", "observation", "findings", "risk", "risk assessment", "notes",
    "note", "weather", "conditions", "details", "conclusion", "location", "date", "scout",
    "block", "rows", "overview", "background", "assessment", "pest", "pests",
)

_NUM = r"\d+(?:,\d{3})*(?:\.\d+)?"
_SENT_BOUNDARY = re.compile(r"(?<!\d)\.(?!\d)|\.(?=\s|$)|[!?\n]")
_CLAUSE_BOUNDARY = re.compile(r"(?<!\d)\.(?!\d)|\.(?=\s|$)|[!?\n;:]|,(?=\s|$)|,(?!\d)|\s[-\u2013\u2014]\s|\(|\)")
_WORD = re.compile(r"[A-Za-z\u00c0-\u024f][A-Za-z\u00c0-\u024f'\u2019-]*")
_HEADING = re.compile(
    r"^[ \t>]*(?:#{1,6}[ \t]*)?(?:[*_]{1,2})?(?:\d{1,2}[.)][ \t]*)?(?:[*_]{1,2})?"
    r"(?P<name>[A-Za-z][A-Za-z /&-]{0,40}?)[ \t]*(?:[*_]{1,2})?[ \t]*(?::|$)",
    re.M,
)


def _words_pattern(phrase: str) -> str:
    """A phrase as a regex that tolerates hyphens, line breaks and runs of spaces between words."""
    parts = [re.escape(w) for w in re.split(r"[\s\-]+", phrase.strip()) if w]
    return r"[\s\-]+".join(parts)


def _alternation(phrases: Iterable[str]) -> str:
    uniq = sorted({p for p in phrases if p.strip()}, key=len, reverse=True)
    return "|".join(_words_pattern(p) for p in uniq) or r"(?!x)x"


def _is_upper_acronym(s: str) -> bool:
    letters = s.replace("-", "")
    return len(letters) >= 2 and letters.isalpha() and letters.isupper()


def _last_boundary(regex: re.Pattern, text: str, pos: int) -> int:
    # Scan the whole text (not text[:pos]) so a boundary right before ``pos`` is judged
    # with the character after it, exactly as in the finished report ("1." + "4").
    last = 0
    for m in regex.finditer(text):
        if m.end() > pos:
            break
        last = m.end()
    return last


def sentence_start(text: str, pos: int | None = None) -> int:
    """Offset where the sentence containing ``pos`` (default: the end) starts."""
    return _last_boundary(_SENT_BOUNDARY, text, len(text) if pos is None else pos)


def clause_start(text: str, pos: int | None = None) -> int:
    """Offset where the clause containing ``pos`` starts (clauses end at , ; : . ! ? and newlines)."""
    return _last_boundary(_CLAUSE_BOUNDARY, text, len(text) if pos is None else pos)


def _next_boundary(regex: re.Pattern, text: str, pos: int) -> int:
    m = regex.search(text, pos)
    return m.start() if m else len(text)


class CatalogSpanPolicy:
    """The default policy: critical spans derived from the pest catalog and the field note.

    Construct it with the note being reported on so the note's own names (a pest
    typed with an unlisted spelling, the block id, the rows) are critical too.
    """

    def __init__(self, note: dict | None = None, catalog: dict[str, Pest] | None = None) -> None:
        self.note = note or {}
        self.catalog = catalog if catalog is not None else PEST_CATALOG
        self._compile()

    # ---------------------------------------------------------------- set-up
    def _compile(self) -> None:
        note = self.note
        obs = note.get("observations") or []
        pest_forms: dict[str, str] = {}  # surface form -> value
        acronyms: dict[str, str] = {}
        for pest in self.catalog.values():
            forms = pest.names(misspellings=True) + ([pest.scientific_name] if pest.scientific_name else [])
            for f in forms:
                for part in f.split(";"):
                    part = part.strip()
                    if not part:
                        continue
                    if _is_upper_acronym(part):
                        acronyms[part] = pest.name
                        continue
                    for v in number_variants(part):
                        pest_forms.setdefault(v.lower(), pest.name)
        for word, owners in GENERIC_TERMS.items():
            for v in number_variants(word):
                pest_forms.setdefault(v, owners[0] if len(owners) == 1 else word)
        for o in obs:
            name = str(o.get("pest") or "").strip()
            if name:
                for v in number_variants(name.lower()):
                    pest_forms.setdefault(v, name)
        stage_words: dict[str, str] = {}
        for pest in self.catalog.values():
            for s in pest.life_stages:
                for v in stage_forms(s):
                    stage_words.setdefault(v, s.lower())
        for o in obs:
            s = str(o.get("life_stage") or "").strip()
            if s:
                for v in stage_forms(s):
                    stage_words.setdefault(v, s.lower())
        for stage, adj in STAGE_ADJECTIVES.items():
            if stage in stage_words:
                stage_words.setdefault(adj, stage)
        self._pest_forms = pest_forms
        self._pest_value = {normalize(k): v for k, v in reversed(list(pest_forms.items()))}
        self._stage_words = stage_words
        self._acronyms = acronyms
        # The bare word list a report uses for the recorded units ("12 of 40 leaves").
        units = set(UNIT_WORDS) | {str(o.get("unit") or "").lower() for o in obs} - {""}
        for s in stage_words:
            if " " not in s:
                units.add(s)
        for f in pest_forms:
            if " " not in f:
                units.add(f)

        I = re.IGNORECASE
        self._re_pest = re.compile(r"(?<![\w])(?:" + _alternation(pest_forms) + r")(?![\w])", I)
        self._re_acronym = re.compile(r"(?<![\w])(?:" + "|".join(sorted(map(re.escape, acronyms), key=len, reverse=True)) + r")(?![\w])") if acronyms else None
        self._re_stage = re.compile(r"(?<![\w])(?:" + _alternation(stage_words) + r")(?![\w])", I)
        unit_alt = "|".join(sorted(map(re.escape, units), key=len, reverse=True))
        self._re_count = re.compile(
            rf"(?<![\w.]){_NUM}"
            r"(?:[ \t]*(?:%|percent\b|per[ \t]cent\b))?"
            rf"(?:(?:[ \t]*/[ \t]*|[ \t]+(?:out[ \t]+of|of|in)[ \t]+){_NUM}(?:[ \t]*%)?)?"
            r"(?:[ \t]?\u00b0?[ \t]?[CF](?![\w]))?"
            rf"(?:[ \t]+(?:{unit_alt})(?![\w])){{0,3}}"
            rf"(?:[ \t]*(?:/|per[ \t]+)[ \t]*(?:{unit_alt})(?![\w]))?",
            I,
        )
        months_ci = "|".join(MONTHS)
        months_cs = "|".join(CASED_MONTHS)
        month = rf"(?:(?i:{months_ci})|(?:{months_cs})\.?)"  # a dot only after an abbreviation
        self._re_date = re.compile(
            r"(?<![\w-])\d{4}-\d{1,2}-\d{1,2}(?![\w-])"
            rf"|(?<![\w]){month}(?:[ \t]+\d{{1,2}}(?:st|nd|rd|th)?(?![\w]))?(?:,?[ \t]+\d{{4}}(?![\w]))?(?![\w])"
            rf"|(?<![\w.])\d{{1,2}}(?:st|nd|rd|th)?[ \t]+(?:of[ \t]+)?{month}(?:,?[ \t]+\d{{4}})?(?![\w])"
        )
        id_ = r"(?:\d{1,4}[A-Za-z]?|[A-Z]{1,3}-?\d{1,4}[a-z]?)"
        loc_words = "|".join(LOCATION_WORDS)
        extra = []
        block = str(note.get("block") or "").strip()
        if block:
            extra.append(_words_pattern(block))
        self._re_location = re.compile(
            rf"(?<![\w])(?i:{loc_words})[ \t]+(?:#[ \t]*)?{id_}(?:[ \t]*(?:-|\u2013|\u2014|to|through|and|&)[ \t]*{id_})*(?![\w])"
            rf"|(?<![\w])(?i:block)[ \t]+(?=[\w-]*\d)[A-Z][\w-]{{0,15}}"
            r"|(?<![\w-])[A-Z]{1,3}-?\d{1,3}[a-z]?(?![\w])"
            + (r"|(?<![\w])(?:" + "|".join(extra) + r")(?![\w])" if extra else ""),
        )
        self._re_threshold = re.compile(
            r"(?<![\w])(?:(?i:" + "|".join(THRESHOLD_STEMS) + r")[\w-]*"
            + r"|(?i:" + _alternation(THRESHOLD_WORDS + THRESHOLD_PHRASES) + r")(?![\w]))"
        )
        self._re_action = re.compile(
            r"(?<![\w])(?:(?i:" + "|".join(map(re.escape, ACTION_STEMS)) + r")[\w-]*"
            + r"|(?i:" + _alternation(ACTION_WORDS + ACTION_PHRASES) + r")(?![\w]))"
        )

        # Trigger vocabulary for may_skip_verification: every word that can start or
        # continue a span, and the word sequences that may still grow into a phrase.
        phrases: list[str] = []
        phrases += list(pest_forms) + list(stage_words)
        phrases += list(THRESHOLD_WORDS) + list(THRESHOLD_PHRASES) + list(ACTION_WORDS) + list(ACTION_PHRASES)
        phrases += list(LOCATION_WORDS) + list(MONTHS) + list(ACTION_HEADINGS)
        if block:
            phrases.append(block)
        vocab: set[str] = set()
        prefixes: set[tuple[str, ...]] = set()
        for p in phrases:
            words = tuple(w for w in re.split(r"[\s\-]+", p.lower()) if w)
            vocab.update(w for w in words if w not in STOPWORDS)
            for k in range(1, len(words)):
                prefixes.add(words[:k])
        self._vocab = frozenset(vocab)
        self._stems = tuple(s.replace("-", "") for s in ACTION_STEMS + THRESHOLD_STEMS)
        self._phrase_prefixes = frozenset(prefixes)
        self._max_phrase = max((len(p) for p in prefixes), default=0) + 1
        self._acronym_set = frozenset(acronyms)

    # ------------------------------------------------------------- find spans
    def find_spans(self, text: str, note: dict | None = None) -> list[Span]:
        """Every critical span in ``text``; ``note`` (if given) replaces the note this policy was built for."""
        if note is not None and note is not self.note:
            return CatalogSpanPolicy(note, self.catalog).find_spans(text)
        if not isinstance(text, str):
            raise TypeError(f"report text must be a str, got {type(text).__name__}")
        spans: list[Span] = []
        for m in self._re_pest.finditer(text):
            value = self._pest_value.get(normalize(m.group(0)), m.group(0))
            spans.append(Span(m.start(), m.end(), "pest", value))
        if self._re_acronym is not None:
            for m in self._re_acronym.finditer(text):
                spans.append(Span(m.start(), m.end(), "pest", self._acronyms[m.group(0)]))
        for m in self._re_stage.finditer(text):
            key = normalize(m.group(0))
            spans.append(Span(m.start(), m.end(), "life_stage", self._stage_words.get(key, key)))
        dates = [Span(m.start(), m.end(), "date", m.group(0)) for m in self._re_date.finditer(text)]
        locs = [Span(m.start(), m.end(), "location", m.group(0)) for m in self._re_location.finditer(text)]
        spans += dates + locs
        covered = dates + locs
        for m in self._re_count.finditer(text):
            if any(c.start <= m.start() and m.end() <= c.end for c in covered):
                continue
            spans.append(Span(m.start(), m.end(), "count", m.group(0).strip()))
        for m in self._re_threshold.finditer(text):
            end = _next_boundary(_CLAUSE_BOUNDARY, text, m.end())
            spans.append(Span(m.start(), end, "threshold", text[m.start() : end].strip()))
        for m in self._re_action.finditer(text):
            end = _next_boundary(_SENT_BOUNDARY, text, m.end())
            spans.append(Span(m.start(), end, "action", text[m.start() : end].strip()))
        for start, end in self.action_sections(text):
            spans.append(Span(start, end, "action", text[start:end].strip()))
        return _merge(spans)

    def action_sections(self, text: str) -> list[tuple[int, int]]:
        """(start, end) of each Action/Recommendation section: its heading up to the next heading line."""
        heads = []  # (line start, name start, is action)
        for m in _HEADING.finditer(text):
            name = m.group("name").strip().lower()
            if name in ACTION_HEADINGS or name in OTHER_HEADINGS:
                heads.append((m.start(), m.start("name"), name in ACTION_HEADINGS))
        out = []
        for i, (_, name_start, is_action) in enumerate(heads):
            if is_action:
                end = heads[i + 1][0] if i + 1 < len(heads) else len(text)
                out.append((name_start, max(end, name_start)))
        return out

    def in_action_section(self, prefix_text: str) -> bool:
        """Is the end of ``prefix_text`` inside an Action section (as the finished text will have it)?"""
        last = None
        for m in _HEADING.finditer(prefix_text):
            name = m.group("name").strip().lower()
            if name in ACTION_HEADINGS:
                last = True
            elif name in OTHER_HEADINGS:
                # An unfinished last line ("Block" may become "Block canopy ...") closes nothing yet.
                provisional = m.end() == len(prefix_text) and not prefix_text.rstrip().endswith(":")
                if not provisional:
                    last = False
        return bool(last)

    # -------------------------------------------------------- relaxed mode gate
    def may_skip_verification(self, prefix_text: str, draft_text: str) -> bool:
        """True only when ``draft_text`` appended to ``prefix_text`` cannot touch a critical span.

        Conservative by design: any digit, any catalog/stage/action/threshold word
        (or the start of one at the draft's end), an open number/threshold clause or
        action sentence, a possible block id, or the Action section means False.
        """
        if not draft_text or not draft_text.strip():
            return False
        if re.search(r"[\d%\u00b0#]", draft_text):
            return False
        if self.in_action_section(prefix_text):
            return False
        # Open spans in the prefix that would extend forward into the draft.
        full = prefix_text + draft_text
        cut = len(prefix_text)
        clause = prefix_text[clause_start(full, cut):]
        if re.search(r"\d", clause) or self._re_threshold.search(clause):
            return False
        start = sentence_start(full, cut)
        if self._re_action.search(prefix_text[start:]):
            return False
        # Words in (or joined to) the draft.
        tail = prefix_text[-80:]
        combined = tail + draft_text
        region = len(tail)
        words = [m for m in _WORD.finditer(combined) if m.end() > region]
        for m in words:
            if self._is_trigger_word(m.group(0)):
                return False
        if words and words[-1].end() == len(combined):
            last = words[-1].group(0)
            if self._could_become_trigger(last):
                return False
        # A phrase begun in the prefix ("grape" -> "grape berry moth") may continue.
        before = [normalize(m.group(0)) for m in _WORD.finditer(tail) if m.end() <= region]
        before = [w for w in before if w][-self._max_phrase :]
        joined_prefix = tuple(" ".join(before).split())
        for k in range(1, min(len(joined_prefix), self._max_phrase) + 1):
            if joined_prefix[-k:] in self._phrase_prefixes:
                return False
        # The spans of the current sentence must neither reach into the draft nor end right
        # at the prefix's end, where they could still grow ("July" + ", 2026").
        # Start one sentence earlier: a span may cross a boundary ("Aug." + ", 2026").
        back = sentence_start(full, max(0, start - 1))
        local = full[back:]
        edge = len(prefix_text.rstrip()) - back
        return not any(s.end >= edge for s in self.find_spans(local))

    def _is_trigger_word(self, word: str) -> bool:
        w = word.strip("-'\u2019")
        if not w:
            return False
        if w in CASED_MONTHS or w in self._acronym_set:
            return True
        low = w.lower()
        for part in {low, low.replace("-", ""), *low.split("-")}:
            if not part:
                continue
            if part in self._vocab:
                return True
            if any(part.startswith(s) for s in self._stems):
                return True
            for v in number_variants(part):
                if v in self._vocab:
                    return True
        return False

    def _could_become_trigger(self, word: str) -> bool:
        """A word at the very end of the draft may be completed by the next token."""
        w = word.strip("-'\u2019")
        if not w:
            return False
        if w.isupper() and len(w) <= 3:  # a block id ("B" + "4") or an acronym being spelled
            return True
        parts = {w.lower().replace("-", ""), w.lower().split("-")[-1]}
        for low in parts:
            if not low:
                continue
            if any(v.startswith(low) for v in self._vocab) or any(s.startswith(low) for s in self._stems):
                return True
            last = w.split("-")[-1]
            if last[:1].isupper() and any(m.lower().startswith(low) for m in CASED_MONTHS):
                return True
        return False


class StrictSpanPolicy(CatalogSpanPolicy):
    """Same spans, but never allows unverified text (lossless everywhere)."""

    def may_skip_verification(self, prefix_text: str, draft_text: str) -> bool:
        return False


def _merge(spans: list[Span]) -> list[Span]:
    """Sorted, without exact duplicates and without a span inside another of the same kind."""
    uniq = sorted(set(spans), key=lambda s: (s.start, -s.end, s.kind))
    out: list[Span] = []
    for s in uniq:
        if any(o.kind == s.kind and o.start <= s.start and s.end <= o.end for o in out if o is not s):
            continue
        out.append(s)
    return out


def default_policy(note: dict | None = None) -> CatalogSpanPolicy:
    """The policy the engine and the audit use unless told otherwise."""
    return CatalogSpanPolicy(note)


def find_spans(text: str, note: dict | None = None) -> list[Span]:
    """Critical spans of ``text`` with the default catalog policy."""
    return CatalogSpanPolicy(note).find_spans(text)
