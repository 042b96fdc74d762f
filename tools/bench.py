#!/usr/bin/env python
"""Side-by-side benchmark: plain llama-cpp-python, its prompt-lookup decoding, and every edgespec drafter.

Every method runs on the same prompts, interleaved prompt by prompt, in one
process, so the ratios are measured under the same machine conditions (absolute
times on a shared 2-core box are noisy; ratios much less so). The baseline is
plain llama-cpp-python greedy decoding with the oracle, as a user would run it.

    python tools/bench.py [--quick] [--json OUT] [--readme]

Text identity: greedy output is compared token by token with the baseline; a
difference counts as a near-tie (still "identical" in the JSON) only when, at the
first divergence, both tokens' logits are within 0.25 of the oracle's best in
one-token-at-a-time decoding — normally the top two; on a many-way tie a batched
pass may pick the third (llama.cpp's CPU kernels are not batch-invariant on
quantized models).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgespec.acceptance import tied_tokens  # noqa: E402
from edgespec.api import resolve  # noqa: E402
from edgespec.calibrate import load_or_measure  # noqa: E402
from edgespec.engine import Engine, GenerationParams  # noqa: E402
from edgespec.llama import LlamaModel, render_chat  # noqa: E402
from edgespec.cost import CostCurve  # noqa: E402
from edgespec.power import EnergyMeter  # noqa: E402
from vineyard import fieldnote  # noqa: E402
from vineyard.prompt import report_messages  # noqa: E402
from vineyard.seeds import template_reports  # noqa: E402

NEAR_TIE = 0.25
README_BEGIN = "<!-- bench:begin -->"
README_END = "<!-- bench:end -->"


def ceiling(curve: CostCurve, n_tokens: int, d_max: int = 16) -> float:
    """Oracle-only time over the verify cost of the same tokens at the best batch size (free, perfect drafts)."""
    if n_tokens <= 1:
        return 1.0
    per_tok = min(curve.t(d + 1) / (d + 1) for d in range(0, d_max + 1))
    return curve.t(1) / per_tok


SEASON_SCORED = 8  # a season scores its last 8 reports (the 13th..20th of 20), each with all earlier ones in the history
WARMUP = 3  # reports before the first scored one that every method runs too, so the engines' estimates are warm


def first_scored(workload: str, n_reports: int) -> int:
    """Index of the first scored report: single notes are all scored; a season its last ``SEASON_SCORED``
    (at least 3 earlier reports in the history, as in the quick run)."""
    return max(3, n_reports - SEASON_SCORED) if workload == "season" else 0


def load_workloads(quick: bool) -> dict[str, list[dict]]:
    notes_dir = ROOT / "vineyard" / "samples" / "notes"
    notes = [fieldnote.load(p) for p in sorted(notes_dir.glob("*.json"))]
    w = {"single": notes[:6] if quick else notes}
    season_dir = ROOT / "vineyard" / "samples" / "season"
    if season_dir.is_dir():
        season = [fieldnote.load(p) for p in sorted(season_dir.glob("*.json"))][: 6 if quick else None]
        w["season"] = season
    return w


class Baselines:
    """llama-cpp-python as a user would run it: the high-level Llama class, greedy."""

    def __init__(self, path: str, n_ctx: int, threads: int):
        import llama_cpp

        self.llama_cpp = llama_cpp
        with contextlib.redirect_stderr(io.StringIO()):
            self.plain = llama_cpp.Llama(path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False)
            from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

            self.pld = llama_cpp.Llama(path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False,
                                       draft_model=LlamaPromptLookupDecoding(num_pred_tokens=10))

    def run(self, which: str, prompt: list[int], max_tokens: int):
        # no llm.reset(): Llama.generate reuses the prefix this prompt shares with the previous report
        # (the system prompt), as a long-running app does; edgespec's runs get the same (see `shared`)
        llm = self.plain if which == "plain" else self.pld
        toks = []
        with EnergyMeter() as meter:
            t = self._generate(llm, prompt, max_tokens, toks)
        return toks, t, meter.joules

    @staticmethod
    def _generate(llm, prompt, max_tokens, toks):
        t0 = time.perf_counter()
        for tok in llm.generate(prompt, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
            if llm._model.token_is_eog(tok) if hasattr(llm._model, "token_is_eog") else tok == llm.token_eos():
                break
            toks.append(int(tok))
            if len(toks) >= max_tokens:
                break
        return time.perf_counter() - t0


def first_divergence(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def sequential_ties(oracle: LlamaModel, prompt: list[int], ref: list[int]) -> list[list[int]]:
    """At every reference position, one token at a time: the tokens within NEAR_TIE of the oracle's best logit,
    best first."""
    oracle.reset()
    logits = oracle.sync(prompt)
    ties = []
    for t in ref:
        ties.append(sorted(tied_tokens(logits, NEAR_TIE), key=lambda tok: -logits[tok]))
        logits = oracle.step(t)
    return ties


def identity(ties: list[list[int]], ref: list[int], got: list[int]) -> str:
    i = first_divergence(ref, got)
    if i is None:
        return "yes"
    if i >= min(len(ref), len(got)):
        return "NO (length)"
    if {ref[i], got[i]} <= set(ties[i]):
        # "near-tie(3+)": more than two tokens sit within the tolerance and the batch picked one below second place
        return f"near-tie@{i}" if got[i] in ties[i][:2] else f"near-tie(3+)@{i}"
    return f"NO@{i}"


def add_to_history(built: dict, oracle: LlamaModel, report: list[int]) -> None:
    """The user's history grows report by report (report n drafts from reports 1..n-1), as the app saves them."""
    text = oracle.detokenize(report, special=False).decode("utf-8", "replace")
    if not text.strip():
        return
    done: set[str] = set()
    for kind in ("history", "cascade"):
        idx = getattr(built.get(kind), "index", None)
        if idx is not None and idx.path not in done:  # history and cascade share one database file
            done.add(idx.path)
            idx.add_report(text, tokenize=lambda s: oracle.tokenize(s, add_bos=False, special=False),
                           model_id=oracle.vocab_fingerprint())


