"""Acceptance rules and sampling transforms: pure numpy, no model anywhere.

Greedy: a drafted token is kept while it equals the oracle's argmax, so the output
is the oracle's own greedy decoding. Sampling: lossless speculative sampling
(Leviathan et al. 2023; Chen et al. 2023): keep drafted token x with probability
min(1, p(x)/q(x)); on the first rejection draw from the normalised residual
max(0, p - q); when every draft passes draw a bonus token from p. The emitted
sequence is then distributed exactly as sampling from the oracle alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import SamplingParamsError


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def validate_sampling(temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int | None = None) -> SamplingParams:
    """Check ranges up front so a typo is an error message, not a NaN deep in the loop."""
    try:
        temperature = float(temperature)
        top_p = float(top_p)
    except (TypeError, ValueError):
        raise SamplingParamsError("temperature and top_p must be numbers") from None
    if not np.isfinite(temperature) or temperature < 0 or temperature > 10:
        raise SamplingParamsError(f"temperature must be in [0, 10], got {temperature}")
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 0:
        raise SamplingParamsError(f"top_k must be a whole number >= 0, got {top_k!r}")
    if not np.isfinite(top_p) or not 0 < top_p <= 1:
        raise SamplingParamsError(f"top_p must be in (0, 1], got {top_p}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise SamplingParamsError(f"seed must be a whole number >= 0, got {seed!r}")
    return SamplingParams(temperature, int(top_k), top_p, None if seed is None else int(seed))


def softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def logits_to_probs(logits: np.ndarray, params: SamplingParams) -> np.ndarray:
    """The distribution sampling draws from: temperature, then top-k, then top-p (nucleus).

    Works on one row (V,) or a stack (n, V). Greedy params give a one-hot at the argmax,
    so greedy is the temperature -> 0 limit of the same rule.
    """
    x = np.asarray(logits, dtype=np.float64)
    squeeze = x.ndim == 1
    x = np.atleast_2d(x)
    if params.greedy:
        out = np.zeros_like(x)
        out[np.arange(len(x)), x.argmax(axis=-1)] = 1.0
        return out[0] if squeeze else out
    x = x / params.temperature
    V = x.shape[-1]
    if 0 < params.top_k < V:
        kth = np.partition(x, V - params.top_k, axis=-1)[:, V - params.top_k][:, None]
        x = np.where(x >= kth, x, -np.inf)
    p = softmax(x)
    if params.top_p < 1.0:
        order = np.argsort(-p, axis=-1, kind="stable")
        sp = np.take_along_axis(p, order, axis=-1)
        cum = np.cumsum(sp, axis=-1)
        # keep the smallest prefix whose mass reaches top_p (always at least one token)
        keep_sorted = (cum - sp) < params.top_p
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=-1)
        p = np.where(keep, p, 0.0)
        p /= p.sum(axis=-1, keepdims=True)
    return p[0] if squeeze else p


def sample(p: np.ndarray, rng: np.random.Generator) -> int:
    """Inverse-CDF draw; one uniform per token keeps runs reproducible for a seed."""
    cdf = np.cumsum(p)
    u = rng.random() * cdf[-1]
    return int(min(np.searchsorted(cdf, u, side="right"), len(p) - 1))


def greedy_accept(draft: list[int] | np.ndarray, target_logits: np.ndarray) -> tuple[int, int]:
    """Accept the longest prefix of ``draft`` matching the oracle's argmax.

    ``target_logits`` has len(draft) + 1 rows: row i is the oracle's prediction
    for draft position i; the extra row gives the bonus token. Returns
    (n_accepted, next_token) where next_token is the oracle's token at the first
    divergence (or the bonus token).
    """
    best = np.asarray(target_logits).argmax(axis=-1)
    n = 0
    for d, b in zip(draft, best):
        if int(d) != int(b):
            break
        n += 1
    return n, int(best[n])


def residual(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Normalised max(0, p - q); falls back to p when p <= q everywhere (measure-zero case)."""
    r = np.maximum(p - q, 0.0)
    s = r.sum()
    return r / s if s > 0 else p


def speculative_accept(
    draft: list[int] | np.ndarray,
    q: np.ndarray | None,
    p: np.ndarray,
    rng: np.random.Generator,
) -> tuple[int, int]:
    """Lossless rejection sampling over a draft.

    ``p`` holds the oracle's sampling distributions, len(draft) + 1 rows; ``q`` the
    drafter's rows (len(draft)), or None for a deterministic draft (q = 1 on each
    drafted token, e.g. prompt lookup or a re-tokenized cross-vocabulary proposal).
    Returns (n_accepted, next_token).
    """
    p = np.asarray(p, dtype=np.float64)
    for i, tok in enumerate(draft):
        tok = int(tok)
        px = p[i, tok]
        qx = 1.0 if q is None else float(q[i, tok])
        if qx <= 0.0:  # the drafter could not have proposed it: treat as a rejection
            accept = False
        else:
            accept = rng.random() < min(1.0, px / qx)
        if not accept:
            if q is None:
                qrow = np.zeros_like(p[i])
                qrow[tok] = 1.0
            else:
                qrow = np.asarray(q[i], dtype=np.float64)
            return i, sample(residual(p[i], qrow), rng)
    return len(draft), sample(p[len(draft)], rng)


def top2_gap(logits: np.ndarray) -> float:
    """Logit gap between the best and second-best token: how close a greedy choice was to a tie."""
    part = np.partition(np.asarray(logits, dtype=np.float64), -2)
    return float(part[-1] - part[-2])


def tied_tokens(logits: np.ndarray, tolerance: float) -> set[int]:
    """Tokens whose logit is within ``tolerance`` of the best: the choices batch-level numerical noise can flip between.

    Usually the top two; on a many-way tie (measured once on a season report: six
    tokens within 0.15 logits after "Action:") a batched evaluation may pick the
    third or fifth, which is the same kind of near-tie.
    """
    row = np.asarray(logits, dtype=np.float64)
    return set(np.flatnonzero(row >= row.max() - tolerance).tolist())
