"""The office oracle check: a larger model at the office scores each synced report's written fields.

One request per report to an OpenAI-compatible completions endpoint (``POST {url}/v1/completions`` with
``echo: true``, ``logprobs: K``, ``max_tokens: 1``, ``temperature: 0``): the prompt is the report's own
prompt, rebuilt from the sighting (``vineyard.schema.report_messages`` in the office model's chat template,
ChatML by default), followed by the report text. The server answers, for every prompt token, its
log-probability and the K best tokens at that position. Tokens are aligned to the report by character
offsets, so the office model may use another tokenizer than the handheld.

Agreement, per token of a written field (summary, risk, action): the office model's best *different*
continuation at that position against the report's token. A continuation is "different" when its text is
not the report's own text from there (a token that renders as no text -- a piece of a multi-byte character
or a control token, which the grammar may refuse -- is not judged: the server's top-K list is keyed by text,
so such tokens merge into one entry and cannot be told apart) (another segmentation of the same characters agrees) and the report
grammar would allow it there (no newline or "?" inside a field, a risk level from the list, no text after
a field's last sentence). A **disagreement** is a position where that best alternative beats the written
token by more than ``margin`` nats (default 2.0: the office model finds it e^2 ≈ 7x likelier). Each one
becomes an integrity finding ("office model would write 'above', field report says 'below'"). Rendered
data lines are not judged: the grammar wrote them from the record.

Server quirk handled here: llama-cpp-python 0.3.x pairs each echoed token with the distribution *after*
it when the model adds no BOS token (Qwen2.5 adds none): ``parse_scores`` detects that layout and reads
each token's score from the previous position's top-K list (a token outside the top K is scored at the
K-th value, an upper bound, so the gap is a lower bound and a finding is never invented by it).

Failures: an oracle that cannot be reached (connection refused, timeout, 5xx) is ``OracleUnavailable``
and the report stays "awaiting office check", retried later; an answer that is too large, not JSON or not
in the shape above is ``OracleAnswerError``, recorded as the check's error. Neither ever reaches the sync
path: ``OfficeChecker`` runs in its own threads, and the office page only reads what they stored.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import jinja2.sandbox

from vineyard import fieldnote, schema
from vineyard.report_automaton import ReportAutomaton

log = logging.getLogger("fieldlog.office.check")

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
DEFAULT_MARGIN = 2.0
DEFAULT_TOP_LOGPROBS = 10  # vLLM's default cap (max_logprobs) is 20
DEFAULT_MAX_ANSWER_BYTES = 32 * 1024 * 1024   # ~2,000 tokens x 10 alternatives is ~1 MB; far more is an error
MAX_FINDINGS = 20                               # per report: the page and the device need the first few
MAX_TOKEN_CHARS = 512                           # a token string longer than this is not a token


class OracleError(Exception):
    """The office oracle could not check a report."""


class OracleUnavailable(OracleError):
    """Not reachable now (refused, timed out, 5xx): the report waits and is tried again."""


class OracleAnswerError(OracleError):
    """The server answered, but not with a usable completion (too large, not JSON, wrong shape)."""


@dataclass(frozen=True)
class OracleConfig:
    """Where the office oracle is and how to judge with it; from the server's flags or environment only."""

    url: str
    model: str | None = None
    api_key: str | None = None
    timeout: float = 120.0
    top_logprobs: int = DEFAULT_TOP_LOGPROBS
    margin: float = DEFAULT_MARGIN
    max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES
    chat_template: str = CHATML
    # extra fields for the office rewrite's generation requests (e.g. a vLLM guided-decoding field, or
    # logit_bias); sent as given, after the rewrite's own
    generation_extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"oracle URL {self.url!r}: expected http://HOST:PORT or https://…")
        if not 1 <= self.top_logprobs <= 20:
            raise ValueError("top_logprobs must be 1..20")
        if not (self.margin >= 0 and math.isfinite(self.margin)):
            raise ValueError("margin must be a non-negative number of nats")

    @property
    def endpoint(self) -> str:
        base = self.url.rstrip("/")
        return base if base.endswith("/v1/completions") else (base[:-3] if base.endswith("/v1") else base) + "/v1/completions"


