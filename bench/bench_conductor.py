"""Conductor throughput: real conductor code, real bus, real database.

Setup (not timed): a private RabbitMQ virtual host (deleted at the end), a
SQLite file database migrated to head, N simulated hosts enrolled directly
in it (host row + registration with the simulated AK's public area), a
measured-boot policy captured from the image's verified event log and a
runtime (IMA) policy pinning every file the image runs, both assigned to
the hosts' group.

The simulated agents (:mod:`bench.sim_agents`) run in their own process so
that their CPU is not charged to the conductor (the machine has 2 cores).
This process runs one :class:`ConductorManager` exactly as the service
wires it: RPC server on the conductor topic, the evidence worker thread
calling ``process_evidence``, epochs sent with the agents' fanout cast,
notifications on trust changes. Each round: start an epoch, wait until
every host's evidence has been verified, appraised, signed and stored.
Round 1 is the cold round (full event log, first IMA replay, host state
loaded from the database); the next rounds are the steady state every host
is in at a 60 s interval: event log digest only, 100 new IMA entries each.

Reported for the steady rounds (medians):

* attestations/s end to end (epoch sent -> last verdict stored), with the
  simulated agents and the broker sharing the 2 cores;
* conductor CPU per attestation (whole process), and the CPU-bound
  capacity of one conductor process = 1 / that;
* the split of the worker's CPU by phase (exclusive thread CPU time around
  each step), the bus share being the rest of the process (the RPC
  thread's receive, JSON decode and dispatch);
* the agents' and the broker's CPU per attestation, measured separately;
* hosts held at a 60 s interval = attestations/s x 60;
* a baseline measured in the same run: the irreducible crypto and hashing
  of one attestation (ECDSA P-256 verify of the quote, the PCR digest, 100
  IMA template hashes and extends, an Ed25519 signature of the verdict).

With ``--conductors K`` K conductor processes share the hash ring (each
owns its share of the hosts and sends its own epochs); their CPU adds up
and a round lasts as long as the slowest.

With ``--relays R`` the simulated agents cast their pushes to the relay
topic (as agents with ``[agent] relay_topic`` do) and R real
``trusted-pools-relay`` processes (``python -m trusted_pools.cmd.relay``,
each with its own configuration file) forward them to the conductors in
batches of up to ``--relay-batch`` pushes (``submit_evidence_batch``).
The relays' CPU is reported apart: they run on the racks' machines, not
on the conductors'. All bus hops share the one broker here, whose CPU
therefore includes the agents-to-relay messages (one per host).

Run: .venv/bin/python -m bench.bench_conductor [--hosts N] [--rounds R]
     [--conductors K] [--relays R] [--relay-batch K] [--profile]
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import hashlib
import io
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Any, Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from bench import sim_agents
from bench._bus import bench_vhost, configure_bus
from bench._timing import median_seconds, report

RABBIT = "rabbit://guest:guest@127.0.0.1:5672/"
RELAY_TOPIC = "trusted_pools_bench_relay"
SHA256 = sim_agents.SHA256


# --- phase timers ----------------------------------------------------------

class PhaseTimers:
    """Exclusive thread-CPU time per phase: time spent in a nested timed
    call is charged to the inner phase only."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._stack: list[list[float]] = []  # [start, child seconds]
        self._thread: int | None = None

    def reset(self) -> None:
        self.seconds = {}

    def wrap(self, name: str, fn: Callable) -> Callable:
        timers = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() != timers._thread:
                return fn(*args, **kwargs)
            frame = [time.thread_time(), 0.0]
            timers._stack.append(frame)
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.thread_time() - frame[0]
                timers._stack.pop()
                timers.seconds[name] = timers.seconds.get(name, 0.0) + \
                    elapsed - frame[1]
                if timers._stack:
                    timers._stack[-1][1] += elapsed
        return timed


