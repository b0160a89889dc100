"""``openstack trusted host ...``: list, show, enroll, attest, capture,
reset-enrollment, delete, a host's verdict history and its operations.

Enroll, attest and capture run on the owning conductor in the background
(API microversion 1.1): the commands wait for the operation and print its
result, as before; ``--no-wait`` prints the pending operation at once
(follow it with ``openstack trusted host operation show``)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from osc_lib import exceptions
from osc_lib import utils
from osc_lib.command import command

from trusted_pools.osc.v1 import common

LOG = logging.getLogger(__name__)

HOST_STATUSES = ("trusted", "untrusted", "unknown")

_DETAIL_FORMATS = {"reasons": common.LinesColumn,
                   "vector": common.JsonColumn,
                   "policy_versions": common.JsonColumn}
_VERDICT_FORMATS = {"reasons": common.LinesColumn}


_OPERATION_FORMATS = {"result": common.JsonColumn,
                      "error": common.JsonColumn,
                      "links": common.JsonColumn}


def _client(cmd: command.Command) -> Any:
    return cmd.app.client_manager.trusted


def _add_wait(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-wait", dest="wait", action="store_false",
        help="Do not wait for the conductor to finish: print the pending "
             "operation (follow it with 'openstack trusted host operation "
             "show <host> <id>')")
    parser.add_argument(
        "--wait-timeout", type=common.positive_int, metavar="<seconds>",
        default=300,
        help="Seconds to wait for the operation before giving up (it "
             "goes on; default: 300)")


def _operation_columns(operation: dict[str, Any]) -> tuple:
    return common.show_columns(operation, _OPERATION_FORMATS)


class ListHost(command.Lister):
    """List hosts with the status of their newest verdict."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("--group", metavar="<group>",
                            help="Only hosts of this host group")
        parser.add_argument("--state", metavar="<state>",
                            help="Only hosts in this enrollment state")
        parser.add_argument("--status", choices=HOST_STATUSES,
                            help="Only hosts whose newest verdict has "
                                 "this status")
        parser.add_argument("--long", action="store_true",
                            help="Also show UUID and issue time")
        common.add_paging(parser, "hosts")
        return parser

    def take_action(self, args: argparse.Namespace) -> tuple:
        hosts = _client(self).list_hosts(
            group=args.group, state=args.state, status=args.status,
            limit=args.limit, marker=args.marker)
        if args.long:
            names = ["Name", "UUID", "Group", "State", "Status", "Level",
                     "Issued At", "Expires At", "Conductor"]
        else:
            names = ["Name", "Group", "State", "Status", "Level",
                     "Expires At", "Conductor"]
        return names, (utils.get_dict_properties(h, names) for h in hosts)


class ShowHost(command.ShowOne):
    """Show a host: its newest verdict, reasons, vector and enrollment."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("host", metavar="<host>", help="Host name")
        return parser

    def take_action(self, args: argparse.Namespace) -> tuple:
        host = _client(self).get_host(args.host)
        return common.show_columns(host, _DETAIL_FORMATS)


class EnrollHost(command.ShowOne):
    """Enroll a host through the conductor that owns it."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("host", metavar="<host>", help="Host name")
        parser.add_argument("--group", metavar="<group>",
                            help="Host group (the API's default: default)")
        parser.add_argument(
            "--ek-sha256", metavar="<hex>",
            help="SHA-256 of the host's TPM endorsement key, approved "
                 "out of band (64 hex digits)")
        _add_wait(parser)
        return parser

    def take_action(self, args: argparse.Namespace) -> tuple:
        host = _client(self).enroll_host(args.host, group=args.group,
                                         ek_sha256=args.ek_sha256,
                                         wait=args.wait,
                                         timeout=args.wait_timeout)
        if not args.wait and "kind" in host:
            return _operation_columns(host)
        return common.show_columns(host)


class AttestHost(command.ShowOne):
    """Challenge a host now and show the verdict."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("host", metavar="<host>", help="Host name")
        _add_wait(parser)
        return parser

    def take_action(self, args: argparse.Namespace) -> tuple:
        verdict = _client(self).attest_host(args.host, wait=args.wait,
                                            timeout=args.wait_timeout)
        if not args.wait and "kind" in verdict:
            return _operation_columns(verdict)
        return common.show_columns(verdict, _VERDICT_FORMATS)


class CapturePolicy(command.Command):
    """Capture policy bodies from a host's current evidence (JSON).

    Review what a host measured before you trust it: the bodies admit
    exactly what this host booted and ran."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("host", metavar="<host>", help="Host name")
        parser.add_argument(
            "--kind", choices=common.POLICY_KINDS,
            help="Only this kind's body (a file 'policy create --kind' "
                 "takes); default: every kind, keyed by kind")
        parser.add_argument("--output", metavar="<file>",
                            help="Write the JSON to this file instead of "
                                 "standard output")
        # Its answer is JSON already: -f json is taken and changes nothing.
        common.add_json_format(parser)
        _add_wait(parser)
        return parser

    def take_action(self, args: argparse.Namespace) -> None:
        policies = _client(self).capture_policies(
            args.host, wait=args.wait, timeout=args.wait_timeout)
        if not args.wait and "kind" in policies:
            # The pending operation (its result comes with 'operation
            # show' once it is done).
            common.write_json(policies, args.output, self.app.stdout)
            return
        if args.kind is not None:
            if args.kind not in policies:
                raise exceptions.CommandError(
                    "Host %s gave no %s policy (it gave: %s)"
                    % (args.host, args.kind,
                       ", ".join(sorted(policies)) or "none"))
            policies = policies[args.kind]
        common.write_json(policies, args.output, self.app.stdout)


