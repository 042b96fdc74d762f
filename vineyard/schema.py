"""The scouting report as a schema: the sighting writes the boilerplate, the oracle writes the judgment.

A report is a list of segments. *Data* segments are rendered here from the note and
the pest catalog -- the header, one line per observation with its computed incidence
or density, for each observed pest the threshold comparison that applies on that date
and block risk class with its source, who must be notified -- so every number,
threshold and pest name in them is right by construction. *Written* segments are the
three places that need judgment: a one-sentence summary, the risk level with one
sentence why (the level narrowed by the data where it decides: ``risk_levels``), and the action.
``report_grammar`` turns the segments into an llguidance
Lark grammar: the data segments are single-path literals (the engine appends them
without sampling and the oracle takes them in one batch), the written ones are bounded
free text, so a small oracle cannot loop, drop a threshold or leave out the action. A written
sentence holds a digit only inside a figure of the data lines or an identifier of the note
(``written_phrases``), so it can cite "4 of 50 clusters" but not invent "140 nymphs per leaf".
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from dataclasses import dataclass

from .pest_catalog import PEST_CATALOG, Pest, Threshold, fmt_quantity
from .pests import check_name, lookup, plural, singular, threshold_status
from .prompt import note_text

RISK_LEVELS = ("low", "moderate", "high")

# Bounds of the written fields in characters: long enough for the sentences the prompt asks for, short
# enough that a looping model is cut off within a line. (llguidance's per-lexeme max_tokens would forbid
# the rollback a rejected draft needs.)
FIELD_LIMITS = {
    "summary": (12, 200),
    "risk_why": (8, 200),
    "action": (8, 200),
}
# One sentence: no newline, no sentence end inside, no digit outside the phrases of ``written_phrases``,
# ends with "." or "!".
_SENTENCE = "/(?:[^\\n.!?0-9]{phrases}){{{lo},{hi}}}[.!]/"

SYSTEM_PROMPT = (
    "You are a vineyard IPM assistant writing a scouting report from a field note. The report's data "
    "lines (block, observations, thresholds, who to notify) are filled in from the note and the pest "
    "catalog. You write three fields:\n"
    "Summary: one sentence on what was found and where.\n"
    "Risk: low, moderate or high, then one sentence why, based on the threshold lines.\n"
    "Action: one or two sentences on what to do next, following the catalog guidance.\n"
    "Name only pests that are in the field note. Do not repeat the data lines."
)


@dataclass(frozen=True)
class Segment:
    """One piece of a report: rendered ``text`` (data) or a written ``field`` the oracle fills in."""

    text: str = ""
    field: str = ""

    @property
    def is_data(self) -> bool:
        return not self.field


# ------------------------------------------------------------------ rendering
def _num(x: float) -> str:
    """4 -> "4", 7.5 -> "7.5", 33.333 -> "33.3": the figures a manager reads, no float noise."""
    if float(x).is_integer():
        return str(int(x))
    return f"{x:.1f}" if abs(x) >= 1 else f"{x:.2g}"


def _clean(s: str) -> str:
    """Free text from a note on one line, without control characters (it becomes a grammar literal)."""
    return re.sub(r"[\x00-\x1f\x7f]+", " ", str(s)).strip()


def header_line(note: dict) -> str:
    parts = [f"Block {_clean(note['block'])}" + (f" ({_clean(note['variety'])})" if note.get("variety") else "")]
    parts.append(f"rows {_clean(note['rows'])}")
    parts.append(_clean(note["date"]) + (f" {_clean(note['time'])}" if note.get("time") else ""))
    if note.get("scout"):
        parts.append(f"scout {_clean(note['scout'])}")
    line = ", ".join(parts)
    if note.get("risk_class"):
        line += f"; {note['risk_class']}-risk block"
    return line + "."


def _pest_name(o: dict) -> str:
    """The pest as the scout named it, or the catalog's name where that was a misspelling ("berry moht")."""
    checked = check_name(o["pest"])
    return checked.pest.name if checked.status == "misspelling" else _clean(o["pest"])


