#!/usr/bin/env python
"""Schema-driven reports, side by side: plain llama-cpp-python with the same prompt and grammar against edgespec.

    python tools/bench_schema.py [--notes PATH ...] [--drafters none,lookup,history] [--json OUT]

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
the default is the shipped samples and the held-out set in bench/unseen/notes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
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

    def run(self, tokens: list[int], gbnf: str | None) -> tuple[str, float]:
        with contextlib.redirect_stderr(io.StringIO()):
            grammar = self.llama_cpp.LlamaGrammar.from_string(gbnf, verbose=False) if gbnf else None
        t0 = time.perf_counter()
        out = self.llm.create_completion(tokens, max_tokens=MAX_TOKENS, temperature=0.0, top_k=1, repeat_penalty=1.0,
                                         grammar=grammar)
        return out["choices"][0]["text"], time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--notes", action="append", type=Path, help="a folder of note JSON files or a JSONL file (repeatable)")
    ap.add_argument("--drafters", default="none,lookup,history")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args(argv)
    sets = args.notes or [ROOT / "vineyard" / "samples" / "notes", ROOT / "bench" / "unseen" / "notes"]
    drafters = [d for d in args.drafters.split(",") if d]

    oracle_path = str(resolve("qwen2.5-coder-0.5b-instruct", fetch=True))
    oracle = LlamaModel(oracle_path, n_ctx=4096, n_threads=args.threads)
    curve = load_or_measure(oracle)
    plain = Plain(oracle_path, args.threads)
    engines = {}
    for kind in drafters:
        # a history of its own, seeded with the templates only: the user's real history stays untouched
        d = make_drafter(kind, oracle, {}, args.threads, str(Path(tempfile.mkdtemp()) / "history.db"))
        engines[kind] = Engine(oracle, d, curve=curve)

    rows = []
    for path in sets:
        workload = "samples" if "samples" in str(path) else path.parent.name if path.name == "notes" else path.stem
        notes, refused = load_notes(path)
        for name, why in refused:
            print(f"[{workload}] skipped {name}: {why}", file=sys.stderr)
        res: dict[str, list[dict]] = {m: [] for m in ["llama-cpp-python free-form", "llama-cpp-python + grammar", *drafters]}
        for name, note in notes:
            tokens = oracle.tokenize(render_chat(oracle, schema.report_messages(note)), special=True)
            free_tokens = oracle.tokenize(render_chat(oracle, prompt.report_messages(note)), special=True)
            constraint = Constraint.lark(schema.report_grammar(note))
            text, dt = plain.run(free_tokens, None)
            res["llama-cpp-python free-form"].append({"s": dt, "text": text})
            base, dt_base = plain.run(tokens, schema.report_gbnf(note))
            res["llama-cpp-python + grammar"].append({"s": dt_base, "text": base, "speedup": 1.0, "same": True})
            for kind, eng in engines.items():
                oracle.reset()
                t0 = time.perf_counter()
                done = list(eng.generate(tokens, GenerationParams(max_tokens=MAX_TOKENS), constraint=constraint))[-1]
                dt = time.perf_counter() - t0
                own = res["none"][-1]["tokens"] if kind != "none" and "none" in res and res["none"] else done.tokens
                res[kind].append({"s": dt, "text": done.text, "tokens": done.tokens, "speedup": dt_base / dt,
                                  "same": done.text == base, "same_own": done.tokens == own,
                                  "accepted": done.stats.accepted_tokens, "drafted": done.stats.drafted_tokens})
                if kind == "history":
                    eng.drafter.index.add_report(done.text, tokenize=lambda s: oracle.tokenize(s, add_bos=False, special=False),
                                                 model_id=oracle.vocab_fingerprint())
            print(f"[{workload}] {name}: " + ", ".join(f"{k} {v[-1]['s']:.2f}s" for k, v in res.items()), file=sys.stderr)
        for method, rs in res.items():
            if not rs:
                continue
            sp = [r["speedup"] for r in rs if "speedup" in r]
            findings = sum(len(check_report(r["text"], n)) for r, (_, n) in zip(rs, notes))
            row = {"workload": workload, "drafter": method, "reports": len(rs), "skipped": len(refused),
                   "s_per_report": statistics.median(r["s"] for r in rs),
                   "speedup": statistics.median(sp) if sp else None, "speedup_min": min(sp) if sp else None,
                   "speedup_max": max(sp) if sp else None,
                   "identical": sum(r.get("same", False) for r in rs) if sp else None,
                   "identical_own": sum(r["same_own"] for r in rs) if any("same_own" in r for r in rs) else None,
                   "looping": sum(repeated_sentence(r["text"]) for r in rs), "findings": findings}
            if any("drafted" in r for r in rs):
                dr = sum(r["drafted"] for r in rs)
                row["acceptance"] = sum(r["accepted"] for r in rs) / dr if dr else 0.0
            rows.append(row)
    print(render(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=1))
    return 0


def render(rows: list[dict]) -> str:
    out = ["| workload | method | reports (skipped) | s/report | speedup vs grammar baseline (median, min–max) | acceptance | "
           "same text as baseline | same tokens as oracle-only | looping | fact-check findings |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sp = "–" if r["speedup"] is None else f"{r['speedup']:.2f}x ({r['speedup_min']:.2f}–{r['speedup_max']:.2f})"
        same = "–" if r["identical"] is None else f"{r['identical']}/{r['reports']}"
        acc = f"{r['acceptance']:.2f}" if "acceptance" in r else "–"
        own = "–" if r.get("identical_own") is None else f"{r['identical_own']}/{r['reports']}"
        out.append(f"| {r['workload']} | {r['drafter']} | {r['reports']} ({r['skipped']}) | {r['s_per_report']:.2f} | {sp} | "
                   f"{acc} | {same} | {own} | {r['looping']} | {r['findings']} |")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
