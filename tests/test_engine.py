"""Engine tests on tiny F32 GGUF models written by the tests (batch-invariant kernels → strict identity)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from edgespec import IncompatibleModelsError, ModelFileError, PromptError, SamplingParamsError
from edgespec.acceptance import logits_to_probs, validate_sampling
from edgespec.drafters.bridge import BridgeDrafter
from edgespec.drafters.model import ModelDrafter
from edgespec.engine import Engine, GenerationParams
from edgespec.events import Chunk, Done
from edgespec.llama import LlamaModel, check_same_vocab
from edgespec.cost import CostCurve
from edgespec.testing.reference import oracle_greedy

WORDS = "the vine leaf moth mite row block larva cluster spray rain dry scout count damage edge wood".split()


@pytest.fixture(scope="module")
def oracle(tiny_oracle_path):
    m = LlamaModel(tiny_oracle_path, n_ctx=512, n_threads=1, flash_attn=False, kv_f32=True)
    yield m
    m.close()


@pytest.fixture(scope="module")
def close_lm(tiny_drafter_close_path):
    m = LlamaModel(tiny_drafter_close_path, n_ctx=512, n_threads=1, flash_attn=False, kv_f32=True)
    yield m
    m.close()


@pytest.fixture(scope="module")
def far_lm(tiny_drafter_path):
    m = LlamaModel(tiny_drafter_path, n_ctx=512, n_threads=1, flash_attn=False, kv_f32=True)
    yield m
    m.close()


@pytest.fixture(scope="module")
def other_lm(tiny_other_vocab_path):
    m = LlamaModel(tiny_other_vocab_path, n_ctx=512, n_threads=1, flash_attn=False, kv_f32=True)
    yield m
    m.close()


def prompts(n, seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(2, 12))) for _ in range(n)]


def run(oracle, drafter, text_or_tokens, *, adaptive=False, **kw) -> Done:
    oracle.reset()  # identical prefill for every run (no prefix reuse across compared runs)
    prompt = oracle.tokenize(text_or_tokens) if isinstance(text_or_tokens, str) else text_or_tokens
    kw.setdefault("max_tokens", 40)
    sampling = validate_sampling(kw.pop("temperature", 0.0), kw.pop("top_k", 0), kw.pop("top_p", 1.0), kw.pop("seed", None))
    eng = Engine(oracle, drafter, curve=CostCurve.linear(0.01), adaptive=adaptive)
    events = list(eng.generate(prompt, GenerationParams(sampling=sampling, **kw)))
    assert isinstance(events[-1], Done)
    assert all(isinstance(e, Chunk) for e in events[:-1])
    return events[-1]


def test_tiny_models_load(oracle, close_lm, other_lm):
    assert oracle.n_vocab == close_lm.n_vocab
    check_same_vocab(oracle, close_lm)
    with pytest.raises(IncompatibleModelsError, match="bridge"):
        check_same_vocab(oracle, other_lm)


@pytest.mark.parametrize("kind", ["model-close", "model-far", "bridge", "lookup"])
def test_greedy_identical_to_oracle_on_many_prompts(oracle, close_lm, far_lm, other_lm, kind):
    if kind == "model-close":
        drafter = ModelDrafter(close_lm, oracle_vocab=oracle.n_vocab, p_min=0.0)
    elif kind == "model-far":
        drafter = ModelDrafter(far_lm, oracle_vocab=oracle.n_vocab, p_min=0.0)
    elif kind == "bridge":
        drafter = BridgeDrafter(other_lm, oracle, p_min=0.0)
    else:
        from edgespec.drafters.lookup import PromptLookupDrafter

        drafter = PromptLookupDrafter()
    total_drafted = 0
    for text in prompts(25, seed=hash(kind) % 1000):
        ref = oracle_greedy(oracle, oracle.tokenize(text), 40)
        for adaptive in (False, True):
            done = run(oracle, drafter, text, adaptive=adaptive)
            assert done.tokens == ref, (kind, text, adaptive)
            total_drafted += done.stats.drafted_tokens
    if kind != "lookup":
        assert total_drafted > 0  # the verify path was really exercised


def test_close_drafter_is_mostly_accepted(oracle, close_lm):
    d = run(oracle, ModelDrafter(close_lm, oracle_vocab=oracle.n_vocab, p_min=0.0), "the vine leaf moth", max_tokens=60)
    assert d.stats.drafted_tokens > 0
    assert d.stats.acceptance_rate > 0.5
    assert d.stats.oracle_passes < d.stats.tokens  # fewer oracle passes than tokens: drafting worked
    sources = {r.source for r in d.records}
    assert "drafted" in sources


def test_provenance_offsets_cover_text(oracle, far_lm):
    d = run(oracle, ModelDrafter(far_lm, oracle_vocab=oracle.n_vocab, p_min=0.0), "the moth row", max_tokens=50)
    assert "".join(r.text for r in d.records) == d.text
    pos = 0
    for r in d.records:
        assert r.start == pos and r.end == pos + len(r.text)
        pos = r.end
        assert r.verified  # lossless mode: everything verified
    assert {r.source for r in d.records} <= {"oracle", "drafted", "corrected", "bonus"}


def test_rewind_leaves_exactly_accepted_tokens(oracle, far_lm, tiny_oracle_path):
    """After rejections the oracle's KV holds prompt + emitted[:-1] (the last token is pending),
    and continuing from it gives the same logits as a fresh context."""
    drafter = ModelDrafter(far_lm, oracle_vocab=oracle.n_vocab, p_min=0.0)
    prompt = oracle.tokenize("the block row larva")
    d = run(oracle, drafter, prompt, max_tokens=30)
    assert d.stats.accepted_tokens < d.stats.drafted_tokens  # there were rejections to rewind
    assert oracle.tokens == prompt + d.tokens[:-1]
    cont = oracle.step(d.tokens[-1])
    with LlamaModel(tiny_oracle_path, n_ctx=512, n_threads=1, flash_attn=False, kv_f32=True) as fresh:
        ref = fresh.sync(prompt + d.tokens)
    np.testing.assert_allclose(cont, ref, rtol=0, atol=1e-4)
    # the drafter's cache is re-synced from the committed context, reusing its prefix
    ctx = prompt + d.tokens
    lg = far_lm.sync(ctx)
    assert far_lm.tokens == ctx
    far_lm.reset()
    np.testing.assert_allclose(lg, far_lm.sync(ctx), atol=1e-4)


def test_stop_conditions(oracle, close_lm):
    drafter = ModelDrafter(close_lm, oracle_vocab=oracle.n_vocab, p_min=0.0)
    d = run(oracle, drafter, "the vine", max_tokens=7)
    assert len(d.tokens) == 7 and d.stats.stop_reason == "max_tokens"
    full = run(oracle, drafter, "the vine", max_tokens=40)
    if len(full.text) > 6:
        stop = full.text[3:6]
        s = run(oracle, drafter, "the vine", max_tokens=40, stop=(stop,))
        assert s.stats.stop_reason == "stop" and stop not in s.text
        assert full.text.startswith(s.text)


def test_cancel_stops_early(oracle, close_lm):
    import threading

    ev = threading.Event()
    eng = Engine(oracle, None, curve=CostCurve.linear(0.01))
    oracle.reset()
    out = []
    for e in eng.generate(oracle.tokenize("the vine"), GenerationParams(max_tokens=100), cancel=ev):
        out.append(e)
        ev.set()
    assert out[-1].stats.stop_reason == "cancelled" and out[-1].stats.tokens < 5


def _joint_counts(oracle, drafter, prompt, n, seed, top_k):
    counts = {}
    for i in range(n):
        d = run(oracle, drafter, prompt, max_tokens=2, temperature=1.0, top_k=top_k, seed=seed + i)
        # an end-of-generation token ends the run and is not in d.tokens: put it back for counting
        key = tuple(d.tokens[:2])
        if len(key) < 2:
            key = key + (oracle.eos_token(),)
        counts[key] = counts.get(key, 0) + 1
    return counts


@pytest.mark.parametrize("kind", ["model-far", "model-close", "bridge"])
def test_speculative_sampling_matches_oracle_distribution(oracle, close_lm, far_lm, other_lm, kind):
    """Chi-square over the first two tokens (the second one goes through rejection sampling)
    against the oracle's exact joint distribution, fixed seeds."""
    drafter = {
        "model-far": lambda: ModelDrafter(far_lm, oracle_vocab=oracle.n_vocab, p_min=0.0, seed=5),
        "model-close": lambda: ModelDrafter(close_lm, oracle_vocab=oracle.n_vocab, p_min=0.0, seed=5),
        "bridge": lambda: BridgeDrafter(other_lm, oracle, p_min=0.0),
    }[kind]()
    top_k = 4
    prompt = oracle.tokenize("the cluster")
    sp = validate_sampling(1.0, top_k, 1.0)
    oracle.reset()
    p1 = logits_to_probs(oracle.sync(prompt), sp)
    expected = {}
    for t1 in np.flatnonzero(p1):
        if oracle.is_eog(int(t1)):
            expected[(int(t1),)] = p1[t1]
            continue
        oracle.reset()
        p2 = logits_to_probs(oracle.sync(prompt + [int(t1)]), sp)
        for t2 in np.flatnonzero(p2):
            expected[(int(t1), int(t2))] = p1[t1] * p2[t2]
    n = 800
    counts = _joint_counts(oracle, drafter, prompt, n, seed=1000, top_k=top_k)
    assert set(counts) <= set(expected)
    keys = sorted(expected)
    obs = np.array([counts.get(k, 0) for k in keys], dtype=float)
    exp = np.array([expected[k] * n for k in keys])
    # pool cells with small expectations so the chi-square approximation holds
    small = exp < 5
    if small.any():
        obs = np.append(obs[~small], obs[small].sum())
        exp = np.append(exp[~small], exp[small].sum())
    _, pval = stats.chisquare(obs, exp * obs.sum() / exp.sum())
    assert pval > 0.001, (kind, pval)


