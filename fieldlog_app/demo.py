"""Demo data for ``fieldlog --demo``: the vineyard sample field notes, so a newcomer
sees a populated log (and can generate a report) the moment the app opens, and
block B4's 20-week sample season (``vineyard/samples/season/``), so the season
screen has a season to show."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from .database.demo_mark import mark_demo

DEMO_DRAFT = {
    "block": "C1",
    "variety": "Chardonnay",
    "rows": "10-14",
    "date": "2026-07-22",
    "scout": "M. Ortiz",
    "observations": [{"pest": "powdery mildew", "life_stage": "colonies", "unit": "leaves"}],
    "notes": "Started counting, interrupted by rain - finish tomorrow.",
}


def sample_notes_path():
    """A Traversable for vineyard/samples/notes.jsonl (works installed or from a checkout)."""
    return resources.files("vineyard").joinpath("samples", "notes.jsonl")


def season_notes() -> list[dict]:
    """The sample season's weekly notes (vineyard/samples/season/week*.json), in order."""
    folder = resources.files("vineyard").joinpath("samples", "season")
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".json")), key=lambda f: f.name)
    return [json.loads(f.read_text(encoding="utf-8")) for f in files]


def seed_demo(store: Any, *, season: bool = False) -> int:
    """Fill an *empty* store with the sample notes (finalized) and one unfinished draft, and
    with ``season`` also block B4's sample season (weeks the sample notes already cover skipped).

    Returns how many sightings were added; 0 when the store already has any, so
    ``fieldlog --demo`` can be started again and again without duplicates. A seeded
    store is marked as the demo's (``database/demo_mark.py``): it never syncs.
    """
    counts = store.counts()
    if counts["draft"] + counts["finalized"] + counts["superseded"]:
        return 0
    with resources.as_file(sample_notes_path()) as path:
        result = store.import_notes(path)
    added = result.imported
    if season:
        have = {(str(s["block"]).lower(), s["date"]) for s in store.list_sightings(status="finalized", limit=10_000)}
        for note in season_notes():
            if (note["block"].lower(), note["date"]) not in have:
                store.finalize(store.save_draft(note))
                added += 1
    store.save_draft(DEMO_DRAFT)
    mark_demo(store)  # sample data never syncs to a farm office (sync and bundle export refuse it)
    return added + 1
