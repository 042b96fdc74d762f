"""vineyard.writer.ReportWriter over a real Generator on tiny models, and the edgespec CLI loading it by entry point."""

from __future__ import annotations

import dataclasses
import json
import signal
import tomllib
from pathlib import Path

import pytest

from edgespec import EdgespecError, cli, plugins
from edgespec.api import PowerDeferred, open_generator
from edgespec.events import Chunk, Done
from edgespec.spans import audit
from vineyard import FieldNoteError, facts, fieldnote, schema
from vineyard.spans import CatalogSpanPolicy, default_policy
from vineyard.writer import ReportWriter

ROOT = Path(__file__).resolve().parents[1]
NOTE_PATH = ROOT / "vineyard" / "samples" / "notes" / "b4-berry-moth.json"
REPORT_KEYS = ["text", "model_pair", "policy", "stats", "provenance", "spans", "findings"]


@pytest.fixture(scope="module")
def writer(tiny_oracle_path, tiny_drafter_close_path):
    w = ReportWriter(open_generator(oracle=str(tiny_oracle_path), drafter="model", draft_model=str(tiny_drafter_close_path),
                                    n_ctx=1024, n_threads=1, power_mode="performance"))
    yield w
    w.close()


def note() -> dict:
    return json.loads(NOTE_PATH.read_text())


def test_a_report_is_never_cut_short_by_the_default_budget(tiny_oracle_path):
    """The tiny random oracle writes its fields to the grammar's bounds (the longest report there is): with the
    default budget its report still ends where the grammar ends it, with all three written fields."""
    w = ReportWriter(open_generator(oracle=str(tiny_oracle_path), drafter="none", n_ctx=4096, n_threads=1,
                                    power_mode="performance"))
    try:
        n = note()
        done = list(w.stream_report(n))[-1]
    finally:
        w.close()
    assert done.stats.tokens > 400  # what the budget was before: this report would have been cut
    assert done.stats.stop_reason != "length" and schema.written_fields(done.text) is not None
    assert len(done.text) <= schema.max_report_chars(fieldnote.validate(n))


def test_done_is_domain_free():
    assert [f.name for f in dataclasses.fields(Done)] == ["text", "tokens", "records", "stats"]


def test_report_record_is_the_stored_shape(writer):
    events = list(writer.stream_report(note(), max_tokens=48))
    done = events[-1]
    assert isinstance(done, Done) and all(isinstance(e, Chunk) for e in events[:-1])
    rec = writer.report_record(done)
    assert list(rec) == REPORT_KEYS
    json.dumps(rec)
    # the audit and the fact check of the finished text, from one policy built for the validated note
    valid = fieldnote.validate(note())
    spans = default_policy(valid).find_spans(done.text)
    expected = audit(spans, done.records, done.text)
    assert rec["spans"] == expected.spans
    assert rec["findings"] == [f.to_dict() for f in facts.check_report(done.text, note())]
    assert rec["stats"]["critical_verified_rate"] == expected.critical_verified_rate
    assert rec["stats"]["other_verified_rate"] == expected.other_verified_rate
    assert rec["stats"]["power_mode"] == "performance" == rec["policy"]["mode"]
    assert rec["model_pair"] == writer.model_pair and rec["model_pair"]["drafter"] == "model"
    assert len(rec["provenance"]) == done.stats.tokens > 0
    assert rec["text"] == done.text == "".join(e.text for e in events[:-1])


def test_each_step_runs_once_per_report(writer, monkeypatch):
    """Validate, build the span policy, find the report's spans, check the facts: once each along one report."""
    calls = {"validate": 0, "policy": 0, "check": 0}
    searched = []  # texts spans were looked for in (the fact check also reads the note's own free text)

    def counting(name, fn):
        def wrapped(*a, **kw):
            calls[name] += 1
            return fn(*a, **kw)
        return wrapped

    monkeypatch.setattr(fieldnote, "validate", counting("validate", fieldnote.validate))
    monkeypatch.setattr(facts, "validate", counting("validate", facts.validate))  # check_report would validate again
    monkeypatch.setattr(CatalogSpanPolicy, "_compile", counting("policy", CatalogSpanPolicy._compile))
    find_spans = CatalogSpanPolicy.find_spans
    monkeypatch.setattr(CatalogSpanPolicy, "find_spans", lambda self, text, *a: (searched.append(text), find_spans(self, text, *a))[1])
    monkeypatch.setattr(facts, "Facts", counting("check", facts.Facts))
    done = list(writer.stream_report(note(), max_tokens=16))[-1]
    writer.report_record(done)
    assert calls == {"validate": 1, "policy": 1, "check": 1}
    assert searched.count(done.text) == 1 and done.text


