"""``openstack trusted verdict list`` and ``openstack trusted key list``."""

from __future__ import annotations

import argparse
from typing import Any

from osc_lib import utils
from osc_lib.command import command

from trusted_pools.osc.v1 import common


def _client(cmd: command.Command) -> Any:
    return cmd.app.client_manager.trusted


class ListVerdict(command.Lister):
    """List the newest verdict of each host."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument(
            "--since", type=common.iso_time, metavar="<time>",
            help="Only verdicts issued after this ISO 8601 time (UTC "
                 "unless it names an offset)")
        parser.add_argument("--long", action="store_true",
                            help="Also show reasons and evidence digest")
        return parser

    def take_action(self, args: argparse.Namespace) -> tuple:
        verdicts = _client(self).list_verdicts(since=args.since)
        names = ["Host", "Status", "Level", "Issued At", "Expires At"]
        if args.long:
            names += ["Reasons", "Evidence Digest"]
        formats = {"Reasons": common.LinesColumn}
        return names, (utils.get_dict_properties(v, names, formatters=formats)
                       for v in verdicts)


class ListKey(command.Lister):
    """List the conductors' public signing keys (the JWKS consumers pin)."""

    def take_action(self, args: argparse.Namespace) -> tuple:
        keys = _client(self).list_keys()
        names = ["Kid", "Kty", "Crv", "X"]
        return names, (utils.get_dict_properties(k, names) for k in keys)
