"""A tokenizer for drafter tests that need no model."""

from __future__ import annotations


class WordTokenizer:
    """Whitespace tokenizer with its own vocabulary: stands in for the oracle's tokenizer."""

    def __init__(self, offset: int = 0):
        self.vocab: dict[str, int] = {}
        self.offset = offset
        self.calls = 0

    def __call__(self, text: str) -> list[int]:
        self.calls += 1
        return [self.vocab.setdefault(w, len(self.vocab)) + self.offset for w in text.split()]

    def words(self, ids: list[int]) -> list[str]:
        inv = {v + self.offset: k for k, v in self.vocab.items()}
        return [inv[i] for i in ids]
