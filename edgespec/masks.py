"""Grammar masks over logits: acceptance and sampling under a constraint, pure numpy.

A mask row is a bool array over the oracle's vocabulary: the tokens the grammar
allows at one position. Along a draft, row i is the mask after the first i draft
tokens; rows after the first draft token the grammar refuses are never read
(the grammar has no state there). ``masks`` arguments take a (n, V) bool array,
or any object whose ``masks[i]`` returns row i; a lazy row source
(``constraints.DraftMasks``) computes a row only when asked and may also offer
``allows(i, token)`` for single-token questions that need no full row.

Greedy under a mask is the argmax of the masked logits, so constrained
speculative greedy output is the oracle's own constrained greedy decoding.
Sampling draws from p renormalised over the allowed tokens (mask first, then
temperature, top-k and top-p over what is left); speculative acceptance with
those rows is lossless for any drafter distribution q, since a refused draft
token has p = 0 and is always rejected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .acceptance import SamplingParams, logits_to_probs, residual, sample


class EmptyMaskError(ValueError):
    """A mask row that allows no token: the grammar is in an error state, or a caller passed the wrong row."""


def bitmask_to_bool(words: np.ndarray, n_vocab: int) -> np.ndarray:
    """llguidance's packed mask (int32 words, token t at bit t % 32 of word t // 32) as bools over ``n_vocab``.

    The tokenizer's vocabulary and the model's logits row may differ in size: tokens past
    the tokenizer's end are refused, bits past ``n_vocab`` dropped.
    """
    w = np.ascontiguousarray(words, dtype=np.int32)
    bits = np.unpackbits(w.view(np.uint8), axis=-1, bitorder="little").astype(bool)
    have = bits.shape[-1]
    if have >= n_vocab:
        return bits[..., :n_vocab]
    pad = np.zeros(bits.shape[:-1] + (n_vocab - have,), dtype=bool)
    return np.concatenate([bits, pad], axis=-1)


def apply_mask(logits: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Logits with -inf outside the mask (one row (V,) or a stack (n, V)); a row allowing nothing is an error."""
    x = np.asarray(logits, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    if m.shape != x.shape:
        raise ValueError(f"mask shape {m.shape} does not match logits shape {x.shape}")
    if not np.all(m.any(axis=-1)):
        raise EmptyMaskError("the grammar allows no token at this position")
    return np.where(m, x, -np.inf)


def masked_argmax(logits: np.ndarray, mask: np.ndarray) -> int:
    """The best allowed token (ties go to the lowest id, as ``np.argmax`` does)."""
    return int(np.argmax(apply_mask(logits, mask)))


def masked_probs(logits: np.ndarray, mask: np.ndarray, params: SamplingParams) -> np.ndarray:
    """The distribution constrained sampling draws from: p renormalised over the allowed tokens."""
    return logits_to_probs(apply_mask(logits, mask), params)


def _allows(masks, i: int, token: int) -> bool:
    ask = getattr(masks, "allows", None)
    if ask is not None:
        return bool(ask(i, token))
    return bool(masks[i][token])


def masked_greedy_accept(draft: Sequence[int], target_logits: np.ndarray, masks) -> tuple[int, int]:
    """Greedy acceptance under per-position masks: (n_accepted, next_token).

    Draft token i is kept while the grammar allows it and it is the argmax of the
    masked row i; next_token is the masked argmax at the first refusal (or the
    bonus row). ``target_logits`` has len(draft) + 1 rows. A full mask row is read
    only where the raw argmax does not settle the question: when it equals an
    allowed draft token, or is itself allowed on the last row.
    """
    logits = np.asarray(target_logits)
    if len(logits) != len(draft) + 1:
        raise ValueError(f"need {len(draft) + 1} logits rows for a draft of {len(draft)}, got {len(logits)}")
    for i, d in enumerate(draft):
        d = int(d)
        row = logits[i]
        best = int(np.argmax(row))
        if not _allows(masks, i, d):
            return i, (best if _allows(masks, i, best) else masked_argmax(row, masks[i]))
        if d == best:
            continue
        # an allowed draft token below the raw argmax still wins when everything above it is refused
        mb = masked_argmax(row, masks[i])
        if mb != d:
            return i, mb
    n = len(draft)
    best = int(np.argmax(logits[n]))
    return n, (best if _allows(masks, n, best) else masked_argmax(logits[n], masks[n]))


def masked_speculative_accept(
    draft: Sequence[int],
    q: np.ndarray | None,
    target_logits: np.ndarray,
    masks,
    params: SamplingParams,
    rng: np.random.Generator,
) -> tuple[int, int]:
    """Lossless speculative sampling under per-position masks: (n_accepted, next_token).

    The same rule as ``acceptance.speculative_accept`` (keep x with probability
    min(1, p(x)/q(x)), residual max(0, p - q) on rejection, bonus from the last row)
    with p = ``masked_probs`` of each oracle row; rows are built only as far as the
    acceptance reads them. ``q`` holds the drafter's rows or None for a
    deterministic draft (q = 1 on each drafted token).
    """
    logits = np.asarray(target_logits)
    if len(logits) != len(draft) + 1:
        raise ValueError(f"need {len(draft) + 1} logits rows for a draft of {len(draft)}, got {len(logits)}")
    for i, tok in enumerate(draft):
        tok = int(tok)
        p = masked_probs(logits[i], masks[i], params)
        qx = 1.0 if q is None else float(q[i, tok])
        accept = qx > 0.0 and rng.random() < min(1.0, p[tok] / qx)
        if not accept:
            if q is None:
                qrow = np.zeros_like(p)
                qrow[tok] = 1.0
            else:
                qrow = np.asarray(q[i], dtype=np.float64)
            return i, sample(residual(p, qrow), rng)
    n = len(draft)
    return n, sample(masked_probs(logits[n], masks[n], params), rng)


@dataclass(frozen=True)
class VerifyBatch:
    """One oracle pass with jump-forward: ``tokens`` = pending + forced + draft, logits at ``logits_at``.

    ``logits_at`` starts at the last token before the draft: its row predicts draft
    token 0 (or the next token when the draft is empty), so rows line up with the
    masks along the draft. Forced tokens need no logits of their own: the grammar
    allows nothing else there.
    """

    tokens: list[int]
    logits_at: list[int]
    forced: list[int]
    draft: list[int]


def jump_forward(pending: Sequence[int], forced: Sequence[int], draft: Sequence[int], budget: int) -> VerifyBatch:
    """Lay out a verify pass: the grammar's forced run (cut to ``budget``, the tokens the caller may still
    emit) goes in unsampled, then the draft, which only fills what the budget leaves after the forced run.

    ``draft`` must have been proposed after the forced tokens (a draft from before them predicts the
    wrong positions). The forced run is taken whenever there is one: the grammar allows nothing else,
    so the oracle's pass over it only fills the cache.
    """
    if budget < 0:
        raise ValueError("budget must be >= 0")
    f = [int(t) for t in forced[:budget]]
    if not pending and not f:
        raise ValueError("a verify pass needs a pending or forced token to predict the draft from")
    d = [int(t) for t in draft[: max(0, budget - len(f))]] if len(f) == len(forced) else []
    tokens = [int(t) for t in pending] + f + d
    first = len(pending) + len(f) - 1
    return VerifyBatch(tokens, list(range(first, len(tokens))), f, d)
