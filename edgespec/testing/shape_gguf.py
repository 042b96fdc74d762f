"""Random-weight GGUFs of a real model's shape (``edgespec.projection.ModelShape``), streamed to disk.

Why random weights are enough: how long llama.cpp takes to decode n tokens depends on the tensor
shapes, types, thread count and context, not on the weights' values. ``tools/project_speedup.py``
measures the verify-cost curves of 1B/3B/8B shapes written here; acceptance cannot come from them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..projection import ModelShape

# bytes per block and weights per block come from the gguf package; the *layout* below is ggml's:
#   Q4_0 (32 weights, 18 bytes): fp16 scale d, 16 bytes of 4-bit quants; w = d * (q - 8)
#   Q6_K (256 weights, 210 bytes): ql[128], qh[64], int8 scales[16], fp16 d; w = d * scale * (q - 32)
_QTYPES = ("q4_0", "q6_k", "f32")


def _ggml_type(name: str):
    import gguf

    return {"q4_0": gguf.GGMLQuantizationType.Q4_0, "q6_k": gguf.GGMLQuantizationType.Q6_K,
            "f32": gguf.GGMLQuantizationType.F32}[name]


def tensor_nbytes(rows: int, n_in: int, qtype: str) -> int:
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[_ggml_type(qtype)]
    if n_in % block:
        raise ValueError(f"row length {n_in} is not a multiple of the {qtype} block size {block}")
    return rows * (n_in // block) * size


def random_quant_rows(rng: np.random.Generator, rows: int, n_in: int, qtype: str, std: float) -> np.ndarray:
    """Random quantized blocks with valid fp16 scales: (rows, bytes per row) uint8, weights of about ``std``.

    Why not quantize random floats: that is minutes of numpy for an 8B model; random
    quant bytes with a fixed, finite scale cost what real weights cost to decode.
    """
    if qtype == "f32":
        return (rng.standard_normal((rows, n_in), dtype=np.float32) * np.float32(std))
    nbytes = tensor_nbytes(rows, n_in, qtype)
    if qtype == "q4_0":
        nblk = nbytes // 18
        blocks = np.empty((nblk, 18), dtype=np.uint8)
        blocks[:, 2:] = rng.integers(0, 256, size=(nblk, 16), dtype=np.uint8)
        d = np.float16(std / 4.6)  # (q - 8) for uniform q in 0..15 has std ~4.6
        blocks[:, :2] = np.frombuffer(d.tobytes(), dtype=np.uint8)
    elif qtype == "q6_k":
        nblk = nbytes // 210
        blocks = np.empty((nblk, 210), dtype=np.uint8)
        blocks[:, :192] = rng.integers(0, 256, size=(nblk, 192), dtype=np.uint8)  # ql, qh
        blocks[:, 192:208] = rng.integers(1, 5, size=(nblk, 16), dtype=np.uint8)  # int8 scales 1..4 (rms ~2.7)
        d = np.float16(std / (18.5 * 2.7))  # (q - 32) for uniform q in 0..63 has std ~18.5
        blocks[:, 208:210] = np.frombuffer(d.tobytes(), dtype=np.uint8)
    else:
        raise ValueError(f"unsupported tensor type {qtype!r} (one of {_QTYPES})")
    return blocks.reshape(rows, nbytes // rows)


def shape_tokens(n_vocab: int) -> tuple[list[str], list[int], list[str], int, int]:
    """(tokens, token types, merges, bos id, eos id): a real byte-level BPE core padded with dummy tokens.

    llama.cpp needs a loadable tokenizer; the padding makes n_vocab (and so the output
    matmul and the logits copy) the real size. Dummies are normal tokens no merge can reach.
    """
    from .tiny_gguf import SPECIALS, tiny_vocab

    toks, merges = tiny_vocab("a")
    core = toks[: len(toks) - len(SPECIALS)]
    n_dummy = n_vocab - len(core) - len(SPECIALS)
    if n_dummy < 0:
        raise ValueError(f"n_vocab {n_vocab} is too small: the byte-level tokenizer alone needs {len(toks)} tokens")
    tokens = core + [f"<t{i}>" for i in range(len(core), len(core) + n_dummy)] + list(SPECIALS)
    types = [1] * (n_vocab - len(SPECIALS)) + [3] * len(SPECIALS)  # 3 = control
    return tokens, types, merges, n_vocab - 3, n_vocab - 1


def write_shape_gguf(
    path: str | Path,
    shape: ModelShape,
    *,
    weight_type: str = "q4_0",
    output_type: str = "q6_k",
    seed: int = 0,
    n_ctx_train: int = 8192,
) -> Path:
    """A llama-architecture GGUF of ``shape`` with random weights, streamed tensor by tensor.

    Streams (tensor infos first, then one tensor in memory at a time) so an 8B file
    never needs its 4.7 GB in RAM. The partial file is removed if writing fails.
    """
    import gguf

    path = Path(path)
    for t in (weight_type, output_type):
        if t not in _QTYPES:
            raise ValueError(f"unsupported tensor type {t!r} (one of {_QTYPES})")
    mats = shape.matrices()
    types = {name: (output_type if name == "output.weight" else weight_type) for name, _, _ in mats}
    for name, rows, n_in in mats:
        tensor_nbytes(rows, n_in, types[name])  # raises before any byte is written

    tokens, ttypes, merges, bos, eos = shape_tokens(shape.n_vocab)
    w = gguf.GGUFWriter(str(path), "llama")
    try:
        w.add_name(f"edgespec-random-{shape.name}")
        w.add_description("random weights, for measuring decode cost only (tools/project_speedup.py)")
        w.add_block_count(shape.n_layer)
        w.add_context_length(n_ctx_train)
        w.add_embedding_length(shape.n_embd)
        w.add_feed_forward_length(shape.n_ff)
        w.add_head_count(shape.n_head)
        w.add_head_count_kv(shape.n_head_kv)
        w.add_rope_dimension_count(shape.head_dim)
        w.add_layer_norm_rms_eps(1e-5)
        w.add_rope_freq_base(500000.0)
        w.add_file_type({"q4_0": 2, "q6_k": 18, "f32": 0}[weight_type])
        w.add_vocab_size(shape.n_vocab)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("gpt-2")
        w.add_token_list(tokens)
        w.add_token_types(ttypes)
        w.add_token_merges(merges)
        w.add_bos_token_id(bos)
        w.add_eos_token_id(eos)
        w.add_add_bos_token(False)

        # tensor infos in file order: the 2-D weights in shape order, each layer's norms after its matrices
        order: list[tuple[str, tuple, str]] = []  # (name, (rows, n_in) or (n,), type)
        for name, rows, n_in in mats:
            order.append((name, (rows, n_in), types[name]))
            if name.endswith("ffn_down.weight"):
                i = name.split(".")[1]
                order.append((f"blk.{i}.attn_norm.weight", (shape.n_embd,), "f32"))
                order.append((f"blk.{i}.ffn_norm.weight", (shape.n_embd,), "f32"))
        order.append(("output_norm.weight", (shape.n_embd,), "f32"))
        for name, dims, qt in order:
            if len(dims) == 1 or qt == "f32":
                n = int(np.prod(dims))
                w.add_tensor_info(name, dims, np.dtype(np.float32), n * 4)
            else:
                rows, n_in = dims
                nb = tensor_nbytes(rows, n_in, qt)
                w.add_tensor_info(name, (rows, nb // rows), np.dtype(np.uint8), nb, raw_dtype=_ggml_type(qt))

        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        rng = np.random.default_rng(seed)
        for name, dims, qt in order:
            if len(dims) == 1:
                w.write_tensor_data(np.ones(dims, dtype=np.float32))
            else:
                rows, n_in = dims
                std = 1.0 if name == "token_embd.weight" else n_in ** -0.5
                w.write_tensor_data(random_quant_rows(rng, rows, n_in, qt, std))
        w.close()
    except BaseException:
        w.close()
        path.unlink(missing_ok=True)
        raise
    return path


def shape_file_bytes(shape: ModelShape, weight_type: str = "q4_0", output_type: str = "q6_k") -> int:
    """Tensor bytes of the file write_shape_gguf produces (the tokenizer adds a few MB)."""
    total = 0
    for name, rows, n_in in shape.matrices():
        total += tensor_nbytes(rows, n_in, output_type if name == "output.weight" else weight_type)
    return total + (2 * shape.n_layer + 1) * shape.n_embd * 4
