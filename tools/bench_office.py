#!/usr/bin/env python
"""The office oracle check, measured: checks per minute and agreement by span kind between a handheld model
and the office model served by llama-cpp-python's OpenAI-compatible server.

    python tools/bench_office.py [--handheld qwen2.5-coder-0.5b-instruct-q4_0] [--office qwen2.5-coder-0.5b-instruct]
                                 [--notes PATH ...] [--concurrency 1,2] [--json OUT]

1. The handheld model writes every note's schema report (edgespec, oracle only, greedy, under the grammar),
   as a scout's device does; the reports are kept in memory.
2. ``python -m llama_cpp.server --model OFFICE --logits_all true`` starts on a free loopback port (stopped at
   the end); ``--office-url`` uses a server that is already running instead.
3. Every report is checked once per ``--concurrency`` value (``fieldlog_app.office.check.check_report``, one
   request each), timed on the wall clock: checks per minute = reports / wall seconds x 60.
4. Agreement by span kind (``text`` for tokens outside critical spans) and by field, summed over the reports,
   and the disagreements found, from the first pass.
5. The office rewrite (``fieldlog_app.office.rewrite``) of every report (``--rewrite N``: the first N; 0 skips
   it): the office model's own report from scratch in one request (greedy, under the grammar), then the rewrite
   with the handheld's report as the draft on the same server; requests (scoring / generating), wall seconds,
   characters kept from the field report, speedup = from-scratch seconds / rewrite seconds, and whether the two
   texts are equal (they must be where the server's numerics do not depend on the batch; a real model's
   batched scoring may part from its one-token decoding at a near-tie, and that is counted, not hidden).

``--notes`` takes a folder of note JSON files or a JSONL file (repeatable; default: the shipped samples and
the held-out set in bench/unseen/notes). This needs the whole machine: run nothing else meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import httpx  # noqa: E402

from bench_schema import load_notes  # noqa: E402
from edgespec.api import open_generator, resolve  # noqa: E402
from edgespec.events import Done  # noqa: E402
from fieldlog_app.office import check, rewrite  # noqa: E402
from fieldlog_app.sync.testing import free_port, wait_for  # noqa: E402
from vineyard.writer import ReportWriter  # noqa: E402


def write_reports(handheld: str, notes: list[tuple[str, dict]], threads: int, max_tokens: int = 400) -> list[tuple[str, dict, dict, float]]:
    """(name, note, record, seconds) for each note, written by the handheld model alone."""
    writer = ReportWriter(open_generator(oracle=handheld, drafter="none", n_threads=threads,
                                         power_mode="performance"))
    out = []
    try:
        for name, note in notes:
            t0 = time.perf_counter()
            done = [ev for ev in writer.stream_report(note, max_tokens=max_tokens) if isinstance(ev, Done)][0]
            out.append((name, note, writer.report_record(done), time.perf_counter() - t0))
            print(f"  wrote {name} ({out[-1][3]:.1f} s)", file=sys.stderr, flush=True)
    finally:
        writer.close()
    return out


class OfficeServer:
    def __init__(self, model: Path, threads: int, n_ctx: int):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--logits_all", "true", "--host",
             "127.0.0.1", "--port", str(self.port), "--n_ctx", str(n_ctx), "--n_threads", str(threads)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def __enter__(self) -> str:
        def up() -> bool:
            try:
                return httpx.get(self.url + "/v1/models", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False
        if not wait_for(lambda: up() or self.proc.poll() is not None, timeout=300, interval=0.5) or not up():
            self.__exit__()
            raise SystemExit("the office server did not come up")
        return self.url

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_checks(config: check.OracleConfig, reports, concurrency: int) -> tuple[float, list]:
    def one(r):
        name, note, record, _ = r
        try:
            return name, check.check_report(config, note, record), None
        except check.OracleError as e:
            return name, None, str(e)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(one, reports))
    return time.perf_counter() - t0, results


def run_rewrites(config: check.OracleConfig, reports, chunk: int) -> list[dict]:
    """One row per report: from scratch, then the rewrite with the field report as the draft (sequentially)."""
    rows = []
    for name, note, record, _ in reports:
        try:
            scratch = rewrite.from_scratch(config, note)
            got = rewrite.rewrite_report(config, note, record["text"], chunk=chunk)
        except check.OracleError as e:
            rows.append({"note": name, "error": str(e)[:200]})
            continue
        s = got.summary()
        rows.append({"note": name, "scratch_s": round(scratch.seconds, 2), "rewrite_s": round(got.seconds, 2),
                     "speedup": round(scratch.seconds / got.seconds, 2) if got.seconds else None,
                     "equal": got.text == scratch.text, **{k: s[k] for k in ("passes", "score_passes",
                                                                              "generate_passes", "accepted_chars",
                                                                              "generated_chars")},
                     "field_chars": len(record["text"]), "pass_log": got.passes,
                     "parts_at": None if got.text == scratch.text else len(os.path.commonprefix([got.text,
                                                                                                   scratch.text])),
                     "rewrite_text": got.text, "scratch_text": scratch.text})
        print(f"  rewrote {name}: {rows[-1]['passes']} requests, {rows[-1]['rewrite_s']} s "
              f"(scratch {rows[-1]['scratch_s']} s)", file=sys.stderr, flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--handheld", default="qwen2.5-coder-0.5b-instruct-q4_0", help="the model that writes the reports")
    ap.add_argument("--office", default="qwen2.5-coder-0.5b-instruct", help="the office model (catalog name or GGUF)")
    ap.add_argument("--office-url", default=None, help="an office server already running (skips starting one)")
    ap.add_argument("--model", default=None, help="model name to send (vLLM's served name)")
    ap.add_argument("--notes", type=Path, action="append", help="folder of note JSON files or a JSONL file")
    ap.add_argument("--per-set", type=int, default=None, metavar="N",
                    help="only the first N notes (by name) of each --notes set: a shorter run")
    ap.add_argument("--concurrency", default="1,2", help="comma-separated request concurrencies to time (\"\": no "
                    "checks, the rewrites alone)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--margin", type=float, default=check.DEFAULT_MARGIN)
    ap.add_argument("--max-tokens", type=int, default=400, help="report length bound on the handheld")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--rewrite", type=int, default=None, metavar="N",
                    help="office rewrites of the first N reports (default all; 0 skips them)")
    ap.add_argument("--chunk", type=int, default=rewrite.DEFAULT_CHUNK, help="tokens per continuation request")
    ap.add_argument("--n-ctx", type=int, default=4096, help="the office server's context")
    args = ap.parse_args(argv)

    notes, refused = [], []
    for path in args.notes or [ROOT / "vineyard" / "samples" / "notes", ROOT / "bench" / "unseen" / "notes"]:
        ok, bad = load_notes(path)
        ok = sorted(ok, key=lambda t: t[0])[:args.per_set] if args.per_set else ok
        notes += [(f"{path.parent.name if path.name == 'notes' else path.name}/{n}", note) for n, note in ok]
        refused += bad
    for name, why in refused:
        print(f"skipped {name}: {why}", file=sys.stderr)
    print(f"writing {len(notes)} report(s) with {args.handheld} …", file=sys.stderr)
    reports = write_reports(args.handheld, notes, args.threads, args.max_tokens)

    def measure(url: str) -> dict:
        config = check.OracleConfig(url, model=args.model, margin=args.margin, timeout=600)
        out = {"handheld": args.handheld, "office": args.office, "reports": len(reports), "margin": args.margin,
               "passes": []}
        for c in [int(x) for x in args.concurrency.split(",") if x]:
            wall, results = run_checks(config, reports, c)
            errors = [(n, e) for n, _, e in results if e]
            out["passes"].append({"concurrency": c, "wall_s": round(wall, 2),
                                  "checks_per_minute": round(60 * (len(results) - len(errors)) / wall, 2),
                                  "errors": errors})
            if "by_kind" not in out:
                # {kind: {set: [agree, positions]}}, a set being the notes' folder (samples, held-out) or "all"
                by_kind: dict[str, dict[str, list[int]]] = {}
                by_field: dict[str, dict[str, list[int]]] = {}
                per_report = []
                for name, res, err in results:
                    if res is None:
                        continue
                    for key, acc in (("by_kind", by_kind), ("by_field", by_field)):
                        for k, (a, t) in res.summary[key].items():
                            for group in (name.split("/")[0], "all"):
                                cell = acc.setdefault(k, {}).setdefault(group, [0, 0])
                                cell[0] += a
                                cell[1] += t
                    per_report.append({"note": name, "seconds": round(res.seconds, 2),
                                       "disagreements": res.summary["disagreements"],
                                       "findings": [f["message"] for f in res.findings[:5]]})
                out["by_kind"], out["by_field"], out["per_report"] = by_kind, by_field, per_report
        if args.json:  # the checks alone are worth keeping if the rewrites are stopped
            args.json.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
        out["rewrites"] = run_rewrites(config, reports[:args.rewrite], args.chunk)
        return out

    if args.office_url:
        result = measure(args.office_url)
    else:
        with OfficeServer(resolve(args.office), args.threads, args.n_ctx) as url:
            result = measure(url)

    print(f"\noffice check: {result['reports']} reports by {args.handheld}, checked by {args.office} "
          f"(margin {args.margin} nats)\n")
    if result["passes"]:
        print("| concurrency | wall s | checks/minute | errors |\n|---|---|---|---|")
    for p in result["passes"]:
        print(f"| {p['concurrency']} | {p['wall_s']} | {p['checks_per_minute']} | {len(p['errors'])} |")
    secs = sorted(r["seconds"] for r in result.get("per_report", []))
    if secs:
        print(f"\none check alone (concurrency {result['passes'][0]['concurrency']}): median {secs[len(secs) // 2]:.1f} s "
              f"({secs[0]:.1f}–{secs[-1]:.1f})")
    groups = sorted({g for cells in result.get("by_kind", {}).values() for g in cells} - {"all"}) + ["all"]
    for key, title in (("by_kind", "span kind"), ("by_field", "field")) if result["passes"] else ():
        print(f"\nagreement (positions where the office model's best token is the report's, within the margin), "
              f"by {title}:\n")
        print(f"| {title} | " + " | ".join(groups) + " |\n|---|" + "---|" * len(groups))
        for k, cells in sorted(result[key].items()):
            print(f"| {k} | " + " | ".join(f"{cells[g][0]}/{cells[g][1]} ({cells[g][0] / cells[g][1]:.3f})"
                                           if cells.get(g, [0, 0])[1] else "–" for g in groups) + " |")
    for r in result.get("per_report", []):
        if r["findings"]:
            print(f"- {r['note']}: {r['disagreements']} disagreement(s); first: {r['findings'][0]}")
    rows = result["rewrites"]
    if rows:
        print(f"\noffice rewrite: the office model's report with the handheld's as the draft, against from scratch "
              f"on the same server (chunk {args.chunk} tokens)\n")
        print("| note | scratch s | rewrite s | speedup | requests (score+generate) | kept chars | written chars "
              "| equal |\n|---|---|---|---|---|---|---|---|")
        for r in rows:
            if r.get("error"):
                print(f"| {r['note']} | error: {r['error']} |||||||")
                continue
            print(f"| {r['note']} | {r['scratch_s']} | {r['rewrite_s']} | {r['speedup']} | {r['passes']} "
                  f"({r['score_passes']}+{r['generate_passes']}) | {r['accepted_chars']} | {r['generated_chars']} "
                  f"| {'yes' if r['equal'] else 'NO'} |")
        ok = [r for r in rows if not r.get("error")]
        if ok:
            tot_s, tot_r = sum(r["scratch_s"] for r in ok), sum(r["rewrite_s"] for r in ok)
            print(f"\ntotal: from scratch {tot_s:.1f} s, rewrite {tot_r:.1f} s (speedup {tot_s / tot_r:.2f}x), "
                  f"{sum(r['passes'] for r in ok) / len(ok):.1f} requests per report, "
                  f"{sum(r['equal'] for r in ok)}/{len(ok)} equal to from scratch")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
