"""What a Generator carries between processes: the draft policy's learned estimates, and prompts as
llama-cpp-python tokenizes them."""

from __future__ import annotations

import json
import signal

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
