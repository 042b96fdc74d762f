"""The reports of the fieldlog store: saved with the sighting version they were written from, reviewed
as new versions (an edit, an approval, a flag), read back with their provenance and review history and
with the office model's verdict fetched at sync.

A mixin of ``Store`` (store.py): its methods run inside the store's lock and transactions."""

from __future__ import annotations

import json
import uuid
from typing import Any, Iterable

from vineyard import FieldNoteError, fieldnote, review

from . import office_checks as _office
from .canonical import canonical_json, jsonable, payload_sha256
from .errors import NotFoundError, StateError, ValidationError
from .guard import guarded
from .payloads import note_of, report_payload
from .queries import _like_escape
from .validation import check_uuid, validate_text_field

REPORT_STATUSES = ("complete", "cancelled", "failed")
REVIEW_STATUSES = review.REVIEW_STATUSES
MAX_REPORT_TEXT = 200_000  # the sync protocol's limit: a longer report could never reach the office
REPORT_JSON = ("model_pair", "policy", "stats", "provenance", "spans", "findings")


class ReportMethods:
    def _latest_report_id(self, sid: str) -> str | None:
        r = self._one(
            "SELECT id FROM reports WHERE sighting_id = ? AND status = 'complete' ORDER BY created_at DESC, rowid DESC LIMIT 1",
            (sid,),
        )
        return r["id"] if r else None

    @guarded
    def find_report_id(self, prefix: str) -> str:
        """A report id from a full id or a unique prefix (>= 4 characters), as for sightings."""
        prefix = (prefix or "").strip().lower()
        if len(prefix) < 4:
            raise ValidationError("report id: give at least 4 characters")
        rows = self._rows("SELECT id FROM reports WHERE id LIKE ? ESCAPE '\\' LIMIT 2", (_like_escape(prefix) + "%",))
        if not rows:
            raise NotFoundError(f"no report with id {prefix}")
        if len(rows) > 1:
            raise ValidationError(f"report id: {prefix!r} matches more than one report; give more characters")
        return rows[0]["id"]

    def _decode_report(self, r: dict, *, drop: tuple[str, ...] = ()) -> dict:
        out = {k: v for k, v in r.items() if k not in drop}
        for key in REPORT_JSON:
            if key in out:
                out[key] = json.loads(out[key]) if out[key] is not None else None
        if "clean" in out:
            out["clean"] = bool(out["clean"])
        return out

    @guarded
    def save_report(
        self,
        sighting_id: str,
        *,
        text: str,
        model_pair: dict,
        policy: dict,
        stats: dict,
        provenance: list | dict,
        spans: list,
        findings: list,
        status: str = "complete",
    ) -> str:
        """Store a generated report (immutable); returns its id.

        A complete report of a finalized sighting is queued for sync in the same
        transaction. One made from a draft waits and is queued when that draft is
        finalized unchanged (a report of other content would be misleading).
        Cancelled/failed reports stay on the device.
        """
        if status not in REPORT_STATUSES:
            raise ValidationError(f"status: {status!r} is not one of {', '.join(REPORT_STATUSES)}")
        if not isinstance(text, str):
            raise ValidationError(f"text: expected text, got {type(text).__name__}")
        values: dict[str, Any] = {}
        for name, value, types in (
            ("model_pair", model_pair, (dict,)),
            ("policy", policy, (dict,)),
            ("stats", stats, (dict,)),
            ("provenance", provenance, (list, dict)),
            ("spans", spans, (list,)),
            ("findings", findings, (list,)),
        ):
            try:
                v = jsonable(value if value is not None else types[0](), name)
            except ValueError as e:
                raise ValidationError(str(e)) from None
            if not isinstance(v, types):
                want = " or ".join(t.__name__ for t in types)
                raise ValidationError(f"{name}: expected {want}, got {type(value).__name__}")
            values[name] = v
        with self.transaction():
            row = self._require(sighting_id)
            sid = row["id"]
            now = self._now()
            rid = str(uuid.uuid4())
            content_sha = row["content_sha256"] or payload_sha256(
                note_of(self._present(row, self._observations([sid])[sid]))
            )
            report = {
                "id": rid, "sighting_id": sid, "created_at": now, "status": status, "text": text,
                **values, "sighting_sha256": content_sha,
            }
            payload = report_payload(report)
            self.db["reports"].insert(
                {
                    **{k: report[k] for k in ("id", "sighting_id", "created_at", "status", "text", "sighting_sha256")},
                    **{k: canonical_json(values[k]) for k in REPORT_JSON},
                    "clean": payload["clean"],
                    "payload_sha256": payload_sha256(payload),
                }
            )
            if status == "complete" and row["status"] != "draft":
                self.outbox.enqueue("report", payload, now)
            self._audit(
                "report", rid, "create",
                {"sighting_id": sid, "status": status, "findings": len(values["findings"])}, now,
            )
        return rid

    @guarded
    def review_report(self, id: str, action: str, *, by: str, text: str | None = None, note: str | None = None) -> str:
        """A person's review of a report, as a new version of it (reports are immutable); returns its id.

        ``action``: ``"edit"`` (``text`` is the corrected report: the characters typed get provenance
        ``person``, the rest keep their tokens', and the span audit and fact check run again on the
        new text), ``"approve"`` or ``"flag"`` (``note`` says why); approving or flagging may carry a
        corrected ``text`` too. ``by`` names who. Only the latest version of a complete report can
        be reviewed. The new version is queued for the office like any report (its payload carries
        version, replaces, review_status, reviewed_by, reviewed_at, review_note).
        """
        if action not in ("edit", "approve", "flag"):
            raise ValidationError(f"action: {action!r} is not one of edit, approve, flag")
        who = validate_text_field(by, "reviewed_by", 200)
        if who is None:
            raise ValidationError("reviewed_by: required (who reviewed the report)")
        why = validate_text_field(note, "review_note", 2000)
        if text is not None and not isinstance(text, str):
            raise ValidationError(f"text: expected text, got {type(text).__name__}")
        if action == "edit" and (text is None or not text.strip()):
            raise ValidationError("text: required (the corrected report)")
        if text is not None and len(text) > MAX_REPORT_TEXT:
            raise ValidationError(f"text: too long ({len(text)} characters, max {MAX_REPORT_TEXT})")
        with self.transaction():
            old = self.get_report(id)
            rid = old["id"]
            if old["status"] != "complete":
                raise StateError(f"report {rid} is {old['status']}; only a complete report can be reviewed")
            nxt = self._one("SELECT id FROM reports WHERE replaces = ?", (rid,))
            if nxt is not None:
                raise StateError(f"report {rid} was already reviewed; review the latest version {self._latest_report_version(rid)}")
            row = self._require(old["sighting_id"])
            new_text = old["text"] if text is None else text
            edited = new_text != old["text"]
            if action == "edit" and not edited:
                raise ValidationError("text: unchanged; approve or flag the report instead")
            values = {k: old.get(k) for k in REPORT_JSON}
            if edited:
                values["provenance"] = review.edit_provenance(old["text"], old.get("provenance"), new_text)
                sighting = note_of(self._present(row, self._observations([row["id"]])[row["id"]]))
                try:
                    checked = review.recheck(new_text, fieldnote.validate(sighting, check_rows=False), values["provenance"])
                except FieldNoteError as e:
                    raise StateError(f"the sighting of this report is not a complete field note ({e})") from None
                values.update(checked)
            status = {"edit": "edited", "approve": "approved", "flag": "flagged"}[action]
            now = self._now()
            new_id = str(uuid.uuid4())
            report = {
                "id": new_id, "sighting_id": old["sighting_id"], "created_at": now, "status": "complete",
                "text": new_text, **values, "sighting_sha256": old["sighting_sha256"],
                "version": int(old.get("version") or 1) + 1, "replaces": rid, "review_status": status,
                "reviewed_by": who, "reviewed_at": now, "review_note": why,
            }
            payload = report_payload(report)
            self.db["reports"].insert({
                **{k: report[k] for k in ("id", "sighting_id", "created_at", "status", "text", "sighting_sha256",
                                          "version", "replaces", "review_status", "reviewed_by", "reviewed_at",
                                          "review_note")},
                **{k: canonical_json(values[k]) if values[k] is not None else None for k in REPORT_JSON},
                "clean": payload["clean"],
                "payload_sha256": payload_sha256(payload),
            })
            if row["status"] != "draft":
                self.outbox.enqueue("report", payload, now)
            self._audit("report", new_id, "review", {
                "action": action, "by": who, "replaces": rid, "version": report["version"], "edited": edited,
                "findings": len(values.get("findings") or []), "note": why,
            }, now)
        return new_id

    def _latest_report_version(self, rid: str) -> str:
        return self._latest_in_chain("reports", rid)

    @guarded
    def report_versions(self, id: str) -> list[dict]:
        """Every version of the report ``id`` belongs to, oldest first (its review history), in full."""
        first = self.get_report(id)
        first.pop("office", None)  # every version as stored, alike
        seen = {first["id"]}
        while first.get("replaces") and first["replaces"] not in seen:
            prev = self._one("SELECT * FROM reports WHERE id = ?", (first["replaces"],))
            if prev is None:
                break
            seen.add(prev["id"])
            first = self._decode_report(prev)
        chain = [first]
        while True:
            nxt = self._one("SELECT * FROM reports WHERE replaces = ?", (chain[-1]["id"],))
            if nxt is None or nxt["id"] in {c["id"] for c in chain}:
                break
            chain.append(self._decode_report(nxt))
        return chain

    @guarded
    def get_report(self, id: str) -> dict:
        rid = check_uuid(id, "report id")
        r = self._one("SELECT * FROM reports WHERE id = ?", (rid,))
        if r is None:
            raise NotFoundError(f"no report with id {rid}")
        out = self._decode_report(r)
        # whether, and by which model, the office checked it (office_checks.py); not part of the payload
        out["office"] = self._office_of([rid]).get(rid)
        return out

    @guarded
    def reports_for(self, sighting_id: str) -> list[dict]:
        """Every report of one sighting version, newest first, in full."""
        sid = self._require(sighting_id)["id"]
        rows = self._rows("SELECT * FROM reports WHERE sighting_id = ? ORDER BY created_at DESC, rowid DESC", (sid,))
        return [self._decode_report(r) for r in rows]

    @guarded
    def list_reports(
        self,
        *,
        sighting_id: str | None = None,
        status: str | None = None,
        block: str | None = None,
        clean: bool | None = None,
        limit: int = 500,
    ) -> list[dict]:
        """Reports newest first, without the bulky provenance/spans (use get_report for those),
        with the sighting's block, date and status for a table view."""
        where, params = ["1"], []
        if sighting_id is not None:
            where.append("r.sighting_id = ?")
            params.append(check_uuid(sighting_id, "sighting id"))
        if status is not None:
            if status not in REPORT_STATUSES:
                raise ValidationError(f"status: {status!r} is not one of {', '.join(REPORT_STATUSES)}")
            where.append("r.status = ?")
            params.append(status)
        if block:
            where.append("s.block = ? COLLATE NOCASE")
            params.append(str(block).strip())
        if clean is not None:
            where.append("r.clean = ?")
            params.append(1 if clean else 0)
        rows = self._rows(
            "SELECT r.*, s.block AS block, s.date AS date, s.status AS sighting_status "
            f"FROM reports r JOIN sightings s ON s.id = r.sighting_id WHERE {' AND '.join(where)} "
            "ORDER BY r.created_at DESC, r.rowid DESC LIMIT ?",
            [*params, int(limit)],
        )
        return [self._decode_report(r, drop=("provenance", "spans")) for r in rows]

    # ------------------------------------------------------------------ the office's verdicts (office_checks.py)
    @guarded
    def save_office_checks(self, checks: list) -> dict:
        """Store the office model's checks fetched at sync, in one transaction. A check of a report this device
        does not hold, or one older than the stored one, is skipped; a malformed one is refused with its reason
        and the others are still kept. ``{"saved", "skipped", "errors"}``."""
        if not isinstance(checks, list):
            raise ValidationError("office checks: expected a list")
        saved, skipped, errors = 0, 0, []
        now = self._now()
        with self.transaction():
            for c in checks:
                try:
                    row = _office.normalise(c)
                except _office.OfficeCheckError as e:
                    errors.append(str(e))
                    continue
                have = self._one("SELECT r.id, c.updated_at FROM reports r LEFT JOIN office_checks c "
                                 "ON c.report_id = r.id WHERE r.id = ?", (row["report_id"],))
                if have is None or (have["updated_at"] or "") >= row["updated_at"]:
                    skipped += 1
                    continue
                version = row["office_version"]
                self.db["office_checks"].upsert({**row, "findings": canonical_json(row["findings"]),
                                                 "office_version": canonical_json(version) if version else None,
                                                 "office_version_pending": int(row["office_version_pending"]),
                                                 "received_at": now}, pk="report_id")
                saved += 1
            if saved:
                self._audit("office", "office-checks", "receive", {"saved": saved, "skipped": skipped,
                                                                   "errors": len(errors)}, now)
        return {"saved": saved, "skipped": skipped, "errors": errors}

    @guarded
    def office_checks_since(self) -> str:
        """The newest ``updated_at`` of the stored checks: what the next fetch asks for (``since=``)."""
        row = self._one("SELECT MAX(updated_at) AS m FROM office_checks")
        return (row or {}).get("m") or ""

    def _office_of(self, report_ids: list[str]) -> dict[str, dict]:
        rows = self._rows(
            "SELECT r.id AS rid, o.state AS outbox_state, c.* FROM reports r "
            "LEFT JOIN outbox o ON o.item_id = r.id LEFT JOIN office_checks c ON c.report_id = r.id "
            "WHERE r.id IN (SELECT value FROM json_each(?))", (json.dumps(report_ids),))
        out = {}
        for r in rows:
            check = None
            if r["report_id"] is not None:
                check = {k: r[k] for k in ("status", "model", "checked_at", "updated_at", "received_at")}
                check["findings"] = json.loads(r["findings"] or "[]")
                check["office_version"] = json.loads(r["office_version"]) if r["office_version"] else None
                check["office_version_pending"] = bool(r["office_version_pending"]) and not check["office_version"]
            sent = r["outbox_state"] == "sent"
            out[r["rid"]] = {"state": _office.state_of(check, sent), "line": _office.describe(check, sent),
                             "check": check}
        return out

    @guarded
    def office_awaiting(self) -> int:
        """How many sent reports have no verdict from the office yet, one the office could not give, or an office
        version the office said is coming (the sync asks for them; a checked report is not asked about again)."""
        row = self._one("SELECT COUNT(*) AS n FROM outbox o LEFT JOIN office_checks c ON c.report_id = o.item_id "
                        "WHERE o.kind = 'report' AND o.state = 'sent' AND (c.status IS NULL OR c.status <> 'checked'"
                        " OR (c.office_version_pending = 1 AND c.office_version IS NULL))")
        return row["n"]

    @guarded
    def office_states(self, report_ids: Iterable[str]) -> dict[str, str | None]:
        """report id -> its office state (awaiting, error, agrees, disputed; None: not sent yet)."""
        return {rid: v["state"] for rid, v in self._office_of([str(r) for r in report_ids]).items()}
