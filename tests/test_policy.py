"""Cost model and draft policy: pure arithmetic over measured numbers."""

import pytest

from edgespec.cost import CostCurve, best_draft_length, ceiling_speedup, expected_emitted, predicted_speedup
from edgespec.policy import DraftPolicy, PolicyParams, bucket_of

# measured on Qwen2.5-Coder-0.5B on this 2-core machine (issue 2)
QWEN = CostCurve([1, 4, 8, 16], [0.019, 0.048, 0.080, 0.117])


def test_expected_emitted_limits():
    assert expected_emitted(0.0, 5) == pytest.approx(1.0)
    assert expected_emitted(1.0, 5) == pytest.approx(6.0)
    assert expected_emitted(0.5, 2) == pytest.approx(1.75)


def test_curve_uses_cheapest_size_at_or_above():
    c = CostCurve([1, 2, 3, 4], [0.01, 0.05, 0.03, 0.04])
    assert c.t(2) == pytest.approx(0.03)  # padding 2 -> 3 tokens is cheaper than a 2-token batch
    assert c.t(8) > c.t(4)


def test_draft_pays_only_with_high_acceptance():
    d, s = best_draft_length(0.5, QWEN, 16)
    assert d == 0 and s == 1.0
    d, s = best_draft_length(0.95, QWEN, 16)
    assert d >= 4 and s > 1.2
    # the issue's rule: a draft of d pays only when (accepted + 1) * t(1) > t(d + 1)
    assert predicted_speedup(1.0, 3, QWEN) == pytest.approx(4 * 0.019 / QWEN.t(4))


def test_ceiling_matches_issue_estimate():
    assert 2.4 < ceiling_speedup(QWEN, 200) < 2.8


def test_buckets_split_lookup_by_match_length():
    assert bucket_of("lookup", 3) != bucket_of("lookup", 9)
    assert bucket_of("bridge", None) == "bridge"


def test_controller_turns_off_a_losing_source_and_probes_with_backoff():
    ctl = DraftPolicy(QWEN, PolicyParams(probe_interval=10))
    pos = 0
    probes = []
    # scripted trace: every draft of the 'bridge' source is rejected at once
    for step in range(400):
        d = ctl.plan("bridge", 16, pos)
        if d:
            probes.append(pos)
            ctl.record_cycle("bridge", 0, d, QWEN.t(d + 1), 1, pos)
        else:
            ctl.record_cycle(None, 0, 0, QWEN.t(1), 1, pos)
        pos += 1
    gaps = [b - a for a, b in zip(probes, probes[1:])]
    assert ctl.alpha("bridge") < 0.3
    assert len(probes) < 15, probes  # stops drafting
    assert gaps == sorted(gaps) and gaps[-1] > gaps[0], gaps  # exponential backoff


def test_controller_keeps_drafting_when_it_pays():
    ctl = DraftPolicy(QWEN)
    pos = 0
    drafted = 0
    for step in range(100):
        d = ctl.plan("lookup:16+", 16, pos)
        if d:
            drafted += 1
            ctl.record_cycle("lookup:16+", d, d, QWEN.t(d + 1), d + 1, pos)
            pos += d + 1
        else:
            ctl.record_cycle(None, 0, 0, QWEN.t(1), 1, pos)
            pos += 1
    assert drafted > 40 and ctl.fallback_events == 0


def test_realized_throughput_fallback():
    """Even when the model predicts a win, measured losses switch drafting off."""
    ctl = DraftPolicy(QWEN, PolicyParams(realized_window=4))
    for i in range(10):
        ctl.record_cycle(None, 0, 0, 0.019, 1, i)
    for i in range(8):  # accepted drafts that were nevertheless slow (e.g. an expensive drafter)
        ctl.record_cycle("model", 4, 4, 0.5, 5, 10 + i)
    assert ctl.fallback_events >= 1 and ctl.off_until_token > 10


def test_length_estimate_sees_bimodal_accepted_lengths():
    """Half the drafts die at their first token, the other half are accepted whole (as measured on
    scouting reports): the per-position estimate predicts what such drafts really yield, the
    i.i.d. rate built from the same counts does not."""
    from edgespec.cost import best_length_for_survival, survival_curve
    from edgespec.policy import LengthEstimate

    est = LengthEstimate(prior_weight=0.0, decay=1.0)
    for _ in range(20):
        est.update(0, 12)
        est.update(12, 12)
    surv = est.survival(12)
    assert surv[0] == pytest.approx(0.5)
    assert surv[-1] == pytest.approx(0.5)  # nothing rejected after the first position
    d, s = best_length_for_survival(surv, QWEN, 12)
    truth = (0.5 * 1 + 0.5 * (d + 1)) * QWEN.t(1) / QWEN.t(d + 1)  # half the cycles emit 1 token, half d + 1
    assert d >= 8 and s == pytest.approx(truth) and s > 1.1
    iid_alpha = 240 / (240 + 20)  # the old estimate: accepted / (accepted + one rejection per failed draft)
    _, s_iid = best_length_for_survival(survival_curve(iid_alpha, 12), QWEN, 12)
    assert abs(s_iid - truth) > 0.2
    # and the pure i.i.d. path agrees with the closed form
    assert best_length_for_survival(survival_curve(0.95, 16), QWEN, 16) == pytest.approx(best_draft_length(0.95, QWEN, 16))


