"""The conductor's Prometheus endpoint, scraped over real HTTP while a real
pool works: swtpm hosts booted from real event logs (one with an
unapproved kernel), their agents, a conductor on the real RabbitMQ,
SQLite, trusted-pools-api behind keystonemiddleware for the operator's
steps. The scrape is parsed with prometheus_client's own text parser and
every count is compared with what the database holds: the verdicts given,
the hosts by status and level, the key releases and refusals.

The attack: a compromised host pushes evidence in its own and in made-up
names, with text chosen to break the exposition format. It can make the
rejection counter grow; it cannot add a label value of its choosing.
"""

from __future__ import annotations

import base64
import inspect
import socket
import time
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.api_fixtures import Client, auth_tokens  # noqa: F401
from tests.api_fixtures import make_api_conf
from tests.pool_harness import TrustedPool, ek_sha256
from trusted_pools import exception
from trusted_pools.api import app as api_app

pytestmark = [pytest.mark.swtpm, pytest.mark.rabbitmq, pytest.mark.slow]

#: Label values the rejection counter may ever carry.
ERROR_TYPES = {name for name, value in inspect.getmembers(exception)
               if isinstance(value, type)
               and issubclass(value, exception.TrustedPoolsError)} | {"other"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scrape(port: int) -> dict[str, dict[tuple, float]]:
    """``{sample name: {sorted label items: value}}`` from GET /metrics."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port,
                                timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[
                tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def verdict_counts(pool: TrustedPool) -> dict[str, int]:
    counts = {"trusted": 0, "untrusted": 0, "unknown": 0}
    for host in pool.db.list_hosts():
        for verdict in pool.db.verdict_history(host.id, limit=10000):
            counts[verdict.status] += 1
    return counts


@pytest.fixture
def metered_pool(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca,
                 auth_tokens):  # noqa: F811
    """Three hosts, the second booted an unapproved kernel; a conductor
    serving metrics; nothing attests on its own during the test (a long
    interval), so every verdict is one the test asked for."""
    port = free_port()
    rabbit_conf.set_override("metrics_port", port, group="conductor")
    rabbit_conf.set_override("epoch_spread", 0.0, group="conductor")
    pool = TrustedPool(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca,
                       "sqlite:///%s" % (tmp_path / "pool.sqlite"),
                       interval=3600)
    try:
        pool.configure()
        pool.add_hosts(3, tamper=[1])
        pool.start_agents()
        pool.start_conductor("conductor-a")
        conf = make_api_conf()
        conf.set_override("heartbeat_timeout",
                          rabbit_conf.conductor.heartbeat_timeout,
                          group="conductor")
        yield pool, Client(api_app.build(conf, db=pool.db)), port
    finally:
        pool.close()
        rabbit_conf.clear_override("metrics_port", group="conductor")
        rabbit_conf.clear_override("epoch_spread", group="conductor")


class _Unwritable:
    """A database connection whose key-release records cannot be
    written (everything else passes through)."""

    def __init__(self, inner: Any, record: Any) -> None:
        self.inner = inner
        self.record_key_release = record

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def wait(predicate: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.1)


def test_scraped_counts_match_the_verdicts_given(metered_pool):
    pool, api, port = metered_pool
    good, bad, other = pool.hosts
    before = scrape(port)
    assert value(before, "trusted_pools_pool_scrape_success") == 1
    assert value(before, "trusted_pools_hosts_by_state") == 0
    for status in ("trusted", "untrusted", "unknown"):
        assert value(before, "trusted_pools_attestations_total",
                     status=status) == 0

    for host in pool.hosts:
        assert api.post("/v1/hosts", {"name": host.name, "ek_sha256":
                                      ek_sha256(host.tpm)}
                        ).status_code == 201
    boot = api.post("/v1/hosts/%s/capture" % good.name
                    ).json["policies"]["measured_boot"]
    assert api.post("/v1/policies", {"name": "golden", "kind":
                                     "measured_boot", "body": boot}
                    ).status_code == 201
    assert api.put("/v1/groups/default/policies/golden",
                   {"version": None}).status_code == 200
    given = []
    for host in pool.hosts + [good]:
        answer = api.post("/v1/hosts/%s/attest" % host.name)
        assert answer.status_code == 200, answer.body
        given.append(answer.json["verdict"]["status"])
    assert given == ["trusted", "untrusted", "trusted", "trusted"]

    # A compromised host pushes forged evidence: in its own name with a
    # made-up epoch, and in made-up names built to break the format.
    manager = pool.conductors[0].manager
    hostile = 'x"} 1\ntrusted_pools_hosts{status="trusted",level="4"} 9\n#'
    for wire in ({"host": bad.name, "epoch_id": hostile, "quote": hostile},
                 {"host": hostile, "epoch_id": "e"},
                 {"host": bad.name + hostile}):
        manager.submit_evidence({}, wire)
    # The push in bad's name earns bad a direct challenge; its answer is
    # judged (untrusted again): one more verdict, wait for it.
    bad_id = pool.db.get_host_by_name(bad.name).id
    wait(lambda: len(pool.db.verdict_history(bad_id)) == 2,
         "the challenge answer of %s" % bad.name)

    # vTPM keys: released to a trusted host, refused to the tampered one.
    stored = api.post("/v1/secrets", {
        "payload": base64.b64encode(b"k" * 32).decode(),
        "secret_type": "symmetric"}, persona="member")
    assert stored.status_code == 201, stored.body
    secret = stored.json["secret"]["id"]
    assert api.get("/v1/secrets/%s?host=%s" % (secret, good.name),
                   persona="member").status_code == 200
    refused = api.get("/v1/secrets/%s?host=%s" % (secret, bad.name),
                      persona="member")
    assert refused.status_code in (403, 409), refused.body

    wait(lambda: value(scrape(port),
                       "trusted_pools_evidence_queue_depth") == 0,
         "an empty evidence queue")
    after = scrape(port)
    in_db = verdict_counts(pool)
    assert in_db == {"trusted": 3, "untrusted": 2, "unknown": 0}, in_db
    for status, count in in_db.items():
        assert value(after, "trusted_pools_attestations_total",
                     status=status) == count, (status, after)

    # Every verdict came from verified evidence: one quote check each
    # (the forged pushes were turned away before it), one appraisal each,
    # and one event-log replay per host (its first boot seen).
    assert value(after, "trusted_pools_verification_seconds_count",
                 phase="quote") == sum(in_db.values())
    assert value(after, "trusted_pools_verification_seconds_count",
                 phase="appraisal") == sum(in_db.values())
    assert value(after, "trusted_pools_verification_seconds_count",
                 phase="event_log") == 3
    assert value(after, "trusted_pools_verification_seconds_sum",
                 phase="quote") > 0

    # Hosts by status and level: what the API's newest verdicts say.
    listed = api.get("/v1/hosts", persona="reader").json["hosts"]
    expected: dict[tuple, float] = {}
    for host in listed:
        key = (("level", str(host["level"])), ("status", host["status"]))
        expected[key] = expected.get(key, 0) + 1
    assert after["trusted_pools_hosts"] == expected
    assert expected == {(("level", "3"), ("status", "trusted")): 2,
                        (("level", str(listed[1]["level"])),
                         ("status", "untrusted")): 1}
    assert value(after, "trusted_pools_hosts_by_state",
                 state="enrolled") == 3

    assert value(after, "trusted_pools_key_releases_total",
                 outcome="released", status="trusted") == 1
    assert value(after, "trusted_pools_key_releases_total",
                 outcome="refused", status="untrusted") == 1
    assert sum(after["trusted_pools_key_releases_total"].values()) == 2
    # By reason, and as the database recorded them (what GET
    # /v1/key-releases and the dashboard show): the same two answers.
    assert value(after, "trusted_pools_key_release_reasons_total",
                 reason="released") == 1
    assert value(after, "trusted_pools_key_release_reasons_total",
                 reason="not_trusted") == 1
    recorded = pool.db.list_key_releases()
    assert [(r.host, r.outcome, r.reason_code) for r in recorded] == [
        (bad.name, "refused", "not_trusted"),
        (good.name, "released", "released")]
    assert all(r.secret_id == secret for r in recorded)
    # Who asked: the API request's user and id, carried over RPC.
    assert {r.requested_by for r in recorded} == {"alice-id"}  # member
    assert all(r.request_id and r.request_id.startswith("req-")
               for r in recorded)
    listed_releases = api.get("/v1/key-releases", persona="reader",
                              version="trusted-pools 1.4").json
    assert [r["id"] for r in listed_releases["key_releases"]] == [
        r.id for r in recorded]
    assert value(after, "trusted_pools_vtpm_migrations_total",
                 outcome="completed") == 0

    # No key leaves unrecorded: a database that refuses the record fails
    # the release (and the refusal of the other host still stands).
    keys_service = pool.conductors[0].manager.keys

    def unwritable(record):
        raise exception.DatabaseError(reason="the audit table is full")

    keys_service.db = _Unwritable(keys_service.db, unwritable)
    try:
        failed = api.get("/v1/secrets/%s?host=%s" % (secret, good.name),
                         persona="member")
        assert failed.status_code >= 500, failed.body
        assert "wrapped" not in failed.text
        still = api.get("/v1/secrets/%s?host=%s" % (secret, bad.name),
                        persona="member")
        assert still.status_code in (403, 409), still.body
    finally:
        keys_service.db = keys_service.db.inner

    # The forged pushes: counted by error type, and nothing the host
    # wrote became a label value or a series.
    rejected = after["trusted_pools_evidence_rejected_total"]
    assert sum(rejected.values()) >= 1, rejected
    for labels in rejected:
        assert dict(labels)["reason"] in ERROR_TYPES, labels
    for name, series in after.items():
        for labels in series:
            for _, label in labels:
                assert "compute-" not in label and '"' not in label, (
                    name, labels)
