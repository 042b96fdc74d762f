"""Measure an oracle's verify-cost curve once and cache it; keep the draft policy's learned estimates beside it.

The draft-length policy needs t(n), the time of one decode of n tokens. It
depends on the model file, the thread count and the machine (the CPU's model and
instruction set, not only its architecture: an AVX2 host and an AVX-512 host of
the same arch differ ~2.5x), so it is measured here (a few seconds) and cached by
those keys. What the policy learned about a drafter's acceptance is kept under the
same key plus the drafter's name, so a new process starts warm.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from functools import lru_cache
from pathlib import Path

from . import atomic
from .cost import CostCurve

# up to a forced run under a grammar (engine.FORCED_BATCH, 64) plus a full draft and the pending token: the
# curve past 17 tokens is not a straight line from its last two points
SIZES = (1, 2, 3, 4, 5, 6, 8, 10, 12, 14, 16, 17, 24, 32, 48, 64, 81)


@lru_cache(maxsize=1)
def cpu_fingerprint() -> str:
    """A short hash of the CPU's model name and feature flags (the arch name alone when they cannot be read)."""
    ident = platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            lines = [ln for ln in f.read().splitlines() if ln.startswith(("model name", "flags", "Features", "CPU part"))]
        ident += "\n" + "\n".join(sorted(set(lines)))
    except OSError:
        ident += "\n" + platform.processor()
    return hashlib.sha256(ident.encode()).hexdigest()[:10]


def _base_dir() -> Path:
    from .model_cache import cache_dir

    return Path(cache_dir())


def cache_key(model_path: str, n_threads: int) -> str:
    st = os.stat(model_path)
    return f"{Path(model_path).name}-{st.st_size}-{int(st.st_mtime)}-t{n_threads}-{platform.machine()}-{cpu_fingerprint()}"


def _cache_path(model_path: str, n_threads: int) -> Path:
    """``$EDGESPEC_CALIBRATION_DIR`` (the tests point it at a temporary folder) or ``<cache>/calibration``."""
    base = Path(os.environ["EDGESPEC_CALIBRATION_DIR"]) if os.environ.get("EDGESPEC_CALIBRATION_DIR") else _base_dir() / "calibration"
    return base / f"{cache_key(model_path, n_threads)}.json"


def _write_json(path: Path, data: dict) -> None:
    atomic.write_json(path, data)


def policy_state_path(model_path: str, n_threads: int, drafter: str) -> Path:
    """``$EDGESPEC_POLICY_DIR`` (the tests point it at a temporary folder) or ``<cache>/policy``."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in drafter)
    base = Path(os.environ["EDGESPEC_POLICY_DIR"]) if os.environ.get("EDGESPEC_POLICY_DIR") else _base_dir() / "policy"
    return base / f"{cache_key(model_path, n_threads)}-{safe}.json"


def load_policy_state(model_path: str, n_threads: int, drafter: str) -> dict | None:
    """The estimates a previous process saved for this oracle file, machine and drafter, or None."""
    try:
        return json.loads(policy_state_path(model_path, n_threads, drafter).read_text())
    except (OSError, ValueError):
        return None  # none yet, or damaged: the policy starts from its priors


def save_policy_state(model_path: str, n_threads: int, drafter: str, state: dict) -> None:
    try:
        _write_json(policy_state_path(model_path, n_threads, drafter), state)
    except OSError:
        pass  # a read-only or full cache costs a warm start, not the report


def measure_curve(model, sizes=SIZES, *, context_len: int = 128, repeats: int = 5) -> CostCurve:
    """Time decodes of each batch size at a realistic context length (all logits requested).

    The minimum over repeats, interleaved across sizes: other processes only ever add time, so the
    minimum is the least disturbed estimate of what the kernels cost."""
    sizes = [n for n in sizes if n == 1 or n + 2 <= model.n_ctx]  # a small context cannot hold the largest batches
    filler = [int(t) for t in model.tokenize("The vineyard block was scouted for pests and diseases. " * 40)]
    filler = filler[: max(1, min(context_len, model.n_ctx - max(sizes) - 1))]
    model.reset()
    model.decode(filler)
    base = len(model.tokens)
    probe = (filler * (max(sizes) // len(filler) + 2))[: max(sizes)]
    # warm up the kernels and allocator
    model.decode(probe[:4], logits_at=list(range(4)))
    model.trim(base)
    best = {n: float("inf") for n in sizes}
    for _ in range(repeats):
        for n in sizes:
            t0 = time.perf_counter()
            model.decode(probe[:n], logits_at=list(range(n)))
            best[n] = min(best[n], time.perf_counter() - t0)
            model.trim(base)
    secs = [best[n] for n in sizes]
    model.reset()
    return CostCurve(list(sizes), secs)


def _largest(model) -> int:
    return max([1] + [n for n in SIZES if n + 2 <= model.n_ctx])


def load_or_measure(model, *, refresh: bool = False) -> CostCurve:
    path = _cache_path(model.path, model.n_threads)
    if path.exists() and not refresh:
        try:
            d = json.loads(path.read_text())
            if max(d["sizes"]) >= _largest(model):  # a curve measured over fewer sizes is measured again
                return CostCurve(d["sizes"], d["seconds"])
        except (ValueError, KeyError, TypeError):
            pass  # a damaged cache file is simply re-measured
    import sys

    print(f"edgespec: measuring the verify-cost curve of {Path(model.path).name} (once per model and thread count)…",
          file=sys.stderr, flush=True)
    curve = measure_curve(model)
    try:
        _write_json(path, {**curve.to_dict(), "model": model.path, "threads": model.n_threads})
    except OSError:
        pass  # measured again next time
    return curve
