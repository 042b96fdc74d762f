"""Screenshots of the office's main pages for the README (docs/office/*.png).

    python tools/office_screenshots.py [OUT_DIR]

Serves a fresh demo office (fieldlog_app.office.demo) on loopback and drives
Debian's headless chromium through Playwright, as the browser tests do.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from fieldlog_app.office import demo
from fieldlog_app.sync.app import create_app
from fieldlog_app.sync.server import ServerDB
from fieldlog_app.sync.testing import ThreadServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def main(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        sdb = ServerDB(Path(tmp) / "office.db")
        seeded = demo.seed(sdb)
        with ThreadServer(create_app(sdb)) as srv, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            page = browser.new_context(viewport={"width": 1100, "height": 760}).new_page()
            url = srv.url
            page.goto(url + "/login")
            page.screenshot(path=out / "login.png")
            page.fill("input[name=name]", "maria")
            page.fill("input[name=password]", demo.PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(url + "/sightings")
            page.goto(url + f"/reports/{seeded['reports'][0]}")
            page.click("button[value=approved]")
            page.goto(url + "/sightings")
            page.screenshot(path=out / "sightings.png", full_page=True)
            page.goto(url + f"/sightings/{seeded['revised']}")
            page.screenshot(path=out / "sighting.png", full_page=True)
            page.goto(url + f"/reports/{seeded['reports'][3]}")
            page.screenshot(path=out / "report.png", full_page=True)
            page.goto(url + "/blocks/B4")
            page.screenshot(path=out / "block-chart.png", full_page=True)
            page.goto(url + "/devices")
            page.fill("form.add-device input[name=name]", "handheld-3")
            page.click("form.add-device button")
            page.screenshot(path=out / "devices.png", full_page=True)
            browser.close()
    print(f"screenshots in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/office")))
