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
from trusted_pools.conf import scheduler
from trusted_pools.conf import tpm
from trusted_pools.conf import rpc_pins
from trusted_pools.conf import vtpm
from trusted_pools.conf import vtpm_migration

_MODULES = (agent, api, attestation, conductor, database, key_service,
            placement, scheduler, tpm, rpc_pins, vtpm, vtpm_migration)


def list_opts() -> list[tuple[cfg.OptGroup, list[cfg.Opt]]]:
    """Every option group with its options, for the sample generator."""
    listed = []
    for module in _MODULES:
        if hasattr(module, "list_opts"):  # modules with several groups
            listed.extend(module.list_opts())
        else:
            listed.append((module.group, list(module.opts)))
    return listed
