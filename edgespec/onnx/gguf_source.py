"""Reading a llama-architecture GGUF for the ONNX converter: the file, its metadata, its hyper-parameters.

Everything the graph needs to know about the model comes from here, checked: a file that is not
plain llama (another architecture, experts, partial rotary, non-linear rope scaling) is an
``UnsupportedModelError`` before any graph is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import ModelFileError
from . import UnsupportedModelError


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


def metadata(reader, key: str, default=None):
    """A metadata value, ``default`` when absent; ``ModelFileError`` when present but unreadable."""
    f = reader.fields.get(key)
    if f is None:
        return default
    try:
        return f.contents()
    except Exception as e:  # malformed value
        raise ModelFileError(f"GGUF metadata {key!r} is unreadable: {e}") from e


def read_shape(reader) -> LlamaShape:
    """Hyper-parameters from GGUF metadata; ``UnsupportedModelError`` for anything not plain llama."""
    arch = metadata(reader, "general.architecture")
    if arch != "llama":
        raise UnsupportedModelError(
            f"the ONNX converter handles llama-architecture GGUFs only; this file is {arch!r}"
        )

    def need(key: str):
        v = metadata(reader, f"llama.{key}")
        if v is None:
            raise ModelFileError(f"GGUF metadata llama.{key} is missing")
        return v

    if int(metadata(reader, "llama.expert_count", 0) or 0) > 0:
        raise UnsupportedModelError("mixture-of-experts llama models are not supported by the ONNX converter")
    n_embd = int(need("embedding_length"))
    n_head = int(need("attention.head_count"))
    n_head_kv = int(metadata(reader, "llama.attention.head_count_kv", n_head))
    if n_head <= 0 or n_head_kv <= 0 or n_head % n_head_kv:
        raise ModelFileError(f"bad head counts: {n_head} query heads, {n_head_kv} KV heads")
    head_dim = int(metadata(reader, "llama.attention.key_length", n_embd // n_head))
    if int(metadata(reader, "llama.attention.value_length", head_dim)) != head_dim:
        raise UnsupportedModelError("different key and value head sizes are not supported")
    rope_dim = int(metadata(reader, "llama.rope.dimension_count", head_dim))
    if rope_dim != head_dim or head_dim % 2:
        raise UnsupportedModelError(
            f"partial rotary embeddings (rope dim {rope_dim} of head {head_dim}) are not supported")
    scaling = metadata(reader, "llama.rope.scaling.type", "none") or "none"
    freq_scale = 1.0
    if scaling == "linear":
        factor = float(metadata(reader, "llama.rope.scaling.factor", 1.0) or 1.0)
        freq_scale = 1.0 / factor if factor > 0 else 1.0
    elif scaling not in ("none", ""):
        raise UnsupportedModelError(f"rope scaling {scaling!r} is not supported (only linear)")
    tensors = {t.name: t for t in reader.tensors}
    if "token_embd.weight" not in tensors:
        raise ModelFileError("GGUF has no token_embd.weight tensor")
    emb_shape = [int(x) for x in tensors["token_embd.weight"].shape]  # GGML order: [n_embd, n_vocab]
    n_vocab = int(metadata(reader, "llama.vocab_size", emb_shape[1]) or emb_shape[1])
    scale = metadata(reader, "llama.attention.scale")
    return LlamaShape(
        n_layer=int(need("block_count")),
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim=head_dim,
        n_ff=int(need("feed_forward_length")),
        n_vocab=n_vocab,
        n_ctx_train=int(metadata(reader, "llama.context_length", 2048) or 2048),
        rope_theta=float(metadata(reader, "llama.rope.freq_base", 10000.0)),
        rope_freq_scale=freq_scale,
        rms_eps=float(metadata(reader, "llama.attention.layer_norm_rms_epsilon", 1e-5)),
        attn_scale=float(scale) if scale else 1.0 / float(np.sqrt(head_dim)),
        tied_embeddings="output.weight" not in tensors,
    )


def open_reader(path: Path):
    """A ``GGUFReader`` over ``path`` after the bounds-checked header precheck (llama.cpp would abort)."""
    from gguf import GGUFReader

    from ..llama import precheck_gguf

    precheck_gguf(path)  # clear errors for missing / truncated / non-GGUF files
    try:
        return GGUFReader(str(path), "r")
    except (ValueError, OSError, IndexError, KeyError) as e:
        raise ModelFileError(f"cannot read {path} as GGUF: {e}") from e
