"""The sync wire format (protocol 1) and its validator, shared by client, server and bundles.

A batch is one JSON object::

    {"protocol": 1, "batch_id": "<uuid>",
     "items": [{"item_id": "<uuid>", "kind": "sighting" | "report", "replaces": "<uuid>" | null,
                "sha256": "<64 hex>", "payload": {...}}]}

``payload`` is the frozen outbox payload as a JSON object; ``sha256`` is the
sha256 of its canonical JSON (``fieldlog_app.database.canonical_json``). The
server recomputes it, so a payload damaged in transit or on an SD card is
refused instead of stored under the device's hash.

A receipt, returned per item once the server has committed it::

    {"item_id", "kind", "sha256", "status": "accepted" | "duplicate", "server_seq", "received_at"}

Why a hand-written validator instead of JSON Schema: the rules that matter are
cross-field (``infested <= sampled``, lat and lon together, ``payload.id ==
item_id``, a report never ``replaces``), the messages must name the exact
field for the user (``items[3].payload.observations[0].sampled: ...``), and it
reuses the device's own field lists and limits so server and handheld can never
disagree about what a valid sighting is. It also avoids a new dependency.
Unknown keys are rejected, never dropped: a newer device talking to an older
server gets a clear 422 instead of silently losing a field.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from vineyard import FieldNoteError, fieldnote
from fieldlog_app.database.canonical import canonical_json, payload_sha256
from fieldlog_app.database.payloads import REPORT_FIELDS, REVIEW_FIELDS, SIGHTING_META
from fieldlog_app.database.validation import DEFAULT_MAX_LEN, GEO_FIELDS, MAX_COUNT, MAX_LEN, OBS_FIELDS, TEXT_FIELDS

__all__ = [
    "PROTOCOL", "KINDS", "RECEIPT_STATUSES", "MAX_ITEMS", "MAX_ERRORS", "Item", "ProtocolError",
    "canonical_json", "payload_sha256", "parse_json", "validate_batch", "validate_item", "validate_receipt",
    "item_to_wire",
]

PROTOCOL = 1
KINDS = ("sighting", "report")
RECEIPT_STATUSES = ("accepted", "duplicate")
MAX_ITEMS = 500            # per batch; a device never needs more and it bounds server work per request
MAX_ERRORS = 50            # per response: enough to fix a client, not a megabyte of messages
MAX_REPORT_TEXT = 200_000  # characters
# Every integer the server stores in an INTEGER column is bounded far below SQLite's 2**63 - 1;
# a sighting revised a million times is not a sighting.
MAX_VERSION = 1_000_000
REPORT_STATUSES = ("complete", "cancelled", "failed")

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ITEM_KEYS = frozenset({"item_id", "kind", "replaces", "sha256", "payload"})
_SIGHTING_KEYS = frozenset(TEXT_FIELDS + GEO_FIELDS + ("observations",) + SIGHTING_META)
_SIGHTING_REQUIRED = ("id", "version", "replaces", "created_at", "observations")
_REPORT_KEYS = frozenset(REPORT_FIELDS + ("clean",) + REVIEW_FIELDS)
REVIEW_STATUSES = ("generated", "edited", "approved", "flagged")
_REPORT_REQUIRED = ("id", "sighting_id", "created_at", "status", "text", "clean")
_OBS_TEXT = ("pest", "life_stage", "unit")


class ProtocolError(ValueError):
    """A request that does not follow the protocol.

    ``status`` is the HTTP status to answer with (400 unparseable, 422 wrong
    shape/types); ``errors`` lists ``{"index", "item_id", "field", "message"}``
    so a client can tell which items are at fault.
    """

    def __init__(self, message: str, errors: list[dict] | None = None, status: int = 422):
        super().__init__(message)
        self.message = message
        self.errors = errors or []
        self.status = status

    def to_json(self) -> dict:
        return {"error": "bad-request" if self.status == 400 else "invalid", "message": self.message,
                "errors": self.errors[:MAX_ERRORS]}


@dataclass(frozen=True)
class Item:
    """One validated batch/bundle item."""

    item_id: str
    kind: str
    replaces: str | None
    sha256: str
    payload: dict

    @property
    def payload_json(self) -> str:
        return canonical_json(self.payload)

    @property
    def version(self) -> int | None:
        return self.payload.get("version") if self.kind == "sighting" else None


def item_to_wire(item_id: str, kind: str, replaces: str | None, sha256: str, payload: dict) -> dict:
    """The JSON object for one item (what the client sends and a bundle line holds)."""
    return {"item_id": item_id, "kind": kind, "replaces": replaces, "sha256": sha256, "payload": payload}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    v = float(text)
    if v in (float("inf"), float("-inf")):  # 1e400: valid JSON syntax, but no finite double
        raise ValueError(f"the number {text[:40]} is out of range")
    return v


def parse_json(raw: bytes | str) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity (Python accepts them; they would not hash the same
    everywhere); raises ProtocolError(status=400) with the parser's position."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw
    except UnicodeDecodeError as e:
        raise ProtocolError(f"the body is not UTF-8 text ({e.reason} at byte {e.start})", status=400) from None
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except json.JSONDecodeError as e:
        raise ProtocolError(f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}", status=400) from None
    except ValueError as e:
        raise ProtocolError(f"malformed JSON: {e}", status=400) from None
    except RecursionError:
        raise ProtocolError("malformed JSON: nested too deeply", status=400) from None


# ---------------------------------------------------------------------------------- field checks
# Each check returns an error message or None; the caller prefixes the path.

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and v not in (float("inf"), float("-inf"))


def _short(v: Any) -> str:
    """repr for a message, cut short: a hostile 4000-digit number must not fill the answer."""
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _type_name(v: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null",
            int: "integer", float: "number"}.get(type(v), type(v).__name__)


def _uuid_error(v: Any) -> str | None:
    if not isinstance(v, str):
        return f"expected a UUID string, got {_type_name(v)}"
    try:
        canon = str(uuid.UUID(v))
    except ValueError:
        return f"{v[:60]!r} is not a UUID"
    if canon != v:
        # One spelling only, or the same item could be stored twice under two ids.
        return f"{v!r} is not in canonical form (lowercase, hyphenated: {canon})"
    return None


def _timestamp_error(v: Any) -> str | None:
    if not isinstance(v, str):
        return f"expected an ISO-8601 timestamp string, got {_type_name(v)}"
    try:
        _dt.datetime.fromisoformat(v)
    except ValueError:
        return f"{v[:60]!r} is not an ISO-8601 timestamp"
    return None


class _Errors:
    """Collects errors with a path prefix; stops collecting past MAX_ERRORS."""

    def __init__(self) -> None:
        self.items: list[dict] = []

    def add(self, index: int | None, item_id: Any, field: str, message: str) -> None:
        if len(self.items) < MAX_ERRORS:
            self.items.append({
                "index": index,
                "item_id": item_id if isinstance(item_id, str) else None,
                "field": field,
                "message": f"{field}: {message}",
            })


def _check_text(p: dict, key: str, where: str, err) -> None:
    v = p.get(key)
    if v is None:
        return
    if not isinstance(v, str):
        err(f"{where}.{key}", f"expected a string, got {_type_name(v)}")
        return
    limit = MAX_LEN.get(key, DEFAULT_MAX_LEN)
    if len(v) > limit:
        err(f"{where}.{key}", f"too long ({len(v)} characters, max {limit})")


def _check_number(p: dict, key: str, where: str, err, *, integer: bool = False, lo: float | None = None,
                  hi: float | None = None) -> None:
    v = p.get(key)
    if v is None:
        return
    if not (_is_int(v) if integer else _is_num(v)):
        err(f"{where}.{key}", f"expected {'an integer' if integer else 'a number'}, got {_type_name(v)}")
        return
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        err(f"{where}.{key}", f"{_short(v)} is out of range ({rng})")


def _validate_sighting(p: dict, item_id: str, replaces: Any, where: str, err_) -> None:
    found: list[str] = []

    def err(f: str, message: str) -> None:
        found.append(f)
        err_(f, message)

    for key in sorted(set(p) - _SIGHTING_KEYS):
        err(f"{where}.{key}", "unknown field")
    for key in _SIGHTING_REQUIRED:
        if key not in p:
            err(f"{where}.{key}", "required")
    if "id" in p and p["id"] != item_id:
        err(f"{where}.id", f"{p['id']!r} differs from item_id {item_id!r}")
    if "replaces" in p and p["replaces"] != replaces:
        err(f"{where}.replaces", f"{p['replaces']!r} differs from the item's replaces {replaces!r}")
    v = p.get("version")
    if "version" in p:
        if not _is_int(v) or not 1 <= v <= MAX_VERSION:
            err(f"{where}.version", f"expected an integer 1..{MAX_VERSION}, got {_short(v)}")
        elif (v == 1) != (p.get("replaces") is None):
            err(f"{where}.version", "version 1 replaces nothing; a later version must name the one it replaces")
    for key in ("created_at", "finalized_at"):
        if key in p and (p[key] is not None or key == "created_at"):
            msg = _timestamp_error(p[key])
            if msg:
                err(f"{where}.{key}", msg)
    for key in TEXT_FIELDS:
        _check_text(p, key, where, err)
    _check_number(p, "lat", where, err, lo=-90, hi=90)
    _check_number(p, "lon", where, err, lo=-180, hi=180)
    _check_number(p, "accuracy_m", where, err, lo=0)
    obs = p.get("observations")
    if "observations" in p and not isinstance(obs, list):
        err(f"{where}.observations", f"expected an array, got {_type_name(obs)}")
        obs = None
    for i, o in enumerate(obs or []):
        ow = f"{where}.observations[{i}]"
        if not isinstance(o, dict):
            err(ow, f"expected an object, got {_type_name(o)}")
            continue
        for key in sorted(set(o) - set(OBS_FIELDS)):
            err(f"{ow}.{key}", "unknown field")
        for key in _OBS_TEXT:
            _check_text(o, key, ow, err)
        _check_number(o, "sampled", ow, err, integer=True, lo=1, hi=MAX_COUNT)
        _check_number(o, "infested", ow, err, integer=True, lo=0, hi=MAX_COUNT)
        _check_number(o, "count", ow, err, integer=True, lo=0, hi=MAX_COUNT)
        _check_number(o, "severity_pct", ow, err, lo=0, hi=100)
        _check_number(o, "defoliation_pct", ow, err, lo=0, hi=100)
    if found:
        return  # types are wrong: the semantic checks below would only repeat them
    # The field-note rules the device applied at finalize (required fields,
    # infested <= sampled, ISO date ...): the same function, so they cannot drift.
    note = {k: p[k] for k in TEXT_FIELDS + GEO_FIELDS + ("observations",) if k in p}
    try:
        # check_rows=False: a sighting an older app finalized with rows "20-5" must still sync, not stick
        norm = fieldnote.validate(note, check_rows=False)
    except FieldNoteError as e:
        msg = str(e)
        field, _, rest = msg.partition(": ")
        err(f"{where}.{field}" if rest else where, rest or msg)
    else:
        # fieldnote accepts "High" and "" (unset); a payload holds the one spelling the device
        # stores (lower case, or the key left out), so equal notes hash equally.
        risk = p.get("risk_class")
        if risk is not None and risk != norm.get("risk_class"):
            err(f"{where}.risk_class",
                f"{risk[:40]!r} is not one of {', '.join(fieldnote.RISK_CLASSES)} (lower case; leave it out when not set)")
    if p.get("time") is not None:
        try:
            _dt.time.fromisoformat(p["time"])
        except ValueError:
            err(f"{where}.time", f"{p['time'][:20]!r} is not a time (HH:MM)")
    if (p.get("lat") is None) != (p.get("lon") is None):
        err(f"{where}.{'lon' if p.get('lon') is None else 'lat'}", "required when the other coordinate is given")


def _validate_report(p: dict, item_id: str, replaces: Any, where: str, err) -> None:
    for key in sorted(set(p) - _REPORT_KEYS):
        err(f"{where}.{key}", "unknown field")
    for key in _REPORT_REQUIRED:
        if key not in p:
            err(f"{where}.{key}", "required")
    if replaces is not None:
        err(f"{where[:-len('.payload')]}.replaces", "a report never replaces anything (reports are immutable)")
    if "id" in p and p["id"] != item_id:
        err(f"{where}.id", f"{p['id']!r} differs from item_id {item_id!r}")
    if "sighting_id" in p:
        msg = _uuid_error(p["sighting_id"])
        if msg:
            err(f"{where}.sighting_id", msg)
    if "created_at" in p:
        msg = _timestamp_error(p["created_at"])
        if msg:
            err(f"{where}.created_at", msg)
    if "status" in p and p["status"] not in REPORT_STATUSES:
        err(f"{where}.status", f"{p['status']!r} is not one of {', '.join(REPORT_STATUSES)}")
    if "text" in p:
        t = p["text"]
        if not isinstance(t, str):
            err(f"{where}.text", f"expected a string, got {_type_name(t)}")
        elif len(t) > MAX_REPORT_TEXT:
            err(f"{where}.text", f"too long ({len(t)} characters, max {MAX_REPORT_TEXT})")
    if "clean" in p and not isinstance(p["clean"], bool):
        err(f"{where}.clean", f"expected a boolean, got {_type_name(p['clean'])}")
    for key, types, names in (
        ("model_pair", (dict,), "an object"), ("policy", (dict,), "an object"), ("stats", (dict,), "an object"),
        ("provenance", (list, dict), "an array or object"), ("spans", (list,), "an array"),
        ("findings", (list,), "an array"),
    ):
        v = p.get(key)
        if v is not None and not isinstance(v, types):
            err(f"{where}.{key}", f"expected {names} or null, got {_type_name(v)}")
    s = p.get("sighting_sha256")
    if s is not None and not (isinstance(s, str) and _HEX64.match(s)):
        err(f"{where}.sighting_sha256", "expected 64 lowercase hex digits or null")
    if any(k in p for k in REVIEW_FIELDS):
        _validate_review(p, item_id, where, err)


def _validate_review(p: dict, item_id: str, where: str, err) -> None:
    """A reviewed version of a report (vineyard.review): the version it replaces inside the payload (the
    item's own ``replaces`` stays null: the office keeps every version as its own report), who and when."""
    for key in ("version", "replaces", "review_status", "reviewed_by", "reviewed_at"):
        if key not in p:
            err(f"{where}.{key}", "required in a reviewed report")
    v = p.get("version")
    if "version" in p and (not _is_int(v) or not 1 <= v <= MAX_VERSION):
        err(f"{where}.version", f"expected an integer 1..{MAX_VERSION}, got {_short(v)}")
    rep = p.get("replaces")
    if rep is not None:
        msg = _uuid_error(rep)
        if msg:
            err(f"{where}.replaces", msg)
        elif rep == item_id:
            err(f"{where}.replaces", "a report version cannot replace itself")
    if _is_int(v) and "replaces" in p and (v == 1) != (rep is None):
        err(f"{where}.version", "version 1 replaces nothing; a later version must name the one it replaces")
    status = p.get("review_status")
    if "review_status" in p and status not in REVIEW_STATUSES:
        err(f"{where}.review_status", f"{_short(status)} is not one of {', '.join(REVIEW_STATUSES)}")
    if status not in (None, "generated"):
        if not (isinstance(p.get("reviewed_by"), str) and p["reviewed_by"].strip()):
            err(f"{where}.reviewed_by", "required: who reviewed the report")
        if p.get("reviewed_at") is None:
            err(f"{where}.reviewed_at", "required: when the report was reviewed")
    _check_text(p, "reviewed_by", where, err)
    if p.get("reviewed_at") is not None:
        msg = _timestamp_error(p["reviewed_at"])
        if msg:
            err(f"{where}.reviewed_at", msg)
    note = p.get("review_note")
    if note is not None and not (isinstance(note, str) and len(note) <= 2000):
        err(f"{where}.review_note", "expected a string of at most 2000 characters or null")


def validate_item(obj: Any, index: int | None = None, *, field: str | None = None) -> tuple[Item | None, list[dict]]:
    """Validate one item; returns (Item, []) or (None, errors)."""
    errors = _Errors()
    where = field or (f"items[{index}]" if index is not None else "item")
    item_id = obj.get("item_id") if isinstance(obj, dict) else None

    def err(f: str, message: str) -> None:
        errors.add(index, item_id, f, message)

    if not isinstance(obj, dict):
        err(where, f"expected an object, got {_type_name(obj)}")
        return None, errors.items
    for key in sorted(set(obj) - _ITEM_KEYS):
        err(f"{where}.{key}", "unknown field")
    for key in sorted(_ITEM_KEYS - set(obj)):
        err(f"{where}.{key}", "required")
    if errors.items:
        return None, errors.items
    msg = _uuid_error(obj["item_id"])
    if msg:
        err(f"{where}.item_id", msg)
    if obj["kind"] not in KINDS:
        err(f"{where}.kind", f"{obj['kind']!r} is not one of {', '.join(KINDS)}")
    if obj["replaces"] is not None:
        msg = _uuid_error(obj["replaces"])
        if msg:
            err(f"{where}.replaces", msg)
        elif obj["replaces"] == obj["item_id"]:
            err(f"{where}.replaces", "an item cannot replace itself")
    sha = obj["sha256"]
    if not (isinstance(sha, str) and _HEX64.match(sha)):
        err(f"{where}.sha256", "expected 64 lowercase hex digits")
    payload = obj["payload"]
    if not isinstance(payload, dict):
        err(f"{where}.payload", f"expected an object, got {_type_name(payload)}")
    if errors.items:
        return None, errors.items
    if obj["kind"] == "sighting":
        _validate_sighting(payload, obj["item_id"], obj["replaces"], f"{where}.payload", err)
    else:
        _validate_report(payload, obj["item_id"], obj["replaces"], f"{where}.payload", err)
    if errors.items:
        return None, errors.items
    try:
        actual = payload_sha256(payload)
    except (ValueError, TypeError) as e:
        err(f"{where}.payload", f"cannot be hashed: {e}")
        return None, errors.items
    if actual != sha:
        err(f"{where}.sha256", f"does not match the payload (payload hashes to {actual}); damaged in transit?")
        return None, errors.items
    return Item(obj["item_id"], obj["kind"], obj["replaces"], sha, payload), []


def validate_batch(obj: Any, *, max_items: int = MAX_ITEMS) -> tuple[str | None, list[Item]]:
    """Validate a whole batch; returns (batch_id, items) or raises ProtocolError listing every bad item."""
    if not isinstance(obj, dict):
        raise ProtocolError(f"a batch is a JSON object, got {_type_name(obj)}",
                            [{"index": None, "item_id": None, "field": "", "message": "expected an object"}])
    errors = _Errors()
    for key in sorted(set(obj) - {"protocol", "batch_id", "items"}):
        errors.add(None, None, key, "unknown field")
    if not (_is_int(obj.get("protocol")) and obj["protocol"] == PROTOCOL):  # True == 1 in Python, not here
        errors.add(None, None, "protocol", f"this server speaks protocol {PROTOCOL}, got {_short(obj.get('protocol'))}")
    batch_id = obj.get("batch_id")
    if batch_id is not None:
        msg = _uuid_error(batch_id)
        if msg:
            errors.add(None, None, "batch_id", msg)
    items = obj.get("items")
    if not isinstance(items, list):
        errors.add(None, None, "items", f"expected an array, got {_type_name(items)}")
    elif not items:
        errors.add(None, None, "items", "empty batch")
    elif len(items) > max_items:
        errors.add(None, None, "items", f"too many items ({len(items)}, max {max_items} per batch)")
    if errors.items:
        raise ProtocolError(errors.items[0]["message"], errors.items)
    out: list[Item] = []
    for i, raw in enumerate(items):
        item, errs = validate_item(raw, i)
        for e in errs:
            if len(errors.items) < MAX_ERRORS:
                errors.items.append(e)
        if item is not None:
            out.append(item)
    if errors.items:
        n_bad = len({e["index"] for e in errors.items})
        raise ProtocolError(f"{n_bad} of {len(items)} item(s) invalid; first: {errors.items[0]['message']}",
                            errors.items)
    return batch_id, out


def validate_receipt(obj: Any) -> str | None:
    """None when ``obj`` is a well-formed receipt, else what is wrong (client side)."""
    if not isinstance(obj, dict):
        return f"a receipt is an object, got {_type_name(obj)}"
    for key in ("item_id", "sha256", "status", "server_seq", "received_at"):
        if key not in obj:
            return f"receipt without {key}"
    if obj["status"] not in RECEIPT_STATUSES:
        return f"receipt status {obj['status']!r} is not one of {', '.join(RECEIPT_STATUSES)}"
    if not _is_int(obj["server_seq"]):
        return "receipt server_seq is not an integer"
    return None
