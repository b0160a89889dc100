"""Response to distrust: what happens when a trusted host stops being one.

A :class:`DistrustResponder` watches the verified verdict stream (it is an
observer of the scheduler's verdict cache, fed by the scheduler's own
notification endpoint and bulk refresh: nothing reaches it that did not
verify against a known conductor key). When a host's verdict goes from
trusted to not trusted (untrusted, or unknown: no fresh evidence), it runs
the configured actions in order, once per transition:

``notify``
    log at WARNING and emit a ``trusted_pools.host.distrust`` notification;
``disable_compute``
    disable the host's nova-compute service through the compute API
    (openstacksdk's ``disable_service``: ``PUT /os-services/{id}`` at
    microversion 2.53), with a ``disabled_reason`` naming the verdict, so
    nothing new lands there;
``migrate_trusted_instances``
    live-migrate the instances on the host whose flavor extra specs ask for
    trust (``trust:*`` or the ``CUSTOM_TRUSTED_POOLS_*`` traits), with no
    target host, so the scheduler (and the trust filter) picks a trusted
    one.

Only transitions seen in verdicts count: a host first seen untrusted (the
responder has no "before"), a repeated untrusted verdict, a replayed token,
or a verdict that merely grows stale (the conductor may just be out of
reach) does not trigger anything. A host that becomes trusted again re-arms
its trigger. Each action returns an :class:`ActionRecord`; the records are
logged, kept in :attr:`DistrustResponder.history`, and (with a reporter,
``[trusted_pools_distrust] report_actions``) reported to trusted-pools-api,
which keeps them for the dashboard and ``GET /v1/distrust-actions``.

Actions are stevedore plugins (namespace ``trusted_pools.distrust.actions``),
loaded by name from ``[trusted_pools_distrust] actions``.
"""

from __future__ import annotations

import abc
import collections
import dataclasses
import logging
import queue
import threading
import urllib.parse
from typing import Any, Callable, Mapping, Sequence, TypeVar

from keystoneauth1 import exceptions as ks_exceptions
from keystoneauth1 import session as ks_session
from openstack import connection
from openstack import exceptions as sdk_exceptions
from openstack.compute.v2 import server as compute_server
from openstack.compute.v2 import service as compute_service
from oslo_config import cfg

from trusted_pools import exception
from trusted_pools.protocol.verdict import NOT_TRUSTED, Verdict, trusted_level
from trusted_pools.common import keystone
from trusted_pools.protocol import topics
from trusted_pools.nova.scheduler.cache import VerdictCache
from trusted_pools.nova.scheduler.extra_specs import requirement_from_specs

__all__ = [
    "NAMESPACE", "DISTRUST_EVENT", "DistrustEvent", "ActionRecord",
    "DistrustAction", "NotifyAction", "DisableComputeAction",
    "MigrateTrustedInstancesAction", "ComputeAPI", "load_actions",
    "DistrustResponder",
]

LOG = logging.getLogger(__name__)

_T = TypeVar("_T")

NAMESPACE = "trusted_pools.distrust.actions"
DISTRUST_EVENT = topics.DISTRUST_EVENT
_SERVICE = "compute"
_GROUP = "trusted_pools_distrust"
_HISTORY = 1000


@dataclasses.dataclass(frozen=True)
class DistrustEvent:
    """A verified trusted -> not trusted transition of one host."""

    host: str
    status: str
    level: int
    previous_level: int
    reasons: tuple[str, ...]
    issued_at: int
    jti: str
    #: Names of the actions to run again (after they failed); None: all.
    only: frozenset[str] | None = None

    def describe(self) -> str:
        reasons = "; ".join(self.reasons[:3]) or "no reason given"
        return ("trusted_pools verdict %s at %d: %s (was trusted at level "
                "%d): %s" % (self.jti, self.issued_at, self.status,
                             self.previous_level, reasons))


