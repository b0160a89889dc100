"""``openstack trusted policy ...`` and ``openstack trusted group policy
list``: versioned policies and which version each host group is held to."""

from __future__ import annotations

import argparse
from typing import Any

from osc_lib import exceptions
from osc_lib import utils
from osc_lib.command import command

from trusted_pools.osc.v1 import common


def _client(cmd: command.Command) -> Any:
    return cmd.app.client_manager.trusted


class ListPolicy(command.Lister):
    """List policies (the newest version of each)."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        common.add_paging(parser, "policies")
        return parser

    def take_action(self, args: argparse.Namespace) -> tuple:
        policies = _client(self).list_policies(limit=args.limit,
                                               marker=args.marker)
        names = ["Name", "Kind", "Version", "Created At", "Created By"]
        return names, (utils.get_dict_properties(p, names) for p in policies)


class ShowPolicy(command.ShowOne):
    """Show a policy version with its body."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("policy", metavar="<policy>", help="Policy name")
        # Not "--version": the openstack shell takes that anywhere on the
        # command line as its own.
        parser.add_argument("--policy-version", type=common.positive_int,
                            metavar="<version>",
                            help="This version (default: the newest)")
        return parser

    def take_action(self, args: argparse.Namespace) -> tuple:
        policy = _client(self).get_policy(args.policy,
                                          version=args.policy_version)
        return common.show_columns(policy, {"body": common.JsonColumn})


class CreatePolicy(command.ShowOne):
    """Create a policy, or a new version of it, from a JSON file.

    The API checks the body with the verifier's own loader: a body it
    could not appraise with is refused and nothing is stored."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="<name>", help="Policy name")
        parser.add_argument("--kind", required=True,
                            choices=common.POLICY_KINDS,
                            help="What the policy appraises")
        parser.add_argument("file", metavar="<file.json>",
                            help="The policy body as JSON ('-': standard "
                                 "input)")
        return parser

    def take_action(self, args: argparse.Namespace) -> tuple:
        body = common.read_json_file(args.file)
        if not isinstance(body, dict):
            raise exceptions.CommandError(
                "%s must hold a JSON object (the policy body), not %s"
                % (args.file, type(body).__name__))
        policy = _client(self).create_policy(args.name, args.kind, body)
        return common.show_columns(policy, {"body": common.JsonColumn})


class DiffPolicy(command.ShowOne):
    """Show what one version of a policy adds to and removes from another
    (by JSON pointer; allow lists compared as sets)."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("policy", metavar="<policy>", help="Policy name")
        parser.add_argument("--from", dest="old", required=True,
                            type=common.positive_int, metavar="<version>",
                            help="The older version")
        parser.add_argument("--to", dest="new", required=True,
                            type=common.positive_int, metavar="<version>",
                            help="The newer version")
        return parser

    def take_action(self, args: argparse.Namespace) -> tuple:
        diff = _client(self).diff_policy(args.policy, args.old, args.new)
        return common.show_columns(diff, {"added": common.JsonColumn,
                                          "removed": common.JsonColumn})


class AssignPolicy(command.ShowOne):
    """Hold a host group to a policy (a fixed version, or the newest)."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = _policy_and_group(super().get_parser(prog_name))
        parser.add_argument(
            "--policy-version", type=common.positive_int,
            metavar="<version>",
            help="Pin this version (default: follow the newest version)")
        parser.add_argument(
            "--allow-empty-group", action="store_true",
            help="Assign even though no host is in the group yet (hold a "
                 "group to a policy before its first host enrolls); "
                 "without it a group name no host has is refused as a "
                 "likely typo (API microversion 1.2)")
        return parser

    def take_action(self, args: argparse.Namespace) -> tuple:
        assignment = _client(self).assign_policy(
            args.group, args.policy, args.policy_version,
            allow_empty_group=args.allow_empty_group)
        return common.show_columns(
            assignment, {"version": common.AssignedVersionColumn})


class UnassignPolicy(command.Command):
    """Release a host group from a policy (API microversion 1.2)."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = _policy_and_group(super().get_parser(prog_name))
        common.add_json_format(parser)
        return parser

    def take_action(self, args: argparse.Namespace) -> None:
        _client(self).unassign_policy(args.group, args.policy)
        common.done_json(args, self.app.stdout,
                         {"group": args.group, "policy": args.policy,
                          "unassigned": True})


def _policy_and_group(parser: argparse.ArgumentParser
                      ) -> argparse.ArgumentParser:
    parser.add_argument("policy", metavar="<policy>", help="Policy name")
    parser.add_argument("--group", required=True, metavar="<group>",
                        help="Host group")
    return parser


class ListGroup(command.Lister):
    """List host groups: how many hosts each has and the policies it is
    held to (API microversion 1.2)."""

    def take_action(self, args: argparse.Namespace) -> tuple:
        groups = _client(self).list_groups()
        names = ["Name", "Hosts", "Policies"]
        return names, ((g["name"], g["hosts"], _policies_text(g))
                       for g in groups)


def _policies_text(group: dict[str, Any]) -> str:
    return ", ".join(
        "%s (%s)" % (a["policy"], "latest" if a["version"] is None
                     else "v%d" % a["version"])
        for a in group.get("assignments") or []) or "-"


class ListGroupPolicy(command.Lister):
    """List the policies a host group is held to."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("group", metavar="<group>", help="Host group")
        return parser

    def take_action(self, args: argparse.Namespace) -> tuple:
        assignments = _client(self).list_assignments(args.group)
        names = ["Group", "Policy", "Version"]
        formats = {"Version": common.AssignedVersionColumn}
        return names, (utils.get_dict_properties(a, names, formatters=formats)
                       for a in assignments)
