"""``trusted-pools-placement-sync``: trait keeper and response to distrust."""

from __future__ import annotations

import sys

from trusted_pools.common import config
from trusted_pools.common import service as service_mod
from trusted_pools.conf import CONF
from trusted_pools.conf import placement as placement_conf
from trusted_pools.nova.scheduler import opts as scheduler_conf


def main(argv: list[str] | None = None) -> int:
    from trusted_pools.nova.remediation import service as placement_service

    if placement_conf.group.name not in CONF:
        placement_conf.register_opts(CONF)
    if scheduler_conf.group.name not in CONF:
        scheduler_conf.register_opts(CONF)
    conf = config.parse_args(sys.argv[1:] if argv is None else argv,
                             placement_service.PUBLISHER_ID)
    return service_mod.launch(
        conf, placement_service.PlacementSyncService(conf))


if __name__ == "__main__":
    sys.exit(main())
