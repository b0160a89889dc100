"""What the bus costs per attestation, by way of carrying evidence.

The conductor benchmark puts the bus at about half of the conductor's CPU
per attestation (oslo.messaging receiving, decoding and dispatching one
cast per host) plus the broker's own CPU. This benchmark weighs the ways
issue 15 names, on the real RabbitMQ, with the same steady-state evidence
payload (a simulated host's push: quote, signature, 24 PCRs, event log
digest, 100 binary IMA entries):

* ``cast``: one ``submit_evidence`` cast per host to the conductor's RPC
  server (what the service does today);
* ``notify+batch``: one notification per host, consumed by
  oslo.messaging's batch notification listener (``batch_size`` 500,
  ``batch_timeout`` 0.1 s): one dispatch per batch;
* ``relay cast xK``: one cast carrying K hosts' evidence (a rack or cell
  relay forwarding its agents' pushes).

For each: the receiving process's CPU per host's evidence (sender in its
own process, not counted), and the broker's (beam.smp, from /proc). The
receiver does nothing with the evidence but count it, so this is the bus
alone. Ratios against ``cast`` in the same run.

Run: ``.venv/bin/python -m bench.bench_bus [--hosts N] [--relay K]``
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import threading
import time
import uuid
from typing import Any

from bench._bus import bench_vhost, configure_bus
from bench.bench_conductor import RABBIT, _broker_pid, _cpu

TOPIC = "tp-bench-bus"


def _payload() -> dict[str, Any]:
    """One steady-state push of a simulated host, as it goes on the bus."""
    from bench import sim_agents
    image = sim_agents.Image(100, 2)
    sent = []
    fleet = sim_agents.Fleet(1, 1, image, lambda c, n, wire: sent.append(
        wire))
    for _ in range(2):  # the second round is the steady one
        fleet.start_epoch({}, "c", "e", "AAAA", ["sha256"], ["c"])
    return sent[-1]


def _sender(url: str, exchange: str, mode: str, hosts: int, relay: int,
            go: Any) -> None:
    import warnings
    warnings.simplefilter("ignore")
    import oslo_messaging as messaging
    from oslo_config import cfg
    fixture = configure_bus(url, exchange, "trusted_pools_bench_bus_tx")
    transport = messaging.get_rpc_transport(cfg.CONF, url=url)
    wire = _payload()
    go.recv()
    if mode == "notify+batch":
        notifier = messaging.Notifier(
            messaging.get_notification_transport(cfg.CONF, url=url),
            publisher_id="bench", driver="messagingv2", topics=[TOPIC])
        for i in range(hosts):
            notifier.info({}, "evidence", dict(wire, host="h%d" % i))
    else:
        client = messaging.get_rpc_client(
            transport, messaging.Target(topic=TOPIC, server="rx"))
        if mode == "cast":
            for i in range(hosts):
                client.cast({}, "submit_evidence",
                            evidence=dict(wire, host="h%d" % i))
        else:
            for start in range(0, hosts, relay):
                client.cast({}, "submit_batch", batch=[
                    dict(wire, host="h%d" % i)
                    for i in range(start, min(hosts, start + relay))])
    go.send("sent")
    go.recv()
    transport.cleanup()
    fixture.cleanUp()


class _Counter:
    def __init__(self, hosts: int) -> None:
        self.count = 0
        self.hosts = hosts
        self.done = threading.Event()
        self.lock = threading.Lock()

    def add(self, n: int) -> None:
        with self.lock:
            self.count += n
            if self.count >= self.hosts:
                self.done.set()


def _receiver(url: str, exchange: str, mode: str, hosts: int,
              control: Any) -> None:
    import warnings
    warnings.simplefilter("ignore")
    import oslo_messaging as messaging
    from oslo_config import cfg
    fixture = configure_bus(url, exchange, "trusted_pools_bench_bus_rx")
    counter = _Counter(hosts)

    class Endpoint:
        target = messaging.Target(version="1.0")

        @messaging.expose
        def submit_evidence(self, context: dict, evidence: Any) -> None:
            counter.add(1)

        @messaging.expose
        def submit_batch(self, context: dict, batch: list) -> None:
            counter.add(len(batch))

    class BatchEndpoint:
        def info(self, messages: list) -> None:
            counter.add(len(messages))

    if mode == "notify+batch":
        server = messaging.get_batch_notification_listener(
            messaging.get_notification_transport(cfg.CONF, url=url),
            [messaging.Target(topic=TOPIC)], [BatchEndpoint()],
            executor="threading", batch_size=500, batch_timeout=0.1)
    else:
        server = messaging.get_rpc_server(
            messaging.get_rpc_transport(cfg.CONF, url=url),
            messaging.Target(topic=TOPIC, server="rx"), [Endpoint()],
            executor="threading",
            access_policy=messaging.ExplicitRPCAccessPolicy)
    server.start()
    control.send("ready")
    control.recv()
    before = time.process_time()
    started = time.perf_counter()
    control.send("go")
    counter.done.wait(timeout=300)
    control.send({"cpu": time.process_time() - before,
                  "wall": time.perf_counter() - started,
                  "n": counter.count})
    server.stop()
    server.wait()
    fixture.cleanUp()


def measure(url: str, mode: str, hosts: int, relay: int) -> dict:
    context = multiprocessing.get_context("spawn")
    exchange = "tp-bench-bus-%s" % uuid.uuid4().hex[:8]
    rx_parent, rx_child = context.Pipe()
    tx_parent, tx_child = context.Pipe()
    receiver = context.Process(target=_receiver, args=(
        url, exchange, mode, hosts, rx_child), daemon=True)
    sender = context.Process(target=_sender, args=(
        url, exchange, mode, hosts, relay, tx_child), daemon=True)
    receiver.start()
    assert rx_parent.recv() == "ready"
    sender.start()
    time.sleep(1.0)  # sender connected and payload built
    broker = _broker_pid()
    broker_before = _cpu(broker) if broker else 0.0
    rx_parent.send("start")
    assert rx_parent.recv() == "go"
    tx_parent.send("go")
    result = rx_parent.recv()
    tx_parent.recv()
    result["broker"] = (_cpu(broker) if broker else 0.0) - broker_before
    tx_parent.send("stop")
    for process in (sender, receiver):
        process.join(timeout=30)
        if process.is_alive():
            process.kill()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=3000)
    parser.add_argument("--relay", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)
    modes = ["cast", "notify+batch", "relay cast x%d" % args.relay]
    print("payload: one steady-state push, %d bytes of JSON"
          % len(__import__("json").dumps(_payload())))
    with bench_vhost(os.environ.get("TP_BENCH_RABBIT", RABBIT)) as url:
        results: dict[str, list[dict]] = {m: [] for m in modes}
        for _ in range(args.repeat):
            for mode in modes:  # interleaved: load hits all alike
                results[mode].append(measure(url, mode, args.hosts,
                                             args.relay))
    base = None
    for mode in modes:
        runs = results[mode]
        ok = all(r["n"] >= args.hosts for r in runs)
        rx = min(r["cpu"] / r["n"] for r in runs if r["n"])
        broker = min(r["broker"] / r["n"] for r in runs if r["n"])
        base = base or (rx, broker)
        print("%-16s receiver %7.1f us/host (%.2fx cast)  broker %7.1f "
              "us/host (%.2fx cast)%s" % (
                  mode, rx * 1e6, rx / base[0], broker * 1e6,
                  broker / base[1] if base[1] else 0.0,
                  "" if ok else "  INCOMPLETE"))


if __name__ == "__main__":
    main()
