"""Grammar constraints through llguidance (edgespec/constraints.py) on the tiny GGUF vocabularies."""

import numpy as np
import pytest

from edgespec.drafters.base import Draft
from edgespec.engine import Engine, GenerationParams
from edgespec.cost import CostCurve
from edgespec.testing.reference import oracle_greedy_constrained
from edgespec.constraints import Constraint, ConstraintError, lark_literal, tokenizer_for
from edgespec.llama import LlamaModel
from edgespec.masks import masked_argmax, masked_greedy_accept, verify_batch

LITERAL = "Block B4, row 12: the leafhopper\n"
# a fixed line (rendered from data), a bounded free part, then a choice with a fixed tail
REPORT = (
    'start: "Block B4, row 12: the leafhopper\\n" note "\\nRisk: " level "\\n"\n'
    "note: /[a-z ]{1,12}/\n"
    'level: "low" | "moderate" | "high"\n'
)


@pytest.fixture(scope="module")
def vocab(tiny_oracle_path):
    """The tiny oracle's vocabulary (vocab a) without weights."""
    m = LlamaModel(tiny_oracle_path, vocab_only=True)
    yield m
    m.close()


@pytest.fixture(scope="module")
def report():
    """The report grammar, checked once."""
    return Constraint.lark(REPORT)


def token_chars(model, tokens):
    return [model.detokenize([t]).decode() for t in tokens]


# --------------------------------------------------------------------------- building constraints


def test_invalid_grammars_are_clear_errors():
    with pytest.raises(ConstraintError, match="unknown name"):
        Constraint.lark("start: no_such_rule")
    with pytest.raises(ConstraintError):
        Constraint.lark("   ")
    with pytest.raises(ConstraintError, match="not valid JSON"):
        Constraint.json_schema('{"type": ')
    with pytest.raises(ConstraintError, match="frob"):
        Constraint.json_schema({"type": "frob"})
    for not_object in ([1, 2], True):
        with pytest.raises(ConstraintError, match="must be an object"):
            Constraint.json_schema(not_object)
    with pytest.raises(ConstraintError, match="unclosed character class"):
        Constraint.json_schema({"type": "string", "pattern": "(["})
    with pytest.raises(ConstraintError):
        Constraint.regex("(unclosed")
    assert Constraint.json_schema('{"type": "integer"}').kind == "json_schema"


# --------------------------------------------------------------------------- the matcher on a real vocabulary


def test_forced_tokens_cover_exactly_the_literal(vocab, report):
    gm = report.matcher(vocab)
    forced = gm.forced()
    assert forced == vocab.tokenize(LITERAL)
    assert vocab.detokenize(forced).decode() == LITERAL
    gm.consume(forced)
    assert gm.n_consumed == len(forced)
    assert gm.forced() == []  # the free part: the oracle chooses
    mask = gm.mask()
    assert mask.shape == (vocab.n_vocab,)
    allowed = set(np.flatnonzero(mask).tolist())
    pieces = {t: vocab.detokenize([t]) for t in allowed}
    assert all(p and all(c in b"abcdefghijklmnopqrstuvwxyz " for c in p) for p in pieces.values())
    assert set(vocab.tokenize("the")) <= allowed and vocab.tokenize(" row")[0] in allowed
    assert not gm.is_accepting() and not set(vocab.eog_tokens()) & allowed


