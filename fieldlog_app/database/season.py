"""The store side of a block's season (``vineyard.season`` does the arithmetic).

Reads the current finalized sightings through the store's public listing: drafts
are unfinished and superseded versions are history, so neither counts in a trend.
"""

from __future__ import annotations

from typing import Any

from vineyard.season import BlockSeason, block_season, blocks_with_alerts

# A season of weekly walks over a farm's blocks is a few thousand sightings; this
# only stops a runaway listing, it never truncates a real log.
MAX_SIGHTINGS = 200_000


def season_notes(store: Any) -> list[dict]:
    return store.list_sightings(status="finalized", limit=MAX_SIGHTINGS)


def blocks(store: Any, notes: list[dict] | None = None) -> list[str]:
    """Blocks with finalized sightings, as first written, sorted case-insensitively."""
    seen: dict[str, str] = {}
    for n in season_notes(store) if notes is None else notes:
        b = str(n.get("block") or "").strip()
        if b:
            seen.setdefault(b.lower(), b)
    return sorted(seen.values(), key=str.lower)


def season_of(store: Any, block: str, *, year: int | None = None, notes: list[dict] | None = None) -> BlockSeason:
    return block_season(season_notes(store) if notes is None else notes, block, year=year)


def alerts(store: Any, notes: list[dict] | None = None) -> list[BlockSeason]:
    """Blocks whose latest scouted week of some pest is above its threshold."""
    return blocks_with_alerts(season_notes(store) if notes is None else notes)