def _install_timers(timers: PhaseTimers, manager: Any) -> None:
    from trusted_pools.verifier import appraisal
    from trusted_pools.protocol import evidence, freshness
    from trusted_pools.verifier import pipeline as verifier
    from trusted_pools.tpm import eventlog, ima, quote
    Evidence = evidence.Evidence
    from_wire = Evidence.from_wire
    Evidence.from_wire = staticmethod(timers.wrap("parse (wire -> Evidence)",
                                                  from_wire))
    Evidence.digest = timers.wrap("evidence digest", Evidence.digest)
    quote.verify_quote = timers.wrap(
        "quote: parse, ECDSA verify, PCR digest", quote.verify_quote)
    quote.verify_parsed_signature = timers.wrap(
        "quote signature (reference path only)",
        quote.verify_parsed_signature)
    freshness.check_clock = timers.wrap("nonce/clock checks",
                                        freshness.check_clock)
    freshness.EpochKeeper.expected_nonce = timers.wrap(
        "nonce/clock checks", freshness.EpochKeeper.expected_nonce)
    eventlog.parse_event_log = timers.wrap("event log replay",
                                           eventlog.parse_event_log)
    eventlog.verify_event_log = timers.wrap("event log replay",
                                            eventlog.verify_event_log)
    ima.verify_ima_log = timers.wrap("IMA replay", ima.verify_ima_log)
    appraisal.appraise = timers.wrap("appraisal", appraisal.appraise)
    appraisal.make_verdict = timers.wrap("verdict", appraisal.make_verdict)
    verifier.failed_verdict = timers.wrap("verdict", verifier.failed_verdict)
    manager.signer.sign = timers.wrap("signing (JWS EdDSA)",
                                      manager.signer.sign)
    manager.db.record_verdicts = timers.wrap("database",
                                             manager.db.record_verdicts)
    if hasattr(manager.db, "save_ima_states"):
        manager.db.save_ima_states = timers.wrap(
            "database", manager.db.save_ima_states)
    manager.db.save_ima_state = timers.wrap("database",
                                            manager.db.save_ima_state)
    manager._state = timers.wrap("host state lookup", manager._state)
    manager._publish_if_changed = timers.wrap(
        "notification", manager._publish_if_changed)


# --- setup -----------------------------------------------------------------

def _policies(image: sim_agents.Image) -> tuple[dict, dict]:
    from trusted_pools.verifier import appraisal
    from trusted_pools.tpm import eventlog, ima
    pcrs = {SHA256: image.boot_pcrs}
    log = eventlog.verify_event_log(
        eventlog.parse_event_log(image.event_log), pcrs)
    boot = appraisal.capture_measured_boot_policy(log, pcrs)
    last = image.end(image.rounds - 1)
    runtime_log = ima.verify_ima_log(b"".join(image.lines[:last]),
                                     {SHA256: image.pcr10[last]},
                                     fmt="ascii")
    runtime = appraisal.capture_runtime_policy(
        runtime_log, {SHA256: dict(image.boot_pcrs)})
    return boot, runtime


def _enroll(db: Any, hosts: int, seed: int) -> None:
    for i in range(hosts):
        key = sim_agents.ak_private_key(seed, i)
        public = sim_agents.ak_public_area(key)
        record = db.create_host(sim_agents.HOST_FORMAT % i, state="enrolled")
        db.set_registration(record.id, b"bench EK certificate %d" % i,
                            public, sim_agents.ak_name(public))


def _cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (from /proc)."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its descendants (oslo.service's
    launcher runs the service in a child process)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += _cpu(current)
        todo.extend(children.get(current, ()))
    return total