def test_a_draft_leaving_the_grammar_is_cut_at_the_refused_token(vocab, report):
    gm = report.matcher(vocab)
    gm.consume(gm.forced())
    draft = vocab.tokenize("the vines\nRisk: hug")
    pieces = token_chars(vocab, draft)
    # the first token carrying the "u" of "hug" leaves the grammar ("high" is the only h-word)
    cut = next(i for i, p in enumerate(pieces) if "u" in p)
    before = gm.mask()
    assert gm.allowed_prefix(draft) == cut
    n_ok, rows = gm.draft_masks(draft)
    assert n_ok == cut and rows.shape == (len(draft) + 1, vocab.n_vocab)
    for i in range(cut):
        assert rows[i, draft[i]]
    assert not rows[cut, draft[cut]] and rows[cut].any()
    assert not rows[cut + 1:].any()
    # the lazy masks give the same rows and leave the state as it was
    with gm.along(draft) as lazy:
        assert lazy.n_allowed == cut
        for i in range(cut + 1):
            np.testing.assert_array_equal(lazy[i], rows[i])
        with pytest.raises(ConstraintError):
            lazy[cut + 1]
    assert gm.n_consumed == len(vocab.tokenize(LITERAL))
    np.testing.assert_array_equal(gm.mask(), before)


def test_rollback_restores_mask_and_forced_tokens(vocab, report):
    gm = report.matcher(vocab)
    text = vocab.tokenize(LITERAL + "the vines\nRisk: m")
    seen = []
    for t in text:
        seen.append((gm.mask(), gm.forced()))
        gm.consume([t])
    assert gm.forced() == vocab.tokenize("oderate\n")  # "m" leaves one way to go
    for keep in (len(text) - 1, len(text) - 4, 3, 0):
        gm.rollback(gm.n_consumed - keep)
        mask, forced = seen[keep]
        np.testing.assert_array_equal(gm.mask(), mask)
        assert gm.forced() == forced
        gm.consume(text[keep:])
    gm.reset()
    assert gm.forced() == vocab.tokenize(LITERAL)
    with pytest.raises(ConstraintError, match="roll back"):
        gm.rollback(1)


def test_a_refused_token_commits_nothing(vocab, report):
    gm = report.matcher(vocab)
    lit = vocab.tokenize(LITERAL)
    gm.consume(lit)
    before = gm.mask()
    bad = vocab.tokenize("ab") + vocab.tokenize("Q")
    with pytest.raises(ConstraintError, match="does not allow"):
        gm.consume(bad)
    with pytest.raises(ConstraintError):
        gm.consume([vocab.n_vocab + 5])  # an id past the vocabulary: an error, not a broken matcher
    assert gm.n_consumed == len(lit)
    np.testing.assert_array_equal(gm.mask(), before)
    assert not gm.allows(vocab.n_vocab + 5) and gm.allowed_prefix([vocab.n_vocab + 5]) == 0


def test_stopped_and_accepting_states(vocab):
    eog = vocab.eog_tokens()
    closed = Constraint.lark('start: "ab" ("c" | "d")').matcher(vocab)
    closed.consume(vocab.tokenize("abc"))
    assert closed.is_stopped() and closed.is_accepting()
    assert set(np.flatnonzero(closed.mask()).tolist()) == set(eog)  # only the end is left
    assert closed.allows(eog[0]) and not closed.allows(vocab.tokenize("d")[0])
    assert closed.allowed_prefix([eog[0], eog[0]]) == 1
    with pytest.raises(ConstraintError, match="follow the end"):
        closed.consume([eog[0], eog[0]])
    assert closed.consume([eog[0]]) == 0  # allowed, nothing left to advance
    open_ = Constraint.lark('start: "ab" /[a-z]*/').matcher(vocab)
    open_.consume(vocab.tokenize("ab"))
    assert open_.is_accepting() and not open_.is_stopped()
    assert set(eog) <= set(np.flatnonzero(open_.mask()).tolist())
    # a draft may end the output: its end token counts as allowed, and the row after it allows only the end
    draft = vocab.tokenize("cd") + [eog[0]]
    n_ok, rows = open_.draft_masks(draft)
    assert n_ok == 3 and set(np.flatnonzero(rows[3]).tolist()) == set(eog)
    with open_.along(draft) as lazy:
        np.testing.assert_array_equal(lazy[3], rows[3])
    assert open_.n_consumed == 2 and not open_.is_stopped()