class SetHost(command.ShowOne):
    """Change a host's properties: its group (API microversion 1.2).

    Conductors appraise it with the new group's policies from its next
    evidence on."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("host", metavar="<host>", help="Host name")
        parser.add_argument("--group", required=True, metavar="<group>",
                            help="Move the host to this host group")
        return parser

    def take_action(self, args: argparse.Namespace) -> tuple:
        return common.show_columns(
            _client(self).update_host(args.host, args.group), {})


class ResetEnrollment(command.Command):
    """Forget a host's TPM keys; it must enroll again before any verdict."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("host", metavar="<host>", help="Host name")
        common.add_json_format(parser)
        return parser

    def take_action(self, args: argparse.Namespace) -> None:
        _client(self).reset_enrollment(args.host)
        common.done_json(args, self.app.stdout,
                         {"host": args.host, "enrollment_reset": True})


class DeleteHost(command.Command):
    """Decommission hosts (their verdict history is kept)."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("hosts", metavar="<host>", nargs="+",
                            help="Host name(s)")
        common.add_json_format(parser)
        return parser

    def take_action(self, args: argparse.Namespace) -> None:
        failures = []
        for name in args.hosts:
            try:
                _client(self).delete_host(name)
            except exceptions.CommandError as error:
                LOG.error("Failed to delete host %s: %s", name, error)
                failures.append(name)
        common.done_json(args, self.app.stdout, {
            "deleted": [n for n in args.hosts if n not in failures],
            "failed": failures})
        if failures:
            raise exceptions.CommandError(
                "%d of %d hosts failed to delete: %s" % (
                    len(failures), len(args.hosts), ", ".join(failures)))


class ListHostVerdict(command.Lister):
    """List a host's verdicts, newest first."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("host", metavar="<host>", help="Host name")
        parser.add_argument("--limit", type=common.positive_int,
                            metavar="<count>",
                            help="Show at most this many verdicts")
        parser.add_argument("--long", action="store_true",
                            help="Also show the evidence digest")
        return parser

    def take_action(self, args: argparse.Namespace) -> tuple:
        verdicts = _client(self).list_host_verdicts(args.host,
                                                    limit=args.limit)
        names = ["Issued At", "Status", "Level", "Expires At", "Reasons"]
        if args.long:
            names.append("Evidence Digest")
        formats = {"Reasons": common.LinesColumn}
        return names, (utils.get_dict_properties(v, names, formatters=formats)
                       for v in verdicts)


class ShowHostOperation(command.ShowOne):
    """Show an enroll, attest or capture operation of a host: its state
    (pending, done, failed) and its result or error."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("host", metavar="<host>", help="Host name")
        parser.add_argument("operation", metavar="<operation>",
                            help="Operation id")
        return parser

    def take_action(self, args: argparse.Namespace) -> tuple:
        return _operation_columns(_client(self).get_operation(
            args.host, args.operation))


class ListHostOperation(command.Lister):
    """List a host's operations, newest first."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("host", metavar="<host>", help="Host name")
        parser.add_argument("--limit", type=common.positive_int,
                            metavar="<count>",
                            help="Show at most this many operations")
        return parser

    def take_action(self, args: argparse.Namespace) -> tuple:
        operations = _client(self).list_operations(args.host,
                                                   limit=args.limit)
        names = ["ID", "Kind", "State", "Created At", "Updated At",
                 "Request ID"]
        return names, (utils.get_dict_properties(o, names)
                       for o in operations)


class ListHostVTPM(command.Lister):
    """List the vTPMs a host last reported (API microversion 1.3).

    The host's agent reports them: this is what the host says, not
    evidence. An entry naming an instance whose deep attestation was made
    on another host is flagged in the Conflict column. ``--refresh`` asks
    the host for a new report first (admin by default)."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("host", metavar="<host>", help="Host name")
        parser.add_argument("--refresh", action="store_true",
                            help="Ask the host's agent for a new report "
                                 "and wait for it")
        parser.add_argument("--timeout", type=common.positive_int,
                            default=300, metavar="<seconds>",
                            help="With --refresh: how long to wait "
                                 "(default 300)")
        return parser

    def take_action(self, args: argparse.Namespace) -> tuple:
        report = _client(self).list_vtpms(args.host, refresh=args.refresh,
                                          timeout=args.timeout)
        LOG.warning("vTPMs of host %s as its agent reported them (%s): "
                    "not evidence", report.get("host"),
                    report.get("source"))
        names = ["Instance", "Status", "Reason", "Attested On", "Conflict",
                 "Source"]
        # Host-written: no control character reaches the terminal.
        rows = [{key: common.printable(value) if isinstance(value, str) else value
                 for key, value in dict(entry,
                                        source=report.get("source")).items()}
                for entry in report.get("vtpms") or ()]
        return names, (utils.get_dict_properties(row, names)
                       for row in rows)
