"""ONNX Runtime drafter backend: GGUF → ONNX conversion parity with llama.cpp, on tiny models.

Tolerances (measured on these tiny F32 models, 2 layers, logits std ~3):

* against llama.cpp evaluating the whole sequence in one batch, max |Δlogit| ~1e-3
  (llama.cpp's flash attention keeps K/V in f16; the export rounds K/V the same
  way). Asserted: <= 5e-3 over 300 positions.
* against llama.cpp one token at a time, max |Δlogit| ~0.1: that is llama.cpp's
  own step-vs-batch spread (its single-query attention accumulates V in f16), and
  the ONNX model is asserted to stay within 1.5x of it.
* int4 (MatMulNBits): Q4_0/Q4_1/Q8_0/Q4_K blocks map exactly; with float32
  compute (accuracy_level=1) the int4 graph equals the f32 graph to ~1e-4.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgespec import EdgespecError, ModelFileError, PromptError
from edgespec.llama import LlamaModel, check_same_vocab
from edgespec.onnx import ProviderError, UnsupportedModelError
from edgespec.onnx import convert as conv
from edgespec.onnx.convert import convert_gguf_to_onnx, export_onnx, read_config
from edgespec.onnx.weights import exact_qmat, quantize_rtn
from vineyard.seeds import template_reports
from edgespec.onnx.runtime import OnnxCausalLM

WORDS = "the vine leaf moth mite row block larva cluster spray rain dry scout count damage edge wood".split()
N_POS = 300


def text_of(n_words: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(rng.choice(WORDS, size=n_words))


# --------------------------------------------------------------------------- local GGUF writer (quantized/tied)


def write_quant_gguf(path: Path, *, qtype: str, tied: bool, seed: int = 7) -> Path:
    """A tiny llama GGUF whose matrices are stored as ``qtype`` (the shared writer only does F32)."""
    import gguf
    from gguf import GGMLQuantizationType as Q
    from gguf import quants

    from edgespec.testing.tiny_gguf import SPECIALS, tiny_vocab

    toks, merges = tiny_vocab("a")
    V, E, H, HK, F, L = len(toks), 64, 4, 2, 128, 2
    D = E // H
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(L)
    w.add_context_length(1024)
    w.add_embedding_length(E)
    w.add_feed_forward_length(F)
    w.add_head_count(H)
    w.add_head_count_kv(HK)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(toks)
    w.add_token_types([1] * (V - len(SPECIALS)) + [3] * len(SPECIALS))
    w.add_token_merges(merges)
    w.add_bos_token_id(V - 3)
    w.add_eos_token_id(V - 1)
    w.add_add_bos_token(True)
    rng = np.random.default_rng(seed)
    qt = getattr(Q, qtype)

    def mat(name, n, k, std):
        a = (rng.standard_normal((n, k)) * std).astype(np.float32)
        w.add_tensor(name, a if qt == Q.F32 else quants.quantize(a, qt), raw_dtype=None if qt == Q.F32 else qt)

    def vec(name, n):  # non-unit norms so a wrong norm weight would show
        w.add_tensor(name, (1.0 + 0.2 * rng.standard_normal(n)).astype(np.float32))

    mat("token_embd.weight", V, E, 1.0)
    for i in range(L):
        p = f"blk.{i}"
        vec(f"{p}.attn_norm.weight", E)
        mat(f"{p}.attn_q.weight", H * D, E, E ** -0.5)
        mat(f"{p}.attn_k.weight", HK * D, E, E ** -0.5)
        mat(f"{p}.attn_v.weight", HK * D, E, E ** -0.5)
        mat(f"{p}.attn_output.weight", E, H * D, E ** -0.5)
        vec(f"{p}.ffn_norm.weight", E)
        mat(f"{p}.ffn_gate.weight", F, E, E ** -0.5)
        mat(f"{p}.ffn_up.weight", F, E, E ** -0.5)
        mat(f"{p}.ffn_down.weight", E, F, F ** -0.5)
    vec("output_norm.weight", E)
    if not tied:
        mat("output.weight", V, E, 3.0 * E ** -0.5)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="module")
def oracle_f32(tiny_oracle_path, onnx_dir):
    return convert_gguf_to_onnx(tiny_oracle_path, onnx_dir / "oracle-f32", weight_format="f32")


@pytest.fixture(scope="module")
def ref(tiny_oracle_path):
    m = LlamaModel(tiny_oracle_path, n_ctx=1024, n_threads=1)
    yield m
    m.close()


@pytest.fixture(scope="module")
def lm(oracle_f32):
    m = OnnxCausalLM(oracle_f32, n_ctx=1024)
    yield m
    m.close()


@pytest.fixture(scope="module")
def positions(ref):
    toks = ref.tokenize(text_of(400, seed=3))
    assert len(toks) >= N_POS
    return toks[:N_POS]


@pytest.fixture(scope="module")
def llama_batched(ref, positions):
    ref.reset()
    out = ref.decode(positions, logits_at=list(range(len(positions))))
    ref.reset()
    return out


@pytest.fixture(scope="module")
def llama_stepwise(ref, positions):
    ref.reset()
    out = np.stack([ref.step(t) for t in positions])
    ref.reset()
    return out


# --------------------------------------------------------------------------- parity with llama.cpp


def test_logits_match_llama_cpp_batched(lm, positions, llama_batched):
    lm.reset()
    got = lm.decode(positions, all_logits=True)
    assert got.shape == llama_batched.shape == (N_POS, lm.n_vocab)
    diff = np.abs(got - llama_batched)
    print(f"\nONNX f32 vs llama.cpp batched, {N_POS} positions: max |Δ| {diff.max():.2e}, mean {diff.mean():.2e}")
    assert diff.max() <= 5e-3
    assert (got.argmax(1) == llama_batched.argmax(1)).all()


def test_logits_match_llama_cpp_one_token_at_a_time(lm, positions, llama_stepwise, llama_batched):
    lm.reset()
    got = np.stack([lm.step(t) for t in positions])
    diff = np.abs(got - llama_stepwise)
    own = np.abs(llama_stepwise - llama_batched).max()  # llama.cpp's own step-vs-batch spread
    top1 = float((got.argmax(1) == llama_stepwise.argmax(1)).mean())
    print(f"\nONNX vs llama.cpp stepwise: max |Δ| {diff.max():.3g} (llama.cpp step vs batch: {own:.3g}), "
          f"top-1 agreement {top1:.4f}")
    assert diff.max() <= max(1.5 * own, 1e-2)
    assert top1 >= 0.99


def test_greedy_continuations_agree(lm, ref):
    """Greedy continuations from llama.cpp and ONNX; any divergence must be at a near-tie."""
    agree = total = 0
    for seed in range(8):
        prompt = ref.tokenize(text_of(6, seed=100 + seed))
        ref.reset()
        lm.reset()
        a, b = ref.sync(prompt), lm.sync(prompt)
        n_same = 0
        for _ in range(40):
            ta, tb = int(np.argmax(a)), int(np.argmax(b))
            if ta != tb:
                top2 = np.sort(a)[-2:]
                assert top2[1] - top2[0] <= 0.05, "greedy paths parted away from a near-tie"
                break
            n_same += 1
            a, b = ref.step(ta), lm.step(tb)
        agree += n_same
        total += 40
    rate = agree / total
    print(f"\ngreedy continuation agreement (tokens before first divergence): {rate:.3f}")
    assert rate >= 0.9
    ref.reset()


def test_sync_reuses_prefix_and_rewinds(lm):
    base = lm.tokenize(text_of(30, seed=5))
    alt = base[:20] + lm.tokenize(" rain dry scout")
    lm.reset()
    lm.sync(base)
    calls = lm.decode_calls
    after = lm.sync(alt)  # keeps 20 cached positions, evaluates only the new tail
    assert lm.tokens == alt
    assert lm.decode_calls == calls + 1
    assert lm.kv_bytes == 2 * lm.n_layer * lm.n_head_kv * len(alt) * lm.head_dim * 4
    lm.reset()
    fresh = lm.sync(alt)
    np.testing.assert_allclose(after, fresh, atol=1e-4)
    # syncing to a strict prefix re-evaluates its last token only, and stepping continues from there
    pre = lm.sync(alt[:10])
    assert lm.tokens == alt[:10]
    lm.reset()
    np.testing.assert_allclose(pre, lm.sync(alt[:10]), atol=1e-4)
    nxt = lm.step(alt[10])
    lm.reset()
    np.testing.assert_allclose(nxt, lm.sync(alt[:11]), atol=1e-4)
    # the same sequence again costs nothing but re-reading the last position
    lm.sync(alt[:11])
    assert lm.tokens == alt[:11]


def test_gqa_attention_export_matches_standard(tiny_oracle_path, onnx_dir, lm, positions):
    d = convert_gguf_to_onnx(tiny_oracle_path, onnx_dir / "oracle-f32-gqa", weight_format="f32", attention="gqa",
                             kv_f16=False)
    plain = convert_gguf_to_onnx(tiny_oracle_path, onnx_dir / "oracle-f32-nof16", weight_format="f32", kv_f16=False)
    with OnnxCausalLM(d, n_ctx=1024) as a, OnnxCausalLM(plain, n_ctx=1024) as b:
        x = a.decode(positions[:200], all_logits=True)
        y = b.decode(positions[:200], all_logits=True)
        assert np.abs(x - y).max() <= 1e-3
        # prefill in chunks and one token at a time agree too
        a.reset()
        z = np.stack([a.step(t) for t in positions[:50]])
        assert np.abs(z - x[:50]).max() <= 1e-3


# --------------------------------------------------------------------------- int4 (MatMulNBits)


def _reader(path):
    from gguf import GGUFReader

    return GGUFReader(str(path))


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q8_0"])
def test_quantized_blocks_map_exactly(tmp_path, qtype):
    from gguf import quants

    r = _reader(write_quant_gguf(tmp_path / f"{qtype}.gguf", qtype=qtype, tied=True))
    t = next(t for t in r.tensors if t.name == "blk.0.ffn_gate.weight")
    q = exact_qmat(t)
    assert q is not None and q.bits == (8 if qtype == "Q8_0" else 4)
    want = quants.dequantize(t.data, t.tensor_type).reshape(q.shape)
    np.testing.assert_array_equal(q.dequantize(), want)
    np.testing.assert_allclose(q.centered().dequantize(), want, atol=1e-6)
    # MatMulNBits packing: low nibble first along K, 16 bytes per 32-block
    packed = q.packed()
    if q.bits == 4:
        unpacked = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(q.shape)
        np.testing.assert_array_equal(unpacked, q.codes)


def test_q4_k_blocks_map_exactly(tmp_path):
    from gguf import GGMLQuantizationType as Q
    from gguf import quants

    rng = np.random.default_rng(0)
    n, k = 128, 256  # one super-block per row
    blk = rng.integers(0, 256, size=(n, 144), dtype=np.uint8)
    blk[:, 0:2] = np.full((n, 1), 0.01, np.float16).view(np.uint8)  # d
    blk[:, 2:4] = np.full((n, 1), 0.02, np.float16).view(np.uint8)  # dmin
    import gguf

    p = tmp_path / "q4k.gguf"  # a standalone tensor: Q4_K needs K % 256 == 0
    w = gguf.GGUFWriter(str(p), "llama")
    w.add_tensor("m", blk, raw_dtype=Q.Q4_K)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    t = _reader(p).tensors[0]
    q = exact_qmat(t)
    want = quants.dequantize(t.data, t.tensor_type).reshape(n, k)
    np.testing.assert_allclose(q.dequantize(), want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(q.centered().dequantize(), want, rtol=1e-5, atol=1e-5)


def test_rtn_quantization_error_is_bounded():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((64, 128)).astype(np.float32)
    for bits, levels in ((4, 15), (8, 254)):
        q = quantize_rtn(w, bits)
        err = np.abs(q.dequantize() - w).reshape(64, 4, 32).max(-1)
        step = np.ptp(w.reshape(64, 4, 32), axis=-1) / levels
        assert (err <= step * 0.5 + 1e-6).all() if bits == 4 else (err <= step + 1e-6).all()


@pytest.mark.parametrize("qtype,tied", [("Q4_1", True), ("Q4_0", False), ("Q8_0", True)])
def test_int4_graph_equals_f32_graph_with_float_compute(tmp_path, qtype, tied):
    """Exact block mapping end to end: MatMulNBits packing, the block-minimum term, the quantized
    embedding gather. With accuracy_level=1 (float32 compute) only summation order differs."""
    g = write_quant_gguf(tmp_path / "m.gguf", qtype=qtype, tied=tied)
    f32 = convert_gguf_to_onnx(g, tmp_path / "f32", weight_format="f32", kv_f16=False)
    i4 = convert_gguf_to_onnx(g, tmp_path / "i4", weight_format="int4", attention="standard", accuracy_level=1,
                              kv_f16=False)
    with OnnxCausalLM(f32) as a, OnnxCausalLM(i4) as b:
        toks = a.tokenize(text_of(80, seed=2), add_bos=True)[:120]
        x, y = a.decode(toks, all_logits=True), b.decode(toks, all_logits=True)
    assert np.abs(x - y).max() <= 2e-3
    assert read_config(i4)["contrib_ops"] is True and read_config(f32)["contrib_ops"] is False


def test_int4_default_export_tracks_llama_cpp_quantized_kernels(tmp_path):
    """Default int4 (int8 activations, like llama.cpp's own Q4_1 x Q8_1 dot products): both sides
    quantize activations independently, so logits agree statistically, not bit for bit."""
    g = write_quant_gguf(tmp_path / "q41.gguf", qtype="Q4_1", tied=True)
    d = convert_gguf_to_onnx(g, tmp_path / "i4", weight_format="int4")
    ref = LlamaModel(g, n_ctx=1024, n_threads=1)
    try:
        toks = ref.tokenize(text_of(200, seed=4), add_bos=True)[:N_POS]
        want = ref.decode(toks, logits_at=list(range(len(toks))))
    finally:
        ref.close()
    with OnnxCausalLM(d, n_ctx=1024) as lm:
        got = lm.decode(toks, all_logits=True)
    diff = np.abs(got - want)
    top1 = float((got.argmax(1) == want.argmax(1)).mean())
    print(f"\nint4 vs llama.cpp Q4_1: mean |Δ| {diff.mean():.3f}, max {diff.max():.3f}, top-1 {top1:.3f}")
    assert top1 >= 0.85
    assert diff.mean() <= 0.1 * float(want.std())


# --------------------------------------------------------------------------- tokenizer, drafters, engine


def test_tokenizer_is_llama_cpps(lm, ref, oracle_f32):
    text = "the vine <|im_start|>leaf\n moth ü 🍇"
    for add_bos in (False, True):
        for special in (False, True):
            assert lm.tokenize(text, add_bos=add_bos, special=special) == ref.tokenize(text, add_bos=add_bos,
                                                                                        special=special)
    toks = ref.tokenize(text)
    assert lm.detokenize(toks) == ref.detokenize(toks) == text.encode()
    assert lm.add_bos == ref.add_bos and lm.bos_token() == ref.bos_token()
    assert [lm.is_eog(t) for t in range(lm.n_vocab)] == [ref.is_eog(t) for t in range(ref.n_vocab)]
    check_same_vocab(ref, lm)
    info = json.loads((oracle_f32 / "tokenizer_info.json").read_text())
    assert [bytes.fromhex(h) for h in info["pieces_hex"]] == [ref.token_bytes(i) for i in range(ref.n_vocab)]
    assert info["merges"] and info["eos_token_id"] == ref.eos_token() and info["chat_template"] == ref.chat_template()


def test_engine_greedy_output_identical_with_onnx_drafters(tiny_oracle_path, tiny_drafter_close_path,
                                                          tiny_other_vocab_path, onnx_dir):
    """The engine's greedy text with an ONNX drafter (same-vocab model drafter, cross-tokenizer
    bridge) equals oracle-only greedy, and the ONNX drafter drafts what the GGUF drafter drafts."""
    from edgespec.acceptance import validate_sampling
    from edgespec.drafters.bridge import BridgeDrafter
    from edgespec.drafters.model import ModelDrafter
    from edgespec.engine import Engine, GenerationParams
    from edgespec.events import Done
    from edgespec.cost import CostCurve

    close = OnnxCausalLM(convert_gguf_to_onnx(tiny_drafter_close_path, onnx_dir / "close", weight_format="f32"))
    other = OnnxCausalLM(convert_gguf_to_onnx(tiny_other_vocab_path, onnx_dir / "other", weight_format="int4"))
    close_gguf = LlamaModel(tiny_drafter_close_path, n_ctx=512, n_threads=1)
    oracle = LlamaModel(tiny_oracle_path, n_ctx=512, n_threads=1)
    stats: dict[str, list[int]] = {}
    try:
        for i in range(4):
            prompt = oracle.tokenize(text_of(8, seed=200 + i))
            oracle.reset()
            logits = oracle.sync(prompt)
            want = []
            for _ in range(40):
                t = int(np.argmax(logits))
                if oracle.is_eog(t):
                    break
                want.append(t)
                logits = oracle.step(t)
            drafters = {
                "onnx-model": ModelDrafter(close, oracle_vocab=oracle.n_vocab, p_min=0.0),
                "gguf-model": ModelDrafter(close_gguf, oracle_vocab=oracle.n_vocab, p_min=0.0),
                "onnx-bridge": BridgeDrafter(other, oracle, p_min=0.0),
            }
            for key, drafter in drafters.items():
                for adaptive in (False, True):
                    oracle.reset()
                    eng = Engine(oracle, drafter, curve=CostCurve.linear(0.01), adaptive=adaptive)
                    params = GenerationParams(max_tokens=40, sampling=validate_sampling(0.0, 0, 1.0, None))
                    done = list(eng.generate(prompt, params))[-1]
                    assert isinstance(done, Done)
                    assert done.tokens == want, (key, adaptive)
                    s = stats.setdefault(key, [0, 0])
                    s[0] += done.stats.drafted_tokens
                    s[1] += done.stats.accepted_tokens
    finally:
        oracle.close()
        close_gguf.close()
        close.close()
        other.close()
    print(f"\n[drafted, accepted]: {stats}")
    assert stats["onnx-bridge"][0] > 0 and stats["onnx-model"][1] > 0  # both verify paths exercised
    onnx_acc, gguf_acc = stats["onnx-model"][1], stats["gguf-model"][1]
    assert abs(onnx_acc - gguf_acc) <= 0.05 * stats["gguf-model"][0]


# --------------------------------------------------------------------------- errors and files


def test_bad_inputs_raise_clear_errors(lm, tmp_path, tiny_oracle_path):
    with pytest.raises(PromptError):
        lm.sync([])
    with pytest.raises(PromptError, match="outside"):
        lm.step(lm.n_vocab)
    with pytest.raises(PromptError, match="overflow"):
        lm.reset()
        lm.sync([1] * (lm.n_ctx + 1))
    assert lm.tokens == []  # nothing was evaluated
    with pytest.raises(ProviderError, match="available"):
        OnnxCausalLM(lm.dir, providers=("NoSuchExecutionProvider",))
    with pytest.raises(ModelFileError):
        convert_gguf_to_onnx(tmp_path / "missing.gguf", tmp_path / "out")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf at all" * 10)
    with pytest.raises(ModelFileError):
        convert_gguf_to_onnx(junk, tmp_path / "out")
    with pytest.raises(ValueError):
        convert_gguf_to_onnx(tiny_oracle_path, tmp_path / "out", weight_format="int3")
    with pytest.raises(ModelFileError, match="export-onnx"):
        OnnxCausalLM(tmp_path)
    assert not (tmp_path / "out").exists()


def test_non_llama_architecture_is_refused(tmp_path):
    import gguf

    p = tmp_path / "qwen.gguf"
    w = gguf.GGUFWriter(str(p), "qwen2")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((8, 32), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UnsupportedModelError, match="llama"):
        convert_gguf_to_onnx(p, tmp_path / "out")


def test_incomplete_export_is_refused(oracle_f32, tmp_path):
    import shutil

    d = tmp_path / "copy"
    shutil.copytree(oracle_f32, d)
    (d / "model.onnx.data").unlink()
    with pytest.raises(ModelFileError, match="incomplete"):
        OnnxCausalLM(d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["format_version"] = 999
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFileError, match="export it again"):
        read_config(d)


def test_closed_model_raises(oracle_f32):
    m = OnnxCausalLM(oracle_f32)
    m.close()
    with pytest.raises(EdgespecError):
        m.step(1)
    m.close()  # idempotent


def test_failed_conversion_leaves_previous_export_intact(tiny_oracle_path, tmp_path, monkeypatch):
    out = convert_gguf_to_onnx(tiny_oracle_path, tmp_path / "exp", weight_format="f32")
    before = (out / "config.json").read_text()

    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(conv, "tokenizer_info", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        convert_gguf_to_onnx(tiny_oracle_path, tmp_path / "exp", weight_format="int4")
    assert (out / "config.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]  # no temporary directories left
    OnnxCausalLM(out).close()


def test_export_onnx_writes_into_cache_and_reuses(tiny_oracle_path, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESPEC_CACHE", str(tmp_path / "cache"))
    out = export_onnx(str(tiny_oracle_path), weight_format="f32")
    assert out == tmp_path / "cache" / "onnx" / f"{Path(tiny_oracle_path).stem}-f32"
    stamp = (out / "config.json").stat().st_mtime_ns
    assert export_onnx(str(tiny_oracle_path), weight_format="f32") == out
    assert (out / "config.json").stat().st_mtime_ns == stamp  # reused, not reconverted
    assert export_onnx(str(tiny_oracle_path), weight_format="f32", force=True) == out
    assert (out / "config.json").stat().st_mtime_ns != stamp
    cfg = read_config(out)
    assert cfg["source"]["sha256"] and cfg["weight_format"] == "f32"


# --------------------------------------------------------------------------- the real SmolLM2 file


@pytest.mark.real
@pytest.mark.parametrize("weight_format", ["int4", "f32"])
def test_real_smollm2_logits_parity(tmp_path, weight_format):
    """SmolLM2-135M Q4_1: the export against llama.cpp's quantized kernels (which quantize the
    activations to Q8_1) over 300 positions of a field-report template."""
    from edgespec.model_cache import resolve_model

    src = resolve_model("smollm2-135m-instruct", fetch=True, progress=False)
    d = convert_gguf_to_onnx(src, tmp_path / weight_format, weight_format=weight_format)
    text = "".join(t for _name, t in template_reports()[:3])
    assert text
    ref = LlamaModel(src, n_ctx=1024, n_threads=1)
    lm = OnnxCausalLM(d, n_ctx=1024)
    try:
        toks = ref.tokenize(text, add_bos=ref.add_bos)[:N_POS]
        assert toks == lm.tokenize(text, add_bos=lm.add_bos)[:N_POS]
        want = np.stack([ref.step(t) for t in toks])
        got = np.stack([lm.step(t) for t in toks])
    finally:
        ref.close()
        lm.close()
    diff = np.abs(got - want)
    top1 = float((got.argmax(1) == want.argmax(1)).mean())
    print(f"\nSmolLM2 {weight_format}: top-1 {top1:.3f}, mean |Δ| {diff.mean():.3f}, "
          f"p99 {np.quantile(diff, 0.99):.3f}, max {diff.max():.3f} (logit std {want.std():.2f})")
    assert top1 >= 0.95
    assert diff.mean() <= 0.3
