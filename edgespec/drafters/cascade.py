"""Cascade drafter: the cheapest source that pays, per step; the model drafter only where the cheap ones have nothing.

History and prompt-lookup drafts cost microseconds but are only worth verifying
when their match is long enough (measured here: lookup drafts on matches under
~6 tokens lose 0.66-0.94x). A model drafter drafts everywhere but costs a
forward pass per token. So each step the cascade asks every cheap source
(in order) for a draft, estimates for each candidate -- and for the model
drafter, which is only run if chosen -- the speedup its draft would buy from

* the acceptance of its (source, match-length bucket) per draft position, the
  same decayed estimate and priors the engine's policy keeps
  (``policy.LengthEstimate``, ``policy.prior_estimate``), fed by verification, and
* the cost: the oracle's verify-cost curve plus the source's measured drafting
  time per token,

and drafts from the best one, or not at all when none beats plain decoding.
Buckets that lose are re-tried now and then with short probes (exponential
backoff), so a source that starts to pay again is noticed.

``choose_source`` is the pure decision, testable on scripted acceptance traces.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from .. import EdgespecError
from ..policy import CostCurve, LengthEstimate, best_length_for_survival, bucket_of, prior_estimate, survival_curve
from .base import Draft, Drafter, SamplingSpec

# Verify cost of Qwen2.5-Coder-0.5B measured on this 2-core machine (seconds for a batch of n tokens).
# Only the shape matters for the decision; pass the calibrated curve of the real oracle when there is one.
DEFAULT_CURVE = CostCurve([1, 4, 8, 16], [0.019, 0.048, 0.080, 0.117])


@dataclass(frozen=True)
class Candidate:
    """One source's offer for this step.

    ``available``: tokens it can draft (a cheap source's proposal length, or the
    requested maximum for a model drafter that has not run yet); ``draft``: the
    proposal already made, None when the source only drafts if chosen.
    """

    source: int
    name: str
    bucket: str
    available: int
    draft: Draft | None = None


@dataclass
class CascadeCost:
    """What a draft costs: the oracle's verify curve and each source's drafting time per token (seconds)."""

    curve: CostCurve = field(default_factory=lambda: DEFAULT_CURVE)
    per_token: dict[str, float] = field(default_factory=dict)
    min_speedup: float = 1.02  # a draft must be predicted to beat plain decoding by this much


@dataclass(frozen=True)
class Choice:
    index: int  # into the candidate list
    n_tokens: int  # draft length that maximises predicted throughput
    speedup: float  # predicted, relative to one-token decoding


def plan(
    stats: Mapping[str, LengthEstimate],
    candidates: Sequence[Candidate],
    cost: CascadeCost,
    *,
    alpha_override: Mapping[str, float] | None = None,
) -> Choice | None:
    """The candidate and draft length with the best predicted speedup, or None if none beats ``cost.min_speedup``.

    Ties go to the earlier candidate (sources are listed cheapest first).
    Buckets without statistics start from ``prior_estimate``.
    """
    best: Choice | None = None
    for i, cand in enumerate(candidates):
        if cand.available <= 0:
            continue
        if alpha_override is not None and cand.bucket in alpha_override:
            survival = survival_curve(alpha_override[cand.bucket], cand.available)
        else:
            est = stats.get(cand.bucket)
            survival = (est if est is not None else prior_estimate(cand.bucket)).survival(cand.available)
        d, s = best_length_for_survival(survival, cost.curve, cand.available,
                                        draft_cost_per_token=cost.per_token.get(cand.name, 0.0))
        if d > 0 and s >= cost.min_speedup and (best is None or s > best.speedup):
            best = Choice(i, d, s)
    return best


def choose_source(
    stats: Mapping[str, LengthEstimate], candidates: Sequence[Candidate], cost: CascadeCost
) -> int | None:
    """Index (into ``candidates``) of the source to draft from this step, or None to decode without a draft."""
    choice = plan(stats, candidates, cost)
    return None if choice is None else choice.index


@dataclass
class _Probe:
    gap: int
    next_at: int


class CascadeDrafter:
    """Per step, draft from the source with the best predicted speedup; cheap sources first, model last.

    ``sources``: drafters ordered cheapest first; any source whose ``cheap``
    attribute is false (a model drafter) is only run when chosen, with its
    cost per token measured from its own proposals (``draft_costs`` gives
    starting values, e.g. from a calibration). ``curve``: the oracle's
    verify-cost curve. The statistics persist across generations (``begin``
    does not reset them), so over a season the cascade learns which buckets pay.
    """

    name = "cascade"
    plans_length = True  # the engine must not trim the cascade's drafts again
    cheap = True  # the engine asks for full-length drafts; the cascade itself decides what drafting pays

    def __init__(
        self,
        sources: Sequence[Drafter],
        *,
        curve: CostCurve | None = None,
        draft_costs: Mapping[str, float] | None = None,
        min_speedup: float = 1.02,
        probe_interval: int = 16,
        probe_interval_max: int = 512,
        probe_len: int = 3,
        optimistic_alpha: float = 0.9,
    ):
        sources = list(sources)
        if not sources:
            raise EdgespecError("a cascade needs at least one draft source")
        for s in sources:
            for attr in ("propose", "begin", "accepted", "close"):
                if not callable(getattr(s, attr, None)):
                    raise EdgespecError(f"{s!r} is not a drafter (no {attr}())")
        self.sources = sources
        self.cost = CascadeCost(curve or DEFAULT_CURVE, dict(draft_costs or {}), min_speedup)
        self.stats: dict[str, LengthEstimate] = {}
        self.probe_interval = probe_interval
        self.probe_interval_max = probe_interval_max
        self.probe_len = probe_len  # kept for API compatibility; probes use the optimistic best length
        self.probe_min_match = 8
        self.optimistic_alpha = optimistic_alpha
        self._probes: dict[str, _Probe] = {}
        self._step = 0
        self._last: Candidate | None = None  # what the latest draft came from
        self.last_choice: Choice | None = None
        self.last_match_len = 0
        self.chosen: dict[str, int] = {}  # drafts per source name (for stats and tests)

    @staticmethod
    def _is_cheap(src) -> bool:
        return bool(getattr(src, "cheap", False))

    def begin(self, prompt_tokens: list[int]) -> None:
        for src in self.sources:
            src.begin(list(prompt_tokens))
        self._last = None

    def _candidates(self, context: list[int], max_tokens: int, sample: SamplingSpec | None) -> list[Candidate]:
        cands = []
        for i, src in enumerate(self.sources):
            name = getattr(src, "name", f"source{i}")
            if self._is_cheap(src):
                t0 = time.perf_counter()
                draft = src.propose(context, max_tokens, sample=sample)
                dt = time.perf_counter() - t0
                src_name = draft.source or name
                self._record_cost(src_name, dt, max(len(draft.tokens), 1))
                if draft.tokens:
                    cands.append(Candidate(i, src_name, bucket_of(src_name, draft.match_len), len(draft.tokens), draft))
            else:
                cands.append(Candidate(i, name, bucket_of(name, None), max_tokens, None))
        return cands

    def _record_cost(self, name: str, seconds: float, n_tokens: int) -> None:
        per = seconds / max(n_tokens, 1)
        old = self.cost.per_token.get(name)
        self.cost.per_token[name] = per if old is None else 0.8 * old + 0.2 * per

    def _probe_choice(self, cands: list[Candidate]) -> Choice | None:
        """A short try of a bucket the estimates currently rule out, when its backoff has expired."""
        optimistic = {c.bucket: self.optimistic_alpha for c in cands}
        for i, c in enumerate(cands):
            pr = self._probes.get(c.bucket)
            if pr is None or self._step < pr.next_at:
                continue
            # a short match is judged by its prior alone: on a CPU where a 2-token verify costs
            # ~2.4x a 1-token step, probing it only burns oracle passes
            if c.draft is not None and (c.draft.match_len or 0) < self.probe_min_match:
                continue
            # only probe what could pay if it were accepted as often as a good source is, at the
            # length that would pay most (short probes cannot pay on a batch-cost curve like this one)
            opt = plan(self.stats, [c], self.cost, alpha_override=optimistic)
            if opt is None:
                continue
            pr.gap = min(pr.gap * 2, self.probe_interval_max)
            pr.next_at = self._step + pr.gap
            return Choice(i, opt.n_tokens, 0.0)
        return None

    def propose(self, context: list[int], max_tokens: int, *, sample: SamplingSpec | None = None) -> Draft:
        self._step += 1
        self._last = None
        self.last_choice = None
        if max_tokens <= 0:
            return Draft(source=self.name, match_len=0)
        cands = self._candidates(context, max_tokens, sample)
        choice = plan(self.stats, cands, self.cost)
        for c in cands:  # every bucket that was on offer but not chosen starts (or keeps) a probe clock
            if choice is None or c.bucket != cands[choice.index].bucket:
                self._probes.setdefault(c.bucket, _Probe(self.probe_interval, self._step + self.probe_interval))
        if choice is None:
            choice = self._probe_choice(cands)
        if choice is None:
            best_match = max((c.draft.match_len or 0 for c in cands if c.draft is not None), default=0)
            self.last_match_len = best_match
            return Draft(source=self.name, match_len=best_match)
        cand = cands[choice.index]
        if cand.draft is None:  # a model drafter: run it now, for only as many tokens as pay
            src = self.sources[cand.source]
            t0 = time.perf_counter()
            draft = src.propose(context, choice.n_tokens, sample=sample)
            self._record_cost(cand.name, time.perf_counter() - t0, max(len(draft.tokens), 1))
            if not draft.source:
                draft.source = cand.name
        else:
            draft = _truncate(cand.draft, choice.n_tokens)
        self._last = cand
        self.last_choice = choice
        self.last_match_len = draft.match_len or 0
        self.chosen[cand.name] = self.chosen.get(cand.name, 0) + 1
        return draft

    def propose_candidates(self, context: list[int], max_tokens: int, n: int = 4) -> list[Draft]:
        """Several drafts when the chosen source can branch (history), else the single ``propose`` draft."""
        first = self.propose(context, max_tokens)
        if not first.tokens or self._last is None:
            return [first] if first.tokens else []
        src = self.sources[self._last.source]
        multi = getattr(src, "propose_candidates", None)
        if multi is None or n <= 1:
            return [first]
        out = [first]
        for d in multi(context, len(first.tokens), n):
            if d.tokens != first.tokens and len(out) < n:
                out.append(d)
        return out

    def accepted(self, context: list[int], n_accepted: int, n_drafted: int) -> None:
        last = self._last
        if last is not None and n_drafted > 0:
            est = self.stats.setdefault(last.bucket, prior_estimate(last.bucket))
            est.update(n_accepted, n_drafted)
            if plan(self.stats, [last], self.cost) is not None:
                self._probes.pop(last.bucket, None)  # it pays again: reset its backoff
        for i, src in enumerate(self.sources):
            if last is not None and i == last.source:
                src.accepted(context, n_accepted, n_drafted)
            else:
                src.accepted(context, 0, 0)
        self._last = None

    def close(self) -> None:
        errors = []
        for src in self.sources:
            try:
                src.close()
            except Exception as e:  # noqa: BLE001 - close every source, report the first failure
                errors.append(e)
        if errors:
            raise errors[0]


def _truncate(draft: Draft, n: int) -> Draft:
    if n >= len(draft.tokens):
        return draft
    out = Draft(
        tokens=draft.tokens[:n],
        probs=None if draft.probs is None else draft.probs[:n],
        passes=draft.passes,
        source=draft.source,
        match_len=draft.match_len,
    )
    return out
