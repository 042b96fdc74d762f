"""The verify-cost model: what a draft of d tokens costs and buys, over the oracle's measured curve.

On a CPU the oracle's verify cost grows with the batch, so a draft pays only when the
tokens it is expected to emit beat the extra cost of verifying it. Pure arithmetic over
numbers the engine measured (``calibrate.py`` measures the curve); ``policy.py`` decides with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
        # llama.cpp's kernels make some sizes cheaper than smaller ones: the engine pads a verify
        # batch up to the cheapest size >= n (``padded``), so a batch of n costs the suffix minimum.
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

    def padded(self, n: int) -> int:
        """The batch size to run ``n`` tokens as: the cheapest measured size at or above ``n`` when it is
        cheaper than ``n`` itself (what ``t`` charges), else ``n``."""
        xs, raw = self.sizes, self.seconds
        if n <= 0 or n >= xs[-1]:
            return n
        own = float(np.interp(n, xs, raw))
        m, cost = min(((x, y) for x, y in zip(xs, raw) if x >= n), key=lambda xy: (xy[1], xy[0]))
        return m if cost < own else n

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
    base: int = 1,
) -> tuple[int, float]:
    """(d, predicted speedup) for a measured acceptance-length distribution.

    ``survival[k-1]`` is P(accepted length >= k). A cycle drafting d tokens emits 1 + sum(survival[:d])
    tokens on average and costs t(d + 1) plus the drafting. ``base``: the tokens the verify batch carries
    anyway (the pending token; under a grammar also the forced run before the draft): the draft then costs
    only what it adds to that batch, t(base + d) - t(base), and is priced as that on top of a plain step.
    """
    best_d, best_s = 0, 1.0
    cum = np.cumsum(np.asarray(survival, dtype=np.float64))
    t1, b = curve.t(1), max(int(base), 1)
    for d in range(max(1, d_min), min(max(d_max, 0), len(cum)) + 1):
        added = curve.t(b + d) - curve.t(b)
        s = (1.0 + cum[d - 1]) * t1 / (t1 + added + draft_fixed + draft_cost_per_token * d)
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


def ceiling_speedup(curve: CostCurve, n_tokens: int, d_max: int = 16) -> float:
    """Free, perfect drafts: oracle-only time over verify time at the best batch size."""
    if n_tokens <= 0:
        return 1.0
    best = max((d + 1) / curve.t(d + 1) for d in range(0, d_max + 1))
    plain = 1.0 / curve.t(1)
    return best / plain if math.isfinite(best) else 1.0
