"""The one module that touches llama.cpp (through llama-cpp-python's low-level API).

Why low-level: the speculative loop needs logits only at chosen positions of a
batch, exact control of the KV cache (trim at a position after a rejection) and
prefix reuse across calls. ``llama_cpp.Llama`` hides all three.

llama.cpp aborts the whole process on some bad inputs (token ids out of range,
context overflow, corrupt files), so every call here is validated first and bad
input raises an ``EdgespecError`` subclass instead.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import threading
from pathlib import Path

import numpy as np

from . import EdgespecError, ModelFileError, PromptError
from .prefix_cache import PrefixCache

_backend_lock = threading.Lock()
_backend_ready = False
_log_cb = None  # keep the ctypes callback alive for the life of the process
_BEYOND_UNICODE = re.compile(rb"(?:\xf4[\x90-\xbf]|[\xf5-\xf7][\x80-\xbf])[\x80-\xbf]{2}")


def _ensure_backend() -> None:
    global _backend_ready
    with _backend_lock:
        if _backend_ready:
            return
        import llama_cpp
        from llama_cpp import _logger  # noqa: F401  (its import installs a callback; ours replaces it)

        global _log_cb
        verbose = bool(os.environ.get("EDGESPEC_LLAMA_VERBOSE"))

        @llama_cpp.llama_log_callback
        def _log_cb(level, text, user_data):  # llama.cpp's load chatter would interleave with the TUI/stream
            if verbose:
                import sys

                sys.stderr.write(text.decode("utf-8", "replace"))

        llama_cpp.llama_log_set(_log_cb, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
        _backend_ready = True


def default_threads() -> int:
    return max(1, min(os.cpu_count() or 1, 4))


def precheck_gguf(path: str | Path):
    """Refuse files llama.cpp would crash on; returns the parsed header info when available."""
    p = Path(path)
    try:
        from .gguf_check import check_gguf
    except ImportError:  # pragma: no cover - gguf_check is part of the package
        check_gguf = None
    if check_gguf is not None:
        return check_gguf(p)
    if not p.is_file():
        raise ModelFileError(f"model file not found: {p}")
    with p.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise ModelFileError(f"{p} is not a GGUF file (bad magic)")
    return None


class LlamaModel(PrefixCache):
    """A GGUF model with one sequence of KV cache that it keeps in step with ``self.tokens``."""

    def __init__(
        self,
        path: str | Path,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_batch: int = 512,
        vocab_only: bool = False,
        flash_attn: bool | None = False,
        kv_f32: bool = False,
    ) -> None:
        """``flash_attn=False`` with ``kv_f32=True`` makes llama.cpp's CPU kernels (nearly)
        batch-invariant on F32 models (one-token vs batched logits differ by ~4e-6 instead of ~1e-3):
        the setting the strict greedy-identity tests use. Flash attention is off by default, as in
        llama-cpp-python's ``Llama`` (measured: same speed here), so oracle-only decoding gives the
        same tokens a user of llama-cpp-python gets; ``None`` leaves llama.cpp's automatic choice."""
        self.path = str(path)
        self.info = precheck_gguf(path)
        _ensure_backend()
        import llama_cpp

        self._lib = llama_cpp
        self.n_threads = n_threads or default_threads()
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = 0
        mparams.vocab_only = vocab_only
        self._model = llama_cpp.llama_model_load_from_file(self.path.encode(), mparams)
        if not self._model:
            raise ModelFileError(f"llama.cpp could not load {self.path} (unsupported architecture or corrupt tensors)")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self.n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(self._model))
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        self._piece_cache: dict[tuple[int, bool], bytes] = {}
        self._token_texts: list[bytes] | None = None
        self._eog: list[int] | None = None
        self.tokens: list[int] = []
        self._ctx = None
        self._batch = None
        self.n_ctx = 0
        self.decode_calls = 0
        if vocab_only:
            return
        self.n_ctx = int(min(n_ctx, self.n_ctx_train) if self.n_ctx_train > 0 else n_ctx)
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = self.n_ctx
        cparams.n_batch = n_batch
        cparams.n_ubatch = n_batch
        cparams.n_seq_max = 1
        cparams.n_threads = self.n_threads
        cparams.n_threads_batch = self.n_threads
        cparams.no_perf = True
        if flash_attn is not None:
            cparams.flash_attn_type = (
                llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
            )
        if kv_f32:
            cparams.type_k = llama_cpp.GGML_TYPE_F32
            cparams.type_v = llama_cpp.GGML_TYPE_F32
        self._ctx = llama_cpp.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            self.close()
            raise EdgespecError(f"llama.cpp could not create a context of {self.n_ctx} tokens for {self.path}")
        self.n_batch = n_batch
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._mem = llama_cpp.llama_get_memory(self._ctx)

    # ---------------------------------------------------------------- vocabulary
    def tokenize(self, text: str | bytes, *, add_bos: bool = False, special: bool = True) -> list[int]:
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        # llama.cpp throws (and the process aborts) on 4-byte sequences above U+10FFFF, which a
        # drafter's raw bytes can contain: replace them with U+FFFD as it does other invalid bytes
        data = _BEYOND_UNICODE.sub(b"\xef\xbf\xbd", data)
        n_max = len(data) + 16
        buf = (self._lib.llama_token * n_max)()
        n = self._lib.llama_tokenize(self._vocab, data, len(data), buf, n_max, add_bos, special)
        if n < 0:
            n_max = -n
            buf = (self._lib.llama_token * n_max)()
            n = self._lib.llama_tokenize(self._vocab, data, len(data), buf, n_max, add_bos, special)
        if n < 0:
            raise PromptError("tokenization failed")
        return list(buf[:n])

    def token_bytes(self, token: int, *, special: bool = True) -> bytes:
        key = (token, special)
        piece = self._piece_cache.get(key)
        if piece is None:
            self.check_ids([token])
            buf = ctypes.create_string_buffer(64)
            n = self._lib.llama_token_to_piece(self._vocab, token, buf, 64, 0, special)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = self._lib.llama_token_to_piece(self._vocab, token, buf, -n, 0, special)
            piece = buf.raw[:n]
            self._piece_cache[key] = piece
        return piece

    def detokenize(self, tokens: list[int], *, special: bool = True) -> bytes:
        return b"".join(self.token_bytes(t, special=special) for t in tokens)

    def is_eog(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self._vocab, token))

    def bos_token(self) -> int | None:
        t = int(self._lib.llama_vocab_bos(self._vocab))
        return t if t >= 0 else None

    def eos_token(self) -> int | None:
        t = int(self._lib.llama_vocab_eos(self._vocab))
        return t if t >= 0 else None

    def eog_tokens(self) -> list[int]:
        """Every token llama.cpp ends generation on (EOS, EOT, FIM end, …), EOS first."""
        if self._eog is None:
            eos = self.eos_token()
            found = [t for t in range(self.n_vocab) if self.is_eog(t)]
            self._eog = ([eos] if eos in found else []) + [t for t in found if t != eos]
        return list(self._eog)

    def vocab_handle(self):
        """llama.cpp's vocabulary pointer (``llama_vocab_p``), for a library that tokenizes through
        llama.cpp itself (llguidance). It dies with ``close()``: a holder that may outlive this model
        opens its own copy with ``vocab_only=True``."""
        if not getattr(self, "_model", None):
            raise EdgespecError("model is closed")
        return self._vocab

    def token_texts(self) -> list[bytes]:
        """Every token's stored text (not rendered): what vocabulary compatibility compares."""
        if self._token_texts is None:
            get = self._lib.llama_vocab_get_text
            self._token_texts = [get(self._vocab, i) or b"" for i in range(self.n_vocab)]
        return self._token_texts

    def vocab_fingerprint(self) -> str:
        h = hashlib.sha256()
        for t in self.token_texts():
            h.update(t)
            h.update(b"\x00")
        return h.hexdigest()[:16]

    def chat_template(self) -> str | None:
        raw = self._lib.llama_model_chat_template(self._model, None)
        return raw.decode("utf-8", "replace") if raw else None

    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(256)
        n = self._lib.llama_model_meta_val_str(self._model, key.encode(), buf, 256)
        if n < 0:
            return None
        if n >= 256:
            buf = ctypes.create_string_buffer(n + 1)
            self._lib.llama_model_meta_val_str(self._model, key.encode(), buf, n + 1)
        return buf.value.decode("utf-8", "replace")

    # ---------------------------------------------------------------- evaluation
    def check_ids(self, tokens) -> None:
        for t in tokens:
            if not (0 <= int(t) < self.n_vocab):
                raise PromptError(f"token id {t} is outside this model's vocabulary (0..{self.n_vocab - 1})")

    def decode(self, tokens: list[int], logits_at: list[int] | None = None) -> np.ndarray:
        """Append ``tokens`` to the KV cache; return float32 logits rows at the given batch indices.

        ``logits_at`` defaults to the last token only. Long inputs are split into
        n_batch chunks; only the requested positions produce logits.
        """
        if self._ctx is None:
            raise EdgespecError("model was loaded vocab-only or closed")
        n = len(tokens)
        if n == 0:
            return np.zeros((0, self.n_vocab), dtype=np.float32)
        self.check_ids(tokens)
        if len(self.tokens) + n > self.n_ctx:
            raise PromptError(
                f"context overflow: {len(self.tokens)} cached + {n} new tokens > n_ctx {self.n_ctx}"
            )
        want = [n - 1] if logits_at is None else sorted(int(i) if i >= 0 else n + int(i) for i in logits_at)
        if want and (want[0] < 0 or want[-1] >= n):
            raise ValueError(f"logits_at {logits_at} outside batch of {n}")
        out = np.empty((len(want), self.n_vocab), dtype=np.float32)
        row = 0
        b = self._batch
        for start in range(0, n, self.n_batch):
            chunk = tokens[start : start + self.n_batch]
            m = len(chunk)
            base = len(self.tokens)
            n_out = 0
            for i, tok in enumerate(chunk):
                b.token[i] = tok
                b.pos[i] = base + i
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = 0
                need = row + n_out < len(want) and want[row + n_out] == start + i
                b.logits[i] = need
                n_out += need
            b.n_tokens = m
            rc = self._lib.llama_decode(self._ctx, b)
            self.decode_calls += 1
            if rc != 0:
                # KV may hold part of the batch: drop it so tokens and cache stay in step.
                self._lib.llama_memory_seq_rm(self._mem, 0, base, -1)
                raise EdgespecError(f"llama_decode failed with code {rc}")
            self.tokens.extend(chunk)
            if n_out:
                ptr = self._lib.llama_get_logits(self._ctx)
                arr = np.ctypeslib.as_array(ptr, shape=(n_out, self.n_vocab))
                out[row : row + n_out] = arr
                row += n_out
        return out

    def trim(self, n_keep: int) -> None:
        """Drop every cached token at position >= n_keep (the rewind after a rejected draft)."""
        if n_keep < 0:
            raise ValueError("n_keep must be >= 0")
        if n_keep >= len(self.tokens):
            return
        ok = self._lib.llama_memory_seq_rm(self._mem, 0, n_keep, -1)
        if not ok:
            raise EdgespecError("this model's cache cannot be trimmed at a position (recurrent architecture?)")
        del self.tokens[n_keep:]

    def reset(self) -> None:
        self.trim(0)

    # ---------------------------------------------------------------- saved cache (edgespec.prompt_state)
    def kv_state(self) -> bytes:
        """The KV cache of ``self.tokens`` as llama.cpp serialises one sequence (``kv_restore`` reads it back)."""
        if self._ctx is None:
            raise EdgespecError("model was loaded vocab-only or closed")
        n = int(self._lib.llama_state_seq_get_size(self._ctx, 0))
        buf = (ctypes.c_uint8 * max(n, 1))()
        got = int(self._lib.llama_state_seq_get_data(self._ctx, buf, n, 0))
        if got <= 0:
            raise EdgespecError("llama.cpp could not copy the KV cache")
        return ctypes.string_at(buf, got)

    def kv_restore(self, tokens: list[int], data: bytes) -> bool:
        """Make the cache a saved ``kv_state`` of ``tokens``; False, with the cache empty, when llama.cpp
        refuses the data or it does not hold exactly those positions."""
        if self._ctx is None or not tokens or len(tokens) >= self.n_ctx or not data:
            return False
        self.check_ids(tokens)
        self.reset()
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        ok = int(self._lib.llama_state_seq_set_data(self._ctx, buf, len(data), 0)) > 0
        if ok and int(self._lib.llama_memory_seq_pos_max(self._mem, 0)) == len(tokens) - 1:
            self.tokens = [int(t) for t in tokens]
            return True
        self._lib.llama_memory_seq_rm(self._mem, 0, 0, -1)
        self.tokens = []
        return False

    def _decode_last(self, tokens: list[int]) -> np.ndarray:
        return self.decode(tokens)[-1]

    def step(self, token: int) -> np.ndarray:
        return self.decode([token])[0]

    # ---------------------------------------------------------------- lifecycle
    def close(self) -> None:
        lib = getattr(self, "_lib", None)
        if lib is None:
            return
        if getattr(self, "_batch", None) is not None:
            lib.llama_batch_free(self._batch)
            self._batch = None
        if getattr(self, "_ctx", None):
            lib.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_model", None):
            lib.llama_model_free(self._model)
            self._model = None

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def render_chat(model: LlamaModel, messages: list[dict], *, add_generation_prompt: bool = True) -> str:
    """Apply the model's own chat template (Jinja, sandboxed); plain text when it has none."""
    template = model.chat_template()
    if not template:
        lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
        return "\n".join(lines) + ("\nAssistant:" if add_generation_prompt else "")
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(msg):
        raise jinja2.TemplateError(msg)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    bos = model.bos_token()
    eos = model.eos_token()
    return env.from_string(template).render(
        messages=messages,
        add_generation_prompt=add_generation_prompt,
        bos_token=model.token_bytes(bos).decode("utf-8", "replace") if bos is not None else "",
        eos_token=model.token_bytes(eos).decode("utf-8", "replace") if eos is not None else "",
    )


def check_same_vocab(oracle: LlamaModel, drafter: LlamaModel) -> None:
    """Refuse a same-vocabulary pairing unless the token tables agree (as llama.cpp's speculative does)."""
    from . import IncompatibleModelsError

    hint = "use the cross-tokenizer drafter instead (--drafter bridge)"
    if abs(oracle.n_vocab - drafter.n_vocab) > 128:
        raise IncompatibleModelsError(
            f"drafter vocabulary ({drafter.n_vocab} tokens) differs from the oracle's ({oracle.n_vocab}); {hint}"
        )
    a, b = oracle.token_texts(), drafter.token_texts()
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            raise IncompatibleModelsError(
                f"drafter token {i} is {b[i]!r} but the oracle's is {a[i]!r}: the tokenizers differ; {hint}"
            )
    if oracle.add_bos != drafter.add_bos or oracle.bos_token() != drafter.bos_token():
        raise IncompatibleModelsError(f"drafter and oracle disagree on the BOS token; {hint}")
