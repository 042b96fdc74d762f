"""The office web page: server-rendered (Jinja2) pages over the server's database, for office users.

No build step, no CDN, no script at all: templates and the stylesheet are read
from this package, so an office without internet works the same. Every page and
asset needs a session except the login page and its stylesheet. Every response
carries a Content-Security-Policy without 'unsafe-inline' and with
frame-ancestors 'none' (``SecurityHeaders``, applied to the whole server).

Forms are plain ``application/x-www-form-urlencoded`` posts, read with a size
cap and parsed by the standard library; each carries the session's CSRF token
(the login form a cookie-bound one), and the session cookie is HttpOnly and
SameSite=Strict (Secure when the server is told it sits behind HTTPS).
"""

from __future__ import annotations

import datetime as _dt
import hmac
import io
import logging
import secrets
import unicodedata
from importlib import resources
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs, urlencode

import jinja2
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from fieldlog_app.sync.guard import FailureLimiter
from fieldlog_app.sync.app import write_csv, write_geojson
from fieldlog_app.sync.server import ServerDB, ServerError
from fieldlog_app.widgets.provenance import LEGEND, runs_from_stored

from . import chart
from .accounts import MARK_STATES, REVIEW_STATUSES, Office, Session

log = logging.getLogger("fieldlog.office")

SESSION_COOKIE = "fl_session"
LOGIN_CSRF_COOKIE = "fl_login_csrf"
MAX_FORM_BYTES = 16 * 1024
PUBLIC_ASSETS = frozenset({"office.css"})  # what the login page needs; every other asset needs a session
ASSET_TYPES = {".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; "
       "frame-ancestors 'none'")
SIGHTING_STATUSES = ("", "unreviewed", "approved", "flagged", "no-report", "archived")

_env = jinja2.Environment(loader=jinja2.PackageLoader("fieldlog_app.office", "templates"),
                          autoescape=jinja2.select_autoescape(["html"]), undefined=jinja2.ChainableUndefined,
                          trim_blocks=True, lstrip_blocks=True)


class SecurityHeaders:
    """ASGI middleware: the page's security headers on every response (API answers included)."""

    HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
               (b"x-frame-options", b"DENY"), (b"referrer-policy", b"no-referrer"),
               (b"cross-origin-opener-policy", b"same-origin")]

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [h for h in self.HEADERS if h[0] not in have]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class FormError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def fold(text: Any) -> str:
    """Search key: NFKC (full-width letters become ASCII) and case-folded."""
    return unicodedata.normalize("NFKC", str(text or "")).casefold()


def payload_review(payload: dict) -> dict | None:
    """A review the report payload itself carries (a device-side review, if the protocol has one), read
    defensively: a dict under ``review`` or flat ``review_status``/``reviewer``/``reviewed_at`` keys."""
    r = payload.get("review")
    if not isinstance(r, dict):
        r = {"status": payload.get("review_status"), "reviewer": payload.get("reviewer"),
             "at": payload.get("reviewed_at")}
    status = r.get("status")
    if not isinstance(status, str) or not status:
        return None

    def text(v: Any) -> str:
        return v[:120] if isinstance(v, str) else ""

    return {"status": status[:40], "reviewer": text(r.get("reviewer") or r.get("by")),
            "at": text(r.get("at") or r.get("reviewed_at"))}


def report_html_runs(payload: dict) -> list[tuple[str, str]]:
    """(css class, text) pieces of the report text in its provenance colours (the app's classes)."""
    text = payload.get("text") if isinstance(payload.get("text"), str) else ""
    runs = runs_from_stored(payload.get("provenance"), text)
    pieces, pos = [], 0
    for r in sorted(runs, key=lambda r: r.start):
        if r.start < pos:
            continue
        if r.start > pos:
            pieces.append(("", text[pos:r.start]))
        source = "unverified" if (r.source == "drafted" and not r.verified) else r.source
        pieces.append((f"prov-{source}" if source in {s for s, _ in LEGEND} | {"data"} else "", text[r.start:r.end]))
        pos = r.end
    if pos < len(text):
        pieces.append(("", text[pos:]))
    return pieces


def findings_of(payload: dict) -> list[dict]:
    text = payload.get("text") if isinstance(payload.get("text"), str) else ""
    out = []
    for f in payload.get("findings") or []:
        if not isinstance(f, dict):
            out.append({"kind": "finding", "message": str(f)[:500], "excerpt": "", "severity": ""})
            continue
        s, e = f.get("start"), f.get("end")
        excerpt = text[s:e] if isinstance(s, int) and isinstance(e, int) and 0 <= s < e <= len(text) else ""
        out.append({"kind": str(f.get("kind") or "finding")[:60], "message": str(f.get("message") or "")[:500],
                    "excerpt": excerpt[:200], "severity": str(f.get("severity") or "")[:20]})
    return out


