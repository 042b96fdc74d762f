"""The office oracle check against a real llama-cpp-python server (``python -m llama_cpp.server``) on loopback,
serving the suite's tiny GGUF models; only the garbage-answer server is a fake (it tests our parsing)."""

from __future__ import annotations

import http.server
import json
import re
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from edgespec.api import open_generator
from edgespec.events import Done
from fieldlog_app.database import Store
from fieldlog_app.database.payloads import note_of
from fieldlog_app.office import check, check_queue
from fieldlog_app.office.accounts import Office
from fieldlog_app.office.demo import _upload
from fieldlog_app.sync.protocol import PROTOCOL
from fieldlog_app.sync.app import create_app
from fieldlog_app.sync.server import ServerDB
from fieldlog_app.sync.server_cli import main as server_main
from fieldlog_app.sync.common import SyncError
from fieldlog_app.sync.client import fetch_office_checks
from fieldlog_app.sync.testing import ThreadServer, free_port, wait_for
from vineyard import schema
from vineyard.writer import ReportWriter

pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] is not installed")

NOTE = Path(__file__).resolve().parents[1] / "vineyard" / "samples" / "notes" / "b4-berry-moth.json"
N_CTX = 4096  # the tiny byte-level models spend a token per character: prompt and report need ~1,800


