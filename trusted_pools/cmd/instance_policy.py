"""``trusted-pools-manage instance-policy ...``: golden guest
measurements for deep attestation, straight in the database (like the
``db`` commands: whoever runs this holds the database credentials, so no
API role is checked; ``openstack``/the REST API at microversion 1.5 is the
way for everyone else).

* ``list`` / ``show NAME [--version N]`` / ``assignments``
* ``create NAME --pcrs FILE|- [--level 2|3]``: ``pcrs`` as JSON, bank ->
  PCR -> hex value or list of values (checked by the verifier's loader:
  nothing invalid is stored)
* ``capture NAME --instance UUID [--pcr N ...] [--bank B ...]
  [--level 2|3]``: a new version from the PCR values the instance's latest
  deep attestation *verified*, only while that verdict reads as trusted
* ``assign NAME (--image UUID | --instance UUID) [--version N]`` /
  ``unassign (--image UUID | --instance UUID)``
* ``delete NAME [--version N]`` (refused while anything is held to it)

Every command takes ``--format json`` (default: a table). Exit status 0
on success, 1 when the request was refused (the reason on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, TextIO

from trusted_pools import exception
from trusted_pools.conf import CONF
from trusted_pools.conf import database as database_conf
from trusted_pools.protocol.display import printable

if TYPE_CHECKING:
    from trusted_pools.db import api

EXIT_OK = 0
EXIT_FAILED = 1

database_conf.register_opts(CONF)


def add_commands(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser(
        "instance-policy", help="golden guest measurements (instance "
        "policies) for deep attestation")
    sub = group.add_subparsers(dest="instance_policy_command",
                               metavar="ACTION")
    sub.required = True

    def action(name: str, help_: str, func: Callable[..., Any]
               ) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, help=help_, description=help_)
        parser.add_argument("--format", choices=("table", "json"),
                            default="table",
                            help="output format (default: table)")
        parser.set_defaults(func=lambda args: run(args, func))
        return parser

    action("list", "the newest version of each instance policy", _list)
    show = action("show", "one version of an instance policy", _show)
    show.add_argument("name")
    show.add_argument("--version", type=int, metavar="N")
    action("assignments", "which images and instances are held to which "
           "instance policy", _assignments)
    create = action("create", "create an instance policy (or its next "
                    "version) from a JSON file of PCR values", _create)
    create.add_argument("name")
    create.add_argument("--pcrs", required=True, metavar="FILE",
                        help="JSON: bank -> PCR -> hex value(s); - reads "
                             "standard input")
    create.add_argument("--level", type=int, choices=(2, 3), default=3)
    capture = action("capture", "a new version from the PCR values an "
                     "instance's latest deep attestation verified", _capture)
    capture.add_argument("name")
    capture.add_argument("--instance", required=True, metavar="UUID")
    capture.add_argument("--pcr", type=int, action="append", metavar="N",
                         help="pin this PCR (repeat; default: all quoted)")
    capture.add_argument("--bank", action="append", metavar="BANK",
                         help="pin this bank (repeat; default: all)")
    capture.add_argument("--level", type=int, choices=(2, 3), default=3)
    for name, func in (("assign", _assign), ("unassign", _unassign)):
        parser = action(name, "%s an image's or an instance's instance "
                        "policy (an instance's wins over its image's)"
                        % name, func)
        if name == "assign":
            parser.add_argument("name")
            parser.add_argument("--version", type=int, metavar="N",
                                help="pin a version (default: follow the "
                                     "latest)")
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--image", metavar="UUID")
        target.add_argument("--instance", metavar="UUID")
    delete = action("delete", "delete an instance policy (or one version) "
                    "that nothing is held to", _delete)
    delete.add_argument("name")
    delete.add_argument("--version", type=int, metavar="N")


def run(args: argparse.Namespace, func: Callable[..., Any],
        db: "api.Connection | None" = None, out: TextIO | None = None,
        err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        if db is None:
            # Imported here: the other commands need no SQLAlchemy.
            from trusted_pools.db import api
            db = api.Connection(api.make_context_manager())
        shown = func(args, db)
    except (exception.TrustedPoolsError, OSError, ValueError) as error:
        err.write("trusted-pools-manage: %s\n" % error)
        return EXIT_FAILED
    if args.format == "json":
        out.write(json.dumps(shown, indent=2, sort_keys=True) + "\n")
    else:
        out.write(_table(shown))
    return EXIT_OK


def _uuid(value: str, what: str) -> str:
    from trusted_pools.verifier import deep
    try:
        return deep.instance_id(value)
    except exception.InvalidParameterValue:
        raise exception.InvalidParameterValue(
            name=what, reason="%r is not a UUID" % (value,)) from None


def _policy(record: Any, with_pcrs: bool = True) -> dict[str, Any]:
    shown = {"name": record.name, "version": record.version,
             "level": record.level,
             "created_at": record.created_at.isoformat(),
             "created_by": record.created_by}
    if with_pcrs:
        shown["pcrs"] = record.pcrs
    return shown


def _assignment(record: Any) -> dict[str, Any]:
    return {"kind": record.kind, "target": record.target,
            "policy": record.policy_name, "version": record.policy_version,
            "assigned_at": record.assigned_at.isoformat()}


def _list(args: argparse.Namespace, db: "api.Connection") -> Any:
    newest: dict[str, Any] = {}
    for record in db.list_instance_policies():
        newest[record.name] = record
    return [_policy(r, False) for r in newest.values()]


def _show(args: argparse.Namespace, db: "api.Connection") -> Any:
    return _policy(db.get_instance_policy(args.name, args.version))


def _assignments(args: argparse.Namespace, db: "api.Connection") -> Any:
    return [_assignment(a) for a in db.list_instance_policy_assignments()]


def _create(args: argparse.Namespace, db: "api.Connection") -> Any:
    from trusted_pools.verifier import deep
    if args.pcrs == "-":
        text = sys.stdin.read()
    else:
        with open(args.pcrs, encoding="utf-8") as handle:
            text = handle.read()
    try:
        pcrs = json.loads(text)
    except ValueError as error:
        raise exception.InvalidParameterValue(
            name="pcrs", reason="not JSON: %s" % error) from None
    body = deep.InstancePolicy.from_body(args.name, 1, args.level,
                                         pcrs).body()
    return _policy(db.create_instance_policy_version(
        args.name, args.level, body, created_by="trusted-pools-manage"))


def _capture(args: argparse.Namespace, db: "api.Connection") -> Any:
    from trusted_pools.verifier import deep
    from trusted_pools.verifier import instance_standing
    instance = _uuid(args.instance, "instance")
    standing = instance_standing.capturable(
        db.instance_verdict(instance), instance, time.time())
    policy = deep.capture_policy(args.name, 1, args.level,
                                 standing.verdict.pcrs, args.pcr, args.bank)
    record = db.create_instance_policy_version(
        args.name, args.level, policy.body(),
        created_by="trusted-pools-manage")
    return dict(_policy(record), captured_from={
        "instance": instance, "host": standing.hostname,
        "verdict_issued_at": standing.verdict.issued_at.isoformat()})


def _target(args: argparse.Namespace) -> tuple[str, str]:
    if args.image is not None:
        return "image", _uuid(args.image, "image")
    return "instance", _uuid(args.instance, "instance")


def _assign(args: argparse.Namespace, db: "api.Connection") -> Any:
    kind, target = _target(args)
    return _assignment(db.assign_instance_policy(kind, target, args.name,
                                                 args.version))


def _unassign(args: argparse.Namespace, db: "api.Connection") -> Any:
    kind, target = _target(args)
    db.unassign_instance_policy(kind, target)
    return {"kind": kind, "target": target, "unassigned": True}


def _delete(args: argparse.Namespace, db: "api.Connection") -> Any:
    return {"name": args.name, "version": args.version,
            "deleted_versions": db.delete_instance_policy(args.name,
                                                          args.version)}


def _table(shown: Any) -> str:
    rows = shown if isinstance(shown, list) else [shown]
    if not rows:
        return "(none)\n"
    lines = []
    for row in rows:
        for key, value in sorted(row.items()):
            text = value if isinstance(value, str) else json.dumps(
                value, sort_keys=True)
            lines.append("%-18s %s" % (key, printable(str(text))))
        lines.append("")
    return "\n".join(lines)
