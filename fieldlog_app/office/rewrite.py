"""The office rewrite: the office model's own report, with the field report as its draft (speculative across the
sync boundary).

The result is what the office model writes from scratch, greedily, under the report grammar; the field text
only saves work. Through the same OpenAI-compatible ``/v1/completions`` the check uses:

1. **Score** (one echo+logprobs request, ``check.request_scores``): the prompt, the office text so far and the
   draft (the field text from where it was last re-joined). The draft's prefix is accepted token by token
   while the token is the office model's greedy choice under the grammar there (inside a data line the grammar
   forces, the field text is taken as it is: the office model has no choice there): the grammar allows it
   (``vineyard.report_automaton``, exact) and no alternative the grammar allows scores as high. Anything the
   answer cannot settle stops the acceptance, never a guess: a token outside the top K, an alternative that
   renders as no text (a control token or a byte piece; the top-K list cannot tell them apart) scoring as
   high, a tie at the list's end.
2. **Generate** (a completions request, ``temperature: 0``, ``repeat_penalty: 1``, ``max_tokens: chunk``,
   with ``grammar``: the GBNF of the rest of the report after the office text, ``ReportAutomaton.gbnf_after``;
   llama-cpp-python's server takes it in completions). The continuation is the office model's own.
3. **Re-join**: where the office text's last characters occur again in the field text after the point it left
   it (text alignment: the two models may tokenize differently), the rest of the field text is the next
   draft, scored in one pass (1.); otherwise another chunk is generated.

It ends when the grammar allows nothing more or the model stops. The text equals the office model's greedy
output from scratch when the server's numerics do not depend on the batch (the tests use such a model);
with another tokenizer the prompt's re-tokenization of an accepted prefix is what the model sees, as in any
completion. Failures are the check's: ``OracleUnavailable`` (nothing is stored; try again later) and
``OracleAnswerError`` (a malformed or oversized answer, or a continuation outside the grammar).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from vineyard import fieldnote
from vineyard.report_automaton import ReportAutomaton

from .check import (OracleAnswerError, OracleConfig, build_prompt, parse_scores, post_completion,
                    request_scores)

DEFAULT_CHUNK = 16      # tokens per continuation request before looking for the field text again
MIN_JOIN = 6            # characters of office text that must recur in the field text to re-join it
MAX_JOIN = 32
MAX_PASSES = 400        # a report is at most ~700 characters; this only stops a server that makes no progress


@dataclass
class RewriteResult:
    text: str
    passes: list[dict] = field(default_factory=list)   # {"kind": "score"|"generate", "chars", "seconds"}
    seconds: float = 0.0
    accepted_chars: int = 0      # office text taken from the field text
    generated_chars: int = 0     # office text the office model generated
    model: str = ""
    grammar: bool = True
    finished: bool = False       # the grammar's end was reached (or the model stopped)

    def summary(self) -> dict:
        kinds = [p["kind"] for p in self.passes]
        return {"passes": len(self.passes), "score_passes": kinds.count("score"),
                "generate_passes": kinds.count("generate"), "seconds": round(self.seconds, 3),
                "accepted_chars": self.accepted_chars, "generated_chars": self.generated_chars,
                "grammar": self.grammar, "finished": self.finished}


def _post(config: OracleConfig, body: dict, client: httpx.Client) -> dict:
    """One completions request (the check's bounded read); its first choice's text and finish reason."""
    answer = post_completion(config, body, client)
    try:
        choice = answer["choices"][0]
        text, reason = choice["text"], choice.get("finish_reason")
        if not isinstance(text, str) or not (reason is None or isinstance(reason, str)):
            raise TypeError
    except (KeyError, IndexError, TypeError):
        raise OracleAnswerError("answer has no choices[0].text") from None
    return {"text": text, "finish_reason": reason, "model": answer.get("model")}


def generate(config: OracleConfig, prompt: str, *, max_tokens: int, grammar: str | None,
             client: httpx.Client) -> dict:
    """The office model's greedy continuation of ``prompt`` (under ``grammar`` when given)."""
    body: dict[str, Any] = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0, "repeat_penalty": 1.0,
                            "top_p": 1.0, "top_k": 0, "min_p": 0.0}
    if grammar:
        body["grammar"] = grammar
    body.update(config.generation_extra)
    return _post(config, body, client)


def from_scratch(config: OracleConfig, note: dict, *, grammar: bool = True, max_tokens: int = 2048,
                 client: httpx.Client | None = None) -> RewriteResult:
    """The office model's report in one request, no draft: what the rewrite must equal (and the bench's baseline)."""
    note = fieldnote.validate(note)
    own = client is None
    client = client or httpx.Client(timeout=config.timeout)
    t0 = time.perf_counter()
    try:
        gbnf = ReportAutomaton(note).gbnf_after("") if grammar else None
        got = generate(config, build_prompt(note, config.chat_template), max_tokens=max_tokens, grammar=gbnf,
                       client=client)
    finally:
        if own:
            client.close()
    dt = time.perf_counter() - t0
    return RewriteResult(got["text"], [{"kind": "generate", "chars": len(got["text"]), "seconds": round(dt, 3)}],
                         dt, 0, len(got["text"]), config.model or got["model"] or "", grammar,
                         got["finish_reason"] == "stop")