def test_bad_input_is_refused_before_any_model_work(writer, monkeypatch):
    def no_model_work(*a, **kw):
        raise AssertionError("the oracle ran for a note that should have been refused")

    monkeypatch.setattr(writer.generator, "chat_prompt", no_model_work)
    with pytest.raises(FieldNoteError, match=r"observations\[0\]\.sampled"):
        next(writer.stream_report({**note(), "observations": [{**note()["observations"][0], "sampled": 0}]}))
    critical = dataclasses.replace(writer.generator.power_policy, mode="critical", run_now=False)
    monkeypatch.setattr(writer.generator, "power_policy", critical)
    with pytest.raises(PowerDeferred, match="critical"):
        next(writer.stream_report(note()))


def test_record_of_another_stream_is_refused(writer):
    done = list(writer.stream_report(note(), max_tokens=8))[-1]
    gen = writer.generator
    raw = list(gen.stream(gen.raw_prompt("the vine row"), gen.generation_params(max_tokens=4)))[-1]
    with pytest.raises(ValueError, match="not the last report"):
        writer.report_record(raw)
    assert list(gen.record(raw)) == REPORT_KEYS[:5]  # a plain generation has no spans or findings
    assert writer.report_record(done)["text"] == done.text


# --------------------------------------------------------------------------- the CLI's plugin


def declared_writer() -> str:
    """What pyproject.toml registers as the `notes` writer."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return meta["project"]["entry-points"][plugins.GROUP]["notes"]


@pytest.fixture
def installed_writer(tmp_path, monkeypatch):
    """The pyproject's entry point as an installed distribution would carry it (the shared venv may predate it)."""
    dist = tmp_path / "vineyard_writer_test-0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: vineyard-writer-test\nVersion: 0\n")
    (dist / "entry_points.txt").write_text(f"[{plugins.GROUP}]\nnotes = {declared_writer()}\n")
    monkeypatch.syspath_prepend(str(tmp_path))


@pytest.fixture
def sigint():
    """cmd_generate installs a SIGINT handler; put the test runner's back."""
    before = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, before)


def test_pyproject_registers_the_report_writer(installed_writer):
    assert declared_writer() == "vineyard.writer:ReportWriter"
    assert plugins.load_writer("notes") is ReportWriter


def test_missing_writer_is_a_clear_error(monkeypatch, capsys, sigint):
    with pytest.raises(EdgespecError, match=r"no report writer 'nope'.*edgespec\.writers"):
        plugins.load_writer("nope")
    monkeypatch.setattr(plugins, "entry_points", lambda **kw: ())
    assert cli.main(["generate", "--notes", str(NOTE_PATH), "--oracle", "/nonexistent.gguf"]) == 1
    assert "no report writer 'notes'" in capsys.readouterr().err


def test_cli_reads_the_notes_before_loading_a_model(installed_writer, tmp_path, capsys, sigint):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**note(), "date": "21/07/2026"}))
    assert cli.main(["generate", "--notes", str(bad), "--oracle", "/nonexistent.gguf"]) == 1
    err = capsys.readouterr().err
    assert "date" in err and "ISO date" in err and "nonexistent" not in err


def test_cli_generate_notes_goes_through_the_writer(installed_writer, writer, tiny_oracle_path,
                                                    tiny_drafter_close_path, capsys, sigint):
    argv = ["generate", "--notes", str(NOTE_PATH), "--oracle", str(tiny_oracle_path), "--drafter", "model",
            "--draft-model", str(tiny_drafter_close_path), "--n-ctx", "1024", "--threads", "1",
            "--power-mode", "performance", "--max-tokens", "32", "--json"]
    assert cli.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == ["text", "tokens", "stats", "model_pair", "policy", "spans", "findings"]
    done = list(writer.stream_report(note(), max_tokens=32))[-1]
    rec = writer.report_record(done)
    assert (out["text"], out["tokens"]) == (done.text, done.tokens)  # greedy: the same report
    # who drafted which token depends on what each engine has learned; where the spans are does not
    where = [[(s["start"], s["end"], s["kind"], s["value"]) for s in r["spans"]] for r in (out, rec)]
    assert where[0] == where[1] and out["findings"] == rec["findings"]
    assert out["stats"]["critical_verified_rate"] == rec["stats"]["critical_verified_rate"]
    assert out["model_pair"] == rec["model_pair"] and out["policy"]["mode"] == "performance"
