"""What runs inside Nova's processes and next to them.

* :mod:`.scheduler`: inside nova-scheduler: the verdict consumer (cache,
  listener, pinned or fetched keys), the ``TrustedHostFilter`` and the
  flavor/image extra specs it reads;
* :mod:`.remediation`: the ``trusted-pools-placement-sync`` service: the
  trait keeper (Placement traits of trusted hosts) and the distrust
  actions (disable the compute service, live-migrate trust-requiring
  instances).

Every call this side makes to an OpenStack API (the API's JWKS, Placement,
the compute API) goes through :mod:`trusted_pools.common.keystone`.

This side reads signed verdicts; it never verifies evidence (it imports
nothing of :mod:`trusted_pools.verifier`) and never takes a key from the
bus.
"""
