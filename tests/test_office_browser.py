"""The office web page in a real browser: headless Chromium (Debian's package) driven by Playwright for Python.

Playwright's own browser download is not used: the system browser is launched by
path. Skipped, with the reason, when there is no chromium or no playwright
(`.ci/run` installs Debian's chromium before the tests).
"""

from __future__ import annotations

import os
import shutil

import pytest

from fieldlog_app.office import demo
from fieldlog_app.sync.app import create_app
from fieldlog_app.sync.server import ServerDB
from fieldlog_app.sync.testing import SwappableApp, ThreadServer

CHROMIUM = os.environ.get("FIELDLOG_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright for Python is not installed")
pytestmark = [
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"no chromium at {CHROMIUM} (apt-get install -y chromium; .ci/run does)"),
    pytest.mark.slow,
]


@pytest.fixture(scope="module")
def served():
    swap = SwappableApp()
    with ThreadServer(swap) as srv:
        yield swap, srv.url


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as pw:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def office(tmp_path, served, browser):
    swap, url = served
    sdb = ServerDB(tmp_path / "server.db")
    seeded = demo.seed(sdb)
    swap.app = create_app(sdb)
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    problems: list[str] = []  # CSP refusals, script errors and assets that did not load
    page.on("console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text
            or "Refused" in m.text else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400
            and "/static/" in r.url else None)
    try:
        yield sdb, seeded, url, page, problems
    finally:
        context.close()


def log_in(page, url: str, name: str = "maria") -> None:
    page.goto(url + "/sightings")
    assert page.url.startswith(url + "/login")  # no session: the login page
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", demo.PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(url + "/sightings")


def test_log_in_filter_and_the_stylesheet_applies_under_the_csp(office):
    sdb, seeded, url, page, problems = office
    page.goto(url + "/login")
    page.fill("input[name=name]", "maria")
    page.fill("input[name=password]", "not the password")
    page.click("button[type=submit]")
    assert "wrong name or password" in page.inner_text(".message")
    log_in(page, url)
    assert page.locator("tr[data-id]").count() == 7
    # the stylesheet loaded (the header is the office green), so the CSP lets the page's own CSS through
    assert page.eval_on_selector("header.top", "e => getComputedStyle(e).backgroundColor") == "rgb(47, 93, 58)"
    page.select_option("select[name=block]", "A1")
    page.click("form.filters button")
    assert page.locator("tr[data-id]").count() == 1 and "powdery mildew" in page.inner_text("table.sightings")
    page.goto(url + "/sightings")
    page.fill("input[name=q]", "spray booked")
    page.click("form.filters button")
    assert [page.locator("tr[data-id]").first.get_attribute("data-id")] == [seeded["revised"]]
    assert page.locator("tr[data-id]").count() == 1
    assert not problems, problems


def test_open_a_report_and_approve_it(office):
    sdb, seeded, url, page, problems = office
    log_in(page, url)
    page.goto(url + "/sightings?block=B4&from=2026-07-16&to=2026-07-16")
    page.click("tr[data-id] a.review")
    assert "/reports/" in page.url
    assert page.inner_text("#review-status") == "unreviewed"
    # provenance colours: the corrected word is the corrected style (bold), unverified text is italic
    assert page.eval_on_selector(".report-text .prov-corrected", "e => getComputedStyle(e).fontWeight") == "700"
    assert page.eval_on_selector(".report-text .prov-unverified", "e => getComputedStyle(e).fontStyle") == "italic"
    assert "unsupported-claim" in page.inner_text("ul.findings")
    page.fill("input[name=note]", "seen in the block")
    page.click("button[value=approved]")
    page.wait_for_selector("#reviewer")
    assert page.inner_text("#review-status") == "approved" and page.inner_text("#reviewer") == "maria"
    assert sdb.latest_reviews()[seeded["reports"][3]]["note"] == "seen in the block"
    assert not problems, problems


def test_a_viewer_sees_no_buttons(office):
    sdb, seeded, url, page, problems = office
    log_in(page, url, "victor")
    page.goto(url + f"/reports/{seeded['reports'][3]}")
    assert page.locator("button[value=approved]").count() == 0
    page.goto(url + "/devices")
    assert page.locator("button.danger").count() == 0 and page.locator("form.add-device").count() == 0


def test_add_and_revoke_a_device(office):
    sdb, seeded, url, page, problems = office
    log_in(page, url)
    page.goto(url + "/devices")
    assert "stale-edit" in page.inner_text("table.attention")
    page.fill("form.add-device input[name=name]", "handheld-3")
    page.click("form.add-device button")
    token = page.inner_text("#new-token")
    assert token.startswith("fl_") and sdb.authenticate(f"Bearer {token}") == "handheld-3"
    page.click("tr[data-device='handheld-3'] button.danger")
    page.wait_for_selector("tr[data-device='handheld-3'] .revoked")
    assert "revoked" in page.inner_text("tr[data-device='handheld-3'] td.state")
    assert "fl_" not in page.content()  # the token was shown once
    assert {d["name"]: bool(d["revoked_at"]) for d in sdb.list_devices()}["handheld-3"] is True
    assert not problems, problems


def test_the_season_chart_renders_each_pest_against_its_threshold(office):
    sdb, seeded, url, page, problems = office
    log_in(page, url)
    page.click("table.sightings a[href='/blocks/B4'] >> nth=0")
    charts = page.locator("svg.chart")
    assert charts.count() == 2
    hopper = page.locator("svg.chart[data-pest='grape leafhopper']")
    assert hopper.locator("polyline.series").get_attribute("data-points") == "6"
    assert hopper.locator("circle.point").count() == 6 and hopper.locator("circle.point.above").count() == 1
    threshold = hopper.locator("polyline.threshold")
    assert threshold.count() == 1
    box = hopper.bounding_box()
    assert box and box["width"] > 300 and box["height"] > 100  # laid out, not an empty element
    assert not problems, problems
