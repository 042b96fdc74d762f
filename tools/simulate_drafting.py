#!/usr/bin/env python
"""Judge draft policies in seconds: replay recorded greedy reports through the real Engine.

    python tools/simulate_drafting.py [--quick] [--oracle NAME] [--candidates 1,2,4] [--json OUT]

Step 1 (once per oracle, system prompt and sample set; cached under
~/.cache/edgespec/sim): the oracle decodes every sample note greedily, one token
at a time. Step 2: the engine runs again on each note with the cheap drafters
(lookup, history), but the oracle is a ``ReplayOracle`` that answers from the
recording and charges the oracle's measured verify-cost curve on a virtual clock
(edgespec/testing/replay.py). The figures are what the policy would reach on
this curve with no timing noise; tools/bench.py measures the real thing.

Also printed: the hindsight bound (a policy that knows each draft's accepted
length) with 1 and more candidate drafts verified together in one pass, which
is how the README's statements about the attainable speedup and about tree
verification were measured.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgespec.api import resolve  # noqa: E402
from edgespec.calibrate import load_or_measure  # noqa: E402
from edgespec.drafters.cascade import CascadeDrafter  # noqa: E402
from edgespec.drafters.history import HistoryDrafter  # noqa: E402
from edgespec.drafters.history_index import HistoryIndex  # noqa: E402
from edgespec.drafters.lookup import PromptLookupDrafter  # noqa: E402
from edgespec.engine import Engine  # noqa: E402
from edgespec.llama import LlamaModel, render_chat  # noqa: E402
from edgespec.constraints import Constraint  # noqa: E402
from edgespec.cost import CostCurve  # noqa: E402
from edgespec.testing.reference import oracle_greedy, oracle_greedy_constrained  # noqa: E402
from edgespec.testing.replay import HindsightDrafter, ReplayOracle, VirtualClock, hindsight_speedup, replay  # noqa: E402
from vineyard import schema  # noqa: E402
from vineyard.prompt import report_messages  # noqa: E402
from vineyard.seeds import template_reports  # noqa: E402

sys.path.insert(0, str(ROOT / "tools"))
from bench import first_scored, load_workloads  # noqa: E402


def record(oracle: LlamaModel, notes: list[dict], max_tokens: int, cache_dir: Path) -> list[dict]:
    """Greedy reports of ``notes`` (prompt ids, continuation ids, text), cached by everything they depend on:
    the model file and the prompts exactly as tokenized (so any change to how a note is rendered re-records)."""
    prompts = [oracle.tokenize(render_chat(oracle, report_messages(note)), special=True) for note in notes]
    key = hashlib.sha256(json.dumps([oracle.path, os.path.getsize(oracle.path), prompts, max_tokens]).encode()).hexdigest()[:16]
    path = cache_dir / f"refs-{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    out = []
    for i, prompt in enumerate(prompts):
        ref = oracle_greedy(oracle, prompt, max_tokens)
        out.append({"prompt": prompt, "ref": ref,
                    "text": oracle.detokenize(ref, special=False).decode("utf-8", "replace")})
        print(f"[sim] recorded {i + 1}/{len(notes)}", file=sys.stderr)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
    return out


def record_schema(oracle: LlamaModel, notes: list[dict], max_tokens: int, cache_dir: Path) -> list[dict]:
    """The oracle's constrained greedy schema reports of ``notes`` (prompt ids, continuation ids, text, grammar),
    cached like ``record``."""
    prompts = [oracle.tokenize(render_chat(oracle, schema.report_messages(note)), special=True) for note in notes]
    grammars = [schema.report_grammar(note) for note in notes]
    key = hashlib.sha256(json.dumps(["schema", oracle.path, os.path.getsize(oracle.path), prompts, grammars,
                                     max_tokens]).encode()).hexdigest()[:16]
    path = cache_dir / f"schema-refs-{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    out = []
    for i, (prompt, grammar) in enumerate(zip(prompts, grammars)):
        ref = oracle_greedy_constrained(oracle, Constraint.lark(grammar), prompt, max_tokens)
        out.append({"prompt": prompt, "ref": ref, "grammar": grammar,
                    "text": oracle.detokenize(ref, special=False).decode("utf-8", "replace")})
        print(f"[sim] recorded schema report {i + 1}/{len(notes)}", file=sys.stderr)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer notes and tokens (as tools/bench.py --quick)")
    ap.add_argument("--max-tokens", type=int, default=None)
    ap.add_argument("--candidates", default="1,2,4", help="candidate counts for the hindsight bound")
    ap.add_argument("--json", metavar="OUT")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--oracle", default="qwen2.5-coder-0.5b-instruct", help="catalog name or GGUF path")
    ap.add_argument("--curve", type=Path, metavar="JSON",
                    help="a verify-cost curve ({\"sizes\": [...], \"seconds\": [...]}) instead of this machine's measured one")
    ap.add_argument("--history-kw", type=json.loads, default={}, metavar="JSON",
                    help='HistoryDrafter keyword arguments to try, e.g. \'{"min_path_prob": 0.3, "spec_factor": 1.0}\'')
    ap.add_argument("--schema", action="store_true",
                    help="replay schema-driven reports under their grammar (jump-forward over the rendered lines); "
                         "speedups are against edgespec oracle-only under the same grammar; the hindsight bound "
                         "runs through the engine (each drafter's drafts cut to what the oracle accepts), with "
                         "free perfect drafts as the ceiling")
    args = ap.parse_args(argv)
    max_tokens = args.max_tokens or (64 if args.quick else (320 if args.schema else 200))
    n_cands = [int(x) for x in args.candidates.split(",") if x]

    oracle = LlamaModel(str(resolve(args.oracle, fetch=True)), n_ctx=4096, n_threads=args.threads)
    curve = CostCurve(**json.loads(args.curve.read_text())) if args.curve else load_or_measure(oracle)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgespec" / "sim"
    clock = VirtualClock()
    fake = ReplayOracle(curve, clock, n_vocab=oracle.n_vocab, eog=oracle.eos_token(), vocabulary=oracle)

    rows = []
    t_start = time.time()
    for wname, notes in load_workloads(args.quick).items():
        refs = (record_schema if args.schema else record)(oracle, notes, max_tokens, cache)
        skip = first_scored(wname, len(refs))  # as the bench: a season scores its last reports, earlier ones in the history
        with tempfile.TemporaryDirectory() as td:
            index = HistoryIndex(os.path.join(td, "history.db"), templates=template_reports)
            history = HistoryDrafter.for_oracle(index, oracle, **args.history_kw)
            # the cascade of the cheap sources only: a model drafter's cost would not show on the virtual clock
            cascade = CascadeDrafter([history, PromptLookupDrafter()])
            drafters = {"lookup": PromptLookupDrafter(), "history": history, "cascade (history, lookup)": cascade}
            engines = {f"engine + {k}": Engine(fake, d, curve=curve, clock=clock) for k, d in drafters.items()}
            if args.schema:  # the bound under the grammar: the same engine, told in advance what will be accepted
                engines.update({f"hindsight bound, {k}": Engine(fake, HindsightDrafter(fake, d), curve=curve,
                                                                clock=clock, adaptive=False)
                                for k, d in drafters.items()})
                engines["perfect drafts (the recording itself, free)"] = Engine(
                    fake, HindsightDrafter(fake), curve=curve, clock=clock, adaptive=False)
            per = {k: [] for k in engines}
            bound = {n: [] for n in ([] if args.schema else n_cands)}
            plain_engine = Engine(fake, None, curve=curve, clock=clock) if args.schema else None
            for i, r in enumerate(refs):
                constraint = Constraint.lark(r["grammar"]) if args.schema else None
                # under a grammar the baseline is edgespec's own oracle-only run (it jumps over the rendered lines)
                base = replay(plain_engine, fake, r["prompt"], r["ref"], constraint=constraint).seconds if args.schema else None
                for k, eng in engines.items():
                    res = replay(eng, fake, r["prompt"], r["ref"], constraint=constraint)
                    if i >= skip:
                        per[k].append((base / res.seconds if base else res.speedup, res.accepted, res.drafted))
                if i >= skip and not args.schema:
                    history.begin(r["prompt"])
                    propose = lambda ctx, d, n: [c.tokens for c in history.propose_candidates(ctx, d, n)]  # noqa: E731
                    for n in n_cands:
                        bound[n].append(hindsight_speedup(propose, r["prompt"], r["ref"], curve, n_candidates=n))
                history.add_report(r["text"])
            for k, v in per.items():
                sp = [x[0] for x in v]
                acc, drafted = sum(x[1] for x in v), sum(x[2] for x in v)
                rows.append({"workload": wname, "method": k, "reports": len(sp),
                             "speedup": round(statistics.median(sp), 3), "speedup_min": round(min(sp), 3),
                             "speedup_max": round(max(sp), 3), "acceptance_rate": round(acc / drafted, 3) if drafted else None})
            for n, v in bound.items():
                rows.append({"workload": wname, "method": f"hindsight bound, {n} candidate(s)/pass", "reports": len(v),
                             "speedup": round(statistics.median(v), 3), "speedup_min": round(min(v), 3),
                             "speedup_max": round(max(v), 3), "acceptance_rate": None})
            index.close()

    print(f"simulated on the measured curve of {Path(oracle.path).name}: t(1) = {curve.t(1) * 1e3:.1f} ms, "
          f"t(8) = {curve.t(8) * 1e3:.1f} ms, t(16) = {curve.t(16) * 1e3:.1f} ms; {max_tokens} tokens per report"
          + ("; schema reports, speedup against oracle-only under the grammar\n" if args.schema else "\n"))
    print("| workload | method | reports | simulated speedup (median, min–max) | acceptance |")
    print("|---|---|---:|---|---:|")
    for r in rows:
        acc = f"{r['acceptance_rate']:.2f}" if r["acceptance_rate"] is not None else "–"
        print(f"| {r['workload']} | {r['method']} | {r['reports']} | {r['speedup']:.2f}x "
              f"({r['speedup_min']:.2f}–{r['speedup_max']:.2f}) | {acc} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "curve": curve.to_dict(), "max_tokens": max_tokens,
                                               "elapsed_s": round(time.time() - t_start, 1)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