def test_oracles_and_drafters_declare_the_interfaces_the_engine_uses(oracle, close_lm, other_lm):
    from edgespec import EdgespecError
    from edgespec.drafters.base import CandidateDrafter, Draft, Drafter, Oracle
    from edgespec.drafters.cascade import CascadeDrafter
    from edgespec.drafters.history import HistoryDrafter, HistoryIndex
    from edgespec.drafters.lookup import PromptLookupDrafter
    from edgespec.testing.replay import ReplayOracle, VirtualClock

    assert isinstance(oracle, Oracle)
    assert isinstance(ReplayOracle(CostCurve.linear(0.01), VirtualClock(), n_vocab=8, eog=7), Oracle)
    with HistoryIndex(":memory:", seed_templates=False) as index:
        singles = [ModelDrafter(close_lm, oracle_vocab=oracle.n_vocab), BridgeDrafter(other_lm, oracle),
                   PromptLookupDrafter(), HistoryDrafter(index, lambda s: [], "words")]
        assert all(isinstance(d, Drafter) and not isinstance(d, CandidateDrafter) for d in singles)
        assert [(d.cheap, d.multi_candidate) for d in singles] == [(False, False), (False, False), (True, False), (True, True)]
        cascade = CascadeDrafter(singles[2:])
        assert isinstance(cascade, CandidateDrafter) and not isinstance(cascade, Drafter)
        with pytest.raises(EdgespecError, match="not a drafter"):
            CascadeDrafter([cascade])  # a cascade's sources are single drafters
    with pytest.raises(EdgespecError, match="not a drafter"):
        Engine(oracle, object())
    draft = Draft([1, 2, 3], probs=np.eye(3), passes=2, source="model")
    cut = draft.truncated(2)
    assert cut.tokens == [1, 2] and cut.probs.shape == (2, 3) and (cut.passes, cut.source) == (2, "model")
    assert draft.truncated(3) is draft


