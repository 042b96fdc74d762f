"""The manager's status line of a report (vineyard.status): seconds, and the span audit's share of pest facts the
oracle checked; the engineer's figures only on request (`edgespec generate --details`)."""

from __future__ import annotations

import json
import math

from edgespec import cli
from edgespec.spans import audit
from vineyard import fieldnote, status
from vineyard.review import edit_provenance
from vineyard.spans import default_policy
from test_writer import NOTE_PATH, installed_writer, note, sigint, writer  # noqa: F401  (fixtures)


def _record(writer, max_tokens=48):
    done = list(writer.stream_report(note(), max_tokens=max_tokens))[-1]
    return done, writer.report_record(done)


def test_a_generated_report_says_its_seconds_and_the_audits_checked_share(writer):
    done, rec = _record(writer)
    expected = audit(default_policy(fieldnote.validate(note())).find_spans(done.text), done.records, done.text)
    assert expected.critical_tokens > 0
    share, by_person = status.checked_share(rec)
    assert share == expected.critical_verified_rate and by_person is False
    line = status.status_line(rec)
    pct = "100" if share == 1 else str(min(math.floor(100 * share), 99))
    assert line == f"written in {rec['stats']['wall_s']:.1f} s · checked by the large model: {pct}% of pest facts" + (
        "" if share == 1 else " (the rest not checked)")
    assert "acceptance" not in line and "oracle passes" not in line
    # the same from the stored shape (JSON columns as text)
    stored = {k: json.dumps(v) if k in ("stats", "spans", "provenance") else v for k, v in rec.items()}
    assert status.status_line(stored) == line


def test_a_persons_edit_inside_a_fact_is_not_counted_as_checked(writer):
    done, rec = _record(writer)
    spans = [s for s in rec["spans"] if s["text"].strip()]
    assert spans, done.text
    s = spans[0]
    new_text = done.text[:s["start"]] + "X" * (s["end"] - s["start"]) + done.text[s["end"]:]
    prov = edit_provenance(done.text, rec["provenance"], new_text)
    # the same offsets (as long as before): the span the person overwrote is where it was
    edited = {**rec, "text": new_text, "provenance": prov}
    share, by_person = status.checked_share(edited)
    assert share < status.checked_share(rec)[0] and by_person
    assert status.status_line(edited).endswith("of pest facts (the rest typed by a person)")


def test_unverified_and_person_tokens_in_a_span_lower_the_share():
    text = "4 of 50 clusters"
    rec = {"text": text, "stats": {"wall_s": 6.24},
           "spans": [{"start": 0, "end": 1, "kind": "count", "value": "4"},
                     {"start": 5, "end": 7, "kind": "count", "value": "50"}],
           "provenance": [{"token": 1, "start": 0, "end": 1, "source": "data", "verified": True},
                          {"token": 2, "start": 1, "end": 5, "source": "oracle", "verified": True},
                          {"token": 3, "start": 5, "end": 7, "source": "unverified", "verified": False},
                          {"token": 4, "start": 7, "end": 16, "source": "oracle", "verified": True}]}
    assert status.status_line(rec) == ("written in 6.2 s · checked by the large model: 50% of pest facts "
                                       "(the rest not checked)")
    rec["provenance"][2] = {"token": None, "start": 5, "end": 7, "source": "person", "verified": False}
    assert status.status_line(rec).endswith("50% of pest facts (the rest typed by a person)")
    assert status.status_line({"text": "x", "stats": {"wall_s": 1.0}}) == "written in 1.0 s · no pest facts to check"
    # 199 of 200 checked is not "100%"
    many = {"text": "a" * 200, "spans": [{"start": 0, "end": 200, "kind": "count", "value": "a"}],
            "provenance": [{"token": i, "start": i, "end": i + 1, "source": "oracle", "verified": i != 7}
                           for i in range(200)]}
    assert status.status_line(many) == "checked by the large model: 99% of pest facts (the rest not checked)"


def test_cli_prints_the_headline_and_the_engine_figures_only_with_details(installed_writer, tiny_oracle_path,
                                                                         tiny_drafter_close_path, capsys, sigint):
    argv = ["generate", "--notes", str(NOTE_PATH), "--oracle", str(tiny_oracle_path), "--drafter", "model",
            "--draft-model", str(tiny_drafter_close_path), "--n-ctx", "1024", "--threads", "1",
            "--power-mode", "performance", "--max-tokens", "32"]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "checked by the large model:" in err and "written in " in err
    assert "acceptance" not in err and "oracle passes" not in err
    assert cli.main(argv + ["--details"]) == 0
    err = capsys.readouterr().err
    assert "checked by the large model:" in err and "acceptance" in err and "oracle passes" in err
