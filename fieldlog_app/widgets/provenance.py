"""Provenance colouring: which tokens the drafter wrote and what the oracle checked.

Pure helpers (text + provenance → rich ``Text``) plus two small widgets: the
streaming report view and the colour legend. The same styles are used while a
report streams and when a stored report is reopened, so a user learns one key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from rich.text import Text
from textual.widgets import Static

# drafted+verified: the drafter's guess, confirmed by the oracle.
# corrected: the oracle overrode the drafter here.
# bonus/oracle: the oracle's own tokens (default style: nothing to point out).
# unverified: drafter text nobody checked (power saving) — the thing to read twice.
# data: rendered from the sighting and the catalog under the report grammar (nothing to point out).
STYLES: dict[str, str] = {
    "data": "",
    "drafted": "green",
    "corrected": "bold yellow underline",
    "bonus": "",
    "oracle": "",
    "unverified": "dim red italic",
    # typed by a person reviewing the report (vineyard.review): not the model's, not checked by the oracle
    "person": "bold cyan",
}
LEGEND = (
    ("drafted", "drafted ✓"),
    ("corrected", "corrected"),
    ("oracle", "oracle"),
    ("unverified", "unverified"),
)


def style_for(source: str, verified: bool = True) -> str:
    """Style of one token; drafted text without an oracle check counts as unverified."""
    if source == "drafted" and not verified:
        source = "unverified"
    return STYLES.get(source, "")


@dataclass(frozen=True)
class Run:
    start: int
    end: int
    source: str
    verified: bool = True


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def runs_from_records(records: Iterable[Any], text: str | None = None) -> list[Run]:
    """Character runs from TokenRecords (objects or their dict form).

    Uses each record's start/end when they are set; otherwise lays the records'
    ``text`` end to end. Adjacent tokens with the same look are merged.
    """
    runs: list[Run] = []
    pos = 0
    for r in records:
        source = str(_get(r, "source", "oracle"))
        verified = bool(_get(r, "verified", source != "unverified"))
        start, end = _get(r, "start"), _get(r, "end")
        tok_text = _get(r, "text")
        if isinstance(start, int) and isinstance(end, int) and end > start:
            s, e = start, end
        elif isinstance(tok_text, str):
            s, e = pos, pos + len(tok_text)
        else:
            continue
        pos = e
        if e <= s:
            continue
        if runs and runs[-1].end == s and style_for(runs[-1].source, runs[-1].verified) == style_for(source, verified):
            last = runs[-1]
            runs[-1] = Run(last.start, e, last.source, last.verified)
        else:
            runs.append(Run(s, e, source, verified))
    if text is not None:
        runs = [Run(r.start, min(r.end, len(text)), r.source, r.verified) for r in runs if r.start < len(text)]
    return runs


def runs_from_stored(provenance: Any, text: str) -> list[Run]:
    """Runs from a stored report's provenance, whatever reasonable shape it was saved in.

    Accepted: a list of record dicts (``source`` + ``start``/``end`` or
    ``text``), a list of ``[start, end, source]`` triples, or a dict holding
    such a list under ``runs``/``records``/``tokens``. Anything else gives no
    runs (the text is still shown, just uncoloured) rather than an error.
    """
    if isinstance(provenance, dict):
        for key in ("runs", "records", "tokens", "spans"):
            if isinstance(provenance.get(key), list):
                return runs_from_stored(provenance[key], text)
        return []
    if not isinstance(provenance, list) or not provenance:
        return []
    first = provenance[0]
    if isinstance(first, (list, tuple)):
        runs = []
        for item in provenance:
            try:
                if isinstance(item[0], str):  # [source, start, end]
                    source, s, e = item[0], int(item[1]), int(item[2])
                else:  # [start, end, source, (verified)]
                    s, e, source = int(item[0]), int(item[1]), str(item[2])
                verified = bool(item[3]) if len(item) > 3 else source != "unverified"
            except (IndexError, TypeError, ValueError):
                return []
            if e > s:
                runs.append(Run(s, min(e, len(text)), source, verified))
        return runs
    if isinstance(first, dict):
        return runs_from_records(provenance, text)
    return []


def styled_text(text: str, runs: Iterable[Run]) -> Text:
    """The report text with each run in its provenance style (gaps stay plain)."""
    out = Text()
    pos = 0
    for r in sorted(runs, key=lambda r: r.start):
        if r.start < pos:
            continue  # overlapping junk: keep the first style
        if r.start > pos:
            out.append(text[pos:r.start])
        out.append(text[r.start:r.end], style=style_for(r.source, r.verified))
        pos = r.end
    if pos < len(text):
        out.append(text[pos:])
    return out


def source_counts(runs: Iterable[Run]) -> dict[str, int]:
    """Characters per provenance class (for a one-line summary under a stored report)."""
    counts: dict[str, int] = {}
    for r in runs:
        key = "unverified" if (r.source == "drafted" and not r.verified) else r.source
        counts[key] = counts.get(key, 0) + (r.end - r.start)
    return counts


def legend_text(*, person: bool = False) -> Text:
    """The colour key; ``person`` adds the colour of text a reviewer typed (shown only when there is some)."""
    t = Text()
    for i, (source, label) in enumerate(LEGEND + ((("person", "person"),) if person else ())):
        if i:
            t.append("  ")
        t.append("■ ", style=STYLES[source] or "default")
        t.append(label, style=STYLES[source])
    return t


class ProvenanceLegend(Static):
    """One line explaining the colours."""

    DEFAULT_CSS = "ProvenanceLegend { height: 1; }"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(legend_text(), **kwargs)

    def show_person(self, person: bool) -> None:
        self.update(legend_text(person=person))


class StreamingReport(Static):
    """Report text that grows chunk by chunk, each token in its provenance style.

    A Static holding a rich Text (not a RichLog) because tokens arrive mid-line
    and RichLog writes whole lines.
    """

    DEFAULT_CSS = "StreamingReport { height: auto; }"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("", **kwargs)
        self._text = Text()
        self._plain: list[str] = []

    @property
    def plain(self) -> str:
        return "".join(self._plain)

    @property
    def text(self) -> Text:
        """The styled text shown (a copy, for inspection)."""
        return self._text.copy()

    def clear(self) -> None:
        self._text = Text()
        self._plain = []
        self.update(self._text)

    def append_chunk(self, chunk: Any) -> None:
        """Add one engine Chunk (text + TokenRecords)."""
        records = list(_get(chunk, "tokens", []) or [])
        chunk_text = str(_get(chunk, "text", "") or "")
        joined = "".join(str(_get(r, "text", "") or "") for r in records)
        if records and joined == chunk_text:
            for r in records:
                t = str(_get(r, "text", "") or "")
                if t:
                    src = str(_get(r, "source", "oracle"))
                    self._text.append(t, style=style_for(src, bool(_get(r, "verified", src != "unverified"))))
        elif chunk_text:
            self._text.append(chunk_text)
        self._plain.append(chunk_text)
        self.update(self._text)

    def show(self, text: str, runs: Iterable[Run]) -> None:
        """Replace the content with a finished text (e.g. the Done text, which is authoritative)."""
        self._text = styled_text(text, runs)
        self._plain = [text]
        self.update(self._text)
