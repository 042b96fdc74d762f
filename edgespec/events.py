"""What the engine streams out: text chunks with per-token provenance, then stats.

Provenance is the contract between the runtime and everything downstream (TUI
colours, span audit, stored reports), so it lives in one small module.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

# drafted: proposed by the drafter and accepted by the oracle.
# corrected: the oracle's own token at the first divergence from a draft.
# bonus: the oracle's extra token after a fully accepted draft.
# oracle: plain one-token oracle decoding (no draft this step).
# unverified: drafted text accepted without an oracle check (power-saving, outside critical spans only).
Source = Literal["drafted", "corrected", "bonus", "oracle", "unverified", "data"]  # data: fixed by a grammar


@dataclass(slots=True)
class TokenRecord:
    token: int  # oracle token id
    text: str  # the characters this token added to the output (may be "" mid UTF-8 sequence)
    source: Source
    verified: bool  # True when the oracle's logits were checked for this exact token
    start: int = 0  # character offset in the generated text
    end: int = 0


@dataclass(slots=True)
class Chunk:
    """One verify cycle's worth of new text."""

    text: str
    tokens: list[TokenRecord]


@dataclass
class Stats:
    tokens: int = 0
    drafted_tokens: int = 0  # tokens proposed by the drafter
    accepted_tokens: int = 0  # drafted tokens the oracle accepted
    forced_tokens: int = 0  # tokens a grammar fixed (provenance "data"), taken without sampling
    oracle_passes: int = 0
    drafter_passes: int = 0
    cycles: int = 0
    accepted_lengths: list[int] = field(default_factory=list)
    wall_s: float = 0.0
    prompt_tokens: int = 0
    prefill_s: float = 0.0
    stop_reason: str = ""
    drafter: str = "none"
    fallback_events: int = 0  # times the policy turned drafting off because it did not pay
    critical_verified_rate: float | None = None
    other_verified_rate: float | None = None
    power_mode: str | None = None
    energy_j: float | None = None
    cpu_s: float | None = None

    @property
    def acceptance_rate(self) -> float:
        return self.accepted_tokens / self.drafted_tokens if self.drafted_tokens else 0.0

    @property
    def mean_accepted_length(self) -> float:
        return sum(self.accepted_lengths) / len(self.accepted_lengths) if self.accepted_lengths else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("accepted_lengths")
        d["acceptance_rate"] = round(self.acceptance_rate, 4)
        d["mean_accepted_length"] = round(self.mean_accepted_length, 3)
        d["tokens_per_s"] = round(self.tokens_per_s, 2)
        d["wall_s"] = round(self.wall_s, 4)
        return d


@dataclass
class Done:
    """Last event of a stream: the whole text, oracle token ids, provenance and stats."""

    text: str
    tokens: list[int]
    records: list[TokenRecord]
    stats: Stats
