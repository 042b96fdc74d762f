"""The reference every greedy-equivalence test compares against: the oracle alone, one token at a time."""

from __future__ import annotations

import numpy as np


def oracle_greedy(model, prompt: list[int], max_tokens: int, *, keep_logits: bool = False):
    """Tokens of one-token-at-a-time greedy decoding (stopping before an end-of-generation token);
    with ``keep_logits`` also the logits row each token was chosen from (for near-tie checks)."""
    model.reset()
    logits = model.sync(list(prompt))
    out, rows = [], []
    for _ in range(max_tokens):
        t = int(np.argmax(logits))
        if model.is_eog(t):
            break
        out.append(t)
        if keep_logits:
            rows.append(logits)
        logits = model.step(t)
    return (out, rows) if keep_logits else out