def observation_line(o: dict) -> str:
    """- grape berry moth (larva): 4 of 50 clusters infested (8%)."""
    head = f"- {_pest_name(o)} ({_clean(o['life_stage'])}): "
    unit, sampled = _clean(o["unit"]), o["sampled"]
    figures = []
    if "infested" in o:
        figures.append(f"{o['infested']} of {sampled} {unit} infested ({_num(100.0 * o['infested'] / sampled)}%)")
    if "count" in o:
        on = "" if "infested" in o else f" on {sampled} {unit}"
        figures.append(f"{o['count']} counted{on} ({_num(o['count'] / sampled)} per {singular(unit)})")
    if not figures:
        figures.append(f"{sampled} {unit} sampled")
    if "severity_pct" in o:
        figures.append(f"severity {_num(o['severity_pct'])}%")
    if "defoliation_pct" in o:
        figures.append(f"defoliation {_num(o['defoliation_pct'])}%")
    return head + ", ".join(figures) + "."


def short_source(source: str) -> str:
    """The citation's first part ("Cornell University / NYS IPM"): the full one is in the catalog."""
    return source.split(",")[0].split(":")[0].strip()


def _value(t: Threshold) -> str:
    """6, "% damaged clusters" -> "6%" (the observed figure beside it names the unit)."""
    return f"{_num(t.value)}%" if t.unit.startswith("%") else fmt_quantity(t.value, t.unit)


def _threshold_phrase(t: Threshold, observed: float, above: bool) -> str:
    if above:
        where = "at or above" if t.comparison == ">=" else "above"
    else:
        where = "at" if observed == t.value else "below"
    kind = "threshold" if t.published else "informal guide"
    notes = [t.window_label] if t.window_label else []
    if t.risk:
        notes.append(f"{'/'.join(t.risk)}-risk blocks")
    notes.append(short_source(t.source) if t.published else "no published threshold")
    return f"{fmt_quantity(observed, t.unit)}, {where} the {_value(t)} {kind} ({'; '.join(notes)})"


def threshold_line(o: dict, note: dict) -> str:
    """Where one observation stands against the catalog's threshold on this date and block, or why none applies."""
    name = _clean(o["pest"])
    st = threshold_status(o, note["date"], risk=note.get("risk_class"))
    if st.pest is None:
        return f"- {name}: not in the pest catalog; no threshold."
    if st.threshold is not None:
        return f"- {st.pest}: {_threshold_phrase(st.threshold, st.observed, st.status == 'above')}."
    pest = PEST_CATALOG[st.pest]
    if not pest.thresholds:
        return f"- {st.pest}: no published threshold."
    return f"- {st.pest}: no threshold applies to this observation ({_why_none(pest, o, note)})."


def _why_none(pest: Pest, o: dict, note: dict) -> str:
    day = _dt.date.fromisoformat(note["date"])
    stage = singular(str(o.get("life_stage", "")).lower())
    reasons = []
    for t in pest.thresholds:
        what = f"the {_value(t)} {'threshold' if t.published else 'guide'}"
        if t.window and not t.in_window(day):
            reasons.append(f"{what} is for {t.window_label or ' to '.join(t.window)}")
        elif t.risk and note.get("risk_class") and note["risk_class"] not in t.risk:
            reasons.append(f"{what} is for {'/'.join(t.risk)}-risk blocks")
        elif t.life_stages and stage not in {singular(s) for s in t.life_stages}:
            reasons.append(f"{what} counts {'/'.join(plural(s) for s in t.life_stages)}")
        elif t.sampling_unit and singular(o["unit"].lower()) != singular(t.sampling_unit.lower()):
            reasons.append(f"{what} is sampled on {t.sampling_unit}")
        else:
            reasons.append(f"{what} needs {t.metric.replace('_pct', ' %').replace('_', ' ')}")
    return "; ".join(dict.fromkeys(reasons))


