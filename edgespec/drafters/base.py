"""The interfaces the loop connects: the oracle that verifies and the drafters that propose.

The engine owns the oracle and the token sequence; a drafter only sees the
oracle-token context and proposes up to ``max_tokens`` continuation tokens in the
oracle's vocabulary. Drafting and acceptance are kept apart, as in llama.cpp's
common/speculative.cpp, and so are proposing and deciding: how much to draft and
from which source is the policy's decision (``policy.DraftPolicy``), made from
what a drafter declares about itself (``name``, ``cheap``, ``multi_candidate``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

import numpy as np

from .. import EdgespecError


@dataclass
class Draft:
    tokens: list[int] = field(default_factory=list)  # oracle-vocabulary ids
    # q distributions over the oracle vocabulary, one row per drafted token, for
    # speculative sampling. None means a deterministic draft (q = 1 on each token).
    probs: np.ndarray | None = None
    passes: int = 0  # drafter forward passes spent producing it (for stats)
    # Where the draft came from and how strong its evidence is, so the policy can keep
    # acceptance statistics per source and bucket (e.g. "lookup" with a 7-token match).
    source: str = ""
    match_len: int | None = None

    def __len__(self) -> int:
        return len(self.tokens)

    def truncated(self, n: int) -> "Draft":
        """The draft's first ``n`` tokens (and their q rows); the draft itself when it is not longer."""
        if n >= len(self.tokens):
            return self
        return Draft(
            tokens=self.tokens[:n],
            probs=None if self.probs is None else self.probs[:n],
            passes=self.passes,
            source=self.source,
            match_len=self.match_len,
        )


@runtime_checkable
class Drafter(Protocol):
    """One draft source (model, bridge, lookup, history, onnx)."""

    # drafts are labelled, costed and judged by source name (with the match-length bucket, policy.bucket_of)
    name: str
    # proposing costs ~nothing (lookup, history): the engine asks for the longest draft and the policy
    # keeps as much of it as pays; otherwise the policy decides the length before the drafter runs
    cheap: bool
    # propose_candidates(context, max_tokens, n) offers up to n alternative drafts, best first (history)
    multi_candidate: bool

    def begin(self, prompt_tokens: list[int]) -> None:
        """A new generation starts from these oracle tokens (reset per-request state)."""

    def propose(self, context: list[int], max_tokens: int, *, sample: "SamplingSpec | None" = None) -> Draft:
        """Propose up to max_tokens tokens continuing ``context`` (oracle ids: prompt + generated)."""

    def accepted(self, context: list[int], n_accepted: int, n_drafted: int) -> None:
        """Feedback after verification; ``context`` now holds every token the oracle committed."""

    def close(self) -> None:
        """Free native resources."""


@dataclass(frozen=True)
class Candidate:
    """One source's offer for this step, for the policy to pick from.

    ``available``: tokens it can draft (a cheap source's proposal length, or the
    requested maximum for a source that only runs if picked); ``draft``: the
    proposal already made, None for such an on-demand source; ``seconds``: what
    making the proposal took.
    """

    source: int  # index of the source in its cascade
    name: str
    bucket: str
    available: int
    draft: Draft | None = None
    seconds: float = 0.0


@runtime_checkable
class CandidateDrafter(Protocol):
    """Several sources behind one drafter (``cascade.CascadeDrafter``).

    Each step it gathers one ``Candidate`` per source, the policy picks one (or
    none) and a length, and ``take`` drafts from it; the verdict on that draft
    goes back to the source it came from.
    """

    name: str

    def begin(self, prompt_tokens: list[int]) -> None: ...

    def candidates(self, context: list[int], max_tokens: int, *, sample: "SamplingSpec | None" = None,
                   clock: Callable[[], float] = ...) -> list[Candidate]:
        """Every source's offer: cheap sources' proposals (empty ones included, ``available`` 0; timed on
        ``clock``, the engine's) and on-demand sources."""

    def take(self, candidate: Candidate, n_tokens: int, context: list[int], *, sample: "SamplingSpec | None" = None) -> Draft:
        """The picked candidate's draft of ``n_tokens``: its proposal cut to length, or its source run now."""

    def accepted(self, context: list[int], n_accepted: int, n_drafted: int) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class Oracle(Protocol):
    """The model whose greedy output is the answer, as the engine uses it: ``llama.LlamaModel``, or
    ``testing.replay.ReplayOracle`` answering from a recorded decoding."""

    n_ctx: int
    n_vocab: int
    tokens: list[int]  # what its KV cache holds
    decode_calls: int

    def check_ids(self, tokens) -> None:
        """Raise for token ids outside the vocabulary (before the model sees them)."""

    def is_eog(self, token: int) -> bool: ...

    def token_bytes(self, token: int, *, special: bool = True) -> bytes: ...

    def detokenize(self, tokens: list[int], *, special: bool = True) -> bytes: ...

    def sync(self, tokens: list[int]) -> np.ndarray:
        """Make the cache hold exactly ``tokens`` (reusing the cached prefix); logits after the last one."""

    def decode(self, tokens: list[int], logits_at: list[int] | None = None) -> np.ndarray:
        """Append ``tokens`` to the cache; logits rows after each position in ``logits_at``."""

    def trim(self, n_keep: int) -> None:
        """Drop everything after the first ``n_keep`` cached tokens."""

    def reset(self) -> None: ...


def check_drafter(drafter, *, cascade: bool = True) -> None:
    """A clear error, before generation starts, for an object that is not a drafter (nor, unless
    ``cascade`` is False, a ``CandidateDrafter``)."""
    if isinstance(drafter, Drafter) or (cascade and isinstance(drafter, CandidateDrafter)):
        return
    wanted = ("name", "cheap", "multi_candidate", "begin", "propose", "accepted", "close")
    missing = [m for m in wanted if not hasattr(drafter, m)] or ["single-source drafter interface"]
    raise EdgespecError(f"{drafter!r} is not a drafter (no {', '.join(missing)})")


@dataclass(frozen=True)
class SamplingSpec:
    """Sampling parameters a model drafter uses to draw its own proposals (q)."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
