"""[trusted_pools_scheduler]: the trust filter inside nova-scheduler.

Defined in :mod:`trusted_pools.nova.scheduler.opts` (see there why) and
re-exported here like every other option group.
"""

from trusted_pools.nova.scheduler.opts import group, list_opts, opts, \
    register_opts

__all__ = ["group", "list_opts", "opts", "register_opts"]
