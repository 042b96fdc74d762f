"""The office web page without a browser (Starlette TestClient): sessions, roles, CSRF, headers, pages, exports."""

from __future__ import annotations

import csv
import io
import json
import re
import uuid

import pytest
from starlette.testclient import TestClient

from fieldlog_app.database import Store
from fieldlog_app.office import chart, demo
from fieldlog_app.office.accounts import Office
from fieldlog_app.office.web import payload_review
from fieldlog_app.sync.guard import FailureLimiter
from fieldlog_app.sync.app import create_app, write_csv
from fieldlog_app.sync.server import ServerDB, ServerError
from fieldlog_app.sync.server_cli import main as server_main
from fieldlog_app.sync.testing import make_sightings

PW = demo.PASSWORD


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


@pytest.fixture
def office(server_db_target):
    sdb = ServerDB(server_db_target)
    seeded = demo.seed(sdb)
    clock = Clock()
    app = create_app(sdb, login_limiter=FailureLimiter(burst=3, refill_s=60.0, clock=clock))
    return sdb, seeded, app, clock


def client_for(app, **kw) -> TestClient:
    return TestClient(app, base_url="http://office.test", **kw)


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def login(client: TestClient, name: str, password: str = PW, next: str = ""):
    page = client.get("/login")
    return client.post("/login", data={"csrf": csrf_of(page.text), "name": name, "password": password, "next": next},
                       follow_redirects=False)


def logged_in(app, name: str) -> TestClient:
    c = client_for(app)
    assert login(c, name).status_code == 303
    return c


def rid_of(seeded, i: int = 3) -> str:
    return seeded["reports"][i]


PAGES = ["/", "/sightings", "/devices", "/audit", "/blocks/B4", "/export.csv", "/export.geojson"]


def test_no_page_or_asset_without_a_session_but_the_login_and_its_stylesheet(office):
    sdb, seeded, app, _ = office
    c = client_for(app)
    for path in PAGES + [f"/sightings/{seeded['sightings'][0]}", f"/reports/{rid_of(seeded)}"]:
        r = c.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), path
        assert "Ana Ruiz" not in r.text and "Riesling" not in r.text
    assert c.get("/login").status_code == 200
    assert c.get("/static/office.css").status_code == 200
    # posts without a session change nothing
    r = c.post(f"/reports/{rid_of(seeded)}/review", data={"status": "approved", "csrf": "x"})
    assert r.status_code == 403 and sdb.latest_reviews() == {}
    r = c.post("/devices", data={"name": "sneaky", "csrf": "x"})
    assert r.status_code == 403 and "sneaky" not in {d["name"] for d in sdb.list_devices()}


def test_login_cookie_flags_wrong_password_and_rate_limit(office):
    sdb, seeded, app, clock = office
    c = client_for(app)
    r = login(c, "maria", next="/devices")
    assert r.status_code == 303 and r.headers["location"] == "/devices"
    cookie = [h for h in r.headers.get_list("set-cookie") if h.startswith("fl_session=")][0]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
    assert "fl_session" in c.cookies and c.get("/sightings").status_code == 200

    other = client_for(app)
    for _ in range(3):
        r = login(other, "maria", "wrong password!")
        assert r.status_code == 401 and "wrong name or password" in r.text
    r = login(other, "maria")  # right password, but this address has used up its tries
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0 and "fl_session" not in other.cookies
    clock.t += 60
    assert login(other, "maria").status_code == 303
    assert [a["action"] for a in Office(sdb).audit_log()].count("login-failed") == 3

    secure = TestClient(create_app(sdb, secure_cookies=True), base_url="https://office.test")
    r = login(secure, "victor")
    assert "Secure" in [h for h in r.headers.get_list("set-cookie") if h.startswith("fl_session=")][0]


def test_login_needs_its_csrf_cookie_and_never_redirects_off_site(office):
    sdb, seeded, app, _ = office
    c = client_for(app)
    r = c.post("/login", data={"csrf": "made-up", "name": "maria", "password": PW}, follow_redirects=False)
    assert r.status_code == 403 and "fl_session" not in c.cookies
    for evil in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        r = login(client_for(app), "maria", next=evil)
        assert r.status_code == 303 and r.headers["location"] == "/sightings"