def _broker_pid() -> int | None:
    """The broker's Erlang VM: of the beam.smp processes (rabbitmqctl runs
    one for a moment too), the one that has used the most CPU."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/comm" % entry) as handle:
                    if handle.read().strip() == "beam.smp":
                        found.append((_cpu(int(entry)), int(entry)))
            except OSError:
                continue
    return max(found)[1] if found else None


def _start_relays(args: argparse.Namespace, url: str, exchange: str,
                  workdir: str) -> list[subprocess.Popen]:
    """``--relays`` trusted-pools-relay processes on one topic, each
    from a configuration file as an operator writes it."""
    relays = []
    for index in range(args.relays):
        path = os.path.join(workdir, "relay-%d.conf" % index)
        with open(path, "w") as handle:
            handle.write(
                "[DEFAULT]\ntransport_url = %s\ncontrol_exchange = %s\n"
                "use_stderr = false\nlog_file = %s\n"
                "[relay]\nhost = bench-relay-%d\ntopic = %s\n"
                "max_batch = %d\nmax_delay = %s\n"
                % (url, exchange, os.path.join(workdir, "relay-%d.log"
                                               % index),
                   index, RELAY_TOPIC, args.relay_batch, args.relay_delay))
        relays.append(subprocess.Popen(
            [sys.executable, "-W", "ignore", "-m", "trusted_pools.cmd.relay",
             "--config-file", path], stdin=subprocess.DEVNULL))
    deadline = time.monotonic() + 60
    for index, relay in enumerate(relays):
        log = os.path.join(workdir, "relay-%d.log" % index)
        while not (os.path.exists(log) and " started on topic " in
                   open(log).read()):
            if relay.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("relay %d did not start (see %s)"
                                   % (index, log))
            time.sleep(0.1)
    return relays


# --- baseline ----------------------------------------------------------------

def _baseline(image: sim_agents.Image) -> float:
    """Irreducible crypto and hashing of one steady attestation."""
    key = sim_agents.ak_private_key(0, 0)
    public = key.public_key()
    message = os.urandom(145)
    signature = key.sign(message, ec.ECDSA(hashes.SHA256()))
    pcr_values = b"".join(image.boot_pcrs[p] for p in range(24))
    templates = [os.urandom(90) for _ in range(image.per_round)]
    signer = ed25519.Ed25519PrivateKey.generate()
    claims = os.urandom(600)

    def one() -> None:
        public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        hashlib.sha256(pcr_values).digest()
        pcr = bytes(32)
        for data in templates:
            pcr = hashlib.sha256(pcr + hashlib.sha256(data).digest()
                                 ).digest()
        signer.sign(claims)

    return median_seconds(one, number=200, repeat=7)


# --- the run -----------------------------------------------------------------

class Worker(threading.Thread):
    """The service's evidence worker: ``process_evidence`` in a loop."""

    def __init__(self, manager: Any, timers: PhaseTimers) -> None:
        super().__init__(daemon=True, name="evidence-worker")
        self.manager = manager
        self.timers = timers
        self.processed = 0
        self.cpu = 0.0
        self.profile: cProfile.Profile | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        self.timers._thread = threading.get_ident()
        while not self._stop_event.is_set():
            started = time.thread_time()
            profile = self.profile
            if profile is not None:
                profile.enable()
            count = self.manager.process_evidence(wait=0.1)
            if profile is not None:
                profile.disable()
            self.cpu += time.thread_time() - started
            self.processed += count

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def _conductor(name: str, names: list[str], args: argparse.Namespace,
               url: str, exchange: str, db_url: str, workdir: str,
               control: Any) -> None:
    """One conductor process: wired as the service wires it; runs a round
    each time ``control`` says so and sends back its own accounting."""
    import warnings
    warnings.simplefilter("ignore")
    import oslo_messaging as messaging
    from trusted_pools.agent import rpcapi as agent_rpcapi
    from trusted_pools.protocol import agent_requests
    from trusted_pools.protocol import keystore
    from trusted_pools.common import rpc
    from trusted_pools.conductor import endpoints
    from trusted_pools.conductor import manager as conductor_manager
    from trusted_pools.conductor import rpcapi
    from trusted_pools.protocol.hash_ring import HashRing
    from trusted_pools.db import api as db_api

    db = db_api.Connection(db_api.make_context_manager(db_url))
    fixture = configure_bus(url, exchange, "trusted_pools_bench")
    key = keystore.load_or_create_signing_key(
        os.path.join(workdir, "signing-key-%s.pem" % name))
    manager = conductor_manager.ConductorManager(
        name, db, key, agent_rpcapi.AgentAPI(
            agent_requests.RequestSigner(key, name), timeout=30),
        rpc.get_notifier("trusted_pools.conductor.%s" % name), b"",
        # A long interval: the cold round of 10,000 hosts can outlast 60 s
        # on a loaded machine, and pushes that waited an interval would be
        # shed (load shedding is tested in test_evidence_load.py; here the
        # steady rounds must see every host).
        interval=3600, batch_size=args.batch)
    manager.register()
    manager.refresh_ring()
    owned = len(HashRing(names).hosts_of(
        name, [sim_agents.HOST_FORMAT % i for i in range(args.hosts)]))
    server = rpc.get_server(
        messaging.Target(topic=rpcapi.EVIDENCE_TOPIC, server=name),
        [endpoints.EvidenceEndpoint(manager)], bus=rpc.AGENT_BUS)
    server.start()
    timers = PhaseTimers()
    _install_timers(timers, manager)
    worker = Worker(manager, timers)
    worker.start()
    try:
        control.send(("ready", owned))
        while True:
            command = control.recv()
            if command == "stop":
                break
            if command == "profile":
                worker.profile = cProfile.Profile()
                continue
            timers.reset()
            before = (time.perf_counter(), time.process_time(), worker.cpu,
                      worker.processed)
            manager.start_epoch()
            deadline = time.monotonic() + args.round_timeout
            while worker.processed < before[3] + owned and \
                    time.monotonic() < deadline:
                time.sleep(0.005)
            after = (time.perf_counter(), time.process_time(), worker.cpu,
                     worker.processed)
            control.send({"n": after[3] - before[3],
                          "wall": after[0] - before[0],
                          "cpu": after[1] - before[1],
                          "worker": after[2] - before[2],
                          "phases": dict(timers.seconds)})
        profile_text = ""
        if worker.profile is not None:
            out = io.StringIO()
            pstats.Stats(worker.profile, stream=out).sort_stats(
                "tottime").print_stats(25)
            profile_text = out.getvalue()
        control.send(profile_text)
    finally:
        worker.stop()
        server.stop()
        server.wait()
        rpc.cleanup()
        fixture.cleanUp()
        db.dispose()


