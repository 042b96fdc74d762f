"""Grammar masks over logits: acceptance and sampling under a constraint, pure numpy.

A mask row is a bool array over the oracle's vocabulary: the tokens the grammar
allows at one position. Along a draft, row i is the mask after the first i draft
tokens; rows after the first draft token the grammar refuses are never read
(the grammar has no state there). ``masks`` arguments take a (n, V) bool array,
or any object whose ``masks[i]`` returns row i; a lazy row source
(``constraints.DraftMasks``) computes a row only when asked and may also offer
``allows(i, token)`` for single-token questions that need no full row.

Greedy under a mask is the argmax of the masked logits, so constrained
speculative greedy output is the oracle's own constrained greedy decoding
(forced runs in the grammar's tokenization, see jump-forward below).
Sampling draws from p renormalised over the allowed tokens (mask first, then
temperature, top-k and top-p over what is left); speculative acceptance with
those rows is lossless for any drafter distribution q, since a refused draft
token has p = 0 and is always rejected.

Jump-forward: where the grammar allows a single continuation, its tokens are
``forced``: they go into the verify batch unsampled, are accepted whenever the
tokens before them are, and need no logits row of their own. ``forced`` flags
have one entry per drafted position plus one for the position after the draft;
when that last one is forced the cycle ends without an oracle token (the next
cycle starts with the forced run).
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


def _check_rows(draft, rows, forced) -> None:
    if isinstance(rows, np.ndarray) and len(rows) != len(draft) + 1:
        raise ValueError(f"need {len(draft) + 1} logits rows for a draft of {len(draft)}, got {len(rows)}")
    if forced is not None and len(forced) != len(draft) + 1:
        raise ValueError(f"need {len(draft) + 1} forced flags for a draft of {len(draft)}, got {len(forced)}")


def masked_greedy_accept(draft: Sequence[int], target_logits, masks, forced: Sequence[bool] | None = None) -> tuple[int, int | None]:
    """Greedy acceptance under per-position masks: (n_accepted, next_token).

    Draft token i is kept while the grammar allows it and it is the argmax of the
    masked row i; next_token is the masked argmax at the first refusal (or the
    bonus row), None when the position after the draft is forced. A full mask row
    is read only where the raw argmax does not settle the question. Rows (logits
    and masks) are read by position with ``[i]``, and never at forced positions:
    ``target_logits`` may be a (len(draft) + 1, V) array or the ``VerifyBatch.rows``
    mapping of the rows a batch asked for.
    """
    _check_rows(draft, target_logits, forced)
    for i, d in enumerate(draft):
        if forced is not None and forced[i]:
            continue
        d = int(d)
        row = target_logits[i]
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
    if forced is not None and forced[n]:
        return n, None
    best = int(np.argmax(target_logits[n]))
    return n, (best if _allows(masks, n, best) else masked_argmax(target_logits[n], masks[n]))


def masked_speculative_accept(
    draft: Sequence[int],
    q: np.ndarray | None,
    target_logits,
    masks,
    params: SamplingParams,
    rng: np.random.Generator,
    forced: Sequence[bool] | None = None,
) -> tuple[int, int | None]:
    """Lossless speculative sampling under per-position masks: (n_accepted, next_token).

    The same rule as ``acceptance.speculative_accept`` (keep x with probability
    min(1, p(x)/q(x)), residual max(0, p - q) on rejection, bonus from the last row)
    with p = ``masked_probs`` of each oracle row, built only as far as the acceptance
    reads; forced positions are kept without a draw, as in ``masked_greedy_accept``.
    ``q`` holds the drafter's rows by position (rows at forced positions are not
    read), or None for a deterministic draft (q = 1 on each drafted token).
    """
    _check_rows(draft, target_logits, forced)
    for i, tok in enumerate(draft):
        if forced is not None and forced[i]:
            continue
        tok = int(tok)
        p = masked_probs(target_logits[i], masks[i], params)
        qx = 1.0 if q is None else float(q[i][tok])
        accept = qx > 0.0 and rng.random() < min(1.0, p[tok] / qx)
        if not accept:
            if q is None:
                qrow = np.zeros_like(p)
                qrow[tok] = 1.0
            else:
                qrow = np.asarray(q[i], dtype=np.float64)
            return i, sample(residual(p, qrow), rng)
    n = len(draft)
    if forced is not None and forced[n]:
        return n, None
    return n, sample(masked_probs(target_logits[n], masks[n], params), rng)


@dataclass(frozen=True)
class VerifyBatch:
    """One oracle pass: ``tokens`` = pending + planned, logits only at ``logits_at``.

    ``positions[k]`` is the planned position the k-th logits row predicts (row i
    comes from the token before planned token i, the last pending one for i = 0).
    Forced positions get no row: the grammar allows nothing else there.
    """

    tokens: list[int]
    logits_at: list[int]
    positions: list[int]

    def rows(self, decoded: np.ndarray) -> dict[int, np.ndarray]:
        """The decoded logits rows by planned position, for the acceptance functions."""
        if len(decoded) != len(self.positions):
            raise ValueError(f"expected {len(self.positions)} logits rows, got {len(decoded)}")
        return dict(zip(self.positions, decoded))


def verify_batch(pending: Sequence[int], planned: Sequence[int], forced: Sequence[bool] | None = None) -> VerifyBatch:
    """Lay out a verify pass over ``pending`` (emitted, not yet in the oracle's cache) and the planned tokens.

    ``forced`` (len(planned) + 1 flags, None for none) marks positions the grammar forces; a
    position that is not forced needs the token before it in the batch, so with nothing pending
    the plan must start with a forced token.
    """
    n = len(planned)
    flags = [False] * (n + 1) if forced is None else [bool(f) for f in forced]
    if len(flags) != n + 1:
        raise ValueError(f"need {n + 1} forced flags for {n} planned tokens, got {len(flags)}")
    positions = [i for i in range(n + 1) if not flags[i]]
    if positions and positions[0] == 0 and not pending:
        raise ValueError("nothing pending and the first planned position is not forced: no row can predict it")
    base = len(pending) - 1
    tokens = [int(t) for t in pending] + [int(t) for t in planned]
    return VerifyBatch(tokens, [base + i for i in positions], positions)
