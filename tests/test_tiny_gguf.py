"""The tiny random-weight GGUF writer: llama.cpp loads its files, the tokenizers round-trip text,
vocabularies are shared or different as promised, and llama.cpp's CPU kernels are batch-invariant
on them in the ways the engine tests rely on (see the module docstring of edgespec.testing.tiny_gguf).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgespec import IncompatibleModelsError
from edgespec.llama import LlamaModel, check_same_vocab, render_chat
from edgespec.testing.tiny_gguf import CHATML, SPECIALS, tiny_token_types, tiny_vocab, write_tiny_gguf

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [
    "hello world",
    "the vine row near the edge of the block",
    "Grüße aus der Pfalz: Traubenwickler, 3 Larven/100 Trauben",
    "日本語のテキスト and emoji 🍇🐛",
    "  leading spaces,\ttabs\nand\r\nnewlines  ",
    "it's 12.5% — don't spray at 30°C!",
    "<|im_start|>user\nhi<|im_end|>\n",
]
PROMPT = "<|im_start|>user\nWrite a scouting report about the vine row.<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def oracle(tiny_oracle_path):
    with LlamaModel(tiny_oracle_path, n_ctx=512, n_threads=1) as m:
        yield m


def greedy(model: LlamaModel, prompt: list[int], n: int) -> list[int]:
    """The model's greedy continuation, decoding the prompt in one batch and then one token at a time."""
    model.reset()
    logits = model.decode(prompt)[-1]
    out = []
    for _ in range(n):
        out.append(int(logits.argmax()))
        logits = model.step(out[-1])
    return out


# --------------------------------------------------------------------------- writing


def test_writing_is_deterministic(tmp_path):
    # how long writing takes is measured by tools/bench_micro.py, not bounded here
    a = write_tiny_gguf(tmp_path / "a.gguf", seed=7)
    b = write_tiny_gguf(tmp_path / "b.gguf", seed=7)
    c = write_tiny_gguf(tmp_path / "c.gguf", seed=8)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    assert a.stat().st_size == c.stat().st_size


