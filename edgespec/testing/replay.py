"""Replay recorded greedy decodings through the real Engine on a virtual clock.

Wall-clock benchmarks on a 2-core machine are slow and noisy; the draft policy's
decisions depend only on acceptance and on the oracle's verify-cost curve. A
``ReplayOracle`` answers every verify with the recorded greedy token at each
position (as the real oracle would under greedy decoding) and advances a
``VirtualClock`` by the measured cost of the batch, so a policy change can be
judged on many reports in seconds, deterministically. ``hindsight_speedup`` is the
bound no policy can beat: it knows each draft's accepted length before verifying.
``HindsightDrafter`` is the same bound run through the real engine, so it holds under
a grammar too (jump-forward, forced runs in the batch, drafts cut by the grammar).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..cost import CostCurve


class VirtualClock:
    """A perf_counter stand-in that only moves when the replay oracle 'computes'."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ReplayOracle:
    """The slice of ``LlamaModel`` the engine uses, answering from a recorded greedy continuation.

    ``overhead_s`` is added to every decode call (Python + logits copy per cycle,
    ~0.4 ms measured here). Rows are one-hot logits over ``n_vocab``. ``vocabulary``: the real model whose
    vocabulary a grammar constraint is built over (``path``, ``vocab_fingerprint``, ``eog_tokens``), for
    replays under a constraint.
    """

    def __init__(self, curve: CostCurve, clock: VirtualClock, *, n_vocab: int, eog: int, n_ctx: int = 4096,
                 overhead_s: float = 0.0004, prefill_s: float = 0.0, vocabulary=None):
        self.curve, self.clock = curve, clock
        self.n_vocab, self.eog, self.n_ctx = n_vocab, eog, n_ctx
        self.overhead_s, self.prefill_s = overhead_s, prefill_s
        self.tokens: list[int] = []
        self.decode_calls = 0
        self._full: list[int] = []
        self._vocabulary = vocabulary
        if vocabulary is not None:
            self.path = vocabulary.path

    def vocab_fingerprint(self) -> str:
        return self._vocabulary.vocab_fingerprint()

    def eog_tokens(self) -> list[int]:
        return list(self._vocabulary.eog_tokens()) if self._vocabulary is not None else [self.eog]

    @property
    def recording(self) -> list[int]:
        """The prompt and the continuation of the generation being replayed."""
        return self._full

    def load(self, prompt: list[int], continuation: list[int]) -> None:
        """The next generation starts from ``prompt``; greedy decoding of it gives ``continuation``."""
        self._full = list(prompt) + list(continuation)
        self.tokens = []

    def _next_token(self, n_before: int) -> int:
        return self._full[n_before] if n_before < len(self._full) else self.eog

    def _rows(self, positions: list[int]) -> np.ndarray:
        rows = np.zeros((len(positions), self.n_vocab), dtype=np.float32)
        for r, n_before in enumerate(positions):
            rows[r, self._next_token(n_before)] = 1.0
        return rows

    # -- the LlamaModel surface the engine calls ------------------------------------------------
    def check_ids(self, ids) -> None:
        bad = [t for t in ids if not 0 <= int(t) < self.n_vocab]
        if bad:
            raise ValueError(f"token ids out of range: {bad[:5]}")

    def is_eog(self, tok: int) -> bool:
        return int(tok) == self.eog or (self._vocabulary is not None and int(tok) in self.eog_tokens())

    def token_bytes(self, tok: int, special: bool = False) -> bytes:
        return b"" if self.is_eog(tok) else f"<{int(tok)}>".encode()

    def detokenize(self, tokens, special: bool = False) -> bytes:
        return b"".join(self.token_bytes(t) for t in tokens)

    def sync(self, prompt: list[int]) -> np.ndarray:
        self.tokens = list(prompt)
        self.clock.advance(self.prefill_s)
        return self._rows([len(self.tokens)])[0]

    def decode(self, batch: list[int], logits_at: list[int]) -> np.ndarray:
        start = len(self.tokens)
        self.tokens.extend(int(t) for t in batch)
        self.decode_calls += 1
        self.clock.advance(self.curve.t(len(batch)) + self.overhead_s)
        return self._rows([start + i + 1 for i in logits_at])

    def trim(self, n: int) -> None:
        del self.tokens[n:]

    def reset(self) -> None:
        self.tokens = []


