"""The farm-office sync server's HTTP app (Starlette) over ``server.ServerDB``.

Endpoints (all JSON unless noted; every one but /v1/health needs ``Authorization: Bearer <device token>``;
a client address with too many failed authentications gets 429 for a while, and server_cli serves this app
with guard.py's connection deadlines and cap):

* ``GET  /v1/health``          liveness + limits (``protocol``, ``max_body_bytes``, ``max_items``)
* ``POST /v1/batches``         upload items (see protocol.py); answers receipts
* ``GET  /v1/items``           what the server holds (``?kind=&since=&limit=&payload=1&current=1``)
* ``GET  /v1/export.csv``      one row per observation of each current sighting (``?versions=all``)
* ``GET  /v1/export.geojson``  a Feature per current sighting (``?versions=all``)
* ``GET  /v1/office-checks``   the office model's checks of the calling device's own reports (``?since=``)

The three reads answer 403 to a device whose role is "sync" (the default): a handheld uploads, and
only a device registered with the "reader" role reads the farm's data back. The office's web page
(fieldlog_app/office, office users with sessions) is served at ``/`` by the same app.
"""

from __future__ import annotations

import io
import json
import logging
import os
from typing import Iterable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fieldlog_app.database.canonical import utc_now
from fieldlog_app.database.export import CSV_FIELDS
from fieldlog_app.database.export import write_csv as device_write_csv

from .guard import FailureLimiter
from .protocol import MAX_ITEMS, PROTOCOL, ProtocolError, parse_json, validate_batch
from .server import AuthError, BusyError, ServerDB

log = logging.getLogger("fieldlog.server")

DEFAULT_MAX_BODY = 2 * 1024 * 1024


# ---------------------------------------------------------------------------------- exports
SERVER_EXTRA_COLUMNS = ("device", "received_at", "office_status", "report_review", "report_reviewer", "report_text")
SERVER_CSV_FIELDS = CSV_FIELDS + list(SERVER_EXTRA_COLUMNS)


def write_csv(sightings: Iterable[dict], f) -> int:
    """Same columns as the device's export (fieldlog_app.database.export) plus device, received_at, the office's
    archive state and the latest report's review and text (repeated on each observation row of its sighting)."""
    return device_write_csv(sightings, f, extra=SERVER_EXTRA_COLUMNS)


def write_geojson(sightings: Iterable[dict], f) -> int:
    """FeatureCollection, one Feature per sighting; ``geometry`` is a Point [lon, lat] (RFC 7946 order)
    or null for a sighting without coordinates (RFC 7946 §3.2 allows unlocated features), so the
    office sees every sighting and a map simply skips the unlocated ones."""
    features = []
    for s in sightings:
        props = {k: v for k, v in s.items() if k not in ("lat", "lon")}
        props["pests"] = ", ".join(sorted({o.get("pest") for o in s.get("observations") or [] if o.get("pest")}))
        geometry = None
        if s.get("lat") is not None and s.get("lon") is not None:
            geometry = {"type": "Point", "coordinates": [s["lon"], s["lat"]]}
        features.append({"type": "Feature", "id": s["id"], "geometry": geometry, "properties": props})
    json.dump({"type": "FeatureCollection", "features": features}, f, ensure_ascii=False)
    f.write("\n")
    return len(features)


# ---------------------------------------------------------------------------------- HTTP app
def _error(status: int, code: str, message: str, headers: dict | None = None, **extra) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, **extra}, status_code=status, headers=headers)


def _auth_error(e: AuthError) -> JSONResponse:
    if e.status == 429:
        return _error(429, "too-many-requests", str(e), {"Retry-After": str(e.retry_after)})
    headers = {"WWW-Authenticate": 'Bearer realm="fieldlog"' + (', error="invalid_token"' if e.status == 401 else "")}
    return _error(e.status, "unauthorized" if e.status == 401 else "forbidden", str(e), headers)