# ------------------------------------------------------------------ prompt
def build_prompt(note: dict, chat_template: str = CHATML) -> str:
    """The report prompt as the handheld built it, in the office model's chat template, as text."""
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(keep_trailing_newline=True)
    return env.from_string(chat_template).render(messages=schema.report_messages(fieldnote.validate(note)),
                                                 add_generation_prompt=True, bos_token="", eos_token="")


# ------------------------------------------------------------------ one request
def request_scores(config: OracleConfig, prompt: str, *, client: httpx.Client | None = None) -> dict:
    """POST the prompt for echoed log-probabilities; the parsed JSON answer (bounded in size)."""
    body: dict[str, Any] = {"prompt": prompt, "echo": True, "logprobs": config.top_logprobs, "max_tokens": 1,
                            "temperature": 0.0}
    return post_completion(config, body, client)


def post_completion(config: OracleConfig, body: dict, client: httpx.Client | None = None) -> dict:
    """One completions request: the answer as a JSON object, read at most ``max_answer_bytes`` far. An oracle that
    cannot be reached or is overloaded is ``OracleUnavailable``; anything else that is not an answer is
    ``OracleAnswerError``."""
    if config.model:
        body["model"] = config.model
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    own = client is None
    client = client or httpx.Client(timeout=config.timeout)
    try:
        with client.stream("POST", config.endpoint, json=body, headers=headers) as resp:
            if resp.status_code >= 500 or resp.status_code in (408, 429):
                raise OracleUnavailable(f"{config.endpoint} answered {resp.status_code}")
            chunks, size = [], 0
            for chunk in resp.iter_bytes():
                size += len(chunk)
                if size > config.max_answer_bytes:
                    raise OracleAnswerError(f"answer larger than {config.max_answer_bytes} bytes; not read further")
                chunks.append(chunk)
            raw = b"".join(chunks)
            if resp.status_code != 200:
                raise OracleAnswerError(f"{config.endpoint} answered {resp.status_code}: "
                                        f"{raw[:300].decode('utf-8', 'replace')}")
    except httpx.TransportError as e:  # refused, reset, timed out, DNS
        raise OracleUnavailable(f"{config.endpoint}: {type(e).__name__}: {e}") from None
    finally:
        if own:
            client.close()
    try:
        answer = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
        raise OracleAnswerError(f"answer is not JSON ({str(e)[:120]})") from None
    if not isinstance(answer, dict):
        raise OracleAnswerError("answer is not a JSON object")
    return answer


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number")


# ------------------------------------------------------------------ alignment
@dataclass
class Position:
    """One office token inside the report: its span (report characters), score and the alternatives there."""

    start: int
    end: int
    text: str
    logprob: float
    bounded: bool              # the token was outside the top K: ``logprob`` is an upper bound
    alternatives: dict[str, float]


def _floats(xs: Any, what: str, n: int, nullable: bool = False) -> list:
    if not isinstance(xs, list) or len(xs) != n:
        raise OracleAnswerError(f"logprobs.{what} is not a list of {n}")
    for x in xs:
        if x is None and nullable:
            continue
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            raise OracleAnswerError(f"logprobs.{what} holds {str(x)[:40]!r}, not a finite number")
    return xs


