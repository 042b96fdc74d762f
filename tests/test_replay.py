"""The replay harness behind tools/simulate_drafting.py: the real Engine against a recorded decoding.

These also pin the policy's behaviour on scripted traces: a perfect draft source
must pay, a useless one must be turned off (never much slower than the oracle).
"""

import numpy as np
import pytest

from edgespec.drafters.base import Draft
from edgespec.engine import Engine
from edgespec.cost import CostCurve
from edgespec.drafters.cascade import CascadeDrafter
from edgespec.testing.replay import HindsightDrafter, ReplayOracle, VirtualClock, hindsight_speedup, replay

# the curve measured here for Qwen2.5-Coder-0.5B (tools/bench.py, 2 threads), seconds
CURVE = CostCurve([1, 2, 3, 4, 5, 6, 8, 10, 12, 14, 16, 17],
                  [0.0170, 0.0396, 0.0498, 0.0527, 0.0726, 0.0760, 0.0699, 0.0907, 0.0825, 0.1049, 0.0826, 0.1018])
VOCAB, EOG = 64, 63


class ScriptedDrafter:
    """Proposes the recorded continuation (right) or a shifted copy of it (always wrong at once)."""

    cheap = True
    multi_candidate = False

    def __init__(self, ref, prompt_len, right: bool, n_right: int = 10**9, name: str = "lookup"):
        self.ref, self.n0, self.right, self.name = ref, prompt_len, right, name
        self.n_right = n_right  # a right draft goes wrong after this many tokens

    def begin(self, prompt_tokens):
        pass

    def propose(self, context, max_tokens, *, sample=None):
        i = len(context) - self.n0
        toks = self.ref[i:i + max_tokens]
        if not self.right:
            toks = [(t + 1) % EOG for t in toks]
        toks = [t if j < self.n_right else (t + 1) % EOG for j, t in enumerate(toks)]
        return Draft(tokens=list(toks), source=self.name, match_len=16)

    def accepted(self, context, n_accepted, n_drafted):
        pass

    def close(self):
        pass


def _recording(n=200, seed=0):
    rng = np.random.default_rng(seed)
    return [int(t) for t in rng.integers(0, EOG, size=8)], [int(t) for t in rng.integers(0, EOG, size=n)]


def test_replay_reproduces_the_recording_and_charges_the_curve():
    prompt, ref = _recording()
    clock = VirtualClock()
    oracle = ReplayOracle(CURVE, clock, n_vocab=VOCAB, eog=EOG, overhead_s=0.0)
    res = replay(Engine(oracle, None, curve=CURVE, clock=clock), oracle, prompt, ref)
    assert res.tokens == ref
    assert res.seconds == pytest.approx((len(ref) - 1) * CURVE.t(1))
    assert res.speedup == pytest.approx(1.0)


def test_perfect_drafts_pay_and_useless_drafts_are_turned_off():
    prompt, ref = _recording()
    clock = VirtualClock()
    oracle = ReplayOracle(CURVE, clock, n_vocab=VOCAB, eog=EOG)
    good = replay(Engine(oracle, ScriptedDrafter(ref, len(prompt), True), curve=CURVE, clock=clock), oracle, prompt, ref)
    assert good.tokens == ref and good.speedup > 2.0 and good.accepted == good.drafted
    bad = replay(Engine(oracle, ScriptedDrafter(ref, len(prompt), False), curve=CURVE, clock=clock), oracle, prompt, ref)
    assert bad.tokens == ref and bad.accepted == 0
    assert bad.speedup >= 0.9  # a few probes, then plain decoding


def test_hindsight_bound_and_candidates():
    prompt, ref = _recording(120)
    n0 = len(prompt)
    right = lambda ctx, d, n: [ref[len(ctx) - n0:len(ctx) - n0 + d]]  # noqa: E731
    wrong_then_right = lambda ctx, d, n: [[(t + 1) % EOG for t in ref[len(ctx) - n0:len(ctx) - n0 + d]],  # noqa: E731
                                          ref[len(ctx) - n0:len(ctx) - n0 + d]][:n]
    perfect = hindsight_speedup(right, prompt, ref, CURVE)
    assert perfect == pytest.approx(17 * CURVE.t(1) / CURVE.t(17), rel=0.1)
    assert hindsight_speedup(wrong_then_right, prompt, ref, CURVE, n_candidates=1) == pytest.approx(1.0)
    two = hindsight_speedup(wrong_then_right, prompt, ref, CURVE, n_candidates=2)
    assert 1.0 < two < perfect  # the second branch pays, but verifying both costs more than one


def test_hindsight_drafter_never_pays_for_a_rejected_token_and_matches_the_bound():
    """The bound through the engine: a drafter right for 3 tokens then wrong is cut to its accepted prefix,
    beats the adaptive policy on the same drafts, and perfect drafts come near the analytic bound."""
    prompt, ref = _recording(160)
    clock = VirtualClock()
    oracle = ReplayOracle(CURVE, clock, n_vocab=VOCAB, eog=EOG, overhead_s=0.0)
    run = lambda d, **kw: replay(Engine(oracle, d, curve=CURVE, clock=clock, **kw), oracle, prompt, ref)  # noqa: E731
    partly = ScriptedDrafter(ref, len(prompt), True, n_right=3)
    policy = run(partly)
    bound = run(HindsightDrafter(oracle, partly), adaptive=False)
    assert bound.tokens == ref and bound.drafted > 0 and bound.accepted == bound.drafted
    assert bound.seconds <= policy.seconds
    perfect = run(HindsightDrafter(oracle), adaptive=False)
    right = lambda ctx, d, n: [ref[len(ctx) - len(prompt):len(ctx) - len(prompt) + d]]  # noqa: E731
    # the analytic bound also picks each pass's length on the curve's bumps; the engine drafts d_max
    assert 0.8 * hindsight_speedup(right, prompt, ref, CURVE) <= perfect.speedup <= hindsight_speedup(right, prompt, ref, CURVE)
    assert perfect.speedup > bound.speedup > 1.0


def test_hindsight_drafter_takes_the_cascade_source_that_is_accepted_furthest():
    prompt, ref = _recording(120)
    clock = VirtualClock()
    oracle = ReplayOracle(CURVE, clock, n_vocab=VOCAB, eog=EOG, overhead_s=0.0)
    wrong, right = ScriptedDrafter(ref, len(prompt), False, name="a"), ScriptedDrafter(ref, len(prompt), True, name="b")
    cascade = CascadeDrafter([wrong, right])
    res = replay(Engine(oracle, HindsightDrafter(oracle, cascade), curve=CURVE, clock=clock, adaptive=False),
                 oracle, prompt, ref)
    assert res.accepted == res.drafted > 0
    assert cascade.chosen.get("b", 0) > 0 and "a" not in cascade.chosen