def test_metadata_keys(tiny_oracle_path):
    import gguf

    r = gguf.GGUFReader(tiny_oracle_path)

    def field(key):
        return r.fields[key].contents()

    toks, merges = tiny_vocab("a")
    assert field("general.architecture") == "llama"
    assert field("llama.block_count") == 2
    assert field("llama.embedding_length") == 64
    assert field("llama.attention.head_count") == 4
    assert field("llama.attention.head_count_kv") == 2
    assert field("llama.rope.dimension_count") == 16
    assert field("llama.vocab_size") == len(toks)
    assert field("general.file_type") == 0  # all F32
    assert field("tokenizer.ggml.model") == "gpt2"
    assert field("tokenizer.ggml.pre") == "gpt-2"
    assert field("tokenizer.ggml.tokens") == toks
    assert field("tokenizer.ggml.merges") == merges
    assert field("tokenizer.ggml.token_type") == tiny_token_types("a")
    assert field("tokenizer.ggml.eos_token_id") == toks.index("<|im_end|>")
    assert field("tokenizer.ggml.bos_token_id") == toks.index("<|endoftext|>")
    assert field("tokenizer.chat_template") == CHATML
    t = {x.name: x for x in r.tensors}
    assert t["output.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    assert len(t) == 3 + 9 * 2  # token_embd, output_norm, output; 9 per layer


def test_vocabulary_shape():
    for letter in "ab":
        toks, merges = tiny_vocab(letter)
        assert 256 + 20 < len(toks) < 1000
        assert len(set(toks)) == len(toks)
        assert toks[-3:] == SPECIALS
        assert len(merges) == len(toks) - 256 - len(SPECIALS)
        for m, tok in zip(merges, toks[256:]):  # each merge builds the token at the same rank
            assert m.replace(" ", "") == tok
    assert tiny_vocab("a")[0][:256] == tiny_vocab("b")[0][:256]  # same byte tokens
    assert tiny_vocab("a") != tiny_vocab("b")


def test_noise_perturbs_the_seeds_weights(tmp_path):
    import gguf

    clean = gguf.GGUFReader(write_tiny_gguf(tmp_path / "clean.gguf", seed=4))
    noisy = gguf.GGUFReader(write_tiny_gguf(tmp_path / "noisy.gguf", seed=4, noise=0.1))
    other = gguf.GGUFReader(write_tiny_gguf(tmp_path / "other.gguf", seed=5))
    c = {t.name: np.array(t.data) for t in clean.tensors}
    n = {t.name: np.array(t.data) for t in noisy.tensors}
    o = {t.name: np.array(t.data) for t in other.tensors}
    for name in ("token_embd.weight", "blk.1.ffn_down.weight", "output.weight"):
        rel = np.linalg.norm(n[name] - c[name]) / np.linalg.norm(c[name])
        assert 0.07 < rel < 0.13, (name, rel)
        assert np.linalg.norm(o[name] - c[name]) / np.linalg.norm(c[name]) > 1.0  # another seed: unrelated
    assert np.array_equal(n["blk.0.attn_norm.weight"], c["blk.0.attn_norm.weight"])


def test_bpe_reachability_is_as_documented(oracle):
    """Every merged token is what BPE makes of its text, except vocab a's "Ġthe" (its merge pairs "Ġt"+"he",
    but BPE reaches "Ġth"+"e" first): kept because the models in use depend on these ids; the oracle can still
    generate it, which gives the bridge a non-canonical tokenization to handle, as real vocabularies do."""
    from edgespec.testing.tiny_gguf import _bpe

    for letter in "ab":
        toks, merges = tiny_vocab(letter)
        ranks = {tuple(m.split(" ")): i for i, m in enumerate(merges)}
        unreachable = [w for w in toks[256:-3] if _bpe(w, ranks) != [w]]
        assert unreachable == (["Ġthe"] if letter == "a" else [])
    toks, _ = tiny_vocab("a")
    # llama.cpp segments exactly as the simulation says
    assert oracle.tokenize(" the") == [toks.index("Ġth"), toks.index("e")]
    assert oracle.tokenize(" row") == [toks.index("Ġrow")]
    assert oracle.token_bytes(toks.index("Ġthe")) == b" the"


def test_q8_0_option(tmp_path, oracle):
    import gguf

    p = write_tiny_gguf(tmp_path / "q8.gguf", seed=1, dtype="q8_0")
    r = gguf.GGUFReader(p)
    types = {t.name: t.tensor_type for t in r.tensors}
    assert types["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.Q8_0
    assert types["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32
    assert r.fields["general.file_type"].contents() == 7
    toks = oracle.tokenize(PROMPT)
    oracle.reset()
    ref = oracle.decode(toks, logits_at=list(range(len(toks))))
    with LlamaModel(p, n_ctx=256, n_threads=1) as q:
        got = q.decode(toks, logits_at=list(range(len(toks))))
    # the same seed-1 weights, rounded to 8 bits: close to the F32 oracle's logits, not equal
    assert not np.array_equal(got, ref)
    assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.99


# --------------------------------------------------------------------------- llama.cpp loads and tokenizes


def test_llama_cpp_loads_and_decodes(oracle):
    toks, _ = tiny_vocab("a")
    assert oracle.n_vocab == len(toks)
    assert oracle.n_ctx_train == 2048
    assert oracle.meta("general.architecture") == "llama"
    ids = oracle.tokenize(PROMPT)
    oracle.reset()
    logits = oracle.decode(ids, logits_at=list(range(len(ids))))
    assert logits.shape == (len(ids), oracle.n_vocab)
    assert np.isfinite(logits).all()
    # spread out: greedy is not one token everywhere, softmax is neither one-hot nor uniform
    std = logits.std(axis=1)
    assert (std > 1.0).all() and (std < 10.0).all()
    assert len(set(logits.argmax(axis=1).tolist())) > len(ids) // 3
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    entropy = -(p * np.log(p)).sum(axis=1)
    assert (entropy > 0.1).all() and (entropy < 0.9 * np.log(oracle.n_vocab)).all()


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("which", ["oracle", "other"])
def test_tokenization_round_trips(which, text, tiny_oracle_path, tiny_other_vocab_path):
    path = tiny_oracle_path if which == "oracle" else tiny_other_vocab_path
    with LlamaModel(path, vocab_only=True) as m:
        ids = m.tokenize(text)
        assert all(0 <= i < m.n_vocab for i in ids)
        assert m.detokenize(ids).decode("utf-8") == text


def test_merges_are_applied(oracle, tiny_other_vocab_path):
    text = " the vine row"
    a = oracle.tokenize(text)
    assert len(a) < len(text.encode())
    assert a == [*oracle.tokenize(" the"), *oracle.tokenize(" vine"), *oracle.tokenize(" row")]
    assert oracle.token_bytes(oracle.tokenize(" row")[0]) == b" row"  # one merged token
    with LlamaModel(tiny_other_vocab_path, vocab_only=True) as b:
        assert b.token_bytes(b.tokenize(" vine")[0]) == b" vine"
        assert len(b.tokenize(" vine leaf moth")) == 3


def test_special_tokens(oracle):
    toks, _ = tiny_vocab("a")
    start, end, eot = (toks.index(s) for s in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"))
    assert oracle.tokenize("<|im_start|>") == [start]
    assert oracle.tokenize("<|im_end|>") == [end]
    assert len(oracle.tokenize("<|im_start|>", special=False)) > 1  # plain text when specials are off
    assert oracle.eos_token() == end
    assert oracle.bos_token() == eot
    assert not oracle.add_bos
    assert oracle.is_eog(end) and oracle.is_eog(eot)
    assert not oracle.is_eog(oracle.tokenize("a")[0])
    assert oracle.token_bytes(end, special=False) == b""  # control tokens render only on request


def test_chat_template(oracle):
    assert oracle.chat_template() == CHATML
    text = render_chat(oracle, [{"role": "user", "content": "hi"}])
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_high_level_llama_loads_vocab_only(tiny_other_vocab_path):
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(tiny_other_vocab_path), vocab_only=True, verbose=False)
    try:
        assert llm.n_vocab() == len(tiny_vocab("b")[0])
        for text in TEXTS:
            ids = llm.tokenize(text.encode(), add_bos=False, special=True)
            assert llm.detokenize(ids, special=True).decode("utf-8") == text
    finally:
        llm.close()


# --------------------------------------------------------------------------- shared and different vocabularies


def test_same_letter_shares_the_vocabulary(oracle, tiny_drafter_path, tiny_drafter_close_path):
    for path in (tiny_drafter_path, tiny_drafter_close_path):
        with LlamaModel(path, vocab_only=True) as d:
            assert d.token_texts() == oracle.token_texts()
            assert d.vocab_fingerprint() == oracle.vocab_fingerprint()
            for text in TEXTS:
                assert d.tokenize(text) == oracle.tokenize(text)
            check_same_vocab(oracle, d)  # does not raise


def test_other_letter_is_another_tokenizer(oracle, tiny_other_vocab_path):
    with LlamaModel(tiny_other_vocab_path, vocab_only=True) as b:
        assert b.vocab_fingerprint() != oracle.vocab_fingerprint()
        differ = [t for t in TEXTS if b.tokenize(t) != oracle.tokenize(t)]
        assert len(differ) >= len(TEXTS) - 1
        # different segmentation of the same text, not only different numbers
        seg_a = [oracle.token_bytes(i) for i in oracle.tokenize(" the vine leaf")]
        seg_b = [b.token_bytes(i) for i in b.tokenize(" the vine leaf")]
        assert seg_a != seg_b and b"".join(seg_a) == b"".join(seg_b)
        with pytest.raises(IncompatibleModelsError):
            check_same_vocab(oracle, b)


# --------------------------------------------------------------------------- drafters agree as promised


def test_close_drafter_agrees_far_drafter_does_not(oracle, tiny_drafter_close_path, tiny_drafter_path):
    prompt = oracle.tokenize(PROMPT)
    ref = greedy(oracle, prompt, 120)

    def agreement(path):
        # the drafter's greedy choice after each of the oracle's prefixes (teacher forcing)
        with LlamaModel(path, n_ctx=512, n_threads=1) as d:
            rows = d.decode(prompt + ref[:-1], logits_at=list(range(len(prompt) - 1, len(prompt) + len(ref) - 1)))
        return float(np.mean(rows.argmax(axis=1) == np.array(ref)))

    assert agreement(tiny_drafter_close_path) > 0.75
    assert agreement(tiny_drafter_path) < 0.3


# --------------------------------------------------------------------------- batch invariance


class RawContext:
    """A llama.cpp context with chosen flash-attention and KV-cache types (LlamaModel uses the defaults)."""

    def __init__(self, path, *, flash_attn: int, kv_f32: bool, n_threads: int = 1):
        import llama_cpp as L

        from edgespec.llama import _ensure_backend

        _ensure_backend()  # quiet logs, backend initialised once
        self.L = L
        self.model = L.llama_model_load_from_file(str(path).encode(), L.llama_model_default_params())
        assert self.model
        self.n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(self.model))
        cp = L.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_seq_max = 512, 512, 512, 1
        cp.n_threads = cp.n_threads_batch = n_threads
        cp.flash_attn_type = flash_attn
        cp.type_k = cp.type_v = 0 if kv_f32 else 1  # GGML_TYPE_F32 / GGML_TYPE_F16
        self.ctx = L.llama_init_from_model(self.model, cp)
        assert self.ctx
        self.batch = L.llama_batch_init(512, 0, 1)

    def logits(self, tokens: list[int], sizes: list[int]) -> np.ndarray:
        """Every position's logits, decoding ``tokens`` from an empty cache in batches of ``sizes``
        (cycled), each batch asking for all its rows."""
        L, b = self.L, self.batch
        L.llama_memory_seq_rm(L.llama_get_memory(self.ctx), 0, 0, -1)
        out, pos, k = [], 0, 0
        while pos < len(tokens):
            group = tokens[pos : pos + sizes[k % len(sizes)]]
            k += 1
            for i, t in enumerate(group):
                b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = t, pos + i, 1, True
                b.seq_id[i][0] = 0
            b.n_tokens = len(group)
            assert L.llama_decode(self.ctx, b) == 0
            out.append(np.ctypeslib.as_array(L.llama_get_logits(self.ctx), shape=(len(group), self.n_vocab)).copy())
            pos += len(group)
        return np.concatenate(out)

    def close(self):
        self.L.llama_batch_free(self.batch)
        self.L.llama_free(self.ctx)
        self.L.llama_model_free(self.model)


def sequence(n: int, seed: int = 0) -> list[int]:
    return [int(x) for x in np.random.default_rng(seed).integers(0, 280, n)]


def split(n: int, sizes: list[int]) -> list[int]:
    """Batch sizes covering n tokens, cycling through ``sizes``, never leaving a one-token batch."""
    out, k = [], 0
    while sum(out) < n:
        s = min(sizes[k % len(sizes)], n - sum(out))
        out.append(s + 1 if n - sum(out) - s == 1 else s)
        k += 1
    return out


def test_verify_batches_are_bitwise_interchangeable_with_defaults(tiny_oracle_path):
    """What the engine relies on: after the same prefill, any split into 2..63-token batches asking for all
    rows gives the same bits (LlamaModel's defaults: flash attention auto, F16 KV cache; 1 or 2 threads)."""
    prompt, cont = sequence(30, 1), sequence(61, 2)

    def run(m, sizes):
        m.reset()
        m.decode(prompt)
        rows, i = [], 0
        for n in split(len(cont), sizes):
            assert 2 <= n < 64
            rows.append(m.decode(cont[i : i + n], logits_at=list(range(n))))
            i += n
        return np.concatenate(rows)

    with LlamaModel(tiny_oracle_path, n_ctx=512, n_threads=1) as m:
        ref = run(m, [61])
        assert ref.shape == (len(cont), len(tiny_vocab("a")[0]))
        for sizes in ([2], [5, 3, 7], [9]):
            assert np.array_equal(run(m, sizes), ref), sizes
    with LlamaModel(tiny_oracle_path, n_ctx=512, n_threads=2) as m:  # kept small: the 2 cores are shared
        assert np.array_equal(run(m, [20]), ref)


def test_two_token_step_is_the_bitwise_reference(tiny_oracle_path):
    """One token at a time differs slightly under the defaults; re-decoding the previous token together with
    the new one, asking for both rows, gives the batch's bits exactly (how a strict reference should step).
    Asking for one row only runs the last layer's FFN and the output matmul as gemv: close, not bitwise."""
    toks = sequence(40, 3)
    with LlamaModel(tiny_oracle_path, n_ctx=512, n_threads=1) as m:
        batch = m.decode(toks, logits_at=list(range(len(toks))))
        m.reset()
        single = np.stack([m.step(t) for t in toks])
        m.reset()
        pairs = [m.decode(toks[:2], logits_at=[0, 1])]
        for i in range(2, len(toks)):
            m.trim(i - 1)
            pairs.append(m.decode(toks[i - 1 : i + 1], logits_at=[0, 1])[1:])  # two rows, not one
        pairs = np.concatenate(pairs)
        m.reset()
        last_only = m.decode(toks)  # one output row
    assert np.array_equal(pairs, batch)
    assert np.abs(single - batch).max() < 1e-2
    assert np.abs(last_only - batch[-1]).max() < 1e-4
    assert np.array_equal(single.argmax(axis=1), batch.argmax(axis=1))


def test_one_token_at_a_time_within_1e5_without_flash_attention(tiny_oracle_path):
    """F32 weights, F32 KV cache, flash attention off: one-token batches match the one-batch logits
    within 1e-5 (they run on gemv instead of tinyBLAS, so bitwise equality is not promised)."""
    toks = sequence(80, 4)
    c = RawContext(tiny_oracle_path, flash_attn=0, kv_f32=True)
    try:
        batch = c.logits(toks, [len(toks)])
        assert np.array_equal(c.logits(toks, [2]), batch)
        assert np.array_equal(c.logits(toks, [7, 3]), batch)
        assert np.abs(c.logits(toks, [1]) - batch).max() < 1e-5
    finally:
        c.close()


@pytest.mark.parametrize("shape", [dict(), dict(n_embd=32, n_head=2, n_head_kv=1, n_ff=64)])
def test_q8_0_is_bitwise_invariant_even_one_token_at_a_time(tmp_path, shape):
    p = write_tiny_gguf(tmp_path / "q8.gguf", seed=5, dtype="q8_0", **shape)
    toks = sequence(80, 5)
    c = RawContext(p, flash_attn=0, kv_f32=True)
    try:
        batch = c.logits(toks, [len(toks)])
        for sizes in ([1], [2], [1, 3], [33]):
            assert np.array_equal(c.logits(toks, sizes), batch), sizes
    finally:
        c.close()


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(vocab="z"), "vocab"),
        (dict(dtype="f16"), "dtype"),
        (dict(n_layer=0), "n_layer"),
        (dict(n_embd=64.0), "n_embd"),
        (dict(n_embd=62), "multiple of n_head"),
        (dict(n_embd=36, n_head=4), "even"),
        (dict(n_head_kv=3), "n_head_kv"),
        (dict(dtype="q8_0", n_ff=100), "multiples of 32"),
        (dict(noise=-0.1), "noise"),
        (dict(noise=float("nan")), "noise"),
        (dict(seed=-1), "seed"),
    ],
)
def test_bad_arguments_raise_value_error_and_keep_the_old_file(tmp_path, kwargs, words):
    p = tmp_path / "m.gguf"
    p.write_bytes(b"previous")
    with pytest.raises(ValueError, match=words):
        write_tiny_gguf(p, **kwargs)
    assert p.read_bytes() == b"previous"
    assert list(tmp_path.iterdir()) == [p]


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_tiny_gguf(tmp_path / "nope" / "m.gguf")


