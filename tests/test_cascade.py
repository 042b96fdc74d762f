"""The cascade's per-step source decisions: cheapest source first, the model only where it pays."""

from __future__ import annotations

import random

import pytest

from edgespec.drafters.base import Candidate, Draft
from edgespec.drafters.cascade import CascadeDrafter
from edgespec.drafters.history import HistoryDrafter
from edgespec.drafters.lookup import PromptLookupDrafter
from edgespec.cost import CostCurve
from edgespec.policy import DraftPolicy, LengthEstimate, PolicyParams, best_choice
from edgespec.testing.words import WordTokenizer


def estimate_from_trace(trace: list[tuple[int, int]]) -> LengthEstimate:
    est = LengthEstimate()
    for acc, drafted in trace:
        est.update(acc, drafted)
    return est


# verify cost of Qwen2.5-Coder-0.5B measured on this 2-core machine (seconds for a batch of n tokens)
QWEN = CostCurve([1, 4, 8, 16], [0.019, 0.048, 0.080, 0.117])
COST = {"model": 0.004, "history": 0.0, "lookup": 0.0}  # seconds per drafted token


def picked(stats, candidates, draft_cost) -> int | None:
    """Index (into ``candidates``) of the candidate the policy drafts from, or None to decode without a draft."""
    choice = best_choice(stats, candidates, QWEN, draft_cost=draft_cost)
    return None if choice is None else next(i for i, c in enumerate(candidates) if c is choice.candidate)


def test_choose_source_prefers_cheap_source_with_good_record():
    stats = {
        "history:16+": estimate_from_trace([(16, 16)] * 6 + [(10, 16)] * 2),
        "model": estimate_from_trace([(3, 4), (4, 4), (2, 4)] * 3),
    }
    cands = [Candidate(0, "history", "history:16+", 16), Candidate(1, "model", "model", 16)]
    assert picked(stats, cands, COST) == 0


def test_choose_source_falls_back_to_model_when_short_matches_keep_failing():
    stats = {
        "lookup:<4": estimate_from_trace([(0, 8)] * 10),
        "model": estimate_from_trace([(3, 4), (4, 4), (2, 4)] * 3),
    }
    cands = [Candidate(0, "lookup", "lookup:<4", 8), Candidate(1, "model", "model", 16)]
    assert picked(stats, cands, COST) == 1
    # without the model drafter: decode plainly rather than verify drafts that lose
    assert picked(stats, cands[:1], COST) is None


def test_choose_source_refuses_a_model_that_costs_more_than_it_saves():
    stats = {"model": estimate_from_trace([(8, 8)] * 8 + [(5, 8)])}
    cands = [Candidate(0, "model", "model", 16)]
    assert picked(stats, cands, COST) == 0
    # drafts that die early (first token right 3 times in 5, rarely more) do not pay for a 4 ms/token drafter
    assert picked({"model": estimate_from_trace([(1, 4), (0, 4), (2, 4), (0, 4), (1, 4)])}, cands, COST) is None
    expensive = {"model": 0.019}  # as slow per token as the oracle
    assert picked(stats, cands, expensive) is None


def test_choose_source_ties_go_to_the_cheaper_earlier_source():
    est = estimate_from_trace([(6, 8)] * 4)
    stats = {"history:8-": est, "lookup:8-": est}
    cands = [Candidate(0, "history", "history:8-", 8), Candidate(1, "lookup", "lookup:8-", 8)]
    assert picked(stats, cands, COST) == 0
    assert picked(stats, list(reversed(cands)), COST) == 0  # position, not name
    assert picked(stats, [Candidate(0, "history", "history:8-", 0)], COST) is None  # nothing on offer


def test_plan_draft_length_follows_acceptance():
    good = {"history:16+": estimate_from_trace([(16, 16)] * 10)}
    poor = {"history:16+": estimate_from_trace([(1, 16), (2, 16), (0, 16)] * 3)}
    c = [Candidate(0, "history", "history:16+", 16)]
    g, p = best_choice(good, c, QWEN, draft_cost=COST), best_choice(poor, c, QWEN, draft_cost=COST)
    assert g is not None and g.n_tokens >= 8
    assert p is None or p.n_tokens < g.n_tokens


