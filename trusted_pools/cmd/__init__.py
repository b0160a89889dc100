"""Console scripts.

The services run on oslo.service's threading backend. It is preferred
here, before any command imports oslo.messaging: oslo.messaging's server
module imports ``oslo_service.service``, which fixes the backend (eventlet
unless told otherwise) the moment it is imported. Preferring (a default
hook) rather than loading it keeps commands that run no service quick; a
service's ``launch()`` insists on the threading backend.
"""

import argparse
import warnings

from trusted_pools.common import backend as _backend

# futurist imports eventlet when it is installed (Nova's packages bring it)
# and eventlet warns on import that it is deprecated. These commands never
# use eventlet: the warning would only stand before their output.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

_backend.prefer_threading_backend()


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
