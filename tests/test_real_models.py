"""Real catalog models (fetched from PyPI packages): greedy equivalence under the near-tie rule.

On quantized models llama.cpp's CPU kernels are not batch-invariant, so the
speculative text may part from one-token-at-a-time decoding, but only at a
near-tie: at the first divergence both tokens' logits must be within 0.25 of the
oracle's best in one-token-at-a-time decoding (normally its top two). The
identical rate is printed (pytest -s shows it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgespec.acceptance import tied_tokens, top2_gap
from edgespec.engine import Engine, GenerationParams
from edgespec.llama import LlamaModel, render_chat
from edgespec.cost import CostCurve
from edgespec.testing.reference import oracle_greedy
from vineyard import fieldnote
from vineyard.prompt import report_messages

pytestmark = pytest.mark.real
NEAR_TIE = 0.25
NOTES = sorted((Path(__file__).parents[1] / "vineyard" / "samples" / "notes").glob("*.json"))[:4]
MAX_TOKENS = 64


@pytest.fixture(scope="module")
def real_paths():
    from edgespec.api import resolve

    return {
        "oracle": resolve("qwen2.5-coder-0.5b-instruct", fetch=True),
        "smollm2": resolve("smollm2-135m-instruct", fetch=True),
        "q4_0": resolve("qwen2.5-coder-0.5b-instruct-q4_0", fetch=True),
    }


@pytest.fixture(scope="module")
def oracle(real_paths):
    m = LlamaModel(real_paths["oracle"], n_ctx=2048, n_threads=2)
    yield m
    m.close()


def check_near_tie(ref, ref_logits, got):
    for i, (a, b) in enumerate(zip(ref, got)):
        if a != b:
            lg = ref_logits[i]
            assert {a, b} <= tied_tokens(lg, NEAR_TIE), (
                f"divergence at {i}: token {b} is {float(lg.max() - lg[b]):.3f} logits below the oracle's best "
                f"(tolerance {NEAR_TIE}, top-2 gap {top2_gap(lg):.3f})")
            return False
    assert len(ref) == len(got) or len(got) == MAX_TOKENS
    return True


@pytest.mark.parametrize("kind", ["bridge", "lookup", "model-q4_0"])
def test_real_pair_greedy_identical_or_near_tie(oracle, real_paths, kind, capsys):
    from edgespec.drafters.bridge import BridgeDrafter
    from edgespec.drafters.lookup import PromptLookupDrafter
    from edgespec.drafters.model import ModelDrafter

    if kind == "bridge":
        lm = LlamaModel(real_paths["smollm2"], n_ctx=2048, n_threads=2)
        drafter = BridgeDrafter(lm, oracle)
    elif kind == "model-q4_0":
        lm = LlamaModel(real_paths["q4_0"], n_ctx=2048, n_threads=2)
        drafter = ModelDrafter(lm, oracle_vocab=oracle.n_vocab)
    else:
        lm = None
        drafter = PromptLookupDrafter()
    identical = 0
    drafted = 0
    for path in NOTES:
        note = fieldnote.load(path)
        prompt = oracle.tokenize(render_chat(oracle, report_messages(note)), special=True)
        ref, ref_logits = oracle_greedy(oracle, prompt, MAX_TOKENS, keep_logits=True)
        oracle.reset()
        # adaptive=False forces drafting on every step so verification is exercised hard
        eng = Engine(oracle, drafter, curve=CostCurve.linear(0.02), adaptive=False)
        done = list(eng.generate(prompt, GenerationParams(max_tokens=MAX_TOKENS, d_max=6)))[-1]
        drafted += done.stats.drafted_tokens
        identical += check_near_tie(ref, ref_logits, done.tokens)
    with capsys.disabled():
        print(f"\n[real:{kind}] identical {identical}/{len(NOTES)} reports, others part at a near-tie; drafted {drafted} tokens")
    if kind != "lookup":
        assert drafted > 0
    if lm is not None:
        lm.close()


def test_real_incompatible_same_vocab_pair_is_refused(real_paths):
    from edgespec import IncompatibleModelsError
    from edgespec.api import open_generator

    with pytest.raises(IncompatibleModelsError, match="bridge"):
        open_generator(oracle=str(real_paths["oracle"]), drafter="model", draft_model=str(real_paths["smollm2"]))


@pytest.mark.xfail(strict=False, reason=(
    "known: on this machine's build the recorded a2-leafhopper report replays at 0.944x (< 0.97) with prompt "
    "lookup: four 10-15 token drafts from fresh lookup:<12/<16 buckets are refused at the first token; the same "
    "figure on main before this change (0b17e53). Open in issue 13 (a losing source turns off within the report)"))
def test_policy_on_real_reports_replayed_never_loses_much(oracle):
    """The engine + prompt lookup replayed against the oracle's own greedy reports on a virtual clock
    charged with a Qwen2.5-Coder-0.5B-like curve (2 tokens 2.4x one): the text is the recording and
    no report comes out more than 3% slower than plain decoding, while some drafting happens."""
    from edgespec.drafters.lookup import PromptLookupDrafter
    from edgespec.testing.replay import ReplayOracle, VirtualClock, replay

    curve = CostCurve([1, 2, 4, 8, 16, 17], [0.017, 0.040, 0.053, 0.070, 0.083, 0.102])
    clock = VirtualClock()
    fake = ReplayOracle(curve, clock, n_vocab=oracle.n_vocab, eog=oracle.eos_token())
    engine = Engine(fake, PromptLookupDrafter(), curve=curve, clock=clock)
    drafted = 0
    for path in NOTES[:3]:
        prompt = oracle.tokenize(render_chat(oracle, report_messages(fieldnote.load(path))), special=True)
        ref = oracle_greedy(oracle, prompt, 160)
        res = replay(engine, fake, prompt, ref)
        assert res.tokens == ref
        assert res.speedup >= 0.97, (path.name, res.speedup)
        drafted += res.drafted
    assert drafted > 0
