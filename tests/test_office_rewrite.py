"""The office rewrite (fieldlog_app/office/rewrite.py) against a real llama-cpp-python server on loopback, and the
report grammar's automaton it hands over with (vineyard/report_automaton.py).

The office model here is a tiny Q8_0 model on the byte vocabulary ("c": a text has one tokenization, so the
server's re-tokenized prompts are the token sequence the model wrote), served with flash attention off and an
F32 KV cache: llama.cpp's CPU kernels are then bit-identical whatever the batch (edgespec/testing/tiny_gguf.py),
so "the office model's own greedy output" is one exact text and the rewrite must equal it character for
character. The field report is the handheld's tiny oracle's, another model with another tokenizer (vocab a): the
two part now and then, as a handheld and an office do. On these random models the written fields are runs of
arbitrary bytes (multi-byte characters the server lists as empty tokens stop an acceptance), so the rewrite takes
many requests here; that is the test model, not the method."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import llama_cpp
import pytest

from fieldlog_app.office import check, check_queue, rewrite
from fieldlog_app.sync.server_cli import main as server_main
from fieldlog_app.sync.testing import free_port
from test_office_check import (GARBAGE, N_CTX, NOTE, LlamaServer, _Garbage, changed_summary, field_report,  # noqa: F401
                               logged_in_client, office_with)
from vineyard import fieldnote, schema
from vineyard.report_automaton import ReportAutomaton

pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] is not installed")


class ExactServer(LlamaServer):
    """The server with batch-invariant numerics: flash attention off, F32 KV cache (GGML type 0)."""

    def __init__(self, model):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--logits_all", "true", "--host",
             "127.0.0.1", "--port", str(self.port), "--n_ctx", str(N_CTX), "--n_threads", "1",
             "--flash_attn", "false", "--type_k", "0", "--type_v", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def office_url(tiny_gguf):
    with ExactServer(tiny_gguf(vocab="c", n_layer=2, seed=1, dtype="q8_0")) as url:
        yield url


def exact(url: str, **kw) -> check.OracleConfig:
    """The office's configuration for these tests: generation kept to ASCII bytes (logit_bias on the byte tokens
    0x80-0xFF and the specials), because a random model's bytes are mostly not UTF-8 and the server drops what
    does not decode from the text it answers; the model then saw tokens no text gives back. Both the from-scratch
    report and the rewrite's continuations are generated so; the scoring is the model's own."""
    return check.OracleConfig(url, timeout=600, generation_extra={"logit_bias": {str(i): -100.0 for i in range(128, 260)}},
                              **kw)


@pytest.fixture(scope="module")
def scratch(office_url, field_report):
    """The office model's own report of the note, from scratch in one request: what every rewrite must equal."""
    note, _ = field_report
    got = rewrite.from_scratch(exact(office_url), note)
    assert got.finished and schema.written_fields(got.text) is not None
    return got


# ---------------------------------------------------------------------------------- the automaton
def _note():
    return fieldnote.validate(json.loads(NOTE.read_text()))


