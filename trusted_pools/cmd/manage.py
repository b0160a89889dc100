"""``trusted-pools-manage``: the operator's command line.

Exit status: 0 when what was asked succeeded (for ``evidence verify``: every
piece of evidence verified), 1 when evidence was rejected or an operation
failed, 2 for bad usage (argparse's own convention).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from oslo_config import cfg

from trusted_pools import cmd
from trusted_pools.cmd import conductor_key
from trusted_pools.cmd import db
from trusted_pools.cmd import ek
from trusted_pools.cmd import evidence
from trusted_pools.cmd import instance_policy
from trusted_pools.cmd import rabbitmq
from trusted_pools.cmd import vtpm_migration
from trusted_pools.cmd import vtpm_report
from trusted_pools.conf import CONF

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trusted-pools-manage",
        description="What runs without trusted-pools-api: create the "
                    "database, verify TPM 2.0 evidence from files, hash an "
                    "EK certificate, show or make the conductor's signing "
                    "key, set up the RabbitMQ users per role, show a host's "
                    "last vTPM report, list vTPM migrations, keep instance "
                    "policies (golden guest measurements). "
                    "Hosts, policies and verdicts: 'openstack trusted "
                    "...' (the API checks who asks).")
    cmd.add_config_arguments(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    conductor_key.add_commands(commands)
    db.add_commands(commands)
    ek.add_commands(commands)
    evidence.add_commands(commands)
    instance_policy.add_commands(commands)
    rabbitmq.add_commands(commands)
    vtpm_report.add_commands(commands)
    vtpm_migration.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        load_config(args)
    except cfg.Error as error:
        parser.exit(EXIT_USAGE, "trusted-pools-manage: configuration "
                    "error: %s\n" % error)
    return args.func(args)


def load_config(args: argparse.Namespace) -> cfg.ConfigOpts:
    """Load oslo.config files named on the command line (or the defaults)."""
    cli = []
    for path in args.config_file or ():
        cli += ["--config-file", path]
    if args.config_dir:
        cli += ["--config-dir", args.config_dir]
    CONF(cli, project="trusted-pools", prog="trusted-pools-manage",
         validate_default_values=True)
    return CONF


if __name__ == "__main__":
    sys.exit(main())
