"""Grammar-mask numerics (edgespec/masks.py): no model, no llguidance. Statistical tests use fixed seeds."""

import numpy as np
import pytest
from scipy import stats

from edgespec.acceptance import SamplingParams, greedy_accept, sample, speculative_accept
from edgespec.masks import (
    EmptyMaskError,
    apply_mask,
    bitmask_to_bool,
    masked_argmax,
    masked_greedy_accept,
    masked_probs,
    masked_speculative_accept,
    verify_batch,
)


def pack(allowed, n_bits):
    """The llguidance layout written out by hand: token t is bit t % 32 of 32-bit word t // 32."""
    words = [0] * ((n_bits + 31) // 32)
    for t in allowed:
        words[t // 32] |= 1 << (t % 32)
    return np.array(words, dtype=np.uint32).view(np.int32)


# --------------------------------------------------------------------------- packed masks


@pytest.mark.parametrize("n_vocab", [35, 64, 70])
def test_bitmask_to_bool_unpacks_llguidance_layout(n_vocab):
    allowed = [0, 5, 31, 32, 40, 63]  # 31 is the int32 sign bit
    got = bitmask_to_bool(pack(allowed, 64), n_vocab)
    assert got.shape == (n_vocab,) and got.dtype == bool
    assert np.flatnonzero(got).tolist() == [t for t in allowed if t < n_vocab]


def test_bitmask_to_bool_stacks_rows():
    words = np.stack([pack([1], 40), pack([33, 39], 40)])
    got = bitmask_to_bool(words, 40)
    assert got.shape == (2, 40)
    assert np.flatnonzero(got[0]).tolist() == [1] and np.flatnonzero(got[1]).tolist() == [33, 39]


# --------------------------------------------------------------------------- masking logits


def test_apply_mask_sets_minus_inf_outside():
    logits = np.array([1.0, 5.0, -2.0, 3.0])
    mask = np.array([True, False, True, True])
    out = apply_mask(logits, mask)
    assert out[1] == -np.inf
    np.testing.assert_array_equal(out[mask], logits[mask])
    assert masked_argmax(logits, mask) == 3  # 5.0 is refused
    with pytest.raises(EmptyMaskError):
        apply_mask(logits, np.zeros(4, dtype=bool))
    with pytest.raises(ValueError):
        apply_mask(logits, mask[:3])


def test_masked_probs_masks_before_top_k():
    logits = np.log(np.array([0.4, 0.3, 0.2, 0.1]))
    mask = np.array([False, True, True, True])
    p = masked_probs(logits, mask, SamplingParams(1.0, top_k=2))
    # top-2 of what the grammar allows: tokens 1 and 2, renormalised
    np.testing.assert_allclose(p, [0.0, 0.6, 0.4, 0.0])
    g = masked_probs(logits, mask, SamplingParams(0.0))
    assert g.argmax() == 1 and g.sum() == 1


# --------------------------------------------------------------------------- greedy


def rows(best_rows, V=6):
    """Logits whose order per row is given best first; the rest far below."""
    out = np.full((len(best_rows), V), -10.0)
    for i, order in enumerate(best_rows):
        for rank, t in enumerate(order):
            out[i, t] = 5.0 - rank
    return out


def masks_from(allowed_rows, V=6):
    m = np.zeros((len(allowed_rows), V), dtype=bool)
    for i, allowed in enumerate(allowed_rows):
        m[i, list(allowed)] = True
    return m


def test_masked_greedy_accept_cases():
    everything = range(6)
    logits = rows([[2, 1], [5, 4], [1, 0], [3, 0]])
    free = masks_from([everything] * 4)
    assert masked_greedy_accept([2, 5, 1], logits, free) == greedy_accept([2, 5, 1], logits) == (3, 3)
    # the raw argmax 2 is refused at row 0: the drafted 1 is the best allowed token and is kept
    m = masks_from([{0, 1}, everything, everything, everything])
    assert masked_greedy_accept([1, 5, 1], logits, m) == (3, 3)
    # drafting the refused raw argmax is a rejection; the correction is the best allowed token
    assert masked_greedy_accept([2, 5, 1], logits, m) == (0, 1)
    # an allowed draft token below an allowed better one is rejected, as without a mask
    m2 = masks_from([everything, {4, 5, 0}, everything, everything])
    assert masked_greedy_accept([2, 4, 1], logits, m2) == (1, 5)
    # the bonus row is masked too
    m3 = masks_from([everything, everything, everything, {0}])
    assert masked_greedy_accept([2, 5, 1], logits, m3) == (3, 0)
    assert masked_greedy_accept([], logits[:1], masks_from([{1}])) == (0, 1)
    with pytest.raises(ValueError):
        masked_greedy_accept([2, 5], logits, free)


def reference_constrained_greedy(draft, logits, masks):
    """One position at a time: the oracle's constrained greedy token, compared with the draft."""
    for i, d in enumerate(draft):
        best = int(np.argmax(np.where(masks[i], logits[i], -np.inf)))
        if best != d:
            return i, best
    n = len(draft)
    return n, int(np.argmax(np.where(masks[n], logits[n], -np.inf)))


def test_masked_greedy_accept_matches_one_at_a_time_reference():
    gen = np.random.default_rng(5)
    V = 12
    for _ in range(500):
        k = int(gen.integers(0, 6))
        logits = gen.normal(size=(k + 1, V))
        masks = gen.random((k + 1, V)) < 0.4
        masks[np.arange(k + 1), gen.integers(0, V, size=k + 1)] = True  # never an empty row
        # drafts that often follow the constrained argmax for a while, then wander
        draft = [int(np.argmax(np.where(masks[i], logits[i], -np.inf))) if gen.random() < 0.7 else int(gen.integers(0, V))
                 for i in range(k)]
        assert masked_greedy_accept(draft, logits, masks) == reference_constrained_greedy(draft, logits, masks)


class LazyRows:
    """A row source like constraints.DraftMasks: counts full rows and refuses rows past the draft's refusal."""

    def __init__(self, masks, readable, single_questions=True):
        self.masks, self.readable, self.full_rows = masks, readable, 0
        if single_questions:
            self.allows = lambda i, t: (self._check(i), bool(self.masks[i][t]))[1]

    def _check(self, i):
        if i > self.readable:
            raise AssertionError(f"row {i} read after the grammar refused the draft at {self.readable}")

    def __getitem__(self, i):
        self._check(i)
        self.full_rows += 1
        return self.masks[i]


def test_masked_greedy_reads_no_row_after_the_refusal_and_few_rows_in_all():
    everything = range(6)
    logits = rows([[2, 1], [5, 4], [1, 0], [3, 0]])
    m = masks_from([everything, {0, 4}, everything, everything])
    lazy = LazyRows(m, readable=1)
    assert masked_greedy_accept([2, 5, 1], logits, lazy) == (1, 4)
    assert lazy.full_rows == 1  # the correction needs row 1; row 0 was settled by its argmax
    # a draft equal to the raw argmax everywhere, with an allowed bonus: no full row at all
    free = LazyRows(masks_from([everything] * 4), readable=3)
    assert masked_greedy_accept([2, 5, 1], logits, free) == (3, 3)
    assert free.full_rows == 0
    # without single-token questions every decision reads rows, still never past the refusal
    plain = LazyRows(m, readable=1, single_questions=False)
    assert masked_greedy_accept([2, 5, 1], logits, plain) == (1, 4)


# --------------------------------------------------------------------------- sampling


def first_token_counts(accept, n, V, rng, gen_q):
    counts = np.zeros(V)
    for _ in range(n):
        draft, q = gen_q(rng)
        n_acc, nxt = accept(draft, q, rng)
        counts[draft[0] if n_acc >= 1 else nxt] += 1
    return counts


@pytest.mark.parametrize("deterministic", [False, True])
def test_masked_speculative_sampling_reproduces_the_masked_distribution(deterministic):
    """The first emitted token is distributed as p renormalised under the mask, whatever q proposes."""
    gen = np.random.default_rng(4321)
    V = 8
    logits = gen.normal(scale=1.5, size=(3, V))
    masks = np.ones((3, V), dtype=bool)
    masks[0, [0, 3, 6]] = False  # the drafter below likes token 3, which the grammar refuses
    q = gen.dirichlet(np.ones(V) * 0.7, size=2)
    q[:, 3] += 0.5
    q /= q.sum(axis=1, keepdims=True)
    params = SamplingParams(temperature=0.9)

    def gen_q(rng):
        if deterministic:
            return [3 if rng.random() < 0.5 else 4, 1], None  # prompt-lookup style proposals, q = 1
        return [sample(q[0], rng), sample(q[1], rng)], q

    rng = np.random.default_rng(11)
    n = 20000
    counts = first_token_counts(
        lambda d, qq, r: masked_speculative_accept(d, qq, logits, masks, params, r), n, V, rng, gen_q)
    expected = masked_probs(logits[0], masks[0], params)
    assert counts[~masks[0]].sum() == 0
    keep = masks[0]
    _, pval = stats.chisquare(counts[keep], expected[keep] * n)
    assert pval > 0.001, (counts, expected * n)


def test_verifying_without_the_mask_emits_refused_tokens():
    """The refused-token check above has power: verifying against unmasked p emits what the grammar refuses."""
    gen = np.random.default_rng(4321)
    V = 8
    logits = gen.normal(scale=1.5, size=(3, V))
    mask = np.ones(V, dtype=bool)
    mask[[0, 3, 6]] = False
    params = SamplingParams(temperature=0.9)
    p_free = masked_probs(logits, np.ones_like(logits, dtype=bool), params)
    rng = np.random.default_rng(11)
    n = 20000
    counts = first_token_counts(lambda d, qq, r: speculative_accept(d, None, p_free, r), n, V, rng,
                                lambda r: ([4, 1], None))
    refused = counts[~mask].sum()
    assert refused > 0.5 * p_free[0, ~mask].sum() * n


def test_masked_speculative_greedy_params_agree_with_masked_greedy():
    gen = np.random.default_rng(8)
    V = 10
    rng = np.random.default_rng(0)
    for _ in range(200):
        logits = gen.normal(size=(4, V))
        masks = gen.random((4, V)) < 0.5
        masks[:, 0] = True
        draft = [int(t) for t in gen.integers(0, V, size=3)]
        got = masked_speculative_accept(draft, None, logits, masks, SamplingParams(0.0), rng)
        assert got == masked_greedy_accept(draft, logits, masks)


# --------------------------------------------------------------------------- jump-forward


def test_forced_positions_are_kept_without_the_oracle():
    V = 6
    logits = rows([[2, 1], [5, 4], [1, 0], [3, 0]])
    free = masks_from([range(V)] * 4)
    # position 1 is forced to 4: kept although the oracle prefers 5, and its row is never read
    forced = [False, True, False, False]
    sparse = {0: logits[0], 2: logits[2], 3: logits[3]}
    assert masked_greedy_accept([2, 4, 1], sparse, LazyRows(free, readable=3), forced) == (3, 3)
    # a forced position after a rejection is not reached
    assert masked_greedy_accept([0, 4, 1], sparse, free, forced) == (0, 2)
    # a forced position after the draft: no oracle token this cycle
    assert masked_greedy_accept([2, 5], logits[:3], free[:3], [False, False, True]) == (2, None)
    assert masked_greedy_accept([], {}, free[:1], [True]) == (0, None)
    with pytest.raises(ValueError):
        masked_greedy_accept([2], logits[:2], free[:2], [False])
    rng = np.random.default_rng(0)
    assert masked_speculative_accept([2, 4, 1], None, sparse, free, SamplingParams(0.0), rng, forced) == (3, 3)
    assert masked_speculative_accept([2, 5], None, logits[:3], free[:3], SamplingParams(0.7), rng,
                                     [True, True, True]) == (2, None)


def test_forced_positions_keep_sampling_lossless_where_the_oracle_chooses():
    """With a forced first token, the oracle's token at position 1 is distributed as its masked row 1."""
    gen = np.random.default_rng(77)
    V = 6
    logits = gen.normal(scale=1.5, size=(3, V))
    masks = np.ones((3, V), dtype=bool)
    masks[1, [2, 5]] = False
    params = SamplingParams(temperature=1.0)
    rng = np.random.default_rng(3)
    n = 20000
    counts = np.zeros(V)
    for _ in range(n):
        d1 = 2 if rng.random() < 0.5 else 1  # half the time the grammar refuses the drafted token
        n_acc, nxt = masked_speculative_accept([4, d1], None, {1: logits[1], 2: logits[2]}, masks, params, rng,
                                               [True, False, False])
        assert n_acc >= 1
        counts[d1 if n_acc == 2 else nxt] += 1
    expected = masked_probs(logits[1], masks[1], params)
    assert counts[~masks[1]].sum() == 0
    _, pval = stats.chisquare(counts[masks[1]], expected[masks[1]] * n)
    assert pval > 0.001, (counts, expected * n)


def test_verify_batch_layout():
    b = verify_batch([7], [10, 11, 12, 20, 21], [True, True, True, False, False, False])
    assert b.tokens == [7, 10, 11, 12, 20, 21]
    assert b.logits_at == [3, 4, 5]  # the last forced token predicts the first drafted one
    assert b.positions == [3, 4, 5]
    decoded = np.arange(3 * 4).reshape(3, 4)
    assert sorted(b.rows(decoded)) == [3, 4, 5] and b.rows(decoded)[4].tolist() == [4, 5, 6, 7]
    with pytest.raises(ValueError):
        b.rows(decoded[:2])
    # no forced positions: the usual pending + draft batch
    b = verify_batch([7], [20, 21])
    assert b.tokens == [7, 20, 21] and b.logits_at == [0, 1, 2]
    # a forced run in the middle and after the draft: rows only where the oracle chooses
    b = verify_batch([7, 8], [20, 10, 11, 21], [False, False, True, True, False])
    assert b.logits_at == [1, 2, 5] and b.positions == [0, 1, 4]
    # nothing pending (the cache holds every emitted token): the plan must open with a forced token
    b = verify_batch([], [10, 11, 20], [True, True, False, False])
    assert b.logits_at == [1, 2] and b.positions == [2, 3]
    assert verify_batch([], [10], [True, True]).logits_at == []
    with pytest.raises(ValueError):
        verify_batch([], [20], [False, False])
    with pytest.raises(ValueError):
        verify_batch([7], [20], [False])
