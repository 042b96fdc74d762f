"""The handheld's position from gpsd (Linux handhelds run it for their GPS receiver), for the sighting form.

One question per key press: connect to gpsd (``$FIELDLOG_GPSD`` as ``HOST:PORT``, default gpsd's own
``127.0.0.1:2947``), watch its reports through ``gpsdclient`` and take the first TPV (time-position-velocity)
report with a 2D or 3D fix. Accuracy is gpsd's ``eph`` (its estimated horizontal error in metres), else the
larger of ``epx``/``epy``; none when gpsd gives neither. Every way of not getting a position is a ``GpsError``
whose message the form shows as it is; nothing here can crash the app.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

ENV_GPSD = "FIELDLOG_GPSD"
DEFAULT_ADDRESS = ("127.0.0.1", 2947)
FIX_WAIT_S = 10.0  # a receiver that just woke up needs a few seconds; longer and the scout types it in


class GpsError(Exception):
    """No position: gpsd is not there, has no fix yet, or answered something else (the message says which)."""


@dataclass(frozen=True)
class Fix:
    lat: float
    lon: float
    accuracy_m: float | None


def gpsd_address() -> tuple[str, int]:
    """(host, port) of gpsd: ``$FIELDLOG_GPSD`` (``HOST:PORT`` or ``HOST``) or gpsd's default."""
    raw = os.environ.get(ENV_GPSD, "").strip()
    if not raw:
        return DEFAULT_ADDRESS
    host, sep, port = raw.rpartition(":")
    if not sep:
        return raw, DEFAULT_ADDRESS[1]
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise GpsError(f"{ENV_GPSD}={raw!r}: expected HOST:PORT (e.g. 127.0.0.1:2947)")
    return host or DEFAULT_ADDRESS[0], int(port)


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def fix_of(report: dict) -> Fix | None:
    """The position in one gpsd report, or None when it is not a TPV with a fix."""
    if report.get("class") != "TPV" or not isinstance(report.get("mode"), int) or report["mode"] < 2:
        return None
    lat, lon = _number(report.get("lat")), _number(report.get("lon"))
    if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    acc = _number(report.get("eph"))
    if acc is None:
        parts = [v for v in (_number(report.get("epx")), _number(report.get("epy"))) if v is not None]
        acc = max(parts) if parts else None
    return Fix(lat, lon, round(acc, 1) if acc is not None and acc >= 0 else None)


def read_fix(address: tuple[str, int] | None = None, *, wait_s: float = FIX_WAIT_S) -> Fix:
    """The first fix gpsd reports within ``wait_s`` seconds; GpsError otherwise."""
    from gpsdclient import GPSDClient

    host, port = address or gpsd_address()
    where = f"{host}:{port}"
    deadline = time.monotonic() + wait_s
    client = GPSDClient(host, port, timeout=wait_s)
    try:
        for report in client.dict_stream(convert_datetime=False, filter=["TPV"]):
            fix = fix_of(report)
            if fix is not None:
                return fix
            if time.monotonic() > deadline:
                break
    except ConnectionRefusedError:
        raise GpsError(f"gpsd is not running at {where} (no GPS receiver on this device?)") from None
    except (socket.timeout, TimeoutError):
        raise GpsError(f"gpsd at {where} gave no position within {wait_s:g} s; try again under open sky") from None
    except OSError as e:  # gpsdclient says EnvironmentError when the other end is not gpsd
        raise GpsError(f"cannot read gpsd at {where}: {e}".split("\n")[0]) from None
    except ValueError as e:  # a line that is not JSON
        raise GpsError(f"gpsd at {where} sent something that is not a gpsd report ({e})") from None
    finally:
        client.close()
    raise GpsError(f"gpsd at {where} has no fix yet (waited {wait_s:g} s); try again under open sky")
