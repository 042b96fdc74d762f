"""The live status line under a streaming report: speed, acceptance, power mode, models; once the report is
done, the manager's line instead (seconds, share of pest facts the oracle checked).

Live numbers come from the TokenRecords as they arrive (the engine's Stats only
arrive with Done). The live acceptance is an estimate — accepted drafted tokens
over accepted + corrected — because tokens the oracle threw away after a
correction never reach the stream; Done replaces it with the exact figure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from rich.text import Text
from textual.widgets import Static


def describe_pair(model_pair: Any) -> str:
    """'drafter → oracle' from whatever the generator reports (dict, pair, string, None).

    ``edgespec.api`` records ``{"oracle": path, "drafter": kind, "draft_model": path|None}``;
    the drafter side shows the draft model's name when there is one, else the drafter kind.
    """
    if model_pair is None:
        return ""
    if isinstance(model_pair, str):
        return model_pair
    if isinstance(model_pair, dict):
        kind = model_pair.get("drafter") or model_pair.get("draft")
        dm = _short_name(model_pair.get("draft_model"))
        o = _short_name(model_pair.get("oracle") or model_pair.get("target"))
        if dm and kind and kind not in ("model", "bridge"):
            d = f"{kind}:{dm}"
        else:
            d = dm or _short_name(kind)
        if d and o:
            return f"{d} → {o}"
        return o or d or ""
    if isinstance(model_pair, (list, tuple)) and len(model_pair) == 2:
        return f"{_short_name(model_pair[0])} → {_short_name(model_pair[1])}"
    return str(model_pair)


def _short_name(x: Any) -> str:
    if x is None:
        return ""
    if isinstance(x, dict):
        x = x.get("name") or x.get("id") or x.get("path") or ""
    s = str(x)
    if "/" in s:
        s = s.rsplit("/", 1)[-1]
    if s.endswith(".gguf"):
        s = s[:-5]
    return s


@dataclass
class LiveStats:
    started: float = field(default_factory=time.monotonic)
    tokens: int = 0
    drafted: int = 0
    corrected: int = 0
    unverified: int = 0
    first_token_at: float | None = None

    def add(self, records: Iterable[Any], now: float | None = None) -> None:
        for r in records:
            src = r.get("source") if isinstance(r, dict) else getattr(r, "source", "oracle")
            verified = r.get("verified", True) if isinstance(r, dict) else getattr(r, "verified", True)
            self.tokens += 1
            if src == "drafted" and verified:
                self.drafted += 1
            elif src == "corrected":
                self.corrected += 1
            elif src == "unverified" or (src == "drafted" and not verified):
                self.unverified += 1
        if self.tokens and self.first_token_at is None:
            self.first_token_at = time.monotonic() if now is None else now

    def tokens_per_s(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        elapsed = now - self.started
        return self.tokens / elapsed if elapsed > 0 else 0.0

    def acceptance_estimate(self) -> float | None:
        seen = self.drafted + self.corrected
        return self.drafted / seen if seen else None


def status_line(
    state: str,
    live: LiveStats | None = None,
    *,
    now: float | None = None,
    power_mode: str | None = None,
    model_pair: Any = None,
    final: dict | None = None,
    headline: str | None = None,
) -> str:
    """One status line. ``final`` is ``Stats.to_dict()`` from Done (exact numbers win); ``headline``, the finished
    report's manager line (``vineyard.status.status_line``), replaces the engine's figures."""
    parts = [state]
    if headline:
        return " · ".join([state, headline])
    if final:
        parts.append(f"{final.get('tokens', 0)} tok")
        parts.append(f"{float(final.get('tokens_per_s') or 0):.1f} tok/s")
        if final.get("drafted_tokens"):
            parts.append(f"accept {100 * float(final.get('acceptance_rate') or 0):.0f}%")
        power_mode = final.get("power_mode") or power_mode
    elif live is not None:
        parts.append(f"{live.tokens} tok")
        parts.append(f"{live.tokens_per_s(now):.1f} tok/s")
        est = live.acceptance_estimate()
        if est is not None:
            parts.append(f"accept ~{100 * est:.0f}%")
        if live.unverified:
            parts.append(f"{live.unverified} unverified")
    if power_mode:
        parts.append(f"power {power_mode}")
    pair = describe_pair(model_pair)
    if pair:
        parts.append(pair)
    return " · ".join(parts)


class GenerationStatus(Static):
    """Status line that refreshes itself a few times a second while a generation runs."""

    DEFAULT_CSS = "GenerationStatus { height: auto; }"

    def __init__(self, clock: Callable[[], float] = time.monotonic, **kwargs: Any) -> None:
        super().__init__("", **kwargs)
        self.clock = clock
        self.state = "idle"
        self.live: LiveStats | None = None
        self.power_mode: str | None = None
        self.model_pair: Any = None
        self.final: dict | None = None
        self.headline: str | None = None

    def start(self, *, power_mode: str | None, model_pair: Any) -> None:
        self.state = "● generating"
        self.live = LiveStats(started=self.clock())
        self.power_mode, self.model_pair, self.final, self.headline = power_mode, model_pair, None, None
        self.refresh_line()

    def add(self, records: Iterable[Any]) -> None:
        if self.live is not None:
            self.live.add(records, now=self.clock())
        self.refresh_line()

    def finish(self, state: str, final: dict | None = None, headline: str | None = None) -> None:
        self.state = state
        self.final = final
        self.headline = headline
        self.refresh_line()

    def set_state(self, state: str) -> None:
        self.state = state
        self.refresh_line()

    def refresh_line(self) -> None:
        # Text, not a str: model names must never be parsed as markup
        self.update(Text(status_line(self.state, self.live, now=self.clock(), power_mode=self.power_mode,
                                     model_pair=self.model_pair, final=self.final, headline=self.headline)))
