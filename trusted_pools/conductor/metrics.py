"""The conductor's Prometheus metrics, and the HTTP endpoint that serves
them (``[conductor] metrics_port``; off by default).

Why the conductor and not trusted-pools-api: the numbers that matter
(verdicts given, verification time per phase, evidence rejected, the
evidence queue, key releases) exist only in the conductor process, and
Prometheus scrapes without a Keystone token; so, as many OpenStack
exporters do, the conductor opens its own plain HTTP port, bound to
loopback unless the operator names a management address. The pool-wide
gauges (hosts by status and level) are read from the database at each
scrape, so every conductor reports the same pool (aggregate them with
``max without (instance)``).

Every metric lives in a registry of its own per conductor (never the
process-global one): several conductors in one process (tests, the demo)
must not collide, and nothing else in the process leaks into the scrape.

Labels never carry what a host controls: evidence is rejected "by reason"
as the *type* of the error (a class of :mod:`trusted_pools.exception`,
a bounded set fixed by the code), never its text or the host's name. A
compromised host can make a counter grow; it cannot make a new series.
"""

from __future__ import annotations

import datetime
import logging
import threading
from typing import Any, Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import exposition
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from trusted_pools import exception
from trusted_pools.db import api as db_api

LOG = logging.getLogger(__name__)

__all__ = ["ConductorMetrics", "PoolCollector", "MetricsServer",
           "error_label", "host_status", "PHASES"]

#: Phases of verification timed by :mod:`trusted_pools.verifier.pipeline`.
PHASES = ("quote", "event_log", "ima", "appraisal")

# From 50 us (one ECDSA check) to 10 s (a long IMA list replayed at once).
_LATENCY_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    5.0, 10.0)

#: Statuses of a verdict (db models) and the two the pool gauge adds:
#: ``stale`` (the newest verdict expired) and ``none`` (no verdict yet).
_STATUSES = ("trusted", "untrusted", "unknown")
#: Why a push was dropped before verification (ConductorManager).
DROP_REASONS = ("no_host", "not_owned", "not_enrolled", "host_pending_full",
                "queue_full", "waited_too_long", "batch_refused")

#: Key-release outcomes and the standing the key service judged a host by.
_RELEASE_STATUSES = ("trusted", "untrusted", "unknown", "stale")

#: Why a release was answered as it was (trusted_pools.conductor.keys.
#: REASON_CODES, repeated here so the label set is fixed by this module).
_RELEASE_REASONS = ("released", "not_registered", "not_enrolled",
                    "no_verdict", "old_enrollment", "not_trusted", "stale",
                    "below_level", "no_binding_key", "binding_key_unusable")

#: How a vTPM migration ended (its last step).
_MIGRATION_OUTCOMES = ("completed", "aborted")


def error_label(error: BaseException | type) -> str:
    """The label of a rejection: the error's class name if it is one of
    this project's errors (a bounded set), else ``other``."""
    kind = error if isinstance(error, type) else type(error)
    if issubclass(kind, exception.TrustedPoolsError) and \
            kind.__module__ == exception.__name__:
        return kind.__name__
    return "other"


def host_status(verdict: db_api.Verdict | None,
                now: datetime.datetime) -> str:
    """How the pool gauge and the dashboard class a host: its newest
    verdict's status, ``stale`` once that verdict expired, ``none``
    without one."""
    if verdict is None:
        return "none"
    if verdict.expires_at <= now:
        return "stale"
    return verdict.status


