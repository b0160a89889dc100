"""How long idle RPC servers take to stop, on the real RabbitMQ.

A conductor has three RPC servers; the demo's pool had four agents and a
conductor, and took 2.6-6.5 s to stop. Two things wait there: an idle
oslo.messaging rabbit listener notices its stop only between two waits
on its connection (each up to ``[oslo_messaging_rabbit]
heartbeat_timeout_threshold / heartbeat_rate / 2`` s, at most 5 s: its
back-off grows to that while the server is idle), and a server's
``wait()`` joins futurist workers that look for work once a second.

For each ``heartbeat_rate`` (3, oslo.messaging's default; 60, the demo's)
and each way of stopping (one server after another, as the conductor
did; side by side with ``trusted_pools.common.service.stop_side_by_side``,
as it does now), three servers on one transport are started, called
once each, left idle long enough for the back-off to grow, then
stopped; the median stop time over the repeats, and its ratio against
the baseline (rate 3, one after another) measured in the same run.

Run: ``.venv/bin/python -m bench.bench_stop [--idle S] [--repeat N]``
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from typing import Any

import oslo_messaging as messaging
from oslo_config import cfg

from bench._bus import bench_vhost
from bench.bench_conductor import RABBIT

SERVERS = 3


class _Pinged:
    """An endpoint called once, then left idle (as a service's server
    between requests: a worker thread of its executor exists)."""

    target = messaging.Target(version="1.0")

    @messaging.expose
    def ping(self, context: dict) -> str:
        return "pong"


def _stop_once(url: str, rate: int, side_by_side: bool, idle: float
               ) -> float:
    from trusted_pools.common import service

    conf = cfg.CONF
    transport = messaging.get_rpc_transport(conf, url=url)
    conf.set_override("heartbeat_rate", rate, group="oslo_messaging_rabbit")
    servers: list[Any] = []
    try:
        for index in range(SERVERS):
            target = messaging.Target(topic="tp-bench-stop-%d" % index,
                                      server="bench")
            server = messaging.get_rpc_server(
                transport, target, [_Pinged()], executor="threading",
                access_policy=messaging.ExplicitRPCAccessPolicy)
            server.start()
            servers.append(server)
            messaging.get_rpc_client(transport, target, timeout=30).call(
                {}, "ping")
        time.sleep(idle)
        started = time.monotonic()
        stops = [service.stop_rpc_server(s) for s in servers]
        if side_by_side:
            service.stop_side_by_side(*stops)
        else:
            for stop in stops:
                stop()
        return time.monotonic() - started
    finally:
        transport.cleanup()
        conf.clear_override("heartbeat_rate", group="oslo_messaging_rabbit")


def main(argv: list[str] | None = None) -> None:
    # py-amqp warns of a broker frame that arrives while a channel closes
    # (harmless, once per closed listener): not this benchmark's subject.
    logging.getLogger("amqp").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--idle", type=float, default=6.0,
                        help="seconds the servers stay idle before the "
                             "stop (the listener's back-off grows)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    cases = [(3, False), (3, True), (60, False), (60, True)]
    # The global configuration, as the services use it (oslo.messaging's
    # client reads options only its own fixture registers elsewhere).
    from oslo_messaging import conffixture
    cfg.CONF([], project="trusted-pools-bench", default_config_files=[])
    fixture = conffixture.ConfFixture(cfg.CONF)
    fixture.setUp()
    try:
        with bench_vhost(RABBIT) as url:
            times: dict[tuple[int, bool], list[float]] = {
                c: [] for c in cases}
            # Interleaved: load on a shared machine falls on all cases.
            for _ in range(args.repeat):
                for rate, side in cases:
                    times[(rate, side)].append(
                        _stop_once(url, rate, side, args.idle))
    finally:
        fixture.cleanUp()
    baseline = statistics.median(times[(3, False)])
    for rate, side in cases:
        median = statistics.median(times[(rate, side)])
        print("%d idle servers, heartbeat_rate %-2d, %-18s median %.2f s "
              "(max %.2f s)  ratio vs rate 3 one after another %.2f"
              % (SERVERS, rate, "side by side," if side else
                 "one after another,", median, max(times[(rate, side)]),
                 median / baseline))


if __name__ == "__main__":
    main()
