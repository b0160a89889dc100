"""``openstack trusted vtpm migration list|show``: vTPM migrations with
their step, epoch, age and outcome (issue 12)."""

from __future__ import annotations

import argparse
from typing import Any

from osc_lib import utils
from osc_lib.command import command

COLUMNS = ["ID", "Instance", "Source", "Destination", "Kind", "Step",
           "Epoch", "Age", "Outcome"]
LONG = ["Reason", "Conductor", "Created At", "Finished At"]


def _client(cmd: command.Command) -> Any:
    return cmd.app.client_manager.trusted


class ListVTPMMigration(command.Lister):
    """List vTPM migrations, newest first."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("--instance", metavar="<uuid>",
                            help="Only this instance's migrations")
        state = parser.add_mutually_exclusive_group()
        state.add_argument("--active", action="store_true",
                           help="Only migrations that have not ended")
        state.add_argument("--ended", action="store_true",
                           help="Only completed or aborted migrations")
        parser.add_argument("--limit", type=int, metavar="<n>",
                            help="At most this many (1-1000)")
        parser.add_argument("--long", action="store_true",
                            help="Also show the reason and the times")
        return parser

    def take_action(self, args: argparse.Namespace) -> tuple:
        active = True if args.active else (False if args.ended else None)
        rows = _client(self).list_vtpm_migrations(
            instance=args.instance, active=active, limit=args.limit)
        names = COLUMNS + (LONG if args.long else [])
        return names, (utils.get_dict_properties(row, names)
                       for row in rows)


class ShowVTPMMigration(command.ShowOne):
    """Show one vTPM migration."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("migration", metavar="<id>",
                            help="The migration's id")
        return parser

    def take_action(self, args: argparse.Namespace) -> tuple:
        row = _client(self).get_vtpm_migration(args.migration)
        names = sorted(row)
        return names, utils.get_dict_properties(row, names)
