"""A costly draft source opened the first time the policy drafts from it.

A cascade offers its model drafter only as an on-demand candidate, and on most
reports the policy never picks it (its drafts do not pay where the cheap sources
have nothing). Loading it up front would still cost every process the model's
load, so the cascade holds it behind ``OnDemandDrafter``: the name is known at
once (so the policy can price it), the model is loaded at the first pick.
"""

from __future__ import annotations

from typing import Callable

from .base import Drafter


class OnDemandDrafter:
    cheap = False  # only model drafters are worth deferring: they cost a forward pass per token
    multi_candidate = False

    def __init__(self, name: str, open_source: Callable[[], Drafter]) -> None:
        self.name = name
        self._open = open_source
        self._source: Drafter | None = None
        self._prompt: list[int] | None = None

    @property
    def loaded(self) -> bool:
        return self._source is not None

    def _get(self) -> Drafter:
        if self._source is None:
            src = self._open()
            if src.name != self.name:  # the policy has been pricing it under this name
                src.close()
                raise ValueError(f"on-demand drafter opened as {src.name!r}, announced as {self.name!r}")
            if self._prompt is not None:
                src.begin(list(self._prompt))
            self._source = src
        return self._source

    def begin(self, prompt_tokens: list[int]) -> None:
        self._prompt = list(prompt_tokens)
        if self._source is not None:
            self._source.begin(list(prompt_tokens))

    def propose(self, context: list[int], max_tokens: int, **kw):
        return self._get().propose(context, max_tokens, **kw)

    def accepted(self, context: list[int], n_accepted: int, n_drafted: int) -> None:
        if self._source is not None:
            self._source.accepted(context, n_accepted, n_drafted)

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
