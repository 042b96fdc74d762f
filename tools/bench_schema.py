#!/usr/bin/env python
"""Schema-driven reports, side by side: plain llama-cpp-python with the same prompt and grammar against edgespec.

    python tools/bench_schema.py [--notes PATH ...] [--season PATH ...] [--drafters none,lookup,history,cascade]
                                 [--cli N] [--cli-only] [--json OUT]

Every note is written by each method in turn, in one process (ratios under the same machine
conditions). The baseline is llama-cpp-python's ``Llama.create_completion`` with the report's
grammar as ``LlamaGrammar`` (GBNF, ``vineyard.schema.report_gbnf``), greedy; ``speedup`` is
against it. edgespec runs the same prompt under the same grammar in llguidance's dialect
(``report_grammar``): the data lines go into the verify batch unsampled (jump-forward), the drafter
drafts the written fields. "same tokens as oracle-only" compares each drafter's tokens with edgespec's own oracle-only run
under the grammar (the oracle's constrained greedy decoding); "same text as baseline" with
llama-cpp-python's, which may tokenize the fixed text differently and so part later. Also timed:
today's free-form report in plain llama-cpp-python (a
different prompt, no grammar), as seconds per finished report. A note the validator refuses is
listed and skipped. ``--notes`` takes a folder of note JSON files or a JSONL file (repeatable);
``--season`` one block's notes in date order, of which the last weeks are scored, each drafting from
the reports of the weeks before. The default is the shipped samples and season and the held-out
notes and season in bench/unseen/. The CLI rows run ``edgespec generate --notes`` in a fresh
process per report, each note ``--cli-repeats`` times (median), against the same command with
``--drafter none``.

Every timed run in one process starts from the same warm cache, as in an app that has just written the
note before: the tokens this note's prompt shares with the previous note's (the system prompt, and in a
season the block's header lines) are evaluated untimed first, for llama-cpp-python (its prefix match)
and for edgespec (``PrefixCache.sync``) alike. A CLI row's process starts as a user's does: from the policy
state and the prompt cache (``edgespec.prompt_state``) its drafter's earlier processes left, never from its
own note's prompt.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from bench import make_drafter  # noqa: E402
from edgespec.api import resolve  # noqa: E402
from edgespec.calibrate import load_or_measure  # noqa: E402
from edgespec.constraints import Constraint  # noqa: E402
from edgespec.engine import Engine, GenerationParams  # noqa: E402
from edgespec.llama import LlamaModel, render_chat  # noqa: E402
from vineyard import FieldNoteError, fieldnote, prompt, schema  # noqa: E402
from vineyard.facts import check_report  # noqa: E402

MAX_TOKENS = 320


def load_notes(path: Path) -> tuple[list[tuple[str, dict]], list[tuple[str, str]]]:
    """(name, validated note) for every note under ``path``, and (name, reason) for those refused."""
    raw: list[tuple[str, object]] = []
    if path.is_dir():
        for p in sorted(path.glob("*.json")):
            try:
                raw.append((p.name, json.loads(p.read_text(encoding="utf-8"))))
            except (OSError, ValueError) as e:
                raw.append((p.name, e))
    else:
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    raw.append((f"{path.name}:{i}", json.loads(line)))
                except ValueError as e:
                    raw.append((f"{path.name}:{i}", e))
    ok, refused = [], []
    for name, note in raw:
        try:
            if isinstance(note, Exception):
                raise FieldNoteError(str(note))
            ok.append((name, fieldnote.validate(note)))
        except FieldNoteError as e:
            refused.append((name, str(e)))
    return ok, refused


def repeated_sentence(text: str) -> bool:
    sents = [s.strip().lower() for s in text.replace("\n", ". ").split(". ") if len(s.strip()) > 12]
    return len(sents) != len(set(sents))


class Plain:
    """llama-cpp-python as a user runs it: the high-level Llama class, greedy, optionally with a grammar."""

    def __init__(self, path: str, threads: int):
        import llama_cpp

        self.llama_cpp = llama_cpp
        with contextlib.redirect_stderr(io.StringIO()):
            self.llm = llama_cpp.Llama(path, n_ctx=4096, n_threads=threads, n_threads_batch=threads, verbose=False)

    def run(self, tokens: list[int], gbnf: str | None, warm: list[int] = ()) -> tuple[str, float]:
        with contextlib.redirect_stderr(io.StringIO()):
            grammar = self.llama_cpp.LlamaGrammar.from_string(gbnf, verbose=False) if gbnf else None
            self.llm.reset()
            if warm:  # create_completion reuses the longest cached prefix of the prompt
                self.llm.eval(list(warm))
        t0 = time.perf_counter()
        out = self.llm.create_completion(tokens, max_tokens=MAX_TOKENS, temperature=0.0, top_k=1, repeat_penalty=1.0,
                                         grammar=grammar)
        return out["choices"][0]["text"], time.perf_counter() - t0


SEASON_SCORED = 8  # a season scores its last 8 weeks; the weeks before only fill the history, as a season would
CLI_NOTES = 4  # single notes run through `edgespec generate` in fresh processes
CLI_REPEATS = 3  # runs of each of them per drafter (a report's time is their median)


def workloads(args) -> list[tuple[str, str, Path]]:
    """(name, "single" | "season", path) for every note set asked for (default: samples and unseen, notes and seasons)."""
    if not (args.notes or args.season):
        return [("samples", "single", ROOT / "vineyard" / "samples" / "notes"),
                ("unseen", "single", ROOT / "bench" / "unseen" / "notes"),
                ("samples season", "season", ROOT / "vineyard" / "samples" / "season"),
                ("unseen season", "season", ROOT / "bench" / "unseen" / "season-eola-2n")]
    name = lambda p: p.parent.name if p.name == "notes" else p.stem  # noqa: E731
    season = lambda p: p.name if "season" in p.name else f"{p.name} season"  # noqa: E731
    return ([(name(p), "single", p) for p in args.notes or []] + [(season(p), "season", p) for p in args.season or []])


class Engines:
    """One engine per drafter for a workload: fresh history databases (seeded with the templates only, the user's
    real history untouched), the draft policy carried over from the previous workload as a long-running app
    (or a saved policy state) would."""

    def __init__(self, oracle, curve, drafters, threads, previous: "Engines | None" = None):
        self.oracle = oracle
        self.engines = {}
        for kind in drafters:
            d = make_drafter(kind, oracle, paths(), threads, str(Path(tempfile.mkdtemp()) / "history.db"))
            eng = Engine(oracle, d, curve=curve)
            if previous is not None and kind in previous.engines:
                eng.policy.restore(previous.engines[kind].policy.to_state())
            self.engines[kind] = eng

    def add_report(self, kind: str, text: str) -> None:
        index = getattr(self.engines[kind].drafter, "index", None)
        if index is not None and text.strip():
            index.add_report(text, tokenize=lambda s: self.oracle.tokenize(s, add_bos=False, special=False),
                             model_id=self.oracle.vocab_fingerprint())

    def close(self) -> None:
        for eng in self.engines.values():
            if eng.drafter is not None:
                eng.drafter.close()


def paths() -> dict:
    return {"smollm2": str(resolve("smollm2-135m-instruct", fetch=True))}


NEAR_TIE = 0.25  # as tools/bench.py: two tokens within this many logits of each other are a near-tie


def identity(oracle, prompt: list[int], ref: list[int], got: list[int]) -> str:
    """"yes", "near-tie@i" (at the first divergence both tokens are within NEAR_TIE logits, one step at a time
    after the common prefix; both were allowed by the grammar, each path chose one) or "NO@i". A run that
    ends where the other goes on chose the end-of-generation token at that position."""
    i = next((k for k, (a, b) in enumerate(zip(ref, got)) if a != b), None)
    if i is None:
        if len(ref) == len(got):
            return "yes"
        # one run ended where the other went on: it chose the end-of-generation token there (not in the tokens)
        i = min(len(ref), len(got))
    a = ref[i] if i < len(ref) else oracle.eos_token()
    b = got[i] if i < len(got) else oracle.eos_token()
    oracle.reset()
    logits = oracle.sync(prompt + ref[:i])
    return f"near-tie@{i}" if abs(float(logits[a]) - float(logits[b])) <= NEAR_TIE else f"NO@{i}"


def warm_prefix(prompts: list[list[int]], i: int) -> list[int]:
    """What an app's cache shares with note ``i``'s prompt after writing the note before it (for the first
    note, the one after): the common token prefix of the two prompts."""
    if len(prompts) < 2:
        return []
    a, b = prompts[i], prompts[i - 1 if i > 0 else 1]
    return a[: min(len(os.path.commonprefix([a, b])), len(a) - 1)]


def generate(oracle, eng, tokens, constraint, warm: list[int] = ()) -> tuple[object, float]:
    oracle.reset()
    if warm:
        oracle.sync(list(warm))  # untimed: the prefix an app's cache already holds (PrefixCache.sync keeps it)
    t0 = time.perf_counter()
    done = list(eng.generate(tokens, GenerationParams(max_tokens=MAX_TOKENS), constraint=constraint))[-1]
    return done, time.perf_counter() - t0


def cli_rows(notes: list[tuple[str, Path]], drafters: list[str], threads: int, repeats: int = CLI_REPEATS) -> list[dict]:
    """``edgespec generate --notes F --json`` in a fresh process per report, as a user runs it: every note in turn,
    ``repeats`` rounds, the drafters interleaved note by note (A B, then B A in the next round); a report's time is
    the median of its runs (a fresh process's prefill alone varies by ~30% here). Each drafter keeps its own
    policy state and prompt cache between its processes, as in a user's cache: a run starts from the prompt of
    the note before it, never from its own."""
    state = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    kinds = ["none", *drafters]
    for kind in kinds:
        (state / kind).mkdir()
    runs: dict[tuple[str, str], list[dict]] = {}
    for rep in range(repeats):
        for name, path in notes:
            for kind in (kinds if rep % 2 == 0 else kinds[::-1]):
                env = {**os.environ, "EDGESPEC_POLICY_DIR": str(state / kind / "policy"),
                       "EDGESPEC_PROMPT_CACHE_DIR": str(state / kind / "prompt")}
                cmd = [sys.executable, "-m", "edgespec.cli", "generate", "--notes", str(path), "--json", "--drafter",
                       kind, "--max-tokens", str(MAX_TOKENS), "--threads", str(threads),
                       "--db", str(state / kind / "history.db")]
                t0 = time.perf_counter()
                out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
                wall = time.perf_counter() - t0
                if out.returncode != 0:
                    raise SystemExit(f"{' '.join(cmd)} failed: {out.stderr[-2000:]}")
                rec = json.loads(out.stdout)
                runs.setdefault((name, kind), []).append({"s": rec["stats"]["wall_s"], "process_s": wall,  # prefill included
                                                          "text": rec["text"], "tokens": rec["tokens"]})
            print(f"[cli] round {rep + 1}/{repeats} {name}: " + ", ".join(
                f"{k} {runs[(name, k)][-1]['s']:.2f}s" for k in kinds), file=sys.stderr)
    res: dict[str, list[dict]] = {d: [] for d in kinds}
    for name, _ in notes:
        for kind in kinds:
            rs = runs[(name, kind)]
            res[kind].append({"s": statistics.median(r["s"] for r in rs),
                              "process_s": statistics.median(r["process_s"] for r in rs),
                              "runs_s": [round(r["s"], 3) for r in rs], "text": rs[-1]["text"], "tokens": rs[-1]["tokens"]})
        base = res["none"][-1]
        for kind in kinds:
            r = res[kind][-1]
            r.update(speedup=base["s"] / r["s"], same_own=r["tokens"] == base["tokens"])
        print(f"[cli] {name}: " + ", ".join(f"{k} {v[-1]['s']:.2f}s (runs {v[-1]['runs_s']})"
                                            for k, v in res.items()), file=sys.stderr)
    rows = []
    for kind, rs in res.items():
        sp = [r["speedup"] for r in rs]
        rows.append({"workload": f"cli, fresh process, median of {repeats}", "drafter": kind, "reports": len(rs),
                     "skipped": 0, "repeats": repeats,
                     "s_per_report": statistics.median(r["s"] for r in rs),
                     "process_s": statistics.median(r["process_s"] for r in rs),
                     "speedup": statistics.median(sp), "speedup_min": min(sp), "speedup_max": max(sp),
                     "vs": "oracle-only CLI", "identical": None,
                     "identical_own": sum(r["same_own"] for r in rs), "looping": sum(repeated_sentence(r["text"]) for r in rs),
                     "findings": None})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--notes", action="append", type=Path, help="a folder of note JSON files or a JSONL file (repeatable)")
    ap.add_argument("--season", action="append", type=Path,
                    help="a season: a folder or JSONL of one block's notes in date order (repeatable); its last "
                         f"{SEASON_SCORED} weeks are scored, each drafting from the reports of the weeks before")
    ap.add_argument("--drafters", default="none,lookup,history,cascade")
    ap.add_argument("--cli", type=int, default=CLI_NOTES, metavar="N",
                    help=f"also run N single notes through the CLI, one fresh process each (default {CLI_NOTES}; 0: skip)")
    ap.add_argument("--cli-repeats", type=int, default=CLI_REPEATS, metavar="K",
                    help=f"runs of each CLI note per drafter, interleaved; a report's time is their median (default {CLI_REPEATS})")
    ap.add_argument("--cli-only", action="store_true", help="only the CLI rows (the in-process workloads are not run)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, metavar="N", help="at most N notes per workload (a smoke run)")
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args(argv)
    drafters = [d for d in args.drafters.split(",") if d]
    if "none" not in drafters:
        drafters.insert(0, "none")  # the drafters' tokens are compared with the oracle-only run's

    oracle_path = str(resolve("qwen2.5-coder-0.5b-instruct", fetch=True))
    oracle = LlamaModel(oracle_path, n_ctx=4096, n_threads=args.threads)
    curve = load_or_measure(oracle)
    plain = Plain(oracle_path, args.threads)
    print(f"verify cost on this machine: 1 token {curve.t(1) * 1000:.0f} ms, 16 tokens {curve.t(16) * 1000:.0f} ms",
          file=sys.stderr)

    rows, engines, cli_candidates, texts = [], None, [], []
    for workload, shape, path in workloads(args):
        notes, refused = load_notes(path)
        notes = notes[-args.limit:] if args.limit else notes
        for name, why in refused:
            print(f"[{workload}] skipped {name}: {why}", file=sys.stderr)
        if shape == "single" and path.is_dir():
            cli_candidates += [(name, path / name) for name, _ in notes]
        if args.cli_only:
            continue
        engines = Engines(oracle, curve, drafters, args.threads, previous=engines)
        scored_from = max(0, len(notes) - SEASON_SCORED) if shape == "season" else 0
        methods = (["llama-cpp-python free-form"] if shape == "single" else []) + ["llama-cpp-python + grammar", *drafters]
        res: dict[str, list[dict]] = {m: [] for m in methods}
        scored = []
        prompts = [oracle.tokenize(render_chat(oracle, schema.report_messages(n)), special=True) for _, n in notes]
        free_prompts = ([oracle.tokenize(render_chat(oracle, prompt.report_messages(n)), special=True) for _, n in notes]
                        if shape == "single" else [])
        for i, (name, note) in enumerate(notes):
            tokens, warm = prompts[i], warm_prefix(prompts, i)
            constraint = Constraint.lark(schema.report_grammar(note))
            if i < scored_from:  # an earlier week: its report goes into every history, nothing is timed
                done, _ = generate(oracle, engines.engines["none"], tokens, constraint)
                for kind in drafters:
                    engines.add_report(kind, done.text)
                continue
            scored.append(note)
            if shape == "single":
                text, dt = plain.run(free_prompts[i], None, warm_prefix(free_prompts, i))
                res["llama-cpp-python free-form"].append({"s": dt, "text": text})
            base, dt_base = plain.run(tokens, schema.report_gbnf(note), warm)
            res["llama-cpp-python + grammar"].append({"s": dt_base, "text": base, "speedup": 1.0, "same": True})
            for kind, eng in engines.engines.items():
                done, dt = generate(oracle, eng, tokens, constraint, warm)
                own = res["none"][-1]["tokens"] if kind != "none" else done.tokens
                ident = identity(oracle, tokens, own, done.tokens) if done.tokens != own else "yes"
                if ident != "yes":
                    print(f"[{workload}] {name}: {kind} parts from oracle-only: {ident}", file=sys.stderr)
                res[kind].append({"s": dt, "text": done.text, "tokens": done.tokens, "speedup": dt_base / dt,
                                  "same": done.text == base, "same_own": ident == "yes" or ident.startswith("near-tie"),
                                  "identity": ident,
                                  "accepted": done.stats.accepted_tokens, "drafted": done.stats.drafted_tokens,
                                  "forced": done.stats.forced_tokens, "n": done.stats.tokens})
                if shape == "season":
                    engines.add_report(kind, done.text)
            print(f"[{workload}] {name}: " + ", ".join(f"{k} {v[-1]['s']:.2f}s" for k, v in res.items()), file=sys.stderr)
        for method, rs in res.items():
            if rs:
                rows.append(summarise(workload, method, rs, scored, len(refused)))
        names = [n for n, _ in notes][scored_from:]
        for method in ("llama-cpp-python free-form", "none"):  # the quality comparison: before and after
            texts += [{"workload": workload, "note": n, "method": method, "text": r["text"]}
                      for n, r in zip(names, res.get(method, []))]
    if engines is not None:
        engines.close()
    if args.cli > 0 and cli_candidates:
        oracle.close()  # the CLI processes get the machine to themselves
        plain = None
        rows += cli_rows(cli_candidates[-args.cli:], [d for d in drafters if d != "none"][-1:], args.threads,
                         max(1, args.cli_repeats))
    print(render(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": machine(),
                                               "rows": rows, "reports": texts}, indent=1))
    return 0


def summarise(workload: str, method: str, rs: list[dict], notes: list[dict], skipped: int) -> dict:
    sp = [r["speedup"] for r in rs if "speedup" in r]
    row = {"workload": workload, "drafter": method, "reports": len(rs), "skipped": skipped,
           "s_per_report": statistics.median(r["s"] for r in rs),
           "speedup": statistics.median(sp) if sp else None, "speedup_min": min(sp) if sp else None,
           "speedup_max": max(sp) if sp else None, "vs": "llama-cpp-python + grammar",
           "identical": sum(r.get("same", False) for r in rs) if sp else None,
           "identical_own": sum(r["same_own"] for r in rs) if any("same_own" in r for r in rs) else None,
           "near_ties": sum(r.get("identity", "").startswith("near-tie") for r in rs),
           "looping": sum(repeated_sentence(r["text"]) for r in rs),
           "findings": sum(len(check_report(r["text"], n)) for r, n in zip(rs, notes))}
    if any("drafted" in r for r in rs):
        dr = sum(r["drafted"] for r in rs)
        row["acceptance"] = sum(r["accepted"] for r in rs) / dr if dr else 0.0
        row["forced_share"] = sum(r["forced"] for r in rs) / max(sum(r["n"] for r in rs), 1)
    return row


def machine() -> str:
    try:
        name = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.processor() or platform.machine()
    return f"{name}, {os.cpu_count()} cores"


def render(rows: list[dict]) -> str:
    out = ["| workload | method | reports (skipped) | s/report | speedup (median, min–max) | against | acceptance | "
           "same text as baseline | same tokens as oracle-only (near-ties) | looping | fact-check findings |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sp = "–" if r["speedup"] is None else f"{r['speedup']:.2f}x ({r['speedup_min']:.2f}–{r['speedup_max']:.2f})"
        same = "–" if r["identical"] is None else f"{r['identical']}/{r['reports']}"
        acc = f"{r['acceptance']:.2f}" if "acceptance" in r else "–"
        own = "–" if r.get("identical_own") is None else f"{r['identical_own']}/{r['reports']}" + (
            f" ({r['near_ties']})" if r.get("near_ties") else "")
        out.append(f"| {r['workload']} | {r['drafter']} | {r['reports']} ({r['skipped']}) | {r['s_per_report']:.2f} | {sp} | "
                   f"{r.get('vs', '–') if r['speedup'] is not None else '–'} | "
                   f"{acc} | {same} | {own} | {r['looping']} | {'–' if r['findings'] is None else r['findings']} |")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
