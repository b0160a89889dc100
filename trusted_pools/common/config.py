"""Loading configuration and logging for a service or command."""

from __future__ import annotations

from typing import Sequence

from oslo_config import cfg
from oslo_log import log

from trusted_pools.common import rpc
from trusted_pools.conf import CONF
from trusted_pools.conf import database as database_conf

_LOGGING_REGISTERED = False


def parse_args(argv: Sequence[str], prog: str,
               default_config_files: Sequence[str] | None = None
               ) -> cfg.ConfigOpts:
    """Parse ``--config-file``/``--config-dir`` and set up oslo.log."""
    global _LOGGING_REGISTERED
    if not _LOGGING_REGISTERED:
        log.register_options(CONF)
        _LOGGING_REGISTERED = True
    database_conf.register_opts(CONF)
    rpc.set_defaults()
    CONF(list(argv), project="trusted-pools", prog=prog,
         default_config_files=default_config_files,
         validate_default_values=True)
    log.setup(CONF, "trusted-pools")
    return CONF
