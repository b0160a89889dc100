"""Trait keeper against a real Placement (openstack-placement, SQLite,
noauth2, wsgiref on 127.0.0.1 in a child process).

* per verdict: a signed notification through the scheduler's endpoint and
  verdict cache to the provider's traits written (verify + GET traits +
  PUT traits), alternating trusted / untrusted so every verdict writes;
* full resync of 1,000 providers: cold (every provider needs its traits
  written) and warm (everything already right: only list calls);
* baseline, in the same run: one bare GET of one provider's traits.

Run: ``.venv/bin/python -m bench.bench_placement``
"""

from __future__ import annotations

import logging
import time

from bench._timing import median_seconds, report

PROVIDERS = 1000


def main() -> None:
    logging.disable(logging.WARNING)
    from tests.nova_harness import VerdictFactory
    from tests.placement_fixture import PlacementServer
    from trusted_pools.nova.remediation import traits as sync
    from trusted_pools.nova.remediation.placement import PlacementClient
    from trusted_pools.nova.scheduler.listener import TrustNotificationEndpoint

    with PlacementServer() as server:
        client = PlacementClient.for_endpoint(server.endpoint)
        started = time.perf_counter()
        hosts = ["bench-%04d" % i for i in range(PROVIDERS)]
        providers = [client.create_provider(h) for h in hosts]
        print("created %d providers in %.1f s" % (
            PROVIDERS, time.perf_counter() - started))
        rp = providers[0].uuid

        baseline = median_seconds(lambda: client.get_traits(rp), number=20,
                                  repeat=5)
        report("GET one provider's traits (baseline)", baseline)

        factory = VerdictFactory()
        now = int(time.time())
        cache = sync.ObservedVerdictCache(factory.public_keys)
        cache.mark_contact()
        keeper = sync.TraitKeeper(cache, client)
        cache.add_observer(lambda v: keeper.sync_host(v.host))
        endpoint = TrustNotificationEndpoint(cache)
        client.ensure_traits(sync.MANAGED_TRAITS)
        payloads = iter([factory.payload(
            hosts[0], status="trusted" if i % 2 == 0 else "untrusted",
            level=4, issued_at=now - 200 + i, validity=3600)
            for i in range(60)])

        def one_verdict() -> None:
            if not endpoint.handle(next(payloads)):
                raise RuntimeError("verdict refused")

        per_verdict = median_seconds(one_verdict, number=10, repeat=5)
        report("verdict -> traits written (verify+GET+PUT)", per_verdict,
               baseline, "bare GET")

        cache2 = sync.ObservedVerdictCache(factory.public_keys)
        cache2.mark_contact()
        for i, host in enumerate(hosts):
            cache2.admit(factory.token(host, level=1 + i % 4,
                                       issued_at=now, validity=3600))
        keeper2 = sync.TraitKeeper(cache2, client)
        cold = keeper2.resync()
        if cold.changed < PROVIDERS - 1 or cold.failed:
            raise RuntimeError("cold resync wrote %d, failed %d"
                               % (cold.changed, len(cold.failed)))
        report("resync %d providers, cold (%d written)" % (
            PROVIDERS, cold.changed), cold.seconds, baseline, "bare GET")
        warm_times = []
        for _ in range(3):
            warm = sync.TraitKeeper(cache2, client).resync()
            if warm.changed:
                raise RuntimeError("warm resync changed %d" % warm.changed)
            warm_times.append(warm.seconds)
        warm_times.sort()
        report("resync %d providers, warm (nothing to write)" % PROVIDERS,
               warm_times[1], baseline, "bare GET")
        print("per provider: cold %.2f ms, warm %.3f ms" % (
            cold.seconds / PROVIDERS * 1e3,
            warm_times[1] / PROVIDERS * 1e3))


if __name__ == "__main__":
    main()
