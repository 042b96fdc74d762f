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


def oracle_greedy_constrained(model, constraint, prompt: list[int], max_tokens: int) -> list[int]:
    """The oracle alone under a grammar, one token at a time: the masked argmax where the grammar leaves a
    choice, its forced run where it does not (stopping before an end-of-generation token)."""
    from ..masks import masked_argmax

    gm = constraint.matcher(model)
    model.reset()
    logits = model.sync(list(prompt))
    out: list[int] = []
    while len(out) < max_tokens and not gm.is_stopped():
        step = gm.forced()[: max_tokens - len(out)] or [masked_argmax(logits, gm.mask())]
        if model.is_eog(step[0]):
            break
        for t in step:
            gm.consume([t])
            out.append(t)
            logits = model.step(t)
    return out