# ----------------------------------------------------------------------------- bad input


def test_empty_and_overlong_prompts(oracle, tiny_oracle_path):
    eng = Engine(oracle, None)
    with pytest.raises(PromptError, match="empty"):
        list(eng.generate([], GenerationParams()))
    with LlamaModel(tiny_oracle_path, n_ctx=32, n_threads=1, flash_attn=False, kv_f32=True) as small:
        long_prompt = small.tokenize(" ".join(["vine"] * 200))
        with pytest.raises(PromptError, match="context"):
            list(Engine(small, None).generate(long_prompt, GenerationParams()))
        # a prompt that fits but leaves little room stops cleanly at the context edge
        fits = long_prompt[:28]
        done = list(Engine(small, None).generate(fits, GenerationParams(max_tokens=100)))[-1]
        assert done.stats.stop_reason in ("context", "eos")
        assert len(small.tokens) <= 32


def test_out_of_range_token_ids_raise_instead_of_aborting(oracle):
    with pytest.raises(PromptError, match="vocabulary"):
        oracle.decode([oracle.n_vocab + 5])
    with pytest.raises(PromptError, match="vocabulary"):
        list(Engine(oracle, None).generate([1, -3], GenerationParams()))


def test_invalid_sampling_params():
    for kw in [dict(temperature=-0.5), dict(top_p=0.0), dict(top_k=-1), dict(seed="x")]:
        with pytest.raises(SamplingParamsError):
            validate_sampling(**{"temperature": 0.5, **kw})


