"""N-gram prompt-lookup drafter: copy the continuation of an earlier occurrence of the context's suffix.

Field-note reports repeat the prompt (block names, pest names, numbers) and
themselves, so the longest suffix of the context that already occurred earlier
in the context is a free, deterministic draft (Saxena 2023, llama.cpp's
``lookup``). It only pays when the match is long: measured on this machine,
drafting on matches shorter than ~6 tokens loses 0.66-0.94x, so every draft
carries ``match_len`` and the policy (or the cascade) decides whether to use it.

The index is incremental: a dict from n-gram tuple to the position right after
its most recent occurrence, updated only with the tokens appended since the last
call, so a step costs O(new tokens x n-gram sizes), not a rescan of the context.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .base import Draft, SamplingSpec


@dataclass
class MatchDraft(Draft):
    """A deterministic draft copied from a matched suffix (``probs`` stays None).

    ``match_len`` (on ``Draft``) is how many context tokens the source matched
    before the draft, the best predictor of whether the draft will be accepted;
    ``source`` is "lookup" for a match inside the context, "history" for one in
    past reports. ``support`` is how
    many occurrences back the continuation (1 for prompt lookup), ``confidence``
    the empirical probability of each drafted token given the match and the
    tokens before it (1.0 when only one occurrence is known).
    """

    support: int = 0
    confidence: list[float] = field(default_factory=list)


def copy_continuation(tokens: list[int], start: int, n: int) -> list[int]:
    """Up to ``n`` tokens from ``tokens[start:]``, continuing past the end as an overlapping copy.

    When the occurrence runs into the suffix itself (a repeating pattern such as
    ``a b a b a b``), the tokens being drafted are the ones that would follow, so
    the copy continues from its own output, as LZ77 does.
    """
    size = len(tokens)
    if start >= size or n <= 0:
        return []
    if start + n <= size:
        return tokens[start : start + n]
    out = tokens[start:size]
    period = size - start
    while len(out) < n:
        out.append(out[len(out) - period])
    return out


class ContextIndex:
    """Incremental n-gram index over one growing token sequence.

    ``ends[ngram]`` is the position right after the most recent occurrence of
    ``ngram`` that has at least one token after it, for every n in
    ``[min_n, max_n]``. Because an occurrence of an n-gram implies one of its
    (n-1)-suffix at the same end, "occurs" is monotone in n and the longest match
    is found by bisection over n.
    """

    def __init__(self, min_n: int = 1, max_n: int = 16):
        if not (isinstance(min_n, int) and isinstance(max_n, int)) or min_n < 1 or max_n < min_n:
            raise ValueError(f"need 1 <= min_n <= max_n, got min_n={min_n!r} max_n={max_n!r}")
        self.min_n = min_n
        self.max_n = max_n
        self.tokens: list[int] = []
        self.ends: dict[tuple[int, ...], int] = {}

    def reset(self) -> None:
        self.tokens = []
        self.ends = {}

    def sync(self, context: list[int]) -> int:
        """Make the index describe ``context``; return how many already-indexed tokens were kept.

        A context that extends the indexed one only indexes the new tokens; any
        other context (a new request, a rewind) rebuilds the index and returns 0.
        """
        known = self.tokens
        n = len(known)
        if len(context) < n or (n and (context[n - 1] != known[n - 1] or context[:n] != known)):
            self.reset()
            known = self.tokens
            n = 0
        if len(context) > n:
            known.extend(context[n:])
            self._index_ends(max(n, self.min_n), len(known))
        return n

    def _index_ends(self, first_end: int, size: int) -> None:
        # An n-gram is indexed once the token after it exists: ends run up to size - 1.
        toks = self.tokens
        ends = self.ends
        lo, hi = self.min_n, self.max_n
        for e in range(first_end, size):
            top = min(hi, e)
            for m in range(lo, top + 1):
                ends[tuple(toks[e - m : e])] = e

    def longest_match(self, limit: int | None = None) -> tuple[int, int]:
        """(match length, position after the matched occurrence), or (0, -1) when nothing matches.

        The length is at most ``max_n`` (and ``limit``); the occurrence is the most
        recent one of that length.
        """
        toks = self.tokens
        size = len(toks)
        hi = min(self.max_n, size - 1)
        if limit is not None:
            hi = min(hi, limit)
        lo = self.min_n
        if hi < lo:
            return 0, -1
        ends = self.ends
        best_n, best_e = 0, -1
        e = ends.get(tuple(toks[size - lo :]))
        if e is None:
            return 0, -1
        best_n, best_e = lo, e
        lo += 1
        while lo <= hi:  # bisection: largest n whose suffix n-gram occurred earlier
            mid = (lo + hi) // 2
            e = ends.get(tuple(toks[size - mid :]))
            if e is None:
                hi = mid - 1
            else:
                best_n, best_e = mid, e
                lo = mid + 1
        return best_n, best_e

    def draft(self, max_tokens: int) -> MatchDraft:
        """Up to ``max_tokens`` tokens copied after the longest match (none when nothing matches)."""
        n, end = self.longest_match()
        if n == 0 or max_tokens <= 0:
            return MatchDraft(match_len=n, source="lookup")
        toks = copy_continuation(self.tokens, end, max_tokens)
        return MatchDraft(tokens=toks, match_len=n, source="lookup", support=1, confidence=[1.0] * len(toks))


class PromptLookupDrafter:
    """Draft by copying what followed the most recent earlier occurrence of the context's longest suffix.

    ``min_match``: shortest suffix (tokens) worth drafting from; ``max_match``:
    longest suffix searched (longer matches are reported as ``max_match``).
    After each ``propose`` the match length is on the draft (``draft.match_len``)
    and on the drafter (``last_match_len``).
    """

    name = "lookup"
    cheap = True  # proposing costs microseconds: the engine asks for full-length drafts and the policy trims them
    multi_candidate = False

    def __init__(self, min_match: int = 2, max_match: int = 16):
        if not isinstance(min_match, int) or not isinstance(max_match, int) or isinstance(min_match, bool):
            raise ValueError("min_match and max_match must be integers")
        if min_match < 1 or max_match < min_match:
            raise ValueError(f"need 1 <= min_match <= max_match, got {min_match} and {max_match}")
        self.min_match = min_match
        self.max_match = max_match
        self._index = ContextIndex(min_match, max_match)
        self.last_match_len = 0

    def begin(self, prompt_tokens: list[int]) -> None:
        self._index.reset()
        self._index.sync(list(prompt_tokens))
        self.last_match_len = 0

    def propose(self, context: list[int], max_tokens: int, *, sample: SamplingSpec | None = None) -> MatchDraft:
        self._index.sync(context)
        draft = self._index.draft(max_tokens)
        self.last_match_len = draft.match_len
        return draft

    def accepted(self, context: list[int], n_accepted: int, n_drafted: int) -> None:
        # Nothing to learn: the index catches up with the committed tokens on the next propose.
        pass

    def close(self) -> None:
        self._index.reset()