class LlamaServer:
    """``python -m llama_cpp.server`` on a free loopback port, stopped (and waited for) on exit."""

    def __init__(self, model: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--logits_all", "true", "--host",
             "127.0.0.1", "--port", str(self.port), "--n_ctx", str(N_CTX), "--n_threads", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def up(self) -> bool:
        try:
            return httpx.get(self.url + "/v1/models", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def __enter__(self) -> str:
        # a liveness deadline, not a speed bound: loading a tiny model takes about a second
        if not wait_for(lambda: self.up() or self.proc.poll() is not None, timeout=120, interval=0.2) or not self.up():
            err = self.proc.stderr.read().decode(errors="replace")[-2000:] if self.proc.poll() is not None else ""
            self.__exit__()
            raise RuntimeError(f"llama_cpp.server did not come up: {err}")
        return self.url

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stderr.close()


@pytest.fixture(scope="module")
def oracle_url(tiny_oracle_path):
    """The handheld's own tiny oracle, served as the office model."""
    with LlamaServer(tiny_oracle_path) as url:
        yield url


@pytest.fixture(scope="module")
def other_vocab_url(tiny_other_vocab_path):
    """Another model with another tokenizer, served as the office model."""
    with LlamaServer(tiny_other_vocab_path) as url:
        yield url


@pytest.fixture(scope="module")
def field_report(tiny_oracle_path):
    """(note, record) of the sample note's report written greedily by the tiny oracle under the report grammar."""
    store = Store(":memory:")
    sid = store.save_draft(json.loads(NOTE.read_text()))
    note = note_of(store.get_sighting(sid))
    store.close()
    writer = ReportWriter(open_generator(oracle=str(tiny_oracle_path), drafter="none", n_ctx=N_CTX, n_threads=1,
                                         power_mode="performance"))
    try:
        done = [ev for ev in writer.stream_report(note, max_tokens=2000) if isinstance(ev, Done)][0]
        record = writer.report_record(done)
    finally:
        writer.close()
    assert schema.written_fields(record["text"]) is not None, "the tiny oracle did not finish its report"
    return note, record


def office_with(tmp_path, record: dict, text: str | None = None) -> tuple[ServerDB, str, str]:
    """A fresh office database holding the sample sighting and its report (text replaced if given), uploaded
    from a device store as a sync does; (db, report id, device token)."""
    sdb = ServerDB(tmp_path / "office.sqlite3")
    token = sdb.add_device("handheld-1")
    store = Store(":memory:")
    sid = store.save_draft(json.loads(NOTE.read_text()))
    store.finalize(sid)
    rid = store.save_report(sid, text=text if text is not None else record["text"], model_pair=record["model_pair"],
                            policy=record["policy"], stats=record["stats"], provenance=record["provenance"],
                            spans=record["spans"], findings=record["findings"])
    _upload(sdb, store, "handheld-1")
    store.close()
    return sdb, rid, token


def changed_summary(text: str) -> tuple[str, int]:
    """The report with the first six characters of its summary replaced; (text, where)."""
    a, _ = schema.written_fields(text)["summary"]
    return text[:a] + "QQQQQQ" + text[a + 6:], a


def logged_in_client(sdb: ServerDB) -> TestClient:
    Office(sdb).add_user("maria", "a-long-password-1", "manager")
    c = TestClient(create_app(sdb), base_url="http://office.test")
    page = c.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    assert c.post("/login", data={"csrf": csrf, "name": "maria", "password": "a-long-password-1", "next": ""},
                  follow_redirects=False).status_code == 303
    return c


# ---------------------------------------------------------------------------------- the real server
def test_the_report_the_office_model_would_write_has_no_findings(tmp_path, oracle_url, field_report):
    _, record = field_report
    sdb, rid, _ = office_with(tmp_path, record)
    assert check_queue.check_of(sdb, rid)["status"] == "awaiting"
    got = check_queue.run_check(sdb, check.OracleConfig(oracle_url, model="tiny-oracle"), rid)
    assert got["status"] == "checked", got["error"]
    assert got["findings"] == []
    assert got["model"] == "tiny-oracle" and got["checked_at"]
    by_field = got["summary"]["by_field"]
    assert set(by_field) == {"summary", "risk", "action"}
    assert all(agree == total > 0 for agree, total in by_field.values())
    # the tiny model adds no BOS: llama-cpp-python lists each token with the distribution after it
    assert got["summary"]["layout"]["shifted"] is True
    assert check_queue.pending_reports(sdb, due_only=False) == []


def test_a_changed_field_is_a_disagreement_at_that_span_on_the_page_and_back_on_the_device(tmp_path, oracle_url,
                                                                                          field_report):
    _, record = field_report
    text, where = changed_summary(record["text"])
    sdb, rid, token = office_with(tmp_path, record, text)
    got = check_queue.run_check(sdb, check.OracleConfig(oracle_url), rid)
    assert got["status"] == "checked", got["error"]
    hits = [f for f in got["findings"] if where <= f["start"] < where + 6]
    assert hits and hits[0]["field"] == "summary" and hits[0]["gap_nats"] > check.DEFAULT_MARGIN
    assert "field report says 'QQQQQQ" in hits[0]["message"] and hits[0]["message"].startswith("office model would write")

    page = logged_in_client(sdb).get(f"/reports/{rid}")
    assert page.status_code == 200
    assert "office-disagreement" in page.text and "Checked by" in page.text

    c = TestClient(create_app(sdb))
    back = c.get("/v1/office-checks", headers={"Authorization": f"Bearer {token}"})
    assert back.status_code == 200
    [mine] = back.json()["checks"]
    assert mine["report_id"] == rid and mine["status"] == "checked"
    assert any(f["start"] == hits[0]["start"] for f in mine["findings"])
    with ThreadServer(create_app(sdb)) as srv:  # the device's client over real HTTP
        [fetched] = fetch_office_checks(srv.url, token)
        assert fetched["report_id"] == rid and fetched["findings"] == mine["findings"]
        assert fetch_office_checks(srv.url, token, since=fetched["updated_at"]) == []
        with pytest.raises(SyncError, match="401"):
            fetch_office_checks(srv.url, "fl_not-a-token")
    other = sdb.add_device("handheld-2")
    assert c.get("/v1/office-checks", headers={"Authorization": f"Bearer {other}"}).json()["checks"] == []
    assert c.get("/v1/office-checks").status_code == 401


def test_an_office_model_with_another_tokenizer_is_aligned_on_characters(other_vocab_url, field_report):
    note, record = field_report
    text = record["text"]
    config = check.OracleConfig(other_vocab_url)
    answer = check.request_scores(config, check.build_prompt(note) + text)
    positions, layout = check.parse_scores(answer, text, config.top_logprobs, check.build_prompt(note) + text)
    fields = schema.written_fields(text)
    assert positions
    for p in positions:  # every office token sits on the report characters it spells
        if p.text.isascii():
            assert text[p.start:p.end] == p.text
    covered = {i for p in positions for i in range(p.start, p.end)}
    for a, b in fields.values():
        ascii_chars = [i for i in range(a, b) if text[i].isascii()]
        assert sum(i in covered for i in ascii_chars) >= 0.9 * len(ascii_chars)
    # and the judgment runs on that alignment (another random model disagrees a lot; it must not crash)
    findings, summary = check.judge(positions, text, record["spans"])
    assert summary["positions"] > 0 and len(findings) <= check.MAX_FINDINGS


def test_the_cli_checks_pending_reports_one_line_each(tmp_path, oracle_url, field_report, capsys):
    _, record = field_report
    sdb, rid, _ = office_with(tmp_path, record)
    db = str(tmp_path / "office.sqlite3")
    assert server_main(["check", "--oracle-url", oracle_url, "--model", "tiny", "--db", db]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith(f"{rid}: checked by tiny: 0 disagreement(s)")
    assert server_main(["check", "--oracle-url", oracle_url, "--db", db]) == 0
    assert capsys.readouterr().out.strip() == "no reports awaiting an office check"


# ---------------------------------------------------------------------------------- unreachable oracle
def test_an_unreachable_oracle_leaves_reports_awaiting_and_sync_and_the_page_work(tmp_path, field_report, capsys):
    _, record = field_report
    sdb, rid, token = office_with(tmp_path, record)
    dead = check.OracleConfig(f"http://127.0.0.1:{free_port()}", timeout=5)
    checker = check_queue.OfficeChecker(sdb, dead, concurrency=2, poll_interval=0.05).start()
    try:
        assert wait_for(lambda: check_queue.check_of(sdb, rid)["attempts"] >= 1, timeout=30)
        got = check_queue.check_of(sdb, rid)
        assert got["status"] == "awaiting" and "ConnectError" in got["error"] and got["next_attempt_at"]
        assert check_queue.pending_reports(sdb) == []  # not due again until its backoff has passed
        assert check_queue.pending_reports(sdb, due_only=False) == [rid]
        # sync goes on while the queue runs: a second device's upload is answered at once
        store = Store(":memory:")
        sid = store.save_draft({**json.loads(NOTE.read_text()), "date": "2026-07-28"})
        store.finalize(sid)
        item = store.outbox_items()[0]
        batch = {"protocol": PROTOCOL, "batch_id": str(uuid.uuid4()), "items": [{"item_id": item["item_id"], "kind": item["kind"],
                                               "replaces": item["replaces"], "sha256": item["sha256"],
                                               "payload": json.loads(item["payload"])}]}
        resp = TestClient(create_app(sdb)).post("/v1/batches", json=batch, headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 200 and resp.json()["accepted"] == 1
        page = logged_in_client(sdb).get(f"/reports/{rid}")
        assert "Awaiting office check" in page.text
    finally:
        checker.stop(timeout=30)
    assert server_main(["check", "--oracle-url", dead.url, "--db", str(tmp_path / "office.sqlite3")]) == 1
    assert "awaiting office check (" in capsys.readouterr().out


def test_the_backoff_doubles_and_is_capped():
    assert [check_queue.backoff(n) for n in (1, 2, 3)] == [10.0, 20.0, 40.0]
    assert check_queue.backoff(50) == 900.0


# ---------------------------------------------------------------------------------- broken answers
class _Garbage(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_POST(self):  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


GARBAGE = {
    "not-json": (b"<html>proxy error</html>", "not JSON"),
    "nan": (b'{"choices": [{"logprobs": {"tokens": ["a"], "text_offset": [0], "token_logprobs": [NaN], '
            b'"top_logprobs": [null]}}]}', "not JSON"),
    "no-logprobs": (json.dumps({"choices": [{"text": "x", "logprobs": None}]}).encode(), "logits_all"),
    "short-lists": (json.dumps({"choices": [{"logprobs": {"tokens": ["a", "b"], "text_offset": [0],
                                                          "token_logprobs": [None, -1.0],
                                                          "top_logprobs": [None, {}]}}]}).encode(), "text_offset"),
    "other-text": (json.dumps({"choices": [{"logprobs": {"tokens": ["zz"] * 40, "text_offset": list(range(0, 80, 2)),
                                                         "token_logprobs": [-1.0] * 40,
                                                         "top_logprobs": [{"zz": -1.0}] * 40}}]}).encode(),
                   "line up"),
    "oversized": (b'{"choices": "' + b"x" * 50_000 + b'"}', "larger than"),
}


@pytest.mark.parametrize("name", sorted(GARBAGE))
def test_a_malformed_or_oversized_answer_is_a_recorded_error(tmp_path, field_report, name):
    _, record = field_report
    sdb, rid, _ = office_with(tmp_path, record)
    handler = type("H", (_Garbage,), {"body": GARBAGE[name][0]})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        config = check.OracleConfig(f"http://127.0.0.1:{srv.server_address[1]}", max_answer_bytes=10_000, timeout=10)
        got = check_queue.run_check(sdb, config, rid)
    finally:
        srv.shutdown()
        srv.server_close()
    assert got["status"] == "error"
    assert GARBAGE[name][1] in got["error"]
    assert check_queue.pending_reports(sdb, due_only=False) == []  # not retried by the queue...
    assert check_queue.pending_reports(sdb, due_only=False, retry_errors=True) == [rid]  # ...until asked


def test_oracle_configuration_is_checked():
    with pytest.raises(ValueError, match="http"):
        check.OracleConfig("ftp://office")
    with pytest.raises(ValueError, match="top_logprobs"):
        check.OracleConfig("http://x", top_logprobs=0)
    assert check.OracleConfig("http://x:8000/v1").endpoint == "http://x:8000/v1/completions"


# ---------------------------------------------------------------------------------- the OpenAI layout (vLLM)
def _openai_layout(prompt_visible: str, report: str, gap_at: int | None = None) -> dict:
    """An echo+logprobs answer in the OpenAI layout vLLM returns (each token scored by the distribution before
    it, the generated token listed last), one token per character; at ``gap_at`` the best alternative is "Z",
    5 nats above the report's character."""
    text = prompt_visible + report
    tokens = list(text) + ["\n"]
    offsets = list(range(len(text) + 1))
    lps, tops = [None], [None]
    for i, t in enumerate(tokens[1:], 1):
        if gap_at is not None and i == len(prompt_visible) + gap_at:
            lps.append(-6.0)
            tops.append({t: -6.0, "Z": -1.0})
        else:
            lps.append(-0.5)
            tops.append({t: -0.5, "Z": -4.0})
    return {"model": "served-name", "choices": [{"text": text + "\n", "logprobs": {
        "tokens": tokens, "text_offset": offsets, "token_logprobs": lps, "top_logprobs": tops}}],
        "usage": {"prompt_tokens": len(text), "completion_tokens": 1}}


def test_the_openai_layout_is_read_without_the_shift_and_judged(field_report):
    _, record = field_report
    report = record["text"]
    a, _ = schema.written_fields(report)["summary"]
    prompt_visible = "system\nYou write reports.\nuser\nnote\nassistant\n"
    positions, layout = check.parse_scores(_openai_layout(prompt_visible, report), report, 5,
                                           "<|im_start|>" + prompt_visible + report)
    assert layout["shifted"] is False
    assert [p.start for p in positions] == list(range(len(report)))
    assert all(report[p.start:p.end] == p.text and p.logprob == -0.5 for p in positions)
    findings, summary = check.judge(positions, report, record["spans"])
    assert findings == [] and summary["positions"] > 0

    positions, _ = check.parse_scores(_openai_layout(prompt_visible, report, gap_at=a + 3), report, 5)
    findings, _ = check.judge(positions, report, record["spans"])
    assert [(f["start"], f["field"], f["gap_nats"]) for f in findings] == [(a + 3, "summary", 5.0)]