class ConductorMetrics:
    """The metrics one conductor keeps; the manager and the key service
    call these hooks (each costs a counter increment or a histogram
    observation: about a microsecond)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.attestations = Counter(
            "trusted_pools_attestations",
            "Verdicts this conductor recorded, by status (rate() of it is "
            "attestations per second).", ["status"], registry=r)
        self.latency = Histogram(
            "trusted_pools_verification_seconds",
            "Seconds spent per verification phase (quote: signature, nonce "
            "and clock; event_log: parse and replay of a changed boot; "
            "ima: replay of the new IMA entries; appraisal: against the "
            "group's policies).", ["phase"], buckets=_LATENCY_BUCKETS,
            registry=r)
        self.rejected = Counter(
            "trusted_pools_evidence_rejected",
            "Evidence that did not verify, by the type of the error.",
            ["reason"], registry=r)
        self.key_releases = Counter(
            "trusted_pools_key_releases",
            "vTPM secret release requests answered, by outcome (released, "
            "refused) and the standing of the host asking.",
            ["outcome", "status"], registry=r)
        self.key_refusals = Counter(
            "trusted_pools_key_release_reasons",
            "vTPM secret release requests answered, by reason code "
            "(released, or why the key was refused: not_registered, "
            "not_enrolled, no_verdict, old_enrollment, not_trusted, stale, "
            "below_level, no_binding_key, binding_key_unusable).",
            ["reason"], registry=r)
        self.migrations = Counter(
            "trusted_pools_vtpm_migrations",
            "vTPM migrations this conductor ended, by outcome (completed, "
            "aborted).", ["outcome"], registry=r)
        self.dropped = Counter(
            "trusted_pools_evidence_dropped",
            "Evidence pushes dropped unverified, by reason: no_host, "
            "not_owned (another conductor's host), not_enrolled (a name "
            "no enrolled host has), host_pending_full (that name already "
            "holds its queue places), queue_full, waited_too_long (shed "
            "by a conductor behind), batch_refused (a malformed relay "
            "batch, counted once).", ["reason"], registry=r)
        self.queue_depth = Gauge(
            "trusted_pools_evidence_queue_depth",
            "Evidence messages and challenge answers waiting for the "
            "verification worker.", registry=r)
        # The labelled children, looked up once: labels() takes a lock and
        # builds a key on every call, several times the cost of observe().
        self._verdicts = {s: self.attestations.labels(s) for s in _STATUSES}
        self._phases = {p: self.latency.labels(p) for p in PHASES}
        self._dropped = {reason: self.dropped.labels(reason)
                         for reason in DROP_REASONS}
        for outcome in ("released", "refused"):
            for status in _RELEASE_STATUSES:
                self.key_releases.labels(outcome, status)
        self._reasons = {r: self.key_refusals.labels(r)
                         for r in _RELEASE_REASONS}
        self._migrations = {o: self.migrations.labels(o)
                            for o in _MIGRATION_OUTCOMES}

    # --- hooks -------------------------------------------------------------

    def observe(self, phase: str, seconds: float) -> None:
        """A verification phase took ``seconds`` (the pipeline's timer)."""
        child = self._phases.get(phase)
        if child is not None:
            child.observe(seconds)

    def evidence_rejected(self, error: BaseException | type) -> None:
        self.rejected.labels(error_label(error)).inc()

    def evidence_dropped(self, reason: str) -> None:
        """A push dropped before verification (``reason``: one of
        DROP_REASONS)."""
        child = self._dropped.get(reason)
        if child is None:
            child = self._dropped[reason] = self.dropped.labels(reason)
        child.inc()

    def rejected_types(self, kinds: Iterable[type]) -> None:
        for kind in kinds:
            self.evidence_rejected(kind)

    def recorded(self, statuses: Iterable[str]) -> None:
        """Verdicts stored (their statuses)."""
        for status in statuses:
            child = self._verdicts.get(status)
            if child is not None:
                child.inc()

    def key_release(self, released: bool, status: str,
                    reason: str | None = None) -> None:
        """A release answered; ``reason`` is its code (an unknown one is
        counted as ``not_trusted`` for a refusal: never a new series)."""
        self.key_releases.labels(
            "released" if released else "refused",
            status if status in _RELEASE_STATUSES else "unknown").inc()
        if reason is None:
            return
        child = self._reasons.get(reason)
        if child is None or (reason == "released") != released:
            child = self._reasons["released" if released else "not_trusted"]
        child.inc()

    def migration_ended(self, step: str) -> None:
        """A vTPM migration reached its last step (completed, aborted)."""
        child = self._migrations.get(step)
        if child is not None:
            child.inc()

    def watch_queue(self, depth: Callable[[], int]) -> None:
        """Read the queue depth at scrape time (no cost per message)."""
        self.queue_depth.set_function(depth)


class PoolCollector(Collector):
    """Hosts by status and level, and by enrollment state, read from the
    database at each scrape (one query over the newest verdicts)."""

    def __init__(self, db: db_api.Connection,
                 clock: Callable[[], datetime.datetime] | None = None
                 ) -> None:
        self.db = db
        self.clock = clock or (lambda: datetime.datetime.now(
            datetime.timezone.utc))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        ok = GaugeMetricFamily(
            "trusted_pools_pool_scrape_success",
            "1 if the pool gauges below could be read from the database.")
        try:
            hosts = self.db.list_hosts()
            latest = {v.host_id: v for v in self.db.latest_verdicts()}
        except exception.TrustedPoolsError as error:
            LOG.warning("Metrics: could not read the pool: %s", error)
            ok.add_metric([], 0)
            yield ok
            return
        now = self.clock()
        by_status: dict[tuple[str, str], int] = {}
        by_state: dict[str, int] = {}
        for host in hosts:
            verdict = latest.get(host.id)
            key = (host_status(verdict, now),
                   str(verdict.level) if verdict is not None else "")
            by_status[key] = by_status.get(key, 0) + 1
            by_state[host.state] = by_state.get(host.state, 0) + 1
        status = GaugeMetricFamily(
            "trusted_pools_hosts",
            "Hosts by the status of their newest verdict (stale: it "
            "expired; none: no verdict yet) and its level.",
            labels=["status", "level"])
        for (name, level), count in sorted(by_status.items()):
            status.add_metric([name, level], count)
        state = GaugeMetricFamily(
            "trusted_pools_hosts_by_state",
            "Hosts by enrollment state.", labels=["state"])
        for name, count in sorted(by_state.items()):
            state.add_metric([name], count)
        ok.add_metric([], 1)
        yield status
        yield state
        yield ok


class MetricsServer:
    """The scrape endpoint: prometheus_client's WSGI server on a thread,
    serving one registry; ``stop()`` closes the port."""

    def __init__(self, registry: CollectorRegistry, host: str,
                 port: int) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        """Listen; returns the port (the one the OS chose for port 0)."""
        try:
            self._server, self._thread = exposition.start_http_server(
                self.port, addr=self.host, registry=self.registry)
        except OSError as error:
            raise exception.ConfigInvalid(
                reason="[conductor] metrics_host/metrics_port %s:%d cannot "
                       "be opened (%s)" % (self.host, self.port,
                                          error.strerror)) from error
        self.port = self._server.server_address[1]
        LOG.info("Prometheus metrics served at http://%s:%d/metrics",
                 self.host, self.port)
        return self.port

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = self._thread = None
