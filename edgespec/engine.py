"""The draft-and-verify loop.

One cycle: the policy picks a draft length, the drafter proposes, the oracle
evaluates ``pending + draft`` in one batch with logits at every draft position,
``acceptance`` keeps the agreed prefix plus the oracle's own next token, and the
oracle's KV cache is trimmed back to exactly the committed tokens. ``pending``
holds emitted tokens the oracle has not consumed yet (normally just the last
one). Everything the loop emits is streamed as ``Chunk`` events with
per-token provenance and ends with ``Done``.
"""

from __future__ import annotations

import codecs
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from . import PromptError
from .acceptance import SamplingParams, greedy_accept, logits_to_probs, sample, speculative_accept
from .drafters.base import Draft, SamplingSpec
from .events import Chunk, Done, Stats, TokenRecord
from .policy import ControllerParams, CostCurve, DraftController, bucket_of


@dataclass
class GenerationParams:
    max_tokens: int = 256
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: tuple[str, ...] = ()
    d_max: int = 16
    d_min: int = 1
    relax_unverified: bool = False  # power saving: may skip verification outside critical spans
    max_unverified_run: int = 24


class Engine:
    def __init__(
        self,
        oracle,
        drafter=None,
        *,
        curve: CostCurve | None = None,
        controller_params: ControllerParams | None = None,
        span_guard=None,
        adaptive: bool = True,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.oracle = oracle
        # the policy learns from measured cycle times; a replay (edgespec.testing.replay) passes a virtual clock
        self.clock = clock
        self.drafter = drafter
        self.curve = curve or CostCurve.linear(1.0)
        self.controller_params = controller_params or ControllerParams()
        self.span_guard = span_guard  # object with may_skip_verification(prefix_text, draft_text)
        self.adaptive = adaptive  # False: always draft d_max (used by tests and the bench's ablation)
        # what the policy learned (acceptance per source/bucket, drafting cost) carries over to the
        # next report: a fieldlog session writes many similar reports with one engine
        self._estimates: dict = {}
        self._draft_cost: dict = {}

    # ------------------------------------------------------------------ helpers
    def _pick(self, logits: np.ndarray, sp: SamplingParams, rng) -> int:
        if sp.greedy:
            return int(np.argmax(logits))
        return sample(logits_to_probs(logits, sp), rng)

    def generate(self, prompt: list[int], params: GenerationParams | None = None, cancel: threading.Event | None = None) -> Iterator[Chunk | Done]:
        params = params or GenerationParams()
        oracle = self.oracle
        sp = params.sampling
        if not prompt:
            raise PromptError("empty prompt")
        if len(prompt) >= oracle.n_ctx:
            raise PromptError(
                f"prompt is {len(prompt)} tokens but the oracle's context holds {oracle.n_ctx}; shorten the note"
            )
        if params.max_tokens <= 0:
            raise PromptError("max_tokens must be >= 1")
        oracle.check_ids(prompt)

        t_start = self.clock()
        rng = np.random.default_rng(sp.seed)
        spec = None if sp.greedy else SamplingSpec(sp.temperature, sp.top_k, sp.top_p, sp.seed)
        cp = ControllerParams(**{**self.controller_params.__dict__, "d_max": params.d_max, "d_min": params.d_min})
        ctl = DraftController(self.curve, cp, estimates=self._estimates, draft_cost=self._draft_cost)
        ctl.new_generation()
        stats = Stats(drafter=getattr(self.drafter, "name", "none") if self.drafter else "none", prompt_tokens=len(prompt))
        calls0 = oracle.decode_calls

        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text_parts: list[str] = []
        text_len = 0
        emitted: list[int] = []
        records: list[TokenRecord] = []
        stop_reason = ""

        def emit(tok: int, source: str, verified: bool) -> TokenRecord:
            nonlocal text_len
            piece = decoder.decode(oracle.token_bytes(tok, special=False)) if not oracle.is_eog(tok) else ""
            rec = TokenRecord(tok, piece, source, verified, text_len, text_len + len(piece))
            text_parts.append(piece)
            text_len += len(piece)
            emitted.append(tok)
            records.append(rec)
            return rec

        # prefill: the first token comes straight from the oracle
        logits = oracle.sync(list(prompt))
        stats.prefill_s = self.clock() - t_start
        first = self._pick(logits, sp, rng)
        rec = emit(first, "oracle", True)
        pending = [first]
        if self.drafter is not None:
            self.drafter.begin(list(prompt))
        yield Chunk(rec.text, [rec])

        unverified_run = 0
        while True:
            # ---- stop conditions
            if oracle.is_eog(emitted[-1]):
                stop_reason = "eos"
                break
            if len(emitted) >= params.max_tokens:
                stop_reason = "max_tokens"
                break
            if params.stop:
                full = "".join(text_parts)
                hit = min((i for i in (full.find(s) for s in params.stop) if i >= 0), default=-1)
                if hit >= 0:
                    stop_reason = "stop"
                    break
            if cancel is not None and cancel.is_set():
                stop_reason = "cancelled"
                break
            room = oracle.n_ctx - len(oracle.tokens) - len(pending)
            if room < 0:
                stop_reason = "context"
                break

            t_cycle = self.clock()
            d_cap = min(params.max_tokens - len(emitted) - 1, room, params.d_max)
            draft = Draft()
            bucket = None
            if self.drafter is not None and d_cap > 0:
                src = getattr(self.drafter, "name", "model")
                cheap = getattr(self.drafter, "cheap", False)  # lookup/history: proposing costs ~nothing
                if not self.adaptive:
                    want, probing = d_cap, False
                elif cheap:
                    want, probing = (d_cap, False) if len(emitted) >= ctl.off_until_token else (0, False)
                else:
                    want, probing = ctl.plan(src, d_cap, len(emitted))
                if want > 0:
                    context = list(prompt) + emitted
                    t0 = self.clock()
                    draft = self.drafter.propose(context, want, sample=spec)
                    dt = self.clock() - t0
                    stats.drafter_passes += draft.passes
                    src = draft.source or src
                    ctl.record_draft_time(src, dt, max(len(draft.tokens), 1))
                    bucket = bucket_of(src, draft.match_len)
                    keep = min(len(draft.tokens), d_cap)
                    # a cascade plans its own lengths; plain match drafts are trimmed by their bucket's odds
                    if self.adaptive and cheap and keep and not getattr(self.drafter, "plans_length", False):
                        long_match = draft.match_len is None or draft.match_len >= cp.probe_min_match
                        keep_b, _ = ctl.plan(bucket, keep, len(emitted), allow_probe=long_match)
                        keep = min(keep, keep_b)
                    draft = self._truncate(draft, keep)
                    if draft.probs is not None and spec is None:
                        draft.probs = None

            n_draft = len(draft.tokens)
            if n_draft == 0:
                bucket = None

            # ---- power saving: accept boilerplate drafts without an oracle pass
            if (
                n_draft
                and params.relax_unverified
                and self.span_guard is not None
                and unverified_run + n_draft <= params.max_unverified_run
            ):
                draft_text = oracle.detokenize(draft.tokens, special=False).decode("utf-8", "replace")
                prefix_text = "".join(text_parts)
                if not any(oracle.is_eog(t) for t in draft.tokens) and self.span_guard.may_skip_verification(prefix_text, draft_text):
                    new = [emit(t, "unverified", False) for t in draft.tokens]
                    pending.extend(draft.tokens)
                    unverified_run += n_draft
                    stats.drafted_tokens += n_draft
                    stats.cycles += 1
                    if self.drafter is not None:
                        self.drafter.accepted(list(prompt) + emitted, n_draft, n_draft)
                    yield Chunk("".join(r.text for r in new), new)
                    continue

            # ---- verify pending + draft in one oracle pass
            batch = pending + draft.tokens
            first_row = len(pending) - 1
            rows = oracle.decode(batch, logits_at=list(range(first_row, len(batch))))
            if sp.greedy:
                n_acc, nxt = greedy_accept(draft.tokens, rows)
            else:
                p = logits_to_probs(rows, sp)
                n_acc, nxt = speculative_accept(draft.tokens, draft.probs, p, rng)
            # ---- rewind: keep everything up to the last accepted draft token
            oracle.trim(len(oracle.tokens) - n_draft + n_acc)
            unverified_run = 0
            new: list[TokenRecord] = []
            eog_in_draft = False
            for t in draft.tokens[:n_acc]:
                new.append(emit(t, "drafted", True))
                if oracle.is_eog(t):
                    eog_in_draft = True
                    break
            if not eog_in_draft:
                source = "oracle" if n_draft == 0 else ("bonus" if n_acc == n_draft else "corrected")
                new.append(emit(nxt, source, True))
                pending = [nxt]
            else:
                pending = []
            stats.cycles += 1
            stats.drafted_tokens += n_draft
            stats.accepted_tokens += n_acc
            if n_draft:
                stats.accepted_lengths.append(n_acc)
            ctl.record_cycle(bucket, n_acc, n_draft, self.clock() - t_cycle, len(new), len(emitted))
            if self.drafter is not None and n_draft:
                self.drafter.accepted(list(prompt) + emitted, n_acc, n_draft)
            yield Chunk("".join(r.text for r in new), new)

        tail = decoder.decode(b"", final=True)
        if tail:
            text_parts.append(tail)
            if records:
                records[-1].text += tail
                records[-1].end += len(tail)
        text = "".join(text_parts)
        if stop_reason == "stop":
            cut = min(i for i in (text.find(s) for s in params.stop) if i >= 0)
            text = text[:cut]
            records = [r for r in records if r.start < cut]
            for r in records:
                if r.end > cut:
                    r.text = r.text[: cut - r.start]
                    r.end = cut
        # an end-of-generation token is not part of the text or the token list
        if records and oracle.is_eog(records[-1].token):
            records = records[:-1]
        stats.tokens = len(records)
        stats.stop_reason = stop_reason
        stats.oracle_passes = oracle.decode_calls - calls0
        stats.fallback_events = ctl.fallback_events
        stats.wall_s = self.clock() - t_start
        yield Done(text, [r.token for r in records], records, stats)

    @staticmethod
    def _truncate(draft: Draft, n: int) -> Draft:
        if n >= len(draft.tokens):
            return draft
        return Draft(
            tokens=draft.tokens[:n],
            probs=None if draft.probs is None else draft.probs[:n],
            passes=draft.passes,
            source=draft.source,
            match_len=draft.match_len,
        )
