"""``OnnxCausalLM``: an exported drafter on onnxruntime, behind the draft-LM interface of ``LlamaModel``.

The drafters (model, bridge) only call ``tokenize / token_bytes / detokenize /
is_eog / bos_token / add_bos / sync / step / tokens / close``, so either backend
plugs in. The KV cache is a list of numpy arrays ``[1, n_kv, T, head_dim]`` per
layer: the graph takes them as ``past_key_values.*`` and returns
``present.*`` one position longer, and a rewind is a slice.

Tokenization goes through llama.cpp on the export's vocab-only GGUF (see
``convert``): byte-for-byte the tokenizer llama.cpp would use for the source file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .. import EdgespecError, ModelFileError, PromptError
from . import ProviderError
from ..prefix_cache import PrefixCache
from .convert import read_config


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def _check_providers(providers) -> list:
    """Validate names against this onnxruntime build; accepts names or (name, options) pairs."""
    if isinstance(providers, str):
        providers = [providers]
    out = list(providers or ())
    if not out:
        raise ProviderError("no execution provider given (e.g. 'CPUExecutionProvider')")
    have = available_providers()
    for p in out:
        name = p[0] if isinstance(p, (tuple, list)) else p
        if not isinstance(name, str) or name not in have:
            raise ProviderError(
                f"execution provider {name!r} is not available in this onnxruntime build; available: {', '.join(have)}"
            )
    return out


class OnnxCausalLM(PrefixCache):
    """A converted llama-architecture model with one KV-cache sequence kept in step with ``self.tokens``.

    ``providers``: execution providers in priority order, names or ``(name, options)``
    pairs, checked against this onnxruntime build. ``n_threads``: onnxruntime intra-op
    threads (None → 1: a 135M drafter gains nothing from a second thread on this
    machine, see the report in the ONNX issue). ``n_ctx`` is capped by the model's
    training context and, for "gqa" exports, by their rotary table. ``n_batch``:
    prompt tokens per run. ``spin``: let idle pool threads busy-wait (faster hand-offs,
    but they steal the core the oracle verifies on).
    """

    def __init__(
        self,
        onnx_dir: str | os.PathLike,
        *,
        providers=("CPUExecutionProvider",),
        n_threads: int | None = 1,
        n_ctx: int = 2048,
        n_batch: int = 64,
        spin: bool = False,
    ) -> None:
        n_threads = 1 if n_threads is None else n_threads
        if int(n_threads) < 1:
            raise ValueError("n_threads must be >= 1")
        if int(n_ctx) < 1 or int(n_batch) < 1:
            raise ValueError("n_ctx and n_batch must be >= 1")
        self.dir = Path(onnx_dir).expanduser()
        self.path = str(self.dir)
        self.config = cfg = read_config(self.dir)
        shape = cfg["shape"]
        self.n_layer = int(shape["n_layer"])
        self.n_head_kv = int(shape["n_head_kv"])
        self.head_dim = int(shape["head_dim"])
        self.n_vocab = int(shape["n_vocab"])
        limits = [int(n_ctx)]
        if int(shape.get("n_ctx_train") or 0) > 0:
            limits.append(int(shape["n_ctx_train"]))
        if cfg.get("max_positions"):  # a "gqa" export carries a rotary table of this many rows
            limits.append(int(cfg["max_positions"]))
        self.n_ctx = min(limits)
        self.n_batch = int(n_batch)
        self.n_threads = int(n_threads)
        self.providers = _check_providers(providers)
        self.tokens: list[int] = []
        self.decode_calls = 0
        self._sess = None
        self._tok = None

        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.n_threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        # spinning pool threads would steal the core the oracle verifies on
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        # resolved: onnxruntime refuses external data whose real path leaves the model's directory
        model = (self.dir / cfg["files"]["model"]).resolve()
        names = [p[0] if isinstance(p, (tuple, list)) else p for p in self.providers]
        opts = [p[1] if isinstance(p, (tuple, list)) and len(p) > 1 else {} for p in self.providers]
        try:
            self._sess = ort.InferenceSession(str(model), sess_options=so, providers=names, provider_options=opts)
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise ModelFileError(f"onnxruntime could not load {model}: {e}") from e

        from ..llama import LlamaModel

        try:
            self._tok = LlamaModel(self.dir / cfg["files"]["vocab"], vocab_only=True)
        except Exception:
            self.close()
            raise
        self.add_bos = self._tok.add_bos
        self._out_names = [o.name for o in self._sess.get_outputs()]
        self._past_names = [f"past_key_values.{i}.{kv}" for i in range(self.n_layer) for kv in ("key", "value")]
        self._present_idx = [self._out_names.index(f"present.{i}.{kv}") for i in range(self.n_layer)
                             for kv in ("key", "value")]
        self._logits_idx = self._out_names.index("logits")
        self._empty = np.zeros((1, self.n_head_kv, 0, self.head_dim), dtype=np.float32)
        self._kv: list[np.ndarray] = [self._empty] * (2 * self.n_layer)

    # ---------------------------------------------------------------- vocabulary (llama.cpp, vocab only)
    @property
    def _vocab(self):
        if self._tok is None:
            raise EdgespecError("model is closed")
        return self._tok

    def tokenize(self, text: str | bytes, *, add_bos: bool = False, special: bool = True) -> list[int]:
        return self._vocab.tokenize(text, add_bos=add_bos, special=special)

    def token_bytes(self, token: int, *, special: bool = True) -> bytes:
        return self._vocab.token_bytes(token, special=special)

    def detokenize(self, tokens: list[int], *, special: bool = True) -> bytes:
        return self._vocab.detokenize(tokens, special=special)

    def is_eog(self, token: int) -> bool:
        return self._vocab.is_eog(token)

    def bos_token(self) -> int | None:
        return self._vocab.bos_token()

    def eos_token(self) -> int | None:
        return self._vocab.eos_token()

    def token_texts(self) -> list[bytes]:
        return self._vocab.token_texts()

    def vocab_fingerprint(self) -> str:
        return self._vocab.vocab_fingerprint()

    def chat_template(self) -> str | None:
        return self._vocab.chat_template()

    # ---------------------------------------------------------------- evaluation
    @property
    def kv_bytes(self) -> int:
        return sum(a.nbytes for a in self._kv)

    def check_ids(self, tokens) -> None:
        for t in tokens:
            if not (0 <= int(t) < self.n_vocab):
                raise PromptError(f"token id {t} is outside this model's vocabulary (0..{self.n_vocab - 1})")

    def decode(self, tokens: list[int], *, all_logits: bool = False) -> np.ndarray:
        """Append ``tokens`` to the cache; float32 logits after the last one ([n_vocab]),
        or for every appended position ([len(tokens), n_vocab]) with ``all_logits``."""
        if self._sess is None:
            raise EdgespecError("model is closed")
        n = len(tokens)
        if n == 0:
            raise PromptError("empty token sequence")
        self.check_ids(tokens)
        if len(self.tokens) + n > self.n_ctx:
            raise PromptError(f"context overflow: {len(self.tokens)} cached + {n} new tokens > n_ctx {self.n_ctx}")
        rows = []
        for start in range(0, n, self.n_batch):
            chunk = [int(t) for t in tokens[start : start + self.n_batch]]
            last_chunk = start + self.n_batch >= n
            keep = 0 if all_logits else 1  # 0 = every position; a non-final chunk still computes one row
            feeds = {"input_ids": np.asarray([chunk], dtype=np.int64),
                     "logits_to_keep": np.asarray([keep], dtype=np.int64)}
            feeds.update(zip(self._past_names, self._kv))
            try:
                outs = self._sess.run(None, feeds)
            except Exception as e:
                raise EdgespecError(f"onnxruntime run failed: {e}") from e
            self.decode_calls += 1
            self._kv = [outs[i] for i in self._present_idx]
            self.tokens.extend(chunk)
            if all_logits or last_chunk:
                rows.append(outs[self._logits_idx][0])
        out = np.concatenate(rows, axis=0) if len(rows) > 1 else rows[0]
        return out.astype(np.float32, copy=False) if all_logits else out[-1].astype(np.float32, copy=False)

    def trim(self, n_keep: int) -> None:
        """Drop every cached token at position >= n_keep."""
        if n_keep < 0:
            raise ValueError("n_keep must be >= 0")
        if n_keep >= len(self.tokens):
            return
        self._kv = [np.ascontiguousarray(a[:, :, :n_keep, :]) for a in self._kv]
        del self.tokens[n_keep:]

    def reset(self) -> None:
        self._kv = [self._empty] * (2 * self.n_layer)
        self.tokens = []

    def _decode_last(self, tokens: list[int]) -> np.ndarray:
        return self.decode(tokens)

    def step(self, token: int) -> np.ndarray:
        return self.decode([token])

    # ---------------------------------------------------------------- lifecycle
    def close(self) -> None:
        self._sess = None
        self._kv = []
        if self._tok is not None:
            self._tok.close()
            self._tok = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
