"""Strict greedy equivalence on the tiny F32 models (batch-invariant kernels) with the cheap drafters and the
cascade: the engine's text must be the oracle's own one-token-at-a-time greedy text. Uses the tiny-model
fixtures of tests/conftest.py; skipped where that fixture is not available."""

from __future__ import annotations

import random

import pytest

from edgespec.drafters.cascade import CascadeDrafter
from edgespec.drafters.history import HistoryDrafter
from edgespec.drafters.history_index import HistoryIndex
from edgespec.drafters.lookup import PromptLookupDrafter
from edgespec.cost import CostCurve
from edgespec.testing.reference import oracle_greedy


def _fixture(request, name):
    try:
        return request.getfixturevalue(name)
    except pytest.FixtureLookupError:
        pytest.skip(f"fixture {name} is not available")


ENGINE_WORDS = "the vine leaf moth mite row block larva cluster spray rain dry scout count damage edge wood".split()


@pytest.fixture(scope="module")
def tiny_pair(request):
    from edgespec.llama import LlamaModel

    oracle_path = _fixture(request, "tiny_oracle_path")
    oracle = LlamaModel(oracle_path, n_ctx=512, n_threads=1, flash_attn=False, kv_f32=True)
    yield oracle, request
    oracle.close()


def _engine_tokens(oracle, drafter, prompt: list[int], max_tokens: int, engine=None):
    from edgespec.engine import Engine, GenerationParams
    from edgespec.events import Done

    oracle.reset()
    eng = engine or Engine(oracle, drafter, curve=CostCurve.linear(0.01), adaptive=False)
    done = list(eng.generate(list(prompt), GenerationParams(max_tokens=max_tokens)))[-1]
    assert isinstance(done, Done)
    return done


def _prompts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(ENGINE_WORDS) for _ in range(rng.randint(2, 12))) for _ in range(n)]


def _seeded_history(oracle, n_reports: int = 6):
    """A history of the oracle's own continuations (drafts get accepted) plus unrelated text (they get rejected)."""
    tokenize = lambda s: oracle.tokenize(s, add_bos=False, special=False)  # noqa: E731
    idx = HistoryIndex(":memory:", seed_templates=False)
    for text in _prompts(n_reports, seed=11):
        toks = tokenize(text)
        cont = oracle_greedy(oracle, toks, 48)
        idx.add_report(text + oracle.detokenize(cont, special=False).decode("utf-8", "replace"))
    for text in _prompts(n_reports, seed=12):
        idx.add_report(text + " " + text)
    return idx, tokenize


def test_engine_greedy_identical_with_history_and_lookup(tiny_pair):
    oracle, _request = tiny_pair
    idx, tokenize = _seeded_history(oracle)
    hist = HistoryDrafter(idx, tokenize, oracle.vocab_fingerprint(), k_max=8, min_match=1)
    look = PromptLookupDrafter(min_match=1, max_match=8)
    accepted = 0
    # prompts that overlap the history (long matches) and fresh ones (short or none)
    for text in _prompts(6, seed=11)[:3] + _prompts(10, seed=5):
        prompt = oracle.tokenize(text)
        ref = oracle_greedy(oracle, prompt, 40)
        for drafter in (hist, look):
            done = _engine_tokens(oracle, drafter, prompt, 40)
            assert done.tokens == ref, f"{drafter.name} diverged on {text!r}"
            accepted += done.stats.accepted_tokens
    assert accepted > 0  # the drafters were really exercised, not silently empty
    idx.close()


def test_engine_greedy_identical_with_cascade(tiny_pair):
    from edgespec.drafters.model import ModelDrafter
    from edgespec.engine import Engine
    from edgespec.llama import LlamaModel

    oracle, request = tiny_pair
    drafter_path = _fixture(request, "tiny_drafter_close_path")
    idx, tokenize = _seeded_history(oracle)
    with LlamaModel(drafter_path, n_ctx=512, n_threads=1, flash_attn=False, kv_f32=True) as lm:
        model = ModelDrafter(lm, oracle_vocab=oracle.n_vocab)
        model.close = lambda: None  # the `with` block owns the model
        cascade = CascadeDrafter(
            [HistoryDrafter(idx, tokenize, oracle.vocab_fingerprint(), min_match=1), PromptLookupDrafter(1, 8), model],
        )
        # verifying extra tokens is cheap: drafting pays; one engine, so what its policy learns carries over
        eng = Engine(oracle, cascade, curve=CostCurve.linear(0.001, fixed=0.01), adaptive=False)
        used: set[str] = set()
        for text in _prompts(6, seed=11)[:2] + _prompts(8, seed=21):
            prompt = oracle.tokenize(text)
            ref = oracle_greedy(oracle, prompt, 40)
            done = _engine_tokens(oracle, cascade, prompt, 40, engine=eng)
            assert done.tokens == ref, f"cascade diverged on {text!r}"
            used |= {k for k, v in cascade.chosen.items() if v}
        print("cascade drafts per source:", cascade.chosen)
        assert used  # at least one source drafted
    idx.close()
