"""``openstack trusted key-release list``: the key service's answers
(vTPM secrets released to hosts or refused to them), newest first
(API microversion 1.4)."""

from __future__ import annotations

import argparse
from typing import Any

from osc_lib import utils
from osc_lib.command import command

from trusted_pools.osc.v1 import common

COLUMNS = ["ID", "Created At", "Host", "Outcome", "Status", "Level",
           "Reason Code", "Owner"]
LONG = ["Secret ID", "Project ID", "Min Level", "Reason", "Conductor",
        "Requested By", "Request ID"]


def _client(cmd: command.Command) -> Any:
    return cmd.app.client_manager.trusted


class ListKeyRelease(command.Lister):
    """List vTPM key releases and refusals, newest first."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("--host", metavar="<host>",
                            help="Only answers to this host name")
        outcome = parser.add_mutually_exclusive_group()
        outcome.add_argument("--released", action="store_true",
                             help="Only keys released")
        outcome.add_argument("--refused", action="store_true",
                             help="Only keys refused")
        parser.add_argument("--secret", metavar="<secret-id>",
                            help="Only answers about this secret")
        parser.add_argument("--limit", type=common.positive_int,
                            default=100, metavar="<n>",
                            help="At most this many (default 100; larger "
                                 "values follow the API's pages)")
        parser.add_argument("--marker", metavar="<id>",
                            help="Start after the record with this ID")
        parser.add_argument("--long", action="store_true",
                            help="Also show the secret, the reason text "
                                 "and who asked")
        return parser

    def take_action(self, args: argparse.Namespace) -> tuple:
        outcome = "released" if args.released else (
            "refused" if args.refused else None)
        rows = _client(self).list_key_releases(
            host=args.host, outcome=outcome, secret_id=args.secret,
            limit=args.limit, marker=args.marker)
        names = COLUMNS + (LONG if args.long else [])
        # The host name and the reason may carry what a host wrote.
        shown = [{k: common.printable(v) if isinstance(v, str) else v
                  for k, v in row.items()} for row in rows]
        return names, (utils.get_dict_properties(row, names)
                       for row in shown)
