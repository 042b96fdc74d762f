"""Convert a llama-architecture GGUF into an ONNX model with a KV cache.

The graph is built from the GGUF's own tensors (read with ``gguf.GGUFReader``),
so the ONNX model computes what llama.cpp computes for that file:

* llama.cpp ropes llama-arch Q/K in "normal" mode (adjacent pairs), because
  ``convert_hf_to_gguf`` permuted the rows of ``attn_q``/``attn_k``. We undo that
  permutation per head and rope in the half-split ("neox") form, which is the
  same rotation on a consistently reordered head dimension: ``q·k`` is unchanged.
* RMSNorm eps, rope theta/linear scaling/``rope_freqs`` factors, GQA
  (``head_count_kv``), attention scale and tied embeddings (no ``output.weight``
  → ``token_embd``) come from the file.
* llama.cpp keeps its KV cache in float16 by default; the "standard" attention
  rounds new K/V through float16 the same way (the runtime's cache is float32).

Weight formats:

``f32``
    every matrix dequantized to float32: standard ONNX ops only (opset 17), so
    any execution provider can take it. ~4x the memory and ~2.5x slower on CPU.
``int4``
    onnxruntime's ``com.microsoft.MatMulNBits``. Blocks that are already 4/8-bit
    with 32-element blocks map *exactly*: Q4_0 (zero point 8), Q8_0 (zero point
    128, 8-bit), Q4_1 and Q4_K (scale + per-block minimum). MatMulNBits has no
    per-block minimum, so ``W·x = Σ_b d_b·((q-8)·x)_b + Σ_b (m_b+8d_b)·sum_b(x)``:
    the second term is a small float matmul of the input's 32-element block sums
    (exact, and it keeps MatMulNBits on its prepacked int8 fast path, which
    float zero points would leave for a dequantize-every-call path ~10x slower).
    Any other type is dequantized and re-quantized (4-bit round-to-nearest with
    a per-block minimum for matrices, 8-bit for the embedding/output head).
    Default: 117 tok/s single-thread decode on SmolLM2-135M vs 43 for f32.

Attention:

``standard`` (default for f32)
    MatMul/Softmax/Concat with an explicit causal mask; K/V rounded like llama.cpp's.
``gqa`` (default for int4, which needs contrib ops anyway)
    ``com.microsoft.GroupQueryAttention`` (rotary, cache append, grouped heads,
    mask in one node) and ``SkipSimplifiedLayerNormalization``: ~15% faster
    decode. Its rotary table has ``max_positions`` rows, which caps the context.

Tokenization stays with llama.cpp: the output directory holds a *vocab-only*
GGUF (the source's metadata, no tensors) which ``llama.cpp`` loads with
``vocab_only=True`` in milliseconds. Re-implementing each pre-tokenizer's regex
and BPE/SPM rules in Python would be a second tokenizer that can silently
disagree with the oracle's; the backend's point is running the *weights* on
onnxruntime. ``tokenizer_info.json`` still records everything a non-llama.cpp
consumer needs (tokens, rendered piece bytes, types, merges, special ids,
add_bos, chat template, pre-tokenizer name).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import ModelFileError
from . import OnnxExportError, UnsupportedModelError

FORMAT = "edgespec-onnx"
FORMAT_VERSION = 1
OPSET = 17
IR_VERSION = 8  # opset 17's IR; older onnxruntime builds on phones refuse newer IR versions
MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer_info.json"
VOCAB_FILE = "vocab.gguf"
WEIGHT_FORMATS = ("f32", "int4")
DEFAULT_WEIGHT_FORMAT = "int4"
ATTENTIONS = ("standard", "gqa")
DEFAULT_ATTENTION = {"f32": "standard", "int4": "gqa"}
BLOCK = 32  # quantization block along the input dimension (GGUF's QK4_0/QK8_0, MatMulNBits block_size)
_EXTERNAL_MIN_BYTES = 1024
_ALIGN = 4096  # page-aligned external data lets onnxruntime memory-map it


# --------------------------------------------------------------------------- hyper-parameters


@dataclass(frozen=True)
class LlamaShape:
    """What the graph needs to know about a llama-architecture GGUF."""

    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_vocab: int
    n_ctx_train: int
    rope_theta: float
    rope_freq_scale: float
    rms_eps: float
    attn_scale: float
    tied_embeddings: bool

    @property
    def n_group(self) -> int:
        return self.n_head // self.n_head_kv


MAX_ROPE_CACHE = 16384  # rotary table rows baked into a "gqa" export (and so its longest context)


def max_positions(shape: LlamaShape) -> int:
    return int(min(shape.n_ctx_train, MAX_ROPE_CACHE)) if shape.n_ctx_train > 0 else MAX_ROPE_CACHE


def _field(reader, key: str, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    try:
        return f.contents()
    except Exception as e:  # malformed value
        raise ModelFileError(f"GGUF metadata {key!r} is unreadable: {e}") from e


def read_shape(reader) -> LlamaShape:
    """Hyper-parameters from GGUF metadata; ``UnsupportedModelError`` for anything not plain llama."""
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise UnsupportedModelError(
            f"the ONNX converter handles llama-architecture GGUFs only; this file is {arch!r}"
        )

    def need(key: str):
        v = _field(reader, f"llama.{key}")
        if v is None:
            raise ModelFileError(f"GGUF metadata llama.{key} is missing")
        return v

    if int(_field(reader, "llama.expert_count", 0) or 0) > 0:
        raise UnsupportedModelError("mixture-of-experts llama models are not supported by the ONNX converter")
    n_embd = int(need("embedding_length"))
    n_head = int(need("attention.head_count"))
    n_head_kv = int(_field(reader, "llama.attention.head_count_kv", n_head))
    if n_head <= 0 or n_head_kv <= 0 or n_head % n_head_kv:
        raise ModelFileError(f"bad head counts: {n_head} query heads, {n_head_kv} KV heads")
    head_dim = int(_field(reader, "llama.attention.key_length", n_embd // n_head))
    if int(_field(reader, "llama.attention.value_length", head_dim)) != head_dim:
        raise UnsupportedModelError("different key and value head sizes are not supported")
    rope_dim = int(_field(reader, "llama.rope.dimension_count", head_dim))
    if rope_dim != head_dim or head_dim % 2:
        raise UnsupportedModelError(
            f"partial rotary embeddings (rope dim {rope_dim} of head {head_dim}) are not supported")
    scaling = _field(reader, "llama.rope.scaling.type", "none") or "none"
    freq_scale = 1.0
    if scaling == "linear":
        factor = float(_field(reader, "llama.rope.scaling.factor", 1.0) or 1.0)
        freq_scale = 1.0 / factor if factor > 0 else 1.0
    elif scaling not in ("none", ""):
        raise UnsupportedModelError(f"rope scaling {scaling!r} is not supported (only linear)")
    tensors = {t.name: t for t in reader.tensors}
    if "token_embd.weight" not in tensors:
        raise ModelFileError("GGUF has no token_embd.weight tensor")
    emb_shape = [int(x) for x in tensors["token_embd.weight"].shape]  # GGML order: [n_embd, n_vocab]
    n_vocab = int(_field(reader, "llama.vocab_size", emb_shape[1]) or emb_shape[1])
    scale = _field(reader, "llama.attention.scale")
    return LlamaShape(
        n_layer=int(need("block_count")),
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim=head_dim,
        n_ff=int(need("feed_forward_length")),
        n_vocab=n_vocab,
        n_ctx_train=int(_field(reader, "llama.context_length", 2048) or 2048),
        rope_theta=float(_field(reader, "llama.rope.freq_base", 10000.0)),
        rope_freq_scale=freq_scale,
        rms_eps=float(_field(reader, "llama.attention.layer_norm_rms_epsilon", 1e-5)),
        attn_scale=float(scale) if scale else 1.0 / float(np.sqrt(head_dim)),
        tied_embeddings="output.weight" not in tensors,
    )


# --------------------------------------------------------------------------- weights


def dequantize_tensor(t) -> np.ndarray:
    """A GGUF tensor as float32 in numpy order (GGML's [ne0, ne1] becomes (ne1, ne0))."""
    from gguf import quants

    try:
        arr = quants.dequantize(t.data, t.tensor_type)
    except NotImplementedError as e:
        raise UnsupportedModelError(f"tensor {t.name}: {e}") from e
    shape = tuple(int(x) for x in reversed(list(t.shape)))
    return np.ascontiguousarray(arr, dtype=np.float32).reshape(shape)


@dataclass
class QMat:
    """A [N, K] matrix as 32-element blocks along K: ``w = (code - zp) * scale + min``.

    ``codes`` are unpacked (one uint8 per weight); ``mins`` is None when every block
    minimum is zero (symmetric types)."""

    bits: int
    codes: np.ndarray  # uint8 [N, K]
    scales: np.ndarray  # float32 [N, K // BLOCK]
    zp: int
    mins: np.ndarray | None = None  # float32 [N, K // BLOCK]

    @property
    def shape(self) -> tuple[int, int]:
        return self.codes.shape

    def dequantize(self) -> np.ndarray:
        n, k = self.codes.shape
        c = self.codes.reshape(n, k // BLOCK, BLOCK).astype(np.float32) - np.float32(self.zp)
        w = c * self.scales[:, :, None]
        if self.mins is not None:
            w = w + self.mins[:, :, None]
        return w.reshape(n, k)

    def centered(self) -> "QMat":
        """Same weights with the zero point mid-range: ``d·q + m = d·(q - 8) + (m + 8d)``.

        MatMulNBits' int8 path quantizes the activations; with codes 0..15 against a
        zero point of 0 that error is multiplied by uncentered codes and not cancelled
        by the (exact) block-minimum term, tripling the logit noise on SmolLM2.
        Centering leaves only the small residual minimum outside the quantized product."""
        mid = 1 << (self.bits - 1)
        if self.mins is None or self.zp == mid:
            return self
        mins = (self.mins + (mid - self.zp) * self.scales).astype(np.float32)
        return QMat(self.bits, self.codes, self.scales, mid, mins)

    def rows(self, idx: np.ndarray) -> "QMat":
        return QMat(self.bits, self.codes[idx], self.scales[idx], self.zp,
                    None if self.mins is None else self.mins[idx])

    def packed(self) -> np.ndarray:
        """MatMulNBits' B: uint8 [N, K / BLOCK, BLOCK * bits / 8], codes low nibble first along K."""
        n, k = self.codes.shape
        c = self.codes.reshape(n, k // BLOCK, BLOCK)
        if self.bits == 8:
            return np.ascontiguousarray(c)
        pairs = c.reshape(n, k // BLOCK, BLOCK // 2, 2)
        return np.ascontiguousarray(pairs[..., 0] | (pairs[..., 1] << np.uint8(4)))

    def packed_zero_points(self) -> np.ndarray:
        n, nb = self.scales.shape
        if self.bits == 8:
            return np.full(n * nb, self.zp, dtype=np.uint8)
        per_row = (nb + 1) // 2
        z = np.uint8(self.zp & 0x0F)
        return np.full((n, per_row), z | (z << np.uint8(4)), dtype=np.uint8).reshape(-1)


def _nibbles_q4(qs: np.ndarray) -> np.ndarray:
    """GGML 4-bit block bytes [nblk, 16] → codes [nblk, 32] (byte j: element j low, element j+16 high)."""
    return np.concatenate([qs & np.uint8(0x0F), qs >> np.uint8(4)], axis=-1)


def exact_qmat(t) -> QMat | None:
    """The tensor's own blocks as a QMat when the type maps onto MatMulNBits exactly, else None."""
    from gguf import GGMLQuantizationType as Q

    shape = tuple(int(x) for x in reversed(list(t.shape)))
    if len(shape) != 2:
        return None
    n, k = shape
    raw = np.asarray(t.data).reshape(n, -1).view(np.uint8)
    qt = t.tensor_type
    if qt == Q.Q4_0:
        blk = raw.reshape(n, k // 32, 18)
        d = blk[..., :2].copy().view(np.float16)[..., 0].astype(np.float32)
        codes = _nibbles_q4(blk[..., 2:]).reshape(n, k)
        return QMat(4, codes, d, 8)
    if qt == Q.Q4_1:
        blk = raw.reshape(n, k // 32, 20)
        d = blk[..., :2].copy().view(np.float16)[..., 0].astype(np.float32)
        m = blk[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
        codes = _nibbles_q4(blk[..., 4:]).reshape(n, k)
        return QMat(4, codes, d, 0, m)
    if qt == Q.Q8_0:
        blk = raw.reshape(n, k // 32, 34)
        d = blk[..., :2].copy().view(np.float16)[..., 0].astype(np.float32)
        codes = (blk[..., 2:].copy().view(np.int8).astype(np.int16) + 128).astype(np.uint8).reshape(n, k)
        return QMat(8, codes, d, 128)
    if qt == Q.Q4_K:
        from gguf.quants import Q4_K

        blk = raw.reshape(n * (k // 256), 144)
        d = blk[:, :2].copy().view(np.float16).astype(np.float32)  # [nsb, 1]
        dmin = blk[:, 2:4].copy().view(np.float16).astype(np.float32)
        sc, mn = Q4_K.get_scale_min(blk[:, 4:16])  # [nsb, 8] each
        qs = blk[:, 16:].reshape(-1, 4, 1, 32) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)
        codes = (qs & np.uint8(0x0F)).reshape(n, k)
        scales = (d * sc.astype(np.float32)).reshape(n, k // 32)
        mins = (-(dmin * mn.astype(np.float32))).reshape(n, k // 32)
        return QMat(4, codes, scales, 0, mins)
    return None


def quantize_rtn(w: np.ndarray, bits: int) -> QMat:
    """Round-to-nearest block quantization of a float matrix (for types with no exact mapping).

    4-bit is asymmetric (scale + minimum, like Q4_1); 8-bit is symmetric (like Q8_0)."""
    n, k = w.shape
    b = w.astype(np.float32).reshape(n, k // BLOCK, BLOCK)
    if bits == 4:
        lo = b.min(axis=-1)
        hi = b.max(axis=-1)
        d = (hi - lo) / 15.0
        inv = np.where(d > 0, 1.0 / np.where(d > 0, d, 1.0), 0.0)
        codes = np.clip(np.rint((b - lo[..., None]) * inv[..., None]), 0, 15).astype(np.uint8)
        return QMat(4, codes.reshape(n, k), d.astype(np.float32), 0, lo.astype(np.float32))
    if bits == 8:
        d = np.abs(b).max(axis=-1) / 127.0
        inv = np.where(d > 0, 1.0 / np.where(d > 0, d, 1.0), 0.0)
        q = np.clip(np.rint(b * inv[..., None]), -127, 127).astype(np.int16) + 128
        return QMat(8, q.astype(np.uint8).reshape(n, k), d.astype(np.float32), 128)
    raise ValueError(f"unsupported bit width {bits}")


def _qk_unpermute(n_head: int, head_dim: int) -> np.ndarray:
    """Row order that undoes convert_hf_to_gguf's rope permutation of attn_q/attn_k (per head)."""
    idx = np.arange(n_head * head_dim).reshape(n_head, head_dim // 2, 2)
    return idx.transpose(0, 2, 1).reshape(-1)


# --------------------------------------------------------------------------- graph building


class _Graph:
    """Collects nodes and initializers; big initializers go to one external data file."""

    def __init__(self, data_path: Path) -> None:
        from onnx import helper

        self.helper = helper
        self.nodes: list = []
        self.inits: list = []
        self._names: set[str] = set()
        self._n = 0
        self._data_path = data_path
        self._data = open(data_path, "wb")
        self.uses_contrib = False

    def close(self) -> None:
        if not self._data.closed:
            self._data.close()

    def fresh(self, base: str) -> str:
        self._n += 1
        return f"{base}__{self._n}"

    def init(self, name: str, arr: np.ndarray) -> str:
        from onnx import TensorProto, numpy_helper

        if name in self._names:
            raise AssertionError(f"duplicate initializer {name}")
        self._names.add(name)
        arr = np.ascontiguousarray(arr)
        if arr.nbytes < _EXTERNAL_MIN_BYTES:
            self.inits.append(numpy_helper.from_array(arr, name))
            return name
        t = TensorProto()
        t.name = name
        t.data_type = self.helper.np_dtype_to_tensor_dtype(arr.dtype)
        t.dims.extend(arr.shape)
        pos = self._data.tell()
        offset = (pos + _ALIGN - 1) // _ALIGN * _ALIGN
        if offset > pos:
            self._data.write(b"\x00" * (offset - pos))
        self._data.write(arr.tobytes())
        t.data_location = TensorProto.EXTERNAL
        for key, value in (("location", DATA_FILE), ("offset", str(offset)), ("length", str(arr.nbytes))):
            e = t.external_data.add()
            e.key, e.value = key, value
        self.inits.append(t)
        return name

    def const(self, value, dtype=np.int64, name: str | None = None) -> str:
        return self.init(name or self.fresh("c"), np.asarray(value, dtype=dtype))

    def op(self, op_type: str, inputs: list[str], *, outputs: int | list[str] = 1, domain: str = "", **attrs):
        if isinstance(outputs, int):
            outs = [self.fresh(op_type.lower()) for _ in range(outputs)]
        else:
            outs = list(outputs)
        if domain:
            self.uses_contrib = True
        self.nodes.append(self.helper.make_node(op_type, inputs, outs, name=self.fresh("n_" + op_type),
                                                domain=domain or None, **attrs))
        return outs[0] if len(outs) == 1 else outs


@dataclass
class _Lin:
    """One linear layer's weight [N, K]: float32 or block-quantized."""

    f32: np.ndarray | None = None
    q: QMat | None = None


def _fuse(parts: list[_Lin]) -> _Lin | None:
    """Stack weights that read the same input (Q|K|V, gate|up) into one matmul, if their formats agree."""
    if all(p.f32 is not None for p in parts):
        return _Lin(f32=np.concatenate([p.f32 for p in parts], axis=0))
    if any(p.q is None for p in parts):
        return None
    qs = [p.q.centered() for p in parts]  # Q4_0 and Q4_1/Q4_K parts agree once centered
    if len({(q.bits, q.zp) for q in qs}) != 1:
        return None
    mins = None
    if any(q.mins is not None for q in qs):
        mins = np.concatenate([q.mins if q.mins is not None else np.zeros_like(q.scales) for q in qs], axis=0)
    return _Lin(q=QMat(qs[0].bits, np.concatenate([q.codes for q in qs]), np.concatenate([q.scales for q in qs]),
                       qs[0].zp, mins))


class _Builder:
    def __init__(self, reader, shape: LlamaShape, g: _Graph, weight_format: str, *,
                 accuracy_level: int, kv_f16: bool, attention: str) -> None:
        self.s = shape
        self.g = g
        self.fmt = weight_format
        self.accuracy_level = accuracy_level
        self.attention = attention
        self.kv_f16 = kv_f16 and attention == "standard"  # the fused kernel ropes and appends K/V itself
        self.max_positions = max_positions(shape)
        self.tensors = {t.name: t for t in reader.tensors}
        self._blocksums: dict[str, str] = {}

    # ---- weights
    def tensor(self, name: str):
        t = self.tensors.get(name)
        if t is None:
            raise ModelFileError(f"GGUF tensor {name} is missing")
        return t

    def vector(self, name: str, n: int) -> np.ndarray:
        v = dequantize_tensor(self.tensor(name)).reshape(-1)
        if v.shape[0] != n:
            raise ModelFileError(f"tensor {name} has {v.shape[0]} elements, expected {n}")
        return v

    def matrix(self, name: str, n: int, k: int, *, rows: np.ndarray | None = None) -> _Lin:
        t = self.tensor(name)
        shp = tuple(int(x) for x in reversed(list(t.shape)))
        if shp != (n, k):
            raise ModelFileError(f"tensor {name} has shape {shp}, expected {(n, k)}")
        if self.fmt == "f32" or k % BLOCK:
            w = dequantize_tensor(t)
            return _Lin(f32=w if rows is None else np.ascontiguousarray(w[rows]))
        q = exact_qmat(t)
        if q is None:
            q = quantize_rtn(dequantize_tensor(t), 4)
        return _Lin(q=q if rows is None else q.rows(rows))

    def optional_bias(self, name: str, n: int, rows: np.ndarray | None = None) -> np.ndarray | None:
        if name not in self.tensors:
            return None
        b = self.vector(name, n)
        return b if rows is None else b[rows]

    # ---- ops
    def blocksums(self, x: str, k: int) -> str:
        """Sums of x over each 32-wide block of K ([S, K/32]); shared by every matmul reading x."""
        if x not in self._blocksums:
            g = self.g
            r = g.op("Reshape", [x, g.const([-1, k // BLOCK, BLOCK])])
            self._blocksums[x] = g.op("ReduceSum", [r, g.const([-1])], keepdims=0)
        return self._blocksums[x]

    def linear(self, x: str, lin: _Lin, k: int, name: str, bias: np.ndarray | None = None) -> str:
        g = self.g
        if lin.f32 is not None:
            y = g.op("MatMul", [x, g.init(f"{name}.weight_t", np.ascontiguousarray(lin.f32.T))])
        else:
            y = self.matmul_q(x, self.q_weights(name, lin.q), k)
        if bias is not None:
            y = g.op("Add", [y, g.init(f"{name}.bias", bias.astype(np.float32))])
        return y

    def rms_norm(self, x: str, weight: np.ndarray, name: str) -> str:
        # Pow → ReduceMean → Add → Sqrt → Div → Mul: the pattern onnxruntime fuses into SimplifiedLayerNormalization
        g = self.g
        sq = g.op("Pow", [x, g.const(2.0, np.float32)])
        ms = g.op("ReduceMean", [sq], axes=[-1], keepdims=1)
        rt = g.op("Sqrt", [g.op("Add", [ms, g.const(self.s.rms_eps, np.float32)])])
        return g.op("Mul", [g.op("Div", [x, rt]), g.init(name, weight.astype(np.float32))])

    def add_norm(self, h: str, y: str, weight_name: str) -> tuple[str, str]:
        """Residual add then RMSNorm: (h + y, norm(h + y)); one fused node when contrib ops are in use."""
        g = self.g
        w = self.vector(weight_name, self.s.n_embd)
        if self.attention == "gqa":
            outs = g.op("SkipSimplifiedLayerNormalization", [y, h, g.init(weight_name, w.astype(np.float32))],
                        outputs=[g.fresh("norm"), "", "", g.fresh("resid")], domain="com.microsoft",
                        epsilon=float(self.s.rms_eps))
            return outs[3], outs[0]
        h2 = g.op("Add", [h, y])
        return h2, self.rms_norm(h2, w, weight_name)

    def rope(self, x: str, cos: str, sin_signed: str) -> str:
        """Half-split rotation: x·cos + [x2, x1]·[-sin, sin] (x: [heads, S, head_dim])."""
        g = self.g
        half = self.s.head_dim // 2
        a, b = g.op("Split", [x, g.const([half, half])], outputs=2, axis=-1)
        swapped = g.op("Concat", [b, a], axis=-1)
        return g.op("Add", [g.op("Mul", [x, cos]), g.op("Mul", [swapped, sin_signed])])

    def round_f16(self, x: str) -> str:
        from onnx import TensorProto

        if not self.kv_f16:
            return x
        return self.g.op("Cast", [self.g.op("Cast", [x], to=TensorProto.FLOAT16)], to=TensorProto.FLOAT)

    # ---- the model
    def build(self):
        from onnx import TensorProto, helper

        s, g = self.s, self.g
        E, H, HK, D, F, V = s.n_embd, s.n_head, s.n_head_kv, s.head_dim, s.n_ff, s.n_vocab
        inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "seq"])]
        outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, "kept", V])]
        for i in range(s.n_layer):
            for kv in ("key", "value"):
                inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kv}", TensorProto.FLOAT,
                                                            [1, HK, "past", D]))
                outputs.append(helper.make_tensor_value_info(f"present.{i}.{kv}", TensorProto.FLOAT,
                                                             [1, HK, "total", D]))
        # logits_to_keep: an input with a default (1 = last position only; 0 = every position)
        inputs.append(helper.make_tensor_value_info("logits_to_keep", TensorProto.INT64, [1]))
        g.const([1], name="logits_to_keep")

        # positions come from the cache length, so they can never disagree with it
        ids = g.op("Reshape", ["input_ids", g.const([-1])])  # [S]
        past_len = g.op("Shape", ["past_key_values.0.key"], start=2, end=3)  # [1]
        seq_len = g.op("Shape", ["input_ids"], start=1, end=2)
        total = g.op("Add", [past_len, seq_len])
        inv = self.inv_freq()
        if self.attention == "gqa":
            self._seqlens_k = g.op("Cast", [g.op("Sub", [total, g.const([1])])], to=TensorProto.INT32)  # [1]
            self._total_len = g.op("Cast", [g.op("Reshape", [total, g.const([], np.int64)])], to=TensorProto.INT32)
            ang = np.arange(self.max_positions, dtype=np.float32)[:, None] * inv[None, :]
            self._cos_cache = g.init("rope.cos_cache", np.cos(ang).astype(np.float32))
            self._sin_cache = g.init("rope.sin_cache", np.sin(ang).astype(np.float32))
        else:
            scalar = g.const([], np.int64)  # empty shape → Reshape to scalar
            t0 = g.op("Reshape", [total, scalar])
            one = g.const(1)
            pos = g.op("Range", [g.op("Reshape", [past_len, scalar]), t0, one])  # [S]
            keys = g.op("Range", [g.const(0), t0, one])  # [T]
            future = g.op("Greater", [g.op("Unsqueeze", [keys, g.const([0])]),
                                      g.op("Unsqueeze", [pos, g.const([1])])])
            mask = g.op("Where", [future, g.const(-np.inf, np.float32), g.const(0.0, np.float32)])  # [S, T]
            self._mask = g.op("Tile", [mask, g.const([s.n_group, 1])])  # [G*S, T]: rows are head-group-major
            # rotary tables, shared by every layer
            posf = g.op("Unsqueeze", [g.op("Cast", [pos], to=TensorProto.FLOAT), g.const([1])])  # [S,1]
            freqs = g.op("Mul", [posf, g.init("rope.inv_freq", inv.reshape(1, -1))])  # [S, D/2]
            ang = g.op("Concat", [freqs, freqs], axis=-1)
            self._cos = g.op("Cos", [ang])
            self._sin_signed = g.op("Mul", [g.op("Sin", [ang]), g.init(
                "rope.sign", np.r_[-np.ones(D // 2), np.ones(D // 2)].astype(np.float32))])

        # embeddings and output head (tied: one tensor serves both)
        head_name = "token_embd.weight" if s.tied_embeddings else "output.weight"
        if self.fmt == "f32":
            emb_w = g.init("token_embd.weight", dequantize_tensor(self.tensor("token_embd.weight")))
            head_w = emb_w if s.tied_embeddings else g.init("output.weight", dequantize_tensor(self.tensor(head_name)))
            h = g.op("Gather", [emb_w, ids], axis=0)
            head = None
        else:
            head_q = self.head_qmat(head_name, V, E)
            head = self.q_weights("lm_head", head_q)
            if s.tied_embeddings:
                h = self.embed_q(ids, head)
            else:
                emb_q = self.head_qmat("token_embd.weight", V, E)
                h = self.embed_q(ids, self.q_weights("token_embd", emb_q))

        perm = _qk_unpermute(H, D)
        perm_k = _qk_unpermute(HK, D)
        x = self.rms_norm(h, self.vector("blk.0.attn_norm.weight", E), "blk.0.attn_norm.weight")
        for i in range(s.n_layer):
            p = f"blk.{i}"
            wq = self.matrix(f"{p}.attn_q.weight", H * D, E, rows=perm)
            wk = self.matrix(f"{p}.attn_k.weight", HK * D, E, rows=perm_k)
            wv = self.matrix(f"{p}.attn_v.weight", HK * D, E)
            bq = self.optional_bias(f"{p}.attn_q.bias", H * D, perm)
            bk = self.optional_bias(f"{p}.attn_k.bias", HK * D, perm_k)
            bv = self.optional_bias(f"{p}.attn_v.bias", HK * D)
            fused = _fuse([wq, wk, wv])
            if fused is not None:
                bias = None
                if any(b is not None for b in (bq, bk, bv)):
                    bias = np.concatenate([b if b is not None else np.zeros(n, np.float32)
                                           for b, n in ((bq, H * D), (bk, HK * D), (bv, HK * D))])
                qkv = self.linear(x, fused, E, f"{p}.attn_qkv", bias)
                ctx = self.attend(i, qkv=qkv)
            else:
                ctx = self.attend(i, q=self.linear(x, wq, E, f"{p}.attn_q", bq),
                                  k=self.linear(x, wk, E, f"{p}.attn_k", bk),
                                  v=self.linear(x, wv, E, f"{p}.attn_v", bv))
            wo = self.matrix(f"{p}.attn_output.weight", E, H * D)
            attn_out = self.linear(ctx, wo, H * D, f"{p}.attn_output", self.optional_bias(f"{p}.attn_output.bias", E))
            h, x = self.add_norm(h, attn_out, f"{p}.ffn_norm.weight")
            wg = self.matrix(f"{p}.ffn_gate.weight", F, E)
            wu = self.matrix(f"{p}.ffn_up.weight", F, E)
            bg = self.optional_bias(f"{p}.ffn_gate.bias", F)
            bu = self.optional_bias(f"{p}.ffn_up.bias", F)
            fused = _fuse([wg, wu])
            if fused is not None:
                bias = None
                if bg is not None or bu is not None:
                    bias = np.concatenate([b if b is not None else np.zeros(F, np.float32) for b in (bg, bu)])
                gu = self.linear(x, fused, E, f"{p}.ffn_gate_up", bias)
                gate, up = g.op("Split", [gu, g.const([F, F])], outputs=2, axis=-1)
            else:
                gate = self.linear(x, wg, E, f"{p}.ffn_gate", bg)
                up = self.linear(x, wu, E, f"{p}.ffn_up", bu)
            act = g.op("Mul", [g.op("Mul", [gate, g.op("Sigmoid", [gate])]), up])
            wd = self.matrix(f"{p}.ffn_down.weight", E, F)
            ffn_out = self.linear(act, wd, F, f"{p}.ffn_down", self.optional_bias(f"{p}.ffn_down.bias", E))
            if i + 1 < s.n_layer:
                h, x = self.add_norm(h, ffn_out, f"blk.{i + 1}.attn_norm.weight")
            else:
                h = g.op("Add", [h, ffn_out])

        neg = g.op("Neg", ["logits_to_keep"])
        last = g.op("Slice", [h, neg, g.const([np.iinfo(np.int64).max]), g.const([0])])
        last = self.rms_norm(last, self.vector("output_norm.weight", E), "output_norm.weight")
        if head is None:
            logits = g.op("Gemm", [last, head_w], transB=1)
        else:
            logits = self.matmul_q(last, head, E)
        g.op("Reshape", [logits, g.const([1, -1, V])], outputs=["logits"])
        return inputs, outputs

    def inv_freq(self) -> np.ndarray:
        """Rotary frequencies as llama.cpp builds them: repeated float32 products of theta_scale."""
        s = self.s
        D = s.head_dim
        theta_scale = np.float32(s.rope_theta) ** np.float32(-2.0 / D)
        inv = np.empty(D // 2, dtype=np.float32)
        acc = np.float32(s.rope_freq_scale)
        for j in range(D // 2):
            inv[j] = acc
            acc = np.float32(acc * theta_scale)
        if "rope_freqs.weight" in self.tensors:  # llama 3.x frequency factors divide theta
            inv = (inv / self.vector("rope_freqs.weight", D // 2)).astype(np.float32)
        return inv

    def attend(self, i: int, *, qkv: str | None = None, q: str | None = None, k: str | None = None,
               v: str | None = None) -> str:
        """Causal GQA over past + new keys for layer ``i``; writes present.{i}.*; returns [S, H*D]."""
        s, g = self.s, self.g
        H, HK, D = s.n_head, s.n_head_kv, s.head_dim
        past_k, past_v = f"past_key_values.{i}.key", f"past_key_values.{i}.value"
        present = [f"present.{i}.key", f"present.{i}.value"]
        if self.attention == "gqa":
            # onnxruntime's fused kernel: rotary, cache append, grouped heads and the causal mask in one node
            if qkv is not None:
                qkv_in = [g.op("Unsqueeze", [qkv, g.const([0])]), "", ""]
            else:
                qkv_in = [g.op("Unsqueeze", [t, g.const([0])]) for t in (q, k, v)]
            out = g.op("GroupQueryAttention",
                       qkv_in + [past_k, past_v, self._seqlens_k, self._total_len, self._cos_cache, self._sin_cache],
                       outputs=[g.fresh("gqa_out")] + present, domain="com.microsoft",
                       num_heads=H, kv_num_heads=HK, scale=float(s.attn_scale), do_rotary=1, rotary_interleaved=0)
            return g.op("Reshape", [out[0], g.const([-1, H * D])])
        if qkv is not None:
            q, k, v = g.op("Split", [qkv, g.const([H * D, HK * D, HK * D])], outputs=3, axis=-1)
        q = g.op("Transpose", [g.op("Reshape", [q, g.const([-1, H, D])])], perm=[1, 0, 2])  # [H,S,D]
        k = g.op("Transpose", [g.op("Reshape", [k, g.const([-1, HK, D])])], perm=[1, 0, 2])  # [HK,S,D]
        v = g.op("Transpose", [g.op("Reshape", [v, g.const([-1, HK, D])])], perm=[1, 0, 2])
        q = g.op("Mul", [self.rope(q, self._cos, self._sin_signed), g.const(s.attn_scale, np.float32)])
        k = self.round_f16(self.rope(k, self._cos, self._sin_signed))
        v = self.round_f16(v)
        pk = g.op("Concat", [past_k, g.op("Unsqueeze", [k, g.const([0])])], axis=2, outputs=[present[0]])
        pv = g.op("Concat", [past_v, g.op("Unsqueeze", [v, g.const([0])])], axis=2, outputs=[present[1]])
        k3 = g.op("Reshape", [pk, g.const([HK, -1, D])])  # [HK,T,D]
        v3 = g.op("Reshape", [pv, g.const([HK, -1, D])])
        qg = g.op("Reshape", [q, g.const([HK, -1, D])])  # [HK, G*S, D]: head h uses KV head h // G
        scores = g.op("MatMul", [qg, g.op("Transpose", [k3], perm=[0, 2, 1])])  # [HK, G*S, T]
        probs = g.op("Softmax", [g.op("Add", [scores, self._mask])], axis=-1)
        ctx = g.op("MatMul", [probs, v3])  # [HK, G*S, D]
        ctx = g.op("Reshape", [ctx, g.const([H, -1, D])])
        return g.op("Reshape", [g.op("Transpose", [ctx], perm=[1, 0, 2]), g.const([-1, H * D])])

    def head_qmat(self, name: str, n: int, k: int) -> QMat:
        """Embedding/output matrix: its own blocks when exact, else 8-bit (the logits are the most sensitive)."""
        t = self.tensor(name)
        shp = tuple(int(x) for x in reversed(list(t.shape)))
        if shp != (n, k):
            raise ModelFileError(f"tensor {name} has shape {shp}, expected {(n, k)}")
        if k % BLOCK:
            raise UnsupportedModelError(
                f"int4 export needs n_embd divisible by {BLOCK} (got {k}); use weight_format='f32'")
        q = exact_qmat(t)
        return q if q is not None else quantize_rtn(dequantize_tensor(t), 8)

    def q_weights(self, name: str, q: QMat) -> dict:
        g = self.g
        q = q.centered()
        w = {"q": q, "packed": g.init(f"{name}.qweight", q.packed()),
             "scales": g.init(f"{name}.scales", q.scales.reshape(-1)),
             "zp": g.init(f"{name}.zero_points", q.packed_zero_points()), "mins_t": None, "name": name}
        if q.mins is not None and np.any(q.mins):
            w["mins_t"] = g.init(f"{name}.block_mins_t", np.ascontiguousarray(q.mins.T))
        return w

    def matmul_q(self, x: str, w: dict, k: int) -> str:
        g = self.g
        q = w["q"]
        y = g.op("MatMulNBits", [x, w["packed"], w["scales"], w["zp"]], domain="com.microsoft",
                 K=k, N=q.codes.shape[0], bits=q.bits, block_size=BLOCK, accuracy_level=self.accuracy_level)
        if w["mins_t"] is not None:
            y = g.op("Add", [y, g.op("MatMul", [self.blocksums(x, k), w["mins_t"]])])
        return y

    def embed_q(self, ids: str, w: dict) -> str:
        """Gather quantized rows (the same bytes the output head reads when tied) and dequantize them."""
        from onnx import TensorProto

        g = self.g
        q = w["q"]  # as stored (centered), not as read
        E = self.s.n_embd
        nb = E // BLOCK
        rows = g.op("Gather", [w["packed"], ids], axis=0)  # [S, nb, blob] uint8
        if q.bits == 4:
            four = g.const(4, np.uint8)
            lo = g.op("BitShift", [g.op("BitShift", [rows, four], direction="LEFT"), four], direction="RIGHT")
            hi = g.op("BitShift", [rows, four], direction="RIGHT")
            pair = g.op("Concat", [g.op("Unsqueeze", [lo, g.const([-1])]), g.op("Unsqueeze", [hi, g.const([-1])])],
                        axis=-1)
            rows = g.op("Reshape", [pair, g.const([-1, nb, BLOCK])])
        c = g.op("Sub", [g.op("Cast", [rows], to=TensorProto.FLOAT), g.const(float(q.zp), np.float32)])
        sc = g.op("Gather", [g.op("Reshape", [w["scales"], g.const([-1, nb])]), ids], axis=0)  # [S, nb]
        x = g.op("Mul", [c, g.op("Unsqueeze", [sc, g.const([-1])])])
        if w["mins_t"] is not None:
            mn = g.op("Gather", [g.init(f"{w['name']}.block_mins", q.mins), ids], axis=0)
            x = g.op("Add", [x, g.op("Unsqueeze", [mn, g.const([-1])])])
        return g.op("Reshape", [x, g.const([-1, E])])


# --------------------------------------------------------------------------- tokenizer side files


def _write_vocab_gguf(reader, path: Path) -> None:
    """The source's metadata without tensors: what llama.cpp needs to tokenize with vocab_only."""
    import gguf

    arch = _field(reader, "general.architecture")
    w = gguf.GGUFWriter(str(path), arch)
    for key, f in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or not f.types:
            continue
        main = f.types[0]
        if main == gguf.GGUFValueType.ARRAY:
            sub = f.types[-1]
            if sub == gguf.GGUFValueType.STRING:
                val = [bytes(f.parts[i]) for i in f.data]  # raw bytes: tokens need not be valid UTF-8
            else:
                val = f.contents()
            if len(f.types) > 2:
                raise UnsupportedModelError(f"nested GGUF array {key} is not supported")
            w.add_key_value(key, val, main, sub_type=sub)
        elif main == gguf.GGUFValueType.STRING:
            w.add_key_value(key, bytes(f.parts[-1]), main)
        else:
            w.add_key_value(key, f.contents(), main)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _tokenizer_info(reader, vocab_path: Path) -> dict:
    import gguf

    from ..llama import LlamaModel

    def arr(key):
        f = reader.fields.get(key)
        if f is None or not f.types:
            return None
        if f.types[-1] == gguf.GGUFValueType.STRING:  # lenient: a token need not be valid UTF-8
            return [bytes(f.parts[i]).decode("utf-8", "replace") for i in f.data]
        return list(f.contents())

    lm = LlamaModel(vocab_path, vocab_only=True)
    try:
        pieces = [lm.token_bytes(i).hex() for i in range(lm.n_vocab)]
        info = {
            "model": _field(reader, "tokenizer.ggml.model"),
            "pre": _field(reader, "tokenizer.ggml.pre"),
            "n_vocab": lm.n_vocab,
            "tokens": arr("tokenizer.ggml.tokens"),
            "pieces_hex": pieces,  # what each token renders to (llama_token_to_piece, special=True)
            "token_type": arr("tokenizer.ggml.token_type"),
            "scores": arr("tokenizer.ggml.scores"),
            "merges": arr("tokenizer.ggml.merges"),
            "bos_token_id": lm.bos_token(),
            "eos_token_id": lm.eos_token(),
            "eog_token_ids": [i for i in range(lm.n_vocab) if lm.is_eog(i)],
            "add_bos": lm.add_bos,
            "add_eos": bool(_field(reader, "tokenizer.ggml.add_eos_token", False)),
            "add_space_prefix": _field(reader, "tokenizer.ggml.add_space_prefix"),
            "chat_template": lm.chat_template(),
            "tokenize_with": VOCAB_FILE,
        }
    finally:
        lm.close()
    return info


# --------------------------------------------------------------------------- entry points


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _open_reader(path: Path):
    from gguf import GGUFReader

    from ..llama import precheck_gguf

    precheck_gguf(path)  # clear errors for missing / truncated / non-GGUF files
    try:
        return GGUFReader(str(path), "r")
    except (ValueError, OSError, IndexError, KeyError) as e:
        raise ModelFileError(f"cannot read {path} as GGUF: {e}") from e


def convert_gguf_to_onnx(gguf_path: str | os.PathLike, out_dir: str | os.PathLike, *,
                         weight_format: str = DEFAULT_WEIGHT_FORMAT, attention: str | None = None,
                         accuracy_level: int = 4, kv_f16: bool = True) -> Path:
    """Write ``out_dir`` with model.onnx (+ .data), config.json, tokenizer_info.json and vocab.gguf.

    The directory appears complete or not at all: everything is built in a sibling
    temporary directory and renamed into place, replacing an older conversion.
    ``accuracy_level`` is MatMulNBits' (4: int8 activations, like llama.cpp's own
    quantized dot products; 1: float32). ``kv_f16`` rounds K/V like llama.cpp's f16 cache.
    """
    if weight_format not in WEIGHT_FORMATS:
        raise ValueError(f"weight_format must be one of {WEIGHT_FORMATS}, not {weight_format!r}")
    if attention is None:
        attention = DEFAULT_ATTENTION[weight_format]
    if attention not in ATTENTIONS:
        raise ValueError(f"attention must be one of {ATTENTIONS}, not {attention!r}")
    if accuracy_level not in (0, 1, 2, 3, 4):
        raise ValueError("accuracy_level must be 0..4")
    src = Path(gguf_path).expanduser()
    out = Path(out_dir).expanduser()
    reader = _open_reader(src)
    shape = read_shape(reader)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{time.monotonic_ns()}"
        tmp.mkdir()
    except OSError as e:
        raise OnnxExportError(f"cannot create {out}: {e}") from e
    try:
        t0 = time.perf_counter()
        g = _Graph(tmp / DATA_FILE)
        try:
            b = _Builder(reader, shape, g, weight_format, accuracy_level=accuracy_level, kv_f16=kv_f16,
                         attention=attention)
            inputs, outputs = b.build()
        finally:
            g.close()
        _save_model(g, inputs, outputs, tmp / MODEL_FILE)
        _write_vocab_gguf(reader, tmp / VOCAB_FILE)
        info = _tokenizer_info(reader, tmp / VOCAB_FILE)
        (tmp / TOKENIZER_FILE).write_text(json.dumps(info, ensure_ascii=False))
        st = src.stat()
        config = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "architecture": "llama",
            "shape": asdict(shape),
            "weight_format": weight_format,
            "accuracy_level": accuracy_level if weight_format == "int4" else None,
            "attention": attention,
            "kv_f16_rounding": b.kv_f16,
            "max_positions": b.max_positions if attention == "gqa" else None,
            "opset": OPSET,
            "contrib_ops": g.uses_contrib,
            "io": {
                "input_ids": "input_ids",
                "past": "past_key_values.{layer}.{key|value}",
                "present": "present.{layer}.{key|value}",
                "logits": "logits",
                "logits_to_keep": "logits_to_keep",
                "kv_shape": [1, shape.n_head_kv, "seq", shape.head_dim],
            },
            "files": {"model": MODEL_FILE, "data": DATA_FILE, "tokenizer": TOKENIZER_FILE, "vocab": VOCAB_FILE},
            "source": {"file": src.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                       "sha256": _file_digest(src)},
            "convert_seconds": round(time.perf_counter() - t0, 2),
        }
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=1))
        _replace_dir(tmp, out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise OnnxExportError(f"writing the ONNX model to {out} failed: {e}") from e
        raise
    return out


def _save_model(g: _Graph, inputs, outputs, path: Path) -> None:
    import onnx
    from onnx import helper

    graph = helper.make_graph(g.nodes, "edgespec_llama", inputs, outputs, initializer=g.inits)
    opsets = [helper.make_opsetid("", OPSET)]
    if g.uses_contrib:
        opsets.append(helper.make_opsetid("com.microsoft", 1))
    model = helper.make_model(graph, opset_imports=opsets, producer_name="edgespec", ir_version=IR_VERSION)
    with path.open("wb") as f:
        f.write(model.SerializeToString())
    onnx.checker.check_model(str(path))  # by path: reads external data lazily


def _replace_dir(tmp: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}-{time.monotonic_ns()}"
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except OSError:
        try:  # another process finished the same export between our two renames: keep theirs
            read_config(out)
        except ModelFileError:
            if old is not None and not out.exists():
                os.replace(old, out)  # put the previous export back
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_config(onnx_dir: str | os.PathLike) -> dict:
    """The conversion's config.json, checked for format and completeness (``ModelFileError`` if not)."""
    d = Path(onnx_dir).expanduser()
    cfg_path = d / CONFIG_FILE
    if not cfg_path.is_file():
        raise ModelFileError(f"{d} is not an exported ONNX drafter (no {CONFIG_FILE}); "
                             f"run `edgespec models export-onnx NAME`")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as e:
        raise ModelFileError(f"{cfg_path} is unreadable: {e}") from e
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise ModelFileError(f"{cfg_path} is not an edgespec ONNX export")
    if cfg.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(f"{d} was exported in format {cfg.get('format_version')}, this edgespec reads "
                             f"{FORMAT_VERSION}; export it again")
    shape = cfg.get("shape")
    fields = ("n_layer", "n_head_kv", "head_dim", "n_vocab")
    if not isinstance(shape, dict) or not all(isinstance(shape.get(k), int) and shape[k] > 0 for k in fields):
        raise ModelFileError(f"{cfg_path} has no valid model shape; export it again")
    for key in ("model", "data", "tokenizer", "vocab"):
        name = (cfg.get("files") or {}).get(key)
        if not name or not (d / name).is_file():
            raise ModelFileError(f"{d} is incomplete: {key} file {name!r} is missing")
    return cfg


def onnx_cache_dir() -> Path:
    """Where exported drafters live: <edgespec cache>/onnx."""
    try:
        from ..catalog import cache_dir
    except ImportError:  # pragma: no cover - catalog is part of the package
        import platformdirs

        return Path(platformdirs.user_cache_dir("edgespec")) / "onnx"
    return cache_dir() / "onnx"


def _is_current(out: Path, src: Path, weight_format: str) -> bool:
    try:
        cfg = read_config(out)
    except ModelFileError:
        return False
    source = cfg.get("source") or {}
    if cfg.get("weight_format") != weight_format:
        return False
    st = src.stat()
    if source.get("size") != st.st_size:
        return False
    if source.get("mtime_ns") == st.st_mtime_ns:
        return True
    return source.get("sha256") == _file_digest(src)


def export_onnx(name_or_path: str | os.PathLike, *, out_dir: str | os.PathLike | None = None,
                weight_format: str = DEFAULT_WEIGHT_FORMAT, force: bool = False, fetch: bool = False) -> Path:
    """Convert a catalog model (or a local .gguf) into the model cache; reuse an up-to-date export.

    Returns the export directory (``<cache>/onnx/<gguf stem>-<weight_format>`` by default).
    ``fetch`` downloads a catalog model that is not cached yet (as ``resolve_model`` does)."""
    if weight_format not in WEIGHT_FORMATS:
        raise ValueError(f"weight_format must be one of {WEIGHT_FORMATS}, not {weight_format!r}")
    from ..catalog import resolve_model

    src = Path(resolve_model(name_or_path, fetch=fetch, progress=False) if fetch else resolve_model(name_or_path))
    out = Path(out_dir).expanduser() if out_dir is not None else onnx_cache_dir() / f"{src.stem}-{weight_format}"
    if not force and _is_current(out, src, weight_format):
        return out
    return convert_gguf_to_onnx(src, out, weight_format=weight_format)