class HindsightDrafter:
    """A drafter that has read the recording: it proposes ``inner``'s draft cut to the prefix the oracle
    will accept (for a cascade, the candidate of its cheap sources that is accepted furthest), so it never
    pays for a rejected token and drafts whenever a draft would be accepted. Run by an engine with
    ``adaptive=False`` (draft all that is on offer) it is the hindsight policy for those drafts.
    ``inner=None`` proposes the recording itself: free perfect drafts, the ceiling of any drafter."""

    cheap = True
    multi_candidate = False

    def __init__(self, oracle: ReplayOracle, inner=None) -> None:
        self.oracle, self.inner = oracle, inner
        self.name = f"hindsight {inner.name}" if inner is not None else "perfect"
        self._cascade = inner is not None and hasattr(inner, "candidates")

    def _accepted(self, context: list[int], tokens: list[int]) -> int:
        ahead = self.oracle.recording[len(context):]
        a = 0
        while a < len(tokens) and a < len(ahead) and tokens[a] == ahead[a]:
            a += 1
        return a

    def begin(self, prompt_tokens: list[int]) -> None:
        if self.inner is not None:
            self.inner.begin(prompt_tokens)

    def propose(self, context: list[int], max_tokens: int, **kw):
        from ..drafters.base import Draft

        if self.inner is None:
            return Draft(tokens=self.oracle.recording[len(context):len(context) + max_tokens], source=self.name)
        if not self._cascade:
            d = self.inner.propose(context, max_tokens, **kw)
            return d.truncated(self._accepted(context, d.tokens))
        cands = [c for c in self.inner.candidates(context, max_tokens, **kw) if c.draft is not None]
        if not cands:
            return Draft(source=self.name)
        best = max(cands, key=lambda c: self._accepted(context, c.draft.tokens))  # ties: the cheaper (earlier) one
        n = self._accepted(context, best.draft.tokens)
        return self.inner.take(best, n, context, **kw) if n else Draft(source=self.name)

    def accepted(self, context: list[int], n_accepted: int, n_drafted: int) -> None:
        if self.inner is not None:
            self.inner.accepted(context, n_accepted, n_drafted)

    def close(self) -> None:
        pass  # the inner drafter belongs to the caller


@dataclass
class ReplayResult:
    tokens: list[int]
    seconds: float  # virtual
    plain_seconds: float  # the same tokens one at a time
    accepted: int
    drafted: int

    @property
    def speedup(self) -> float:
        return self.plain_seconds / self.seconds if self.seconds > 0 else 1.0


def replay(engine, oracle: ReplayOracle, prompt: list[int], continuation: list[int], *, constraint=None) -> ReplayResult:
    """Run ``engine.generate`` greedily against the recording (under ``constraint`` when the recording is a
    constrained decoding); the output must be the recording."""
    from ..engine import GenerationParams

    oracle.load(prompt, continuation)
    t0 = oracle.clock()
    done = None
    for ev in engine.generate(list(prompt), GenerationParams(max_tokens=max(1, len(continuation))), constraint=constraint):
        done = ev
    if done.tokens != list(continuation)[: len(done.tokens)]:
        raise AssertionError("the engine's greedy output left the recorded continuation")
    seconds = oracle.clock() - t0
    n = len(done.tokens)
    plain = oracle.prefill_s + max(0, n - 1) * (oracle.curve.t(1) + oracle.overhead_s)
    return ReplayResult(done.tokens, seconds, plain, done.stats.accepted_tokens, done.stats.drafted_tokens)


def hindsight_speedup(propose, prompt: list[int], continuation: list[int], curve: CostCurve, *,
                      n_candidates: int = 1, d_max: int = 16) -> float:
    """Speedup of a policy that knows how much of each draft the oracle will accept.

    ``propose(context, d_max, n)`` returns up to ``n`` candidate token lists. All
    candidates are verified in one pass at a common length L (a tree of n branches
    costs t(1 + total drafted)); L is the best in hindsight, 0 when no draft pays.
    """
    i, cost = 0, 0.0
    ref = list(continuation)
    t1 = curve.t(1)
    while i < len(ref):
        cands = [c for c in propose(list(prompt) + ref[:i], d_max, n_candidates) if c][:n_candidates]
        acc = []
        for c in cands:
            a = 0
            while a < len(c) and i + a < len(ref) and c[a] == ref[i + a]:
                a += 1
            acc.append(a)
        best_rate, best = 1.0 / t1, (0, 0)
        for L in range(1, d_max + 1):
            total = sum(min(L, len(c)) for c in cands)
            if not total:
                break
            emitted = 1 + max(min(a, L) for a in acc)
            rate = emitted / curve.t(1 + total)
            if rate > best_rate:
                best_rate, best = rate, (total, emitted)
        if best[0]:
            cost += curve.t(1 + best[0])
            i += best[1]
        else:
            cost += t1
            i += 1
    return len(ref) * t1 / cost if cost else 1.0
