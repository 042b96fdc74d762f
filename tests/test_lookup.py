"""Prompt lookup: the incremental n-gram index and the drafter that copies what followed the context's suffix."""

from __future__ import annotations

import random

import pytest

from edgespec.drafters.lookup import ContextIndex, PromptLookupDrafter, copy_continuation


def brute_lookup(ctx: list[int], min_n: int, max_n: int) -> tuple[int, int]:
    """Reference: longest suffix (<= max_n) with an earlier occurrence; position after its most recent one."""
    size = len(ctx)
    for n in range(min(max_n, size - 1), min_n - 1, -1):
        suffix = ctx[size - n :]
        for e in range(size - 1, n - 1, -1):
            if ctx[e - n : e] == suffix:
                return n, e
    return 0, -1


def test_lookup_copies_continuation_of_longest_suffix():
    d = PromptLookupDrafter(min_match=2, max_match=8)
    draft = d.propose([1, 2, 3, 4, 5, 1, 2, 3], 2)
    assert draft.tokens == [4, 5]
    assert draft.match_len == 3 and d.last_match_len == 3
    assert draft.probs is None and draft.source == "lookup"


def test_lookup_prefers_longest_then_most_recent():
    d = PromptLookupDrafter(min_match=1, max_match=8)
    # "2 3" was followed by 6 most recently, but the longer "1 2 3" was followed by 4
    assert d.propose([5, 1, 2, 3, 4, 9, 2, 3, 6, 1, 2, 3], 1).tokens == [4]
    d2 = PromptLookupDrafter(min_match=1, max_match=8)
    # equal length: the most recent occurrence wins
    assert d2.propose([1, 2, 9, 1, 2, 7, 8, 1, 2], 2).tokens == [7, 8]


def test_lookup_nothing_below_min_match():
    d = PromptLookupDrafter(min_match=3)
    draft = d.propose([1, 2, 3, 9, 2, 3], 4)  # only "2 3" repeats
    assert draft.tokens == [] and draft.match_len == 0
    assert d.propose([1, 2, 3, 4, 5, 6], 4).tokens == []


def test_lookup_repeating_pattern_continues_past_the_end():
    d = PromptLookupDrafter(min_match=2, max_match=4)
    draft = d.propose([7, 8, 7, 8, 7, 8], 5)
    assert draft.tokens == [7, 8, 7, 8, 7]
    assert copy_continuation([1, 2, 3], 1, 5) == [2, 3, 2, 3, 2]


def test_lookup_incremental_matches_brute_force_and_rebuilds_on_rewind():
    rng = random.Random(3)
    d = PromptLookupDrafter(min_match=2, max_match=6)
    ctx = [rng.randrange(5) for _ in range(10)]
    d.begin(ctx)
    for step in range(300):
        ctx = ctx + [rng.randrange(5) for _ in range(rng.randint(1, 3))]
        if step % 50 == 49:  # a context that is not an extension (new request / rewind)
            ctx = ctx[: len(ctx) // 2]
        draft = d.propose(ctx, 4)
        n, e = brute_lookup(ctx, 2, 6)
        assert draft.match_len == n
        assert draft.tokens == (copy_continuation(ctx, e, 4) if n else [])


def test_lookup_rejects_bad_arguments():
    with pytest.raises(ValueError):
        PromptLookupDrafter(min_match=0)
    with pytest.raises(ValueError):
        PromptLookupDrafter(min_match=5, max_match=3)
    with pytest.raises(ValueError):
        ContextIndex(2, 1)


def test_lookup_index_is_incremental_not_a_rescan(monkeypatch):
    """Each propose on a grown context indexes only the new token's n-grams (counted, not timed:
    a rescan of 4000 tokens x 15 n-gram sizes per step is what made it slow)."""
    d = PromptLookupDrafter(min_match=2, max_match=16)
    rng = random.Random(0)
    ctx = [rng.randrange(1000) for _ in range(4000)]
    d.begin(ctx)
    indexed: list[int] = []
    real = ContextIndex._index_ends

    def counting(self, first_end, size):
        indexed.append(size - first_end)
        return real(self, first_end, size)

    monkeypatch.setattr(ContextIndex, "_index_ends", counting)
    for _ in range(1000):
        ctx.append(rng.randrange(1000))
        d.propose(ctx, 8)
    assert indexed == [1] * 1000
    ctx[10] += 1  # a rewritten context is not an extension: it is rebuilt from scratch
    d.propose(ctx, 8)
    assert indexed[-1] == len(ctx) - 2
