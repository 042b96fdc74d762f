#!/usr/bin/env python
"""What an oracle format costs and changes: the shipped oracle against a requantized copy, side by side.

    python tools/compare_oracles.py [--oracle NAME] [--other NAME] [--max-tokens N]

A smaller format verifies faster but writes different text, so edgespec never
swaps it in silently: ``--oracle qwen2.5-coder-0.5b-instruct-q4_0`` is an explicit
choice. This prints the numbers to make it with: each model's verify-cost curve
(t(1), t(8), t(16)) and greedy tokens/s on the sample notes measured interleaved,
how far each report matches the reference oracle's text (tokens before the
first difference, and whole reports identical), and the fact-check findings
against each note (errors the format adds or removes).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgespec.api import resolve  # noqa: E402
from edgespec.calibrate import measure_curve  # noqa: E402
from edgespec.llama import LlamaModel, render_chat  # noqa: E402
from edgespec.testing.reference import oracle_greedy  # noqa: E402
from vineyard import fieldnote  # noqa: E402
from vineyard.facts import check_report  # noqa: E402
from vineyard.prompt import report_messages  # noqa: E402

sys.path.insert(0, str(ROOT / "tools"))
from bench import first_divergence  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--oracle", default="qwen2.5-coder-0.5b-instruct", help="reference oracle (catalog name or path)")
    ap.add_argument("--other", default="qwen2.5-coder-0.5b-instruct-q4_0", help="the format to compare")
    ap.add_argument("--max-tokens", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    notes = [fieldnote.load(p) for p in sorted((ROOT / "vineyard" / "samples" / "notes").glob("*.json"))]
    models = {name: LlamaModel(str(resolve(name, fetch=True)), n_ctx=4096, n_threads=args.threads)
              for name in (args.oracle, args.other)}
    curves = {name: measure_curve(m) for name, m in models.items()}
    out = {name: {"tokens": 0, "seconds": 0.0, "texts": [], "toks": []} for name in models}
    for i, note in enumerate(notes):
        for name, m in models.items():  # interleaved, so both see the same machine conditions
            prompt = m.tokenize(render_chat(m, report_messages(note)), special=True)
            t0 = time.perf_counter()
            toks = oracle_greedy(m, prompt, args.max_tokens)
            out[name]["seconds"] += time.perf_counter() - t0
            out[name]["tokens"] += len(toks)
            out[name]["toks"].append(toks)
            out[name]["texts"].append(m.detokenize(toks, special=False).decode("utf-8", "replace"))
        print(f"[compare] {i + 1}/{len(notes)}", file=sys.stderr)

    ref = out[args.oracle]
    print(f"| oracle | t(1) ms | t(8) ms | t(16) ms | greedy tok/s (incl. prefill) | same text as {args.oracle} "
          "(tokens before the first difference, median) | identical reports | fact-check errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, d in out.items():
        c = curves[name]
        prefix = [len(a) if (k := first_divergence(a, b)) is None else k for a, b in zip(ref["toks"], d["toks"])]
        same = sum(a == b for a, b in zip(ref["toks"], d["toks"]))
        errors = sum(sum(f.severity == "error" for f in check_report(t, n)) for t, n in zip(d["texts"], notes))
        print(f"| {name} | {c.t(1) * 1e3:.1f} | {c.t(8) * 1e3:.1f} | {c.t(16) * 1e3:.1f} | "
              f"{d['tokens'] / d['seconds']:.1f} | {statistics.median(prefix):.0f} | {same}/{len(notes)} | {errors} |")
    print(f"\n{len(notes)} sample notes, greedy, up to {args.max_tokens} tokens, {args.threads} threads. "
          "Token ids are compared only when both models share one vocabulary.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
