"""`fieldlog` command line: app start, import-notes, export, list, report (fake engine), sync hook, exit codes."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import signal
import sys
import types
from pathlib import Path

import pytest

import fieldlog_app
from edgespec import ModelFileError
from edgespec.events import Chunk, Done, Stats, TokenRecord
from fieldlog_app import cli
from fieldlog_app.database import Store

ROOT = Path(__file__).resolve().parent.parent
NOTES_JSONL = ROOT / "vineyard" / "samples" / "notes.jsonl"


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path, monkeypatch):
    """Never touch the real user data dir."""
    monkeypatch.delenv(cli.ENV_DB, raising=False)
    monkeypatch.setattr(cli, "data_dir", lambda: tmp_path / "userdata")


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "f.db"


def imported(db: Path, n: int = 10) -> list[str]:
    lines = NOTES_JSONL.read_text().splitlines()[:n]
    p = db.parent / "seed.jsonl"
    p.write_text("\n".join(lines) + "\n")
    with Store(db) as s:
        return s.import_notes(p).ids


# ---------------------------------------------------------------------------------------------- app start
@pytest.fixture
def fake_app(monkeypatch):
    calls = []
    mod = types.ModuleType("fieldlog_app.app")
    mod.run = lambda db_path, demo=False, sync_callback=None, autosync=None: calls.append((Path(db_path), demo))
    monkeypatch.setitem(sys.modules, "fieldlog_app.app", mod)
    monkeypatch.setattr(fieldlog_app, "app", mod, raising=False)
    return calls


def test_no_command_starts_the_app_on_the_default_env_or_given_db(fake_app, tmp_path, monkeypatch):
    assert cli.main([]) == 0
    assert fake_app[-1] == (tmp_path / "userdata" / "fieldlog.db", False)
    assert (tmp_path / "userdata" / "fieldlog.db").exists()  # created and migrated before the UI starts
    monkeypatch.setenv(cli.ENV_DB, str(tmp_path / "env.db"))
    assert cli.main([]) == 0
    assert fake_app[-1] == (tmp_path / "env.db", False)
    assert cli.main(["--db", str(tmp_path / "arg.db")]) == 0  # --db beats the env var
    assert fake_app[-1] == (tmp_path / "arg.db", False)


def test_demo_seeds_a_separate_demo_database_once(fake_app, tmp_path, capsys):
    assert cli.main(["--demo"]) == 0
    path = tmp_path / "userdata" / "demo.db"
    assert fake_app[-1] == (path, True)
    with Store(path) as s:
        counts = s.counts()
    notes = [json.loads(line) for line in NOTES_JSONL.read_text().splitlines()]
    from fieldlog_app.demo import season_notes

    covered = {(n["block"], n["date"]) for n in notes}  # the season's weeks a sample note already covers
    n_samples = len(notes) + sum((n["block"], n["date"]) not in covered for n in season_notes())
    assert n_samples > len(notes) and counts["finalized"] == n_samples and counts["draft"] == 1
    assert f"added {n_samples + 1} sample sightings" in capsys.readouterr().err
    assert cli.main(["--demo"]) == 0  # again: nothing duplicated
    with Store(path) as s:
        assert s.counts() == counts
    assert not (tmp_path / "userdata" / "fieldlog.db").exists()  # the real log was not touched


def test_battery_sim_gives_the_app_a_simulated_battery(monkeypatch, tmp_path, capsys):
    seen = {}
    mod = types.ModuleType("fieldlog_app.app")
    mod.run = lambda db_path, **kw: seen.update(kw)
    monkeypatch.setitem(sys.modules, "fieldlog_app.app", mod)
    monkeypatch.setattr(fieldlog_app, "app", mod, raising=False)
    assert cli.main(["--battery-sim", "4", "--db", str(tmp_path / "a.db")]) == 0
    state = seen["power_source"].read()
    assert (state.source, state.percent, state.charging) == ("simulated", 4.0, False)
    assert cli.main(["--battery-sim", "150", "--db", str(tmp_path / "b.db")]) == 1
    assert "--battery-sim percent must be 0..100" in capsys.readouterr().err
    assert not (tmp_path / "b.db").exists()  # refused before the database is touched


def test_bad_db_path_is_one_line_error(fake_app, tmp_path, capsys):
    bad = tmp_path / "junk.db"
    bad.write_text("not sqlite " * 200)
    assert cli.main(["--db", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fieldlog: error:") and "Traceback" not in err
    assert fake_app == []


# ---------------------------------------------------------------------------------------------- import / export / list
def test_import_notes_counts_and_lists_bad_lines(db, tmp_path, capsys):
    good = NOTES_JSONL.read_text().splitlines()
    f = tmp_path / "in.jsonl"
    f.write_text("\n".join([good[0], '{"block": "B4"', good[1], json.dumps({"block": "X", "rows": "1", "date": "soon",
                                                                           "observations": []})]) + "\n")
    assert cli.main(["import-notes", str(f), "--db", str(db)]) == 1
    out, err = capsys.readouterr()
    assert "imported 2 sightings" in out
    assert f"{f}:2: not valid JSON" in err and f"{f}:4: date:" in err and "2 lines not imported" in err
    with Store(db) as s:
        assert s.counts()["finalized"] == 2
    ok = tmp_path / "ok.jsonl"
    ok.write_text("\n".join(good[2:5]) + "\n")
    assert cli.main(["--db", str(db), "import-notes", str(ok)]) == 0  # --db before the command works too
    assert "imported 3 sightings" in capsys.readouterr().out
    assert cli.main(["import-notes", str(ok), "--db", str(db)]) == 0
    assert "3 already in the log, skipped" in capsys.readouterr().out
    assert cli.main(["import-notes", str(tmp_path / "missing.jsonl"), "--db", str(db)]) == 1
    assert "no such file" in capsys.readouterr().err


def test_import_notes_keeps_good_lines_around_hostile_ones(db, tmp_path, capsys):
    good = NOTES_JSONL.read_text().splitlines()
    f = tmp_path / "hostile.jsonl"
    nan = good[1].replace('"sampled": ', '"sampled": NaN, "x": ', 1)
    huge = json.dumps({**json.loads(good[2]), "observations": [{"pest": "grape berry moth", "sampled": 2**63}]})
    f.write_text("\n".join([good[0], nan, huge, "[" * 5000 + "]" * 5000, good[3]]) + "\n")
    assert cli.main(["import-notes", str(f), "--db", str(db)]) == 1
    out, err = capsys.readouterr()
    assert "imported 2 sightings" in out and "Traceback" not in err
    assert f"{f}:2: not valid JSON" in err and f"{f}:3: observations[0].sampled:" in err
    assert f"{f}:4: not valid JSON" in err and "3 lines not imported" in err
    assert cli.main(["list", "--db", str(db)]) == 0
    assert "2 sightings" in capsys.readouterr().err


def test_import_notes_carries_risk_class_and_names_a_bad_one(db, tmp_path, capsys):
    first = json.loads(NOTES_JSONL.read_text().splitlines()[0])
    f = tmp_path / "risk.jsonl"
    f.write_text("\n".join(json.dumps(n) for n in [
        {**first, "risk_class": "High"},
        {**first, "block": "B5", "risk_class": "severe"},
        {**first, "block": "B6"},
    ]) + "\n")
    assert cli.main(["import-notes", str(f), "--db", str(db)]) == 1
    out, err = capsys.readouterr()
    assert "imported 2 sightings" in out
    assert f"{f}:2: risk_class: 'severe' is not one of low, intermediate, high" in err
    with Store(db) as s:
        assert {x["block"]: x["risk_class"] for x in s.list_sightings()} == {"B4": "high", "B6": None}
    assert cli.main(["export", "--format", "csv", "--db", str(db)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {r["block"]: r["risk_class"] for r in rows} == {"B4": "high", "B6": ""}


def test_import_notes_takes_nothing_found_walks_and_lists_them(db, tmp_path, capsys):
    """The held-out nothing-found walks (issue 15) import as sightings with no observation."""
    unseen = ROOT / "bench" / "unseen"
    f = tmp_path / "walks.jsonl"
    paths = [unseen / "notes" / "ca-oakville-nothing-found-may.json", unseen / "season-eola-2n" / "week13.json",
             unseen / "notes" / "pa-route5-slf-scouted-zero.json"]
    f.write_text("\n".join(json.dumps(json.loads(p.read_text())) for p in paths) + "\n")
    assert cli.main(["import-notes", str(f), "--db", str(db)]) == 0
    assert "imported 3 sightings" in capsys.readouterr().out
    assert cli.main(["list", "--db", str(db)]) == 0
    out = sorted(line.split("v1", 1)[1].strip() for line in capsys.readouterr().out.splitlines())
    # a walk that scouted for a pest and found none is not listed as a find of it
    assert out == ["nothing found", "nothing found", "nothing found (spotted lanternfly)"], out
    with Store(db) as s:
        assert sorted(len(x["observations"]) for x in s.list_sightings()) == [0, 0, 1]


def test_import_notes_says_which_pest_names_the_catalog_does_not_use(db, tmp_path, capsys):
    k9 = ROOT / "bench" / "unseen" / "notes" / "ny-k9-misspelled-pests.json"
    f = tmp_path / "k9.jsonl"
    f.write_text(json.dumps(json.loads(k9.read_text())) + "\n")
    assert cli.main(["import-notes", str(f), "--db", str(db)]) == 0
    out, err = capsys.readouterr()
    assert "imported 1 sighting" in out
    assert (f"{f}:1: warning: observations[0].pest: 'berry moht': misspelling of grape berry moth (the catalog name)"
            " (imported as written)") in err
    assert "'japanese beatle': misspelling of Japanese beetle" in err and "powdery mildew" not in err


def test_export_formats_to_stdout_and_file(db, tmp_path, capsys):
    ids = imported(db, 4)
    assert cli.main(["export", "--format", "csv", "--db", str(db)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {r["sighting_id"] for r in rows} == set(ids) and len(rows) == 6  # the D3 note has 3 observations
    out = tmp_path / "x.geojson"
    assert cli.main(["export", "--format", "geojson", "-o", str(out), "--db", str(db)]) == 0
    assert "wrote 1 feature" in capsys.readouterr().err
    gj = json.loads(out.read_text())
    assert gj["features"][0]["geometry"]["type"] == "Point"
    assert cli.main(["export", "-f", "jsonl", "--db", str(db)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert {x["id"] for x in lines} == set(ids)


def test_list_prints_ids_and_filters(db, capsys):
    ids = imported(db, 4)
    assert cli.main(["list", "--db", str(db)]) == 0
    out, err = capsys.readouterr()
    assert all(i in out for i in ids) and "4 sightings" in err
    assert cli.main(["list", "--pest", "mildew", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "powdery mildew" in out and "berry moth" not in out


@pytest.mark.parametrize(
    "argv",
    [["export"], ["export", "--format", "xml"], ["frobnicate"], ["--demo", "export", "-f", "csv"],
     ["list", "--limit", "many"]],
)
def test_usage_errors_exit_2(argv, capsys):
    assert cli.main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_help_exits_0(capsys):
    assert cli.main(["--help"]) == 0
    assert "import-notes" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- report
class FakeGenerator:
    """Stands in for edgespec.api.Generator: same stream/record/history/close surface."""

    def __init__(self, chunks=("Summary: ", "moth ", "larvae ", "in 4 of 50 clusters."), *, fail_at=None,
                 interrupt_at=None, findings=()):
        self.chunks, self.fail_at, self.interrupt_at, self.findings = list(chunks), fail_at, interrupt_at, list(findings)
        self.history: list[str] = []
        self.closed = False
        self.note = None
        self.max_tokens = None

    def stream_report(self, note, *, max_tokens=400, cancel=None):
        self.note, self.max_tokens = note, max_tokens
        text, records = "", []
        stop = "eos"
        for i, c in enumerate(self.chunks):
            if i == self.fail_at:
                raise RuntimeError("llama_decode returned -3")
            if i == self.interrupt_at:
                os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C
            if cancel is not None and cancel.is_set():
                stop = "cancelled"
                break
            rec = TokenRecord(token=i, text=c, source="drafted" if i % 2 else "corrected", verified=True,
                              start=len(text), end=len(text) + len(c))
            text += c
            records.append(rec)
            yield Chunk(c, [rec])
        stats = Stats(tokens=len(records), drafted_tokens=4, accepted_tokens=3, wall_s=0.5, stop_reason=stop)
        yield Done(text, [r.token for r in records], records, stats)

    def report_record(self, done):
        return {"text": done.text, "model_pair": {"oracle": "fake-oracle", "drafter": "fake"},
                "policy": {"mode": "balanced"}, "stats": done.stats.to_dict(),
                "provenance": [{"token": r.token, "start": r.start, "end": r.end, "source": r.source,
                                "verified": r.verified} for r in done.records],
                "spans": [], "findings": self.findings}

    def add_to_history(self, text):
        self.history.append(text)

    def close(self):
        self.closed = True


@pytest.fixture
def fake_gen(monkeypatch):
    holder = {"gen": FakeGenerator(), "kwargs": None}

    def factory(**kwargs):
        holder["kwargs"] = kwargs
        return holder["gen"]

    monkeypatch.setattr(cli, "open_generator", factory)
    return holder


def test_report_streams_stores_and_queues_a_complete_report(db, fake_gen, capsys):
    sid = imported(db, 1)[0]
    rc = cli.main(["report", sid[:8], "--db", str(db), "--drafter", "lookup", "--max-tokens", "64"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    gen = fake_gen["gen"]
    assert out.startswith("Summary: moth larvae in 4 of 50 clusters.")
    # the history drafter learns from this log's own reports
    assert fake_gen["kwargs"] == {"drafter": "lookup", "history_db": str(db)} and gen.max_tokens == 64
    assert gen.note["block"] == "B4" and "id" not in gen.note  # the field note, not store fields
    assert gen.closed and gen.history == ["Summary: moth larvae in 4 of 50 clusters."]
    with Store(db) as s:
        (r,) = s.reports_for(sid)
        assert r["status"] == "complete" and r["clean"] and r["text"] == gen.history[0]
        assert r["stats"]["tokens"] == 4 and [p["source"] for p in r["provenance"]][:2] == ["corrected", "drafted"]
        assert [x["kind"] for x in s.outbox_items()] == ["sighting", "report"]
    from vineyard.status import status_line

    # the manager's line, not the engine's figures (those with --details)
    assert f"saved report {r['id']} for sighting {sid}: {status_line(r)}" in err and "acceptance" not in err
    assert status_line(r).startswith("written in ")
    assert cli.main(["report", sid[:8], "--db", str(db), "--details"]) == 0
    assert "acceptance 0.75" in capsys.readouterr().err


def test_make_demos_report_lands_in_the_demo_database(fake_gen, tmp_path, capsys):
    """`make demo` runs `fieldlog report --demo --block B4 --date 2026-07-21`: the app then opens on that report."""
    assert cli.main(["report", "--demo", "--block", "b4", "--date", "2026-07-21"]) == 0
    err = capsys.readouterr().err
    with Store(tmp_path / "userdata" / "demo.db") as s:
        (b4,) = [x for x in s.list_sightings(block="B4", status="finalized", limit=1000) if x["date"] == "2026-07-21"]
        (r,) = s.reports_for(b4["id"])
        from fieldlog_app.database.demo_mark import is_demo

        assert is_demo(s) and r["status"] == "complete" and f"saved report {r['id']}" in err
    assert fake_gen["gen"].note["block"] == "B4" and fake_gen["gen"].note["date"] == "2026-07-21"
    assert not (tmp_path / "userdata" / "fieldlog.db").exists()  # the real log was not touched


@pytest.mark.parametrize("argv, message", [
    (["report"], "give a SIGHTING_ID, or --block with --date"),
    (["report", "--block", "B4"], "--block needs --date"),
    (["report", "--block", "B4", "--date", "21/07/2026"], "is not a day"),
])
def test_report_needs_one_walk(argv, message, db, capsys):
    assert cli.main([*argv, "--db", str(db)]) == 2
    assert message in capsys.readouterr().err


def test_report_names_a_missing_walk(db, capsys):
    imported(db, 1)
    assert cli.main(["report", "--block", "Z9", "--date", "2026-07-21", "--db", str(db)]) == 1
    assert "no finalized sighting of block Z9 on 2026-07-21" in capsys.readouterr().err


def test_review_edits_approves_and_flags_a_stored_report(db, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FIELDLOG_USER", "A. Manager")
    sid = imported(db, 1)[0]
    text = "Summary: Grape berry moth larvae damaged 4 of 50 clusters.\nRisk: moderate.\nAction: Treat the edge."
    with Store(db) as s:
        rid = s.save_report(sid, text=text, model_pair={}, policy={}, stats={}, spans=[], findings=[],
                            provenance=[{"token": 1, "start": 0, "end": len(text), "source": "oracle"}])
    assert cli.main(["list", "--db", str(db)]) == 0
    assert f"report {rid[:8]}" in capsys.readouterr().out  # the id to review by
    fixed = tmp_path / "fixed.txt"
    fixed.write_text(text.replace("4 of 50", "40 of 50") + "\n")
    assert cli.main(["review", rid[:8], "--edit", str(fixed), "--db", str(db)]) == 0
    out, err = capsys.readouterr()
    assert "version 2, edited by A. Manager; the fact check found 1 issue" in out and "wrong_count" in err
    with Store(db) as s:
        v2 = s.get_sighting(sid)["latest_report_id"]
        assert s.get_report(v2)["text"] == text.replace("4 of 50", "40 of 50")  # the editor's newline dropped
    assert cli.main(["review", v2, "--flag", "the count is wrong", "--by", "B. Owner", "--db", str(db)]) == 0
    assert "version 3, flagged by B. Owner" in capsys.readouterr().out
    assert cli.main(["review", rid, "--approve", "--db", str(db)]) == 1  # an old version
    assert "already reviewed" in capsys.readouterr().err
    assert cli.main(["review", rid, "--db", str(db)]) == 2  # nothing asked for
    assert "give --edit FILE, --approve or --flag REASON" in capsys.readouterr().err
    with Store(db) as s:
        assert [r["review_status"] for r in s.report_versions(rid)] == ["generated", "edited", "flagged"]


def test_report_hands_the_risk_class_to_the_generator(db, fake_gen, tmp_path, capsys):
    """The fact check picks the grape berry moth threshold by block risk class: it must reach the note."""
    f = tmp_path / "risk.jsonl"
    f.write_text(json.dumps({**json.loads(NOTES_JSONL.read_text().splitlines()[0]), "risk_class": "HIGH"}) + "\n")
    with Store(db) as s:
        (sid,) = s.import_notes(f).ids
    assert cli.main(["report", sid, "--db", str(db)]) == 0, capsys.readouterr().err
    assert fake_gen["gen"].note["risk_class"] == "high"


def test_report_with_findings_is_saved_but_flagged_and_not_learned(db, fake_gen, capsys):
    sid = imported(db, 1)[0]
    fake_gen["gen"] = FakeGenerator(findings=[{"kind": "number", "message": "8% is not in the note"}])
    assert cli.main(["report", sid, "--db", str(db)]) == 0
    assert "NOT clean" in capsys.readouterr().err
    assert fake_gen["gen"].history == []
    with Store(db) as s:
        assert s.reports_for(sid)[0]["clean"] is False


def test_ctrl_c_cancels_and_keeps_the_partial_text_unsynced(db, fake_gen, capsys):
    sid = imported(db, 1)[0]
    fake_gen["gen"] = FakeGenerator(interrupt_at=2)
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN when pytest was started in the background
    assert cli.main(["report", sid, "--db", str(db)]) == 1
    assert signal.getsignal(signal.SIGINT) is before  # handler restored
    err = capsys.readouterr().err
    assert "cancelled" in err
    with Store(db) as s:
        (r,) = s.reports_for(sid)
        assert r["status"] == "cancelled" and r["text"] == "Summary: moth " and not r["clean"]
        assert r["findings"][0]["kind"] == "incomplete"
        assert [x["kind"] for x in s.outbox_items()] == ["sighting"]
        assert s.get_sighting(sid)["status"] == "finalized"


def test_engine_crash_mid_report_keeps_partial_text_as_failed(db, fake_gen, capsys):
    sid = imported(db, 1)[0]
    fake_gen["gen"] = FakeGenerator(fail_at=3)
    assert cli.main(["report", sid, "--db", str(db)]) == 1
    assert "llama_decode returned -3" in capsys.readouterr().err
    with Store(db) as s:
        (r,) = s.reports_for(sid)
        assert r["status"] == "failed" and r["text"] == "Summary: moth larvae " and r["stats"]["stop_reason"] == "failed"
    fake_gen["gen"] = FakeGenerator(fail_at=0)  # nothing written: nothing stored
    assert cli.main(["report", sid, "--db", str(db)]) == 1
    assert "nothing was stored" in capsys.readouterr().err
    with Store(db) as s:
        assert len(s.reports_for(sid)) == 1


def test_report_errors_are_friendly(db, monkeypatch, capsys):
    sid = imported(db, 1)[0]
    with Store(db) as s:
        draft = s.save_draft({"block": "B4", "observations": []})
        newer = s.revise(sid, {"notes": "edited"})

    def missing(**kw):
        raise ModelFileError("qwen2.5-coder-0.5b-instruct is not in the model cache")

    monkeypatch.setattr(cli, "open_generator", missing)
    assert cli.main(["report", newer, "--db", str(db)]) == 1
    err = capsys.readouterr().err
    assert "edgespec models fetch" in err and "Traceback" not in err
    monkeypatch.setattr(cli, "open_generator", lambda **kw: __import__("edgespec.no_such_engine_module"))
    assert cli.main(["report", newer, "--db", str(db)]) == 1
    err = capsys.readouterr().err
    assert "report engine is not available" in err and "Traceback" not in err
    assert cli.main(["report", draft, "--db", str(db)]) == 1
    assert "not complete enough for a report" in capsys.readouterr().err
    assert cli.main(["report", sid, "--db", str(db)]) == 1
    assert newer in capsys.readouterr().err  # points at the latest version
    assert cli.main(["report", "abc", "--db", str(db)]) == 1
    assert "at least 4 characters" in capsys.readouterr().err
    assert cli.main(["report", "ffffffff", "--db", str(db)]) == 1
    assert "no sighting" in capsys.readouterr().err
    assert cli.main(["report", newer, "--max-tokens", "0", "--db", str(db)]) == 2


# ---------------------------------------------------------------------------------------------- sync hook
def test_sync_subcommands_register_through_the_hook(db, monkeypatch, capsys):
    seen = {}

    def register(sub):
        p = sub.add_parser("sync", help="sync with the farm office")
        p.add_argument("--server")
        p.add_argument("--db", default=argparse.SUPPRESS)
        p.set_defaults(func=lambda args: seen.update(db=args.db_path, server=args.server) or 0)

    pkg = types.ModuleType("fieldlog_app.sync")
    pkg.__path__ = []
    mod = types.ModuleType("fieldlog_app.sync.cli")
    mod.register = register
    monkeypatch.setitem(sys.modules, "fieldlog_app.sync", pkg)
    monkeypatch.setitem(sys.modules, "fieldlog_app.sync.cli", mod)
    monkeypatch.setattr(fieldlog_app, "sync", pkg, raising=False)
    pkg.cli = mod
    assert cli.main(["sync", "--server", "http://office:8080", "--db", str(db)]) == 0
    assert seen == {"db": db, "server": "http://office:8080"}


def test_a_broken_sync_module_does_not_break_other_commands(db, monkeypatch, capsys):
    pkg = types.ModuleType("fieldlog_app.sync")
    pkg.__path__ = []
    broken = types.ModuleType("fieldlog_app.sync.cli")  # no register(): ImportError on `from ... import register`
    monkeypatch.setitem(sys.modules, "fieldlog_app.sync", pkg)
    monkeypatch.setitem(sys.modules, "fieldlog_app.sync.cli", broken)
    monkeypatch.setattr(fieldlog_app, "sync", pkg, raising=False)
    pkg.cli = broken
    assert cli.main(["list", "--db", str(db)]) == 0
    assert "sync commands unavailable" in capsys.readouterr().err
