"""Configuration options of trusted_pools, one module per option group."""

from oslo_config import cfg

from trusted_pools.conf import attestation
from trusted_pools.conf import tpm

CONF = cfg.CONF

attestation.register_opts(CONF)
tpm.register_opts(CONF)