@dataclasses.dataclass(frozen=True)
class ActionRecord:
    """The visible outcome of one action on one host."""

    action: str
    host: str
    #: "done", "skipped" or "failed".
    outcome: str
    detail: str
    #: What was acted on (service ids, server ids), with per-item result.
    items: tuple[tuple[str, str], ...] = ()


class DistrustAction(abc.ABC):
    """One response to distrust. Must not raise: failures are records."""

    name = "abstract"

    @abc.abstractmethod
    def __call__(self, event: DistrustEvent) -> ActionRecord:
        """Act on ``event`` and say what happened."""


class NotifyAction(DistrustAction):
    """Log and, with a notifier, emit ``trusted_pools.host.distrust``."""

    name = "notify"

    def __init__(self, notifier: Any = None, **_: Any) -> None:
        self.notifier = notifier

    def __call__(self, event: DistrustEvent) -> ActionRecord:
        LOG.warning("Host %s is no longer trusted: %s", event.host,
                    event.describe())
        if self.notifier is None:
            return ActionRecord(self.name, event.host, "done",
                                "logged (no notifier configured)")
        try:
            self.notifier.warn({}, DISTRUST_EVENT, {
                "host": event.host, "status": event.status,
                "level": event.level, "previous_level": event.previous_level,
                "reasons": list(event.reasons), "verdict": event.jti})
        except Exception as error:  # noqa: BLE001 - bus errors vary
            return ActionRecord(self.name, event.host, "failed",
                                "notification not sent: %s"
                                % type(error).__name__)
        return ActionRecord(self.name, event.host, "done",
                            "logged and notified %s" % DISTRUST_EVENT)


# --- the compute API ---------------------------------------------------------------

class ComputeAPI:
    """The few Nova calls the actions need, through openstacksdk's compute
    proxy (admin credentials from ``[trusted_pools_distrust]``).

    SDK and keystoneauth errors become the project's typed errors here, at
    the boundary: transport failures and 5xx are
    :class:`~trusted_pools.exception.ServiceUnavailable`, other refusals
    :class:`~trusted_pools.exception.ServiceAPIError` with the status.
    """

    def __init__(self, connection: connection.Connection) -> None:
        self.connection = connection

    @property
    def session(self) -> ks_session.Session:
        """The keystoneauth session under the connection."""
        return self.connection.session

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts) -> "ComputeAPI":
        """Session, auth and endpoint from the keystoneauth1 options of
        ``[trusted_pools_distrust]``; every call at ``compute_microversion``
        (the lowest that sets a disabled reason by service id)."""
        group = conf[_GROUP]
        session, _ = keystone.session_from_conf(conf, _GROUP)
        options: dict[str, Any] = {}
        if group.endpoint_override:
            options["compute_endpoint_override"] = group.endpoint_override
        if group.region_name:
            options["region_name"] = group.region_name
        if group.valid_interfaces:
            options["compute_interface"] = group.valid_interfaces[0]
        return cls.for_session(session, group.compute_microversion,
                               **options)

    @classmethod
    def for_session(cls, session: ks_session.Session,
                    microversion: str = "2.53", **options: Any
                    ) -> "ComputeAPI":
        """An SDK connection over an existing keystoneauth ``session``;
        ``options`` are openstacksdk's (``compute_endpoint_override``)."""
        return cls(connection.Connection(
            session=session, compute_default_microversion=microversion,
            **options))

    @classmethod
    def for_endpoint(cls, endpoint: str, token: str = "admin",
                     microversion: str = "2.53") -> "ComputeAPI":
        """A fixed endpoint and token, no service catalog (test servers)."""
        session = keystone.session_for_endpoint(endpoint, token)
        return cls.for_session(session, microversion,
                               compute_endpoint_override=endpoint)

    def _call(self, what: str, call: Callable[[], _T]) -> _T:
        try:
            return call()
        except sdk_exceptions.HttpException as error:
            status = error.status_code or 0
            reason = str(error.details or error.message)[:300]
            if status >= 500 or not status:
                raise exception.ServiceUnavailable(
                    service=_SERVICE, group=_GROUP,
                    reason="%s answered HTTP %s: %s" % (what, status or "?",
                                                        reason))
            path = urllib.parse.urlsplit(error.url).path if error.url \
                else what
            raise exception.ServiceAPIError(
                service=_SERVICE, method=error.method or "?",
                path=path, status=status, reason=reason)
        except (sdk_exceptions.SDKException,
                ks_exceptions.ClientException) as error:
            raise exception.ServiceUnavailable(
                service=_SERVICE, group=_GROUP,
                reason="%s: %s" % (what, type(error).__name__))

    def compute_services(self, host: str) -> list[compute_service.Service]:
        """The nova-compute services on ``host`` (exact host match)."""
        found = self._call("list services", lambda: list(
            self.connection.compute.services(binary="nova-compute",
                                             host=host)))
        return [s for s in found
                if s.host == host and s.binary == "nova-compute"]

    def disable_service(self, service: compute_service.Service,
                        reason: str) -> None:
        self._call("disable service %s" % service.id,
                   lambda: self.connection.compute.disable_service(
                       service, disabled_reason=reason[:255]))

    def servers_on_host(self, host: str) -> list[compute_server.Server]:
        """Every project's servers on ``host``, with their flavor."""
        return self._call("list servers on %s" % host, lambda: list(
            # compute_host is the SDK's name for Nova's ``host`` filter
            # (``host`` itself would be a client-side attribute filter).
            self.connection.compute.servers(details=True, all_projects=True,
                                            compute_host=host)))

    def live_migrate(self, server: compute_server.Server) -> None:
        """Live migration with no target: the scheduler (and the trust
        filter) chooses; block migration decided by Nova."""
        self._call("live-migrate server %s" % server.id,
                   lambda: self.connection.compute.live_migrate_server(
                       server, host=None, block_migration="auto"))


