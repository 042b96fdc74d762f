"""What a Generator carries between processes: the draft policy's learned estimates, and prompts as
llama-cpp-python tokenizes them."""

from __future__ import annotations

import json
import signal

import pytest

from edgespec import calibrate, cli
from edgespec.api import open_generator


def _gen(tiny_oracle_path, **kw):
    return open_generator(oracle=str(tiny_oracle_path), drafter="lookup", n_ctx=512, n_threads=1,
                          power_mode="performance", **kw)


def test_a_new_generator_starts_from_what_the_last_one_learned(tiny_oracle_path, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESPEC_POLICY_DIR", str(tmp_path))
    first = _gen(tiny_oracle_path)
    try:
        assert not first.policy_warm
        prompt = first.raw_prompt("a b a b a b a b a b a b a b a b a b")
        list(first.stream(prompt, first.generation_params(max_tokens=24)))
        learned = first.engine.policy.to_state()
    finally:
        first.close()
    saved = list(tmp_path.glob("*.json"))
    assert len(saved) == 1 and calibrate.cpu_fingerprint() in saved[0].name and "lookup" in saved[0].name
    assert learned["estimates"] or learned["draft_cost"]  # the report taught it something to keep
    second = _gen(tiny_oracle_path)
    try:
        assert second.policy_warm
        assert second.engine.policy.to_state() == learned
    finally:
        second.close()
    cold = _gen(tiny_oracle_path, persist_policy=False)
    try:
        assert not cold.policy_warm and cold.engine.policy.to_state() != learned
    finally:
        cold.close()


def test_a_damaged_state_file_starts_cold(tiny_oracle_path, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESPEC_POLICY_DIR", str(tmp_path))
    gen = _gen(tiny_oracle_path)
    path = calibrate.policy_state_path(str(gen.oracle_path), gen.oracle.n_threads, gen._policy_key())
    gen.close()
    path.write_text('{"version": 1, "estimates": {"lookup:16+": {"acc": "x"}}')
    gen = _gen(tiny_oracle_path)
    try:
        assert not gen.policy_warm
    finally:
        gen.close()


def test_prompt_special_tokens_are_parsed_unless_literal(tiny_oracle_path, capsys):
    gen = _gen(tiny_oracle_path, persist_policy=False)
    try:
        text = "<|im_start|>user\nrow 4<|im_end|>\n"
        parsed, literal = gen.raw_prompt(text), gen.raw_prompt(text, special=False)
        im_start = gen.oracle.tokenize("<|im_start|>", add_bos=False, special=True)
        assert len(im_start) == 1 and im_start[0] in parsed and im_start[0] not in literal
        assert len(literal) > len(parsed)
    finally:
        gen.close()
    outs = []
    handler = signal.getsignal(signal.SIGINT)
    for extra in ([], ["--literal-prompt"]):
        rc = cli.main(["generate", "--prompt", text, "--oracle", str(tiny_oracle_path), "--drafter", "none",
                       "--max-tokens", "2", "--threads", "1", "--n-ctx", "512", "--json", *extra])
        assert rc == 0
        outs.append(json.loads(capsys.readouterr().out)["stats"]["prompt_tokens"])
    assert outs == [len(parsed), len(literal)]
    assert signal.getsignal(signal.SIGINT) is handler  # the CLI's Ctrl-C handler does not outlive the report


def test_a_curve_measured_over_fewer_sizes_is_measured_again(tiny_oracle_path, tmp_path, monkeypatch):
    """A cached curve that stops short of a forced batch would be extrapolated there: it is re-measured once."""
    from edgespec.llama import LlamaModel

    monkeypatch.setenv("EDGESPEC_CALIBRATION_DIR", str(tmp_path))
    m = LlamaModel(str(tiny_oracle_path), n_ctx=512, n_threads=1)
    try:
        path = calibrate._cache_path(m.path, m.n_threads)
        path.write_text(json.dumps({"sizes": [1, 2, 17], "seconds": [0.5, 0.6, 0.9]}))
        curve = calibrate.load_or_measure(m)
        assert max(curve.sizes) == max(calibrate.SIZES) and curve.t(1) < 0.5  # measured, not the stale file
        assert json.loads(path.read_text())["sizes"] == list(calibrate.SIZES)
        assert calibrate.load_or_measure(m).seconds == curve.seconds  # and then read from the cache
    finally:
        m.close()


def test_the_cascade_loads_its_model_drafter_only_when_the_policy_first_drafts_from_it(
        tiny_oracle_path, tiny_other_vocab_path, tiny_drafter_close_path):
    from edgespec.drafters.ondemand import OnDemandDrafter

    kw = dict(oracle=str(tiny_oracle_path), drafter="cascade", n_ctx=512, n_threads=1, power_mode="performance",
              history_db=":memory:")
    for draft_model, kind in ((tiny_other_vocab_path, "bridge"), (tiny_drafter_close_path, "model")):
        gen = open_generator(draft_model=str(draft_model), **kw)
        try:
            lazy = gen.drafter.sources[-1]
            assert isinstance(lazy, OnDemandDrafter) and lazy.name == kind and not lazy.loaded
            assert gen._policy_key() == f"cascade-{draft_model.name}"  # the saved estimates price the model it would run
            prompt = gen.raw_prompt("a b a b a b")
            lazy.begin(prompt)
            draft = lazy.propose(prompt, 4)  # what the cascade's take() does when the policy picks it
            assert lazy.loaded and draft.source == kind and draft.passes >= 1 and len(draft.tokens) <= 4  # the model ran
        finally:
            gen.close()


# --------------------------------------------------------------------------- the prompt's KV cache on disk


def _batches(model) -> list[int]:
    """The size of every batch ``model`` decodes from now on."""
    sizes, decode = [], model.decode

    def counted(tokens, logits_at=None):
        sizes.append(len(tokens))
        return decode(tokens, logits_at)

    model.decode = counted
    return sizes


def _exact(path):
    from edgespec.llama import LlamaModel

    return LlamaModel(path, n_ctx=256, n_threads=1, kv_f32=True)  # batch-invariant: logits compare exactly


def _prompts(model):
    shared = model.tokenize("a b a b c a b a b c a b a b c", add_bos=False)
    return shared + model.tokenize(" c c a", add_bos=False), shared + model.tokenize(" b b c b", add_bos=False)


def test_a_saved_prompt_cache_skips_the_shared_prefix_with_the_same_logits(tiny_oracle_path, tmp_path, monkeypatch):
    import numpy as np

    from edgespec import prompt_state

    monkeypatch.setenv("EDGESPEC_PROMPT_CACHE_DIR", str(tmp_path))
    first = _exact(tiny_oracle_path)
    p1, p2 = _prompts(first)
    shared = next(i for i, (a, b) in enumerate(zip(p1, p2)) if a != b)
    first.sync(p1 + first.tokenize(" a b", add_bos=False))  # a prompt and some output: only the prompt is kept
    assert prompt_state.save(first, len(p1)) and first.tokens == p1
    first.close()
    second = _exact(tiny_oracle_path)
    sizes = _batches(second)
    assert prompt_state.load(second) == len(p1) and second.tokens == p1
    warm = second.sync(p2)
    assert sizes == [len(p2) - shared]  # only what follows the common prefix is evaluated
    cold = _exact(tiny_oracle_path)
    np.testing.assert_allclose(warm, cold.sync(p2), atol=1e-4)
    for m in (second, cold):
        m.close()


def _corrupt(path, how, model):
    from edgespec import prompt_state

    raw = path.read_bytes()
    if how == "flipped byte":
        path.write_bytes(raw[:-7] + bytes([raw[-7] ^ 0xFF]) + raw[-6:])
    elif how == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif how == "not a cache file":
        path.write_bytes(b"PK\x03\x04" + raw[4:])
    elif how == "token outside the vocabulary":  # a well-formed file: only its content is wrong
        prompt_state.write(model, [model.n_vocab + 5], b"\x00" * 64)
    elif how == "kv bytes llama.cpp refuses":
        prompt_state.write(model, [1, 2, 3], b"\x07" * 64)



@pytest.mark.parametrize("how", ["flipped byte", "truncated", "not a cache file", "token outside the vocabulary",
                                 "kv bytes llama.cpp refuses", "another model's file"])
def test_a_damaged_or_foreign_prompt_cache_is_ignored(how, tiny_oracle_path, tiny_drafter_path, tmp_path, monkeypatch):
    from edgespec import prompt_state

    monkeypatch.setenv("EDGESPEC_PROMPT_CACHE_DIR", str(tmp_path))
    model = _exact(tiny_oracle_path)
    p1, _ = _prompts(model)
    model.sync(p1)
    want = model.sync(p1 + [p1[0]])
    model.reset()
    path = prompt_state.state_path(model)
    if how == "another model's file":
        other = _exact(tiny_drafter_path)
        other.sync(other.tokenize("a b a b", add_bos=False))
        prompt_state.save(other, len(other.tokens))
        prompt_state.state_path(other).replace(path)
        other.close()
    else:
        model.sync(p1)
        assert prompt_state.save(model, len(p1))
        model.reset()
        _corrupt(path, how, model)
    assert prompt_state.load(model) == 0 and model.tokens == []
    got = model.sync(p1 + [p1[0]])  # the model works as if nothing had been saved
    assert abs(got - want).max() < 1e-4
    model.close()


def test_a_new_generator_starts_from_the_last_prompt_cache(tiny_oracle_path, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESPEC_PROMPT_CACHE", "1")
    monkeypatch.setenv("EDGESPEC_PROMPT_CACHE_DIR", str(tmp_path))
    runs = []
    for cache in (True, True, False):
        gen = _gen(tiny_oracle_path, persist_policy=False, prompt_cache=cache)
        try:
            prompt = gen.raw_prompt("a b a b c a b a b c a b a b c b b a")
            sizes = _batches(gen.oracle)
            done = list(gen.stream(prompt, gen.generation_params(max_tokens=12)))[-1]
            runs.append((gen.prompt_tokens_restored, sizes[0], done.tokens, len(prompt)))
        finally:
            gen.close()
    (r1, b1, t1, n), (r2, b2, t2, _), (r3, b3, t3, _) = runs
    saved = list(tmp_path.glob("*.kv"))
    assert len(saved) == 1 and saved[0].stat().st_mode & 0o777 == 0o600  # it holds the latest prompt's text
    assert (r1, b1) == (0, n)  # nothing saved yet: the whole prompt is evaluated
    assert (r2, b2) == (n, 1)  # the next process restores it and evaluates only the last prompt token again
    assert (r3, b3) == (0, n)  # prompt_cache=False ignores the file
    assert t2 == t1 == t3


def test_the_prompt_cache_is_written_once_for_one_prompt(tiny_oracle_path, tmp_path, monkeypatch):
    """A regenerated report (same prompt) does not rewrite the megabytes of its cache; a new prompt does."""
    from edgespec import prompt_state

    monkeypatch.setenv("EDGESPEC_PROMPT_CACHE", "1")
    monkeypatch.setenv("EDGESPEC_PROMPT_CACHE_DIR", str(tmp_path))
    writes = []
    real = prompt_state.write
    monkeypatch.setattr(prompt_state, "write", lambda model, tokens, data: writes.append(list(tokens)) or real(model, tokens, data))
    gen = _gen(tiny_oracle_path, persist_policy=False)
    try:
        a, b = gen.raw_prompt("a b a b c a b"), gen.raw_prompt("c b a c b a b b")
        for prompt in (a, a, b, b, a):
            list(gen.stream(prompt, gen.generation_params(max_tokens=6)))
    finally:
        gen.close()
    assert writes == [a, b, a]
    gen = _gen(tiny_oracle_path, persist_policy=False)  # a new process restores a and does not write it back
    try:
        list(gen.stream(a, gen.generation_params(max_tokens=6)))
        assert gen.prompt_tokens_restored == len(a)
    finally:
        gen.close()
    assert writes == [a, b, a]
