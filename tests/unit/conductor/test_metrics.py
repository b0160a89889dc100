"""The conductor's metrics: bounded labels, the phases the verification
pipeline reports (real quotes from the project's soft TPM through the real
verifier), the pool gauge from a real (SQLite) database, the endpoint's
port. The end-to-end scrape is tests/functional/conductor/test_metrics.py.
"""

from __future__ import annotations

import datetime
import os
import socket
import urllib.request

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests import soft_tpm
from trusted_pools import exception
from trusted_pools.conductor import metrics as metrics_mod
from trusted_pools.db import api as db_api
from trusted_pools.db import migration
from trusted_pools.protocol.evidence import Evidence
from trusted_pools.tpm import structures
from trusted_pools.tpm.constants import TPM_ALG
from trusted_pools.verifier import pipeline as verifier

HOST = "compute-01"
UTC = datetime.timezone.utc


def samples(registry) -> dict[str, dict[tuple, float]]:
    found: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(
            generate_latest(registry).decode()):
        for sample in family.samples:
            found.setdefault(sample.name, {})[
                tuple(sorted(sample.labels.items()))] = sample.value
    return found


class HostileError(exception.EvidenceError):
    """Defined outside trusted_pools.exception: not a known label."""


@pytest.mark.parametrize("error, label", [
    (exception.InvalidSignature(), "InvalidSignature"),
    (exception.MalformedEvidence(what="x", reason="y"), "MalformedEvidence"),
    (exception.StaleEvidence, "StaleEvidence"),
    (HostileError(), "other"),
    (ValueError('x"} 1'), "other"),
    (KeyError, "other"),
])
def test_rejections_are_labelled_by_known_error_types_only(error, label):
    assert metrics_mod.error_label(error) == label


def test_verdicts_and_releases_only_in_their_label_sets():
    metrics = metrics_mod.ConductorMetrics()
    metrics.recorded(["trusted", "untrusted", "trusted", "made-up"])
    metrics.key_release(True, "trusted")
    metrics.key_release(False, 'evil"}')
    found = samples(metrics.registry)
    assert found["trusted_pools_attestations_total"] == {
        (("status", "trusted"),): 2, (("status", "untrusted"),): 1,
        (("status", "unknown"),): 0}
    releases = found["trusted_pools_key_releases_total"]
    assert releases[(("outcome", "released"), ("status", "trusted"))] == 1
    assert releases[(("outcome", "refused"), ("status", "unknown"))] == 1
    assert sum(releases.values()) == 2 and len(releases) == 8


@pytest.fixture(scope="module")
def ak():
    return soft_tpm.SoftAK.ecc()


class Timings:
    def __init__(self) -> None:
        self.phases: list[str] = []

    def observe(self, phase: str, seconds: float) -> None:
        assert seconds >= 0
        self.phases.append(phase)


def _evidence(ak, nonce: bytes, clock: int) -> Evidence:
    pcrs = {TPM_ALG.SHA256: {0: bytes(32)}}
    quote, signature = ak.quote(nonce, pcrs, clock=clock, reset_count=7)
    return Evidence(host=HOST, quote=quote, signature=signature, pcrs=pcrs)


def test_pipeline_reports_its_phases_and_the_rejection_type(ak):
    state = verifier.HostState(host=HOST, host_id=1, group="default",
                               ak=structures.parse_public(ak.public_bytes))
    timings = Timings()
    nonce = os.urandom(32)
    # A genuine quote (no event log, no policy asking for one).
    first = verifier.verify_and_appraise(state, _evidence(ak, nonce, 1000),
                                         nonce, 1000, 180, timer=timings)
    assert first.verdict is not None and not first.quote_failed
    assert not first.evidence_failed and first.rejected == ()
    # No event log or IMA list came: those phases did not run.
    assert timings.phases == ["quote", "appraisal"]

    timings.phases.clear()
    wrong = verifier.verify_and_appraise(
        state, _evidence(ak, os.urandom(32), 2000), nonce, 1001, 180,
        timer=timings)
    assert wrong.quote_failed
    assert [metrics_mod.error_label(k) for k in wrong.rejected] == [
        "NonceMismatch"]
    assert timings.phases == ["quote"]