def test_security_headers_and_no_inline_script_or_style_on_any_page(office):
    sdb, seeded, app, _ = office
    c = logged_in(app, "maria")
    paths = PAGES[1:5] + [f"/sightings/{seeded['sightings'][2]}", f"/reports/{rid_of(seeded)}", "/login"]
    for path in paths:
        r = c.get(path)
        assert r.status_code == 200, path
        csp = r.headers["content-security-policy"]
        assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
        assert "<script" not in r.text.lower() and not re.search(r"\sstyle=", r.text), path
        assert "http://" not in r.text.replace("http://HOST:PORT", ""), path  # no CDN, no off-site asset
    assert client_for(app).get("/v1/health").headers["x-content-type-options"] == "nosniff"


def test_csrf_token_is_required_on_every_form(office):
    sdb, seeded, app, _ = office
    c = logged_in(app, "maria")
    rid = rid_of(seeded)
    forms = [(f"/reports/{rid}/review", {"status": "approved"}),
             (f"/sightings/{seeded['sightings'][0]}/mark", {"state": "deleted"}),
             ("/devices", {"name": "csrf-victim"}), ("/devices/handheld-2/revoke", {}), ("/logout", {})]
    for path, data in forms:
        for token in (None, "wrong", csrf_of(client_for(app).get("/login").text)):  # absent, forged, another form's
            body = dict(data, **({"csrf": token} if token else {}))
            r = c.post(path, data=body, follow_redirects=False)
            assert r.status_code == 403 and "stale" in r.text, (path, token)
    assert sdb.latest_reviews() == {} and sdb.marks() == {}
    assert {d["name"]: d["revoked_at"] for d in sdb.list_devices()} == {"handheld-1": None, "handheld-2": None}
    assert c.get("/sightings").status_code == 200  # still logged in
    assert sum(a["action"] == "csrf-refused" for a in Office(sdb).audit_log()) == 3 * len(forms)
    # a form posted as something else than a form is refused before anything is read
    r = c.post(f"/reports/{rid}/review", content=json.dumps({"status": "approved"}),
               headers={"content-type": "application/json"})
    assert r.status_code == 415 and sdb.latest_reviews() == {}


def test_a_viewer_reads_but_may_not_approve_archive_delete_or_manage_devices(office):
    sdb, seeded, app, _ = office
    v = logged_in(app, "victor")
    page = v.get(f"/reports/{rid_of(seeded)}")
    assert page.status_code == 200 and "Approve" not in page.text
    csrf = csrf_of(page.text)  # the logout form's token: a valid token for this session
    attempts = [(f"/reports/{rid_of(seeded)}/review", {"status": "approved"}),
                (f"/sightings/{seeded['sightings'][0]}/mark", {"state": "deleted"}),
                (f"/sightings/{seeded['sightings'][1]}/mark", {"state": "archived"}),
                ("/devices", {"name": "viewer-made"}), ("/devices/handheld-1/revoke", {})]
    for path, data in attempts:
        r = v.post(path, data=dict(data, csrf=csrf), follow_redirects=False)
        assert r.status_code == 403 and "viewer" in r.text, path
    assert sdb.latest_reviews() == {} and sdb.marks() == {}
    assert [d["name"] for d in sdb.list_devices() if d["revoked_at"] is None] == ["handheld-1", "handheld-2"]
    assert v.get("/export.csv").status_code == 200 and v.get("/devices").status_code == 200


def test_a_manager_approves_and_flags_and_the_audit_log_says_who(office):
    sdb, seeded, app, _ = office
    m = logged_in(app, "maria")
    rid = rid_of(seeded)
    page = m.get(f"/reports/{rid}")
    assert 'id="review-status">unreviewed' in page.text
    r = m.post(f"/reports/{rid}/review", data={"status": "approved", "note": "checked in the block",
                                              "csrf": csrf_of(page.text)}, follow_redirects=False)
    assert r.status_code == 303
    page = m.get(f"/reports/{rid}")
    assert 'id="review-status">approved' in page.text and 'id="reviewer">maria' in page.text
    assert sdb.latest_reviews()[rid]["status"] == "approved"
    r = m.post(f"/reports/{rid}/review", data={"status": "rubber-stamped", "csrf": csrf_of(page.text)})
    assert r.status_code == 400 and sdb.latest_reviews()[rid]["status"] == "approved"
    other = rid_of(seeded, 4)
    m.post(f"/reports/{other}/review", data={"status": "flagged", "csrf": csrf_of(page.text)})
    log = [(a["actor"], a["action"], a["target"]) for a in Office(sdb).audit_log()]
    assert ("maria", "report-approve", rid) in log and ("maria", "report-flag", other) in log
    # the sightings filter by review status
    approved = m.get("/sightings?status=approved").text
    flagged = m.get("/sightings?status=flagged").text
    assert f'href="/reports/{rid}"' in approved and f'href="/reports/{other}"' not in approved
    assert f'href="/reports/{other}"' in flagged and f'href="/reports/{rid}"' not in flagged
    rows = list(csv.DictReader(io.StringIO(m.get("/export.csv").text)))
    assert {r["report_review"] for r in rows if r["latest_report_id"] == rid} == {"approved"}
    assert {r["report_reviewer"] for r in rows if r["latest_report_id"] == rid} == {"maria"}


