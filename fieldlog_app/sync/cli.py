"""``fieldlog sync ...``: argument parsing and printing only; the work is in client.py and bundle.py.

Registered into the ``fieldlog`` command by ``fieldlog_app.cli`` (``register``).
Exit codes: 0 done, 1 some items failed or need attention, 2 usage/configuration
error, 3 the server could not be reached / another sync is running (nothing was
lost; try again later).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

# The client (httpx) is imported inside the handlers: `fieldlog` registers these
# commands on every start and must stay quick for the ones that do not sync.
ENV_SERVER = "FIELDLOG_SERVER"
ENV_TOKEN = "FIELDLOG_TOKEN"

EXIT_OK, EXIT_ITEMS, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3

EPILOG = f"""\
commands:
  fieldlog sync --server URL --token TOKEN   upload pending items once and print counts
  fieldlog sync status                       queue state, last success, items needing attention
  fieldlog sync export-bundle FILE           pending items to a bundle file (for an office with no network link)
  fieldlog sync import-receipts FILE         mark items sent from the office's receipts for a bundle
  fieldlog sync retry [ITEM_ID ...]          queue failed / needs-attention items again

The server and token default to ${ENV_SERVER} and ${ENV_TOKEN}, then to the ones saved in the app's
Sync screen (the user config's fieldlog/sync.json, or $FIELDLOG_CONFIG).
Exit codes: 0 done, 1 items failed or need attention, 2 usage, 3 server unreachable or sync busy.
"""


def _db_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS,
                   help="database file (default: $FIELDLOG_DB or the user data folder)")


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``sync`` (and its subcommands) to the ``fieldlog`` parser."""
    p = subparsers.add_parser("sync", help="send finalized sightings and reports to the farm office",
                              description="Send finalized sightings and reports to the farm-office server.",
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", metavar="URL", default=argparse.SUPPRESS, help=f"server URL (default: ${ENV_SERVER})")
    p.add_argument("--token", metavar="TOKEN", default=argparse.SUPPRESS,
                   help=f"this device's token from `fieldlog-server add-device` (default: ${ENV_TOKEN})")
    p.add_argument("--batch-size", type=int, default=50, metavar="N", help="items per request (default 50)")
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS", help="per request (default 30)")
    p.add_argument("--retries", type=int, default=5, metavar="N",
                   help="retries per request on network errors, timeouts, 408/429/5xx (default 5)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    _db_option(p)
    p.set_defaults(func=cmd_sync)
    sub = p.add_subparsers(dest="sync_command", metavar="SUBCOMMAND")

    s = sub.add_parser("status", help="queue state, last success and items needing attention")
    s.add_argument("--json", action="store_true", help="print the status as JSON")
    _db_option(s)
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("export-bundle", help="write pending items to a bundle file (zip) for the office")
    s.add_argument("file", metavar="FILE")
    s.add_argument("--all", action="store_true", help="include items already sent")
    s.add_argument("--device", metavar="NAME",
                   help="this device's name at the office, as given to `fieldlog-server add-device` (default: host name)")
    s.add_argument("--token", metavar="TOKEN", default=argparse.SUPPRESS,
                   help=f"this device's token, which signs the bundle (default: ${ENV_TOKEN})")
    _db_option(s)
    s.set_defaults(func=cmd_export_bundle)

    s = sub.add_parser("import-receipts", help="mark items sent from a receipts file made by the office import")
    s.add_argument("file", metavar="FILE")
    s.add_argument("--token", metavar="TOKEN", default=argparse.SUPPRESS,
                   help=f"this device's token, which checks the office's signatures (default: ${ENV_TOKEN})")
    _db_option(s)
    s.set_defaults(func=cmd_import_receipts)

    s = sub.add_parser("retry", help="queue failed / needs-attention items again")
    s.add_argument("item_ids", nargs="*", metavar="ITEM_ID", help="only these (default: all of them)")
    _db_option(s)
    s.set_defaults(func=cmd_retry)
    return p


def _token(args: argparse.Namespace) -> str:
    """--token, else $FIELDLOG_TOKEN, else the token saved in the app's Sync screen."""
    token = (getattr(args, "token", None) or os.environ.get(ENV_TOKEN) or "").strip()
    if not token:
        from .config import SyncSettingsError, load_settings

        try:
            token = load_settings().token
        except SyncSettingsError as e:
            _err(str(e))
    return token


def _err(msg: str) -> None:
    print(f"fieldlog: error: {msg}", file=sys.stderr)


def cmd_sync(args: argparse.Namespace) -> int:
    from .common import RetryPolicy, SyncBusyError, SyncConfigError, SyncError
    from .client import sync_once

    if args.batch_size < 1 or args.retries < 0 or args.timeout <= 0:
        _err("--batch-size must be at least 1, --retries at least 0, --timeout positive")
        return EXIT_USAGE
    try:
        result = sync_once(args.db_path, getattr(args, "server", None), getattr(args, "token", None),
                           batch_size=args.batch_size, timeout=args.timeout, force=True,
                           retry=RetryPolicy(tries=args.retries + 1))
    except SyncConfigError as e:
        _err(str(e))
        return EXIT_USAGE
    except SyncBusyError as e:
        _err(str(e))
        return EXIT_UNREACHABLE
    except SyncError as e:
        _err(str(e))
        return EXIT_ITEMS
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
    else:
        print(result.summary())
        for m in result.messages:
            print(f"  {m}")
        if result.recovered:
            print(f"  ({result.recovered} item(s) from an interrupted sync were sent again)")
    if result.error:
        _err(result.error)
        return EXIT_UNREACHABLE if result.error.startswith("server unreachable") else EXIT_ITEMS
    return EXIT_OK if result.ok else EXIT_ITEMS


def cmd_status(args: argparse.Namespace) -> int:
    from .common import SyncError
    from .status import outbox_status

    try:
        st = outbox_status(args.db_path)
    except SyncError as e:
        _err(str(e))
        return EXIT_ITEMS
    if args.json:
        print(json.dumps(st.to_dict(), indent=1))
        return EXIT_OK
    c = st.counts
    print(f"queued {c.get('queued', 0)}, sending {c.get('sending', 0)}, sent {c.get('sent', 0)}, "
          f"failed {c.get('failed', 0)}, needs attention {c.get('needs-attention', 0)}")
    print(f"last success: {st.last_success_at or 'never'}")
    if st.last_error:
        print(f"last run failed: {st.last_error}")
    if st.pending and st.next_attempt_at:
        print(f"next attempt not before {st.next_attempt_at}")
    for a in st.attention:
        print(f"  {a['state']:<15} {a['kind']:<8} {a['item_id']}  {a['last_error'] or ''}")
    return EXIT_OK


def cmd_export_bundle(args: argparse.Namespace) -> int:
    from .bundle import BundleError, export_bundle
    from .common import SyncError

    token = _token(args)
    try:
        info = export_bundle(args.db_path, args.file, token=token, include_sent=args.all, device=args.device)
    except (BundleError, SyncError) as e:
        _err(str(e))
        return EXIT_ITEMS
    print(f"wrote {info.count} item(s) to {info.path} (sha256 {info.items_sha256[:16]}…, device {info.device})")
    print("import it at the office with: fieldlog-server import-bundle FILE --receipts RECEIPTS.jsonl")
    return EXIT_OK


def cmd_import_receipts(args: argparse.Namespace) -> int:
    from .bundle import BundleError, read_receipts
    from .common import SyncBusyError, SyncConfigError, SyncError
    from .status import apply_receipts

    token = _token(args)
    try:
        out = apply_receipts(args.db_path, read_receipts(args.file), token=token)
    except SyncConfigError as e:
        _err(str(e))
        return EXIT_USAGE
    except SyncBusyError as e:
        _err(str(e))
        return EXIT_UNREACHABLE
    except (BundleError, SyncError) as e:
        _err(str(e))
        return EXIT_ITEMS
    print(f"marked {out.marked_sent} item(s) sent; {out.already_sent} already were; "
          f"{out.unknown} unknown here; {out.mismatched} for another version")
    if out.unverified:
        _err(f"{out.unverified} receipt(s) are not signed by the office for this device; those items stay queued")
    return EXIT_OK if out.mismatched == 0 and out.unverified == 0 else EXIT_ITEMS


def cmd_retry(args: argparse.Namespace) -> int:
    from .common import SyncBusyError, SyncError
    from .status import retry_items

    try:
        n = retry_items(args.db_path, args.item_ids or None)
    except SyncBusyError as e:
        _err(str(e))
        return EXIT_UNREACHABLE
    except SyncError as e:
        _err(str(e))
        return EXIT_ITEMS
    print(f"queued {n} item(s) again; run `fieldlog sync` to send them")
    return EXIT_OK
