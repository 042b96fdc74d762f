"""Exports carry each sighting's latest report text; GeoJSON says how many sightings it left out (no GPS)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from fieldlog_app import cli
from fieldlog_app.database import Store
from fieldlog_app.database.exporting import Exporter

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "vineyard" / "samples" / "notes"


def sample(name: str) -> dict:
    return json.loads((SAMPLES / f"{name}.json").read_text())


def report(store: Store, sid: str, text: str, status: str = "complete") -> str:
    return store.save_report(sid, text=text, status=status, model_pair={}, policy={}, stats={},
                             provenance=[], spans=[], findings=[])


@pytest.fixture
def filled(tmp_path):
    db = tmp_path / "f.db"
    with Store(db) as s:
        ids = {n: s.finalize(s.save_draft(sample(n))) for n in ("b4-berry-moth", "d3-mixed", "a1-short")}
        report(s, ids["d3-mixed"], "old text")
        report(s, ids["d3-mixed"], "Summary: mites, beetles and =botrytis.")  # the latest complete one is exported
        report(s, ids["b4-berry-moth"], "half a report", status="cancelled")  # not complete: not exported
    return db, ids


def test_csv_and_jsonl_carry_the_latest_complete_report_text(filled):
    db, ids = filled
    with Store(db, readonly=True) as s:
        buf = io.StringIO()
        Exporter(s).export("csv", buf)
        rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
        d3 = [r for r in rows if r["sighting_id"] == ids["d3-mixed"]]
        assert len(d3) == 3 and {r["report_text"] for r in d3} == {"Summary: mites, beetles and =botrytis."}
        assert {r["report_text"] for r in rows if r["sighting_id"] == ids["b4-berry-moth"]} == {""}
        buf = io.StringIO()
        Exporter(s).export("jsonl", buf)
        by_id = {x["id"]: x for x in map(json.loads, buf.getvalue().splitlines())}
    assert by_id[ids["d3-mixed"]]["report_text"] == "Summary: mites, beetles and =botrytis."
    assert by_id[ids["b4-berry-moth"]]["report_text"] is None


def test_a_jsonl_export_with_report_text_imports_back(filled, tmp_path):
    db, ids = filled
    out = tmp_path / "x.jsonl"
    with Store(db, readonly=True) as s:
        Exporter(s).export("jsonl", out)
    with Store(tmp_path / "other.db") as other:
        res = other.import_notes(out)
    assert (res.imported, res.errors) == (3, [])


def test_geojson_counts_the_sightings_left_out_for_lacking_gps(filled, tmp_path):
    db, ids = filled  # only B4 has coordinates
    out = tmp_path / "x.geojson"
    with Store(db, readonly=True) as s:
        result = Exporter(s).export("geojson", out)
    gj = json.loads(out.read_text())
    assert (result.written, result.sightings, result.without_gps) == (1, 3, 2)
    assert gj["sightings_without_gps"] == 2 and [f["id"] for f in gj["features"]] == [ids["b4-berry-moth"]]


def test_cli_export_says_how_many_sightings_the_map_left_out(filled, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(cli.ENV_DB, raising=False)
    db, _ = filled
    out = tmp_path / "x.geojson"
    assert cli.main(["export", "--format", "geojson", "-o", str(out), "--db", str(db)]) == 0
    err = capsys.readouterr().err
    assert "wrote 1 feature" in err and "2 sightings left out of the map: no GPS position" in err
    assert cli.main(["export", "--format", "csv", "--db", str(db)]) == 0
    out_, err = capsys.readouterr()
    assert "left out" not in err and "report_text" in out_.splitlines()[0]


def test_an_unknown_format_is_a_clear_error(filled):
    db, _ = filled
    with Store(db, readonly=True) as s, pytest.raises(Exception, match="format: 'xml' is not one of"):
        Exporter(s).export("xml", io.StringIO())