def make_drafter(kind: str, oracle: LlamaModel, paths: dict, threads: int, history_db: str | None):
    from edgespec.drafters.bridge import BridgeDrafter
    from edgespec.drafters.model import ModelDrafter

    if kind == "none":
        return None
    if kind == "lookup":
        from edgespec.drafters.lookup import PromptLookupDrafter

        return PromptLookupDrafter()
    if kind == "bridge":
        return BridgeDrafter(LlamaModel(paths["smollm2"], n_ctx=4096, n_threads=threads), oracle)
    if kind == "model-q4_0":
        return ModelDrafter(LlamaModel(paths["q4_0"], n_ctx=4096, n_threads=threads), oracle_vocab=oracle.n_vocab)
    if kind in ("history", "cascade"):
        from edgespec.drafters.history import HistoryDrafter
        from edgespec.drafters.history_index import HistoryIndex

        index = HistoryIndex(history_db, templates=template_reports)
        hist = HistoryDrafter.for_oracle(index, oracle)
        hist.index = index
        if kind == "history":
            return hist
        from edgespec.drafters.cascade import CascadeDrafter
        from edgespec.drafters.lookup import PromptLookupDrafter

        casc = CascadeDrafter([hist, PromptLookupDrafter(), BridgeDrafter(LlamaModel(paths["smollm2"], n_ctx=4096, n_threads=threads), oracle)])
        casc.index = index
        return casc
    if kind == "onnx":
        from edgespec.drafters.onnx import make_onnx_drafter

        return make_onnx_drafter("smollm2-135m-instruct", oracle, n_threads=threads)
    raise ValueError(kind)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer prompts and tokens, cheap drafters only (~7 min on 2 cores)")
    ap.add_argument("--json", metavar="OUT", help="write the rows as JSON")
    ap.add_argument("--readme", action="store_true", help="replace the table between the bench markers in README.md")
    ap.add_argument("--max-tokens", type=int, default=None)
    ap.add_argument("--drafters", default=None, help="comma list (default depends on --quick)")
    ap.add_argument("--workloads", default="single,season")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--oracle", default="qwen2.5-coder-0.5b-instruct",
                    help="catalog name or GGUF path of the oracle (baselines use the same file)")
    args = ap.parse_args(argv)

    max_tokens = args.max_tokens or (64 if args.quick else 200)
    default_drafters = "none,lookup,history,cascade" if args.quick else "none,lookup,bridge,model-q4_0,history,cascade,onnx"
    drafters = (args.drafters or default_drafters).split(",")

    paths = {"oracle": str(resolve(args.oracle, fetch=True)),
             "smollm2": str(resolve("smollm2-135m-instruct", fetch=True))}
    if "model-q4_0" in drafters:
        paths["q4_0"] = str(resolve("qwen2.5-coder-0.5b-instruct-q4_0", fetch=True))

    t_start = time.time()
    oracle = LlamaModel(paths["oracle"], n_ctx=4096, n_threads=args.threads)
    curve = load_or_measure(oracle, refresh=True)  # measured now, under the same conditions as the runs
    base = Baselines(paths["oracle"], 4096, args.threads)
    workloads = {k: v for k, v in load_workloads(args.quick).items() if k in args.workloads.split(",")}

    import tempfile

    tmpdir = tempfile.mkdtemp(prefix="edgespec-bench-")
    rows = []
    for wname, notes in workloads.items():
        hist_db = os.path.join(tmpdir, f"history-{wname}.db")
        built = {}
        for kind in drafters:
            try:
                built[kind] = make_drafter(kind, oracle, paths, args.threads, hist_db)
            except Exception as e:  # a missing optional backend is reported, not fatal
                print(f"[bench] skipping drafter {kind}: {e}", file=sys.stderr)
        engines: dict = {}
        per = {m: {"t": [], "tokens": [], "acc": [], "drafted": [], "ident": [], "j": []} for m in ["llama-cpp-python", "llama-cpp-python PLD", *built]}
        prev_prompt: list[int] = []
        scored_from = first_scored(wname, len(notes))
        run_from = max(0, scored_from - WARMUP)  # earlier reports only go into the history (as plain decoding wrote them)
        for i, note in enumerate(notes):
            prompt = oracle.tokenize(render_chat(oracle, report_messages(note)), special=True)
            # every method starts with the prefix shared with the previous report cached (the system prompt),
            # as in a fieldlog session; llama-cpp-python's Llama does the same by itself
            shared = len(os.path.commonprefix([prev_prompt, prompt]))
            prev_prompt = prompt
            ref, t_ref, j_ref = base.run("plain", prompt, max_tokens)
            if i < run_from:
                add_to_history(built, oracle, ref)
                print(f"[bench] {wname} {i + 1}/{len(notes)} into the history ({time.time() - t_start:.0f}s)", file=sys.stderr)
                continue
            per["llama-cpp-python"]["j"].append(j_ref)
            ties = sequential_ties(oracle, prompt, ref)
            per["llama-cpp-python"]["t"].append(t_ref)
            per["llama-cpp-python"]["tokens"].append(len(ref))
            per["llama-cpp-python"]["ident"].append("yes")
            toks, t, j = base.run("pld", prompt, max_tokens)
            per["llama-cpp-python PLD"]["j"].append(j)
            per["llama-cpp-python PLD"]["t"].append(t)
            per["llama-cpp-python PLD"]["tokens"].append(len(toks))
            per["llama-cpp-python PLD"]["ident"].append(identity(ties, ref, toks))
            for kind, drafter in built.items():
                oracle.trim(shared)
                eng = engines.setdefault(kind, Engine(oracle, drafter, curve=curve))  # learns across reports
                done = None
                with EnergyMeter() as meter:
                    t0 = time.perf_counter()
                    for ev in eng.generate(prompt, GenerationParams(max_tokens=max_tokens)):
                        done = ev
                    t = time.perf_counter() - t0
                per[kind]["j"].append(meter.joules)
                s = done.stats
                per[kind]["t"].append(t)
                per[kind]["tokens"].append(s.tokens)
                per[kind]["acc"].append(s.accepted_tokens)
                per[kind]["drafted"].append(s.drafted_tokens)
                per[kind]["ident"].append(identity(ties, ref, done.tokens))
            add_to_history(built, oracle, ref)
            print(f"[bench] {wname} {i + 1}/{len(notes)} done ({time.time() - t_start:.0f}s)", file=sys.stderr)

        skip_first = scored_from - run_from  # the warm-up reports ran but are not scored
        base_d = per["llama-cpp-python"]
        base_rate = [n / t for n, t in zip(base_d["tokens"][skip_first:], base_d["t"][skip_first:])]
        for method, d in per.items():
            ts = d["t"][skip_first:]
            if not ts:
                continue
            # throughput ratio, not time ratio: a near-tie can change a report's length
            speedups = [(n / t) / b for n, t, b in zip(d["tokens"][skip_first:], ts, base_rate)]
            toks = sum(d["tokens"][skip_first:])
            drafted = sum(d["drafted"][skip_first:]) if d["drafted"] else 0
            acc = sum(d["acc"][skip_first:]) if d["acc"] else 0
            idents = d["ident"][skip_first:]
            rows.append({
                "drafter": method,
                "workload": wname,
                "prompts": len(ts),
                "tokens": toks,
                "tokens_per_s": round(toks / sum(ts), 1),
                "speedup": round(statistics.median(speedups), 3),
                "speedup_min": round(min(speedups), 3),
                "speedup_max": round(max(speedups), 3),
                "acceptance_rate": round(acc / drafted, 3) if drafted else None,
                "identical": all(x == "yes" or x.startswith("near-tie") for x in idents),
                "identical_exact": sum(x == "yes" for x in idents),
                "near_ties": sum(x.startswith("near-tie") for x in idents),
                "ceiling": round(ceiling(curve, toks // max(1, len(ts))), 2),
                # device-profile estimate (process CPU time x watts per busy core + idle), per report
                "energy_j_per_report": round(statistics.mean(d["j"][skip_first:]), 2) if d["j"][skip_first:] else None,
                "per_prompt": [{"speedup": round(x, 3), "identity": ident} for x, ident in zip(speedups, idents)],
            })
        for d in built.values():
            if d is not None and hasattr(d, "close") and not hasattr(d, "index"):
                with contextlib.suppress(Exception):
                    d.close()

    table = render_table(rows, max_tokens, args, weeks=len(workloads.get("season", [])))
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "max_tokens": max_tokens, "curve": curve.to_dict(),
                                               "machine": f"{platform.machine()} {os.cpu_count()} cores",
                                               "elapsed_s": round(time.time() - t_start, 1)}, indent=2))
    if args.readme:
        cmd = "python tools/bench.py" + (" --quick" if args.quick else "")
        update_readme(table, cmd)
    return 0