def test_the_automaton_accepts_what_the_grammar_does_and_each_prefix_of_it(field_report):
    note = _note()
    auto = ReportAutomaton(note)
    written = field_report[1]["text"]  # the tiny oracle's, under the grammar
    date = note["date"]
    text = (schema.rendered_text(note).split("Summary: ")[0] + f"Summary: Moth larvae on the wood edge on {date}.\n"
            "Risk: moderate, above the threshold.\nAction: Treat the border rows.")
    # the whole grammar as one Python regex, from the same pieces (schema.report_grammar's language)
    unit = "(?:[^\\n.!?0-9]|" + "|".join(re.escape(p) for p in schema.written_phrases(note)) + ")"
    sent = lambda lo, hi: rf"{unit}{{{lo},{hi}}}[.!]"  # noqa: E731
    lim = schema.FIELD_LIMITS
    whole = re.compile(re.escape(schema.rendered_text(note).split("Summary: ")[0]) + "Summary: " + sent(*lim["summary"])
                       + r"\nRisk: (?:low|moderate|high), " + sent(*lim["risk_why"]) + r"\nAction: "
                       + sent(*lim["action"]) + "(?: " + sent(*lim["action"]) + ")?", re.S)
    a = schema.written_fields(text)
    variants = [written, text, text + " Again next week.", text + " x", text[:-1], text.replace("Risk: ", "Risk: severe, ", 1),
                text[:a["summary"][0]] + "Short." + text[a["summary"][1]:], text[:a["summary"][0]] + "3.5 of 50 moths!"
                + text[a["summary"][1]:], text.replace(f"on {date}.", f"on {date[:-1]}9."), text.replace(f"on {date}.", f"on {date[:7]}."),
                text.replace("\nAction:", "?\nAction:", 1)]
    for v in variants:
        assert auto.accepting(auto.states(v)) == bool(whole.fullmatch(v)), v[-80:]
    assert sum(auto.accepting(auto.states(v)) for v in variants) == 3  # written, text and its second sentence
    assert auto.accepting(auto.states(text)) and auto.states(text + " x") and not auto.states(text + "\n")
    for cut in range(0, len(text), 7):  # every prefix of an accepted text is a live prefix, with a rest to write
        rest = auto.gbnf_after(text[:cut])
        assert rest and rest.startswith("root ::= ")
    assert auto.gbnf_after(text + " Again next week!") is None  # two action sentences: nothing may follow
    with pytest.raises(ValueError, match="not a prefix"):
        auto.gbnf_after(text + " Again next week. And")


def test_the_rest_grammar_parses_in_llama_cpp_and_an_identifier_begun_is_finished():
    note = _note()
    auto = ReportAutomaton(note)
    date = note["date"]
    head = schema.rendered_text(note).split("Summary: ")[0] + "Summary: Moth larvae on " + date[:6]
    rest = auto.gbnf_after(head)
    assert rest.startswith(f"root ::= (({schema._literal(date[6:])}) ")  # the date goes on, nothing else with a digit
    stray = next(d for d in "0123456789" if not any(p.startswith(d) for p in schema.written_phrases(note)))
    assert not auto.states(head + "x") and not auto.states(schema.rendered_text(note).split("Summary: ")[0] + "Summary: " + stray)
    for prefix in ("", head, head[:-4], head + date[6:] + ".\nRisk: mod"):
        llama_cpp.LlamaGrammar.from_string(auto.gbnf_after(prefix), verbose=False)


def test_the_office_version_is_the_office_models_own_greedy_report_stored_and_shown(tmp_path, office_url, field_report,
                                                                                     scratch):
    _, record = field_report
    sdb, rid, _ = office_with(tmp_path, record)
    assert record["text"] != scratch.text  # the handheld and the office part somewhere
    rw = rewrite.office_version(sdb, rid, exact(office_url, model="tiny-q8"), chunk=64)
    assert rw == rewrite.rewrite_of(sdb, rid)
    s = rw["summary"]
    assert rw["model"] == "tiny-q8" and s["finished"] and s["score_passes"] >= 1
    assert s["accepted_chars"] > 0 and s["accepted_chars"] + s["generated_chars"] == len(scratch.text)
    [item] = sdb.list_items(kind="report", item_id=rw["office_report_id"], with_payload=True)
    p = item["payload"]
    assert item["source"] == "office" and p["replaces"] == rid
    assert p["text"] == scratch.text  # the key point: the office model's own greedy report, exactly
    assert p["version"] == 2 and p["review_status"] == "edited" and p["reviewed_by"] == "office model tiny-q8"
    assert any(r["source"] == "office" for r in p["provenance"])  # what the office model wrote itself
    assert check_queue.pending_reports(sdb, due_only=False) == [rid]  # the office's own text is not checked again
    c = logged_in_client(sdb)
    page = c.get(f"/reports/{rid}")
    assert "Office version" in page.text and f"/reports/{rw['office_report_id']}" in page.text
    assert "office model&#39;s version" in c.get(f"/reports/{rw['office_report_id']}").text.replace("'", "&#39;")


