"""The one interface every draft source implements (model, bridge, lookup, history, onnx, ...).

The engine owns the oracle and the token sequence; a drafter only sees the
oracle-token context and proposes up to ``max_tokens`` continuation tokens in the
oracle's vocabulary. Drafting and acceptance are kept apart, as in llama.cpp's
common/speculative.cpp.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


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


class Drafter(Protocol):
    name: str

    def begin(self, prompt_tokens: list[int]) -> None:
        """A new generation starts from these oracle tokens (reset per-request state)."""

    def propose(self, context: list[int], max_tokens: int, *, sample: "SamplingSpec | None" = None) -> Draft:
        """Propose up to max_tokens tokens continuing ``context`` (oracle ids: prompt + generated)."""

    def accepted(self, context: list[int], n_accepted: int, n_drafted: int) -> None:
        """Feedback after verification; ``context`` now holds every token the oracle committed."""

    def close(self) -> None:
        """Free native resources."""


@dataclass(frozen=True)
class SamplingSpec:
    """Sampling parameters a model drafter uses to draw its own proposals (q)."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
