#!/usr/bin/env python
"""Project the speedup of a 1B drafter / 8B oracle pair on this machine, next to the measured small pairs.

    python tools/project_speedup.py [--measure] [--bench-json FILE] [--alpha 0.6,0.7,0.8]

Why random weights are enough: how long llama.cpp takes to decode n tokens depends
on the tensor shapes, types, thread count and context, not on the weights' values.
``--measure`` writes llama-3-like GGUFs (1B, 8B; Q4_0 weights, Q6_K output as
llama-quantize makes them) with random quantized blocks straight to disk
(``edgespec.testing.shape_gguf``), measures their verify-cost curves with
``edgespec.calibrate.measure_curve``, deletes the files and saves the curves to
``tools/projection_curves.json``. Without ``--measure`` the
saved curves are used. Acceptance cannot come from random weights: it is taken from
a ``tools/bench.py --json`` file (real pairs measured here) and/or ``--alpha``;
with neither, a documented sweep (``edgespec.projection.DEFAULT_ALPHAS``).

If the disk or the free memory cannot hold a shape, it is skipped, the 3B shape is
measured instead, and the oracle's curve is extrapolated by parameter count (the
output says so).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgespec import EdgespecError  # noqa: E402
from edgespec.projection import (  # noqa: E402
    DEFAULT_ALPHAS,
    SHAPES,
    AlphaSource,
    ModelShape,
    alphas_from_bench,
    ceiling,
    curve_from_dict,
    extrapolate_curve,
    min_curve,
    parse_alphas,
    project,
    projection_rows,
)
from edgespec.testing.shape_gguf import shape_file_bytes, write_shape_gguf  # noqa: E402

CURVES_PATH = ROOT / "tools" / "projection_curves.json"
LABEL = "PROJECTION (random-weight shapes, cost only)"

# ---------------------------------------------------------------- measuring

def mem_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def resource_problem(nbytes: int, workdir: Path) -> str | None:
    """Why a shape of ``nbytes`` cannot be written and loaded here, or None when it can.

    llama.cpp repacks Q4_0 into its own buffer on AVX2/AVX-512 CPUs, so the resident
    size is about the file size on top of the (reclaimable) page cache."""
    gib = 1024 ** 3
    free_disk = shutil.disk_usage(workdir).free
    if free_disk < nbytes + gib // 2:
        return f"needs {nbytes / gib:.1f} GiB on disk, {free_disk / gib:.1f} GiB free in {workdir}"
    mem = mem_available()
    if mem is not None and mem < 1.2 * nbytes + gib:
        return f"needs ~{(1.2 * nbytes + gib) / gib:.1f} GiB of free memory, {mem / gib:.1f} GiB available"
    return None


def _busy_jiffies() -> int | None:
    """CPU time every process on the machine has used (jiffies), from /proc/stat."""
    try:
        f = Path("/proc/stat").read_text().splitlines()[0].split()
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in f[1:9])
        return user + nice + system + irq + softirq + steal
    except (OSError, ValueError, IndexError):
        return None


class Contention:
    """How much CPU other processes took while we measured, in cores (0 = the machine was ours).

    Why: on a shared 2-core box a second busy process stretches every multi-threaded
    batch; the saved curve records it so a contaminated measurement can be recognised."""

    def __enter__(self):
        self.j0, self.own0, self.t0 = _busy_jiffies(), sum(os.times()[:2]), time.monotonic()
        return self

    def __exit__(self, *exc):
        j1, own1, t1 = _busy_jiffies(), sum(os.times()[:2]), time.monotonic()
        self.other_cores = None
        if self.j0 is not None and j1 is not None and t1 > self.t0:
            hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
            others = (j1 - self.j0) / hz - (own1 - self.own0)
            self.other_cores = round(max(others, 0.0) / (t1 - self.t0), 2)
        return False


def measure_shape(shape: ModelShape, workdir: Path, *, threads: int, context_len: int, repeats: int,
                  keep_file: bool = False, log=print) -> dict:
    """Write, load, measure and delete one shape; the saved entry (curve + how it was measured)."""
    from edgespec.calibrate import SIZES, measure_curve
    from edgespec.llama import LlamaModel

    path = workdir / f"edgespec-random-{shape.name}-q4_0.gguf"
    t0 = time.perf_counter()
    log(f"[project] writing {shape.name} ({shape.n_params() / 1e9:.2f}B params) to {path} ...")
    try:
        write_shape_gguf(path, shape, seed=sum(map(ord, shape.name)))
        write_s = time.perf_counter() - t0
        size = path.stat().st_size
        log(f"[project] {shape.name}: {size / 1e9:.2f} GB written in {write_s:.0f}s; loading ...")
        t1 = time.perf_counter()
        model = LlamaModel(path, n_ctx=context_len + max(SIZES) + 64, n_threads=threads)
        try:
            load_s = time.perf_counter() - t1
            log(f"[project] {shape.name}: loaded in {load_s:.0f}s; measuring {len(SIZES)} batch sizes x {repeats} at context {context_len} ...")
            t2 = time.perf_counter()
            with Contention() as busy:
                curve = measure_curve(model, SIZES, context_len=context_len, repeats=repeats)
            measure_s = time.perf_counter() - t2
        finally:
            model.close()
    finally:
        if not keep_file:
            path.unlink(missing_ok=True)
    log(f"[project] {shape.name}: t(1) {curve.t(1) * 1e3:.0f} ms, t(17) {curve.t(17) * 1e3:.0f} ms ({measure_s:.0f}s; "
        f"other processes used {busy.other_cores if busy.other_cores is not None else '?'} cores meanwhile)")
    import llama_cpp

    return {
        "shape": shape.to_dict(),
        "n_params": shape.n_params(),
        "types": {"weights": "q4_0", "output": "q6_k", "norms": "f32"},
        "file_bytes": size,
        "threads": threads,
        "context_len": context_len,
        "llama_cpp_python": getattr(llama_cpp, "__version__", "?"),
        "curve": curve.to_dict(),
        "runs": [{
            "measured_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "repeats": repeats,
            "other_processes_cores": busy.other_cores,
            "write_s": round(write_s, 1),
            "load_s": round(load_s, 1),
            "measure_s": round(measure_s, 1),
            "seconds": curve.seconds,
        }],
    }


_SAME_SETUP = ("shape", "n_params", "types", "threads", "context_len", "llama_cpp_python")


def merge_entry(old: dict | None, new: dict) -> dict:
    """Add a new run of a shape to the saved one: the curve becomes the minimum over runs.

    Runs of a different setup (shape, types, threads, context, llama.cpp version) or at
    other batch sizes are not comparable: the new entry then replaces the old one.
    """
    if not isinstance(old, dict) or any(old.get(k) != new.get(k) for k in _SAME_SETUP):
        return new
    try:
        old_curve = curve_from_dict(old["curve"])
        new_curve = curve_from_dict(new["curve"])
        combined = min_curve([old_curve, new_curve])
    except (KeyError, ValueError):
        return new
    runs = [r for r in old.get("runs", []) if isinstance(r, dict)] + new["runs"]
    return {**new, "curve": combined.to_dict(), "runs": runs}


def contention_note(entry: dict) -> str | None:
    """A warning when every run of a saved curve shared the CPU with other busy processes."""
    busy = [r.get("other_processes_cores") for r in entry.get("runs", []) if isinstance(r, dict)]
    known = [b for b in busy if isinstance(b, (int, float))]
    if not known or len(known) < len(busy) or min(known) < 0.25:
        return None
    return (f"every run shared the CPU with other processes (>= {min(known):.2f} cores busy): these costs may be "
            "inflated; re-run --measure on an idle machine (runs merge by their minimum)")


def machine_info() -> dict:
    import llama_cpp

    mem = None
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        pass
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(mem / 1024 ** 3, 1) if mem else None,
            "machine": platform.machine(), "llama_cpp_python": getattr(llama_cpp, "__version__", "?")}


def load_curves(path: Path) -> dict:
    """The saved measurements, validated: {'machine': {...}, 'shapes': {name: entry}}."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise EdgespecError(f"no saved curves at {path}; run with --measure first") from None
    except (OSError, ValueError) as e:
        raise EdgespecError(f"cannot read saved curves {path}: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), dict):
        raise EdgespecError(f"{path}: expected an object with a 'shapes' object")
    for name, entry in data["shapes"].items():
        try:
            curve_from_dict(entry.get("curve") if isinstance(entry, dict) else None, f"{path}: shape {name!r}")
            int(entry["n_params"])
        except (ValueError, KeyError, TypeError) as e:
            raise EdgespecError(f"{path}: shape {name!r} is malformed: {e}") from None
    return data


def save_curves(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------- output

def _ms(s: float) -> str:
    return f"{s * 1e3:.0f} ms" if s >= 0.01 else f"{s * 1e3:.1f} ms"


def measured_table(bench: dict, source: str, d_max: int) -> str:
    """The small pairs as measured by tools/bench.py, with what the cost model says for the same acceptance."""
    curve = None
    if isinstance(bench.get("curve"), dict):
        try:
            curve = curve_from_dict(bench["curve"], "bench curve")
        except ValueError:
            curve = None
    lines = [f"## Measured on this machine (real models; {source})", "",
             "| workload | drafter | acceptance (accepted/drafted) | measured speedup | measured tok/s | cost model, same acceptance, free drafts |",
             "|---|---|---|---|---|---|"]
    for r in bench.get("rows", []):
        if not isinstance(r, dict):
            continue
        acc = r.get("acceptance_rate")
        model = "–"
        if acc is not None and curve is not None and r.get("drafter") in ("lookup", "history"):
            try:
                d, s, _ = project(float(acc), curve, 0.0, d_max)
                model = f"{s:.2f}x (d={d})"
            except ValueError:
                model = "–"
        sp = r.get("speedup")
        lines.append(f"| {r.get('workload', '')} | {r.get('drafter', '?')} | {'–' if acc is None else f'{float(acc):.2f}'} | "
                     f"{'–' if sp is None else f'{float(sp):.2f}x'} | {r.get('tokens_per_s', '–')} | {model} |")
    if curve is not None:
        lines.append(f"\nOracle: the bench's (Qwen2.5-Coder-0.5B in tools/bench.py); its curve in the bench JSON: t(1) "
                     f"{_ms(curve.t(1))}, t(17) {_ms(curve.t(17))}, ceiling {ceiling(curve, d_max):.2f}x. The cost-model "
                     "column is the i.i.d.-acceptance prediction for the text-matching drafters with free drafts; the "
                     "gap to the measured speedup includes the policy's probes and the per-cycle overhead.")
    return "\n".join(lines)


def projection_table(rows, oracle_name: str, oracle_curve, drafter_name: str, drafter_t1: float,
                     curves_note: str, d_max: int) -> str:
    plain = 1.0 / oracle_curve.t(1)
    lines = [f"## {LABEL}", "",
             f"{drafter_name} drafter / {oracle_name} oracle, llama-3-like shapes, Q4_0 weights (Q6_K output), "
             f"{curves_note}.",
             f"Oracle {oracle_name}: t(1) {_ms(oracle_curve.t(1))} = {plain:.2f} tok/s plain; verify 17 tokens "
             f"{_ms(oracle_curve.t(17))}; ceiling (free, perfect drafts) {ceiling(oracle_curve, d_max):.2f}x. "
             f"Drafter {drafter_name}: t(1) {_ms(drafter_t1)} per drafted token.", "",
             "| pair | alpha (source) | best draft length | projected speedup | projected tok/s |",
             "|---|---|---|---|---|"]
    for r in rows:
        src = r.source
        lines.append(f"| {r.pair} | {src.alpha:.2f} ({src.label}) | {r.best_d if r.best_d else '0 (do not draft)'} | "
                     f"{r.speedup:.2f}x | {r.tokens_per_s:.2f} |")
    lines += ["", "Projected, not measured: decode costs come from random-weight GGUFs of the real shapes on this "
              "machine; acceptance comes from the source named in each row and is assumed i.i.d. per token "
              "(cost.expected_emitted), with the bench's accepted/drafted ratio used as the per-token rate "
              "(a conservative reading). A model drafter pays its t(1) per drafted token; text-matching drafters "
              "(lookup, history) are taken as free; the cascade is charged the model cost on every drafted token "
              "(pessimistic: it drafts from history and lookup first). Speedup is over plain one-token decoding "
              "of the same oracle."]
    return "\n".join(lines)


# ---------------------------------------------------------------- main

def _pick_curves(data: dict, oracle: str, drafter: str):
    shapes = data["shapes"]
    if drafter not in shapes:
        raise EdgespecError(f"no measured curve for the drafter shape {drafter!r}; run with --measure --shapes {drafter},{oracle}")
    d_curve = curve_from_dict(shapes[drafter]["curve"], drafter)
    if oracle in shapes:
        e = shapes[oracle]
        runs = [r for r in e.get("runs", []) if isinstance(r, dict)]
        when = str(runs[-1].get("measured_at", "?"))[:10] if runs else "?"
        note = (f"curves measured {when} with {e.get('threads', '?')} threads at context {e.get('context_len', '?')}"
                + (f" (minimum over {len(runs)} runs)" if len(runs) > 1 else ""))
        for name in (oracle, drafter):
            warn = contention_note(shapes[name])
            if warn:
                note += f"; WARNING {name}: {warn}"
        return curve_from_dict(e["curve"], oracle), d_curve, note
    target = SHAPES.get(oracle)
    others = [(int(e["n_params"]), curve_from_dict(e["curve"], n)) for n, e in shapes.items()]
    if target is None or len(others) < 2:
        raise EdgespecError(f"no measured curve for the oracle shape {oracle!r} and too few others to extrapolate from")
    names = ", ".join(sorted(shapes))
    return (extrapolate_curve(others, target.n_params()), d_curve,
            f"oracle curve EXTRAPOLATED by parameter count from the measured {names} shapes (the {oracle} did not fit here)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--measure", action="store_true", help="write the random-weight shapes and measure their curves (minutes)")
    ap.add_argument("--shapes", default="1b,8b", help=f"shapes to measure, from {','.join(SHAPES)} (default 1b,8b)")
    ap.add_argument("--drafter-shape", default="1b")
    ap.add_argument("--oracle-shape", default="8b")
    ap.add_argument("--curves", default=str(CURVES_PATH), help="saved curves JSON (read, and written by --measure)")
    ap.add_argument("--bench-json", action="append", metavar="FILE",
                    help="acceptance rates from tools/bench.py --json OUT (repeatable)")
    ap.add_argument("--alpha", help="acceptance rates by hand, e.g. 0.6,0.7,0.8")
    ap.add_argument("--d-max", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--context", type=int, default=256, help="context length the curves are measured at")
    ap.add_argument("--repeats", type=int, default=5, help="repeats per batch size; the minimum is kept (default 5)")
    ap.add_argument("--workdir", default=None, help="where the temporary GGUFs go (default: a new dir in the temp dir)")
    ap.add_argument("--keep-files", action="store_true", help="keep the written GGUFs")
    args = ap.parse_args(argv)

    try:
        if args.d_max < 1 or args.d_max > 64:
            raise ValueError("--d-max must be in 1..64")
        if args.threads < 1 or args.context < 8 or args.repeats < 1:
            raise ValueError("--threads and --repeats must be >= 1 and --context >= 8")
        for s in (args.drafter_shape, args.oracle_shape):
            if s not in SHAPES:
                raise ValueError(f"unknown shape {s!r} (one of {', '.join(SHAPES)})")
        sources: list[AlphaSource] = []
        benches = []
        for bj in args.bench_json or []:
            try:
                bench = json.loads(Path(bj).read_text())
            except (OSError, ValueError) as e:
                raise ValueError(f"cannot read bench JSON {bj}: {e}") from None
            try:
                sources += alphas_from_bench(bench)
            except ValueError as e:
                raise ValueError(f"{bj}: {e}") from None
            benches.append((bj, bench))
        hand = [(a, "given") for a in parse_alphas(args.alpha)] if args.alpha else []
        if not sources and not hand:
            hand = [(a, "default sweep") for a in DEFAULT_ALPHAS]
        # a hand-given rate is projected for both kinds of drafter: what the drafter's own cost takes away
        sources += [AlphaSource(a, label) for a, label in hand]
        sources += [AlphaSource(a, label, kind="free", drafter="lookup/history") for a, label in hand]

        curves_path = Path(args.curves)
        if args.measure:
            wanted = [s.strip() for s in args.shapes.split(",") if s.strip()]
            for s in wanted:
                if s not in SHAPES:
                    raise ValueError(f"unknown shape {s!r} in --shapes (one of {', '.join(SHAPES)})")
            measure(wanted, curves_path, args)
        data = load_curves(curves_path)
    except (ValueError, EdgespecError) as e:
        print(f"project_speedup: {e}", file=sys.stderr)
        return 2

    try:
        o_curve, d_curve, note = _pick_curves(data, args.oracle_shape, args.drafter_shape)
        rows = projection_rows(sources, o_curve, d_curve.t(1), oracle_name=args.oracle_shape.upper(),
                               drafter_name=args.drafter_shape.upper(), d_max=args.d_max)
    except (ValueError, EdgespecError) as e:
        print(f"project_speedup: {e}", file=sys.stderr)
        return 2
    for bj, bench in benches:
        print(measured_table(bench, bj, args.d_max))
        print()
    print(projection_table(rows, args.oracle_shape.upper(), o_curve, args.drafter_shape.upper(), d_curve.t(1),
                           note, args.d_max))
    return 0


def measure(wanted: list[str], curves_path: Path, args) -> None:
    """Measure each wanted shape that fits; falls back to 3B when one does not. Saves after every shape."""
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="edgespec-shapes-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        data = load_curves(curves_path)
    except EdgespecError:
        data = {"shapes": {}}
    data["note"] = ("Verify-cost curves t(n) (seconds per decode of n tokens, all logits) of random-weight "
                    "llama-3-like GGUF shapes, measured by tools/project_speedup.py --measure. Cost only: "
                    "random weights say nothing about acceptance.")
    data["machine"] = machine_info()
    queue = list(wanted)
    done = []
    while queue:
        name = queue.pop(0)
        shape = SHAPES[name]
        problem = resource_problem(shape_file_bytes(shape), workdir)
        if problem:
            print(f"[project] skipping {name}: {problem}", file=sys.stderr)
            if "3b" not in wanted and "3b" not in queue and "3b" not in done and name != "3b":
                queue.append("3b")  # a second, larger point to extrapolate the oracle from
            continue
        repeats = args.repeats
        entry = measure_shape(shape, workdir, threads=args.threads, context_len=args.context,
                                             repeats=repeats, keep_file=args.keep_files,
                                             log=lambda m: print(m, file=sys.stderr, flush=True))
        data["shapes"][name] = merge_entry(data["shapes"].get(name), entry)
        done.append(name)
        save_curves(curves_path, data)
    if not args.keep_files and not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `| head`: the reader left, nothing more to say
        sys.stdout = open(os.devnull, "w")
        sys.exit(0)
