"""Pure acceptance rules: no model. Statistical tests use fixed seeds and a chi-square statistic."""

import numpy as np
import pytest
from scipy import stats

from edgespec import SamplingParamsError
from edgespec.acceptance import (
    SamplingParams,
    greedy_accept,
    logits_to_probs,
    residual,
    sample,
    speculative_accept,
    top2_gap,
    validate_sampling,
)


def test_greedy_accept_prefix_and_correction():
    V = 6
    logits = np.full((4, V), -1.0)
    best = [2, 5, 1, 3]
    for i, b in enumerate(best):
        logits[i, b] = 1.0
    assert greedy_accept([2, 5, 1], logits) == (3, 3)  # all accepted + bonus
    assert greedy_accept([2, 4, 1], logits) == (1, 5)  # diverges at 1, oracle's token 5
    assert greedy_accept([0, 5, 1], logits) == (0, 2)
    assert greedy_accept([], logits[:1]) == (0, 2)


def test_validate_sampling_rejects_bad_values():
    for bad in [dict(temperature=-1), dict(temperature=float("nan")), dict(top_k=-3), dict(top_p=0),
                dict(top_p=1.5), dict(seed=-1), dict(top_k=1.5)]:
        with pytest.raises(SamplingParamsError):
            validate_sampling(**bad)
    assert validate_sampling(0.7, 40, 0.9, 3) == SamplingParams(0.7, 40, 0.9, 3)


def test_top_k_and_top_p_masks():
    logits = np.log(np.array([0.5, 0.2, 0.15, 0.1, 0.05]))
    p = logits_to_probs(logits, SamplingParams(1.0, top_k=2))
    assert np.count_nonzero(p) == 2 and np.isclose(p.sum(), 1)
    p = logits_to_probs(logits, SamplingParams(1.0, top_p=0.8))
    # 0.5 + 0.2 = 0.7 < 0.8, so the nucleus needs the third token too
    assert np.count_nonzero(p) == 3
    np.testing.assert_allclose(p[:3], np.array([0.5, 0.2, 0.15]) / 0.85)
    g = logits_to_probs(logits, SamplingParams(0.0))
    assert g.argmax() == 0 and g.sum() == 1


def test_residual_is_normalised_positive_part():
    p = np.array([0.5, 0.3, 0.2])
    q = np.array([0.2, 0.6, 0.2])
    np.testing.assert_allclose(residual(p, q), [1.0, 0.0, 0.0])
    np.testing.assert_allclose(residual(p, p), p)  # degenerate: falls back to p


@pytest.mark.parametrize("deterministic", [False, True])
def test_speculative_sampling_reproduces_target_distribution(deterministic):
    """First emitted token of a draft/verify cycle must be distributed as p, whatever q is."""
    gen = np.random.default_rng(1234)
    V = 8
    p = gen.dirichlet(np.ones(V) * 0.7, size=3)  # oracle rows for 2 drafted tokens + bonus
    q = gen.dirichlet(np.ones(V) * 0.7, size=2)  # a drafter that disagrees a lot
    rng = np.random.default_rng(7)  # the sampling stream, separate from the problem's
    n = 20000
    counts = np.zeros(V)
    for _ in range(n):
        if deterministic:
            d0 = 3  # prompt-lookup style: always the same proposal, q = 1 on it
            n_acc, nxt = speculative_accept([d0, 1], None, p, rng)
        else:
            d0 = sample(q[0], rng)
            d1 = sample(q[1], rng)
            n_acc, nxt = speculative_accept([d0, d1], q, p, rng)
        first = d0 if n_acc >= 1 else nxt
        counts[first] += 1
    expected = p[0] * n
    chi2, pval = stats.chisquare(counts, expected)
    assert pval > 0.001, (chi2, counts, expected)


def test_chi_square_detects_a_wrong_rule():
    """The statistic above has power: a naive 'accept if sampled tokens match' rule is biased."""
    rng = np.random.default_rng(99)
    V = 6
    p = np.array([0.4, 0.3, 0.1, 0.1, 0.05, 0.05])
    q = np.array([0.05, 0.05, 0.1, 0.1, 0.3, 0.4])
    n = 20000
    counts = np.zeros(V)
    for _ in range(n):
        d = sample(q, rng)
        # wrong: accept with probability q/p reversed
        counts[d if rng.random() < min(1, q[d] / p[d]) else sample(p, rng)] += 1
    _, pval = stats.chisquare(counts, p * n)
    assert pval < 1e-6


def test_top2_gap():
    assert top2_gap(np.array([0.1, 3.0, 2.5])) == pytest.approx(0.5)