class ScriptedCheap:
    """A cheap source whose drafts are scripted: ``offers[step]`` = (tokens, match_len) or None."""

    cheap = True
    multi_candidate = False

    def __init__(self, name: str, offer):
        self.name = name
        self.offer = offer
        self.feedback: list[tuple[int, int]] = []

    def begin(self, prompt_tokens):
        pass

    def propose(self, context, max_tokens, *, sample=None):
        got = self.offer(context)
        if got is None:
            return Draft(source=self.name, match_len=0)
        toks, m = got
        return Draft(tokens=list(toks[:max_tokens]), source=self.name, match_len=m)

    def accepted(self, context, n_accepted, n_drafted):
        self.feedback.append((n_accepted, n_drafted))

    def close(self):
        pass


class ScriptedModel:
    """A 'model drafter' that predicts the target with a fixed per-token accuracy and counts its calls."""

    name = "model"
    cheap = False
    multi_candidate = False

    def __init__(self, target: list[int], accuracy: float, seed: int = 0):
        self.target = target
        self.accuracy = accuracy
        self.rng = random.Random(seed)
        self.calls = 0

    def begin(self, prompt_tokens):
        pass

    def propose(self, context, max_tokens, *, sample=None):
        self.calls += 1
        pos = len(context)
        toks = []
        for i in range(max_tokens):
            if pos + i >= len(self.target):
                break
            ok = self.rng.random() < self.accuracy
            toks.append(self.target[pos + i] if ok else -1)
        return Draft(tokens=toks, passes=len(toks), source="model")

    def accepted(self, context, n_accepted, n_drafted):
        pass

    def close(self):
        pass


class TickClock:
    """Drafting times without wall-clock noise: every reading is one microsecond after the last (a loaded machine
    would otherwise price a scripted source's microseconds as milliseconds now and then, and change the picks)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1e-6
        return self.now


def cascade_step(policy: DraftPolicy, cascade: CascadeDrafter, ctx: list[int], max_tokens: int, clock=None):
    """Engine stand-in for one propose step: (draft, choice) from the candidate the policy picks."""
    clock = clock or TickClock()
    choice = policy.choose(cascade.candidates(ctx, max_tokens, clock=clock))
    if choice is None:
        return Draft(), None
    t0 = clock()
    draft = cascade.take(choice.candidate, choice.n_tokens, ctx)
    if choice.candidate.draft is None:
        policy.record_draft_time(choice.candidate.name, clock() - t0, max(len(draft.tokens), 1))
    return draft, choice


def verdict(policy: DraftPolicy, cascade: CascadeDrafter, choice, ctx: list[int], n_acc: int, n_drafted: int) -> None:
    """Engine stand-in: the verdict on a draft goes to the picked source's estimate and, through the cascade, the source."""
    if choice is not None and n_drafted > 0:
        policy.record_source(choice.candidate, n_acc, n_drafted)
    cascade.accepted(ctx, n_acc, n_drafted)


def run_cascade(cascade: CascadeDrafter, policy: DraftPolicy, target: list[int], start: int, steps: int) -> list[str]:
    """Engine stand-in: verify each draft against the target text; returns the source used per step."""
    ctx = target[:start]
    used = []
    cascade.begin(ctx)
    for _ in range(steps):
        if len(ctx) >= len(target) - 1:
            break
        draft, choice = cascade_step(policy, cascade, list(ctx), 16)
        truth = target[len(ctx) : len(ctx) + len(draft.tokens)]
        n_acc = next((i for i, (a, b) in enumerate(zip(draft.tokens, truth)) if a != b), len(draft.tokens))
        used.append(draft.source if draft.tokens else "none")
        ctx = ctx + truth[:n_acc] + [target[len(ctx) + n_acc]]
        if draft.tokens:
            verdict(policy, cascade, choice, list(ctx), n_acc, len(draft.tokens))
    return used


