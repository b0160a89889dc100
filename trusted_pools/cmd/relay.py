"""``trusted-pools-relay``: batches a rack's or cell's evidence pushes."""

from __future__ import annotations

import sys

from trusted_pools.common import config
from trusted_pools.common import rpc
from trusted_pools.common import service as service_mod


def main(argv: list[str] | None = None) -> int:
    conf = config.parse_args(sys.argv[1:] if argv is None else argv,
                             "trusted-pools-relay")
    rpc.init(conf)
    from trusted_pools.relay.service import RelayService
    try:
        return service_mod.launch(conf, RelayService(conf))
    finally:
        rpc.cleanup()


if __name__ == "__main__":
    sys.exit(main())
