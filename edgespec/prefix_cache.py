"""Prefix reuse shared by every KV-cache backend (llama.cpp and onnxruntime).

A drafter is re-synced to the oracle's committed tokens after every rejection;
only the part after the longest common prefix needs evaluating again.
"""

from __future__ import annotations

import numpy as np

from . import PromptError


class PrefixCache:
    """Mixin: the backend keeps ``tokens`` equal to its KV cache and provides ``trim`` and ``_decode_last``."""

    tokens: list[int]

    def common_prefix(self, tokens: list[int]) -> int:
        n = 0
        for a, b in zip(self.tokens, tokens):
            if a != b:
                break
            n += 1
        return n

    def sync(self, tokens: list[int]) -> np.ndarray:
        """Make the cache hold exactly ``tokens`` reusing the cached prefix; logits after the last one."""
        if not tokens:
            raise PromptError("empty token sequence")
        keep = min(self.common_prefix(tokens), len(tokens) - 1)
        self.trim(keep)
        return self._decode_last(list(tokens[keep:]))

    def _decode_last(self, tokens: list[int]) -> np.ndarray:  # pragma: no cover - provided by the backend
        raise NotImplementedError
