"""The llama architecture as an ONNX graph with a KV cache, built from the GGUF's own tensors.

The graph computes what llama.cpp computes for that file:

* llama.cpp ropes llama-arch Q/K in "normal" mode (adjacent pairs), because
  ``convert_hf_to_gguf`` permuted the rows of ``attn_q``/``attn_k``. We undo that
  permutation per head and rope in the half-split ("neox") form, which is the
  same rotation on a consistently reordered head dimension: ``q·k`` is unchanged.
* RMSNorm eps, rope theta/linear scaling/``rope_freqs`` factors, GQA
  (``head_count_kv``), attention scale and tied embeddings (no ``output.weight``
  → ``token_embd``) come from the file.
* llama.cpp keeps its KV cache in float16 by default; the "standard" attention
  rounds new K/V through float16 the same way (the runtime's cache is float32).

int4 matrices use onnxruntime's ``com.microsoft.MatMulNBits``. It has no per-block
minimum, so ``W·x = Σ_b d_b·((q-8)·x)_b + Σ_b (m_b+8d_b)·sum_b(x)``: the second term
is a small float matmul of the input's 32-element block sums (exact, and it keeps
MatMulNBits on its prepacked int8 fast path, which float zero points would leave for
a dequantize-every-call path ~10x slower).

Attention ``standard`` is MatMul/Softmax/Concat with an explicit causal mask; ``gqa``
is ``com.microsoft.GroupQueryAttention`` (rotary, cache append, grouped heads, mask in
one node) with ``SkipSimplifiedLayerNormalization``, its rotary table ``max_positions``
rows long.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import ModelFileError
from . import UnsupportedModelError
from .gguf_source import LlamaShape, max_positions
from .graph import Graph
from .weights import BLOCK, QMat, dequantize_tensor, exact_qmat, quantize_rtn


def _qk_unpermute(n_head: int, head_dim: int) -> np.ndarray:
    """Row order that undoes convert_hf_to_gguf's rope permutation of attn_q/attn_k (per head)."""
    idx = np.arange(n_head * head_dim).reshape(n_head, head_dim // 2, 2)
    return idx.transpose(0, 2, 1).reshape(-1)


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


class LlamaGraphBuilder:
    """Builds one llama GGUF's graph into a ``Graph``: ``build()`` returns its inputs and outputs."""

    def __init__(self, reader, shape: LlamaShape, g: Graph, weight_format: str, *,
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
