"""Critical spans stay oracle-verified in every power mode, asserted from the engine's provenance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgespec.acceptance import validate_sampling
from edgespec.drafters.model import ModelDrafter
from edgespec.engine import Engine, GenerationParams
from edgespec.llama import LlamaModel
from edgespec.cost import CostCurve
from edgespec.spans import audit
from edgespec.testing.replay import HindsightDrafter, ReplayOracle, VirtualClock
from vineyard import fieldnote
from vineyard.spans import default_policy, find_spans

NOTES = sorted((Path(__file__).parents[1] / "vineyard" / "samples" / "notes").glob("*.json"))


@pytest.fixture(scope="module")
def pair(tiny_oracle_path, tiny_drafter_close_path):
    o = LlamaModel(tiny_oracle_path, n_ctx=512, n_threads=1, flash_attn=False, kv_f32=True)
    d = LlamaModel(tiny_drafter_close_path, n_ctx=512, n_threads=1, flash_attn=False, kv_f32=True)
    yield o, d
    o.close()
    d.close()


def test_relaxed_mode_never_leaves_a_critical_token_unverified(pair):
    """Tiny models write random bytes (digits, capitals, fragments): a hard test for the guard.
    Relaxation must really happen somewhere, and never inside a critical span."""
    oracle, dlm = pair
    unverified_total = 0
    for i, path in enumerate(NOTES):
        note = fieldnote.load(path)
        guard = default_policy(note)
        eng = Engine(oracle, ModelDrafter(dlm, oracle_vocab=oracle.n_vocab, p_min=0.0), curve=CostCurve.linear(0.01),
                     span_guard=guard, adaptive=False)
        prompt_text = f"Block {note['block']} {note['observations'][0]['pest']} the vine row"
        oracle.reset()
        params = GenerationParams(max_tokens=80, relax_unverified=True, d_max=6,
                                  sampling=validate_sampling(0.8, 0, 1.0, seed=i))
        done = list(eng.generate(oracle.tokenize(prompt_text), params))[-1]
        spans = find_spans(done.text, note)
        a = audit(spans, done.records, done.text)
        unverified_total += sum(not r.verified for r in done.records)
        for s in spans:
            for r in done.records:
                if r.start < s.end and r.end > s.start and r.text:
                    assert r.verified, (path.name, s, r, done.text)
        if any(r.start < s.end and r.end > s.start for s in spans for r in done.records):
            assert a.critical_verified_rate == 1.0
    assert unverified_total > 0, "relaxed mode never relaxed anything: the test would prove nothing"


def test_lossless_default_verifies_everything(pair):
    oracle, dlm = pair
    note = fieldnote.load(NOTES[0])
    eng = Engine(oracle, ModelDrafter(dlm, oracle_vocab=oracle.n_vocab, p_min=0.0), curve=CostCurve.linear(0.01),
                 span_guard=default_policy(note), adaptive=False)
    oracle.reset()
    done = list(eng.generate(oracle.tokenize("the vine row 12"), GenerationParams(max_tokens=60)))[-1]
    assert all(r.verified for r in done.records)
    a = audit(find_spans(done.text, note), done.records, done.text)
    assert a.other_verified_rate in (None, 1.0)


@pytest.mark.real
@pytest.mark.parametrize("mode", ["performance", "balanced", "saver", "critical"])
def test_real_reports_critical_spans_fully_verified_in_every_mode(mode):
    from vineyard.writer import open_writer

    gen = open_writer(drafter="cascade", power_mode=mode, allow_relaxed=True, history_db=":memory:")
    try:
        for path in NOTES[:2]:
            note = fieldnote.load(path)
            done = list(gen.stream_report(note, max_tokens=96, force=True))[-1]
            assert done.stats.power_mode == mode
            spans = find_spans(done.text, note)
            assert spans, "a report with no critical span at all proves nothing"
            a = audit(spans, done.records, done.text)
            assert a.critical_verified_rate == 1.0, (mode, path.name)
            rec = gen.report_record(done)
            json.dumps(rec)  # what fieldlog stores must serialise
            assert rec["policy"]["mode"] == mode
    finally:
        gen.close()


class _ByteOracle(ReplayOracle):
    """A replay oracle whose tokens are bytes (0..255), so a character can span two tokens."""

    def token_bytes(self, tok: int, special: bool = False) -> bytes:
        return b"" if self.is_eog(tok) else bytes([int(tok)])


def test_relaxed_gate_reads_a_character_split_across_tokens():
    """'T' then the two bytes of U+07C8 (an NKo digit, which regex \\d matches) make the block id 'T߈'.
    Decoded alone the second byte is U+FFFD, no digit: the gate must read it joined to the first."""
    clock = VirtualClock()
    oracle = _ByteOracle(CostCurve.linear(0.01), clock, n_vocab=257, eog=256)
    prompt = list(b"Scouted rows. ")
    continuation = list("Seen at T\u07c8 most of the time, the canopy looked fine today.".encode()) + [256]
    oracle.load(prompt, continuation)
    note = fieldnote.load(NOTES[0])
    for d_max in (1, 2, 3, 4, 6):
        eng = Engine(oracle, HindsightDrafter(oracle), curve=CostCurve.linear(0.01), span_guard=default_policy(note),
                     adaptive=False, clock=clock)
        oracle.reset()
        params = GenerationParams(max_tokens=80, relax_unverified=True, d_max=d_max)
        done = list(eng.generate(prompt, params))[-1]
        assert done.text == bytes(continuation[:-1]).decode()
        spans = [s for s in find_spans(done.text, note) if s.kind == "location"]
        assert [s.value for s in spans] == ["T\u07c8"]
        for r in done.records:
            if r.start < spans[0].end and r.end > spans[0].start or (r.token >= 0x80 and not r.text):
                assert r.verified, (d_max, r)
        assert any(not r.verified for r in done.records), "nothing relaxed: the test would prove nothing"
