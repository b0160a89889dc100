"""``trusted-pools-conductor`` as operators run it: oslo.service's
threading backend (a supervisor and one worker process), the periodic jobs
on their configured spacing, the RPC server answering over the real bus,
and a graceful stop on SIGTERM (RPC server stopped, jobs finished, the
conductor unregistered) with exit status 0."""

from __future__ import annotations

import datetime
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from trusted_pools.conductor import rpcapi
from trusted_pools.db import api as db_api
from trusted_pools.db import migration

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

ROOT = pathlib.Path(__file__).resolve().parents[3]


def _ca_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test EK CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now).not_valid_after(
                now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None),
                           critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out after %.0f s waiting for %s"
                         % (timeout, what))


def test_conductor_runs_under_oslo_service_and_stops_on_sigterm(
        tmp_path, rabbit_conf, rabbit_url):
    url = "sqlite:///%s" % (tmp_path / "tp.sqlite")
    db = db_api.Connection(db_api.make_context_manager(url))
    migration.upgrade(engine=db.get_engine())
    (tmp_path / "ca.pem").write_bytes(_ca_pem())
    conf = tmp_path / "conductor.conf"
    conf.write_text(
        "[DEFAULT]\ntransport_url = %s\ncontrol_exchange = %s\n"
        "graceful_shutdown_timeout = 30\n"
        "[database]\nconnection = %s\n"
        "[conductor]\nhost = conductor-svc\nsigning_key_path = %s\n"
        "ek_ca_bundle = %s\nheartbeat_interval = 1\n"
        "attestation_interval = 2\nevidence_wait = 0.2\n"
        % (rabbit_url, rabbit_conf.control_exchange, url,
           tmp_path / "signing.pem", tmp_path / "ca.pem"))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    log = (tmp_path / "conductor.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "trusted_pools.cmd.conductor",
         "--config-file", str(conf)], env=env, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True)
    try:
        record = _wait(lambda: {c.hostname: c for c in db.list_conductors()
                                }.get("conductor-svc"), 60,
                       "the conductor to register")
        assert record.online
        # The heartbeat job runs on its 1 s spacing in the worker process.
        first = record.updated_at
        _wait(lambda: [c for c in db.list_conductors()
                       if c.updated_at > first], 10, "a heartbeat")
        # The RPC server of the worker answers over the real bus.
        assert rpcapi.VerdictsAPI(timeout=30).verdicts_since({}, 0) == []

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=45) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
    output = (tmp_path / "conductor.log").read_text()
    (record,) = db.list_conductors()
    assert not record.online, output[-3000:]
    assert "Conductor conductor-svc stopped" in output, output[-3000:]
    db.dispose()