def test_deleting_a_sighting_hides_it_everywhere_and_a_resend_stays_a_duplicate(office):
    sdb, seeded, app, _ = office
    m = logged_in(app, "maria")
    base, head = seeded["sightings"][2], seeded["revised"]
    page = m.get(f"/sightings/{head}")
    assert "Version 2" in page.text and "Version 1" in page.text  # a sighting with its versions
    reader = {"Authorization": f"Bearer {sdb.add_device('office-pc', role='reader')}"}
    before = client_for(app).get("/v1/items", headers=reader).json()["items"]
    r = m.post(f"/sightings/{head}/mark", data={"state": "deleted", "csrf": csrf_of(page.text)}, follow_redirects=False)
    assert r.status_code == 303
    after = client_for(app).get("/v1/items", headers=reader).json()["items"]
    gone = {i["item_id"] for i in before} - {i["item_id"] for i in after}
    assert gone == {base, head, seeded["reports"][2]}  # both versions and the report on them
    assert head not in m.get("/sightings").text and head not in m.get("/export.csv").text
    assert head not in client_for(app).get("/v1/export.csv", headers=reader).text
    # the rows are kept: the device sending them again gets duplicates, not a second copy
    held = sdb.list_items(chain_id=sdb.list_items(item_id=head, include_deleted=True)[0]["chain_id"],
                          include_deleted=True, with_payload=True)
    items = [{"item_id": h["item_id"], "kind": "sighting", "replaces": h["replaces"], "sha256": h["sha256"],
              "payload": h["payload"]} for h in held]
    tok = seeded["tokens"]["handheld-1"]
    r = client_for(app).post("/v1/batches", json={"protocol": 1, "batch_id": str(uuid.uuid4()), "items": items},
                             headers={"Authorization": f"Bearer {tok}"})
    assert r.status_code == 200 and r.json()["duplicate"] == 2 and r.json()["accepted"] == 0
    assert head not in m.get("/sightings").text
    r = m.post(f"/sightings/{head}/mark", data={"state": "restore", "csrf": csrf_of(page.text)})
    assert head in m.get("/sightings").text
    assert [a["action"] for a in Office(sdb).audit_log() if a["action"].startswith("sighting-")] == \
        ["sighting-restore", "sighting-delete"]


def test_archived_sightings_leave_the_default_table_for_the_archived_filter(office):
    sdb, seeded, app, _ = office
    m = logged_in(app, "maria")
    sid = seeded["sightings"][0]
    page = m.get(f"/sightings/{sid}")
    m.post(f"/sightings/{sid}/mark", data={"state": "archived", "csrf": csrf_of(page.text)})
    assert f'href="/sightings/{sid}"' not in m.get("/sightings").text
    assert f'href="/sightings/{sid}"' in m.get("/sightings?status=archived").text
    rows = list(csv.DictReader(io.StringIO(m.get("/export.csv").text)))
    assert {r["office_status"] for r in rows if r["sighting_id"] == sid} == {"archived"}


def test_filters_and_search(office):
    sdb, seeded, app, _ = office
    m = logged_in(app, "maria")

    def ids(query: str) -> set[str]:
        return set(re.findall(r'<tr data-id="([0-9a-f-]+)"', m.get("/sightings" + query).text))

    everything = ids("")
    assert len(everything) == 7  # six in B4 (one revised, shown once) and one in A1
    assert ids("?block=A1") == {seeded["other_sighting"]}
    assert ids("?pest=powdery+mildew") == {seeded["other_sighting"]}
    assert len(ids("?from=2026-07-01&to=2026-07-31")) == 4  # 07-07 (revised), 07-16, 07-20 (A1), 07-28
    assert ids("?q=spray+booked") == {seeded["revised"]}
    assert ids("?q=%EF%BC%B2%EF%BC%B5%EF%BC%A9%EF%BC%BA") == everything - {seeded["other_sighting"]}  # full-width RUIZ
    assert ids("?status=no-report") == {seeded["other_sighting"]}
    # the revised sighting's report was written of its first version, and says so
    row = re.search(rf'<tr data-id="{seeded["revised"]}">.*?</tr>', m.get("/sightings").text, re.S).group(0)
    assert f'href="/reports/{seeded["reports"][2]}"' in row and "of v1" in row
    r = m.get("/sightings?from=July")
    assert r.status_code == 200 and "is not a date" in r.text and len(ids("?from=July")) == 7


