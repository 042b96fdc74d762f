"""How many tokens to draft: a cost model over the oracle's measured verify curve.

On a CPU the oracle's verify cost grows with the batch (measured on
Qwen2.5-Coder-0.5B here: 1 token 19 ms, 8 tokens 80 ms, 16 tokens 117 ms), so a
draft of d tokens pays only when the expected emitted tokens per cycle,
E(d) = (1 - a^(d+1)) / (1 - a) for per-token acceptance a, beat
(t(d+1) + draft cost) / t(1). Everything here is pure arithmetic over numbers
the engine measured; ``DraftController`` keeps the running estimates and decides
when drafting does not pay and when to probe again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class CostCurve:
    """Seconds for one oracle decode of n tokens, measured at a few batch sizes."""

    sizes: list[int]
    seconds: list[float]

    def __post_init__(self) -> None:
        order = np.argsort(self.sizes)
        self.sizes = [int(self.sizes[i]) for i in order]
        self.seconds = [float(self.seconds[i]) for i in order]
        if not self.sizes or self.sizes[0] != 1:
            raise ValueError("a cost curve must include batch size 1")
        # llama.cpp's kernels make some sizes cheaper than smaller ones: verifying n tokens
        # can always be padded up to the cheapest size >= n, so use the suffix minimum.
        self._eff = list(np.minimum.accumulate(np.array(self.seconds)[::-1])[::-1])

    def t(self, n: int) -> float:
        if n <= 0:
            return 0.0
        xs, ys = self.sizes, self._eff
        if n >= xs[-1]:
            if len(xs) == 1:
                return ys[0] * n
            slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
            return ys[-1] + max(slope, 0.0) * (n - xs[-1])
        return float(np.interp(n, xs, ys))

    @classmethod
    def linear(cls, per_token: float, fixed: float = 0.0, max_n: int = 17) -> "CostCurve":
        sizes = list(range(1, max_n + 1))
        return cls(sizes, [fixed + per_token * n for n in sizes])

    def to_dict(self) -> dict:
        return {"sizes": self.sizes, "seconds": self.seconds}


def expected_emitted(alpha: float, d: int) -> float:
    """Expected tokens one cycle emits (accepted drafts + the oracle's own token) for i.i.d. acceptance."""
    if d <= 0:
        return 1.0
    a = min(max(alpha, 0.0), 1.0)
    if a >= 1.0:
        return d + 1.0
    return (1.0 - a ** (d + 1)) / (1.0 - a)


def predicted_speedup(alpha: float, d: int, curve: CostCurve, draft_cost_per_token: float = 0.0, draft_fixed: float = 0.0) -> float:
    """Tokens per second with drafts of length d relative to plain one-token decoding."""
    if d <= 0:
        return 1.0
    cost = curve.t(d + 1) + draft_fixed + draft_cost_per_token * d
    return expected_emitted(alpha, d) * curve.t(1) / cost


def survival_curve(alpha: float, d_max: int) -> np.ndarray:
    """P(accepted length >= k) for k = 1..d_max under i.i.d. per-token acceptance alpha."""
    a = min(max(float(alpha), 0.0), 1.0)
    return a ** np.arange(1, max(d_max, 0) + 1, dtype=np.float64)


def best_length_for_survival(
    survival: np.ndarray,
    curve: CostCurve,
    d_max: int,
    *,
    d_min: int = 1,
    draft_cost_per_token: float = 0.0,
    draft_fixed: float = 0.0,
) -> tuple[int, float]:
    """(d, predicted speedup) for a measured acceptance-length distribution.

    ``survival[k-1]`` is P(accepted length >= k). A cycle drafting d tokens emits
    1 + sum(survival[:d]) tokens on average and costs t(d + 1) plus the drafting.
    """
    best_d, best_s = 0, 1.0
    cum = np.cumsum(np.asarray(survival, dtype=np.float64))
    t1 = curve.t(1)
    for d in range(max(1, d_min), min(max(d_max, 0), len(cum)) + 1):
        s = (1.0 + cum[d - 1]) * t1 / (curve.t(d + 1) + draft_fixed + draft_cost_per_token * d)
        if s > best_s:
            best_d, best_s = d, s
    return best_d, best_s


def best_draft_length(
    alpha: float,
    curve: CostCurve,
    d_max: int,
    *,
    d_min: int = 1,
    draft_cost_per_token: float = 0.0,
    draft_fixed: float = 0.0,
) -> tuple[int, float]:
    """(d, predicted speedup) maximising throughput for i.i.d. acceptance ``alpha``; d = 0 when no draft
    length beats plain decoding."""
    return best_length_for_survival(survival_curve(alpha, d_max), curve, d_max, d_min=d_min,
                                    draft_cost_per_token=draft_cost_per_token, draft_fixed=draft_fixed)


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


@dataclass
class ControllerParams:
    d_max: int = 16
    d_min: int = 1
    probe_interval: int = 32  # tokens between probes of sources the estimates have written off
    probe_interval_max: int = 512  # probes back off exponentially while they keep failing
    min_speedup: float = 1.02  # predicted speedup a draft must reach to be worth it
    optimistic_alpha: float = 0.9  # acceptance assumed when asking "could this draft ever pay?"
    probe_min_match: int = 8  # match-based drafts shorter than this are judged by their prior alone
    probe_evidence: float = 6.0  # a bucket with this much evidence is not probed, only re-learned over reports
    generation_decay: float = 0.7  # evidence kept from one report to the next (text drifts; probes resume)
    realized_window: int = 8  # drafting cycles of measured throughput before trusting it over the model
    tolerance: float = 0.97  # measured drafting rate below tolerance x plain rate turns drafting off


@dataclass
class DraftController:
    """Per-generation state: running acceptance per bucket, measured costs, and the on/off decision.

    Two guards keep the engine from being much slower than the oracle alone: the
    cost model (a draft is asked for only when its predicted speedup clears
    ``min_speedup``), and the measured throughput of drafting cycles against plain
    ones (drafting is switched off when it loses, then probed again with
    exponential backoff).
    """

    curve: CostCurve
    params: ControllerParams = field(default_factory=ControllerParams)
    estimates: dict[str, LengthEstimate] = field(default_factory=dict)
    draft_cost: dict[str, float] = field(default_factory=dict)  # seconds per drafted token, EMA
    off_until_token: int = -1
    fallback_events: int = 0
    spec_s: float = 0.0
    spec_tokens: int = 0
    spec_cycles: int = 0
    plain_s: float = 0.0
    plain_tokens: int = 0
    probe_gap: dict[str, int] = field(default_factory=dict)
    next_probe_at: dict[str, int] = field(default_factory=dict)

    def new_generation(self) -> None:
        """Carry learned estimates into a new report, with less weight so stale verdicts get re-tested."""
        for est in self.estimates.values():
            est.scale(self.params.generation_decay)

    def estimate(self, bucket: str) -> LengthEstimate:
        est = self.estimates.get(bucket)
        if est is None:
            est = self.estimates[bucket] = prior_estimate(bucket)
        return est

    def alpha(self, bucket: str) -> float:
        return self.estimate(bucket).alpha

    def _budget(self, bucket: str, d_cap: int, alpha: float | None = None) -> tuple[int, float]:
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
        )

    def draft_budget(self, bucket: str, d_cap: int) -> int:
        """Draft length to ask for (or to keep of a proposal) for a source/bucket; 0 = do not draft."""
        d, s = self._budget(bucket, d_cap)
        return d if s >= self.params.min_speedup else 0

    def plan(self, bucket: str, d_cap: int, position: int, *, allow_probe: bool = True) -> tuple[int, bool]:
        """(tokens to draft, is_probe) for this cycle.

        A bucket whose estimate says "does not pay" is re-tried only by a probe: at
        most one probe per ``probe_interval`` tokens overall, each bucket backing off
        exponentially while its probes fail, and only when a draft of the available
        length could pay at all with near-perfect acceptance (on this CPU a
        2-token verify costs ~2.4x a 1-token step, so short drafts never can).
        """
        if position < self.off_until_token or d_cap <= 0:
            return 0, False
        d = self.draft_budget(bucket, d_cap)
        if d > 0:
            return d, False
        if not allow_probe or position < max(self.next_probe_at.get(bucket, 0), self.next_probe_at.get("*", 0)):
            return 0, False
        est = self.estimate(bucket)
        if est.evidence >= self.params.probe_evidence:
            return 0, False  # enough evidence that it loses; it decays between reports (see new_generation)
        d_opt, s_opt = self._budget(bucket, d_cap, alpha=self.params.optimistic_alpha)
        if s_opt < self.params.min_speedup or d_opt == 0:
            return 0, False
        gap = self.probe_gap.get(bucket, self.params.probe_interval)
        self.probe_gap[bucket] = min(gap * 2, self.params.probe_interval_max)
        self.next_probe_at[bucket] = position + gap
        self.next_probe_at["*"] = position + self.params.probe_interval
        return d_opt, True

    def record_draft_time(self, source: str, seconds: float, n_tokens: int) -> None:
        if n_tokens <= 0:
            return
        per = seconds / n_tokens
        old = self.draft_cost.get(source)
        self.draft_cost[source] = per if old is None else 0.8 * old + 0.2 * per

    def record_cycle(self, bucket: str | None, n_accepted: int, n_drafted: int, seconds: float, emitted: int, position: int) -> None:
        """Feed one verify cycle back; turn drafting off when it measurably loses."""
        if bucket is None or n_drafted == 0:
            self.plain_s += seconds
            self.plain_tokens += emitted
            return
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


def ceiling_speedup(curve: CostCurve, n_tokens: int, d_max: int = 16) -> float:
    """Free, perfect drafts: oracle-only time over verify time at the best batch size."""
    if n_tokens <= 0:
        return 1.0
    best = max((d + 1) / curve.t(d + 1) for d in range(0, d_max + 1))
    plain = 1.0 / curve.t(1)
    return best / plain if math.isfinite(best) else 1.0