def _accept(positions, auto: ReportAutomaton | None, text: str, start: int, top_k: int) -> int:
    """How far (a character offset of ``text``) the draft from ``start`` is the office model's greedy choice
    (under the grammar of ``auto``; unconstrained when None)."""
    cur = start
    states = auto.states(text[:cur]) if auto else frozenset({0})
    for p in positions:
        if p.end <= cur:
            continue
        if p.start != cur:  # a gap (a token the server listed as no text) or a token across the boundary
            break
        tok = text[p.start:p.end]
        after = auto.advance(states, tok) if auto else states
        if after and auto and auto.forced(states).startswith(tok):
            cur, states = p.end, after  # a data line the grammar writes: whatever the scores, it is this text
            continue
        if not after or p.bounded:
            break
        values = list(p.alternatives.values())
        if len(values) >= top_k and p.logprob <= min(values):
            break  # at the list's end: a token not listed could tie it
        beaten = False
        for alt, lp in p.alternatives.items():
            if alt == tok or lp < p.logprob:
                continue
            if not alt or not auto or auto.advance(states, alt):  # an allowed alternative as likely, or unseen
                beaten = True
                break
        if beaten:
            break
        cur, states = p.end, after
    return cur


def _rejoin(office: str, field_text: str, left_at: int) -> int | None:
    """Where the field text continues the office text: the offset in ``field_text`` after the longest tail of
    ``office`` (at least MIN_JOIN characters) that occurs there ending after ``left_at``; None if none does."""
    for k in range(min(MAX_JOIN, len(office)), MIN_JOIN - 1, -1):
        at = field_text.find(office[-k:], max(0, left_at - k + 1))
        if at >= 0:
            return at + k
    return None


def rewrite_report(config: OracleConfig, note: dict, field_text: str, *, chunk: int = DEFAULT_CHUNK,
                   grammar: bool = True, client: httpx.Client | None = None,
                   max_passes: int = MAX_PASSES) -> RewriteResult:
    """The office model's report of ``note`` with ``field_text`` (the field report) as its draft."""
    if not isinstance(field_text, str):
        raise OracleAnswerError("the report has no text")
    note = fieldnote.validate(note)
    auto = ReportAutomaton(note)
    prompt = build_prompt(note, config.chat_template)
    own = client is None
    client = client or httpx.Client(timeout=config.timeout)
    out = RewriteResult("", grammar=grammar)
    t0 = time.perf_counter()
    office, draft, left_at = "", field_text, 0   # left_at: where in field_text the draft starts
    try:
        while len(out.passes) < max_passes:
            if grammar and auto.finished(auto.states(office)):
                out.finished = True
                break
            if draft:
                t = time.perf_counter()
                text = office + draft
                answer = request_scores(config, prompt + text, client=client)
                positions, _ = parse_scores(answer, text, config.top_logprobs, prompt + text)
                # re-score from the office token boundary at or before the office text's end
                start = max([p.start for p in positions if p.start <= len(office)] or [len(office)])
                start = min(start, len(office))
                cur = _accept(positions, auto if grammar else None, text, start, config.top_logprobs)
                gained = max(0, cur - len(office))
                out.passes.append({"kind": "score", "chars": gained, "seconds": round(time.perf_counter() - t, 3)})
                if gained:
                    out.accepted_chars += gained
                    office, left_at = text[:cur], left_at + gained
                draft = ""  # all taken, or a disagreement: either way the office model writes next
                if len(out.passes) >= max_passes:
                    break
                if grammar and auto.finished(auto.states(office)):
                    out.finished = True
                    break
            t = time.perf_counter()
            gbnf = auto.gbnf_after(office) if grammar else None
            got = generate(config, prompt + office, max_tokens=chunk, grammar=gbnf, client=client)
            out.model = out.model or got["model"] or ""
            new = got["text"]
            out.passes.append({"kind": "generate", "chars": len(new), "seconds": round(time.perf_counter() - t, 3)})
            if grammar and new and not auto.states(office + new):
                raise OracleAnswerError("the office model's continuation is outside the report grammar "
                                        "(does the server apply `grammar`?)")
            office += new
            out.generated_chars += len(new)
            if got["finish_reason"] == "stop" or not new:
                out.finished = True
                break
            at = _rejoin(office, field_text, left_at)
            if at is not None and at < len(field_text):
                left_at, draft = at, field_text[at:]
        else:
            raise OracleAnswerError(f"the rewrite did not finish in {max_passes} requests")
    finally:
        if own:
            client.close()
    out.text = office
    out.seconds = time.perf_counter() - t0
    out.model = (config.model or out.model)[:200]
    return out


