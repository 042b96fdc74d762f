"""Measure an oracle's verify-cost curve once and cache it.

The draft-length policy needs t(n), the time of one decode of n tokens. It
depends on the model file, the thread count and the machine, so it is measured
here (a few seconds) and cached by those keys.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

from .policy import CostCurve

SIZES = (1, 2, 3, 4, 5, 6, 8, 10, 12, 14, 16, 17)


def _cache_path(model_path: str, n_threads: int) -> Path:
    try:
        from .catalog import cache_dir

        base = Path(cache_dir())
    except Exception:
        import platformdirs

        base = Path(platformdirs.user_cache_dir("edgespec"))
    st = os.stat(model_path)
    key = f"{Path(model_path).name}-{st.st_size}-{int(st.st_mtime)}-t{n_threads}-{platform.machine()}"
    return base / "calibration" / f"{key}.json"


def measure_curve(model, sizes=SIZES, *, context_len: int = 128, repeats: int = 5) -> CostCurve:
    """Time decodes of each batch size at a realistic context length (all logits requested).

    The minimum over repeats, interleaved across sizes: other processes only ever add time, so the
    minimum is the least disturbed estimate of what the kernels cost."""
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


def load_or_measure(model, *, refresh: bool = False) -> CostCurve:
    path = _cache_path(model.path, model.n_threads)
    if path.exists() and not refresh:
        try:
            d = json.loads(path.read_text())
            return CostCurve(d["sizes"], d["seconds"])
        except (ValueError, KeyError):
            pass  # a damaged cache file is simply re-measured
    import sys

    print(f"edgespec: measuring the verify-cost curve of {Path(model.path).name} (once per model and thread count)…",
          file=sys.stderr, flush=True)
    curve = measure_curve(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**curve.to_dict(), "model": model.path, "threads": model.n_threads}))
    os.replace(tmp, path)
    return curve
