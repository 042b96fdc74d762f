"""``fieldlog-server``: run the farm-office sync server and manage its devices.

    fieldlog-server [--db PATH | --database-url URL] [--host 127.0.0.1] [--port 8765]   serve (the default)
    fieldlog-server add-device NAME [--replace] [--role sync|reader] print a new device token (shown once)
    fieldlog-server revoke-device NAME
    fieldlog-server devices                                          list devices
    fieldlog-server import-bundle FILE [--receipts OUT] [--device NAME]
    fieldlog-server export {csv,geojson} [-o FILE] [--all-versions]
    fieldlog-server status                                           counts and recent conflicts
    fieldlog-server user add NAME --role viewer|manager              an office user (password from a prompt or stdin)
    fieldlog-server user list | user disable NAME
    fieldlog-server check --oracle-url URL [--model NAME]            office model checks of pending reports
    fieldlog-server rewrite REPORT_ID --oracle-url URL               the office model's version of a report

The office's web page is served with the API: open http://HOST:PORT/ and log in as an office user.

Exit codes: 0 ok, 1 failed (or an import with conflicts/invalid items), 2 usage.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
from pathlib import Path

from .guard import ConnectionLimits, guarded_protocol
from .app import DEFAULT_MAX_BODY, create_app, write_csv, write_geojson
from .server import DEVICE_ROLES, ServerDB, ServerError, default_server_db

PROG = "fieldlog-server"
DEFAULT_PORT = 8765


def _db_option(p: argparse.ArgumentParser, top: bool = False) -> None:
    p.add_argument("--db", metavar="PATH", default=None if top else argparse.SUPPRESS,
                   help=f"server database (default: $FIELDLOG_SERVER_DB or {default_server_db()})" if top else
                   "server database")
    p.add_argument("--database-url", metavar="URL", default=None if top else argparse.SUPPRESS,
                   help="a PostgreSQL database instead of the SQLite file, e.g. "
                   "postgresql+psycopg://fieldlog@dbhost/fieldlog (default: $FIELDLOG_DATABASE_URL)" if top else
                   "PostgreSQL database URL")


def _limit_options(p: argparse.ArgumentParser, top: bool = False) -> None:
    d = ConnectionLimits()
    p.add_argument("--header-timeout", type=float, metavar="S", default=d.header_timeout if top else argparse.SUPPRESS,
                   help=f"seconds a client has to send its request head (default {d.header_timeout:g})")
    p.add_argument("--body-timeout", type=float, metavar="S", default=d.body_timeout if top else argparse.SUPPRESS,
                   help=f"seconds a client has to send its request body (default {d.body_timeout:g})")
    p.add_argument("--max-connections", type=int, metavar="N", default=d.max_connections if top else argparse.SUPPRESS,
                   help=f"connections open at once; more are answered 503 (default {d.max_connections})")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description="fieldlog farm-office sync server. With no command, serves.",
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n")[1])
    _db_option(ap, top=True)
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; "
                    "0.0.0.0 for the farm network)")
    ap.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    ap.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY, metavar="N",
                    help=f"largest request accepted (default {DEFAULT_MAX_BODY})")
    ap.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    _limit_options(ap, top=True)
    ap.add_argument("--ssl-certfile", metavar="PEM", default=None,
                    help="serve HTTPS with this certificate (tokens cross the network: use TLS beyond a trusted LAN)")
    ap.add_argument("--ssl-keyfile", metavar="PEM", default=None, help="private key for --ssl-certfile")
    ap.add_argument("--secure-cookies", action="store_true",
                    help="mark the office's session cookie Secure (on by itself with --ssl-certfile; use it behind an "
                    "HTTPS proxy)")
    _oracle_options(ap, top=True)
    ap.add_argument("--rewrite-disputed", action="store_true",
                    help="with --oracle-url: also write the office version of every report the office model disputes "
                    "or an office manager flags (one at a time, after the checks)")
    ap.set_defaults(func=cmd_serve)
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("serve", help="run the server (the default)")
    p.add_argument("--host", default=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=argparse.SUPPRESS)
    p.add_argument("--max-body-bytes", type=int, default=argparse.SUPPRESS, metavar="N")
    p.add_argument("--log-level", default=argparse.SUPPRESS, choices=["debug", "info", "warning", "error"])
    _limit_options(p)
    _db_option(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("add-device", help="register a device and print its token (shown once)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--replace", action="store_true", help="issue a new token for an existing device")
    p.add_argument("--role", choices=DEVICE_ROLES, default="sync",
                   help="sync (default): upload only; reader: may also read the farm's data through /v1")
    _db_option(p)
    p.set_defaults(func=cmd_add_device)

    p = sub.add_parser("revoke-device", help="revoke a device's token (its uploads get 403)")
    p.add_argument("name", metavar="NAME")
    _db_option(p)
    p.set_defaults(func=cmd_revoke_device)

    p = sub.add_parser("devices", help="list devices")
    _db_option(p)
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("import-bundle", help="import a bundle written by `fieldlog sync export-bundle`")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--receipts", metavar="OUT", help="write receipts (JSON Lines) for `fieldlog sync import-receipts`")
    p.add_argument("--device", metavar="NAME", help="accept the bundle only if NAME signed it (by default any active "
                   "device; the items are always credited to the device that signed)")
    _db_option(p)
    p.set_defaults(func=cmd_import_bundle)

    p = sub.add_parser("export", help="export sightings as CSV or GeoJSON")
    p.add_argument("format", choices=["csv", "geojson"])
    p.add_argument("-o", "--output", metavar="FILE", help="default: stdout")
    p.add_argument("--all-versions", action="store_true", help="include superseded versions")
    _db_option(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("status", help="what the server holds and the latest conflicts")
    _db_option(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("check", help="check pending reports with the office model (one summary line per report)")
    _oracle_options(p, top=True)
    p.add_argument("--retry-errors", action="store_true", help="also retry reports whose last check was an error")
    p.add_argument("--limit", type=int, default=1000, metavar="N", help="check at most N reports (default 1000)")
    _db_option(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("rewrite", help="the office model's own version of a report, with the field report as its "
                       "draft (one summary line)")
    p.add_argument("report_id", metavar="REPORT_ID")
    _oracle_options(p, top=True)
    p.add_argument("--chunk", type=int, default=16, metavar="N",
                   help="tokens the office model writes per request before the field text is tried again (default 16)")
    p.add_argument("--no-grammar", action="store_true",
                   help="do not send the report grammar (a server without GBNF `grammar` in completions)")
    _db_option(p)
    p.set_defaults(func=cmd_rewrite)

    p = sub.add_parser("user", help="office users of the web page")
    _db_option(p)
    usub = p.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    u = usub.add_parser("add", help="add an office user; the password is asked for (or read from stdin's first line)")
    u.add_argument("name", metavar="NAME")
    u.add_argument("--role", choices=["viewer", "manager"], required=True,
                   help="viewer reads; manager also approves, archives, deletes and manages devices")
    _db_option(u)
    u.set_defaults(func=cmd_user_add)
    u = usub.add_parser("list", help="list office users")
    _db_option(u)
    u.set_defaults(func=cmd_user_list)
    u = usub.add_parser("disable", help="disable an office user and end their sessions")
    u.add_argument("name", metavar="NAME")
    _db_option(u)
    u.set_defaults(func=cmd_user_disable)
    return ap


def _oracle_options(p: argparse.ArgumentParser, top: bool = False) -> None:
    from fieldlog_app.office.check import DEFAULT_MARGIN, DEFAULT_TOP_LOGPROBS

    p.add_argument("--oracle-url", metavar="URL", default=None,
                   help="the office model's OpenAI-compatible server, e.g. http://127.0.0.1:8000 (default: "
                   "$FIELDLOG_ORACLE_URL; serving without one checks nothing). The API key comes from "
                   "$FIELDLOG_ORACLE_API_KEY")
    p.add_argument("--model", "--oracle-model", dest="oracle_model", metavar="NAME", default=None,
                   help="model name to send (vLLM needs the served name; default: $FIELDLOG_ORACLE_MODEL)")
    p.add_argument("--oracle-margin", type=float, default=DEFAULT_MARGIN, metavar="NATS",
                   help=f"a disagreement is the office model's best alternative beating the written token by more "
                   f"than this many nats (default {DEFAULT_MARGIN})")
    p.add_argument("--oracle-top", type=int, default=DEFAULT_TOP_LOGPROBS, metavar="K",
                   help=f"alternatives asked for per position (default {DEFAULT_TOP_LOGPROBS})")
    p.add_argument("--oracle-concurrency", type=int, default=1, metavar="N",
                   help="requests to the office model at once (default 1)")
    p.add_argument("--chat-template-file", metavar="FILE", default=None,
                   help="the office model's chat template (Jinja); default ChatML")


def _oracle_config(args):
    from fieldlog_app.office.check import CHATML, OracleConfig

    url = args.oracle_url or os.environ.get("FIELDLOG_ORACLE_URL")
    if not url:
        return None
    template = CHATML
    if args.chat_template_file:
        try:
            template = Path(args.chat_template_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ServerError(f"--chat-template-file: {e}") from None
    if args.oracle_concurrency < 1:
        raise ServerError("--oracle-concurrency must be at least 1")
    try:
        return OracleConfig(url, model=args.oracle_model or os.environ.get("FIELDLOG_ORACLE_MODEL") or None,
                            api_key=os.environ.get("FIELDLOG_ORACLE_API_KEY") or None, margin=args.oracle_margin,
                            top_logprobs=args.oracle_top, chat_template=template)
    except ValueError as e:
        raise ServerError(str(e)) from None


def cmd_check(args) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from fieldlog_app.office.check_queue import pending_reports, run_check, summary_line

    config = _oracle_config(args)
    if config is None:
        raise ServerError("give --oracle-url URL (or set FIELDLOG_ORACLE_URL)")
    sdb = _open(args)
    ids = pending_reports(sdb, limit=args.limit, retry_errors=args.retry_errors, due_only=False)
    if not ids:
        print("no reports awaiting an office check")
        return 0
    failed = 0
    with ThreadPoolExecutor(max_workers=args.oracle_concurrency) as pool:
        for check in pool.map(lambda rid: run_check(sdb, config, rid), ids):
            failed += check["status"] != "checked"
            print(summary_line(check), flush=True)
    return 1 if failed else 0


def cmd_rewrite(args) -> int:
    from fieldlog_app.office.check import OracleAnswerError, OracleUnavailable
    from fieldlog_app.office.rewrite import office_version
    from vineyard import FieldNoteError

    config = _oracle_config(args)
    if config is None:
        raise ServerError("give --oracle-url URL (or set FIELDLOG_ORACLE_URL)")
    if args.chunk < 1:
        raise ServerError("--chunk must be at least 1")
    sdb = _open(args)
    rid = args.report_id
    try:
        rw = office_version(sdb, rid, config, chunk=args.chunk, grammar=not args.no_grammar)
    except OracleUnavailable as e:
        print(f"{rid}: awaiting the office model ({e}); nothing stored", flush=True)
        return 1
    except (OracleAnswerError, FieldNoteError, ValueError) as e:
        print(f"{rid}: error: {e}; nothing stored", flush=True)
        return 1
    s = rw["summary"]
    print(f"{rid}: office version {rw['office_report_id']} by {rw['model'] or '?'}: {s['passes']} requests "
          f"({s['score_passes']} scoring, {s['generate_passes']} generating), {s['accepted_chars']} characters kept "
          f"from the field report, {s['generated_chars']} written; {s['seconds']:.2f} s"
          + ("" if s["grammar"] else " (no grammar)"), flush=True)
    return 0


def _open(args) -> ServerDB:
    url = args.database_url or os.environ.get("FIELDLOG_DATABASE_URL")
    if url and args.db:
        raise ServerError("give --db (a SQLite file) or --database-url (PostgreSQL), not both")
    if url and not url.startswith("postgresql"):
        raise ServerError(f"--database-url {url.split('://')[0]}://…: expected postgresql+psycopg://USER@HOST/DB")
    return ServerDB(url or args.db or default_server_db())


def cmd_serve(args) -> int:
    import uvicorn

    if not 0 < args.port < 65536:
        print(f"{PROG}: error: --port {args.port} is not a TCP port", file=sys.stderr)
        return 2
    if args.max_body_bytes < 1024:
        print(f"{PROG}: error: --max-body-bytes must be at least 1024", file=sys.stderr)
        return 2
    if args.header_timeout <= 0 or args.body_timeout <= 0 or args.max_connections < 1:
        print(f"{PROG}: error: timeouts must be positive and --max-connections at least 1", file=sys.stderr)
        return 2
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        print(f"{PROG}: error: --ssl-certfile and --ssl-keyfile go together", file=sys.stderr)
        return 2
    if args.rewrite_disputed and _oracle_config(args) is None:
        print(f"{PROG}: error: --rewrite-disputed needs --oracle-url (or FIELDLOG_ORACLE_URL)", file=sys.stderr)
        return 2
    sdb = _open(args)
    app = create_app(sdb, max_body_bytes=args.max_body_bytes,
                     secure_cookies=bool(args.secure_cookies or args.ssl_certfile))
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    scheme = "https" if args.ssl_certfile else "http"
    print(f"{PROG}: serving {sdb.path} on {scheme}://{args.host}:{args.port}  (Ctrl-C to stop)", file=sys.stderr,
          flush=True)
    limits = ConnectionLimits(args.header_timeout, args.body_timeout, args.max_connections)
    oracle = _oracle_config(args)
    checker = None
    if oracle is not None:  # its own threads: an unreachable oracle never holds up a sync or a page
        from fieldlog_app.office.check_queue import OfficeChecker

        checker = OfficeChecker(sdb, oracle, concurrency=args.oracle_concurrency,
                                rewrite_disputed=args.rewrite_disputed).start()
        print(f"{PROG}: checking reports with the office model at {oracle.endpoint}"
              + (", rewriting the disputed ones" if args.rewrite_disputed else ""), file=sys.stderr, flush=True)
    try:
        _run_uvicorn(uvicorn, app, args, limits)
    finally:
        if checker is not None:
            checker.stop(timeout=10)
    return 0


def _run_uvicorn(uvicorn, app, args, limits) -> None:
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=args.log_level == "debug",
                timeout_graceful_shutdown=5, ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile,
                http=guarded_protocol(limits))


def cmd_add_device(args) -> int:
    token = _open(args).add_device(args.name, replace=args.replace, role=args.role)
    print(token)
    print(f"device {args.name!r} registered; give it this token (it is not stored and cannot be shown again):\n"
          f"  fieldlog sync --server http://HOST:PORT --token {token}", file=sys.stderr)
    return 0


def cmd_revoke_device(args) -> int:
    _open(args).revoke_device(args.name)
    print(f"device {args.name!r} revoked")
    return 0


def cmd_devices(args) -> int:
    rows = _open(args).list_devices()
    if not rows:
        print("no devices; add one with `fieldlog-server add-device NAME`")
    for r in rows:
        state = f"revoked {r['revoked_at']}" if r["revoked_at"] else "active"
        print(f"{r['name']:<24} {state:<32} items {r['items']:<6} last seen {r['last_seen_at'] or 'never'}")
    return 0


def cmd_import_bundle(args) -> int:
    from .bundle import BundleError, import_bundle

    sdb = _open(args)
    try:
        report = import_bundle(sdb, args.file, device=args.device, receipts=args.receipts)
    except BundleError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    print(report.summary())
    for c in report.conflicts:
        print(f"  conflict, line {c['line']}: {c['message']}")
    for c in report.invalid:
        print(f"  invalid, line {c['line']}: {c['message']}")
    unlisted = report.n_conflicts + report.n_invalid - len(report.conflicts) - len(report.invalid)
    if unlisted:
        print(f"  ... and {unlisted} more")
    if args.receipts:
        print(f"receipts for {report.receipts} item(s) written to {args.receipts}; on the device run: "
              f"fieldlog sync import-receipts {Path(args.receipts).name}")
    return 0 if not report.conflicts and not report.invalid else 1


def cmd_export(args) -> int:
    sightings = _open(args).export_sightings(all_versions=args.all_versions)
    writer = write_csv if args.format == "csv" else write_geojson
    if not args.output:
        n = writer(sightings, sys.stdout)
    else:
        from .bundle import _atomic_write

        buf = io.StringIO(newline="")
        n = writer(sightings, buf)
        _atomic_write(Path(args.output), lambda f: f.write(buf.getvalue().encode("utf-8")))
    print(f"{n} row(s)" if args.format == "csv" else f"{n} feature(s)", file=sys.stderr)
    return 0


def cmd_status(args) -> int:
    sdb = _open(args)
    c = sdb.counts()
    print(f"{sdb.path}: {c['sighting']} sighting version(s), {c['report']} report(s), "
          f"{c['devices']} active device(s), {c['conflicts']} conflict(s) logged")
    for r in sdb.conflicts(limit=10):
        print(f"  {r['at']} {r['device']}: {r['reason']} {r['item_id']}")
    return 0


def _read_password(name: str) -> str:
    """From a prompt (typed twice) on a terminal, else the first line of stdin (scripts, CI)."""
    if sys.stdin.isatty():
        import getpass

        pw = getpass.getpass(f"password for {name}: ")
        if getpass.getpass("again: ") != pw:
            raise ServerError("the two passwords differ; nothing changed")
        return pw
    line = sys.stdin.readline()
    if not line:
        raise ServerError("no password on stdin (pipe it in, one line)")
    return line.rstrip("\r\n")


def cmd_user_add(args) -> int:
    from fieldlog_app.office.accounts import Office

    office = Office(_open(args))  # opening first: a bad --db fails before the password is asked
    user = office.add_user(args.name, _read_password(args.name), args.role)
    print(f"office user {user.name!r} added ({user.role}); log in at http://HOST:PORT/login")
    return 0


def cmd_user_list(args) -> int:
    from fieldlog_app.office.accounts import Office

    rows = Office(_open(args)).list_users()
    if not rows:
        print("no office users; add one with `fieldlog-server user add NAME --role manager`")
    for r in rows:
        state = f"disabled {r['disabled_at']}" if r["disabled_at"] else "active"
        print(f"{r['name']:<24} {r['role']:<8} {state}")
    return 0


def cmd_user_disable(args) -> int:
    from fieldlog_app.office.accounts import Office

    Office(_open(args)).disable_user(args.name)
    print(f"office user {args.name!r} disabled; their sessions are ended")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code) if isinstance(e.code, int) else 2
    try:
        return int(args.func(args) or 0)
    except ServerError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
