"""``trusted-pools-manage vtpm list --host NAME``: a host's vTPMs as its
agent last reported them.

The report is the result of the host's newest ``list_vtpms`` operation in
the database (``POST /v1/hosts/{name}/vtpms``, or ``openstack trusted
host vtpm list NAME --refresh``, asks the host for a fresh one): this command reads it, like
the ``db`` commands, without the bus or the API. It is **host-reported**:
what the host's agent says about its own vTPMs, not evidence; an entry
naming an instance whose deep-attestation verdict was made on another host
is flagged.

Exit status: 0 when a report was shown; 1 when the host has none (or the
database could not be read).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any, TextIO

from trusted_pools import exception
from trusted_pools.conf import CONF
from trusted_pools.protocol import display
from trusted_pools.protocol.display import printable
from trusted_pools.conf import database as database_conf

if TYPE_CHECKING:
    from trusted_pools.db import api

EXIT_OK = 0
EXIT_FAILED = 1

database_conf.register_opts(CONF)


def add_commands(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser(
        "vtpm", help="a host's vTPMs as it last reported them")
    sub = group.add_subparsers(dest="vtpm_command", metavar="ACTION")
    sub.required = True
    listed = sub.add_parser(
        "list", help="the host's last vTPM report (host-reported, not "
                     "evidence)",
        description="Show the vTPMs a host's agent reported in its newest "
                    "list_vtpms operation (POST /v1/hosts/NAME/vtpms asks "
                    "for one). Host-reported data, not evidence.")
    listed.add_argument("--host", required=True, metavar="NAME",
                        help="the compute host's name")
    listed.add_argument("--format", choices=("table", "json"),
                        default="table",
                        help="output format (default: table)")
    listed.set_defaults(func=run_list)


def run_list(args: argparse.Namespace, db: "api.Connection | None" = None,
             out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        if db is None:
            # Imported here: the other commands need no SQLAlchemy.
            from trusted_pools.db import api
            db = api.Connection(api.make_context_manager())
        operation = db.latest_done_operation(args.host, "list_vtpms")
    except exception.TrustedPoolsError as error:
        err.write("trusted-pools-manage: %s\n" % error)
        return EXIT_FAILED
    if operation is None or not isinstance(operation.result, dict):
        err.write("trusted-pools-manage: host %s has no vTPM report yet; "
                  "POST /v1/hosts/%s/vtpms (openstack trusted host vtpm "
                  "list %s --refresh) asks it for one\n"
                  % (args.host, args.host, args.host))
        return EXIT_FAILED
    report = dict(operation.result, operation=operation.id)
    # Times are ISO strings everywhere (older reports kept epoch seconds).
    report["reported_at"] = None if _when(report.get("reported_at")) == "?" \
        else _when(report.get("reported_at"))
    if args.format == "json":
        out.write(json.dumps(report, indent=2, sort_keys=True) + "\n")
    else:
        out.write(_table(report))
    return EXIT_OK


def _when(value: Any) -> str:
    try:
        return display.iso_time(value) or "?"
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"


def _table(report: dict[str, Any]) -> str:
    rows = [("INSTANCE", "STATUS", "NOTE")]
    for entry in report.get("vtpms") or ():
        note = printable(entry.get("reason") or "")
        if entry.get("conflict"):
            note = ("CONFLICT: attested on host %s; " % entry.get(
                "attested_on")) + note
        rows.append((str(entry.get("instance")), str(entry.get("status")),
                     note))
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    lines = ["Host %s, reported at %s by its agent (driver %s): "
             "HOST-REPORTED, NOT EVIDENCE" % (
                 report.get("host"), _when(report.get("reported_at")),
                 printable(report.get("driver") or "none, vTPMs disabled"))]
    lines += ["%-*s  %-*s  %s" % (widths[0], r[0], widths[1], r[1], r[2])
              for r in rows]
    return "\n".join(line.rstrip() for line in lines) + "\n"
