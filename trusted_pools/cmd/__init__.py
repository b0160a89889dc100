"""Console scripts.

The services run on oslo.service's threading backend. It is chosen here,
before any command imports oslo.messaging: oslo.messaging's server module
imports ``oslo_service.service``, which fixes the backend (eventlet by
default) the moment it is imported.
"""

import argparse

from trusted_pools import exception as _exception
from trusted_pools.common import service as _service

try:
    _service.select_threading_backend()
except _exception.ConfigInvalid:
    # Imported into a process that already chose another backend (a tool
    # or a test importing a command module): nothing needs the backend
    # until a service launches, and launch() refuses then, saying why.
    pass


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config-file`` / ``--config-dir`` of the command-line tools that
    read trusted-pools.conf without oslo.config's own parser."""
    parser.add_argument(
        "--config-file", action="append", metavar="PATH",
        help="configuration file (repeatable); default: the oslo.config "
             "search path for project 'trusted-pools', e.g. "
             "/etc/trusted-pools/trusted-pools.conf")
    parser.add_argument(
        "--config-dir", metavar="DIR",
        help="directory of *.conf files read after --config-file")
