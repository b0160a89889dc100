"""Nova vTPM key release: attested, wrapped release against a plain fetch.

Run: ``.venv/bin/python -m bench.bench_keyrelease`` (about a minute).

A real pool: two swtpm hosts booted from a real event log, their agents,
one conductor on the real RabbitMQ (a virtual host of its own), SQLite;
the hosts enrolled (their binding keys certified), golden measurements
captured and attested. Then, in the same run:

* release over RabbitMQ: trusted-pools-api's call ``release_secret`` to the
  conductor (verdict, freshness and level check, KEK decryption, RSA-OAEP
  wrapping to the host's binding key) and its reply;
* baseline: a plain fetch of the same secret over the same broker (an RPC
  server of this benchmark reading the row and decrypting it: no check,
  no wrapping);
* the same two in process (the key service without the bus);
* the TPM unwrap on the compute host, separately: TPM2_RSA_Decrypt on an
  open ESAPI connection, and as the castellan backend does it (a new TPM
  connection per call).
"""

from __future__ import annotations

import base64
import pathlib
import shutil
import tempfile
import uuid

import oslo_messaging as messaging
from oslo_config import cfg

from bench._bus import bench_vhost, configure_bus
from bench._timing import median_seconds, report
from tests import swtpm_pool as sp
from tests.pool_harness import TrustedPool
from tests.rabbitmq import RABBIT_URL
from trusted_pools.common import rpc
from trusted_pools.conductor import rpcapi
from trusted_pools.keymanager import backend
from trusted_pools.protocol import key_release as release
from trusted_pools.tpm import device as tpm_device

CONDUCTOR = "bench-conductor"
PLAIN_TOPIC = "tp_bench_plain_fetch"


class PlainFetch:
    """Baseline endpoint: the same row, decrypted, returned as is."""

    target = messaging.Target(version="1.0")

    def __init__(self, keys) -> None:
        self.keys = keys

    @messaging.expose
    def plain_fetch(self, context: dict, secret_id: str) -> str:
        record = self.keys.db.get_secret(secret_id)
        return base64.b64encode(self.keys.kek.decrypt(record)).decode()


def _run(url: str, workdir: str) -> None:
    fixture = configure_bus(url, "tp-bench-%s" % uuid.uuid4().hex[:8],
                            "trusted-pools-bench")
    ca = sp.LocalCA.create(workdir + "/ca")
    tpms = sp.SwtpmPool(ca, workdir + "/tpms")
    pool = TrustedPool(pathlib.Path(workdir), cfg.CONF,
                       tpms.start, ca, "sqlite:///%s/pool.sqlite" % workdir)
    try:
        pool.configure()
        pool.add_hosts(2)
        pool.start_agents()
        service = pool.start_conductor(CONDUCTOR)
        pool.enroll_all()
        operator = pool.api()
        host, other = pool.hosts
        boot = operator.capture_policy({}, host.name)["measured_boot"]
        operator.create_policy({}, "golden", "measured_boot", boot)
        operator.assign_policy({}, "default", "golden")
        for h in pool.hosts:
            operator.attest_now({}, h.name)
        keys = service.manager.keys
        # Nova's size: base64 of 384 random bytes.
        value = base64.b64encode(b"p" * 384)
        secret = keys.store("bench-project", value, "passphrase",
                            owner="bench-instance")["id"]

        server = rpc.get_server(messaging.Target(
            topic=PLAIN_TOPIC, server=CONDUCTOR), [PlainFetch(keys)],
            bus=rpc.MANAGEMENT_BUS)
        server.start()
        plain = rpc.get_client(messaging.Target(topic=PLAIN_TOPIC,
                                                version="1.0"),
                               timeout=30, bus=rpc.MANAGEMENT_BUS
                               ).prepare(server=CONDUCTOR)
        client = rpcapi.ConductorAPI(timeout=30)
        try:
            released = client.release_secret({}, host.name, secret,
                                              conductor=CONDUCTOR)
            assert released["wrapped"]
            print("== key release over RabbitMQ (one conductor) ==")
            bus_plain = median_seconds(
                lambda: plain.call({}, "plain_fetch", secret_id=secret),
                50, 5)
            bus_release = median_seconds(
                lambda: client.release_secret({}, host.name, secret,
                                              conductor=CONDUCTOR), 50, 5)
            report("release: check + KEK + wrap to host TPM, over bus",
                   bus_release, bus_plain, "plain fetch")
        finally:
            server.stop()
            server.wait()

        print("== the key service in process (no bus) ==")
        local_plain = median_seconds(
            lambda: keys.kek.decrypt(keys.db.get_secret(secret)), 200, 5)
        local_release = median_seconds(
            lambda: keys.release(secret, host.name), 200, 5)
        report("release in process (check + decrypt + wrap)",
               local_release, local_plain, "plain fetch")

        print("== TPM unwrap on the compute host (swtpm) ==")
        wrapped = base64.b64decode(released["wrapped"])
        sealed = base64.b64decode(released["ciphertext"])
        label = release.release_label(secret, host.name)
        handle = tpm_device.DEFAULT_BINDING_KEY_HANDLE
        with host.tpm.device() as dev:
            def tpm(w: bytes, lab: bytes) -> bytes:
                return dev.rsa_decrypt(handle, w, lab)
            assert release.unseal(tpm, wrapped, sealed, label) == value
            open_conn = median_seconds(
                lambda: release.unseal(tpm, wrapped, sealed, label), 20, 5)
        unwrap = backend.tpm_unwrapper(host.tpm.tcti, handle)
        per_call = median_seconds(
            lambda: release.unseal(unwrap, wrapped, sealed, label), 10, 5)
        report("TPM2_RSA_Decrypt, open ESAPI connection", open_conn,
               bus_plain, "bus plain fetch")
        report("unwrap as the backend does (new TPM connection)",
               per_call, bus_plain, "bus plain fetch")
        report("whole get() on the host: bus release + unwrap",
               bus_release + per_call, bus_plain, "bus plain fetch")
    finally:
        pool.close()
        tpms.close()
        fixture.cleanUp()


def main() -> None:
    workdir = tempfile.mkdtemp(prefix="tp-bench-keyrelease-")
    try:
        with bench_vhost(RABBIT_URL) as url:
            _run(url, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