def test_conductor_metrics_take_the_pipeline_timings(ak):
    metrics = metrics_mod.ConductorMetrics()
    state = verifier.HostState(host=HOST, host_id=1, group="default",
                               ak=structures.parse_public(ak.public_bytes))
    nonce = os.urandom(32)
    verifier.verify_and_appraise(state, _evidence(ak, nonce, 1000), nonce,
                                 1000, 180, timer=metrics)
    counts = samples(metrics.registry)[
        "trusted_pools_verification_seconds_count"]
    assert counts == {(("phase", "quote"),): 1,
                      (("phase", "appraisal"),): 1,
                      (("phase", "event_log"),): 0,
                      (("phase", "ima"),): 0}


@pytest.fixture
def db(tmp_path):
    connection = db_api.Connection(db_api.make_context_manager(
        "sqlite:///%s" % (tmp_path / "m.sqlite")))
    migration.upgrade(engine=connection.get_engine())
    yield connection
    connection.dispose()


def _verdict(host_id: int, status: str, level: int,
             issued: datetime.datetime, lifetime: int = 180
             ) -> db_api.NewVerdict:
    return db_api.NewVerdict(
        host_id=host_id, status=status, level=level, issued_at=issued,
        expires_at=issued + datetime.timedelta(seconds=lifetime))


def test_pool_gauge_counts_newest_verdicts_stale_and_none(db):
    now = datetime.datetime(2030, 1, 1, tzinfo=UTC)
    ids = [db.create_host("compute-%02d" % i).id for i in range(5)]
    db.add_verdicts([
        _verdict(ids[0], "untrusted", 2, now - datetime.timedelta(60)),
        _verdict(ids[0], "trusted", 3, now),       # newest counts
        _verdict(ids[1], "trusted", 3, now),
        _verdict(ids[2], "untrusted", 2, now),
        _verdict(ids[3], "trusted", 3, now - datetime.timedelta(1)),  # stale
    ])
    metrics = metrics_mod.ConductorMetrics()
    metrics.registry.register(metrics_mod.PoolCollector(db, lambda: now))
    found = samples(metrics.registry)
    assert found["trusted_pools_hosts"] == {
        (("level", "3"), ("status", "trusted")): 2,
        (("level", "2"), ("status", "untrusted")): 1,
        (("level", "3"), ("status", "stale")): 1,
        (("level", ""), ("status", "none")): 1}
    assert found["trusted_pools_hosts_by_state"] == {
        (("state", "enrolling"),): 5}
    assert found["trusted_pools_pool_scrape_success"] == {(): 1}


def test_pool_gauge_reports_a_database_failure(db):
    db.dispose()

    class Broken:
        def list_hosts(self):
            raise exception.DatabaseError(reason="gone")

    registry = metrics_mod.ConductorMetrics().registry
    registry.register(metrics_mod.PoolCollector(Broken()))
    found = samples(registry)
    assert found["trusted_pools_pool_scrape_success"] == {(): 0}
    assert "trusted_pools_hosts" not in found
    # The process metrics are still served.
    assert "trusted_pools_attestations_total" in found


def test_endpoint_serves_and_closes_its_port():
    metrics = metrics_mod.ConductorMetrics()
    server = metrics_mod.MetricsServer(metrics.registry, "127.0.0.1", 0)
    port = server.start()
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port,
                                    timeout=5) as answer:
            assert b"trusted_pools_evidence_queue_depth" in answer.read()
        taken = metrics_mod.MetricsServer(metrics.registry, "127.0.0.1",
                                          port)
        with pytest.raises(exception.ConfigInvalid) as refused:
            taken.start()
        assert "metrics_port" in str(refused.value)
    finally:
        server.stop()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
