"""Reading the fieldlog store: the log's filters (block, pest by catalog entry, dates, status, words),
full-text search with snippets, ids typed as prefixes.

A mixin of ``Store`` (store.py)."""

from __future__ import annotations

import datetime as _dt
import json
import re
from typing import Iterable

from vineyard.pests import canonical_name

from .errors import NotFoundError, ValidationError
from .guard import guarded
from .validation import fold

SIGHTING_STATUSES = ("draft", "finalized", "superseded")


def _like_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def fts_query(text: str) -> str | None:
    """A user's words as a safe FTS5 query: every word must match, as a prefix.

    Quoting each token means punctuation and words like NOT/OR are plain text,
    so no user input can raise an FTS syntax error. The query is NFKC-folded first, so
    full-width letters typed on an East Asian keyboard ("ｍｏｔｈ") search as "moth".
    """

    tokens = re.findall(r"\w+", fold(text or ""))
    if not tokens:
        return None
    return " ".join('"' + t.replace('"', '""') + '"*' for t in tokens)


class QueryMethods:
    SNIPPET_MARKS = ("«", "»")  # around matched words in search snippets (not Textual markup on purpose)

    @guarded
    def find_sighting_id(self, prefix: str) -> str:
        """Resolve a full id or a unique prefix (>= 4 characters) as typed on a command line."""
        prefix = (prefix or "").strip().lower()
        if len(prefix) < 4:
            raise ValidationError("sighting id: give at least 4 characters")
        rows = self._rows(
            "SELECT id FROM sightings WHERE id LIKE ? ESCAPE '\\' LIMIT 2", (_like_escape(prefix) + "%",)
        )
        if not rows:
            raise NotFoundError(f"no sighting with id {prefix}")
        if len(rows) > 1:
            raise ValidationError(f"sighting id: {prefix!r} matches more than one sighting; give more characters")
        return rows[0]["id"]

    @guarded
    def list_sightings(
        self,
        *,
        block: str | None = None,
        pest: str | None = None,
        date_from: str | None = None,
        date_to: str | None = None,
        status: str | Iterable[str] | None = None,
        query: str | None = None,
        include_superseded: bool = False,
        limit: int = 500,
    ) -> list[dict]:
        """Sightings newest first, with observations and latest_report_id.

        ``pest`` matches part of a pest name, case-insensitive ("mildew" finds both
        mildews); ``query`` is a full-text search over notes, pests, block, scout.
        Superseded versions are hidden unless asked for (they are history).
        """
        where, params = self._sighting_filters(
            block=block, pest=pest, date_from=date_from, date_to=date_to, status=status,
            query=query, include_superseded=include_superseded,
        )
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValidationError(f"limit: expected a positive whole number, got {limit!r}")
        rows = self._rows(
            f"SELECT s.* FROM sightings s WHERE {where} "
            "ORDER BY s.date DESC, s.time DESC, s.created_at DESC LIMIT ?",
            [*params, limit],
        )
        return self._with_details(rows)

    def _with_details(self, rows: list[dict]) -> list[dict]:
        obs = self._observations([r["id"] for r in rows])
        latest = {
            r["sighting_id"]: r["id"]
            for r in self._rows(
                "SELECT sighting_id, id FROM reports WHERE status = 'complete' "
                "AND sighting_id IN (SELECT value FROM json_each(?)) ORDER BY created_at, rowid",
                (json.dumps([r["id"] for r in rows]),),
            )
        }
        out = []
        for r in rows:
            s = self._present(r, obs[r["id"]])
            s["latest_report_id"] = latest.get(r["id"])
            out.append(s)
        return out

    def _sighting_filters(self, *, block, pest, date_from, date_to, status, query, include_superseded):
        where, params = ["1"], []
        if block:
            where.append("s.block = ? COLLATE NOCASE")
            params.append(str(block).strip())
        if pest:
            # part of the name as typed or of its catalog name, any case ("mildew" finds both mildews,
            # "moth" finds "berry moht"), or the same catalog entry ("GBM" finds "berry moht")
            typed = fold(str(pest)).strip()
            where.append(
                "EXISTS (SELECT 1 FROM observations o WHERE o.sighting_id = s.id AND (fieldlog_fold(o.pest) LIKE ? ESCAPE '\\'"
                " OR fieldlog_pest(o.pest) LIKE ? ESCAPE '\\' OR (? IS NOT NULL AND fieldlog_pest(o.pest) = ?)))"
            )
            canon = canonical_name(typed)
            like = "%" + _like_escape(typed) + "%"
            params += [like, like, canon, canon]
        for name, value, op in (("date_from", date_from, ">="), ("date_to", date_to, "<=")):
            if value:
                try:
                    _dt.date.fromisoformat(str(value))
                except ValueError:
                    raise ValidationError(f"{name}: {value!r} is not an ISO date (YYYY-MM-DD)") from None
                where.append(f"s.date {op} ?")
                params.append(str(value))
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            for st in statuses:
                if st not in SIGHTING_STATUSES:
                    raise ValidationError(f"status: {st!r} is not one of {', '.join(SIGHTING_STATUSES)}")
            where.append(f"s.status IN ({', '.join('?' * len(statuses))})")
            params.extend(statuses)
        elif not include_superseded:
            where.append("s.status <> 'superseded'")
        if query is not None and str(query).strip():
            q = fts_query(str(query))
            if q is None:
                where.append("0")
            else:
                where.append("s.rowid IN (SELECT rowid FROM sightings_fts WHERE sightings_fts MATCH ?)")
                params.append(q)
        return " AND ".join(where), params

    @guarded
    def search(self, query: str, limit: int = 50, *, include_superseded: bool = False) -> list[dict]:
        """Full-text search over sightings (notes, pests, block, variety, scout, weather) and report text.

        Each word must match (as a prefix, stemmed). Results, best first:
        ``{kind, id, sighting_id, snippet, rank, block, date, status}``; rank is
        FTS5 bm25 (lower is better). Superseded versions and their reports are
        left out unless ``include_superseded``: search shows the log as it stands.
        """
        q = fts_query(query)
        if q is None:
            return []
        a, b = self.SNIPPET_MARKS
        hide = "" if include_superseded else "AND s.status <> 'superseded'"
        # a report a person has reviewed since is history too: search shows its latest version
        hide_reviewed = "" if include_superseded else "AND NOT EXISTS (SELECT 1 FROM reports n WHERE n.replaces = r.id)"
        sightings = self._rows(
            f"""SELECT 'sighting' AS kind, s.id AS id, s.id AS sighting_id,
                       snippet(sightings_fts, -1, ?, ?, '…', 12) AS snippet, bm25(sightings_fts) AS rank,
                       s.block AS block, s.date AS date, s.status AS status
                FROM sightings_fts JOIN sightings s ON s.rowid = sightings_fts.rowid
                WHERE sightings_fts MATCH ? {hide} ORDER BY rank LIMIT ?""",
            (a, b, q, limit),
        )
        reports = self._rows(
            f"""SELECT 'report' AS kind, r.id AS id, r.sighting_id AS sighting_id,
                       snippet(reports_fts, -1, ?, ?, '…', 12) AS snippet, bm25(reports_fts) AS rank,
                       s.block AS block, s.date AS date, s.status AS status
                FROM reports_fts JOIN reports r ON r.rowid = reports_fts.rowid
                JOIN sightings s ON s.id = r.sighting_id
                WHERE reports_fts MATCH ? {hide} {hide_reviewed} ORDER BY rank LIMIT ?""",
            (a, b, q, limit),
        )
        return sorted(sightings + reports, key=lambda r: r["rank"])[:limit]
