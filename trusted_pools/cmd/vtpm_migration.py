"""``trusted-pools-manage vtpm migration list|show``: vTPM migrations.

Read from the database the conductors write (``[database] connection``):
each migration with its instance, hosts, kind, step, epoch, age and
outcome, and the reason of a refusal or rollback. ``--format json`` prints
what ``GET /v1/vtpm-migrations`` answers.

Exit status: 0 on success, 1 when the migration is unknown or the
database cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from trusted_pools import exception
from trusted_pools.conf import CONF
from trusted_pools.conf import database as database_conf

EXIT_OK = 0
EXIT_FAILED = 1

database_conf.register_opts(CONF)

_COLUMNS = ("id", "instance", "source", "destination", "kind", "step",
            "epoch", "age", "outcome")


def add_commands(commands: argparse._SubParsersAction) -> None:
    """``vtpm migration ...``, under the ``vtpm`` command another module
    may have made already (``vtpm list``: trusted_pools.cmd.vtpm_report)."""
    group = commands.choices.get("vtpm")
    if group is None:
        group = commands.add_parser("vtpm", help="vTPMs and their "
                                                 "migrations")
        sub = group.add_subparsers(dest="vtpm_command", metavar="ACTION")
        sub.required = True
    else:
        sub = next(action for action in group._actions
                   if isinstance(action, argparse._SubParsersAction))
    migration = sub.add_parser(
        "migration", help="vTPM migrations with their step and outcome")
    actions = migration.add_subparsers(dest="migration_command",
                                       metavar="ACTION")
    actions.required = True
    listing = actions.add_parser(
        "list", help="migrations, newest first",
        description="vTPM migrations, newest first: step, epoch, age in "
                    "seconds and outcome.")
    listing.add_argument("--instance", metavar="UUID",
                         help="only this instance's migrations")
    state = listing.add_mutually_exclusive_group()
    state.add_argument("--active", action="store_true",
                       help="only migrations that have not ended")
    state.add_argument("--ended", action="store_true",
                       help="only completed or aborted migrations")
    listing.add_argument("--limit", type=_limit, default=100,
                         help="at most this many (1-1000, default 100)")
    _format_argument(listing)
    listing.set_defaults(func=run_list)
    show = actions.add_parser("show", help="one migration")
    show.add_argument("migration_id", metavar="ID")
    _format_argument(show)
    show.set_defaults(func=run_show)


def _format_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("table", "json"),
                        default="table", help="output format")


def _limit(value: str) -> int:
    try:
        limit = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a number" % value) \
            from None
    if not 1 <= limit <= 1000:
        raise argparse.ArgumentTypeError("1 to 1000")
    return limit


def _db() -> Any:
    from trusted_pools.db import api
    return api.Connection(api.make_context_manager())


def _table(rows: list[dict[str, Any]]) -> str:
    cells = [[_cell(row[c]) for c in _COLUMNS] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells])
              for i, c in enumerate(_COLUMNS)]
    line = "  ".join("%-*s" % (w, c) for w, c in zip(widths, _COLUMNS))
    out = [line.rstrip(), "  ".join("-" * w for w in widths)]
    for row in cells:
        out.append("  ".join("%-*s" % (w, c)
                             for w, c in zip(widths, row)).rstrip())
    return "\n".join(out)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "%.1f" % value
    return str(value)


def run_list(args: argparse.Namespace) -> int:
    from trusted_pools.protocol import vtpm_migration as proto
    active = True if args.active else (False if args.ended else None)
    try:
        rows = [proto.view(r) for r in _db().list_vtpm_migrations(
            instance=args.instance, active=active, limit=args.limit)]
    except exception.TrustedPoolsError as error:
        print("trusted-pools-manage: %s" % error, file=sys.stderr)
        return EXIT_FAILED
    if args.format == "json":
        json.dump({"vtpm_migrations": rows}, sys.stdout, indent=2)
        print()
    else:
        print(_table(rows))
    return EXIT_OK


def run_show(args: argparse.Namespace) -> int:
    from trusted_pools.protocol import vtpm_migration as proto
    try:
        row = proto.view(_db().get_vtpm_migration(args.migration_id))
    except exception.TrustedPoolsError as error:
        print("trusted-pools-manage: %s" % error, file=sys.stderr)
        return EXIT_FAILED
    if args.format == "json":
        json.dump({"vtpm_migration": row}, sys.stdout, indent=2)
        print()
    else:
        width = max(len(k) for k in row)
        for key, value in row.items():
            print("%-*s  %s" % (width, key, _cell(value)))
    return EXIT_OK
