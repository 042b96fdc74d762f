"""The draft-and-verify loop: plan → propose → verify → commit, then finish.

One cycle: the policy says how many tokens to ask the drafter for (plan); the
drafter proposes and the policy keeps what pays, or picks one of a cascade's
candidates (propose); the oracle evaluates ``pending + draft`` in one batch with
logits at every draft position and ``acceptance`` keeps the agreed prefix plus
the oracle's own next token (verify); the accepted tokens are emitted, the
oracle's KV cache is trimmed back to exactly the committed tokens and the
verdict goes to the policy and the drafter (commit). ``pending`` holds emitted
tokens the oracle has not consumed yet (normally just the last one). In
power-saving modes a draft the span guard allows may be emitted unverified
instead of verified (relaxed acceptance). Everything is streamed as ``Chunk``
events with per-token provenance and ends with ``Done`` (finish).
"""

from __future__ import annotations

import codecs
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

import numpy as np

from . import PromptError
from .acceptance import SamplingParams, greedy_accept, logits_to_probs, sample, speculative_accept
from .constraints import Constraint, GrammarMatcher
from .drafters.base import CandidateDrafter, Draft, Drafter, Oracle, SamplingSpec, check_drafter
from .events import Chunk, Done, Stats, TokenRecord
from .masks import masked_argmax, masked_greedy_accept, masked_probs, masked_speculative_accept, verify_batch
from .cost import CostCurve
from .policy import Choice, DraftPolicy, PolicyParams, bucket_of


# Most forced (grammar-fixed) tokens one verify batch carries: past ~64 a batch costs about as much per token
# as the next one would, and a long run would hold the stream back.
FORCED_BATCH = 64


@dataclass
class GenerationParams:
    max_tokens: int = 256
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: tuple[str, ...] = ()
    d_max: int = 16
    d_min: int = 1
    relax_unverified: bool = False  # power saving: may skip verification outside critical spans
    max_unverified_run: int = 24


def _first_stop(text: str, stops: tuple[str, ...]) -> int:
    """Where the earliest stop string starts in ``text``, -1 if none occurs."""
    return min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)


class _Transcript:
    """The emitted tokens with their text and provenance; UTF-8 is decoded incrementally (a character may span tokens)."""

    def __init__(self, oracle: Oracle) -> None:
        self._oracle = oracle
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._parts: list[str] = []
        self._len = 0
        self.tokens: list[int] = []
        self.records: list[TokenRecord] = []

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def emit(self, tok: int, source: str, verified: bool) -> TokenRecord:
        piece = "" if self._oracle.is_eog(tok) else self._decoder.decode(self._oracle.token_bytes(tok, special=False))
        rec = TokenRecord(tok, piece, source, verified, self._len, self._len + len(piece))
        self._parts.append(piece)
        self._len += len(piece)
        self.tokens.append(tok)
        self.records.append(rec)
        return rec

    def preview(self, tokens: list[int]) -> tuple[str, bool]:
        """The text ``tokens`` would add if emitted now (bytes held back for an unfinished character
        join the draft's), and whether they end on a whole character."""
        trial = codecs.getincrementaldecoder("utf-8")(errors="replace")
        trial.setstate(self._decoder.getstate())
        text = trial.decode(b"".join(self._oracle.token_bytes(t, special=False) for t in tokens))
        return text, not trial.getstate()[0]

    def final(self, stops: tuple[str, ...], cut_at_stop: bool) -> tuple[str, list[TokenRecord]]:
        """The text and records to hand out: decoder flushed, cut before the first stop string when that
        ended the generation, without an end-of-generation token (it is not part of the text)."""
        tail = self._decoder.decode(b"", final=True)
        if tail:
            self._parts.append(tail)
            if self.records:
                self.records[-1].text += tail
                self.records[-1].end += len(tail)
        text, records = self.text, self.records
        if cut_at_stop:
            cut = _first_stop(text, stops)
            text = text[:cut]
            records = [r for r in records if r.start < cut]
            for r in records:
                if r.end > cut:
                    r.text = r.text[: cut - r.start]
                    r.end = cut
        if records and self._oracle.is_eog(records[-1].token):
            records = records[:-1]
        return text, records


