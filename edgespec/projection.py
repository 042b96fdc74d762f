"""Project what speculative decoding would gain on a model pair too large to ship in the tests.

Why: the real pairs measured here are small (a 0.5B oracle), where one decode is so
cheap that batching barely amortises anything. The question users ask is what a
1B drafter / 8B oracle pair would reach on the same device. Decode *cost* does not
depend on the weights' values, so the verify-cost curve of an 8B-shaped GGUF with
random weights is the real one; *acceptance* does depend on the weights, so it comes
from measurements on real pairs (or is given by hand). This module is the arithmetic
between the two: pure functions over measured numbers, no I/O. The GGUF writing is
``edgespec.testing.shape_gguf``; the measurement lives in ``tools/project_speedup.py``.

Acceptance from the benchmark is ``accepted / drafted`` tokens. Under the i.i.d.
model of ``cost.expected_emitted`` that ratio is (a + a² + … + a^d) / d ≤ a, so
using it as the per-token rate ``a`` makes the projection conservative.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .cost import CostCurve, best_draft_length, ceiling_speedup

# Hand-given acceptance when no benchmark JSON is supplied: a sweep across the range
# greedy model drafters reach, not a claim about any particular pair.
DEFAULT_ALPHAS = (0.5, 0.6, 0.7, 0.8, 0.9)

# Drafters whose proposals come from a neural model (they pay a drafter decode per token);
# everything else in the benchmark (lookup, history) drafts from text at ~zero cost.
MODEL_DRAFTERS = ("bridge", "onnx", "cascade", "model")
FREE_DRAFTERS = ("lookup", "history")


@dataclass(frozen=True)
class ModelShape:
    """The tensor shapes of a llama-architecture model: all decode cost depends on."""

    name: str
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_vocab: int

    def __post_init__(self) -> None:
        for f in ("n_embd", "n_layer", "n_head", "n_head_kv", "n_ff", "n_vocab"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"shape {self.name!r}: {f} must be a positive integer, got {v!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"shape {self.name!r}: n_embd {self.n_embd} is not a multiple of n_head {self.n_head}")
        if self.n_head % self.n_head_kv:
            raise ValueError(f"shape {self.name!r}: n_head {self.n_head} is not a multiple of n_head_kv {self.n_head_kv}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def matrices(self) -> list[tuple[str, int, int]]:
        """(tensor name, rows, row length) of every 2-D weight, in file order."""
        e, f, kv = self.n_embd, self.n_ff, self.head_dim * self.n_head_kv
        out = [("token_embd.weight", self.n_vocab, e)]
        for i in range(self.n_layer):
            out += [
                (f"blk.{i}.attn_q.weight", e, e),
                (f"blk.{i}.attn_k.weight", kv, e),
                (f"blk.{i}.attn_v.weight", kv, e),
                (f"blk.{i}.attn_output.weight", e, e),
                (f"blk.{i}.ffn_gate.weight", f, e),
                (f"blk.{i}.ffn_up.weight", f, e),
                (f"blk.{i}.ffn_down.weight", e, f),
            ]
        out.append(("output.weight", self.n_vocab, e))
        return out

    def n_params(self) -> int:
        """Weights including the (untied) output matrix and the norms."""
        return sum(r * c for _, r, c in self.matrices()) + (2 * self.n_layer + 1) * self.n_embd

    def to_dict(self) -> dict:
        return asdict(self)


# llama-3-like shapes (Llama 3.2 1B / 3B, Llama 3.1 8B); the vocabulary is the real 128256 so
# the output matmul, a large part of a small model's decode, costs what it really costs.
SHAPES: dict[str, ModelShape] = {
    "1b": ModelShape("1b", n_embd=2048, n_layer=16, n_head=32, n_head_kv=8, n_ff=8192, n_vocab=128256),
    "3b": ModelShape("3b", n_embd=3072, n_layer=28, n_head=24, n_head_kv=8, n_ff=8192, n_vocab=128256),
    "8b": ModelShape("8b", n_embd=4096, n_layer=32, n_head=32, n_head_kv=8, n_ff=14336, n_vocab=128256),
}


def _check_alpha(alpha: float) -> float:
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"acceptance rate must be a number, got {alpha!r}") from None
    if not math.isfinite(a) or not 0.0 <= a <= 1.0:
        raise ValueError(f"acceptance rate must be in [0, 1], got {alpha!r}")
    return a


def project(alpha: float, oracle_curve: CostCurve, drafter_cost_per_token: float, d_max: int = 16) -> tuple[int, float, float]:
    """(best draft length, speedup over plain oracle decoding, projected tokens/s).

    The drafter's cost per drafted token is its measured one-token decode time t(1);
    d = 0 (speedup 1.0) means no draft length beats plain decoding.
    """
    a = _check_alpha(alpha)
    if not math.isfinite(drafter_cost_per_token) or drafter_cost_per_token < 0:
        raise ValueError(f"drafter cost per token must be a finite number >= 0 seconds, got {drafter_cost_per_token!r}")
    if isinstance(d_max, bool) or not isinstance(d_max, int) or d_max < 0:
        raise ValueError(f"d_max must be an integer >= 0, got {d_max!r}")
    t1 = oracle_curve.t(1)
    if not math.isfinite(t1) or t1 <= 0:
        raise ValueError(f"the oracle curve's t(1) must be a positive time, got {t1!r}")
    d, s = best_draft_length(a, oracle_curve, d_max, draft_cost_per_token=drafter_cost_per_token)
    return d, s, s / t1


def parse_alphas(text: str) -> list[float]:
    """'0.6,0.7,0.8' → [0.6, 0.7, 0.8], with an error naming the bad item."""
    items = [s.strip() for s in str(text).split(",") if s.strip()]
    if not items:
        raise ValueError("no acceptance rates given (expected e.g. 0.6,0.7,0.8)")
    out = []
    for s in items:
        try:
            out.append(_check_alpha(s))
        except ValueError:
            raise ValueError(f"acceptance rate {s!r} is not a number in [0, 1]") from None
    return out


def drafter_kind(name: str) -> str:
    """'free' for text-matching drafters (no model decode), 'model' otherwise.

    Unknown names count as model drafters: assuming a drafter cost is the conservative error.
    """
    base = str(name).strip().lower()
    if base in FREE_DRAFTERS:
        return "free"
    return "model"


@dataclass(frozen=True)
class AlphaSource:
    """One acceptance rate to project, with where it came from."""

    alpha: float
    label: str
    kind: str = "model"  # "model": pays the drafter shape's t(1) per token; "free": lookup-style
    measured_speedup: float | None = None
    measured_tokens_per_s: float | None = None
    drafter: str | None = None
    workload: str | None = None


def alphas_from_bench(data) -> list[AlphaSource]:
    """The acceptance rates of a ``tools/bench.py --json`` file (already parsed), one per drafter row.

    Rows without drafts (the baselines, ``none``) carry no acceptance and are skipped.
    """
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise ValueError("bench JSON must be an object with a 'rows' list (written by tools/bench.py --json)")
    out = []
    for i, row in enumerate(data["rows"]):
        if not isinstance(row, dict) or "drafter" not in row:
            raise ValueError(f"bench JSON row {i} has no 'drafter' field")
        rate = row.get("acceptance_rate")
        if rate is None:
            continue
        try:
            a = _check_alpha(rate)
        except ValueError:
            raise ValueError(f"bench JSON row {i} ({row['drafter']}): acceptance_rate {rate!r} is not in [0, 1]") from None
        workload = row.get("workload")
        label = f"{row['drafter']}" + (f" / {workload}" if workload else "")
        out.append(AlphaSource(
            alpha=a,
            label=label,
            kind=drafter_kind(row["drafter"]),
            measured_speedup=_opt_float(row.get("speedup")),
            measured_tokens_per_s=_opt_float(row.get("tokens_per_s")),
            drafter=str(row["drafter"]),
            workload=str(workload) if workload is not None else None,
        ))
    return out


def _opt_float(x) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def curve_from_dict(d, what: str = "curve") -> CostCurve:
    """A CostCurve from {'sizes': [...], 'seconds': [...]}, refusing shapes the policy cannot use."""
    if not isinstance(d, dict) or "sizes" not in d or "seconds" not in d:
        raise ValueError(f"{what}: expected an object with 'sizes' and 'seconds'")
    sizes, secs = d["sizes"], d["seconds"]
    if not isinstance(sizes, list) or not isinstance(secs, list) or len(sizes) != len(secs) or not sizes:
        raise ValueError(f"{what}: 'sizes' and 'seconds' must be non-empty lists of equal length")
    try:
        sizes = [int(n) for n in sizes]
        secs = [float(s) for s in secs]
    except (TypeError, ValueError):
        raise ValueError(f"{what}: sizes must be integers and seconds numbers") from None
    if any(n < 1 for n in sizes) or len(set(sizes)) != len(sizes):
        raise ValueError(f"{what}: sizes must be distinct integers >= 1")
    if any(not math.isfinite(s) or s <= 0 for s in secs):
        raise ValueError(f"{what}: every time must be a positive number of seconds")
    return CostCurve(sizes, secs)


def min_curve(curves: list[CostCurve]) -> CostCurve:
    """Elementwise minimum of curves measured at the same sizes.

    Why: other processes only ever add time (as in ``calibrate.measure_curve``'s minimum
    over repeats), so across several runs on a shared machine the minimum is the least
    disturbed estimate of what the kernels cost.
    """
    if not curves:
        raise ValueError("no curves to combine")
    sizes = curves[0].sizes
    if any(c.sizes != sizes for c in curves):
        raise ValueError("curves measured at different batch sizes cannot be combined")
    return CostCurve(list(sizes), [min(c.seconds[i] for c in curves) for i in range(len(sizes))])


def extrapolate_curve(points: list[tuple[int, CostCurve]], target_params: int) -> CostCurve:
    """Estimate a larger shape's curve from measured ones, linearly in parameter count per batch size.

    Why linear: a CPU decode streams every weight once per batch (memory bound at small
    batches) and does 2·params·n flops (compute bound at large ones); both scale with the
    parameter count. Uses the two largest measured shapes; the sizes are those they share.
    """
    if len(points) < 2:
        raise ValueError("extrapolating a cost curve needs curves of at least two shapes")
    pts = sorted(points, key=lambda p: p[0])[-2:]
    (p0, c0), (p1, c1) = pts
    if p1 <= p0:
        raise ValueError("the two shapes to extrapolate from must differ in parameter count")
    sizes = sorted(set(c0.sizes) & set(c1.sizes))
    if 1 not in sizes:
        raise ValueError("both curves must include batch size 1")
    secs = []
    for n in sizes:
        t0, t1 = c0.t(n), c1.t(n)
        slope = (t1 - t0) / (p1 - p0)
        secs.append(max(t1 + slope * (target_params - p1), 1e-9))
    return CostCurve(sizes, secs)


@dataclass(frozen=True)
class ProjectionRow:
    pair: str
    source: AlphaSource
    best_d: int
    speedup: float
    tokens_per_s: float
    drafter_cost_per_token: float


def projection_rows(
    sources: list[AlphaSource],
    oracle_curve: CostCurve,
    drafter_t1: float,
    *,
    oracle_name: str,
    drafter_name: str,
    d_max: int = 16,
) -> list[ProjectionRow]:
    """One projected row per acceptance source: model drafters pay ``drafter_t1`` per token, lookup-style ones nothing."""
    rows = []
    for src in sources:
        if src.kind == "free":
            cost, pair = 0.0, f"{src.drafter or 'lookup'} (no model) / {oracle_name} oracle"
        else:
            cost, pair = drafter_t1, f"{drafter_name} drafter / {oracle_name} oracle"
        d, s, tps = project(src.alpha, oracle_curve, cost, d_max)
        rows.append(ProjectionRow(pair, src, d, s, tps, cost))
    return rows


def ceiling(curve: CostCurve, d_max: int = 16) -> float:
    """Free, perfect drafts: the most batching can give on this curve."""
    return ceiling_speedup(curve, n_tokens=d_max + 1, d_max=d_max)