def _merge(results: list[dict]) -> dict:
    """One round over all conductors: their CPU adds up, the round lasts
    as long as the slowest."""
    phases: dict[str, float] = {}
    for r in results:
        for name, seconds in r["phases"].items():
            phases[name] = phases.get(name, 0.0) + seconds
    return {"n": sum(r["n"] for r in results),
            "wall": max(r["wall"] for r in results),
            "cpu": sum(r["cpu"] for r in results),
            "worker": sum(r["worker"] for r in results),
            "phases": phases}


def _run(args: argparse.Namespace, url: str, exchange: str, workdir: str
         ) -> None:
    import multiprocessing
    from trusted_pools.db import api as db_api
    from trusted_pools.db import migration

    image = sim_agents.Image(args.ima, args.rounds)
    print("image: %d-byte event log, %d IMA entries per round, %d hosts, "
          "%d rounds, %d conductor process(es)" % (
              len(image.event_log), args.ima, args.hosts, args.rounds,
              args.conductors))
    baseline = _baseline(image)

    db_path = os.path.join(workdir, "bench.sqlite")
    db_url = "sqlite:///%s" % db_path
    started = time.perf_counter()
    # The enrolled fleet with its policies is the same for the same
    # arguments: built once (in memory-backed storage when there is some,
    # a commit per host being most of its cost), then copied.
    cached = os.path.join(tempfile.gettempdir(), "tp-bench-fleet-%d-%d-%d-"
                          "%d.sqlite" % (args.hosts, args.seed, args.ima,
                                         args.rounds))
    if not os.path.exists(cached):
        build_dir = "/dev/shm" if os.path.isdir("/dev/shm") else workdir
        build = os.path.join(build_dir, "tp-bench-%s.sqlite"
                             % uuid.uuid4().hex[:8])
        setup = db_api.Connection(db_api.make_context_manager(
            "sqlite:///%s" % build))
        migration.upgrade(engine=setup.get_engine())
        _enroll(setup, args.hosts, args.seed)
        boot, runtime = _policies(image)
        setup.create_policy_version("bench-boot", "measured_boot", boot,
                                    "bench")
        setup.create_policy_version("bench-ima", "ima", runtime, "bench")
        setup.assign_policy("default", "bench-boot")
        setup.assign_policy("default", "bench-ima")
        setup.dispose()
        shutil.copyfile(build, cached + ".part")
        os.replace(cached + ".part", cached)
        os.unlink(build)
    shutil.copyfile(cached, db_path)
    db = db_api.Connection(db_api.make_context_manager(db_url))
    names = ["bench-conductor-%d" % i for i in range(args.conductors)]
    for name in names:  # every ring sees every conductor from the start
        db.register_conductor(name, update_existing=True)
    print("setup: %d hosts enrolled with policies in %.1f s"
          % (args.hosts, time.perf_counter() - started))

    report_path = os.path.join(workdir, "agents.txt")
    agents = subprocess.Popen(
        [sys.executable, "-W", "ignore", "-m", "bench.sim_agents", url,
         exchange, str(args.hosts), str(args.seed), str(args.ima),
         str(args.rounds), report_path,
         RELAY_TOPIC if args.relays else ""],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True)
    context = multiprocessing.get_context("spawn")
    conductors = []
    relays = _start_relays(args, url, exchange, workdir)
    try:
        if agents.stdout.readline().strip() != "ready":
            raise RuntimeError("simulated agents did not start")
        for name in names:
            parent, child = context.Pipe()
            process = context.Process(target=_conductor, args=(
                name, names, args, url, exchange, db_url, workdir, child),
                daemon=True)
            process.start()
            conductors.append((process, parent))
        owned = [parent.recv()[1] for _, parent in conductors]
        print("conductors own %s hosts" % owned)
        time.sleep(0.5)  # consumers bound
        broker = _broker_pid()
        rounds = []
        for index in range(args.rounds):
            if args.profile and index == args.rounds - 1:
                conductors[0][1].send("profile")
            before = (_cpu(agents.pid), _cpu(broker) if broker else 0.0,
                      sum(_tree_cpu(p.pid) for p in relays))
            for _, parent in conductors:
                parent.send("round")
            r = _merge([parent.recv() for _, parent in conductors])
            after = (_cpu(agents.pid), _cpu(broker) if broker else 0.0,
                     sum(_tree_cpu(p.pid) for p in relays))
            r["agents"] = after[0] - before[0]
            r["broker"] = after[1] - before[1]
            r["relays"] = after[2] - before[2]
            rounds.append(r)
            done = r["n"]
            if done < args.hosts:
                print("round %d: only %d of %d evidence in %d s"
                      % (index + 1, done, args.hosts, args.round_timeout))
            print("round %d: %d attestations in %.2f s = %.0f/s; conductor "
                  "CPU %.3f ms/att (worker %.3f), agents %.3f ms/att, "
                  "relays %.3f ms/att, broker %.3f ms/att" % (
                      index + 1, done, r["wall"], done / r["wall"],
                      1e3 * r["cpu"] / max(done, 1),
                      1e3 * r["worker"] / max(done, 1),
                      1e3 * r["agents"] / max(done, 1),
                      1e3 * r["relays"] / max(done, 1),
                      1e3 * r["broker"] / max(done, 1)))
        _summary(rounds[1:] or rounds, baseline, args)
        statuses: dict[str, int] = {}
        for verdict in db.latest_verdicts():
            label = "%s/%d" % (verdict.status, verdict.level)
            statuses[label] = statuses.get(label, 0) + 1
        print("latest verdicts: %s" % statuses)
        for _, parent in conductors:
            parent.send("stop")
        for _, parent in conductors:
            text = parent.recv()
            if text:
                print(text)
    finally:
        for process, _ in conductors:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
        agents.stdin.close()
        try:
            agents.wait(timeout=30)
        except subprocess.TimeoutExpired:
            agents.kill()
        for relay in relays:
            relay.terminate()  # oslo.service stops gracefully on SIGTERM
        for relay in relays:
            try:
                relay.wait(timeout=30)
            except subprocess.TimeoutExpired:
                relay.kill()
        db.dispose()