def test_report_page_shows_provenance_findings_and_a_device_review(office):
    sdb, seeded, app, _ = office
    m = logged_in(app, "maria")
    page = m.get(f"/reports/{rid_of(seeded)}").text  # 2026-07-16: 6.5 nymphs a leaf, with a finding
    assert '<span class="prov-corrected">above</span>' in page
    assert '<span class="prov-unverified">Re-scout the block in seven days.</span>' in page
    assert "unsupported-claim" in page and "<q>seven days</q>" in page
    clean = m.get(f"/reports/{rid_of(seeded, 0)}").text
    assert "No integrity findings" in clean
    assert payload_review({"review": {"status": "approved", "reviewer": "ana", "at": "2026-07-17"}}) == \
        {"status": "approved", "reviewer": "ana", "at": "2026-07-17"}
    assert payload_review({"review_status": "flagged", "reviewer": 7}) == {"status": "flagged", "reviewer": "", "at": ""}
    assert payload_review({"review": ["junk"]}) is None and payload_review({}) is None


def test_devices_page_adds_shows_the_token_once_revokes_and_lists_409s(office):
    sdb, seeded, app, _ = office
    m = logged_in(app, "maria")
    page = m.get("/devices")
    assert "stale-edit" in page.text and "handheld-2" in page.text  # the logged conflict still needs attention
    r = m.post("/devices", data={"name": "handheld-3", "csrf": csrf_of(page.text)})
    token = re.search(r'<code id="new-token">([^<]+)</code>', r.text).group(1)
    assert token.startswith("fl_") and token not in m.get("/devices").text  # shown this once
    api = client_for(app)
    auth = {"Authorization": f"Bearer {token}"}
    store = Store(":memory:")
    make_sightings(store, 1, seed=5)
    row = store.outbox_items()[0]
    item = {"item_id": row["item_id"], "kind": row["kind"], "replaces": row["replaces"], "sha256": row["sha256"],
            "payload": json.loads(row["payload"])}
    empty = {"protocol": 1, "batch_id": str(uuid.uuid4()), "items": [item]}
    assert api.post("/v1/batches", json=empty, headers=auth).status_code == 200
    assert api.get("/v1/items", headers=auth).status_code == 403  # a sync device reads nothing
    m.post("/devices/handheld-3/revoke", data={"csrf": csrf_of(page.text)})
    assert api.post("/v1/batches", json=empty, headers=auth).status_code == 403
    r = m.post("/devices", data={"name": "bad\nname", "csrf": csrf_of(page.text)})
    assert r.status_code == 400 and "device name" in r.text
    log = [(a["action"], a["target"]) for a in Office(sdb).audit_log()]
    assert ("device-add", "handheld-3") in log and ("device-revoke", "handheld-3") in log


def test_block_chart_has_each_pest_series_against_its_threshold(office):
    sdb, seeded, app, _ = office
    series = {s.pest: s for s in chart.season_series(sdb.export_sightings(), "B4")}
    hopper = series["grape leafhopper"]
    assert [p.value for p in hopper.points] == [n / 20 for _, n, _, _ in demo.SEASON]
    assert {p.threshold for p in hopper.points} == {5.0} and hopper.above == 1
    moth = series["grape berry moth"]
    assert [p.threshold for p in moth.points] == [None, None, None, 6.0, 6.0, 15.0]  # its windows in July, August
    page = logged_in(app, "victor").get("/blocks/B4").text
    svgs = re.findall(r'<svg class="chart".*?</svg>', page, re.S)
    assert len(svgs) == 2
    hop_svg = [s for s in svgs if 'data-pest="grape leafhopper"' in s][0]
    assert 'class="series" data-points="6"' in hop_svg and 'class="threshold"' in hop_svg
    assert hop_svg.count('class="point above"') == 1 and hop_svg.count('class="point below"') == 5
    assert logged_in(app, "victor").get("/blocks/Z9").status_code == 404