ORACLE_LABELS = {"qwen2.5-coder-0.5b-instruct": "Qwen2.5-Coder-0.5B-Instruct (catalog GGUF)",
                 "qwen2.5-coder-0.5b-instruct-q4_0": "Qwen2.5-Coder-0.5B-Instruct requantized to Q4_0 (local)"}


def render_table(rows, max_tokens, args, weeks: int = 0) -> str:
    head = ("| workload | method | prompts | tok/s | speedup (median, min–max) | acceptance | identical | J/report | ceiling |\n"
            "|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        acc = "–" if r["acceptance_rate"] is None else f"{r['acceptance_rate']:.2f}"
        ident = f"{r['identical_exact']}/{r['prompts']}" + (f" (+{r['near_ties']} near-tie)" if r["near_ties"] else "")
        if not r["identical"]:
            ident += " **differs**"
        lines.append(f"| {r['workload']} | {r['drafter']} | {r['prompts']} | {r['tokens_per_s']} | "
                     f"{r['speedup']:.2f}x ({r['speedup_min']:.2f}–{r['speedup_max']:.2f}) | {acc} | {ident} | "
                     f"{r['energy_j_per_report']:.1f} | {r['ceiling']:.2f}x |")
    lines.append(f"\nGreedy, {max_tokens} new tokens per report, oracle {ORACLE_LABELS.get(args.oracle, Path(args.oracle).name)}, "
                 f"{args.threads} threads; speedup = method tokens/s / plain llama-cpp-python tokens/s on the same prompt (median over prompts; every method starts with the system prompt cached from the previous report, as in an app session); "
                 f"season = reports {first_scored('season', weeks) + 1}-{weeks} of a block's {weeks}-week season, each with every earlier report in the history; "
                 "J/report = process CPU time x the default 2-core handheld power profile; "
                 "ceiling = free, perfect drafts at the best verify batch size.")
    return "\n".join(lines)


def update_readme(table: str, cmd: str) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    if README_BEGIN not in text:
        return
    pre, rest = text.split(README_BEGIN, 1)
    _, post = rest.split(README_END, 1)
    block = f"{README_BEGIN}\n`{cmd}`\n\n{table}\n{README_END}"
    readme.write_text(pre + block + post)


if __name__ == "__main__":
    sys.exit(main())
