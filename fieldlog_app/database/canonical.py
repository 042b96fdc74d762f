"""Canonical JSON and hashes: the bytes that identify a frozen sighting/report version.

The outbox, the sync server and the conflict check all compare sha256 of these
bytes, so there is exactly one way to serialise: sorted keys, no whitespace,
UTF-8, and no NaN/Infinity (which are not JSON and would not round-trip).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import math
from typing import Any


def canonical_json(obj: Any) -> str:
    """``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``; rejects NaN."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def payload_sha256(obj: Any) -> str:
    """sha256 (hex) of the UTF-8 canonical JSON of ``obj``."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: valid JSON syntax, but no finite double
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def strict_loads(text: str | bytes) -> Any:
    """``json.loads`` for untrusted input: no NaN/Infinity, no number that overflows a double, and
    nesting too deep for the parser is a ValueError ("nested too deeply"), not a RecursionError.
    Every failure is a ValueError (``json.JSONDecodeError`` for syntax, with its position)."""
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def jsonable(obj: Any, where: str = "value") -> Any:
    """Plain JSON types from dataclasses/tuples (engine stats, token records), or ValueError naming ``where``."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        to_dict = getattr(obj, "to_dict", None)
        return jsonable(to_dict() if callable(to_dict) else dataclasses.asdict(obj), where)
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise ValueError(f"{where}: keys must be strings, got {k!r}")
            out[k] = jsonable(v, f"{where}.{k}")
        return out
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, float):
        if obj != obj or obj in (float("inf"), float("-inf")):
            raise ValueError(f"{where}: {obj!r} is not a finite number")
        return obj
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalar
        return jsonable(obj.item(), where)
    raise ValueError(f"{where}: {type(obj).__name__} is not JSON-serialisable")


def utc_now() -> str:
    """ISO-8601 UTC timestamp with milliseconds, e.g. ``2026-07-21T14:03:09.123Z`` (sorts as text)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