def rewrite_of(sdb: ServerDB, report_id: str) -> dict | None:
    """The office model's version of a report (fieldlog_app/office/rewrite.py), if one was written."""
    from .rewrite import rewrite_of as _of

    return _of(sdb, report_id)


def office_check_of(sdb: ServerDB, report_id: str) -> dict:
    """The office model's check of a report (fieldlog_app/office/check.py), its findings shaped as findings_of's."""
    from .check_queue import check_of

    c = check_of(sdb, report_id)
    c["findings"] = findings_of({"findings": c["findings"]})
    return c


def _pests_of(s: dict) -> list[str]:
    return sorted({str(o.get("pest")) for o in s.get("observations") or [] if o.get("pest")})


def office_routes(sdb: ServerDB, *, secure_cookies: bool = False,
                  login_limiter: FailureLimiter | None = None) -> list[Route]:
    """The office's routes, mounted at / of the server's app."""
    office = Office(sdb)
    # failed logins per client address: 5 at once, then one a minute (a person retypes; a script guesses)
    login_limiter = login_limiter or FailureLimiter(burst=5, refill_s=60.0)

    def render(name: str, request: Request, session: Session | None, status: int = 200, **ctx) -> HTMLResponse:
        html = _env.get_template(name).render(request=request, session=session, user=session.user if session else None,
                                              csrf=session.csrf if session else "", legend=LEGEND, **ctx)
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})

    def set_cookie(resp: Response, key: str, value: str, max_age: int | None) -> None:
        resp.set_cookie(key, value, max_age=max_age, httponly=True, samesite="strict", secure=secure_cookies, path="/")

    async def read_form(request: Request) -> dict[str, str]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in ("application/x-www-form-urlencoded", ""):
            raise FormError(415, "send the form as application/x-www-form-urlencoded")
        body, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_FORM_BYTES:
                raise FormError(413, f"the form is larger than {MAX_FORM_BYTES} bytes")
            body.append(chunk)
        if size and not ctype:  # an empty form may come without a type; a body may not
            raise FormError(415, "send the form as application/x-www-form-urlencoded")
        try:
            parsed = parse_qs(b"".join(body).decode("utf-8"), keep_blank_values=True, max_num_fields=20)
        except (UnicodeDecodeError, ValueError) as e:
            raise FormError(400, f"unreadable form ({e})") from None
        return {k: v[0] for k, v in parsed.items()}

    def client_of(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    Handler = Callable[..., Awaitable[Response]]

    def page(*, manager: bool = False, post: bool = False) -> Callable[[Handler], Handler]:
        """A route that needs a session (else the login page, or 403 for a post), a manager when ``manager``,
        and for a post the session's CSRF token in the form."""
        def wrap(fn: Handler) -> Handler:
            async def endpoint(request: Request) -> Response:
                session = await run_in_threadpool(office.session, request.cookies.get(SESSION_COOKIE))
                if session is None:
                    if post:
                        return render("error.html", request, None, 403, message="log in first")
                    nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                    return RedirectResponse("/login?" + urlencode({"next": nxt}), status_code=303)
                form: dict[str, str] = {}
                if post:
                    try:
                        form = await read_form(request)
                    except FormError as e:
                        return render("error.html", request, session, e.status, message=str(e))
                    if not hmac.compare_digest(form.get("csrf", ""), session.csrf):
                        await run_in_threadpool(office.audit, session.user.name, "csrf-refused", request.url.path)
                        return render("error.html", request, session, 403,
                                      message="this form is stale or was not sent from the office page; reload and try again")
                if manager and not session.user.is_manager:
                    return render("error.html", request, session, 403,
                                  message=f"{session.user.name} is a viewer; only a manager may do this")
                try:
                    return await fn(request, session, form) if post else await fn(request, session)
                except ServerError as e:
                    return render("error.html", request, session, 400, message=str(e))
            return endpoint
        return wrap

    # ----------------------------------------------------------------------- login
    async def login_form(request: Request, message: str = "", status: int = 200) -> Response:
        token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)
        nxt = request.query_params.get("next", "")
        resp = render("login.html", request, None, status, login_csrf=token, message=message,
                      next=nxt if _safe_next(nxt) else "")
        set_cookie(resp, LOGIN_CSRF_COOKIE, token, 3600)
        return resp

    async def login_get(request: Request) -> Response:
        if await run_in_threadpool(office.session, request.cookies.get(SESSION_COOKIE)):
            return RedirectResponse("/sightings", status_code=303)
        return await login_form(request)

    async def login_post(request: Request) -> Response:
        client = client_of(request)
        wait = login_limiter.retry_after(client)
        if wait is not None:
            resp = await login_form(request, f"too many failed logins from {client}; try again in {wait} s", 429)
            resp.headers["Retry-After"] = str(wait)
            return resp
        try:
            form = await read_form(request)
        except FormError as e:
            return await login_form(request, str(e), e.status)
        cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        if not cookie or not hmac.compare_digest(form.get("csrf", ""), cookie):
            return await login_form(request, "the login form was stale; try again", 403)
        name = form.get("name", "")[:64]
        user = await run_in_threadpool(office.verify_login, name, form.get("password", ""))
        if user is None:
            login_limiter.failed(client)
            await run_in_threadpool(office.audit, name or "?", "login-failed", client)
            return await login_form(request, "wrong name or password", 401)
        token, _ = await run_in_threadpool(office.start_session, user)
        nxt = form.get("next", "")
        resp = RedirectResponse(nxt if _safe_next(nxt) else "/sightings", status_code=303)
        set_cookie(resp, SESSION_COOKIE, token, None)  # a browser-session cookie; the server expires it too
        resp.delete_cookie(LOGIN_CSRF_COOKIE, path="/", httponly=True, samesite="strict", secure=secure_cookies)
        return resp

    @page(post=True)
    async def logout(request: Request, session: Session, form: dict) -> Response:
        await run_in_threadpool(office.end_session, request.cookies.get(SESSION_COOKIE))
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=secure_cookies)
        return resp

    # ----------------------------------------------------------------------- assets
    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        suffix = name[name.rfind("."):] if "." in name else ""
        files = resources.files("fieldlog_app.office") / "static"
        if "/" in name or name.startswith(".") or suffix not in ASSET_TYPES or not (files / name).is_file():
            return Response("not found", status_code=404, media_type="text/plain")
        if name not in PUBLIC_ASSETS and await run_in_threadpool(office.session, request.cookies.get(SESSION_COOKIE)) is None:
            return Response("log in first", status_code=401, media_type="text/plain")
        return Response((files / name).read_bytes(), media_type=ASSET_TYPES[suffix],
                        headers={"Cache-Control": "private, max-age=300"})

    # ----------------------------------------------------------------------- sightings
    def _rows() -> list[dict]:
        """Current sightings; one whose current version has no report shows the latest report of an earlier one."""
        rows = sdb.export_sightings(all_versions=False)
        versions = {v["item_id"]: v for v in sdb.list_items(kind="sighting", limit=10**7)}
        by_chain: dict[str, dict] = {}
        for r in sdb.list_items(kind="report", limit=10**7):  # server order: the last one wins
            v = versions.get(r["sighting_id"])
            if v is not None:
                by_chain[v["chain_id"]] = {"id": r["item_id"], "version": v["version"]}
        reviews = sdb.latest_reviews()
        for row in rows:
            row["report_version"] = row["version"] if row["latest_report_id"] else None
            earlier = by_chain.get(row["chain_id"])
            if not row["latest_report_id"] and earlier:
                review = reviews.get(earlier["id"])
                row["latest_report_id"] = earlier["id"]
                row["report_version"] = earlier["version"]
                row["report_review"] = review["status"] if review else "unreviewed"
        return rows

    @page()
    async def home(request: Request, session: Session) -> Response:
        return RedirectResponse("/sightings", status_code=303)

    @page()
    async def sightings(request: Request, session: Session) -> Response:
        q = request.query_params
        f = {k: (q.get(k) or "").strip()[:100] for k in ("block", "pest", "from", "to", "status", "q")}
        errors = []
        for k in ("from", "to"):
            if f[k]:
                try:
                    _dt.date.fromisoformat(f[k])
                except ValueError:
                    errors.append(f"{k}: {f[k]!r} is not a date (YYYY-MM-DD)")
                    f[k] = ""
        if f["status"] not in SIGHTING_STATUSES:
            errors.append(f"status: {f['status']!r} is not one of {', '.join(s for s in SIGHTING_STATUSES if s)}")
            f["status"] = ""
        rows = await run_in_threadpool(_rows)
        blocks = sorted({r.get("block") or "" for r in rows if r.get("block")})
        pests = sorted({p for r in rows for p in _pests_of(r)})
        needle = fold(f["q"])
        shown = []
        for r in rows:
            r["pests"] = _pests_of(r)
            archived = r["office_status"] == "archived"
            if (f["status"] == "archived") != archived:
                continue
            if f["block"] and r.get("block") != f["block"]:
                continue
            if f["pest"] and f["pest"] not in r["pests"]:
                continue
            if f["from"] and (r.get("date") or "") < f["from"]:
                continue
            if f["to"] and (r.get("date") or "9999") > f["to"]:
                continue
            review = r["report_review"] or "no-report"
            if f["status"] in ("unreviewed", "approved", "flagged", "no-report") and review != f["status"]:
                continue
            if needle and needle not in fold(" ".join(str(r.get(k) or "") for k in
                                                     ("block", "variety", "scout", "notes", "weather", "date", "id"))
                                             + " " + " ".join(r["pests"]) + " " + str(r.get("report_text") or "")):
                continue
            shown.append(r)
        shown.sort(key=lambda r: (r.get("date") or "", r.get("time") or ""), reverse=True)
        return render("sightings.html", request, session, rows=shown, total=len(rows), blocks=blocks, pests=pests,
                      f=f, errors=errors, statuses=SIGHTING_STATUSES, export_query=urlencode({}))

    def _chain_of(item_id: str, deleted: bool = False) -> dict | None:
        """A sighting's versions and reports; ``deleted`` (a manager, who may restore it) sees a deleted one."""
        got = sdb.list_items(item_id=item_id, limit=1, with_payload=True, include_deleted=deleted)
        if not got or got[0]["kind"] != "sighting":
            return None
        chain = got[0]["chain_id"]
        versions = sdb.list_items(kind="sighting", chain_id=chain, limit=10_000, with_payload=True,
                                  include_deleted=deleted)
        ids = {v["item_id"] for v in versions}
        reports = [r for r in sdb.list_items(kind="report", limit=10**6, with_payload=True, include_deleted=deleted)
                   if r["sighting_id"] in ids]
        reviews = sdb.latest_reviews()
        for r in reports:
            r["review"] = reviews.get(r["item_id"])
        return {"chain_id": chain, "versions": sorted(versions, key=lambda v: v["version"] or 0, reverse=True),
                "reports": reports, "mark": sdb.marks().get(chain)}

    @page()
    async def sighting(request: Request, session: Session) -> Response:
        data = await run_in_threadpool(_chain_of, request.path_params["item_id"], session.user.is_manager)
        if data is None:
            return render("error.html", request, session, 404, message="no such sighting on this server")
        return render("sighting.html", request, session, **data, mark_states=MARK_STATES)

    @page(manager=True, post=True)
    async def sighting_mark(request: Request, session: Session, form: dict) -> Response:
        data = await run_in_threadpool(_chain_of, request.path_params["item_id"], True)
        if data is None:
            return render("error.html", request, session, 404, message="no such sighting on this server")
        state = form.get("state", "")
        await run_in_threadpool(office.mark, session.user, data["chain_id"], None if state == "restore" else state)
        target = "/sightings" if state == "deleted" else f"/sightings/{data['chain_id']}"
        return RedirectResponse(target, status_code=303)

    # ----------------------------------------------------------------------- reports
    def _report(report_id: str) -> dict | None:
        got = sdb.list_items(kind="report", item_id=report_id, limit=1, with_payload=True)
        if not got:
            return None
        item = got[0]
        p = item["payload"]
        of = sdb.list_items(kind="sighting", item_id=item["sighting_id"], limit=1, with_payload=True)
        return {"item": item, "payload": p, "pieces": report_html_runs(p), "findings": findings_of(p),
                "reviews": office.reviews(report_id), "device_review": payload_review(p),
                "sighting": of[0] if of else None, "office_check": office_check_of(sdb, report_id),
                "office_rewrite": rewrite_of(sdb, report_id)}

    @page()
    async def report(request: Request, session: Session) -> Response:
        data = await run_in_threadpool(_report, request.path_params["item_id"])
        if data is None:
            return render("error.html", request, session, 404, message="no such report on this server")
        return render("report.html", request, session, **data, review_statuses=REVIEW_STATUSES)

    @page(manager=True, post=True)
    async def report_review(request: Request, session: Session, form: dict) -> Response:
        rid = request.path_params["item_id"]
        await run_in_threadpool(office.review, session.user, rid, form.get("status", ""), form.get("note", ""))
        return RedirectResponse(f"/reports/{rid}", status_code=303)

    # ----------------------------------------------------------------------- blocks
    @page()
    async def block(request: Request, session: Session) -> Response:
        name = request.path_params["block"]
        rows = await run_in_threadpool(_rows)
        series = chart.season_series([r for r in rows if r["office_status"] != "archived"], name)
        if not series and not any(r.get("block") == name for r in rows):
            return render("error.html", request, session, 404, message=f"no sightings in block {name!r}")
        charts = [(s, Markup(chart.render_svg(s))) for s in series]
        return render("block.html", request, session, block=name, charts=charts)

    # ----------------------------------------------------------------------- devices
    def _devices() -> dict:
        devices = sdb.list_devices()
        attention: dict[str, list[dict]] = {}
        seen = set()
        for c in sdb.conflicts(limit=2000, unresolved=True):  # newest first: the latest reason per item
            if (c["device"], c["item_id"]) in seen:
                continue
            seen.add((c["device"], c["item_id"]))
            attention.setdefault(c["device"], []).append(c)
        return {"devices": devices, "attention": attention}

    @page()
    async def devices(request: Request, session: Session) -> Response:
        return render("devices.html", request, session, **(await run_in_threadpool(_devices)), new_token=None,
                      new_device=None)

    @page(manager=True, post=True)
    async def device_add(request: Request, session: Session, form: dict) -> Response:
        name = form.get("name", "").strip()
        role = "reader" if form.get("role") == "reader" else "sync"
        token = await run_in_threadpool(sdb.add_device, name, role=role)
        await run_in_threadpool(office.audit, session.user.name, "device-add", name, f"role {role}")
        # the token is in this one answer and nowhere else (only its sha256 is stored)
        return render("devices.html", request, session, **(await run_in_threadpool(_devices)), new_token=token,
                      new_device=name)

    @page(manager=True, post=True)
    async def device_revoke(request: Request, session: Session, form: dict) -> Response:
        name = request.path_params["name"]
        await run_in_threadpool(sdb.revoke_device, name)
        await run_in_threadpool(office.audit, session.user.name, "device-revoke", name)
        return RedirectResponse("/devices", status_code=303)

    # ----------------------------------------------------------------------- audit, exports
    @page()
    async def audit(request: Request, session: Session) -> Response:
        return render("audit.html", request, session, rows=await run_in_threadpool(office.audit_log, 500))

    def export(fmt: str) -> Handler:
        @page()
        async def endpoint(request: Request, session: Session) -> Response:
            all_versions = request.query_params.get("versions") == "all"
            rows = await run_in_threadpool(sdb.export_sightings, all_versions=all_versions)
            buf = io.StringIO(newline="")
            (write_csv if fmt == "csv" else write_geojson)(rows, buf)
            await run_in_threadpool(office.audit, session.user.name, f"export-{fmt}", "all versions" if all_versions else "")
            media = "text/csv; charset=utf-8" if fmt == "csv" else "application/geo+json"
            return Response(buf.getvalue(), media_type=media, headers={
                "Content-Disposition": f'attachment; filename="fieldlog-sightings.{fmt}"', "Cache-Control": "no-store"})
        return endpoint

    return [
        Route("/", home, methods=["GET"]),
        Route("/login", login_get, methods=["GET"]),
        Route("/login", login_post, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/static/{name}", asset, methods=["GET"]),
        Route("/sightings", sightings, methods=["GET"]),
        Route("/sightings/{item_id}", sighting, methods=["GET"]),
        Route("/sightings/{item_id}/mark", sighting_mark, methods=["POST"]),
        Route("/reports/{item_id}", report, methods=["GET"]),
        Route("/reports/{item_id}/review", report_review, methods=["POST"]),
        Route("/blocks/{block}", block, methods=["GET"]),
        Route("/devices", devices, methods=["GET"]),
        Route("/devices", device_add, methods=["POST"]),
        Route("/devices/{name}/revoke", device_revoke, methods=["POST"]),
        Route("/audit", audit, methods=["GET"]),
        Route("/export.csv", export("csv"), methods=["GET"]),
        Route("/export.geojson", export("geojson"), methods=["GET"]),
    ]


def _safe_next(nxt: str) -> bool:
    """Only a path on this server (no scheme, no //host), so the login page cannot be an open redirect."""
    return nxt.startswith("/") and not nxt.startswith("//") and "\\" not in nxt and len(nxt) < 500
