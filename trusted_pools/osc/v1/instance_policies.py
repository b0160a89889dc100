"""``openstack trusted instance policy ...``: golden guest measurements
for deep attestation (API microversion 1.5): versioned instance policies
and which image or instance each is assigned to."""

from __future__ import annotations

import argparse
from typing import Any

from osc_lib import exceptions
from osc_lib import utils
from osc_lib.command import command

from trusted_pools.osc.v1 import common


def _client(cmd: command.Command) -> Any:
    return cmd.app.client_manager.trusted


def _show(policy: dict[str, Any]) -> tuple:
    return common.show_columns(policy, {"pcrs": common.JsonColumn,
                                        "captured_from": common.JsonColumn})


def _version_option(parser: argparse.ArgumentParser, help_: str) -> None:
    # Not "--version": the openstack shell takes that as its own.
    parser.add_argument("--policy-version", type=common.positive_int,
                        metavar="<version>", help=help_)


def _target_options(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--image", metavar="<uuid>",
                        help="The image (its instances, unless an "
                             "instance has its own assignment)")
    target.add_argument("--instance", metavar="<uuid>",
                        help="One instance (wins over its image's)")


def _target(args: argparse.Namespace) -> tuple[str, str]:
    return ("image", args.image) if args.image is not None \
        else ("instance", args.instance)


class ListInstancePolicy(command.Lister):
    """List instance policies (the newest version of each)."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        common.add_paging(parser, "instance policies")
        return parser

    def take_action(self, args: argparse.Namespace) -> tuple:
        rows = _client(self).list_instance_policies(limit=args.limit,
                                                    marker=args.marker)
        names = ["Name", "Version", "Level", "Created At", "Created By"]
        return names, (utils.get_dict_properties(p, names) for p in rows)


class ShowInstancePolicy(command.ShowOne):
    """Show an instance policy version with its PCR values."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("policy", metavar="<policy>",
                            help="Instance policy name")
        _version_option(parser, "This version (default: the newest)")
        return parser

    def take_action(self, args: argparse.Namespace) -> tuple:
        return _show(_client(self).get_instance_policy(
            args.policy, version=args.policy_version))


class CreateInstancePolicy(command.ShowOne):
    """Create an instance policy, or its next version, from a JSON file
    of PCR values (bank -> PCR -> hex value or list of values)."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="<name>",
                            help="Instance policy name")
        parser.add_argument("file", metavar="<pcrs.json>",
                            help="The PCR values as JSON ('-': standard "
                                 "input)")
        parser.add_argument("--level", type=int, choices=(2, 3),
                            help="What a match stands for (default 3)")
        return parser

    def take_action(self, args: argparse.Namespace) -> tuple:
        pcrs = common.read_json_file(args.file)
        if not isinstance(pcrs, dict):
            raise exceptions.CommandError(
                "%s must hold a JSON object (bank -> PCR -> values), not %s"
                % (args.file, type(pcrs).__name__))
        return _show(_client(self).create_instance_policy(
            args.name, pcrs, args.level))


class DeleteInstancePolicy(command.Command):
    """Delete an instance policy (or one version) nothing is held to."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("policy", metavar="<policy>",
                            help="Instance policy name")
        _version_option(parser, "Only this version (default: all)")
        common.add_json_format(parser)
        return parser

    def take_action(self, args: argparse.Namespace) -> None:
        _client(self).delete_instance_policy(args.policy,
                                             args.policy_version)
        common.done_json(args, self.app.stdout,
                         {"policy": args.policy,
                          "version": args.policy_version, "deleted": True})


class CaptureInstancePolicy(command.ShowOne):
    """Create an instance policy version from the PCR values an
    instance's latest deep attestation verified (refused unless that
    verdict still reads as trusted)."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="<name>",
                            help="Instance policy name")
        parser.add_argument("--instance", required=True, metavar="<uuid>",
                            help="The known-good instance")
        parser.add_argument("--pcr", type=int, action="append",
                            metavar="<index>", help="Pin this PCR (repeat; "
                            "default: every PCR the quote covered)")
        parser.add_argument("--bank", action="append", metavar="<bank>",
                            help="Pin this bank (repeat; default: all)")
        parser.add_argument("--level", type=int, choices=(2, 3),
                            help="What a match stands for (default 3)")
        return parser

    def take_action(self, args: argparse.Namespace) -> tuple:
        return _show(_client(self).capture_instance_policy(
            args.instance, args.name, args.level, args.pcr, args.bank))


class AssignInstancePolicy(command.ShowOne):
    """Hold an image or an instance to an instance policy."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("policy", metavar="<policy>",
                            help="Instance policy name")
        _target_options(parser)
        _version_option(parser, "Pin this version (default: follow the "
                                "newest)")
        return parser

    def take_action(self, args: argparse.Namespace) -> tuple:
        kind, target = _target(args)
        return common.show_columns(_client(self).assign_instance_policy(
            kind, target, args.policy, args.policy_version))


class UnassignInstancePolicy(command.Command):
    """Release an image or an instance from its instance policy."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        _target_options(parser)
        common.add_json_format(parser)
        return parser

    def take_action(self, args: argparse.Namespace) -> None:
        kind, target = _target(args)
        _client(self).unassign_instance_policy(kind, target)
        common.done_json(args, self.app.stdout,
                         {"kind": kind, "target": target,
                          "unassigned": True})


class ListInstancePolicyAssignment(command.Lister):
    """List which images and instances are held to which instance
    policy."""

    def take_action(self, args: argparse.Namespace) -> tuple:
        rows = _client(self).list_instance_policy_assignments()
        names = ["Kind", "Target", "Policy", "Version", "Assigned At"]
        return names, (utils.get_dict_properties(a, names) for a in rows)