def _summary(rounds: list[dict], baseline: float,
             args: argparse.Namespace) -> None:
    def med(key: str) -> float:
        return statistics.median(r[key] / max(r["n"], 1) for r in rounds)

    rate = statistics.median(r["n"] / r["wall"] for r in rounds)
    cpu = med("cpu")
    worker = med("worker")
    print()
    print("steady state (median of %d rounds, %d hosts each, %d conductor "
          "process(es)):" % (len(rounds), args.hosts, args.conductors))
    report("attestations/s end to end (agents+broker share CPU)", rate,
           unit="att/s")
    report("conductor CPU per attestation", cpu, baseline,
           "crypto+hash baseline")
    report("  worker thread", worker, baseline, "crypto+hash baseline")
    phases: dict[str, list[float]] = {}
    for r in rounds:
        for name, seconds in r["phases"].items():
            phases.setdefault(name, []).append(seconds / max(r["n"], 1))
    timed = 0.0
    for name, values in sorted(phases.items(),
                               key=lambda item: -statistics.median(item[1])):
        value = statistics.median(values)
        timed += value
        report("    %s" % name, value, baseline, "crypto+hash baseline")
    report("    worker, other (batching, state, glue)", worker - timed,
           baseline, "crypto+hash baseline")
    report("  bus: RPC thread receive/decode/dispatch + rest", cpu - worker,
           baseline, "crypto+hash baseline")
    report("simulated agents CPU per attestation (own process)",
           med("agents"), baseline, "crypto+hash baseline")
    if args.relays:
        report("relay processes CPU per attestation (%d, on the racks)"
               % args.relays, med("relays"), baseline,
               "crypto+hash baseline")
    report("RabbitMQ broker CPU per attestation", med("broker"), baseline,
           "crypto+hash baseline")
    broker = med("broker")
    print()
    print("budget (issue 15): conductor + broker CPU per attestation "
          "<= 1.2 ms (100,000 hosts at 60 s on 2 cores)")
    print("  conductor %.3f ms + broker %.3f ms = %.3f ms: %s"
          % (cpu * 1e3, broker * 1e3, (cpu + broker) * 1e3,
             "within" if cpu + broker <= 1.2e-3 else "OVER"))
    print("  hosts held at 60 s on 2 cores by conductor + broker CPU: %.0f"
          % (2 * 60.0 / (cpu + broker)))
    print("  (agents' CPU, %.3f ms/att, is the hosts' own, not counted)"
          % (med("agents") * 1e3))
    if args.relays:
        print("  (relays' CPU, %.3f ms/att, runs on the racks, not "
              "counted; the broker's includes the agents-to-relay hop)"
              % (med("relays") * 1e3))
    print()
    report("CPU-bound capacity per conductor process (one core)", 1.0 / cpu,
           unit="att/s")
    report("hosts held at 60 s by one conductor process (CPU bound)",
           60.0 / cpu, unit="hosts")
    report("hosts held at 60 s as measured end to end", rate * 60,
           unit="hosts")
    report("baseline capacity, crypto+hash only, one core", 1.0 / baseline,
           unit="att/s")
    print("target: 100,000 hosts at 60 s = 1,667 att/s; measured CPU-bound "
          "%.0f att/s per conductor process = %.0f%% of target"
          % (1.0 / cpu, 100.0 / cpu / 1667))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--ima", type=int, default=100,
                        help="new IMA entries per host per round")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--relays", type=int, default=0,
                        help="trusted-pools-relay processes (0: agents "
                             "push to the conductors directly)")
    parser.add_argument("--relay-batch", type=int, default=500,
                        help="[relay] max_batch: pushes per message to a "
                             "conductor")
    parser.add_argument("--relay-delay", type=float, default=0.2,
                        help="[relay] max_delay, seconds")
    parser.add_argument("--conductors", type=int, default=1,
                        help="conductor processes sharing the hash ring")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--round-timeout", type=int, default=60)
    parser.add_argument("--profile", action="store_true",
                        help="cProfile the worker in the last round")
    args = parser.parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="tp-bench-conductor-")
    try:
        with bench_vhost(RABBIT) as url:
            _run(args, url, "tp-bench-%s" % uuid.uuid4().hex[:8], workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
