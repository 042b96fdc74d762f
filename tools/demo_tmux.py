"""Run the README's demo in a tmux pane and print what the screen showed, as text for the README.

    python tools/demo_tmux.py > demo.txt            # `make demo`, then a short walk in the app

It starts a detached tmux session of its own (a fixed 100x30 pane, a fresh data directory so the demo
database is new and the run can be repeated), types `make demo`, waits for the report and the app, then
walks the app as a manager would: logs a walk where nothing was found, opens the demo's B4 report and
approves it, and quits. Each step's screen is captured with `tmux capture-pane -p`; the session is killed
at the end, whatever happened. `make demo` runs the real model: give it the machine.

--make "CMD" replaces `make demo` (e.g. with make's VENV=... for another checkout's environment).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SESSION = f"fieldlog-demo-{os.getpid()}"


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout


def screen() -> str:
    return tmux("capture-pane", "-p", "-t", SESSION)


def keys(*k: str, literal: bool = False) -> None:
    tmux("send-keys", "-t", SESSION, *(["-l"] if literal else []), *k)
    time.sleep(0.4)  # let the app draw before the next key (a demo tool, not a test)


def wait_for(text: str, timeout: float, *, history: bool = False) -> str:
    deadline = time.monotonic() + timeout
    while True:
        shown = tmux("capture-pane", "-p", "-S", "-200", "-t", SESSION) if history else screen()
        if text in shown:
            return shown
        if time.monotonic() > deadline:
            raise SystemExit(f"demo_tmux: {text!r} did not appear within {timeout:g} s; the screen was:\n{shown}")
        time.sleep(0.5)


def trim(text: str) -> str:
    """Trailing spaces off, and a run of empty lines (the app's unused screen) kept as one."""
    out: list[str] = []
    for line in (line.rstrip() for line in text.splitlines()):
        if line or (out and out[-1]):
            out.append(line)
    while out and not out[-1]:
        out.pop()
    return "\n".join(out)


def report_part(history: str) -> str:
    """From the `fieldlog report` command of `make demo` to its "saved report" line (and findings after it)."""
    lines = history.splitlines()
    start = next((i for i, line in enumerate(lines) if "fieldlog report" in line), 0)
    end = len(lines)
    while end > start and (not lines[end - 1].strip() or lines[end - 1].startswith("$")
                           or "fieldlog --demo" in lines[end - 1]):
        end -= 1
    return "\n".join(lines[start:end])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--make", default="make demo", help="the demo command (default: make demo)")
    ap.add_argument("--width", type=int, default=100)
    ap.add_argument("--height", type=int, default=30)
    ap.add_argument("--timeout", type=float, default=3600, help="seconds to wait for `make demo` to open the app")
    args = ap.parse_args()
    shots: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="fieldlog-demo-") as data:
        env = {"XDG_DATA_HOME": data, "FIELDLOG_USER": "M. Ortiz", "PS1": "$ ", "TERM": "xterm-256color"}
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        tmux("new-session", "-d", "-s", SESSION, "-x", str(args.width), "-y", str(args.height), "-c", str(ROOT),
             f"env {exports} bash --norc --noprofile")
        try:
            tmux("set-option", "-t", SESSION, "history-limit", "2000")
            keys(args.make, literal=True)
            keys("Enter")
            wait_for("^q Quit", args.timeout)  # the report is written and stored; the app is open on the log
            # a walk where nothing was found: block, rows, then "Nothing found", finalize
            keys("n")
            wait_for("new sighting", 30)
            keys("B3", literal=True)
            keys("Tab", "Tab")
            keys("1-24", literal=True)
            for _ in range(10):  # date, time, scout, weather, notes, lat, lon, ± m, risk class, the box
                keys("Tab")
            keys("Space")  # the Nothing found box
            keys("C-f")
            wait_for("Generate", 30)  # its detail screen
            shots.append(("saved: its detail", screen()))
            keys("Escape")
            # the demo's report: filter the log to B4 on 2026-07-21, open the sighting, then its report
            for _ in range(5):
                keys("BTab")
            keys("2026-07-21", literal=True)
            keys("Tab")
            keys("2026-07-21", literal=True)
            keys("Tab")
            keys("B4", literal=True)
            keys("Escape")
            keys("Enter")
            wait_for("Generate", 30)
            keys("Enter")
            wait_for("checked by the large model", 30)
            keys("a")
            wait_for("Enter confirms", 30)
            keys("Enter")
            wait_for("approved by M. Ortiz", 30)
            shots.append(("the report, approved", screen()))
            keys("C-q")
            time.sleep(2)
            shots.insert(0, ("`make demo`: the report, written into the demo database", report_part(
                tmux("capture-pane", "-p", "-S", "-200", "-t", SESSION))))
        finally:
            subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)
    for title, text in shots:
        print(f"{title}:\n\n```text\n{trim(text)}\n```\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
