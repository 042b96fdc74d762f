"""The farm office model's verdict on this device's reports, as the device keeps it (table ``office_checks``, v5).

The office server checks every synced report with its larger model (fieldlog_app/office/check.py) and a sync
fetches the results back (``GET /v1/office-checks``). What arrives is the server's word, so each check is
validated here before it is stored: a malformed one is refused with its reason and the rest are kept.

A report's office state, as the log and the report screen show it:

* ``None``      not sent to the office yet (nothing to wait for);
* ``awaiting``  sent, no verdict yet (the office model has not checked it, or could not be reached);
* ``error``     the office could not check it (a broken answer from its model; the office retries on request);
* ``agrees``    checked, no disagreement past the office's margin;
* ``disputed``  checked, with disagreements (each one an integrity finding: "office model would write …").

A check may carry the office model's own version of the report (``office_version``: its id, model, time and
text; fieldlog_app/office/rewrite.py), and ``office_version_pending`` when the office said one is coming (it
rewrites disputed reports by policy): the sync keeps asking until it arrives.
"""

from __future__ import annotations

import uuid
from typing import Any

STATUSES = ("awaiting", "checked", "error")
MAX_FINDINGS = 50          # the office sends at most 20; more is not a check this app made sense of
MAX_TEXT = 1000            # a finding's message or quoted text
MAX_VERSION_TEXT = 20_000  # the office's version of a report (a report is ~1-2 thousand characters)
FINDING_KEYS = ("kind", "severity", "field", "span_kind", "start", "end", "written", "office", "gap_nats", "message")


class OfficeCheckError(ValueError):
    """One check from the office is not in the shape this app stores."""


def _text(value: Any, where: str, limit: int, *, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value) or len(value) > limit:
        raise OfficeCheckError(f"{where}: expected text of at most {limit} characters")
    return value


def normalise(check: Any) -> dict:
    """A check from ``GET /v1/office-checks`` as stored: the known keys, validated; OfficeCheckError otherwise."""
    if not isinstance(check, dict):
        raise OfficeCheckError("a check is not an object")
    try:
        rid = str(uuid.UUID(str(check.get("report_id"))))
    except (ValueError, TypeError):
        raise OfficeCheckError(f"report_id: {str(check.get('report_id'))[:60]!r} is not a UUID") from None
    status = check.get("status")
    if status not in STATUSES:
        raise OfficeCheckError(f"{rid}: status {str(status)[:40]!r} is not one of {', '.join(STATUSES)}")
    findings = check.get("findings")
    if not isinstance(findings, list) or len(findings) > MAX_FINDINGS:
        raise OfficeCheckError(f"{rid}: findings is not a list of at most {MAX_FINDINGS}")
    kept = []
    for i, f in enumerate(findings):
        if not isinstance(f, dict) or not isinstance(f.get("message"), str):
            raise OfficeCheckError(f"{rid}: findings[{i}] has no message")
        out = {}
        for k in FINDING_KEYS:
            v = f.get(k)
            if isinstance(v, str):
                out[k] = v[:MAX_TEXT]
            elif isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 1e9:
                out[k] = v
        kept.append(out)
    pending = check.get("office_version_pending", False)
    if not isinstance(pending, bool):
        raise OfficeCheckError(f"{rid}: office_version_pending is not true or false")
    return {
        "report_id": rid, "status": status,
        "model": _text(check.get("model"), f"{rid}: model", 200),
        "checked_at": _text(check.get("checked_at"), f"{rid}: checked_at", 40),
        "findings": kept,
        "updated_at": _text(check.get("updated_at"), f"{rid}: updated_at", 40, required=True),
        "office_version": _version(check.get("office_version"), rid),
        "office_version_pending": pending,
    }


def _version(v: Any, rid: str) -> dict | None:
    if v is None:
        return None
    if not isinstance(v, dict):
        raise OfficeCheckError(f"{rid}: office_version is not an object")
    try:
        vid = str(uuid.UUID(str(v.get("report_id"))))
    except (ValueError, TypeError):
        raise OfficeCheckError(f"{rid}: office_version.report_id is not a UUID") from None
    return {"report_id": vid, "model": _text(v.get("model"), f"{rid}: office_version.model", 200),
            "created_at": _text(v.get("created_at"), f"{rid}: office_version.created_at", 40),
            "text": _text(v.get("text"), f"{rid}: office_version.text", MAX_VERSION_TEXT, required=True)}


def state_of(check: dict | None, sent: bool) -> str | None:
    """The report's office state (module docstring) from its stored check and whether it was sent."""
    if check is None:
        return "awaiting" if sent else None
    if check["status"] == "checked":
        return "disputed" if check.get("findings") else "agrees"
    return check["status"]


def describe(check: dict | None, sent: bool) -> str:
    """One line for the report screen: "checked at the office by MODEL: agrees", or what is awaited."""
    state = state_of(check, sent)
    if state is None:
        return "not sent to the office yet"
    if state == "awaiting":
        return "awaiting office check"
    if state == "error":
        return "the office could not check it (its model gave no usable answer)"
    model = (check or {}).get("model") or "the office model"
    if check.get("office_version"):
        after = "; the office model's own version is below"
    elif check.get("office_version_pending"):
        after = "; the office model's own version is to come"
    else:
        after = ""
    if state == "agrees":
        return f"checked at the office by {model}: agrees{after}"
    n = len(check["findings"])
    return f"checked at the office by {model}: {n} disagreement{'s' if n != 1 else ''}{after}"
