"""``fieldlog`` command line: start the app, or import / export / list / report without it.

Argument parsing and printing only; the work is in the Store and edgespec.api.
Exit codes: 0 ok, 1 failed or partly failed, 2 usage error. Errors are one
``fieldlog: error: ...`` line, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable

from edgespec import EdgespecError, ModelFileError
from vineyard.fieldnote import nothing_found

from .database import Store, StoreError, ValidationError, note_of

PROG = "fieldlog"
ENV_DB = "FIELDLOG_DB"


def data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("fieldlog"))


def default_db_path() -> Path:
    """``$FIELDLOG_DB`` if set, else ``<user data dir>/fieldlog.db``."""
    env = os.environ.get(ENV_DB)
    return Path(env).expanduser() if env else data_dir() / "fieldlog.db"


def demo_db_path() -> Path:
    """The demo database lives apart from the real log, so trying the demo never mixes in sample data."""
    return data_dir() / "demo.db"


def resolve_db(arg: str | None, *, demo: bool = False) -> Path:
    if arg:
        return Path(arg).expanduser()
    return demo_db_path() if demo else default_db_path()


def open_generator(**kwargs: Any):
    """Factory for the report writer (``vineyard.writer.ReportWriter``); tests monkeypatch this to inject a fake."""
    from vineyard.writer import open_writer

    return open_writer(**kwargs)


class UsageError(Exception):
    """Bad arguments detected after parsing (exit code 2)."""


class CliError(Exception):
    """A failure to report as one line (exit code 1)."""


# ---------------------------------------------------------------------- commands
def cmd_app(args: argparse.Namespace) -> int:
    path = args.db_path
    extra = {}
    if args.battery_sim is not None:  # try the charger queue on a desktop: a simulated battery
        from edgespec.power import parse_battery_sim

        extra["power_source"] = parse_battery_sim(args.battery_sim)
    with Store(path) as store:  # open (create/migrate) first, so a bad path is a one-line error
        if args.demo:
            from .database.demo_mark import mark_demo
            from .demo import seed_demo

            added = seed_demo(store, season=True)
            if added:
                print(f"demo database {path}: added {added} sample sightings", file=sys.stderr)
            elif Path(path) == demo_db_path():
                mark_demo(store)  # a demo database seeded by an older fieldlog: never sync it either
    try:
        from . import app
    except ImportError as e:
        raise CliError(f"the fieldlog app cannot start in this install ({e})") from None
    sync_callback = auto = None
    try:  # sync is optional: a broken sync setup must never keep the scout from logging
        from .sync.background import AutoSync, app_sync_callback

        sync_callback = app_sync_callback(path)  # None until a server is set (env or the Sync screen)
        auto = AutoSync(path)  # syncs by itself whenever the farm office becomes reachable; the app starts it
    except Exception as e:
        print(f"fieldlog: sync disabled ({e})", file=sys.stderr)
    try:
        app.run(path, demo=args.demo, sync_callback=sync_callback, autosync=auto, **extra)
    finally:
        if auto is not None:
            auto.stop()
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    with Store(args.db_path) as store:
        result = store.import_notes(args.file)
    msg = f"imported {result.imported} sighting{'s' if result.imported != 1 else ''} from {args.file}"
    if result.skipped:
        msg += f" ({result.skipped} already in the log, skipped)"
    print(msg)
    for line_no, message in result.errors:
        print(f"{args.file}:{line_no}: {message}", file=sys.stderr)
    for line_no, message in result.warnings:
        print(f"{args.file}:{line_no}: warning: {message} (imported as written)", file=sys.stderr)
    if result.errors:
        print(f"{len(result.errors)} line{'s' if len(result.errors) != 1 else ''} not imported", file=sys.stderr)
        return 1
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .database.exporting import Exporter

    with Store(args.db_path, readonly=True) as store:
        kw = dict(include_drafts=args.include_drafts, include_superseded=args.include_superseded)
        to_file = bool(args.output and args.output != "-")
        result = Exporter(store).export(args.format, args.output if to_file else sys.stdout, **kw)
        if to_file:
            n = result.written
            print(f"wrote {n} {'row' if args.format == 'csv' else 'feature' if args.format == 'geojson' else 'line'}"
                  f"{'s' if n != 1 else ''} to {args.output}", file=sys.stderr)
        else:
            sys.stdout.flush()
        if result.without_gps:  # a map that silently drops sightings looks complete when it is not
            k = result.without_gps
            print(f"{k} sighting{'s' if k != 1 else ''} left out of the map: no GPS position "
                  f"(the file's sightings_without_gps says so too)", file=sys.stderr)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    if not Path(args.db_path).expanduser().exists():  # nothing logged yet: say so without creating the file
        print(f"0 sightings (no fieldlog database at {args.db_path} yet)", file=sys.stderr)
        return 0
    with Store(args.db_path, readonly=True) as store:
        rows = store.list_sightings(
            block=args.block, pest=args.pest, date_from=args.date_from, date_to=args.date_to,
            status=args.status, query=args.search, include_superseded=args.all, limit=args.limit,
        )
    for s in rows:
        pests = ", ".join(o["pest"] for o in s["observations"] if o.get("pest")) or (
            "nothing found" if s["status"] != "draft" else "-")
        if s["observations"] and nothing_found({"observations": [{k: v for k, v in o.items() if v is not None}
                                                                 for o in s["observations"]]}):
            pests = f"nothing found ({pests})"  # scouted for, none found: not a find
        report = f"report {s['latest_report_id'][:8]}" if s.get("latest_report_id") else ""
        print(f"{s['id']}  {s['date'] or '????-??-??'}  {s['block'] or '-':<6} {s['status']:<10} v{s['version']}  "
              f"{pests}  {report}".rstrip())
    print(f"{len(rows)} sighting{'s' if len(rows) != 1 else ''}", file=sys.stderr)
    return 0


def _record_fields(record: dict | None, done: Any) -> dict:
    rec = dict(record or {})
    stats = rec.get("stats")
    if stats is None and done is not None:
        stats = done.stats.to_dict() if hasattr(done.stats, "to_dict") else {}
    return {
        "text": rec.get("text") if rec.get("text") is not None else (getattr(done, "text", "") or ""),
        "model_pair": rec.get("model_pair") or {},
        "policy": rec.get("policy") or {},
        "stats": dict(stats or {}),
        "provenance": rec.get("provenance") or [],
        "spans": rec.get("spans") or [],
        "findings": list(rec.get("findings") or []),
    }


def cmd_report(args: argparse.Namespace) -> int:
    from edgespec.events import Chunk, Done
    from vineyard import fieldnote

    if args.max_tokens is not None and args.max_tokens < 1:
        raise UsageError("--max-tokens must be at least 1")
    if (args.sighting_id is None) == (args.block is None):
        raise UsageError("give a SIGHTING_ID, or --block with --date")
    if args.block is not None and not args.date:
        raise UsageError("--block needs --date YYYY-MM-DD (the walk to report on)")
    with Store(args.db_path) as store:
        if args.demo:
            from .demo import seed_demo

            seed_demo(store, season=True)  # `make demo` reports on a sample sighting of the demo database
        sid = store.find_sighting_id(args.sighting_id) if args.sighting_id is not None else \
            _walk_of(store, args.block, args.date)
        sighting = store.get_sighting(sid)
        if sighting["status"] == "superseded":
            raise StoreError(f"sighting {sid} was revised; generate the report for the latest version "
                             f"{sighting['superseded_by']}")
        try:
            note = fieldnote.validate(note_of(sighting))
        except EdgespecError as e:
            raise ValidationError(f"sighting {sid} is not complete enough for a report: {e}") from None

        kwargs = {k: v for k, v in (("oracle", args.oracle), ("drafter", args.drafter),
                                     ("draft_model", args.draft_model)) if v is not None}
        kwargs["history_db"] = str(args.db_path)  # the history drafter learns from this log's own reports
        print("loading models…", file=sys.stderr, flush=True)
        try:
            gen = open_generator(**kwargs)
        except ModelFileError as e:
            raise CliError(f"{e}\nthe report models are not installed yet: run `edgespec models fetch` "
                           "(needs a connection once); logging and export work without them") from None
        except EdgespecError:
            raise
        except ImportError as e:
            raise CliError(f"the report engine is not available in this install ({e})") from None
        except Exception as e:  # llama.cpp refusing a file, out of memory, ...: one line, not a traceback
            raise CliError(f"cannot open the report models: {type(e).__name__}: {e}") from None
        cancel = threading.Event()
        done = None
        written: list[str] = []
        error: str | None = None
        restore = _cancel_on_sigint(cancel)
        try:
            stream_kw = {"cancel": cancel}
            if args.max_tokens is not None:
                stream_kw["max_tokens"] = args.max_tokens
            try:
                for ev in gen.stream_report(note, **stream_kw):
                    if isinstance(ev, Done):
                        done = ev
                        break
                    if isinstance(ev, Chunk):
                        written.append(ev.text)
                        sys.stdout.write(ev.text)
                        sys.stdout.flush()
            except EdgespecError as e:
                if not written:
                    raise
                error = str(e)
            except Exception as e:  # the engine crashed mid-report: keep what was written, marked failed
                error = f"{type(e).__name__}: {e}"
            finally:
                restore()
            if written or done is not None:
                sys.stdout.write("\n")
            cancelled = cancel.is_set() or (done is not None and getattr(done.stats, "stop_reason", "") == "cancelled")
            if done is None and not cancelled and error is None:
                error = "the engine stopped without finishing the report"

            record = gen.report_record(done) if done is not None else None
            fields = _record_fields(record, done)
            if not fields["text"]:
                fields["text"] = "".join(written)
            if error is not None or cancelled:
                status = "failed" if error is not None else "cancelled"
                why = f"generation failed: {error}" if error is not None else "generation cancelled by the user; this report is partial"
                if not fields["text"]:
                    print(f"fieldlog: {status}; nothing was stored", file=sys.stderr)
                    return 1
                fields["findings"].insert(0, {"kind": "incomplete", "message": why})
                fields["stats"]["stop_reason"] = status
                if error is not None:
                    fields["stats"]["error"] = error
                rid = store.save_report(sid, status=status, **fields)
                print(f"{why}\nkept the partial text as {status} report {rid} (not synced)", file=sys.stderr)
                return 1
            rid = store.save_report(sid, status="complete", **fields)
            if not fields["findings"]:
                add = getattr(gen, "add_to_history", None)
                if callable(add):
                    try:  # teach the history drafter from clean reports only; never fatal
                        add(fields["text"])
                    except Exception:
                        pass
        finally:
            close = getattr(gen, "close", None)
            if callable(close):
                close()

    from vineyard.status import engineer_line, status_line

    # the manager's line first (seconds, share of pest facts checked); the engine's figures only on request
    print(f"saved report {rid} for sighting {sid}: {status_line(fields)}", file=sys.stderr)
    if args.details:
        print(engineer_line(fields["stats"]), file=sys.stderr)
    if fields["findings"]:
        print(f"{len(fields['findings'])} integrity finding(s): this report is NOT clean", file=sys.stderr)
        for f in fields["findings"]:
            print(f"  - {f.get('message', f) if isinstance(f, dict) else f}", file=sys.stderr)
    return 0


def _walk_of(store: Store, block: str, date: str) -> str:
    """The finalized sighting of ``block`` on ``date`` (one walk), as an id; an error naming what was found."""
    import datetime as _dt

    try:
        day = _dt.date.fromisoformat(date.strip()).isoformat()
    except ValueError:
        raise UsageError(f"--date: {date!r} is not a day (YYYY-MM-DD)") from None
    found = [s for s in store.list_sightings(block=block, date_from=day, date_to=day, status="finalized")
             if str(s.get("block") or "").casefold() == block.strip().casefold() and s.get("date") == day]
    if not found:
        raise CliError(f"no finalized sighting of block {block} on {day} (see `fieldlog list --block {block}`)")
    if len(found) > 1:
        raise CliError(f"{len(found)} finalized sightings of block {block} on {day}; give one SIGHTING_ID: "
                       + ", ".join(s["id"][:8] for s in found))
    return found[0]["id"]


def _cancel_on_sigint(cancel: threading.Event) -> Callable[[], None]:
    """Ctrl-C during generation sets ``cancel`` so the engine stops cleanly and the partial report is kept."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if cancel.is_set():  # second Ctrl-C: stop for real
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        cancel.set()
        print("\ncancelling…", file=sys.stderr, flush=True)

    signal.signal(signal.SIGINT, handler)
    return lambda: signal.signal(signal.SIGINT, previous)