@pytest.mark.parametrize("text", ['say "hi" \\ there\n\ttab', "Blattzikade – Äpfel ✓ 🍇", "del\x7fctl\x01end"])
def test_lark_literal_matches_exactly_its_text(vocab, text):
    gm = Constraint.lark("start: " + lark_literal(text)).matcher(vocab)
    assert vocab.detokenize(gm.forced()) == text.encode()
    with pytest.raises(ConstraintError):
        lark_literal("bad \ud800 surrogate")


def test_json_schema_forces_its_keys(vocab):
    c = Constraint.json_schema({"type": "object", "properties": {"risk": {"enum": ["low", "high"]}},
                                "required": ["risk"], "additionalProperties": False})
    gm = c.matcher(vocab)
    forced = gm.forced()
    assert vocab.detokenize(forced).decode() == '{"risk":"'
    gm.consume(forced)
    gm.consume(vocab.tokenize("h"))
    assert vocab.detokenize(gm.forced()).decode() == 'igh"}'


def test_tokenizer_is_cached_per_vocabulary_and_outlives_the_model(tiny_oracle_path, tiny_drafter_path,
                                                                    tiny_other_vocab_path):
    a1 = LlamaModel(tiny_oracle_path, vocab_only=True)
    a2 = LlamaModel(tiny_drafter_path, vocab_only=True)  # another model, the same vocabulary
    b = LlamaModel(tiny_other_vocab_path, vocab_only=True)
    tok = tokenizer_for(a1)
    assert tokenizer_for(a2) is tok
    assert tokenizer_for(b) is not tok
    expect, n_vocab = a1.tokenize(LITERAL), a1.n_vocab
    a1.close()
    a2.close()
    with pytest.raises(Exception):
        a1.vocab_handle()
    # forced tokens call llama.cpp's tokenizer: the cache's own vocabulary copy is still there
    gm = Constraint.lark(REPORT).matcher(tokenizer=tok, n_vocab=n_vocab)
    assert gm.forced() == expect
    b.close()


def test_mask_width_follows_the_oracle_not_the_tokenizer(vocab, report):
    wide = report.matcher(tokenizer=tokenizer_for(vocab), n_vocab=vocab.n_vocab + 40)
    narrow = report.matcher(vocab)
    wide.consume(wide.forced())
    narrow.consume(narrow.forced())
    mw, mn = wide.mask(), narrow.mask()
    assert mw.shape == (vocab.n_vocab + 40,) and not mw[vocab.n_vocab:].any()
    np.testing.assert_array_equal(mw[: vocab.n_vocab], mn)


# --------------------------------------------------------------------------- the loop, as an engine would run it


def test_plan_splices_forced_runs_into_the_draft(vocab, report):
    gm = report.matcher(vocab)
    gm.consume(vocab.tokenize(LITERAL + "the vines"))
    before = gm.n_consumed
    draft = vocab.tokenize("\nRisk: high\n")
    plan = gm.plan(draft, 32)
    assert plan.tokens == draft
    kinds = "".join("f" if f else "d" for f in plan.forced)
    # "\n" is the oracle's choice (the note could go on), "Risk:" is fixed, " h" chosen, "igh\n" fixed, then the end
    assert kinds == "d" + "f" * 5 + "dd" + "f" * 4 + "f"
    assert plan.from_draft[:2] == [0, None] and plan.from_draft[6:8] == [6, 7]
    assert (plan.n_forced, plan.n_drafted) == (9, 3)
    # a drafter that wrote other text across the forced run is dropped after it
    plan = gm.plan(vocab.tokenize("\nRusk: high\n"), 32)
    assert plan.tokens == vocab.tokenize("\nRisk:") and plan.forced[-1] is False
    # the budget cuts anywhere, a forced run included; the position after the cut is then forced
    plan = gm.plan(draft, 3)
    assert plan.tokens == draft[:3] and plan.forced == [False, True, True, True]
    assert gm.n_consumed == before


