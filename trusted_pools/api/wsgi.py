"""Building the application for a WSGI server (uwsgi, mod_wsgi, the
console script).

uwsgi and mod_wsgi load :mod:`trusted_pools.wsgi.api`, whose module-level
``application`` comes from :func:`init_application`; the configuration
file is ``/etc/trusted-pools/trusted-pools.conf`` unless the environment
variable ``TRUSTED_POOLS_CONFIG_FILE`` names others (comma-separated).
"""

from __future__ import annotations

import os
from typing import Sequence

from trusted_pools.api import app
from trusted_pools.common import config
from trusted_pools.common import rpc

CONFIG_FILES_ENV = "TRUSTED_POOLS_CONFIG_FILE"


def _config_files() -> list[str] | None:
    names = os.environ.get(CONFIG_FILES_ENV)
    if not names:
        return None
    return [name for name in names.split(",") if name]


def init_application(argv: Sequence[str] = ()) -> app.WSGIApp:
    """Parse the configuration, connect to the bus, build the pipeline."""
    conf = config.parse_args(list(argv), "trusted-pools-api",
                             default_config_files=_config_files())
    rpc.init(conf)
    return app.build(conf)