def notify_lines(note: dict) -> list[str]:
    """Regulated pests: who must be told, rendered so no report can drop it."""
    out = []
    for pest in _pests_of(note):
        if pest.reportable:
            out.append(f"Notify: {pest.name} is a regulated pest; report the find to the state or provincial department of agriculture.")
    return out


def _found(o: dict) -> bool:
    """The pest was seen (an observation without counts, e.g. a severity estimate, counts as seen)."""
    return bool(o.get("infested") or o.get("count") or ("infested" not in o and "count" not in o))


def _pests_of(note: dict) -> list[Pest]:
    seen: dict[str, Pest] = {}
    for o in note["observations"]:
        p = lookup(o["pest"])
        if p is not None and _found(o):
            seen.setdefault(p.name, p)
    return list(seen.values())


def risk_levels(note: dict) -> tuple[str, ...]:
    """The risk levels the data leaves to judgment: a walk that found nothing is low; a find past a published
    threshold (as the threshold line says "above"), or of a regulated pest, is not low; otherwise the oracle
    chooses among all three."""
    obs = note["observations"]
    if not any(_found(o) for o in obs):
        return ("low",)
    over = any(_found(o) and (st := threshold_status(o, note["date"], risk=note.get("risk_class"))).status == "above"
               and st.published for o in obs)
    if over or any(p.reportable for p in _pests_of(note)):
        return ("moderate", "high")
    return RISK_LEVELS


def segments(note: dict) -> list[Segment]:
    """The report of a validated note, in order: data segments and the three written fields."""
    lines = [header_line(note), "Observations:"]
    if note["observations"]:
        lines += [observation_line(o) for o in note["observations"]]
        lines.append("Thresholds:")
        lines += list(dict.fromkeys(threshold_line(o, note) for o in note["observations"]))
    else:
        lines.append("- nothing found.")
    lines += notify_lines(note)
    data = "\n".join(lines) + "\n"
    return [
        Segment(data + "Summary: "),
        Segment(field="summary"),
        Segment("\nRisk: "),
        Segment(field="risk"),
        Segment("\nAction: "),
        Segment(field="action"),
    ]


def rendered_text(note: dict) -> str:
    """The data of a report alone (what a report says before the oracle writes anything)."""
    return "".join(s.text for s in segments(note))


# ------------------------------------------------------------------ grammar
def _literal(s: str) -> str:
    # Lark string literals take JSON escapes; non-ASCII stays as UTF-8 text.
    return json.dumps(s, ensure_ascii=False)


# A figure of a data line with the words that say what it counts: "4 of 50 clusters", "8%", "3 counted",
# "0.15 per leaf", "5 nymphs per leaf", "50 clusters".
_FIGURE_RE = re.compile(r"\d+(?:\.\d+)?(?:%| of \d+ [^\W\d_]+| counted| per [^\W\d_]+| [^\W\d_]+ per [^\W\d_]+| [^\W\d_]+)?")


def written_phrases(note: dict) -> tuple[str, ...]:
    """The only text with a digit the written fields may hold: the figures of the data lines with what they
    count, and the note's block, rows, date and time as the header writes them. A sentence can cite the data
    but cannot invent a figure or give one another unit ("3 nymphs per leaf" for 3 counted on 20 leaves)."""
    segs = segments(note)
    data = segs[0].text.split("\n", 1)[1]  # the lines after the header
    cands = _FIGURE_RE.findall(data)
    cands += [_clean(note["block"]), _clean(note["rows"]), _clean(note["date"]), _clean(note.get("time") or "")]
    return tuple(sorted({c for c in cands if any(ch.isdigit() for ch in c)}, key=lambda c: (-len(c), c)))


_REGEX_META = set("\\.+*?()|[]{}^$-/&~#\"")


def _regex_phrases(note: dict) -> str:
    return "".join("|" + "".join("\\" + c if c in _REGEX_META else c for c in p) for p in written_phrases(note))


