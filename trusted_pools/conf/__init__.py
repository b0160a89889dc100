"""Configuration options of trusted_pools, one module per option group."""

from oslo_config import cfg

from trusted_pools.conf import agent
from trusted_pools.conf import api
from trusted_pools.conf import attestation
from trusted_pools.conf import conductor
from trusted_pools.conf import database
from trusted_pools.conf import key_service
from trusted_pools.conf import placement
from trusted_pools.conf import relay
from trusted_pools.conf import tpm
from trusted_pools.conf import rpc_pins
from trusted_pools.conf import vtpm
from trusted_pools.conf import vtpm_migration

CONF = cfg.CONF

agent.register_opts(CONF)
api.register_opts(CONF)
attestation.register_opts(CONF)
conductor.register_opts(CONF)
database.register_opts(CONF)
key_service.register_opts(CONF)
placement.register_opts(CONF)
relay.register_opts(CONF)
tpm.register_opts(CONF)
rpc_pins.register_opts(CONF)
vtpm.register_opts(CONF)
vtpm_migration.register_opts(CONF)