class DisableComputeAction(DistrustAction):
    name = "disable_compute"

    def __init__(self, compute: ComputeAPI | None = None, **_: Any) -> None:
        if compute is None:
            raise exception.ConfigInvalid(
                reason="distrust action disable_compute needs the compute "
                       "API: set the [trusted_pools_distrust] keystoneauth options")
        self.compute = compute

    def __call__(self, event: DistrustEvent) -> ActionRecord:
        reason = "trusted_pools: %s" % event.describe()
        try:
            services = self.compute.compute_services(event.host)
        except exception.TrustedPoolsError as error:
            return ActionRecord(self.name, event.host, "failed", str(error))
        if not services:
            return ActionRecord(self.name, event.host, "skipped",
                                "no nova-compute service on this host")
        items, failed = [], False
        for service in services:
            service_id = str(service.id)
            if service.status == "disabled":
                items.append((service_id, "already disabled"))
                continue
            try:
                self.compute.disable_service(service, reason)
                items.append((service_id, "disabled"))
            except exception.TrustedPoolsError as error:
                failed = True
                items.append((service_id, "failed: %s" % error))
        LOG.warning("disable_compute on host %s: %s", event.host,
                    ", ".join("%s %s" % item for item in items))
        return ActionRecord(self.name, event.host,
                            "failed" if failed else "done",
                            "nova-compute disabled with reason %r" % reason,
                            tuple(items))


def requires_trust(server: Mapping[str, Any]) -> bool:
    """Whether the server's embedded flavor (microversion >= 2.47) asks
    for trust. A flavor we cannot read is treated as asking for it (the
    instance may need a trusted host; moving it is the safe side).
    ``server``: an openstacksdk ``Server`` (a mapping) or a plain dict."""
    flavor = server.get("flavor")
    specs = flavor.get("extra_specs") if isinstance(flavor, Mapping) \
        else None
    if not isinstance(specs, Mapping):
        return True
    return requirement_from_specs(dict(specs)) is not None