def _sentence(field: str, phrases: str) -> str:
    lo, hi = FIELD_LIMITS[field]
    return _SENTENCE.format(lo=lo, hi=hi, phrases=phrases)


def report_grammar(note: dict) -> str:
    """An llguidance Lark grammar: the data segments as literals, the written fields as bounded lines."""
    body = []
    for seg in segments(note):
        if seg.is_data:
            body.append(_literal(seg.text))
        else:
            body.append(seg.field)
    levels = " | ".join(_literal(level) for level in risk_levels(note))
    phrases = _regex_phrases(note)
    return "\n".join([
        "%llguidance {}",
        "start: " + " ".join(body),
        "summary: " + _sentence("summary", phrases),
        "risk: level \", \" risk_why",
        f"level: {levels}",
        "risk_why: " + _sentence("risk_why", phrases),
        "action: sentence | sentence \" \" sentence",
        "sentence: " + _sentence("action", phrases),
    ]) + "\n"


def max_report_chars(note: dict) -> int:
    """The longest report the grammar allows, in characters: what a token budget must cover so that no report is
    cut short (every token is one character or more). A figure counts as one character of a sentence's bound."""
    unit = max([1] + [len(p) for p in written_phrases(note)])
    lim = FIELD_LIMITS
    written = (lim["summary"][1] + max(map(len, RISK_LEVELS)) + 2 + lim["risk_why"][1] + 2 * lim["action"][1]) * unit
    return len(rendered_text(note)) + written + 5  # the sentence ends and the space between the action's two


def gbnf_body(note: dict) -> str:
    """One unit of a written sentence in GBNF: a character that is no digit, newline or sentence end, or one
    of ``written_phrases``."""
    return "(" + " | ".join(["[^\\n.!?0-9]"] + [_literal(p) for p in written_phrases(note)]) + ")"


def _gbnf_sentence(field: str, body: str) -> str:
    lo, hi = FIELD_LIMITS[field]
    return f"{body}{{{lo},{hi}}} [.!]"


def report_gbnf(note: dict) -> str:
    """The same grammar in llama.cpp's GBNF, for plain llama-cpp-python's ``LlamaGrammar`` (the bench's baseline)."""
    body = [(_literal(seg.text) if seg.is_data else seg.field.replace("_", "-")) for seg in segments(note)]
    levels = " | ".join(_literal(level) for level in risk_levels(note))
    unit = gbnf_body(note)
    return "\n".join([
        "root ::= " + " ".join(body),
        f"summary ::= {_gbnf_sentence('summary', unit)}",
        "risk ::= level \", \" risk-why",
        f"level ::= {levels}",
        f"risk-why ::= {_gbnf_sentence('risk_why', unit)}",
        "action ::= sentence | sentence \" \" sentence",
        f"sentence ::= {_gbnf_sentence('action', unit)}",
    ]) + "\n"


# ------------------------------------------------------------------ prompt
def guidance_lines(note: dict) -> list[str]:
    """What the catalog says about each pest in the note: the oracle chooses the action in its light."""
    out = []
    for pest in _pests_of(note):
        if pest.notes:
            out.append(f"- {pest.name}: {pest.notes}")
    return out


def report_messages(note: dict) -> list[dict]:
    user = "Field note:\n" + note_text(note)
    guide = guidance_lines(note)
    if guide:
        user += "\n\nCatalog guidance:\n" + "\n".join(guide)
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": user + "\n\nWrite the report."},
    ]


# ------------------------------------------------------------------ reading a report back
_FIELD_RE = re.compile(r"^Summary: (?P<summary>[^\n]*)\nRisk: (?P<risk>[^\n]*)\nAction: (?P<action>[^\n]*)\Z", re.M)


def written_fields(text: str) -> dict[str, tuple[int, int]] | None:
    """Character spans of the written fields in a finished report, or None if the layout is not there."""
    m = _FIELD_RE.search(text)
    if m is None:
        return None
    return {k: m.span(k) for k in ("summary", "risk", "action")}
