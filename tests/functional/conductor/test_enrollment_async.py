"""Management operations run on the owning conductor's worker pool, never
on its RPC thread (conductor RPC 3.0), through the real conductor, real
agents on swtpm TPMs, RabbitMQ and SQLite.

An agent that is down is the simplest agent that never answers: the
conductor's call to it waits ``[conductor] agent_rpc_timeout``. The
management endpoint must answer before that, and the operation records
the failure with its reason."""

from __future__ import annotations

import logging
import time

import pytest
from oslo_config import cfg
from oslo_log import formatters
from oslo_log import log as oslo_log

from tests.pool_harness import TrustedPool, ek_sha256
from trusted_pools import exception
from trusted_pools.api import operations
from trusted_pools.common import context as context_mod

pytestmark = [pytest.mark.swtpm, pytest.mark.rabbitmq, pytest.mark.slow]

AGENT_TIMEOUT = 3


@pytest.fixture
def pool(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca):
    trusted = TrustedPool(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca,
                          "sqlite:///%s" % (tmp_path / "tp.sqlite"))
    trusted.configure()
    rabbit_conf.set_override("agent_rpc_timeout", AGENT_TIMEOUT,
                             group="conductor")
    try:
        yield trusted
    finally:
        trusted.close()
        rabbit_conf.clear_override("agent_rpc_timeout", group="conductor")


def _timed(call):
    started = time.monotonic()
    answer = call()
    return answer, time.monotonic() - started


def test_endpoint_answers_before_the_agent_and_records_its_silence(pool):
    up, down = pool.add_hosts(2)
    pool.start_agents([up])            # the other host's agent is down
    pool.start_conductor("conductor-a")
    api = pool.api()

    stuck, took = _timed(lambda: api.start(
        "enroll_host", {}, down.name, ek_sha256=ek_sha256(down.tpm)))
    assert stuck["state"] == "pending" and stuck["host"] == down.name
    assert took < 1.0, "the endpoint waited %.1f s for the agent" % took
    # While the silent agent holds a worker, the conductor answers other
    # management calls, and finishes their work.
    other, took = _timed(lambda: api.start(
        "enroll_host", {}, up.name, ek_sha256=ek_sha256(up.tpm)))
    assert took < 1.0
    assert pool.db.get_operation(stuck["operation"]).state == "pending"
    enrolled = api.wait(other, timeout=30)
    assert enrolled["host"] == up.name and enrolled["generation"] == 1
    assert pool.db.get_operation(stuck["operation"]).state == "pending"

    row = operations.wait(pool.db, stuck["operation"], AGENT_TIMEOUT + 10)
    assert (row.state, row.error_type) == ("failed", "AgentUnreachable")
    assert row.error["kwargs"]["host"] == down.name
    assert row.error["kwargs"]["method"] == "get_identity"
    assert "did not answer get_identity" in row.error["message"]
    with pytest.raises(exception.AgentUnreachable):
        operations.result_or_raise(row)
    # Nothing was enrolled for the silent host.
    assert [h.hostname for h in pool.db.list_hosts()] == [up.name]


def test_second_enrollment_while_one_is_pending_is_refused(pool):
    (host,) = pool.add_hosts(1)
    pool.start_conductor("conductor-a")
    api = pool.api()
    approval = ek_sha256(host.tpm)
    first = api.start("enroll_host", {}, host.name, ek_sha256=approval)
    with pytest.raises(exception.OperationInProgress) as info:
        api.start("enroll_host", {}, host.name, ek_sha256=approval)
    assert first["operation"] in str(info.value)
    # Once the first ends (its agent is down), the host may enroll.
    with pytest.raises(exception.AgentUnreachable):
        api.wait(first, timeout=AGENT_TIMEOUT + 10)
    pool.start_agents([host])
    assert api.enroll_host({}, host.name, ek_sha256=approval)[
        "generation"] == 1


def test_attest_of_a_host_not_enrolled_is_refused_before_any_work(pool):
    (host,) = pool.add_hosts(1)
    pool.start_agents()
    pool.start_conductor("conductor-a")
    api = pool.api()
    with pytest.raises(exception.HostNotFound):
        api.start("attest_now", {}, host.name)
    with pytest.raises(exception.HostNotFound):
        api.start("capture_policy", {}, host.name)
    assert pool.db.list_operations(host.name) == []


class _Lines(logging.Handler):
    """Conductor log lines as oslo.log formats them (with the context)."""

    def __init__(self) -> None:
        super().__init__()
        oslo_log.register_options(cfg.CONF)
        self.setFormatter(formatters.ContextFormatter(
            project="trusted_pools", version="test", config=cfg.CONF))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_request_id_reaches_the_conductor_log_of_the_work(pool):
    (host,) = pool.add_hosts(1)
    pool.start_agents()
    pool.start_conductor("conductor-a")
    api = pool.api()
    lines = _Lines()
    logger = logging.getLogger("trusted_pools.conductor")
    logger.addHandler(lines)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        context = context_mod.RequestContext(
            request_id="req-0b5e2c1a-6f0d-4a43-9a51-cafe00000001",
            user_id="operator-id", project_id="admin-id",
            roles=["admin"], overwrite=False)
        answer = api.start("enroll_host", context, host.name,
                           ek_sha256=ek_sha256(host.tpm))
        api.wait(answer, timeout=30)
    finally:
        logger.removeHandler(lines)
        logger.setLevel(previous)
    row = pool.db.get_operation(answer["operation"])
    assert row.request_id == context.request_id
    assert row.requested_by == "operator-id"
    mine = [line for line in lines.lines if context.request_id in line]
    # On the RPC thread (accepted) and on the worker (enrolled, done).
    assert any("accepted as operation" in line for line in mine), lines.lines
    assert any("Host %s enrolled" % host.name in line for line in mine), \
        lines.lines
    assert any("Operation %s on host" % row.id in line for line in mine)