class MigrateTrustedInstancesAction(DistrustAction):
    name = "migrate_trusted_instances"

    def __init__(self, compute: ComputeAPI | None = None,
                 max_migrations: int = 50, **_: Any) -> None:
        if compute is None:
            raise exception.ConfigInvalid(
                reason="distrust action migrate_trusted_instances needs "
                       "the compute API: set the [trusted_pools_distrust] keystoneauth "
                       "options")
        self.compute = compute
        self.max_migrations = max_migrations

    def __call__(self, event: DistrustEvent) -> ActionRecord:
        try:
            servers = self.compute.servers_on_host(event.host)
        except exception.TrustedPoolsError as error:
            return ActionRecord(self.name, event.host, "failed", str(error))
        wanted = [s for s in servers if requires_trust(s)
                  and s.status == "ACTIVE"]
        items, failed = [], False
        for index, server in enumerate(wanted):
            server_id = str(server.id)
            if index >= self.max_migrations:
                items.append((server_id, "left: over max_migrations"))
                continue
            try:
                self.compute.live_migrate(server)
                items.append((server_id, "live migration requested"))
            except exception.TrustedPoolsError as error:
                failed = True
                items.append((server_id, "failed: %s" % error))
        LOG.warning("migrate_trusted_instances on host %s: %d of %d "
                    "instances require trust: %s", event.host, len(wanted),
                    len(servers), ", ".join("%s %s" % i for i in items)
                    or "nothing to move")
        return ActionRecord(
            self.name, event.host, "failed" if failed else (
                "done" if wanted else "skipped"),
            "%d of %d instances require trust" % (len(wanted), len(servers)),
            tuple(items))


#: The shipped actions, also used when the package's entry points are not
#: installed yet (an editable install that predates them).
BUILTIN_ACTIONS: dict[str, type[DistrustAction]] = {
    cls.name: cls for cls in (NotifyAction, DisableComputeAction,
                              MigrateTrustedInstancesAction)}


def load_actions(names: Sequence[str], **kwargs: Any
                 ) -> list[DistrustAction]:
    """Instantiate the named actions, in order, through stevedore.

    ``kwargs`` (``notifier``, ``compute``, ``max_migrations``) go to every
    action's constructor. A name that loads nowhere, or an action that
    cannot be built, is a ConfigInvalid naming it.
    """
    from stevedore import extension

    available = {ext.name: ext.plugin for ext in
                 extension.ExtensionManager(NAMESPACE, invoke_on_load=False)}
    actions = []
    for name in names:
        plugin = available.get(name) or BUILTIN_ACTIONS.get(name)
        if plugin is None:
            raise exception.ConfigInvalid(
                reason="[trusted_pools_distrust] actions: no action named %r in %s"
                       % (name, NAMESPACE))
        try:
            actions.append(plugin(**kwargs))
        except exception.ConfigInvalid:
            raise
        except Exception as error:  # noqa: BLE001 - plugin code varies
            raise exception.ConfigInvalid(
                reason="[trusted_pools_distrust] action %r failed to load: %s"
                       % (name, error))
    return actions


# --- the consumer ----------------------------------------------------------------------

def _is_trusted(verdict: Verdict) -> bool:
    """Trusted at any level, by the one trust rule."""
    return trusted_level(verdict) != NOT_TRUSTED


