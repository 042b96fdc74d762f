"""The suffix automaton behind the history drafter: counts, matches and continuations against brute force."""

from __future__ import annotations

import random
import sys

import pytest

from edgespec.drafters.suffix_automaton import SuffixAutomaton


def count_occurrences(docs: list[list[int]], pattern: list[int]) -> int:
    n = len(pattern)
    return sum(1 for d in docs for i in range(len(d) - n + 1) if d[i : i + n] == pattern)


def test_suffix_automaton_counts_and_matches_agree_with_brute_force():
    rng = random.Random(7)
    docs = [[rng.randrange(3) for _ in range(rng.randint(5, 25))] for _ in range(8)]
    sam = SuffixAutomaton()
    for d in docs:
        sam.add_doc(d)
    for _ in range(200):
        query = [rng.randrange(3) for _ in range(rng.randint(1, 12))]
        state, length = 0, 0
        for t in query:
            state, length = sam.step(state, length, t)
        # length = longest suffix of the query that occurs in some document (never across documents)
        expect = max((n for n in range(len(query) + 1) if n == 0 or count_occurrences(docs, query[-n:]) > 0))
        assert length == expect
        if length:
            assert sam.cnt[state] == count_occurrences(docs, query[-length:])
            toks, confs = sam.greedy(state, 3)
            if toks:  # the first greedy token is a most frequent continuation of the match
                counts = {t: count_occurrences(docs, query[-length:] + [t]) for t in range(3)}
                assert counts[toks[0]] == max(counts.values())
                assert confs[0] == pytest.approx(counts[toks[0]] / sam.cnt[state])


def _traced_lines(fn) -> int:
    """Python lines executed by ``fn()``: a deterministic measure of work (wall time is not, on a shared box)."""
    n = 0

    def tracer(frame, event, arg):
        nonlocal n
        if event == "line":
            n += 1
        return tracer

    sys.settrace(tracer)
    try:
        fn()
    finally:
        sys.settrace(None)
    return n


def test_suffix_automaton_builds_looping_text_in_linear_time():
    # small models sometimes loop; per-position suffix-link walks would make this quadratic
    work = {}
    for periods in (1500, 3000):
        work[periods] = _traced_lines(lambda: SuffixAutomaton().add_doc([1, 2, 3, 4] * periods))
    assert work[3000] < 2.2 * work[1500], work  # twice the text, about twice the work (quadratic: 4x)
    sam = SuffixAutomaton()
    sam.add_doc([1, 2, 3, 4] * 6000)
    state, length = 0, 0
    for t in [1, 2, 3, 4, 1, 2]:
        state, length = sam.step(state, length, t)
    assert sam.cnt[state] == 6000 - 1  # "1 2 3 4 1 2" starts at each of the first 5999 periods
    assert sam.greedy(state, 5)[0] == [3, 4, 1, 2, 3]


def test_suffix_automaton_matches_do_not_cross_documents():
    sam = SuffixAutomaton()
    sam.add_doc([1, 2, 3])
    sam.add_doc([4, 5])
    state, length = 0, 0
    for t in [3, 4]:
        state, length = sam.step(state, length, t)
    assert length == 1  # "3 4" only exists across the boundary
    state, length = 0, 0
    for t in [2, 3]:
        state, length = sam.step(state, length, t)
    assert sam.greedy(state, 4) == ([], [])  # the report ended there: nothing to draft


def test_greedy_stops_where_the_path_probability_falls_below_the_floor():
    # after [1, 2]: 3 follows in 3 of 4 docs; after [1, 2, 3]: 4 in 2 of 3, 5 in 1 of 3; then 6 always
    docs = [[1, 2, 3, 4, 6], [1, 2, 3, 4, 6], [1, 2, 3, 5, 6], [1, 2, 7, 8]]
    sam = SuffixAutomaton()
    for d in docs:
        sam.add_doc(d)
    state, length = 0, 0
    for t in [1, 2]:
        state, length = sam.step(state, length, t)
    toks, confs = sam.greedy(state, 8)
    assert toks == [3, 4, 6] and confs == pytest.approx([3 / 4, 2 / 3, 1.0])
    # path probabilities 0.75, 0.5, 0.5: a floor of 0.6 keeps one token, 0.5 all three, 0.76 none
    assert sam.greedy(state, 8, min_path_prob=0.6)[0] == [3]
    assert sam.greedy(state, 8, min_path_prob=0.5)[0] == [3, 4, 6]
    assert sam.greedy(state, 8, min_path_prob=0.76)[0] == []
    # the per-token floor alone would keep 6 after 4 (its own probability is 1)
    assert sam.greedy(state, 8, min_confidence=0.6)[0] == [3, 4, 6]