# ---------------------------------------------------------------------------------- failures
def test_an_unreachable_oracle_stores_nothing_and_says_awaiting(tmp_path, field_report, capsys):
    _, record = field_report
    sdb, rid, _ = office_with(tmp_path, record)
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(check.OracleUnavailable):
        rewrite.office_version(sdb, rid, check.OracleConfig(dead, timeout=5))
    assert server_main(["rewrite", rid, "--oracle-url", dead, "--db", str(tmp_path / "office.sqlite3")]) == 1
    assert "awaiting the office model" in capsys.readouterr().out
    assert rewrite.rewrite_of(sdb, rid) is None and len(sdb.list_items(kind="report")) == 1
    assert logged_in_client(sdb).get(f"/reports/{rid}").status_code == 200


@pytest.mark.parametrize("name", ["not-json", "nan", "no-logprobs", "oversized", "other-text"])
def test_a_malformed_or_oversized_answer_is_an_error_and_nothing_is_stored(tmp_path, field_report, name, capsys):
    import http.server
    import threading

    _, record = field_report
    sdb, rid, _ = office_with(tmp_path, record)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), type("H", (_Garbage,), {"body": GARBAGE[name][0]}))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        with pytest.raises(check.OracleAnswerError, match=GARBAGE[name][1]):
            rewrite.office_version(sdb, rid, check.OracleConfig(url, max_answer_bytes=10_000, timeout=10))
        assert server_main(["rewrite", rid, "--oracle-url", url, "--db", str(tmp_path / "office.sqlite3")]) == 1
    finally:
        srv.shutdown()
        srv.server_close()
    assert f"{rid}: error: " in capsys.readouterr().out
    assert rewrite.rewrite_of(sdb, rid) is None and len(sdb.list_items(kind="report")) == 1


def test_a_continuation_outside_the_grammar_is_an_error(field_report):
    note, record = field_report

    import httpx

    def handler(request):
        body = json.loads(request.content)
        if body.get("echo"):
            return httpx.Response(200, json={"choices": [{"text": "", "logprobs": None}]})
        return httpx.Response(200, json={"choices": [{"text": "?\n?", "finish_reason": "length"}]})

    client = httpx.Client(transport=httpx.MockTransport(handler))  # a server that ignores `grammar`
    with pytest.raises(check.OracleAnswerError, match="outside the report grammar"):
        rewrite.rewrite_report(check.OracleConfig("http://office"), note, "", client=client)


def test_after_a_changed_word_the_rest_of_the_field_text_serves_again(office_url, field_report, scratch):
    """The two random models' fields have nothing in common; here the field report is the office model's own with
    six characters of its summary spoiled, so the office model writes them and re-joins the field text after."""
    note, _ = field_report
    field, a = changed_summary(scratch.text)
    got = rewrite.rewrite_report(exact(office_url), note, field, chunk=64)
    assert got.text == scratch.text
    assert got.passes[0] == {**got.passes[0], "kind": "score"} and got.passes[0]["chars"] >= a
    assert got.summary()["score_passes"] >= 2  # scored again after the office model wrote
    assert got.accepted_chars > len(field) // 3


@pytest.mark.parametrize("answer, why", [
    (b'{"choices": [{"text": 5}]}', "no choices"),
    (b'{"choices": []}', "no choices"),
    (b'{"choices": [{"text": "a", "finish_reason": NaN}]}', "not JSON"),
    (b'{"choices": [{"text": "' + b"x" * 20_000 + b'"}]}', "larger than"),
])
def test_a_malformed_continuation_answer_is_an_error(field_report, answer, why):
    import httpx

    note, _ = field_report
    client = httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(200, content=answer)))
    with pytest.raises(check.OracleAnswerError, match=why):
        rewrite.rewrite_report(check.OracleConfig("http://office", max_answer_bytes=10_000), note, "", client=client)


