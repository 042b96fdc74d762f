"""Cascade: several draft sources behind one drafter, cheapest first.

History and prompt-lookup drafts cost microseconds but are only worth verifying
when their match is long enough (measured here: lookup drafts on matches under
~6 tokens lose 0.66-0.94x). A model drafter drafts everywhere but costs a
forward pass per token. So each step the cascade gathers one candidate per
source: every cheap source's proposal (timed, with its match length), and for
the model drafter an on-demand candidate that runs only if picked, for only as
many tokens as the pick says. Which candidate, how long, and when a losing
source is probed again is the draft policy's decision (``policy.DraftPolicy.choose``);
the cascade drafts from the pick and routes the verdict back to that source.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

from .. import EdgespecError
from ..policy import bucket_of
from .base import Candidate, Draft, Drafter, SamplingSpec, check_drafter


class CascadeDrafter:
    """One candidate per source each step; drafts from the one the policy picks.

    ``sources``: drafters ordered cheapest first (ties between equally good
    candidates go to the earlier one); a source that is not ``cheap`` (a model
    drafter) only runs when picked.
    """

    name = "cascade"

    def __init__(self, sources: Sequence[Drafter]):
        sources = list(sources)
        if not sources:
            raise EdgespecError("a cascade needs at least one draft source")
        for s in sources:
            check_drafter(s, cascade=False)
        self.sources = sources
        self._last: Candidate | None = None  # what the latest draft came from
        self.chosen: dict[str, int] = {}  # drafts per source name (for stats and tests)

    def begin(self, prompt_tokens: list[int]) -> None:
        for src in self.sources:
            src.begin(list(prompt_tokens))
        self._last = None

    def candidates(self, context: list[int], max_tokens: int, *, sample: SamplingSpec | None = None,
                   clock: Callable[[], float] = time.perf_counter) -> list[Candidate]:
        self._last = None
        if max_tokens <= 0:
            return []
        cands = []
        for i, src in enumerate(self.sources):
            if src.cheap:
                t0 = clock()
                draft = src.propose(context, max_tokens, sample=sample)
                seconds = clock() - t0
                name = draft.source or src.name
                cands.append(Candidate(i, name, bucket_of(name, draft.match_len), len(draft.tokens), draft, seconds))
            else:
                cands.append(Candidate(i, src.name, bucket_of(src.name, None), max_tokens))
        return cands

    def take(self, candidate: Candidate, n_tokens: int, context: list[int], *, sample: SamplingSpec | None = None) -> Draft:
        if candidate.draft is None:  # an on-demand source: run it now, for only as many tokens as were picked
            draft = self.sources[candidate.source].propose(context, n_tokens, sample=sample)
            if not draft.source:
                draft.source = candidate.name
        else:
            draft = candidate.draft.truncated(n_tokens)
        self._last = candidate
        self.chosen[candidate.name] = self.chosen.get(candidate.name, 0) + 1
        return draft

    def take_candidates(self, candidate: Candidate, n_tokens: int, context: list[int], n: int = 4) -> list[Draft]:
        """Several drafts when the picked source can branch (history), else the single ``take`` draft."""
        first = self.take(candidate, n_tokens, context)
        if not first.tokens:
            return []
        src = self.sources[candidate.source]
        if not src.multi_candidate or n <= 1:
            return [first]
        out = [first]
        for d in src.propose_candidates(context, len(first.tokens), n):
            if d.tokens != first.tokens and len(out) < n:
                out.append(d)
        return out

    def accepted(self, context: list[int], n_accepted: int, n_drafted: int) -> None:
        last = self._last
        for i, src in enumerate(self.sources):
            if last is not None and i == last.source:
                src.accepted(context, n_accepted, n_drafted)
            else:
                src.accepted(context, 0, 0)
        self._last = None

    def close(self) -> None:
        errors = []
        for src in self.sources:
            try:
                src.close()
            except Exception as e:  # noqa: BLE001 - close every source, report the first failure
                errors.append(e)
        if errors:
            raise errors[0]