def test_length_estimate_counts_drafts_as_evidence_and_decays():
    from edgespec.policy import LengthEstimate

    est = LengthEstimate(prior_alpha=0.5, prior_weight=2.0, decay=1.0)
    assert est.evidence == pytest.approx(2.0)
    est.update(3, 8)  # one draft: accepted at 1..3, rejected at 4
    assert est.evidence == pytest.approx(3.0)
    assert est.alpha == pytest.approx(2.0 / 3.0)
    est.scale(0.5)
    assert est.evidence == pytest.approx(1.5)


def test_policy_state_round_trips_what_was_learned():
    from edgespec.drafters.base import Candidate

    learned = DraftPolicy(QWEN)
    for pos in range(60):  # lookup on long matches always right, the model source always wrong
        learned.record_cycle("lookup:16+", 12, 12, QWEN.t(13), 13, pos)
        learned.record_source(Candidate(1, "model", "model", 16), 0, 8)
    learned.record_draft_time("model", 0.08, 8)
    fresh, warm = DraftPolicy(QWEN), DraftPolicy(QWEN)
    assert warm.restore(learned.to_state())
    assert warm.to_state() == learned.to_state()
    # a new process with the saved state decides as the one that learned it, unlike a cold one
    assert warm.plan("lookup:16+", 16, 0) == learned.plan("lookup:16+", 16, 0) == 16
    cands = [Candidate(1, "model", "model", 16)]
    assert fresh.choose(list(cands)) is not None  # the prior alone would try the model source
    assert warm.choose(list(cands)) is None and learned.choose(list(cands)) is None


@pytest.mark.parametrize("state", [
    None, {}, {"version": 99}, {"version": 1, "estimates": {"x": {"acc": [1]}}, "source_estimates": {}, "draft_cost": {}},
    {"version": 1, "estimates": {}, "source_estimates": {}, "draft_cost": {"model": float("nan")}},
    {"version": 1, "estimates": {"x": {"prior_alpha": 0.5, "prior_weight": 3, "decay": 0.9, "acc": [1, -5], "rej": [1, 0]}},
     "source_estimates": {}, "draft_cost": {}},
])
def test_damaged_policy_state_is_ignored(state):
    pol = DraftPolicy(QWEN)
    before = pol.to_state()
    assert pol.restore(state if state is not None else {}) is False
    assert pol.to_state() == before


def test_a_draft_riding_on_a_forced_batch_pays_for_what_it_adds():
    """Under a grammar the forced run is verified anyway: a short draft that cannot pay as a batch of its own
    (t(2) ~ 2 t(1) here) pays on top of a 40-token forced batch, where each extra token costs ~t(1)/4."""
    from edgespec.cost import best_length_for_survival, survival_curve

    curve = CostCurve([1, 2, 4, 8, 16, 40, 48, 64], [0.040, 0.080, 0.090, 0.140, 0.220, 0.450, 0.530, 0.690])
    surv = survival_curve(0.5, 4)
    assert best_length_for_survival(surv, curve, 4) == (0, 1.0)
    d, s = best_length_for_survival(surv, curve, 4, base=40)
    assert d > 0 and s > 1.0
    # priced as its added cost on top of a plain step: t(1) / (t(1) + t(40 + d) - t(40))
    assert s == pytest.approx((1 + surv[:d].sum()) * 0.040 / (0.040 + curve.t(40 + d) - curve.t(40)))
    # the policy passes it through: the same bucket is kept on a forced batch and dropped alone
    pol = DraftPolicy(curve)
    assert pol.keep("lookup:<4", 3, 4, 0) == 0
    assert pol.keep("lookup:<4", 3, 4, 0, base=40) > 0


def test_a_batch_is_padded_to_a_cheaper_size_only_when_it_is_cheaper():
    c = CostCurve([1, 2, 3, 4, 5, 6, 8], [0.042, 0.082, 0.124, 0.091, 0.118, 0.108, 0.142])
    assert [c.padded(n) for n in (1, 2, 3, 4, 5, 6, 7, 8, 9)] == [1, 2, 4, 4, 6, 6, 7, 8, 9]
    assert c.t(3) == pytest.approx(0.091) and c.t(5) == pytest.approx(0.108)  # priced as run
    assert CostCurve.linear(0.01).padded(3) == 3