@dataclass
class _Run:
    """One generation's state."""

    prompt: list[int]
    params: GenerationParams
    out: _Transcript
    stats: Stats
    rng: np.random.Generator
    spec: SamplingSpec | None  # how a model drafter samples its own proposals; None: greedy
    t_start: float
    calls0: int
    pending: list[int] = field(default_factory=list)
    unverified_run: int = 0
    grammar: GrammarMatcher | None = None  # the constraint's state, advanced with every committed token

    def context(self) -> list[int]:
        return self.prompt + self.out.tokens


@dataclass
class _Proposal:
    draft: Draft
    bucket: str | None = None  # the policy's bucket for the verdict on this draft; None: no draft
    choice: Choice | None = None  # the cascade candidate it was taken from
    forced: list[bool] | None = None  # under a grammar: which planned tokens (and the position after) it forces
    from_draft: list[int | None] | None = None  # under a grammar: planned token i's index in the drafter's draft


class Engine:
    def __init__(
        self,
        oracle: Oracle,
        drafter: Drafter | CandidateDrafter | None = None,
        *,
        curve: CostCurve | None = None,
        policy_params: PolicyParams | None = None,
        span_guard=None,
        adaptive: bool | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if drafter is not None:
            check_drafter(drafter)
        self.oracle = oracle
        self.drafter = drafter
        self._cascade = isinstance(drafter, CandidateDrafter)
        # the policy learns from measured cycle times; a replay (edgespec.testing.replay) passes a virtual clock
        self.clock = clock
        self.curve = curve or CostCurve.linear(1.0)
        self.span_guard = span_guard  # object with may_skip_verification(prefix_text, draft_text)
        params = policy_params or PolicyParams()
        if adaptive is not None:  # False: always draft the most on offer (used by tests and the bench's ablation)
            params = replace(params, adaptive=adaptive)
        # one policy for every report: what it learned carries over (a fieldlog session writes many similar
        # reports with one engine)
        self.policy = DraftPolicy(self.curve, params)

    def generate(self, prompt: list[int], params: GenerationParams | None = None, cancel: threading.Event | None = None,
                 *, constraint: Constraint | None = None) -> Iterator[Chunk | Done]:
        """Stream the continuation of ``prompt`` (oracle token ids) as ``Chunk`` events, then one ``Done``.

        With a ``constraint`` the output follows its grammar: the oracle's logits are masked at every
        position it verifies, drafts are cut where the grammar refuses them, and where the grammar allows a
        single continuation its tokens join the verify batch unsampled (jump-forward, provenance "data").
        """
        params = params or GenerationParams()
        self._check(prompt, params)
        grammar = constraint.matcher(self.oracle) if constraint is not None else None
        run = self._start(prompt, params, grammar)
        yield Chunk("".join(r.text for r in run.out.records), list(run.out.records))
        while (reason := self._stop_reason(run, cancel)) is None:
            t_cycle = self.clock()
            proposal = self._propose(run, self._plan(run))
            chunk = None if grammar is not None else self._accept_unverified(run, proposal)
            if chunk is None:
                n_acc, nxt = self._verify(run, proposal)
                chunk = self._commit(run, proposal, n_acc, nxt, t_cycle)
            yield chunk
        yield self._finish(run, reason)

    # ------------------------------------------------------------------ start and stop
    def _check(self, prompt: list[int], params: GenerationParams) -> None:
        if not prompt:
            raise PromptError("empty prompt")
        if len(prompt) >= self.oracle.n_ctx:
            raise PromptError(
                f"prompt is {len(prompt)} tokens but the oracle's context holds {self.oracle.n_ctx}; shorten the note"
            )
        if params.max_tokens <= 0:
            raise PromptError("max_tokens must be >= 1")
        self.oracle.check_ids(prompt)

    def _start(self, prompt: list[int], params: GenerationParams, grammar: GrammarMatcher | None = None) -> _Run:
        """Prefill: the first token comes straight from the oracle (or, when the grammar forces how the
        output begins, the forced run, which the first verify batch then feeds to the oracle)."""
        t_start = self.clock()
        sp = params.sampling
        run = _Run(
            prompt=list(prompt), params=params, out=_Transcript(self.oracle),
            stats=Stats(drafter=self.drafter.name if self.drafter is not None else "none", prompt_tokens=len(prompt)),
            rng=np.random.default_rng(sp.seed),
            spec=None if sp.greedy else SamplingSpec(sp.temperature, sp.top_k, sp.top_p, sp.seed),
            t_start=t_start, calls0=self.oracle.decode_calls, grammar=grammar,
        )
        self.policy.new_generation(d_max=params.d_max, d_min=params.d_min)
        logits = self.oracle.sync(list(prompt))
        run.stats.prefill_s = self.clock() - t_start
        forced = grammar.forced()[: max(params.max_tokens, 1)] if grammar is not None else []
        if forced:
            for t in forced:
                run.out.emit(t, "data", True)
            run.pending = list(forced)
            run.stats.forced_tokens += len(forced)
        else:
            first = self._pick(logits, sp, run.rng, grammar)
            run.out.emit(first, "oracle", True)
            run.pending = [first]
        if grammar is not None:
            grammar.consume(run.pending)
        if self.drafter is not None:
            self.drafter.begin(list(prompt))
        return run

    @staticmethod
    def _pick(logits: np.ndarray, sp: SamplingParams, rng: np.random.Generator, grammar: GrammarMatcher | None) -> int:
        if grammar is None:
            return int(np.argmax(logits)) if sp.greedy else sample(logits_to_probs(logits, sp), rng)
        mask = grammar.mask()
        return masked_argmax(logits, mask) if sp.greedy else sample(masked_probs(logits, mask, sp), rng)

    def _room(self, run: _Run) -> int:
        return self.oracle.n_ctx - len(self.oracle.tokens) - len(run.pending)

    def _stop_reason(self, run: _Run, cancel: threading.Event | None) -> str | None:
        emitted = run.out.tokens
        if self.oracle.is_eog(emitted[-1]):
            return "eos"
        if run.grammar is not None and run.grammar.is_stopped():
            return "eos"  # complete: the grammar allows nothing but the end
        if len(emitted) >= run.params.max_tokens:
            return "max_tokens"
        if run.params.stop and _first_stop(run.out.text, run.params.stop) >= 0:
            return "stop"
        if cancel is not None and cancel.is_set():
            return "cancelled"
        if self._room(run) < 0 or (self._room(run) == 0 and not run.pending):  # full, nothing left to feed
            return "context"
        return None

    # ------------------------------------------------------------------ plan, propose
    def _plan(self, run: _Run) -> int:
        """Tokens to ask the drafter for: what the policy says, within what the report and the context have left."""
        if self.drafter is None:
            return 0
        d_cap = min(run.params.max_tokens - len(run.out.tokens) - 1, self._room(run), run.params.d_max)
        cheap = self._cascade or self.drafter.cheap  # a cascade runs its model source only if picked
        return self.policy.ask(self.drafter.name, cheap, d_cap, len(run.out.tokens))

    def _propose(self, run: _Run, want: int) -> _Proposal:
        if run.grammar is None:
            return self._propose_draft(run, want)
        # the drafter continues after the run the grammar forces next; the forced runs go into the batch
        # with the draft, and the grammar cuts the draft where it refuses it
        room = max(self._room(run), 0)  # a forced run longer than the context has left is cut there too
        lead = run.grammar.forced()[:min(FORCED_BATCH, room)]
        proposal = self._propose_draft(run, want, lead)
        d = proposal.draft
        budget = min(max(len(lead) + len(d.tokens),
                         min(FORCED_BATCH, run.params.max_tokens - len(run.out.tokens) - 1)), room)
        plan = run.grammar.plan(lead + d.tokens, max(budget, 0))
        probs = None if d.probs is None else [None if j is None else d.probs[j - len(lead)] for j in plan.from_draft]
        n_drafted = plan.n_drafted
        proposal.draft = Draft(plan.tokens, probs, d.passes, d.source, d.match_len)
        proposal.forced, proposal.from_draft = plan.forced, plan.from_draft
        if n_drafted == 0:
            proposal.bucket, proposal.choice = None, None
        return proposal

    def _propose_draft(self, run: _Run, want: int, lead: list[int] = ()) -> _Proposal:
        if want <= 0:
            return _Proposal(Draft())
        context = run.context() + list(lead)
        base = max(len(run.pending) + len(lead), 1)  # the batch without a draft: the draft pays for what it adds
        if self._cascade:
            draft, choice = self._draft_from_candidates(run, context, want, base)
        else:
            draft, choice = self._draft_from_drafter(run, context, want, base), None
        if draft.probs is not None and run.spec is None:
            draft.probs = None  # greedy verification needs no q rows
        run.stats.drafter_passes += draft.passes
        if not draft.tokens:
            return _Proposal(Draft())
        return _Proposal(draft, bucket_of(draft.source or self.drafter.name, draft.match_len), choice)

    def _draft_from_drafter(self, run: _Run, context: list[int], want: int, base: int) -> Draft:
        t0 = self.clock()
        draft = self.drafter.propose(context, want, sample=run.spec)
        self.policy.record_draft_time(draft.source or self.drafter.name, self.clock() - t0, max(len(draft.tokens), 1))
        keep = min(len(draft.tokens), want)
        if self.drafter.cheap and keep:
            bucket = bucket_of(draft.source or self.drafter.name, draft.match_len)
            keep = self.policy.keep(bucket, draft.match_len, keep, len(run.out.tokens), base=base)
        return draft.truncated(keep)

    def _draft_from_candidates(self, run: _Run, context: list[int], want: int,
                               base: int) -> tuple[Draft, Choice | None]:
        choice = self.policy.choose(self.drafter.candidates(context, want, sample=run.spec, clock=self.clock), base=base)
        if choice is None:
            return Draft(), None
        t0 = self.clock()
        draft = self.drafter.take(choice.candidate, choice.n_tokens, context, sample=run.spec)
        if choice.candidate.draft is None:  # an on-demand source ran just now: what it cost is measured here
            self.policy.record_draft_time(choice.candidate.name, self.clock() - t0, max(len(draft.tokens), 1))
        return draft, choice

    # ------------------------------------------------------------------ relaxed acceptance
    def _accept_unverified(self, run: _Run, proposal: _Proposal) -> Chunk | None:
        """Power saving: emit a boilerplate draft without an oracle pass where the span guard allows it."""
        tokens, p = proposal.draft.tokens, run.params
        n = len(tokens)
        if not (n and p.relax_unverified and self.span_guard is not None and run.unverified_run + n <= p.max_unverified_run):
            return None
        if any(self.oracle.is_eog(t) for t in tokens):
            return None
        # The guard reads the draft as it joins the text: decoded alone, a character's last byte is U+FFFD
        # even where it completes a digit; a draft ending mid-character has bytes the guard cannot read yet.
        draft_text, whole = run.out.preview(tokens)
        if not whole or not self.span_guard.may_skip_verification(run.out.text, draft_text):
            return None
        new = [run.out.emit(t, "unverified", False) for t in tokens]
        run.pending.extend(tokens)
        run.unverified_run += n
        run.stats.drafted_tokens += n
        run.stats.cycles += 1
        self.policy.record_unverified(n, proposal.choice.candidate if proposal.choice else None)
        self.drafter.accepted(run.context(), n, n)
        return Chunk("".join(r.text for r in new), new)

    # ------------------------------------------------------------------ verify, commit
    def _verify(self, run: _Run, proposal: _Proposal) -> tuple[int, int | None]:
        """One oracle pass over pending + draft with logits from the last pending token on:
        (draft tokens accepted, the oracle's own next token; None when the grammar forces what comes next)."""
        draft, sp = proposal.draft, run.params.sampling
        if run.grammar is not None:
            return self._verify_constrained(run, proposal)
        batch = run.pending + draft.tokens
        rows = self._decode(batch, list(range(len(run.pending) - 1, len(batch))))
        if sp.greedy:
            return greedy_accept(draft.tokens, rows)
        return speculative_accept(draft.tokens, draft.probs, logits_to_probs(rows, sp), run.rng)

    def _verify_constrained(self, run: _Run, proposal: _Proposal) -> tuple[int, int | None]:
        """The same pass under the grammar: no logits rows at forced positions, masks only where read."""
        tokens, sp = proposal.draft.tokens, run.params.sampling
        vb = verify_batch(run.pending, tokens, proposal.forced)
        rows = vb.rows(self._decode(vb.tokens, vb.logits_at))
        with run.grammar.along(tokens) as masks:
            if sp.greedy:
                return masked_greedy_accept(tokens, rows, masks, proposal.forced)
            return masked_speculative_accept(tokens, proposal.draft.probs, rows, masks, sp, run.rng, proposal.forced)

    def _decode(self, batch: list[int], logits_at: list[int]) -> np.ndarray:
        """One oracle pass, padded up to the cheapest measured batch size when that is cheaper (on llama.cpp's
        CPU kernels 4 tokens can cost less than 3); the padding leaves the cache at once, no logits read."""
        n_pad = self.curve.padded(len(batch)) - len(batch)
        if n_pad <= 0 or len(self.oracle.tokens) + len(batch) + n_pad > self.oracle.n_ctx:
            return self.oracle.decode(batch, logits_at=logits_at)
        rows = self.oracle.decode(batch + [batch[-1]] * n_pad, logits_at=logits_at)
        self.oracle.trim(len(self.oracle.tokens) - n_pad)
        return rows

    def _commit(self, run: _Run, proposal: _Proposal, n_acc: int, nxt: int, t_cycle: float) -> Chunk:
        """Emit the accepted tokens and the oracle's next one, rewind the oracle to them, feed the verdict back."""
        planned = proposal.draft.tokens
        forced = proposal.forced or [False] * (len(planned) + 1)
        n_pending = len(run.pending)  # what the batch began with (replaced below)
        self.oracle.trim(len(self.oracle.tokens) - len(planned) + n_acc)  # keep up to the last accepted token
        run.unverified_run = 0
        drafted = [i for i in range(len(planned)) if not forced[i]]  # the drafter's tokens (all, without a grammar)
        n, n_ok = len(drafted), sum(1 for i in drafted if i < n_acc)
        new = []
        for i, t in enumerate(planned[:n_acc]):
            new.append(run.out.emit(t, "data" if forced[i] else "drafted", True))
            if self.oracle.is_eog(t):
                nxt = None
                break
        else:
            if nxt is not None:  # the oracle's own token follows the accepted ones
                new.append(run.out.emit(nxt, "oracle" if n == 0 else ("bonus" if n_ok == n else "corrected"), True))
        committed = [r.token for r in new]
        # nothing pending after a forced position: the next batch starts with the forced run itself
        run.pending = [nxt] if nxt is not None and not self.oracle.is_eog(nxt) else []
        if run.grammar is not None:
            run.grammar.consume(committed)
        st = run.stats
        st.cycles += 1
        st.drafted_tokens += n
        st.accepted_tokens += n_ok
        st.forced_tokens += sum(1 for i in range(min(n_acc, len(planned))) if forced[i])
        if n:
            st.accepted_lengths.append(n_ok)
        seconds, emitted = self.clock() - t_cycle, len(new)
        n_forced = len(planned) - n
        if n_forced:  # judge the draft as priced: what it added to the forced batch, on top of a plain step
            batch = len(planned) + n_pending
            seconds = max(seconds - self.curve.t(batch - n) + self.curve.t(1), 1e-9)
            emitted = max(emitted - sum(1 for i in range(min(n_acc, len(planned))) if forced[i]), 1)
        self.policy.record_cycle(proposal.bucket, n_ok, n, seconds, emitted, len(run.out.tokens),
                                 candidate=proposal.choice.candidate if proposal.choice else None)
        if n:
            self.drafter.accepted(run.context(), n_ok, n)
        return Chunk("".join(r.text for r in new), new)

    # ------------------------------------------------------------------ finish
    def _finish(self, run: _Run, reason: str) -> Done:
        text, records = run.out.final(run.params.stop, cut_at_stop=reason == "stop")
        st = run.stats
        st.tokens = len(records)
        st.stop_reason = reason
        st.oracle_passes = self.oracle.decode_calls - run.calls0
        st.fallback_events = self.policy.fallback_events
        st.wall_s = self.clock() - run.t_start
        return Done(text, [r.token for r in records], records, st)
