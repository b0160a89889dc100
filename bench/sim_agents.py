"""Simulated agents for the conductor benchmark (bench side only).

One process plays a whole fleet of hosts. It listens once on the agents'
topic for the conductor's fanout ``start_epoch`` cast and answers it, for
every simulated host the sender owns on the hash ring, exactly as the real
agent does (:class:`trusted_pools.agent.manager.AgentManager`): a quote
over ``host_nonce(epoch value, host)``, signed by the host's software AK
as a real TPMS_ATTEST / TPMT_SIGNATURE pair (ECDSA P-256, the same
cryptographic cost as a TPM's AK for the verifier), the event log the first
time and only its digest afterwards, and the IMA entries the conductor has
not been sent yet; then one ``submit_evidence`` cast to that conductor.

Every host booted the same image (the real GCE Ubuntu 21.04 event log) and
runs the same programs: each round appends ``ima_per_round`` new ima-ng
SHA-256 entries that are extended into the simulated PCR 10, so the quoted
PCRs, and therefore the quote's PCR digest, are the same for all hosts of a
round and are computed once; what differs per host (nonce, clock, key,
signature) is made per host. The TPM clock of each host moves forward with
real time, as the conductor's replay check requires.

AK keys are derived from ``(seed, host index)``, so the benchmark's
enrolment (another process) and this fleet agree on them without passing
private keys around.

Run standalone: ``python -m bench.sim_agents URL EXCHANGE HOSTS``.
"""

from __future__ import annotations

import base64
import hashlib
import pathlib
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import oslo_messaging as messaging
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature)

from tests import ima_gen
from tests import soft_tpm
from trusted_pools.protocol import freshness
from trusted_pools.protocol.hash_ring import HashRing
from trusted_pools.tpm import constants, eventlog, ima
from trusted_pools.tpm.structures import (PCRSelection,
                                          marshal_pcr_selection_list,
                                          marshal_tpm2b)

SHA256 = int(constants.TPM_ALG.SHA256)
EVENT_LOG = (pathlib.Path(__file__).resolve().parents[1] / "tests" / "data"
             / "eventlog" / "go-attestation"
             / "ubuntu_2104_shielded_vm_no_secure_boot_eventlog")
ALL_PCRS = tuple(range(24))
HOST_FORMAT = "sim-%06d"
_ORDER_P256 = int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2"
                  "FC632551", 16)


def ak_private_key(seed: int, index: int) -> ec.EllipticCurvePrivateKey:
    """The AK of simulated host ``index``: derived, so both processes of
    the benchmark compute the same key."""
    scalar = int.from_bytes(hashlib.sha256(
        b"bench ak %d %d" % (seed, index)).digest(), "big")
    return ec.derive_private_key(scalar % (_ORDER_P256 - 1) + 1,
                                 ec.SECP256R1())