def parse_scores(answer: dict, report: str, top_k: int, sent_prompt: str | None = None) -> tuple[list[Position], dict]:
    """The office model's scores of the report's characters, from an echo+logprobs completion answer.

    Returns the positions inside the report and what was learnt of the layout (``shifted``, ``tokens``).
    OracleAnswerError if the answer does not have that shape or its echoed text does not end with the report."""
    try:
        choice = answer["choices"][0]
        lp = choice["logprobs"]
        tokens, offsets = lp["tokens"], lp["text_offset"]
    except (KeyError, IndexError, TypeError):
        raise OracleAnswerError("answer has no choices[0].logprobs with tokens and text_offset "
                                "(is the server started with logits_all / prompt log-probabilities?)") from None
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) and len(t) <= MAX_TOKEN_CHARS
                                                             for t in tokens):
        raise OracleAnswerError("logprobs.tokens is not a list of token strings")
    n = len(tokens)
    if not isinstance(offsets, list) or len(offsets) != n or not all(
            isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets):
        raise OracleAnswerError(f"logprobs.text_offset is not a list of {n} offsets")
    token_lps = _floats(lp.get("token_logprobs"), "token_logprobs", n, nullable=True)
    tops = lp.get("top_logprobs")
    if not isinstance(tops, list) or len(tops) != n:
        raise OracleAnswerError(f"logprobs.top_logprobs is not a list of {n}")
    for t in tops:
        if t is None:
            continue
        if not isinstance(t, dict) or len(t) > top_k + 1 or not all(
                isinstance(k, str) and len(k) <= MAX_TOKEN_CHARS for k in t):
            raise OracleAnswerError(f"logprobs.top_logprobs has an entry that is not a map of at most {top_k + 1} tokens")
        _floats(list(t.values()), "top_logprobs values", len(t))
    usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}

    c_prompt = usage.get("prompt_tokens")
    c_done = usage.get("completion_tokens")
    completion = ""
    if isinstance(choice.get("text"), str) and isinstance(sent_prompt, str) and choice["text"].startswith(sent_prompt):
        completion = choice["text"][len(sent_prompt):]

    def fit(m: int, end: int) -> int:
        """How many listed tokens of the report read as the report's own characters at their offsets."""
        b = end - len(report)
        return sum(1 for i in range(m) if offsets[i] >= b and tokens[i]
                   and report.startswith(tokens[i], offsets[i] - b))

    # Two layouts (see the module docstring): the last entry is the generated token and every entry is
    # scored against the distribution before it, or (no BOS in llama-cpp-python 0.3.x) only prompt tokens
    # are listed, each with the distribution after it. Usage counts and the echoed text decide when they can;
    # otherwise the layout whose token strings line up with the report wins.
    end_all = offsets[n - 1] + len(tokens[n - 1])
    if c_done == 0 or (isinstance(c_prompt, int) and n < c_prompt):
        layouts = [(n, end_all, isinstance(c_prompt, int) and n == c_prompt)]
    else:
        layouts = [(n - 1, offsets[n - 1], False), (n, end_all, True)]
        if not (completion and tokens[-1] == completion):
            layouts.reverse()
    m, end, shifted = max(layouts, key=lambda lay: fit(lay[0], lay[1]))
    if fit(m, end) < max(1, m and min(len(report) // 8, 8)):
        raise OracleAnswerError("the echoed tokens do not line up with the report text (a prompt the server "
                                "changed, or an answer for another request)")
    base = end - len(report)
    if base < 0 or any(offsets[i] > offsets[i + 1] for i in range(m - 1)):
        raise OracleAnswerError("logprobs.text_offset does not fit the echoed text")

    out: list[Position] = []
    for i in range(m):
        s = offsets[i] - base
        e = (offsets[i + 1] if i + 1 < n else offsets[i] + len(tokens[i])) - base
        if s < 0 or not tokens[i]:
            continue
        if shifted:
            if i == 0 or tops[i - 1] is None:
                continue
            # the server adds the listed token's own entry to its top K: under this layout that is the previous
            # token's score *here*, a true alternative at this position, so it stays
            dist = dict(tops[i - 1])
            if tokens[i] in dist:
                score, bounded = dist[tokens[i]], False
            else:
                score, bounded = (min(dist.values()) if dist else 0.0), True
        else:
            if tops[i] is None or token_lps[i] is None:
                continue
            dist, score, bounded = dict(tops[i]), float(token_lps[i]), False
        out.append(Position(s, min(e, len(report)), tokens[i], float(score), bounded, dist))
    return out, {"shifted": shifted, "tokens": m}


# ------------------------------------------------------------------ judging
class _Admissible:
    """Would the report grammar allow ``alt`` at ``pos``? (The office scores without the grammar; an alternative
    the grammar refuses there is no disagreement.) The grammar's automaton (``ReportAutomaton``) is advanced
    along the report once, position by position, as ``judge`` walks it. Without the note, or where the report
    itself leaves the grammar (a report written under another one), every alternative on one line is
    admissible."""

    def __init__(self, report: str, note: dict | None):
        self.report = report
        self.auto = ReportAutomaton(note) if note is not None else None
        self.pos, self.states = 0, self.auto.initial() if self.auto else frozenset()

    def __call__(self, alt: str, pos: int) -> bool:
        if not alt or "\n" in alt or "?" in alt:
            return False
        if self.auto is None:
            return True
        if pos < self.pos:
            self.pos, self.states = 0, self.auto.initial()
        if pos > self.pos:
            self.states = self.auto.advance(self.states, self.report[self.pos:pos]) if self.states else self.states
            self.pos = pos
        return not self.states or bool(self.auto.advance(self.states, alt))


def _word(report: str, s: int, e: int) -> tuple[int, int]:
    ws = s
    while ws > 0 and not report[ws - 1].isspace() and (ws == s or not report[ws].isspace()):
        ws -= 1
    we = max(e, s + 1)
    while we < len(report) and not report[we].isspace() and report[we] not in ".,;":
        we += 1
    return ws, we


def judge(positions: list[Position], report: str, spans: list[dict] | None = None,
          margin: float = DEFAULT_MARGIN, note: dict | None = None) -> tuple[list[dict], dict]:
    """Findings (disagreements past ``margin`` nats) and agreement counts by field and span kind; with the
    report's ``note``, only alternatives its grammar allows count (``_Admissible``)."""
    fields = schema.written_fields(report)
    if fields is None:
        raise OracleAnswerError("the report has no Summary/Risk/Action fields to check")
    admissible = _Admissible(report, note)
    kinds = [(int(sp["start"]), int(sp["end"]), str(sp.get("kind") or "")) for sp in spans or []
             if isinstance(sp, dict) and isinstance(sp.get("start"), int) and isinstance(sp.get("end"), int)]
    findings: list[dict] = []
    summary: dict[str, Any] = {"positions": 0, "disagreements": 0, "by_field": {}, "by_kind": {}, "worst_gap": None}
    for p in positions:
        name = next((f for f, (a, b) in fields.items() if a <= p.start < b), None)
        if name is None:
            continue
        rest = report[p.start:]
        alts = [(a, v) for a, v in p.alternatives.items()
                if a and a != p.text and not rest.startswith(a) and not (a.startswith(rest) and rest)
                and admissible(a, p.start)]
        best = max(alts, key=lambda av: av[1], default=None)
        gap = (best[1] - p.logprob) if best else -math.inf
        disagree = gap > margin
        kind = next((k for a, b, k in kinds if a < p.end and p.start < b), "") or "text"
        for key, bucket in (("by_field", name), ("by_kind", kind)):
            agree_total = summary[key].setdefault(bucket, [0, 0])
            agree_total[0] += not disagree
            agree_total[1] += 1
        summary["positions"] += 1
        if best and (summary["worst_gap"] is None or gap > summary["worst_gap"]):
            summary["worst_gap"] = round(gap, 3)
        if disagree:
            summary["disagreements"] += 1
            if len(findings) < MAX_FINDINGS:
                ws, we = _word(report, p.start, p.end)
                ws = max(ws, p.start - 40)  # a word, not a line, when a model writes no spaces
                written = report[ws:min(we, p.end + 40)].strip() or p.text.strip()
                office = (report[ws:p.start] + best[0]).strip() or best[0]
                findings.append({
                    "kind": "office-disagreement", "severity": "warning", "field": name, "span_kind": kind,
                    "start": p.start, "end": p.end, "written": written, "office": office,
                    "gap_nats": round(gap, 3), "bounded": p.bounded,
                    "message": f"office model would write {office!r}, field report says {written!r}",
                })
    return findings, summary


@dataclass
class CheckResult:
    findings: list[dict]
    summary: dict
    model: str
    seconds: float
    layout: dict = field(default_factory=dict)


def check_report(config: OracleConfig, note: dict, report: dict, *, client: httpx.Client | None = None) -> CheckResult:
    """Score one report (its stored payload) given its sighting's note: one request, then the judgment."""
    text = report.get("text")
    if not isinstance(text, str) or not text:
        raise OracleAnswerError("the report has no text")
    t0 = time.perf_counter()
    prompt = build_prompt(note, config.chat_template) + text
    answer = request_scores(config, prompt, client=client)
    positions, layout = parse_scores(answer, text, config.top_logprobs, prompt)
    findings, summary = judge(positions, text, report.get("spans"), config.margin, fieldnote.validate(note))
    model = answer.get("model") if isinstance(answer.get("model"), str) else (config.model or "")
    return CheckResult(findings, summary, (config.model or model)[:200], time.perf_counter() - t0, layout)