# ---------------------------------------------------------------------- parser
def _version() -> str:
    try:
        from . import __version__

        return __version__
    except ImportError:  # an editable install made before fieldlog_app/__init__.py existed
        from importlib import metadata

        try:
            return metadata.version("edgespec")
        except metadata.PackageNotFoundError:
            return "unknown"


def cmd_review(args: argparse.Namespace) -> int:
    """A person's review of a stored report, as a new version: --edit FILE, --approve or --flag REASON."""
    from .app import default_reviewer

    by = (args.by or default_reviewer()).strip()
    if not by:
        raise UsageError("--by NAME is required (who reviews the report)")
    text = None
    if args.edit is not None:
        try:
            text = Path(args.edit).expanduser().read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise CliError(f"{args.edit}: not UTF-8 text") from None
        text = text[:-1] if text.endswith("\n") else text  # an editor's final newline is not part of the report
    action = "approve" if args.approve else "flag" if args.flag is not None else "edit"
    if action == "edit" and text is None:
        raise UsageError("give --edit FILE, --approve or --flag REASON")
    with Store(args.db_path) as store:
        rid = store.find_report_id(args.report_id)
        new_id = store.review_report(rid, action, by=by, text=text, note=args.flag)
        r = store.get_report(new_id)
    n = len(r.get("findings") or [])
    print(f"report {new_id}: version {r['version']}, {r['review_status']} by {r['reviewed_by']}"
          + (f"; the fact check found {n} issue{'s' if n != 1 else ''}" if n else "; clean"))
    for f in r.get("findings") or []:
        print(f"  {f.get('kind')}: {f.get('message')}", file=sys.stderr)
    return 0


