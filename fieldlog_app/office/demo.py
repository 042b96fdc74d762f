"""A small farm's season at the office, for tests, screenshots and trying the page (``fieldlog-server demo-office``).

Everything goes the way real data does: sightings and reports are made in a
device Store, uploaded through ``ServerDB.ingest`` from its outbox, and one edit
that conflicts is logged as a 409 would be.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from fieldlog_app.database import Store
from fieldlog_app.sync.protocol import validate_item
from fieldlog_app.sync.server import ServerDB

from .accounts import Office

PASSWORD = "demo-password-1"  # the demo's users (manager "maria", viewer "victor"); never a real office's

# (date, leafhopper nymphs counted on 20 leaves, berry-moth damaged clusters of 50, note)
SEASON = [
    ("2026-06-09", 12, 0, "first leafhopper nymphs on the lower leaves"),
    ("2026-06-23", 40, 1, "leafhopper rising, still under the guide"),
    ("2026-07-07", 85, 2, "nymphs on most leaves; check again in a week"),
    ("2026-07-16", 130, 4, "leafhopper above 5 per leaf; berry moth window open"),
    ("2026-07-28", 90, 5, "after the spray: fewer nymphs, berry moth damage at 10%"),
    ("2026-08-18", 30, 6, "second generation berry moth, 12% clusters damaged"),
]


def _upload(sdb: ServerDB, store: Store, device: str) -> None:
    items = []
    for r in store.outbox_items():
        item, errors = validate_item({"item_id": r["item_id"], "kind": r["kind"], "replaces": r["replaces"],
                                      "sha256": r["sha256"], "payload": json.loads(r["payload"])})
        if errors:
            raise ValueError(f"demo item does not validate: {errors}")
        items.append(item)
    result = sdb.ingest(items, device=device, source="http")
    if result.conflicts:
        raise ValueError(f"demo upload conflicts: {result.conflicts[0].message}")


def report_text(date: str, block: str, nymphs: float) -> tuple[str, list, list]:
    """A report text with provenance runs (drafted, corrected, unverified, data) and, for one, a finding."""
    parts = [("data", f"Block {block}, {date}. "), ("drafted", "Grape leafhopper nymphs average "),
             ("data", f"{nymphs:g} per leaf"), ("oracle", ", "),
             ("corrected" if nymphs > 5 else "drafted", "above" if nymphs > 5 else "below"),
             ("drafted", " the informal guide of 5 per leaf. "),
             ("unverified", "Re-scout the block in seven days.")]
    text, prov, pos = "", [], 0
    for source, piece in parts:
        prov.append([pos, pos + len(piece), source])
        text += piece
        pos += len(piece)
    findings = []
    if nymphs > 6:  # one report with an integrity finding to review
        start = text.index("seven")
        findings = [{"kind": "unsupported-claim", "message": "the note gives no re-scout interval", "start": start,
                     "end": start + len("seven days"), "severity": "warning", "text": "seven days", "expected": []}]
    return text, prov, findings


def seed(sdb: ServerDB, *, device: str = "handheld-1", other: str = "handheld-2", users: bool = True) -> dict:
    """Fill ``sdb`` with one block's season from ``device`` (with reports), a sighting from ``other`` and a
    logged conflict; returns ids and tokens for tests."""
    tokens = {device: sdb.add_device(device), other: sdb.add_device(other)}
    store = Store(":memory:")
    ids, reports = [], []
    for date, nymphs, moth, note in SEASON:
        sid = store.save_draft({
            "block": "B4", "variety": "Riesling", "rows": "1-12", "date": date, "time": "09:30", "scout": "Ana Ruiz",
            "weather": "24C, dry", "notes": note, "lat": 42.61, "lon": -76.9,
            "observations": [
                {"pest": "grape leafhopper", "life_stage": "nymph", "unit": "leaves", "sampled": 20, "count": nymphs},
                {"pest": "grape berry moth", "life_stage": "larva", "unit": "clusters", "sampled": 50,
                 "infested": moth},
            ]})
        store.finalize(sid)
        ids.append(sid)
        text, prov, findings = report_text(date, "B4", nymphs / 20)
        reports.append(store.save_report(sid, text=text, model_pair={"oracle": "demo", "drafter": "demo"},
                                         policy={}, stats={"accepted": 0.8}, provenance=prov, spans=[],
                                         findings=findings))
    revised = store.revise(ids[2], {"notes": "nymphs on most leaves; spray booked for 07-14"})
    _upload(sdb, store, device)
    store.close()

    store2 = Store(":memory:")
    sid2 = store2.save_draft({"block": "A1", "variety": "Merlot", "rows": "3-8", "date": "2026-07-20", "scout": "Ben Ode",
                              "weather": "20C, humid", "notes": "powdery mildew on a few leaves", "observations": [
                                  {"pest": "powdery mildew", "life_stage": "colonies", "unit": "leaves", "sampled": 30, "infested": 2}]})
    store2.finalize(sid2)
    _upload(sdb, store2, other)
    store2.close()
    # what a 409 leaves behind: an edit of a version the office holds a newer one of (the device's copy was old)
    from fieldlog_app.sync.server import Conflict
    sdb._log_conflicts(other, [Conflict(0, "7d3c2a10-0000-4000-8000-000000000001", "sighting", "0" * 64, "stale-edit",
                                        "this edit replaces an old version; the server's current version is newer")],
                       "2026-07-21T08:00:00Z")
    out = {"sightings": ids, "revised": revised, "reports": reports, "other_sighting": sid2, "tokens": tokens}
    if users:
        office = Office(sdb)
        office.add_user("maria", PASSWORD, "manager")
        office.add_user("victor", PASSWORD, "viewer")
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m fieldlog_app.office.demo DB``: a fresh demo office database (refuses an existing file)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m fieldlog_app.office.demo NEW_DB_PATH", file=sys.stderr)
        return 2
    path = Path(args[0])
    if path.exists():
        print(f"{path} exists; the demo only fills a new database", file=sys.stderr)
        return 1
    seed(ServerDB(os.fspath(path)))
    print(f"demo office in {path}: log in as maria (manager) or victor (viewer), password {PASSWORD!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
