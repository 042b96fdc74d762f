"""How many tokens to draft, and from which source: ``DraftPolicy`` over the cost model (``cost.py``).

A draft of d tokens pays only when the expected emitted tokens per cycle beat
(t(d+1) + draft cost) / t(1). The policy keeps the running acceptance estimates per
source, match-length bucket and draft position and makes every draft decision: how
long, from which of a cascade's sources, when to probe a written-off source again
and when drafting does not pay at all. Pure arithmetic over numbers the engine measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

import numpy as np

from .cost import CostCurve, best_length_for_survival, survival_curve
from .drafters.base import Candidate


def bucket_of(source: str, match_len: int | None) -> str:
    """Acceptance is not one number: lookup drafts on long matches are accepted far more often."""
    if match_len is None:
        return source or "model"
    edges = (2, 4, 6, 8, 12, 16)
    b = next((e for e in edges if match_len < e), "16+")
    return f"{source}:<{b}" if b != "16+" else f"{source}:16+"


# Draft positions grouped for LengthEstimate: the first token, then the rest. Finer groups
# (1, 2, 3-4, 5-8, 9-16) were tried in tools/simulate_drafting.py and did no better on the samples.
POSITION_EDGES = (1,)


def _group(pos: int) -> int:
    return next((g for g, e in enumerate(POSITION_EDGES) if pos <= e), len(POSITION_EDGES))


@dataclass
class LengthEstimate:
    """Per-position acceptance of one bucket's drafts, so the policy sees how long accepted runs are.

    Measured on scouting reports, accepted lengths are bimodal: a match-based draft
    is either wrong at its first token or right for many tokens (history drafts on
    16+-token matches: P(a >= 1) = 0.99, P(a >= 8) = 0.54). One i.i.d. acceptance
    rate cannot express that and mis-prices long drafts; a hazard per position
    group (``POSITION_EDGES``) can. Each group holds discounted counts of tokens
    accepted and rejected at those positions. The first group starts from the
    bucket's prior; a later group with little evidence of its own leans on the
    group before it (``prior_weight`` pseudo-counts at that group's rate), so a
    bucket that only ever drafted one token is extrapolated as i.i.d. until longer
    drafts say otherwise.
    """

    prior_alpha: float = 2.0 / 3.0
    prior_weight: float = 3.0
    decay: float = 0.97
    acc: list[float] = field(default_factory=list)
    rej: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(POSITION_EDGES) + 1
        if not self.acc:
            self.acc = [self.prior_weight * self.prior_alpha] + [0.0] * (n - 1)
        if not self.rej:
            self.rej = [self.prior_weight * (1.0 - self.prior_alpha)] + [0.0] * (n - 1)

    def update(self, n_accepted: int, n_drafted: int) -> None:
        self.scale(self.decay)
        for pos in range(1, n_accepted + 1):
            self.acc[_group(pos)] += 1.0
        if n_accepted < n_drafted:  # tokens after the first rejection were never tested
            self.rej[_group(n_accepted + 1)] += 1.0

    def scale(self, factor: float) -> None:
        """Discount the evidence (and the prior with it) so stale verdicts give way to new ones."""
        self.acc = [a * factor for a in self.acc]
        self.rej = [r * factor for r in self.rej]

    def doubt(self, factor: float = 0.5) -> None:
        """Discount only the accepted evidence: drafting measurably lost, so the estimate was too hopeful."""
        self.acc = [a * factor for a in self.acc]

    @property
    def evidence(self) -> float:
        """Discounted number of drafts seen (each is tested at its first position), prior included."""
        return self.acc[0] + self.rej[0]

    @property
    def alpha(self) -> float:
        """Acceptance of a draft's first token: the number that decides whether drafting pays at all."""
        return self.acc[0] / max(self.acc[0] + self.rej[0], 1e-12)

    def position_rates(self) -> list[float]:
        """Posterior acceptance per position group, each later group shrunk toward the one before."""
        rates = [self.alpha]
        w = self.prior_weight
        for a, r in zip(self.acc[1:], self.rej[1:]):
            n = a + r + w
            rates.append((a + w * rates[-1]) / n if n > 0 else rates[-1])
        return rates

    def survival(self, d_max: int) -> np.ndarray:
        """P(accepted length >= k) for k = 1..d_max."""
        p = np.array(self.position_rates())
        per_pos = p[[_group(k) for k in range(1, d_max + 1)]]
        return np.cumprod(per_pos)

    def to_dict(self) -> dict:
        return {"prior_alpha": self.prior_alpha, "prior_weight": self.prior_weight, "decay": self.decay,
                "acc": list(self.acc), "rej": list(self.rej)}

    @classmethod
    def from_dict(cls, d: Mapping) -> "LengthEstimate":
        """Raises ValueError on anything but the shape ``to_dict`` writes (a saved file may be damaged)."""
        n = len(POSITION_EDGES) + 1
        acc, rej = [float(x) for x in d["acc"]], [float(x) for x in d["rej"]]
        vals = [float(d["prior_alpha"]), float(d["prior_weight"]), float(d["decay"]), *acc, *rej]
        if len(acc) != n or len(rej) != n or not all(math.isfinite(v) and v >= 0 for v in vals):
            raise ValueError("not a LengthEstimate")
        return cls(prior_alpha=float(d["prior_alpha"]), prior_weight=float(d["prior_weight"]),
                   decay=float(d["decay"]), acc=acc, rej=rej)


# Starting per-token acceptance of match-based drafts by match length, before a bucket has data:
# measured here, prompt-lookup drafts pay only on matches of >= ~6 tokens (issue 2), so short
# matches start below break-even and long ones above it. Evidence replaces these within a few cycles.
MATCH_PRIOR_ALPHA = {"<2": 0.3, "<4": 0.45, "<6": 0.55, "<8": 0.65, "<12": 0.75, "<16": 0.8, "16+": 0.85}
MATCH_PRIOR_WEIGHT = 3.0


def prior_estimate(bucket: str) -> LengthEstimate:
    alpha = MATCH_PRIOR_ALPHA.get(bucket.partition(":")[2])
    if alpha is None:
        return LengthEstimate()
    return LengthEstimate(prior_alpha=alpha, prior_weight=MATCH_PRIOR_WEIGHT)


@dataclass(frozen=True)
class Choice:
    """The candidate to draft from and how long; ``speedup`` is the predicted one (0 for a probe)."""

    candidate: Candidate
    n_tokens: int
    speedup: float


def best_choice(
    estimates: Mapping[str, LengthEstimate],
    candidates: Sequence[Candidate],
    curve: CostCurve,
    *,
    draft_cost: Mapping[str, float] | None = None,
    min_speedup: float = 1.02,
    alpha: float | None = None,
    base: int = 1,
) -> Choice | None:
    """The candidate and draft length with the best predicted speedup, or None if none reaches ``min_speedup``.

    Ties go to the earlier candidate (sources are listed cheapest first). A bucket
    without an estimate starts from ``prior_estimate``; ``alpha`` replaces every
    estimate by i.i.d. acceptance at that rate (to ask whether a draft could pay at all). ``base``: what the
    verify batch carries without a draft (``cost.best_length_for_survival``).
    """
    costs = draft_cost or {}
    best: Choice | None = None
    for cand in candidates:
        if cand.available <= 0:
            continue
        if alpha is not None:
            survival = survival_curve(alpha, cand.available)
        else:
            est = estimates.get(cand.bucket)
            survival = (est if est is not None else prior_estimate(cand.bucket)).survival(cand.available)
        d, s = best_length_for_survival(survival, curve, cand.available, draft_cost_per_token=costs.get(cand.name, 0.0),
                                        base=base)
        if d > 0 and s >= min_speedup and (best is None or s > best.speedup):
            best = Choice(cand, d, s)
    return best


@dataclass
class PolicyParams:
    """Every parameter of the draft policy. Probes of written-off buckets follow one of two schedules: a
    single drafter's in tokens (``probe_interval``, ``probe_evidence``), a cascade's in picks
    (``source_probe_interval``: a source passed over waits that long for its first probe, then 2x, 4x, ...)."""

    d_max: int = 16
    d_min: int = 1
    adaptive: bool = True  # False: always the longest draft on offer (tests, the bench's ablation); a cascade still picks its source
    min_speedup: float = 1.02  # predicted speedup a draft must reach to be worth it
    optimistic_alpha: float = 0.9  # acceptance assumed when asking "could this draft ever pay?"
    probe_min_match: int = 8  # match-based drafts shorter than this are judged by their prior alone
    probe_interval_max: int = 512  # probes back off exponentially while they keep failing
    probe_interval: int = 32  # single drafter: tokens between probes of buckets the estimates have written off
    probe_evidence: float = 6.0  # single drafter: a bucket with this much evidence is not probed, only re-learned over reports
    generation_decay: float = 0.7  # single drafter: evidence kept from one report to the next (text drifts; probes resume)
    source_probe_interval: int = 16  # cascade: picks a passed-over source waits before its first probe
    realized_window: int = 8  # drafting cycles of measured throughput before trusting it over the model
    tolerance: float = 0.97  # measured drafting rate below tolerance x plain rate turns drafting off


@dataclass
class _Probe:
    gap: int
    next_at: int


class DraftPolicy:
    """Every draft decision of one engine, over all the reports it writes.

    * How long to draft from a single drafter (``ask``, ``keep``, ``plan``): the length with the best
      predicted throughput under its bucket's ``LengthEstimate``, the verify-cost curve and the drafting
      cost; 0 when none clears ``min_speedup``. Written-off buckets are re-tried by probes with backoff.
    * Which of a cascade's candidates to draft from, and how long (``choose``), with probes of its own.
      A cascade's estimates (``source_estimates``) carry over whole from report to report, and a fallback
      does not discount them; a single drafter's do not.
    * Fallback: drafting cycles measurably slower than plain ones (``record_cycle``) switch drafting off
      for a while, with exponential backoff. With the cost model, this keeps the engine from being much
      slower than the oracle alone.

    What was learned carries over to the next report (``new_generation``): a fieldlog session writes many
    similar reports with one engine.
    """

    def __init__(self, curve: CostCurve, params: PolicyParams | None = None, *,
                 draft_cost: Mapping[str, float] | None = None) -> None:
        self.curve = curve
        self.params = params or PolicyParams()
        self.estimates: dict[str, LengthEstimate] = {}  # single drafter, per bucket
        self.source_estimates: dict[str, LengthEstimate] = {}  # a cascade's sources, per bucket
        self.draft_cost: dict[str, float] = dict(draft_cost or {})  # seconds per drafted token per source, EMA
        self.source_probes: dict[str, _Probe] = {}
        self.picks = 0  # cascade steps so far (the source probes' clock)
        self._reset_generation()

    def _reset_generation(self) -> None:
        self.off_until_token = -1
        self.fallback_events = 0
        self.spec_s, self.spec_tokens, self.spec_cycles = 0.0, 0, 0
        self.plain_s, self.plain_tokens = 0.0, 0
        self.probe_gap: dict[str, int] = {}
        self.next_probe_at: dict[str, int] = {}

    def new_generation(self, *, d_max: int, d_min: int) -> None:
        """A new report within these draft bounds; a single drafter's estimates are carried over with
        less weight so stale verdicts get re-tested."""
        self.params = replace(self.params, d_max=d_max, d_min=d_min)
        for est in self.estimates.values():
            est.scale(self.params.generation_decay)
        self._reset_generation()

    # ------------------------------------------------------------------ what carries over between processes
    STATE_VERSION = 1

    def to_state(self) -> dict:
        """What was learned about the drafts (not this report's fallback state), as JSON-ready data."""
        return {"version": self.STATE_VERSION,
                "estimates": {k: e.to_dict() for k, e in self.estimates.items()},
                "source_estimates": {k: e.to_dict() for k, e in self.source_estimates.items()},
                "draft_cost": dict(self.draft_cost)}

    def restore(self, state: Mapping) -> bool:
        """Start from a saved ``to_state``; a state of another version or a damaged one is ignored (False)."""
        try:
            if state.get("version") != self.STATE_VERSION:
                return False
            est = {str(k): LengthEstimate.from_dict(v) for k, v in state["estimates"].items()}
            src = {str(k): LengthEstimate.from_dict(v) for k, v in state["source_estimates"].items()}
            cost = {str(k): float(v) for k, v in state["draft_cost"].items()}
            if not all(math.isfinite(v) and v >= 0 for v in cost.values()):
                return False
        except (AttributeError, KeyError, TypeError, ValueError):
            return False
        self.estimates, self.source_estimates, self.draft_cost = est, src, cost
        return True

    # ------------------------------------------------------------------ a single drafter
    def estimate(self, bucket: str) -> LengthEstimate:
        est = self.estimates.get(bucket)
        if est is None:
            est = self.estimates[bucket] = prior_estimate(bucket)
        return est

    def alpha(self, bucket: str) -> float:
        return self.estimate(bucket).alpha

    def _budget(self, bucket: str, d_cap: int, alpha: float | None = None, base: int = 1) -> tuple[int, float]:
        d_max = min(self.params.d_max, d_cap)
        if d_max <= 0:
            return 0, 1.0
        survival = self.estimate(bucket).survival(d_max) if alpha is None else survival_curve(alpha, d_max)
        return best_length_for_survival(
            survival,
            self.curve,
            d_max,
            d_min=self.params.d_min,
            draft_cost_per_token=self.draft_cost.get(bucket.split(":")[0], 0.0),
            base=base,
        )

    def draft_budget(self, bucket: str, d_cap: int, base: int = 1) -> int:
        """Draft length to ask for (or to keep of a proposal) for a source/bucket; 0 = do not draft."""
        d, s = self._budget(bucket, d_cap, base=base)
        return d if s >= self.params.min_speedup else 0

    def ask(self, source: str, cheap: bool, d_cap: int, position: int) -> int:
        """Tokens to ask a drafter for this cycle, at most ``d_cap``; 0 = do not draft.

        A cheap drafter (or a cascade) is asked for the longest draft while drafting
        is on: what to keep of it is decided once it is on the table.
        """
        if d_cap <= 0:
            return 0
        if not self.params.adaptive:
            return d_cap
        if cheap:
            return d_cap if position >= self.off_until_token else 0
        return self.plan(source, d_cap, position)

    def keep(self, bucket: str, match_len: int | None, n_tokens: int, position: int, *,
             base: int = 1) -> int:
        """Tokens to keep of a cheap drafter's proposal of ``n_tokens``: as many as its bucket's odds pay for
        on top of what the verify batch carries anyway (``base``)."""
        if not self.params.adaptive or n_tokens <= 0:
            return n_tokens
        long_match = match_len is None or match_len >= self.params.probe_min_match
        return min(n_tokens, self.plan(bucket, n_tokens, position, allow_probe=long_match, base=base))

    def plan(self, bucket: str, d_cap: int, position: int, *, allow_probe: bool = True,
             base: int = 1) -> int:
        """Tokens to draft for this bucket this cycle (0 = none), probes included.

        A bucket whose estimate says "does not pay" is re-tried only by a probe: at
        most one probe per ``probe_interval`` tokens overall, each bucket backing off
        exponentially while its probes fail, and only when a draft of the available
        length could pay at all with near-perfect acceptance (on this CPU a
        2-token verify costs ~2.4x a 1-token step, so short drafts never can).
        """
        if position < self.off_until_token or d_cap <= 0:
            return 0
        d = self.draft_budget(bucket, d_cap, base)
        if d > 0:
            return d
        if not allow_probe or position < max(self.next_probe_at.get(bucket, 0), self.next_probe_at.get("*", 0)):
            return 0
        if self.estimate(bucket).evidence >= self.params.probe_evidence:
            return 0  # enough evidence that it loses; it decays between reports (see new_generation)
        d_opt, s_opt = self._budget(bucket, d_cap, alpha=self.params.optimistic_alpha, base=base)
        if s_opt < self.params.min_speedup or d_opt == 0:
            return 0
        gap = self.probe_gap.get(bucket, self.params.probe_interval)
        self.probe_gap[bucket] = min(gap * 2, self.params.probe_interval_max)
        self.next_probe_at[bucket] = position + gap
        self.next_probe_at["*"] = position + self.params.probe_interval
        return d_opt

    # ------------------------------------------------------------------ a cascade's candidates
    def choose(self, candidates: Sequence[Candidate], *, base: int = 1) -> Choice | None:
        """The candidate to draft from this step and how long, a probe, or None to decode without a draft.

        Records what each proposal on the table cost to make; every bucket on offer
        but not chosen starts (or keeps) its probe clock.
        """
        self.picks += 1
        for c in candidates:
            if c.draft is not None:
                self.record_draft_time(c.name, c.seconds, max(len(c.draft.tokens), 1))
        offers = [c for c in candidates if c.available > 0]
        choice = best_choice(self.source_estimates, offers, self.curve, draft_cost=self.draft_cost,
                             min_speedup=self.params.min_speedup, base=base)
        interval = self.params.source_probe_interval
        for c in offers:
            if choice is None or c.bucket != choice.candidate.bucket:
                self.source_probes.setdefault(c.bucket, _Probe(interval, self.picks + interval))
        return choice if choice is not None else self._probe_source(offers, base)

    def _probe_source(self, offers: list[Candidate], base: int = 1) -> Choice | None:
        """A try of a bucket the estimates currently rule out, when its backoff has expired."""
        for c in offers:
            pr = self.source_probes.get(c.bucket)
            if pr is None or self.picks < pr.next_at:
                continue
            # a short match is judged by its prior alone: on a CPU where a 2-token verify costs
            # ~2.4x a 1-token step, probing it only burns oracle passes
            if c.draft is not None and (c.draft.match_len or 0) < self.params.probe_min_match:
                continue
            # only probe what could pay if it were accepted as often as a good source is, at the
            # length that would pay most (short probes cannot pay on a batch-cost curve like this one)
            opt = best_choice(self.source_estimates, [c], self.curve, draft_cost=self.draft_cost,
                              min_speedup=self.params.min_speedup, alpha=self.params.optimistic_alpha, base=base)
            if opt is None:
                continue
            pr.gap = min(pr.gap * 2, self.params.probe_interval_max)
            pr.next_at = self.picks + pr.gap
            return Choice(c, opt.n_tokens, 0.0)
        return None

    def record_source(self, cand: Candidate, n_accepted: int, n_drafted: int) -> None:
        """The verdict on a draft taken from a cascade's candidate."""
        est = self.source_estimates.setdefault(cand.bucket, prior_estimate(cand.bucket))
        est.update(n_accepted, n_drafted)
        if best_choice(self.source_estimates, [cand], self.curve, draft_cost=self.draft_cost,
                       min_speedup=self.params.min_speedup) is not None:
            self.source_probes.pop(cand.bucket, None)  # it pays again: reset its backoff

    # ------------------------------------------------------------------ feedback
    def record_draft_time(self, source: str, seconds: float, n_tokens: int) -> None:
        if n_tokens <= 0:
            return
        per = seconds / n_tokens
        old = self.draft_cost.get(source)
        self.draft_cost[source] = per if old is None else 0.8 * old + 0.2 * per

    def record_unverified(self, n_drafted: int, candidate: Candidate | None = None) -> None:
        """A draft emitted without verification (relaxed acceptance): a cascade's source counts it as accepted;
        it is no cycle for the fallback's throughput."""
        if candidate is not None and n_drafted > 0:
            self.record_source(candidate, n_drafted, n_drafted)

    def record_cycle(self, bucket: str | None, n_accepted: int, n_drafted: int, seconds: float, emitted: int,
                     position: int, *, candidate: Candidate | None = None) -> None:
        """Feed one verify cycle back (``candidate``: the cascade's, if the draft came from one); turn drafting
        off when it measurably loses."""
        if bucket is None or n_drafted == 0:
            self.plain_s += seconds
            self.plain_tokens += emitted
            return
        if candidate is not None:
            self.record_source(candidate, n_accepted, n_drafted)
        else:
            self.estimate(bucket).update(n_accepted, n_drafted)
            if self.draft_budget(bucket, self.params.d_max) > 0:
                self.probe_gap.pop(bucket, None)  # the source pays again: reset its backoff
        self.spec_s += seconds
        self.spec_tokens += emitted
        self.spec_cycles += 1
        if self.spec_cycles >= self.params.realized_window and self.spec_tokens:
            spec_rate = self.spec_tokens / self.spec_s
            plain_rate = self.plain_tokens / self.plain_s if self.plain_tokens >= 4 else 1.0 / self.curve.t(1)
            if spec_rate < self.params.tolerance * plain_rate:
                gap = self.probe_gap.get("*", self.params.probe_interval)
                self.probe_gap["*"] = min(gap * 2, self.params.probe_interval_max)
                self.off_until_token = position + gap
                self.fallback_events += 1
                # forget the losing window so the next probe is judged on fresh evidence
                self.spec_s, self.spec_tokens, self.spec_cycles = 0.0, 0, 0
                for est in self.estimates.values():
                    est.doubt(0.5)
            elif self.spec_cycles >= 4 * self.params.realized_window:
                self.spec_s *= 0.5
                self.spec_tokens //= 2
                self.spec_cycles //= 2
