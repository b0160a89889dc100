"""``trusted-pools-agent``: the attester on each compute host."""

from __future__ import annotations

import sys

from trusted_pools import exception
from trusted_pools.common import config
from trusted_pools.common import rpc
from trusted_pools.common import service as service_mod


def main(argv: list[str] | None = None) -> int:
    conf = config.parse_args(sys.argv[1:] if argv is None else argv,
                             "trusted-pools-agent")
    rpc.init(conf)
    from trusted_pools.agent.service import AgentService
    try:
        try:
            service = AgentService(conf)
        except exception.ConfigInvalid as error:
            # Fail closed, and say why: typically no conductor key pinned.
            print("trusted-pools-agent: %s" % error, file=sys.stderr)
            return 1
        return service_mod.launch(conf, service)
    finally:
        rpc.cleanup()


if __name__ == "__main__":
    sys.exit(main())
