"""Entry point for oslo-config-generator (``oslo.config.opts``)."""

from __future__ import annotations

from oslo_config import cfg

from trusted_pools.conf import agent
from trusted_pools.conf import api
from trusted_pools.conf import attestation
from trusted_pools.conf import conductor
from trusted_pools.conf import database
from trusted_pools.conf import key_service
from trusted_pools.conf import placement
from trusted_pools.conf import relay
from trusted_pools.conf import scheduler
from trusted_pools.conf import tpm
from trusted_pools.conf import rpc_pins
from trusted_pools.conf import vtpm
from trusted_pools.conf import vtpm_migration

_MODULES = (agent, api, attestation, conductor, database, key_service,
            placement, relay, scheduler, tpm, rpc_pins, vtpm, vtpm_migration)


def list_opts() -> list[tuple[cfg.OptGroup, list[cfg.Opt]]]:
    """Every option group with its options, for the sample generator."""
    listed = []
    for module in _MODULES:
        if hasattr(module, "list_opts"):  # modules with several groups
            listed.extend(module.list_opts())
        else:
            listed.append((module.group, list(module.opts)))
    return listed


def update_defaults() -> None:
    """Entry point ``oslo.config.opts.defaults``: the library defaults the
    services set at run time, so that the sample shows what a service
    really uses (oslo.messaging's ``control_exchange``, oslo.db's
    ``connection``) instead of the libraries' own."""
    import oslo_messaging as messaging
    from oslo_db import options as db_options

    from trusted_pools.protocol import topics

    messaging.set_transport_defaults(topics.CONTROL_EXCHANGE)
    cfg.set_defaults(db_options.database_opts,
                     connection=database.DEFAULT_CONNECTION)