@pytest.mark.parametrize("content", [None, b"", b"GGUF", b"NOTAGGUF" * 100, b"GGUF\x03\x00\x00\x00" + b"\xff" * 64])
def test_bad_model_files_raise_model_file_error(tmp_path, content):
    p = tmp_path / "bad.gguf"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(ModelFileError):
        LlamaModel(p, n_ctx=64)


def test_truncated_model_file(tmp_path, tiny_oracle_path):
    data = open(tiny_oracle_path, "rb").read()
    p = tmp_path / "cut.gguf"
    p.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ModelFileError):
        LlamaModel(p, n_ctx=64)


def test_model_drafter_refuses_other_vocabulary_through_api(tiny_oracle_path, tiny_other_vocab_path):
    from edgespec.api import open_generator

    with pytest.raises(IncompatibleModelsError, match="bridge"):
        open_generator(oracle=str(tiny_oracle_path), drafter="model", draft_model=str(tiny_other_vocab_path), n_ctx=256)


def test_bytes_beyond_unicode_do_not_abort_the_process(oracle):
    """llama.cpp throws on 4-byte sequences above U+10FFFF; a drafter's raw bytes can contain them."""
    toks = oracle.tokenize(b"A\xf4\x90\x80\x80A\xf7\xbf\xbf\xbfB")
    assert oracle.detokenize(toks).startswith(b"A") and oracle.detokenize(toks).endswith(b"B")


def test_verify_batches_are_padded_to_a_cheaper_size_and_the_padding_leaves_the_cache(oracle, close_lm, far_lm):
    """A curve where 3 tokens cost more than 4: 3-token verify batches (pending + 2 drafted) run as 4, the
    output stays the oracle's greedy decoding, and the KV cache holds exactly the committed tokens."""
    curve = CostCurve([1, 2, 3, 4, 5], [0.04, 0.08, 0.12, 0.09, 0.12])
    sizes = []
    decode = oracle.decode
    oracle.decode = lambda batch, logits_at=None: sizes.append(len(batch)) or decode(batch, logits_at=logits_at)
    try:
        for lm in (close_lm, far_lm):  # mostly accepted, mostly rejected
            prompt = oracle.tokenize("the block row larva moth")
            ref = oracle_greedy(oracle, prompt, 30)
            oracle.reset()
            sizes.clear()
            eng = Engine(oracle, ModelDrafter(lm, oracle_vocab=oracle.n_vocab, p_min=0.0), curve=curve, adaptive=False)
            done = list(eng.generate(prompt, GenerationParams(max_tokens=30, d_max=2)))[-1]
            assert done.tokens == ref
            assert 4 in sizes and 3 not in sizes  # every 3-token batch was run as 4
            assert oracle.tokens == prompt + done.tokens[:-1]  # the last token is pending; no padding left
    finally:
        oracle.decode = decode