def _db_option(p: argparse.ArgumentParser) -> None:
    # SUPPRESS: a subcommand without --db must not override `fieldlog --db X sub ...`
    p.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS,
                   help=f"database file (default: ${ENV_DB} or the user data folder)")


def register_plugin_commands(sub: argparse._SubParsersAction) -> None:
    """Subcommands owned by other modules.

    >>> SYNC HOOK <<< ``fieldlog_app/sync/cli.py`` (sync engineer) defines
    ``register(subparsers)``: it adds its parser(s), calls ``_db_option``-style
    ``--db`` with ``default=argparse.SUPPRESS`` if it wants one, and sets
    ``func=handler``; ``handler(args) -> int`` gets ``args.db_path`` (a Path,
    already resolved) and may raise StoreError/EdgespecError for a clean error line.
    """
    try:
        from .sync.cli import register
    except ModuleNotFoundError as e:
        if e.name in ("fieldlog_app.sync", "fieldlog_app.sync.cli"):
            return  # sync not part of this install
        print(f"{PROG}: warning: sync commands unavailable ({e})", file=sys.stderr)
        return
    except Exception as e:  # a broken sync module must not break import/export
        print(f"{PROG}: warning: sync commands unavailable ({e})", file=sys.stderr)
        return
    register(sub)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=PROG,
        description="Vineyard scouting log: with no command, opens the app.",
    )
    ap.add_argument("--db", metavar="PATH", default=None,
                    help=f"database file (default: ${ENV_DB} or {default_db_path()})")
    ap.add_argument("--demo", action="store_true",
                    help=f"open a demo database with sample sightings (default file: {demo_db_path()})")
    ap.add_argument("--battery-sim", metavar="PERCENT[:charging]", default=None,
                    help="run the app on a simulated battery (below 10%% and not charging, reports wait for the charger)")
    ap.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    ap.set_defaults(func=cmd_app)
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("import-notes", help="import field notes (JSON Lines) as finalized sightings")
    p.add_argument("file", metavar="FILE.jsonl")
    _db_option(p)
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("export", help="export sightings as CSV, GeoJSON or JSON Lines")
    p.add_argument("--format", "-f", required=True, choices=["csv", "geojson", "jsonl"])
    p.add_argument("-o", "--output", metavar="FILE", help="output file (default: stdout)")
    p.add_argument("--include-drafts", action="store_true", help="also export unfinished drafts")
    p.add_argument("--include-superseded", action="store_true", help="also export old versions of revised sightings")
    _db_option(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("list", help="list sightings (newest first) with their ids")
    p.add_argument("--block")
    p.add_argument("--pest", help="part of a pest name")
    p.add_argument("--from", dest="date_from", metavar="YYYY-MM-DD")
    p.add_argument("--to", dest="date_to", metavar="YYYY-MM-DD")
    p.add_argument("--status", choices=["draft", "finalized", "superseded"])
    p.add_argument("--search", metavar="WORDS", help="full-text search in notes, pests, block, scout")
    p.add_argument("--all", action="store_true", help="include superseded versions")
    p.add_argument("--limit", type=int, default=500)
    _db_option(p)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("report", help="generate and store a scouting report for a sighting (no UI)")
    p.add_argument("sighting_id", metavar="SIGHTING_ID", nargs="?",
                   help="full id or a unique prefix (see `fieldlog list`)")
    p.add_argument("--block", help="instead of an id: the block walked (with --date)")
    p.add_argument("--date", metavar="YYYY-MM-DD", help="with --block: the day of the walk")
    p.add_argument("--demo", dest="demo_report", action="store_true", help="on the demo database (seeded if empty), as `make demo` does")
    p.add_argument("--oracle", help="catalog name or GGUF path of the oracle")
    p.add_argument("--drafter", help="none|model|bridge|lookup|history|cascade|onnx")
    p.add_argument("--draft-model", help="catalog name or GGUF path of the draft model")
    p.add_argument("--max-tokens", type=int, default=None, metavar="N")
    p.add_argument("--details", action="store_true", help="also print the engine's figures (tokens, tok/s, "
                   "acceptance, oracle passes, drafter)")
    _db_option(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("review", help="correct, approve or flag a stored report (each makes a new version)")
    p.add_argument("report_id", metavar="REPORT_ID", help="full id or a unique prefix")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--approve", action="store_true", help="approve it (with --edit: the corrected text, approved)")
    what.add_argument("--flag", metavar="REASON", help="flag it, saying why")
    p.add_argument("--edit", metavar="FILE", help="the corrected report text (checked again when saved)")
    p.add_argument("--by", metavar="NAME", help="who reviews (default: $FIELDLOG_USER or the login name)")
    _db_option(p)
    p.set_defaults(func=cmd_review)

    register_plugin_commands(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse already printed usage (2) or help/version (0)
        return int(e.code) if isinstance(e.code, int) else 2
    if args.command is not None and args.demo:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: --demo only applies when starting the app (or `fieldlog report --demo`)",
              file=sys.stderr)
        return 2
    args.demo = args.demo or bool(getattr(args, "demo_report", False))
    args.db_path = resolve_db(getattr(args, "db", None), demo=args.demo)
    try:
        return int(args.func(args) or 0)
    except UsageError as e:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except (StoreError, EdgespecError, CliError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `fieldlog export ... | head`: not an error; silence the exit-time flush too
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0
    except OSError as e:
        print(f"{PROG}: error: {e.strerror or e}{f': {e.filename}' if e.filename else ''}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