@pytest.fixture(scope="module")
def q8_oracle(tiny_gguf):
    """A Q8_0 tiny oracle with an F32 cache: one-token and batched logits agree bit for bit."""
    m = LlamaModel(tiny_gguf(vocab="a", seed=1, dtype="q8_0"), n_ctx=512, flash_attn=False, kv_f32=True)
    yield m
    m.close()


def test_engine_gives_the_oracles_constrained_greedy_output(q8_oracle, report):
    m = q8_oracle
    prompt = m.tokenize("<|im_start|>user\nscout block B4<|im_end|>\n<|im_start|>assistant\n")
    ref = oracle_greedy_constrained(m, report, prompt, 80)
    text = m.detokenize(ref).decode()
    assert text.startswith(LITERAL) and "\nRisk: " in text
    checker = report.matcher(m)
    checker.consume(ref)
    assert checker.is_stopped()  # the grammar ran to its end within the budget
    wrong_allowed, wrong_refused = m.tokenize("q")[0], m.tokenize("Q")[0]

    class Spoilt:
        """Drafts the reference continuation, spoilt every fourth position (alternately refused and merely wrong)."""

        name, cheap, multi_candidate = "spoilt", True, False

        def begin(self, prompt_tokens):
            self.n_prompt = len(prompt_tokens)

        def propose(self, context, max_tokens, *, sample=None):
            out = []
            for pos in range(len(context) - self.n_prompt, min(len(context) - self.n_prompt + max_tokens, len(ref))):
                t = ref[pos]
                if pos % 4 == 3:
                    t = wrong_refused if pos % 8 == 3 else (wrong_allowed if t != wrong_allowed else wrong_refused)
                out.append(t)
            return Draft(out, source="spoilt", match_len=None)

        def accepted(self, context, n_accepted, n_drafted):
            pass

        def close(self):
            pass

    n_lit = len(m.tokenize(LITERAL))
    for drafter in (Spoilt(), None):
        m.reset()
        eng = Engine(m, drafter, curve=CostCurve.linear(0.001, fixed=0.01), adaptive=False)
        done = list(eng.generate(prompt, GenerationParams(max_tokens=80, d_max=6), constraint=report))[-1]
        assert done.tokens == ref
        source = [r.source for r in done.records]
        assert source[:n_lit] == ["data"] * n_lit  # the rendered line went in unsampled
        assert done.stats.forced_tokens >= n_lit
        if drafter is not None:
            assert "drafted" in source and "corrected" in source
            assert done.stats.oracle_passes < len(ref) - n_lit  # the literal cost one pass, drafts saved more


def test_a_forced_run_longer_than_the_context_left_stops_the_report_instead_of_overflowing(q8_oracle):
    m = q8_oracle
    prompt = m.tokenize("<|im_start|>user\nscout block B4<|im_end|>\n<|im_start|>assistant\n")
    line = "- grape berry moth (larva): 4 of 50 clusters infested (8%).\n" * 16  # far longer than the room left
    room = 24
    prompt = prompt + (m.tokenize(" x") * m.n_ctx)[:m.n_ctx - len(prompt) - room]
    m.reset()
    eng = Engine(m, None, curve=CostCurve.linear(0.001, fixed=0.01), adaptive=False)
    done = list(eng.generate(prompt, GenerationParams(max_tokens=400), constraint=Constraint.lark(
        "start: /[a-z]{2,4}/ " + lark_literal(line))))[-1]  # the model writes a word, then the line is forced
    assert done.stats.stop_reason == "context" and len(prompt) + len(done.tokens) <= m.n_ctx
    word = done.text[:len(done.text) - len(done.text.lstrip("abcdefghijklmnopqrstuvwxyz"))]
    assert 2 <= len(word) and line.startswith(done.text[len(word):]) and len(done.tokens) >= room - 1


# --------------------------------------------------------------------------- the shipped oracle