# ------------------------------------------------------------------ the office's record
def office_version(sdb, report_id: str, config: OracleConfig, *, chunk: int = DEFAULT_CHUNK,
                   grammar: bool = True, client: httpx.Client | None = None) -> dict:
    """Rewrite one stored report and store the office's version of it: a new version of the report (its payload
    replaces the field report's, review status "edited", provenance "office" where the office model's text is
    not the field report's), in items with source "office", beside an ``office_rewrites`` row (passes, time).
    Returns that row. Oracle errors propagate: nothing is stored then."""
    from .check_queue import report_inputs

    note, report = report_inputs(sdb, report_id)
    result = rewrite_report(config, note, report.get("text"), chunk=chunk, grammar=grammar, client=client)
    return save_office_version(sdb, report_id, note, report, result)


def save_office_version(sdb, report_id: str, note: dict, report: dict, result: RewriteResult) -> dict:
    """Store ``result`` as the office version of the field report ``report_id`` (see ``office_version``)."""
    from fieldlog_app.database.canonical import canonical_json, payload_sha256, utc_now
    from vineyard import review

    from .check_queue import now_utc

    provenance = [{**r, "source": "office", "verified": True} if r.get("source") == review.PERSON else r
                  for r in review.edit_provenance(report["text"], report.get("provenance"), result.text)]
    checked = review.recheck(result.text, fieldnote.validate(note), provenance)
    now = utc_now()
    new_id = str(uuid.uuid4())
    stats = result.summary()
    payload = {
        "id": new_id, "sighting_id": report["sighting_id"], "created_at": now, "status": "complete",
        "text": result.text, "model_pair": {"office": result.model}, "policy": {"office_rewrite": True},
        "stats": stats, "provenance": provenance, "spans": checked["spans"], "findings": checked["findings"],
        "sighting_sha256": report.get("sighting_sha256"), "clean": not checked["findings"],
        "version": int(report.get("version") or 1) + 1, "replaces": report_id, "review_status": "edited",
        "reviewed_by": f"office model {result.model or '?'}"[:200], "reviewed_at": now,
        "review_note": f"office rewrite: {stats['passes']} requests, {stats['accepted_chars']} characters "
                       f"kept from the field report",
    }
    with sdb.transaction() as conn:
        field_item = conn.execute("SELECT device FROM items WHERE item_id = ?", (report_id,)).fetchone()
        conn.execute(
            "INSERT INTO items (item_id, kind, replaces, chain_id, version, sighting_id, sha256, payload, device,"
            " source, batch_id, received_at) VALUES (?, 'report', NULL, ?, ?, ?, ?, ?, ?, 'office', NULL, ?)",
            (new_id, new_id, payload["version"], report["sighting_id"], payload_sha256(payload),
             canonical_json(payload), field_item["device"], now))
        conn.execute(
            "INSERT INTO office_rewrites (report_id, office_report_id, model, summary, created_at) "
            "VALUES (?, ?, ?, ?, ?)", (report_id, new_id, result.model, json.dumps(stats), now))
        # the device fetches checks changed since its last fetch: the office version rides on the report's check
        conn.execute("UPDATE office_checks SET updated_at = ? WHERE report_id = ?", (now_utc(), report_id))
    return rewrite_of(sdb, report_id)


def rewrite_of(sdb, report_id: str) -> dict | None:
    """The newest office version of a report: ``{"report_id", "office_report_id", "model", "summary", ...}``."""
    with sdb.connect() as conn:
        row = conn.execute("SELECT * FROM office_rewrites WHERE report_id = ? ORDER BY created_at DESC, "
                           "office_report_id LIMIT 1", (report_id,)).fetchone()
    if row is None:
        return None
    out = dict(row)
    out["summary"] = json.loads(out["summary"] or "{}")
    return out


# The rewrite policy as SQL over a report item ``i``, its check ``c`` and its latest office review ``v`` (joined by
# LATEST_REVIEW): ``reports_to_rewrite`` picks by it, and a device's check says an office version is coming by it.
LATEST_REVIEW = "LEFT JOIN reviews v ON v.id = (SELECT MAX(id) FROM reviews WHERE report_id = i.item_id)"
WOULD_REWRITE = ("(i.kind = 'report' AND i.source <> 'office' AND i.superseded_by IS NULL "
                 "AND NOT EXISTS (SELECT 1 FROM office_rewrites r WHERE r.report_id = i.item_id) "
                 "AND ((c.status = 'checked' AND c.findings <> '[]' AND (v.status IS NULL OR v.status <> 'approved')) "
                 "OR v.status = 'flagged'))")


def reports_to_rewrite(sdb, *, limit: int = 10) -> list[str]:
    """The field reports the office rewrites by policy, oldest check first: the newest version of a report
    whose office check found disagreements, or that an office manager flagged, with no office version yet;
    never one whose latest office review approved it as written."""
    sql = (f"SELECT i.item_id FROM items i LEFT JOIN office_checks c ON c.report_id = i.item_id {LATEST_REVIEW} "
           f"WHERE {WOULD_REWRITE} ORDER BY COALESCE(c.checked_at, v.at), i.server_seq LIMIT ?")
    with sdb.connect() as conn:
        return [r["item_id"] for r in conn.execute(sql, (limit,))]