def test_cascade_uses_cheap_source_where_it_has_a_long_match_and_model_elsewhere():
    target = list(range(10_000))
    # history knows the text in even "paragraphs" of 50 tokens (long matches), nothing in the odd ones
    def offer(ctx):
        pos = len(ctx)
        if (pos // 50) % 2 == 0:
            return target[pos : pos + 16], 20
        return None

    hist = ScriptedCheap("history", offer)
    model = ScriptedModel(target, accuracy=0.8)
    cascade = CascadeDrafter([hist, model])
    policy = DraftPolicy(QWEN, draft_cost={"model": 0.002})
    used = run_cascade(cascade, policy, target, 10, 400)
    assert used.count("history") > 0 and used.count("model") > 0
    assert model.calls == used.count("model")  # the model ran only when chosen
    assert policy.source_estimates["history:16+"].alpha > 0.9


def test_cascade_turns_away_from_a_failing_cheap_bucket_to_the_model():
    target = list(range(5_000))
    wrong = ScriptedCheap("lookup", lambda ctx: ([-5] * 8, 7))  # matches that look fair but always fail
    model = ScriptedModel(target, accuracy=0.85)
    cascade = CascadeDrafter([wrong, model])
    policy = DraftPolicy(QWEN, PolicyParams(source_probe_interval=8), draft_cost={"model": 0.002})
    used = run_cascade(cascade, policy, target, 5, 600)
    lookup_uses = [i for i, u in enumerate(used) if u == "lookup"]
    assert len(lookup_uses) < 25  # a handful of early tries, then only backed-off probes
    late = [i for i in lookup_uses if i > len(used) // 2]
    assert len(late) <= 3
    assert used.count("model") > len(used) * 0.8
    assert policy.source_estimates["lookup:<8"].alpha < policy.source_estimates["model"].alpha


def test_cascade_with_only_cheap_sources_decodes_plainly_when_nothing_pays():
    target = list(range(2_000))
    # a short match is never even probed: its prior says it cannot pay
    params = PolicyParams(source_probe_interval=8)
    short = CascadeDrafter([ScriptedCheap("lookup", lambda ctx: ([-5] * 8, 2))])
    assert run_cascade(short, DraftPolicy(QWEN, params), target, 5, 400).count("lookup") == 0
    wrong = ScriptedCheap("lookup", lambda ctx: ([-5] * 8, 9))  # long-looking matches that always fail
    cascade = CascadeDrafter([wrong])
    used = run_cascade(cascade, DraftPolicy(QWEN, params), target, 5, 400)
    assert used.count("none") > 0.9 * len(used)
    # the losing bucket is re-tried with probes whose spacing doubles
    tries = [i for i, u in enumerate(used) if u == "lookup"]
    assert 3 <= len(tries) <= 10
    gaps = [b - a for a, b in zip(tries[1:], tries[2:])]
    assert all(g2 > g1 for g1, g2 in zip(gaps, gaps[1:])), tries


def test_cascade_forwards_feedback_and_closes_every_source():
    closed = []

    class Closing(ScriptedCheap):
        def close(self):
            closed.append(self.name)

    a = Closing("history", lambda ctx: ([len(ctx)], 20))
    b = Closing("lookup", lambda ctx: None)
    cascade = CascadeDrafter([a, b])
    policy = DraftPolicy(QWEN)
    cascade.begin([0, 1, 2])
    draft, choice = cascade_step(policy, cascade, [0, 1, 2], 4)
    assert draft.source == "history"
    verdict(policy, cascade, choice, [0, 1, 2, 3, 4], 1, 1)
    assert a.feedback == [(1, 1)] and b.feedback == [(0, 0)]
    cascade.close()
    assert closed == ["history", "lookup"]
    with pytest.raises(Exception):
        CascadeDrafter([])


def test_cascade_over_real_history_and_lookup_sources(index):
    tok = WordTokenizer()
    index.add_report("risk : low . action : re-scout in 7 days and record the count")
    hist = HistoryDrafter(index, tok, "words")
    cascade = CascadeDrafter([hist, PromptLookupDrafter()])
    policy = DraftPolicy(QWEN)
    ctx = tok("note for block B4 . report : risk : low . action :")
    cascade.begin(ctx)
    truth = tok("re-scout in 7 days and record the count")
    draft, _ = cascade_step(policy, cascade, ctx, 8)
    assert draft.source == "history" and draft.match_len == 6
    first_len = len(draft.tokens)
    assert 1 <= first_len and draft.tokens == truth[:first_len]
    for _ in range(6):  # every draft from this bucket is accepted: the policy learns to draft longer
        _, choice = cascade_step(policy, cascade, ctx, 8)
        verdict(policy, cascade, choice, ctx, first_len, first_len)
    longer, _ = cascade_step(policy, cascade, ctx, 8)
    assert len(longer.tokens) > first_len and longer.tokens == truth[: len(longer.tokens)]
    choice = policy.choose(cascade.candidates(ctx, 8))
    cands = cascade.take_candidates(choice.candidate, choice.n_tokens, ctx, n=3) if choice else []
    assert cands and cands[0].tokens == longer.tokens