# ---------------------------------------------------------------------------------- the rewrite policy
def test_the_policy_rewrites_a_disputed_or_flagged_report_once_and_never_an_approved_one(tmp_path, office_url,
                                                                                        field_report, scratch):
    from fieldlog_app.office.accounts import Office

    _, record = field_report
    field, _ = changed_summary(scratch.text)
    sdb, rid, _ = office_with(tmp_path, record, text=field)
    maria = Office(sdb).add_user("maria", "a-long-password-1", "manager")
    assert rewrite.reports_to_rewrite(sdb) == []  # not checked yet
    check_queue.record_check(sdb, rid, status="checked", model="tiny-q8", findings=[], summary={})
    assert rewrite.reports_to_rewrite(sdb) == []  # the office model agrees
    Office(sdb).review(maria, rid, "flagged")
    assert rewrite.reports_to_rewrite(sdb) == [rid]  # a person in the office doubts it
    Office(sdb).review(maria, rid, "approved")
    check_queue.record_check(sdb, rid, status="checked", model="tiny-q8", findings=[{"kind": "office_disagrees"}],
                             summary={})
    assert rewrite.reports_to_rewrite(sdb) == []  # approved as written, disputed or not
    Office(sdb).review(maria, rid, "flagged")
    assert rewrite.reports_to_rewrite(sdb) == [rid]

    checker = check_queue.OfficeChecker(sdb, exact(office_url, model="tiny-q8"), rewrite_disputed=True,
                                        rewrite_chunk=64)
    assert checker.run_once() == []  # nothing to check; the rewrite runs after the (empty) checks
    rw = rewrite.rewrite_of(sdb, rid)
    assert rw is not None and rw["summary"]["finished"]
    [item] = sdb.list_items(kind="report", item_id=rw["office_report_id"], with_payload=True)
    assert item["payload"]["text"] == scratch.text  # the office model's own report, as on request
    assert rewrite.reports_to_rewrite(sdb) == [] and checker.rewrite_one() is None  # once


def test_the_policy_waits_for_an_unreachable_oracle_and_gives_up_on_a_malformed_answer(tmp_path, field_report):
    import http.server
    import threading

    _, record = field_report
    sdb, rid, _ = office_with(tmp_path, record)
    check_queue.record_check(sdb, rid, status="checked", model="m", findings=[{"kind": "office_disagrees"}], summary={})
    now = [1000.0]
    dead = check.OracleConfig(f"http://127.0.0.1:{free_port()}", timeout=5)
    checker = check_queue.OfficeChecker(sdb, dead, rewrite_disputed=True, clock=lambda: now[0])
    assert checker.rewrite_one() is None and rewrite.rewrite_of(sdb, rid) is None
    assert checker._rewrite_retry[rid] == (1, 1000.0 + check_queue.backoff(1)) and not checker.rewrite_failures
    now[0] += check_queue.backoff(1) - 1
    assert checker.rewrite_one() is None and checker._rewrite_retry[rid][0] == 1  # not due: not tried
    now[0] += 1
    assert checker.rewrite_one() is None and checker._rewrite_retry[rid][0] == 2  # tried again, backing off

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), type("H", (_Garbage,), {"body": GARBAGE["not-json"][0]}))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        checker.config = check.OracleConfig(f"http://127.0.0.1:{srv.server_address[1]}", timeout=10)
        now[0] += 3600
        assert checker.rewrite_one() is None
        assert rid in checker.rewrite_failures and "OracleAnswerError" in checker.rewrite_failures[rid]
        assert checker.rewrite_one() is None  # given up on in this process
    finally:
        srv.shutdown()
        srv.server_close()
    assert rewrite.rewrite_of(sdb, rid) is None and len(sdb.list_items(kind="report")) == 1
    assert rewrite.reports_to_rewrite(sdb) == [rid]  # still what the policy would pick: the CLI can retry it