def test_failure_while_writing_leaves_no_partial_file(tmp_path, monkeypatch):
    import gguf

    p = write_tiny_gguf(tmp_path / "m.gguf", seed=1)
    before = p.read_bytes()

    def boom(self, *a, **kw):
        raise OSError("disk full")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", boom)
    with pytest.raises(OSError, match="disk full"):
        write_tiny_gguf(p, seed=2)
    assert p.read_bytes() == before
    assert list(tmp_path.iterdir()) == [p]


# --------------------------------------------------------------------------- CLI and fixtures


def test_cli_writes_a_loadable_model(tmp_path):
    out = tmp_path / "cli.gguf"
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "make_tiny_gguf.py"), str(out), "--vocab", "b",
                        "--layers", "1", "--seed", "3"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out)
    same = write_tiny_gguf(tmp_path / "api.gguf", vocab="b", n_layer=1, seed=3)
    assert out.read_bytes() == same.read_bytes()


def test_cli_bad_arguments_exit_2_without_traceback(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "make_tiny_gguf.py"), str(tmp_path / "x.gguf"),
                        "--embd", "62"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "multiple of n_head" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x.gguf").exists()


def test_fixtures(tiny_oracle_path, tiny_drafter_path, tiny_drafter_close_path, tiny_other_vocab_path, tiny_gguf):
    import gguf

    def blocks(p):
        return gguf.GGUFReader(p).fields["llama.block_count"].contents()

    assert blocks(tiny_oracle_path) == 2 and blocks(tiny_drafter_close_path) == 2 and blocks(tiny_drafter_path) == 1
    assert len({tiny_oracle_path, tiny_drafter_path, tiny_drafter_close_path, tiny_other_vocab_path}) == 4
    q = tiny_gguf(seed=1, dtype="q8_0")
    assert tiny_gguf(dtype="q8_0", seed=1) == q  # cached per set of arguments
    assert tiny_gguf(seed=2) != q and q.is_file()


def test_the_byte_vocabulary_gives_a_text_one_tokenization(tiny_gguf):
    """vocab "c" (the office rewrite's exact test): byte tokens only, one merge no UTF-8 text uses."""
    import llama_cpp

    m = llama_cpp.Llama(str(tiny_gguf(vocab="c", n_layer=1, seed=1)), n_ctx=64, verbose=False)
    try:
        text = "Block B4: the rows 12-18, 8%."
        assert m.tokenize(text.encode(), add_bos=False, special=False) == list(text.encode())
        assert m.n_vocab() == 256 + 1 + 3
    finally:
        m.close()