def create_app(db: ServerDB | str | os.PathLike, *, max_body_bytes: int = DEFAULT_MAX_BODY,
               max_items: int = MAX_ITEMS, limiter: FailureLimiter | None = None, secure_cookies: bool = False,
               login_limiter: FailureLimiter | None = None) -> Starlette:
    """The ASGI app: the sync API under /v1 and the office's web page (fieldlog_app.office) at /.

    ``db`` is a ServerDB or a path (created on first use); ``limiter`` counts failed authentications
    per client address (guard.py; default: 10 at once, then 10 a minute), ``login_limiter`` failed
    office logins; ``secure_cookies`` marks the session cookie Secure (the office behind HTTPS)."""
    from fieldlog_app.office.web import SecurityHeaders, office_routes

    sdb = db if isinstance(db, ServerDB) else ServerDB(db)
    limiter = limiter or FailureLimiter()

    async def authenticate(request: Request, *, read: bool = False) -> str:
        """The device name of the request's token; ``read``: the farm's data, which only a reader device sees."""
        client = request.client.host if request.client else "unknown"
        wait = limiter.retry_after(client)
        if wait is not None:  # before the lookup: guessing costs the guesser, not the database
            raise AuthError(f"too many failed authentications from {client}; try again in {wait} s", 429, wait)
        try:
            name = await run_in_threadpool(sdb.authenticate, request.headers.get("authorization"))
        except AuthError:
            limiter.failed(client)
            raise
        if read and await run_in_threadpool(sdb.device_role, name) != "reader":
            # a lost handheld must not carry the whole farm's data off; the office page has it
            raise AuthError(f"device {name!r} may upload but not read the farm's data (its role is 'sync'; "
                            "`fieldlog-server add-device NAME --replace --role reader` allows it)", 403)
        return name

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "service": "fieldlog-server", "protocol": PROTOCOL,
                             "max_body_bytes": max_body_bytes, "max_items": max_items, "time": utc_now()})

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                if int(declared) > max_body_bytes:
                    raise _TooLarge(int(declared), partial=False)
            except ValueError:
                raise ProtocolError("invalid Content-Length header", status=400) from None
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise _TooLarge(size)
            chunks.append(chunk)
        return b"".join(chunks)

    async def post_batch(request: Request) -> Response:
        try:
            device = await authenticate(request)
        except AuthError as e:
            return _auth_error(e)
        ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if ctype != "application/json":
            return _error(415, "unsupported-media-type", f"send the batch as application/json, not {ctype!r}")
        try:
            body = await read_body(request)
            batch_id, items = validate_batch(parse_json(body), max_items=max_items)
        except _TooLarge as e:
            return _error(413, "too-large",
                          f"request body is larger than {max_body_bytes} bytes (got {e.size}{'+' if e.partial else ''}); "
                          "send fewer items per batch", max_body_bytes=max_body_bytes)
        except ProtocolError as e:
            return JSONResponse(e.to_json(), status_code=e.status)
        except ClientDisconnect:
            log.info("client %s disconnected mid-upload; nothing stored", device)
            return Response(status_code=400)  # nobody is listening; uvicorn drops it
        try:
            result = await run_in_threadpool(sdb.ingest, items, device=device, source="http", batch_id=batch_id)
        except BusyError as e:
            return _error(503, "busy", str(e), headers={"Retry-After": "1"})
        if result.conflicts:
            n = len(result.conflicts)
            return _error(409, "conflict",
                          f"{n} item(s) conflict with what the server holds; nothing in this batch was stored. "
                          f"First: {result.conflicts[0].message}",
                          conflicts=[c.to_json() for c in result.conflicts])
        log.info("device %s: batch %s, %d accepted, %d duplicate", device, batch_id, result.accepted,
                 result.duplicate)
        return JSONResponse({"batch_id": batch_id, "device": device, "received_at": result.received_at,
                             "accepted": result.accepted, "duplicate": result.duplicate,
                             "receipts": result.receipts})

    def _int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
        raw = request.query_params.get(name)
        if raw is None or raw == "":
            return default
        try:
            v = int(raw)
        except ValueError:
            raise ProtocolError(f"{name}: expected an integer, got {raw!r}") from None
        if not lo <= v <= hi:
            raise ProtocolError(f"{name}: {v} is out of range ({lo}..{hi})")
        return v

    def _bool_param(request: Request, name: str) -> bool:
        return request.query_params.get(name, "").lower() in ("1", "true", "yes", "all")

    async def get_items(request: Request) -> Response:
        try:
            await authenticate(request, read=True)
            kind = request.query_params.get("kind") or None
            if kind is not None and kind not in ("sighting", "report"):
                raise ProtocolError(f"kind: {kind!r} is not one of sighting, report")
            since = _int_param(request, "since", 0, 0, 2**62)
            limit = _int_param(request, "limit", 1000, 1, 10_000)
        except AuthError as e:
            return _auth_error(e)
        except ProtocolError as e:
            return JSONResponse(e.to_json(), status_code=e.status)
        rows = await run_in_threadpool(
            sdb.list_items, kind=kind, since=since, limit=limit, current=_bool_param(request, "current"),
            with_payload=_bool_param(request, "payload"),
        )
        return JSONResponse({"items": rows, "next_since": rows[-1]["server_seq"] if len(rows) == limit else None})

    def _export(fmt: str):
        async def endpoint(request: Request) -> Response:
            try:
                await authenticate(request, read=True)
            except AuthError as e:
                return _auth_error(e)
            all_versions = request.query_params.get("versions", "current") == "all"
            sightings = await run_in_threadpool(sdb.export_sightings, all_versions=all_versions)
            buf = io.StringIO(newline="")
            if fmt == "csv":
                write_csv(sightings, buf)
                media = "text/csv; charset=utf-8"
            else:
                write_geojson(sightings, buf)
                media = "application/geo+json"
            return Response(buf.getvalue(), media_type=media, headers={
                "Content-Disposition": f'attachment; filename="fieldlog-sightings.{fmt}"'})
        return endpoint

    async def get_office_checks(request: Request) -> Response:
        """The office model's checks of this device's own reports (the way back to the handheld): a sync
        token suffices, since a device sees only what was said of what it uploaded."""
        try:
            device = await authenticate(request)
        except AuthError as e:
            return _auth_error(e)
        since = request.query_params.get("since", "")
        if len(since) > 40:
            return _error(400, "bad-request", "since: expected the updated_at of the last check seen")
        from fieldlog_app.office.check_queue import checks_for_device

        rows = await run_in_threadpool(checks_for_device, sdb, device, since)
        return JSONResponse({"checks": [{k: r[k] for k in ("report_id", "status", "model", "checked_at", "findings",
                                                            "updated_at", "office_version", "office_version_pending")}
                                        for r in rows]})

    async def http_error(request: Request, exc: HTTPException) -> Response:
        return _error(exc.status_code, "http-error", str(exc.detail), headers=getattr(exc, "headers", None))

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "internal", "internal server error; the batch was not stored")

    return Starlette(
        routes=[
            Route("/v1/health", health, methods=["GET"]),
            Route("/v1/batches", post_batch, methods=["POST"]),
            Route("/v1/items", get_items, methods=["GET"]),
            Route("/v1/export.csv", _export("csv"), methods=["GET"]),
            Route("/v1/export.geojson", _export("geojson"), methods=["GET"]),
            Route("/v1/office-checks", get_office_checks, methods=["GET"]),
            *office_routes(sdb, secure_cookies=secure_cookies, login_limiter=login_limiter),
        ],
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )


class _TooLarge(Exception):
    def __init__(self, size: int, partial: bool = True):
        self.size = size
        self.partial = partial