def test_export_includes_report_text_and_escapes_formulas_behind_spaces(office, tmp_path, capsys):
    sdb, seeded, app, _ = office
    rows = list(csv.DictReader(io.StringIO(logged_in(app, "victor").get("/export.csv").text)))
    texts = {r["report_text"] for r in rows if r["block"] == "B4" and r["date"] == "2026-07-16"}
    assert len(texts) == 1 and texts.pop().startswith("Block B4, 2026-07-16. Grape leafhopper")
    assert server_main(["export", "csv", "--db", sdb.path, "-o", str(tmp_path / "o.csv")]) == 0
    assert "Re-scout the block" in (tmp_path / "o.csv").read_text()
    buf = io.StringIO()
    write_csv([{"id": "x", "notes": " =1+2", "scout": "\t@SUM(A1)", "report_text": "  -cmd|' /C calc'!A0",
                "observations": []}], buf)
    row = next(csv.DictReader(io.StringIO(buf.getvalue())))
    assert row["notes"] == "' =1+2" and row["scout"] == "'\t@SUM(A1)" and row["report_text"].startswith("'  -cmd")


def test_cli_user_add_from_stdin_roles_and_disable(tmp_path, monkeypatch, capsys):
    db = str(tmp_path / "s.db")
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough password\n"))
    assert server_main(["user", "add", "ines", "--role", "manager", "--db", db]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert server_main(["user", "add", "short", "--role", "viewer", "--db", db]) == 1
    assert "at least 10 characters" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough password\n"))
    assert server_main(["user", "add", "ines", "--role", "viewer", "--db", db]) == 1
    assert server_main(["user", "add", "x", "--role", "admin", "--db", db]) == 2
    sdb = ServerDB(db)
    with sdb.connect() as conn:
        stored = conn.execute("SELECT password_hash FROM users WHERE name = 'ines'").fetchone()["password_hash"]
    assert stored.startswith("$argon2id$") and "long enough" not in stored
    app = create_app(sdb)
    c = client_for(app)
    assert login(c, "ines", "a long enough password").status_code == 303
    assert c.get("/sightings").status_code == 200
    assert server_main(["user", "disable", "ines", "--db", db]) == 0
    assert c.get("/sightings", follow_redirects=False).status_code == 303  # the session ended with the account
    assert login(client_for(app), "ines", "a long enough password").status_code == 401
    assert server_main(["user", "list", "--db", db]) == 0
    assert "disabled" in capsys.readouterr().out
    with pytest.raises(ServerError):
        Office(sdb).add_user("eve", "x" * 2000, "viewer")


def test_an_old_server_database_gains_office_tables_and_device_roles(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE devices (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, token_sha256 TEXT "
                       "NOT NULL UNIQUE, created_at TEXT NOT NULL, revoked_at TEXT, last_seen_at TEXT);"
                       "INSERT INTO devices (name, token_sha256, created_at) VALUES ('old', 'ab', '2026-01-01T00:00:00Z');")
    conn.close()
    sdb = ServerDB(path)
    assert [(d["name"], d["role"]) for d in sdb.list_devices()] == [("old", "sync")]
    Office(sdb).add_user("ana", "a long enough password", "viewer")
    assert [u["name"] for u in Office(sdb).list_users()] == ["ana"]


def test_an_expired_session_is_a_login_page(office):
    sdb, seeded, app, _ = office
    c = logged_in(app, "victor")
    with sdb.transaction() as conn:
        conn.execute("UPDATE sessions SET expires_at = ?", ("2020-01-01T00:00:00Z",))
    r = c.get("/sightings", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_a_conflict_stops_needing_attention_once_the_item_is_at_the_office(office):
    sdb, seeded, app, _ = office
    from fieldlog_app.sync.server import Conflict

    held = seeded["sightings"][0]  # a 409 logged for an item the device later sent again and got stored
    sdb._log_conflicts("handheld-1", [Conflict(0, held, "sighting", "0" * 64, "stale-edit", "old")], "2026-07-01T00:00:00Z")
    open_items = {c["item_id"] for c in sdb.conflicts(unresolved=True)}
    assert held not in open_items and "7d3c2a10-0000-4000-8000-000000000001" in open_items
    assert held in {c["item_id"] for c in sdb.conflicts()}
    page = logged_in(app, "maria").get("/devices").text
    assert held[:8] not in page.split("Items needing attention")[1] and "7d3c2a10" in page