@pytest.mark.real
@pytest.mark.parametrize("line", [
    "- Grape leafhopper (Erythroneura elegantula): 12 of 50 leaves (24%), above the 10% threshold for mid-season (UC IPM)\n",
    "- Blattzikade (Empoasca vitis) – 3 of 20 leaves (15%), no published threshold\n",
])
def test_forced_tokens_of_a_rendered_line_on_the_shipped_oracle(line):
    from edgespec.model_cache import resolve_model

    m = LlamaModel(resolve_model("qwen2.5-coder-0.5b-instruct", fetch=True), vocab_only=True)
    try:
        gm = Constraint.lark("start: " + lark_literal(line) + " /[A-Z][a-z ]{0,40}/").matcher(m)
        forced = gm.forced()
        assert m.detokenize(forced).decode() == line
        assert forced == m.tokenize(line)  # the oracle's own tokenization of the line
        gm.consume(forced)
        mask = gm.mask()
        assert mask.shape == (m.n_vocab,)
        assert mask[m.tokenize("The")[0]] and not mask[m.tokenize("the")[0]]
        assert not mask[m.eos_token()]  # one capital letter at least before the end
    finally:
        m.close()


def test_replay_under_a_grammar_reproduces_the_constrained_decoding_and_batches_the_fixed_text(q8_oracle, report):
    """tools/simulate_drafting.py --schema: the engine against a recorded constrained decoding, on a virtual clock."""
    from edgespec.cost import CostCurve
    from edgespec.testing.replay import ReplayOracle, VirtualClock, replay

    m = q8_oracle
    prompt = m.tokenize("<|im_start|>user\nscout block B4<|im_end|>\n<|im_start|>assistant\n")
    ref = oracle_greedy_constrained(m, report, prompt, 80)
    curve = CostCurve.linear(per_token=0.004, fixed=0.012, max_n=64)
    clock = VirtualClock()
    fake = ReplayOracle(curve, clock, n_vocab=m.n_vocab, eog=m.eos_token(), vocabulary=m, overhead_s=0.0)
    res = replay(Engine(fake, None, curve=curve, clock=clock), fake, prompt, ref, constraint=report)
    assert res.tokens == ref
    # the fixed line goes into one verify batch: fewer passes than tokens, and cheaper than one at a time
    n_forced = len(m.tokenize(LITERAL, add_bos=False))
    assert fake.decode_calls < len(ref) - n_forced // 2
    assert res.seconds < res.plain_seconds
    # the hindsight bound under the grammar: perfect drafts beat oracle-only, a drafter that is always wrong is
    # never drafted from, so it costs exactly what oracle-only does
    from edgespec.testing.replay import HindsightDrafter

    perfect = replay(Engine(fake, HindsightDrafter(fake), curve=curve, clock=clock, adaptive=False), fake, prompt, ref,
                     constraint=report)
    assert perfect.tokens == ref and perfect.seconds < res.seconds

    class Wrong:
        name, cheap, multi_candidate = "wrong", True, False
        begin = accepted = close = lambda self, *a: None

        def propose(self, context, max_tokens, **kw):
            return Draft(tokens=[(t + 1) % m.n_vocab for t in fake.recording[len(context):len(context) + max_tokens]])

    never = replay(Engine(fake, HindsightDrafter(fake, Wrong()), curve=curve, clock=clock, adaptive=False), fake, prompt,
                   ref, constraint=report)
    assert never.drafted == 0 and never.seconds == pytest.approx(res.seconds)
    # the policy prices a draft on top of the batch it rides on: the forced run ahead of it is counted
    eng = Engine(fake, Wrong(), curve=curve, clock=clock)
    bases, keep = [], eng.policy.keep
    eng.policy.keep = lambda *a, base=1: bases.append(base) or keep(*a, base=base)
    replay(eng, fake, prompt, ref, constraint=report)
    assert max(bases) > n_forced // 2 and min(bases) >= 1
    with pytest.raises(AssertionError):  # a recording the grammar refuses cannot be replayed as its decoding
        replay(Engine(fake, None, curve=curve, clock=clock), fake, prompt, [t + 1 for t in ref], constraint=report)