def ak_public_area(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The AK's TPMT_PUBLIC (restricted ECDSA P-256 signing key)."""
    return soft_tpm.ecc_public(key.public_key())


def ak_name(public_area: bytes) -> bytes:
    return struct.pack(">H", SHA256) + hashlib.sha256(public_area).digest()


class Image:
    """What every simulated host booted and runs: one event log, and an IMA
    list that grows by ``ima_per_round`` entries each round."""

    def __init__(self, ima_per_round: int, rounds: int, seed: int = 11
                 ) -> None:
        self.event_log = EVENT_LOG.read_bytes()
        self.event_log_b64 = base64.b64encode(self.event_log).decode()
        self.event_log_digest = hashlib.sha256(self.event_log).hexdigest()
        replayed = eventlog.replay_event_log(
            eventlog.parse_event_log(self.event_log))[SHA256]
        self.boot_pcrs = {p: replayed.get(p, bytes(32)) for p in ALL_PCRS}
        aggregate = ima.compute_boot_aggregate(self.boot_pcrs, SHA256)
        first = ima_gen.ascii_line(10, "ima-ng", [
            b"sha256:\0" + aggregate, b"boot_aggregate\0"])
        files = ima_gen.generate_ascii_log(
            1 + ima_per_round * rounds, seed=seed).splitlines(
                keepends=True)[1:]
        # Round r ends after entry ends[r] (round 0 holds boot_aggregate).
        self.lines = [first] + files
        self.per_round = ima_per_round
        self.rounds = rounds
        self.pcr10 = [bytes(32)]
        for line in self.lines:
            _, _, template, text = line.rstrip(b"\n").split(b" ", 3)
            data = ima_gen.template_data(
                template.decode(), ima_gen.fields_from_text(
                    template.decode(), text))
            self.pcr10.append(hashlib.sha256(
                self.pcr10[-1] + hashlib.sha256(data).digest()).digest())
        self._tails: dict[tuple[int, int], str] = {}

    def end(self, round_index: int) -> int:
        """Entries in the IMA list during round ``round_index``."""
        return 1 + self.per_round * (min(round_index, self.rounds - 1) + 1)

    def tail_b64(self, start: int, end: int) -> str:
        key = (start, end)
        if key not in self._tails:
            # Agents send the binary list (names may hold any byte).
            self._tails[key] = base64.b64encode(ima_gen.ascii_to_binary(
                b"".join(self.lines[start:end]))).decode()
        return self._tails[key]

    def pcrs(self, round_index: int) -> dict[int, bytes]:
        values = dict(self.boot_pcrs)
        values[10] = self.pcr10[self.end(round_index)]
        return values


@dataclass
class SimHost:
    name: str
    key: ec.EllipticCurvePrivateKey
    clock_base: int
    sent: dict[str, tuple[int, str | None]] = field(default_factory=dict)
    last_clock: int = 0


def _attest(nonce: bytes, selection_bytes: bytes, digest: bytes,
            clock: int) -> bytes:
    """A TPMS_ATTEST of a quote (the TPM's layout, a fixed signer name)."""
    return (struct.pack(">IH", constants.TPM_GENERATED_VALUE,
                        constants.TPM_ST.ATTEST_QUOTE)
            + marshal_tpm2b(b"\x00\x0b" + b"\x11" * 32)
            + marshal_tpm2b(nonce)
            + struct.pack(">QIIB", clock, 0, 0, 1)
            + struct.pack(">Q", 0x2019102300163636)
            + selection_bytes + marshal_tpm2b(digest))


def _signature(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    return (struct.pack(">HH", constants.TPM_ALG.ECDSA, SHA256)
            + marshal_tpm2b(r.to_bytes(32, "big"))
            + marshal_tpm2b(s.to_bytes(32, "big")))


class Fleet:
    """The simulated hosts and the agents' ``start_epoch`` endpoint."""

    def __init__(self, hosts: int, seed: int, image: Image,
                 send: Any) -> None:
        now = int(time.time() * 1000)
        self.hosts = [SimHost(HOST_FORMAT % i, ak_private_key(seed, i), now)
                      for i in range(hosts)]
        self.image = image
        self._send = send
        self._round = -1
        self._lock = threading.Lock()
        self._rings: dict[tuple[str, ...], HashRing] = {}
        self._selection = marshal_pcr_selection_list(
            [PCRSelection(SHA256, frozenset(ALL_PCRS))])
        self.sent = 0
        self.cpu_seconds = 0.0

    def _ring(self, members: list[str]) -> HashRing:
        key = tuple(sorted(members))
        if key not in self._rings:
            self._rings[key] = HashRing(key)
        return self._rings[key]

    @messaging.expose
    def start_epoch(self, context: dict, conductor: str, epoch_id: str,
                    epoch_value: str, banks: list[str],
                    members: list[str], spread: float = 0.0,
                    auth: str | None = None) -> None:
        """Every owned host quotes and pushes, as the real agent does (at
        once: the benchmark measures throughput, not the spread). The
        fanout's ``auth`` token is not checked here: one check per message
        is negligible beside a fleet's quotes, and the bench pins no key."""
        with self._lock:
            started = time.thread_time()
            self._round += 1
            self._answer(context, conductor, epoch_id,
                         base64.b64decode(epoch_value), members)
            self.cpu_seconds += time.thread_time() - started

    def _answer(self, context: dict, conductor: str, epoch_id: str,
                value: bytes, members: list[str]) -> None:
        image = self.image
        ring = self._ring(members)
        values = image.pcrs(self._round)
        digest = hashlib.sha256(b"".join(values[p] for p in ALL_PCRS)
                                ).digest()
        wire_pcrs = {"sha256": {str(p): v.hex() for p, v in values.items()}}
        end = image.end(self._round)
        for host in self.hosts:
            if ring.owner(host.name) != conductor:
                continue
            nonce = freshness.host_nonce(value, host.name)
            clock = max(int(time.time() * 1000) - host.clock_base + 1000,
                        host.last_clock + 1)
            host.last_clock = clock
            attest = _attest(nonce, self._selection, digest, clock)
            ima_next, sent_digest = host.sent.get(conductor, (0, None))
            full_log = sent_digest != image.event_log_digest
            wire = {
                "version": 2, "host": host.name, "epoch_id": epoch_id,
                "quote": base64.b64encode(attest).decode(),
                "signature": base64.b64encode(
                    _signature(host.key, attest)).decode(),
                "pcrs": wire_pcrs,
                "event_log": image.event_log_b64 if full_log else None,
                "event_log_digest": image.event_log_digest,
                "ima": {"start": ima_next, "format": "binary",
                        "data": image.tail_b64(ima_next, end)},
            }
            host.sent[conductor] = (end, image.event_log_digest)
            self._send(context, conductor, wire)
            self.sent += 1


class HostEndpoint:
    """One simulated host's answer to a conductor's direct challenge
    (``get_evidence``, a call to the agent topic with ``server`` = the
    host): the whole event log and the IMA entries from ``ima_start``,
    quoted over the challenge's nonce, as the real agent answers. The
    request's ``auth`` token is not checked (the fleet pins no key)."""

    def __init__(self, fleet: "Fleet", host: SimHost) -> None:
        self.fleet = fleet
        self.host = host

    @messaging.expose
    def get_evidence(self, context: dict, nonce: str, banks: list[str],
                     ima_start: int, event_log: bool,
                     conductor: str | None = None,
                     auth: str | None = None) -> dict:
        fleet, host = self.fleet, self.host
        with fleet._lock:
            image, round_index = fleet.image, max(fleet._round, 0)
            values = image.pcrs(round_index)
            digest = hashlib.sha256(
                b"".join(values[p] for p in ALL_PCRS)).digest()
            clock = max(int(time.time() * 1000) - host.clock_base + 1000,
                        host.last_clock + 1)
            host.last_clock = clock
            attest = _attest(base64.b64decode(nonce), fleet._selection,
                             digest, clock)
            end = image.end(round_index)
            if conductor is not None:
                host.sent[conductor] = (end, image.event_log_digest)
        return {
            "version": 2, "host": host.name,
            "quote": base64.b64encode(attest).decode(),
            "signature": base64.b64encode(
                _signature(host.key, attest)).decode(),
            "pcrs": {"sha256": {str(p): v.hex() for p, v in values.items()}},
            "event_log": image.event_log_b64,
            "event_log_digest": image.event_log_digest,
            "ima": {"start": ima_start, "format": "binary",
                    "data": image.tail_b64(ima_start, end)}}


def run(url: str, exchange: str, hosts: int, seed: int, ima_per_round: int,
        rounds: int, report_path: str, relay_topic: str = "") -> None:
    """Serve the fleet on the bus until stdin closes; on exit write the
    fleet's CPU seconds and message count to ``report_path``. With
    ``relay_topic`` each push is cast there (the relay's client, as an
    agent with ``[agent] relay_topic``), else to the conductor."""
    from trusted_pools.agent import rpcapi as agent_rpcapi
    from trusted_pools.common import rpc
    from trusted_pools.conductor import rpcapi as conductor_rpcapi

    from bench._bus import configure_bus
    fixture = configure_bus(url, exchange, "trusted_pools_bench_agents")
    from trusted_pools.relay import rpcapi as relay_rpcapi
    send = (relay_rpcapi.RelayAPI(relay_topic).submit_evidence
            if relay_topic else conductor_rpcapi.EvidenceAPI().submit_evidence)
    image = Image(ima_per_round, rounds)
    fleet = Fleet(hosts, seed, image, send)
    # Serves the agents' API at the version conductors send.
    fleet.target = messaging.Target(version=agent_rpcapi.RPC_API_VERSION)
    server = rpc.get_server(
        messaging.Target(topic=agent_rpcapi.TOPIC, server="sim-fleet"),
        [fleet])
    server.start()
    print("ready", flush=True)
    try:
        sys.stdin.read()
    finally:
        server.stop()
        server.wait()
        with open(report_path, "w") as handle:
            handle.write("%f %d\n" % (fleet.cpu_seconds, fleet.sent))
        rpc.cleanup()
        fixture.cleanUp()


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
        int(sys.argv[5]), int(sys.argv[6]), sys.argv[7],
        sys.argv[8] if len(sys.argv) > 8 else "")
