"""The oracle's KV cache of the latest prompt, kept on disk so that a fresh process starts warm.

Every report's prompt begins with the same system text (the schema prompt's first ~126 tokens, ~1.3 s of
prefill on a 2-core handheld), which a process that writes one report (``edgespec generate``) would
evaluate again each time. After a generation the prompt's cache is saved (``save``); the next process
loads it (``load``) and the engine's prefix reuse (``PrefixCache.sync``) evaluates only the tokens after
the common prefix. One file per oracle file, context size, llama.cpp build and CPU, replaced atomically.
The file is checked (magic, key, sizes, token ids, SHA-256 of its content) before llama.cpp reads it;
anything else is ignored and the prompt evaluated as usual.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from . import atomic

MAGIC = b"EDGESPEC-KV\x01\n"
MAX_BYTES_PER_TOKEN = 1 << 20  # far above any KV row of a model this runs (an 8B model's f16 row is 128 KiB)


def enabled() -> bool:
    """``$EDGESPEC_PROMPT_CACHE=0`` turns it off (the test suite does, so no test starts from another's cache)."""
    return os.environ.get("EDGESPEC_PROMPT_CACHE", "1").strip().lower() not in ("0", "off", "no", "false")


def key(model) -> str:
    import llama_cpp

    from .calibrate import cpu_fingerprint

    st = os.stat(model.path)
    return (f"{Path(model.path).name}-{st.st_size}-{st.st_mtime_ns}-ctx{model.n_ctx}"
            f"-llama{llama_cpp.__version__}-{cpu_fingerprint()}")


def state_path(model, model_key: str | None = None) -> Path:
    """``$EDGESPEC_PROMPT_CACHE_DIR`` or ``<cache>/prompt``, one file per ``key``."""
    from .model_cache import cache_dir

    base = Path(os.environ.get("EDGESPEC_PROMPT_CACHE_DIR") or Path(cache_dir()) / "prompt")
    return base / f"{hashlib.sha256((model_key or key(model)).encode()).hexdigest()[:24]}.kv"


def save(model, n_tokens: int) -> bool:
    """Keep the cache of the model's first ``n_tokens`` (the prompt; the rest is trimmed) for the next process.
    False when there is nothing to save or the folder cannot be written (a cold start next time, no error)."""
    model.trim(n_tokens)
    if not model.tokens:
        return False
    try:
        write(model, list(model.tokens), model.kv_state())
        return True
    except Exception:  # noqa: BLE001 - a cache that cannot be written costs a warm start, never the report
        return False


def write(model, tokens: list[int], data: bytes) -> Path:
    """The file ``read`` checks: magic, a JSON header line (key, sizes, SHA-256), the token ids, the KV bytes."""
    model_key = key(model)
    path = state_path(model, model_key)
    ids = np.asarray(tokens, dtype="<i4").tobytes()
    head = json.dumps({"key": model_key, "n_tokens": len(tokens), "n_bytes": len(data),
                       "sha256": hashlib.sha256(ids + data).hexdigest()}).encode() + b"\n"
    # owner-only: the tokens are the latest prompt, a field note's text among them
    return atomic.write_bytes(path, MAGIC + head + ids + data, mode=0o600)


def read(model) -> tuple[list[int], bytes] | None:
    """The saved tokens and KV bytes for ``model``, or None when there is no file or it does not check out."""
    model_key = key(model)
    path = state_path(model, model_key)
    try:
        size = path.stat().st_size
        if size > len(MAGIC) + 4096 + model.n_ctx * (4 + MAX_BYTES_PER_TOKEN):
            return None
        raw = path.read_bytes()
    except OSError:
        return None
    if not raw.startswith(MAGIC):
        return None
    end = raw.find(b"\n", len(MAGIC), len(MAGIC) + 4096)
    try:
        head = json.loads(raw[len(MAGIC):end]) if end > 0 else None
        n, nb, digest = int(head["n_tokens"]), int(head["n_bytes"]), str(head["sha256"])
        if head["key"] != model_key:
            return None
    except (ValueError, TypeError, KeyError):
        return None
    body = raw[end + 1:]
    if not (0 < n < model.n_ctx) or nb <= 0 or len(body) != 4 * n + nb:
        return None
    if hashlib.sha256(body).hexdigest() != digest:
        return None
    tokens = np.frombuffer(body[: 4 * n], dtype="<i4").tolist()
    if any(not 0 <= t < model.n_vocab for t in tokens):
        return None
    return tokens, body[4 * n:]


def load(model) -> int:
    """Start ``model`` (with an empty cache) from the saved prompt cache; the number of tokens restored, 0 if none."""
    if model.tokens:
        return 0
    got = read(model)
    if got is None:
        return 0
    tokens, data = got
    return len(tokens) if model.kv_restore(tokens, data) else 0
