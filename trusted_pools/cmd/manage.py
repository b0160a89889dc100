"""``trusted-pools-manage``: the operator's command line.

Exit status: 0 when what was asked succeeded (for ``evidence verify``: every
piece of evidence verified), 1 when evidence was rejected or an operation
failed, 2 for bad usage (argparse's own convention).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from trusted_pools.cmd import evidence

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trusted-pools-manage",
        description="Operate a trusted compute pool: verify TPM 2.0 "
                    "evidence, and (in later releases) manage hosts, "
                    "policies and the database.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    evidence.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
