"""The speedup projection: pure arithmetic over measured curves, and a tiny random-weight shape end to end."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from edgespec.cost import CostCurve
from edgespec.projection import (
    SHAPES,
    AlphaSource,
    ModelShape,
    alphas_from_bench,
    curve_from_dict,
    drafter_kind,
    extrapolate_curve,
    min_curve,
    parse_alphas,
    project,
    projection_rows,
)

ROOT = Path(__file__).resolve().parents[1]

# shaped like a memory-bound CPU decode: one token 300 ms, batches cost little more until compute takes over
BIG = CostCurve([1, 2, 4, 8, 12, 16, 17], [0.30, 0.32, 0.36, 0.48, 0.62, 0.78, 0.82])


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("project_speedup", ROOT / "tools" / "project_speedup.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------- pure functions

def test_no_acceptance_means_no_drafting():
    d, s, tps = project(0.0, BIG, 0.02, 16)
    assert d == 0 and s == 1.0
    assert tps == pytest.approx(1 / 0.30)


def test_speedup_monotonic_in_alpha():
    alphas = np.linspace(0, 1, 41)
    for cost in (0.0, 0.02, 0.1):
        s = [project(float(a), BIG, cost, 16)[1] for a in alphas]
        assert all(b >= a - 1e-12 for a, b in zip(s, s[1:]))
        assert s[-1] > 2.0 if cost == 0.0 else s[-1] > s[0]


def test_drafter_cost_only_lowers_speedup():
    s = [project(0.8, BIG, c, 16)[1] for c in (0.0, 0.01, 0.05, 0.2, 1.0)]
    assert all(b <= a + 1e-12 for a, b in zip(s, s[1:]))
    assert s[-1] == 1.0  # a drafter slower than the oracle never pays


def test_matches_closed_form_on_linear_curve():
    fixed, per, g = 0.05, 0.01, 0.004
    curve = CostCurve.linear(per, fixed=fixed, max_n=17)
    for alpha in (0.3, 0.6, 0.8, 0.95):
        # closed form: speedup(d) = E(d) t(1) / (t(d+1) + g d), E(d) = (1 - a^(d+1)) / (1 - a)
        best_d, best_s = 0, 1.0
        for d in range(1, 17):
            e = (1 - alpha ** (d + 1)) / (1 - alpha)
            s = e * (fixed + per) / (fixed + per * (d + 1) + g * d)
            if s > best_s:
                best_d, best_s = d, s
        d, s, tps = project(alpha, curve, g, 16)
        assert d == best_d
        assert s == pytest.approx(best_s)
        assert tps == pytest.approx(best_s / (fixed + per))


def test_bad_input_is_a_clear_error():
    for a in (-0.1, 1.5, float("nan"), "x", None):
        with pytest.raises(ValueError, match="acceptance"):
            project(a, BIG, 0.0)
    with pytest.raises(ValueError, match="drafter cost"):
        project(0.5, BIG, -1.0)
    with pytest.raises(ValueError, match="d_max"):
        project(0.5, BIG, 0.0, -2)


def test_parse_alphas():
    assert parse_alphas("0.6, 0.7,0.8") == [0.6, 0.7, 0.8]
    with pytest.raises(ValueError, match="'1.2'"):
        parse_alphas("0.6,1.2")
    with pytest.raises(ValueError, match="no acceptance"):
        parse_alphas(" , ")


def test_alphas_from_bench_rows():
    bench = {"rows": [
        {"drafter": "llama-cpp-python", "workload": "single", "acceptance_rate": None, "speedup": 1.0},
        {"drafter": "lookup", "workload": "season", "acceptance_rate": 0.43, "speedup": 0.97, "tokens_per_s": 32.8},
        {"drafter": "bridge", "workload": "single", "acceptance_rate": 0.61, "speedup": 1.1},
    ]}
    src = alphas_from_bench(bench)
    assert [(s.drafter, s.alpha, s.kind) for s in src] == [("lookup", 0.43, "free"), ("bridge", 0.61, "model")]
    assert src[0].measured_speedup == 0.97 and src[0].label == "lookup / season"
    with pytest.raises(ValueError, match="rows"):
        alphas_from_bench({"curve": {}})
    with pytest.raises(ValueError, match="row 0"):
        alphas_from_bench({"rows": [{"drafter": "x", "acceptance_rate": 3}]})
    assert drafter_kind("some-new-drafter") == "model"  # unknown: assume it costs something


def test_projection_rows_charge_model_drafters_only():
    src = [AlphaSource(0.8, "a", kind="free", drafter="lookup"), AlphaSource(0.8, "b", kind="model")]
    free, model = projection_rows(src, BIG, 0.05, oracle_name="8B", drafter_name="1B")
    assert free.drafter_cost_per_token == 0.0 and model.drafter_cost_per_token == 0.05
    assert free.speedup > model.speedup
    assert model.pair == "1B drafter / 8B oracle"


def test_extrapolation_is_linear_in_params():
    def curve(p):  # every size linear in params: extrapolation must be exact
        return CostCurve([1, 4, 16], [0.01 + 2e-11 * p, 0.02 + 5e-11 * p, 0.05 + 1.5e-10 * p])

    est = extrapolate_curve([(1e9, curve(1e9)), (3e9, curve(3e9))], int(8e9))
    for n in (1, 4, 16):
        assert est.t(n) == pytest.approx(curve(8e9).t(n))
    with pytest.raises(ValueError, match="two shapes"):
        extrapolate_curve([(1e9, curve(1e9))], int(8e9))


def test_min_curve_keeps_the_least_disturbed_time_per_size():
    a = CostCurve([1, 4], [0.10, 0.30])
    b = CostCurve([1, 4], [0.18, 0.25])
    m = min_curve([a, b])
    assert m.seconds == [0.10, 0.25]
    with pytest.raises(ValueError, match="different batch sizes"):
        min_curve([a, CostCurve([1, 8], [0.1, 0.5])])


def test_curve_from_dict_validates():
    c = curve_from_dict({"sizes": [4, 1], "seconds": [0.2, 0.1]})
    assert c.sizes == [1, 4]
    for bad in ({"sizes": [1]}, {"sizes": [1, 2], "seconds": [0.1]}, {"sizes": [1], "seconds": [-1]},
                {"sizes": [0, 1], "seconds": [0.1, 0.1]}, {"sizes": [1, 1], "seconds": [0.1, 0.1]}):
        with pytest.raises(ValueError):
            curve_from_dict(bad)


def test_shapes_match_published_parameter_counts():
    # Llama 3.1 8B has 8.03B parameters; Llama 3.2 1B has 1.24B with its output tied to the embedding
    assert SHAPES["8b"].n_params() == pytest.approx(8.03e9, rel=0.005)
    one = SHAPES["1b"]
    assert one.n_params() - one.n_vocab * one.n_embd == pytest.approx(1.236e9, rel=0.005)
    with pytest.raises(ValueError, match="n_head_kv"):
        ModelShape("bad", n_embd=64, n_layer=1, n_head=4, n_head_kv=3, n_ff=128, n_vocab=300)


# ---------------------------------------------------------------- the tool: saved curves and output


def _entry(tool, seconds, busy, **over):
    e = {"shape": {"name": "8b"}, "n_params": 8, "types": {"weights": "q4_0"}, "threads": 2, "context_len": 256,
         "llama_cpp_python": "0.3.36", "curve": {"sizes": [1, 4], "seconds": seconds},
         "runs": [{"seconds": seconds, "other_processes_cores": busy}]}
    return {**e, **over}


def test_runs_merge_by_minimum_only_for_the_same_setup(tool):
    old = _entry(tool, [0.10, 0.40], 0.9)
    new = _entry(tool, [0.18, 0.30], 1.1)
    merged = tool.merge_entry(old, new)
    assert merged["curve"]["seconds"] == [0.10, 0.30]
    assert len(merged["runs"]) == 2
    assert tool.contention_note(merged) is not None  # every run was disturbed: say so
    assert tool.contention_note(tool.merge_entry(merged, _entry(tool, [0.2, 0.5], 0.05))) is None
    other_threads = _entry(tool, [0.3, 0.9], 0.0, threads=1)
    assert tool.merge_entry(merged, other_threads) is other_threads  # not comparable: replaced
    assert tool.merge_entry(None, new) is new


def test_cli_prints_labelled_projection(tool, tmp_path, capsys):
    curves = {"shapes": {
        "1b": {"n_params": SHAPES["1b"].n_params(), "curve": {"sizes": [1, 4, 17], "seconds": [0.03, 0.05, 0.2]}},
        "8b": {"n_params": SHAPES["8b"].n_params(), "curve": BIG.to_dict(), "measured_at": "2025-01-01T00:00:00"},
    }}
    cpath = tmp_path / "curves.json"
    cpath.write_text(json.dumps(curves))
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"rows": [{"drafter": "history", "workload": "season", "acceptance_rate": 0.7,
                                           "speedup": 0.96, "tokens_per_s": 34.1}],
                                 "curve": {"sizes": [1, 4, 17], "seconds": [0.015, 0.05, 0.1]}}))
    assert tool.main(["--curves", str(cpath), "--bench-json", str(bench), "--alpha", "0.0,0.9"]) == 0
    out = capsys.readouterr().out
    assert "PROJECTION (random-weight shapes, cost only)" in out
    assert "| season | history | 0.70 | 0.96x | 34.1 |" in out  # the measured small-pair row
    assert "| history (no model) / 8B oracle | 0.70 (history / season) |" in out  # projected as a free drafter
    lines = [ln for ln in out.splitlines() if ln.startswith("| 1B drafter / 8B oracle")]
    assert len(lines) == 2 and "0 (do not draft)" in lines[0] and "1.00x" in lines[0]
    # a missing file or a bad alpha is a message and exit code 2, not a traceback
    assert tool.main(["--curves", str(tmp_path / "none.json")]) == 2
    assert tool.main(["--curves", str(cpath), "--alpha", "2"]) == 2
    err = capsys.readouterr().err
    assert "--measure" in err and "'2'" in err


def test_cli_extrapolates_when_the_oracle_shape_is_missing(tool, tmp_path, capsys):
    def entry(name, t1):
        return {"n_params": SHAPES[name].n_params(), "curve": {"sizes": [1, 17], "seconds": [t1, t1 * 4]}}

    cpath = tmp_path / "curves.json"
    cpath.write_text(json.dumps({"shapes": {"1b": entry("1b", 0.02), "3b": entry("3b", 0.04)}}))
    assert tool.main(["--curves", str(cpath), "--alpha", "0.8"]) == 0
    out = capsys.readouterr().out
    assert "EXTRAPOLATED" in out