class DistrustResponder:
    """Runs the actions on each verified trusted -> not trusted transition.

    Register :meth:`observe` on an ``ObservedVerdictCache``. With
    ``background=True`` the actions run in a worker thread (compute API
    calls must not hold up the notification listener).
    """

    def __init__(self, cache: VerdictCache,
                 actions: Sequence[DistrustAction], *,
                 background: bool = False,
                 reporter: Callable[[DistrustEvent, list[ActionRecord]],
                                    Any] | None = None) -> None:
        self.cache = cache
        self.actions = list(actions)
        #: Called with each event and its records once the actions ran
        #: (:class:`~trusted_pools.nova.remediation.report.APIReporter`:
        #: the records reach the API, the dashboard shows them).
        self.reporter = reporter
        self.history: collections.deque[ActionRecord] = collections.deque(
            maxlen=_HISTORY)
        #: host -> (trusted?, level) of the last verdict seen.
        self._last: dict[str, tuple[bool, int]] = {}
        #: host -> names of actions that failed on its current distrust;
        #: they run again on the host's next not-trusted verdict, so a
        #: compute API that was away does not leave the host in use.
        self._pending: dict[str, tuple[frozenset[str], int]] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[DistrustEvent | None] | None = None
        self._thread: threading.Thread | None = None
        if background:
            self._queue = queue.Queue()
            self._thread = threading.Thread(
                target=self._work, name="trusted-pools-distrust",
                daemon=True)
            self._thread.start()

    def observe(self, verdict: Verdict) -> DistrustEvent | None:
        """Called with every verified, admitted verdict. Returns the event
        if this verdict is a transition to distrust (and acts on it)."""
        entry = self.cache.get(verdict.host)
        if entry is None or entry.verdict != verdict:
            return None         # an older verdict than the one kept
        trusted = _is_trusted(verdict)
        with self._lock:
            before = self._last.get(verdict.host)
            self._last[verdict.host] = (trusted, int(verdict.level))
            if trusted:
                self._pending.pop(verdict.host, None)
            retry = self._pending.get(verdict.host)
        if trusted or before is None or (not before[0] and not retry):
            return None
        again = retry is not None and not before[0]
        event = DistrustEvent(
            host=verdict.host, status=verdict.status.value,
            level=int(verdict.level),
            previous_level=retry[1] if again else before[1],
            reasons=tuple(verdict.reasons), issued_at=verdict.issued_at,
            jti=entry.jti, only=retry[0] if again else None)
        if self._queue is not None:
            self._queue.put(event)
        else:
            self.respond(event)
        return event

    def respond(self, event: DistrustEvent) -> list[ActionRecord]:
        """Run every action on ``event``; each outcome is logged and kept."""
        records = []
        failed = set()
        for action in self.actions:
            if event.only is not None and action.name not in event.only:
                continue
            try:
                record = action(event)
            except Exception as error:  # noqa: BLE001 - one action's bug
                LOG.exception("Distrust action %s crashed on host %s",
                              action.name, event.host)
                record = ActionRecord(action.name, event.host, "failed",
                                      "crashed: %s" % type(error).__name__)
            log = LOG.warning if record.outcome == "failed" else LOG.info
            log("Distrust action %s on host %s: %s (%s)", record.action,
                record.host, record.outcome, record.detail)
            records.append(record)
            self.history.append(record)
            if record.outcome == "failed":
                failed.add(action.name)
        if self.reporter is not None and records:
            try:
                self.reporter(event, records)
            except Exception:  # noqa: BLE001 - a report never stops actions
                LOG.exception("Could not report the distrust actions on "
                              "host %s", event.host)
        with self._lock:
            if failed and not self._last.get(event.host, (False, 0))[0]:
                self._pending[event.host] = (frozenset(failed),
                                             event.previous_level)
            else:
                self._pending.pop(event.host, None)
        return records

    def _work(self) -> None:
        assert self._queue is not None
        while True:
            event = self._queue.get()
            try:
                if event is None:
                    return
                self.respond(event)
            finally:
                self._queue.task_done()

    def wait_idle(self) -> None:
        if self._queue is not None:
            self._queue.join()

    def stop(self) -> None:
        if self._queue is not None and self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    def records_for(self, host: str) -> list[ActionRecord]:
        return [r for r in self.history if r.host == host]

