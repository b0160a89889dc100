"""The trait keeper: Placement traits that follow the signed verdicts.

Each compute node's resource provider (named after the host, which is how
Nova names the provider of a libvirt node) carries, while and only while the
host is trusted:

* ``CUSTOM_TRUSTED_POOLS_TRUSTED``, and
* ``CUSTOM_TRUSTED_POOLS_LOA_<n>`` for **every** ``n`` from 1 up to the
  host's level of assurance (cumulative, not only the exact level).

Cumulative, so that a flavor's ``trait:CUSTOM_TRUSTED_POOLS_LOA_3=required``
means "level 3 or higher": Placement's ``required`` is set membership and
cannot compare numbers, so a level-4 host must carry LOA_3 too to match it.
That is also what the scheduler filter enforces for the same trait
(``extra_specs._trait_levels``: the highest LOA trait asked is a minimum).

"Trusted" is exactly the verdict cache's :meth:`VerdictCache.is_trusted`
at level 1: a verified "trusted" verdict without a contraindicated claim,
received less than ``max_age`` ago by the local clock, not past its expiry,
and the conductor heard from within ``grace``. Anything else (untrusted,
unknown, stale, expired, no verdict, conductor out of contact) removes every
``CUSTOM_TRUSTED_POOLS_*`` trait: fail closed. Only verdicts whose signature
verified ever reach the cache (the scheduler's listener and endpoint are
reused as they are), so a bad signature, an unknown key or an expired result
never adds a trait; the endpoint logs why it refused it.

Changes are driven three ways, one at a time (a lock makes each keeper
one writer to Placement): every admitted verdict (an observer on the
cache), a sweep every ``sweep_interval`` seconds of the hosts that carry
our traits (a verdict turns stale without any new message), and a full
resync at start and every ``resync_interval``: every provider carrying any
``CUSTOM_TRUSTED_POOLS_`` trait or known to the cache is recomputed.
The keeper's thread consumes the queue; it also runs the sweep and the
resync on their intervals unless ``start(periodic=False)`` says the
caller's job table runs them (``trusted-pools-placement-sync`` does).

Other traits on the providers are never touched (see ``client``).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import queue
import threading
import time
from typing import Any, Callable, Iterable, Mapping, TypeVar

from trusted_pools import exception
from trusted_pools.protocol import keystore
from trusted_pools.protocol.verdict import Verdict
from trusted_pools.nova.remediation.placement import PlacementClient
from trusted_pools.nova.scheduler.cache import Admission, VerdictCache
from trusted_pools.nova.scheduler.extra_specs import (TRAIT_TRUSTED,
                                                      trait_for_level)

_R = TypeVar("_R")

__all__ = [
    "TRAIT_PREFIX", "MANAGED_TRAITS", "traits_for_level",
    "ObservedVerdictCache", "SyncRecord", "ResyncReport", "TraitKeeper",
]

LOG = logging.getLogger(__name__)

#: Every trait this keeper owns starts with this; no other is touched.
TRAIT_PREFIX = "CUSTOM_TRUSTED_POOLS_"
MANAGED_TRAITS = frozenset([TRAIT_TRUSTED] + [trait_for_level(n)
                                              for n in range(1, 5)])
_NO_TRAITS: frozenset[str] = frozenset()


def traits_for_level(level: int) -> frozenset[str]:
    """Traits of a host trusted at ``level`` (1-4): TRUSTED and LOA_1 up
    to LOA_level; an empty set for level 0 (not trusted)."""
    if type(level) is not int or not 0 <= level <= 4:
        raise exception.InvalidParameterValue(name="level",
                                              reason="must be 0 to 4")
    if level == 0:
        return _NO_TRAITS
    return frozenset([TRAIT_TRUSTED] + [trait_for_level(n)
                                        for n in range(1, level + 1)])


class ObservedVerdictCache(VerdictCache):
    """The scheduler's :class:`VerdictCache`, telling observers about every
    verdict it verified and admitted.

    Observers get the verified :class:`Verdict` (never one that failed to
    verify) and must be quick: they run in the listener's thread. They
    should read the cache for the host's current state, because the
    verdict they get may be older than the one kept.
    """

    def __init__(self, public_keys: Mapping[str, keystore.PublicKey],
                 **kwargs: Any) -> None:
        super().__init__(public_keys, **kwargs)
        self._observers: list[Callable[[Verdict], object]] = []

    def add_observer(self, observer: Callable[[Verdict], object]) -> None:
        self._observers.append(observer)

    def admit_token(self, token: str) -> Admission:
        admission = super().admit_token(token)
        verdict = admission.verdict
        for observer in list(self._observers):
            try:
                observer(verdict)
            except Exception:  # noqa: BLE001 - the cache must stay fed
                LOG.exception("Verdict observer %r failed for host %s",
                              observer, verdict.host)
        return admission


@dataclasses.dataclass(frozen=True)
class SyncRecord:
    """What one host's sync did (also logged)."""

    host: str
    #: "updated", "unchanged", "no_provider" or "failed".
    outcome: str
    provider: str | None = None
    added: frozenset[str] = _NO_TRAITS
    removed: frozenset[str] = _NO_TRAITS
    conflicts: int = 0
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class ResyncReport:
    checked: int
    changed: int
    missing_providers: tuple[str, ...]
    failed: tuple[str, ...]
    seconds: float


def _one_writer(method: Callable[..., _R]) -> Callable[..., _R]:
    """Run ``method`` under the keeper's writer lock: the queue consumer
    and the periodic sweep and resync never write to Placement at once."""
    @functools.wraps(method)
    def locked(self: "TraitKeeper", *args: Any, **kwargs: Any) -> _R:
        with self._writer:
            return method(self, *args, **kwargs)
    return locked


class TraitKeeper:
    """Keeps ``CUSTOM_TRUSTED_POOLS_*`` traits in step with ``cache``.

    Call :meth:`sync_host`, :meth:`sweep` and :meth:`resync` directly, or
    :meth:`start` the worker thread and let :meth:`observe` (registered on
    an :class:`ObservedVerdictCache`) feed it.
    """

    def __init__(self, cache: VerdictCache, client: PlacementClient, *,
                 sweep_interval: float = 5.0, resync_interval: float = 600.0
                 ) -> None:
        self.cache = cache
        self.client = client
        self.sweep_interval = sweep_interval
        self.resync_interval = resync_interval
        #: host -> our traits as last written or seen on its provider.
        self._applied: dict[str, frozenset[str]] = {}
        self._providers: dict[str, str] = {}
        self._retry: set[str] = set()
        self._queue: queue.Queue[str] = queue.Queue()
        self._queued: set[str] = set()
        self._lock = threading.Lock()
        self._writer = threading.RLock()
        self._busy = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the decision ----------------------------------------------------------

    def desired(self, host: str, now: float | None = None) -> frozenset[str]:
        """Our traits for ``host`` right now (empty unless trusted)."""
        now = self.cache.monotonic() if now is None else now
        if not self.cache.is_trusted(host, 1, now=now):
            return _NO_TRAITS
        entry = self.cache.get(host)
        if entry is None or entry.trusted_level < 1:
            return _NO_TRAITS
        return traits_for_level(entry.trusted_level)

    def _why(self, host: str, now: float) -> str:
        entry = self.cache.get(host)
        if entry is not None and entry.trusted_level >= 1 and \
                self.cache.is_trusted(host, 1, now=now):
            return "verdict %s: trusted at level %d" % (
                entry.jti, entry.trusted_level)
        return self.cache.explain(host, 1, self.cache.max_age, now)

    # --- one host ----------------------------------------------------------------

    def _provider_uuid(self, host: str) -> str:
        uuid = self._providers.get(host)
        if uuid is None:
            uuid = self.client.provider_by_name(host).uuid
            self._providers[host] = uuid
        return uuid

    def _write(self, host: str, desired: frozenset[str]) -> Any:
        uuid = self._provider_uuid(host)
        try:
            return self.client.update_traits(
                uuid, add=desired, remove=MANAGED_TRAITS - desired)
        except exception.ServiceAPIError as error:
            if error.kwargs.get("status") != 404:
                raise
        # The provider was deleted (node rebuilt?): look it up once more.
        self._providers.pop(host, None)
        return self.client.update_traits(self._provider_uuid(host),
                                         add=desired,
                                         remove=MANAGED_TRAITS - desired)

    @_one_writer
    def sync_host(self, host: str) -> SyncRecord:
        """Bring one host's provider in line with its verdict now."""
        now = self.cache.monotonic()
        desired = self.desired(host, now)
        why = self._why(host, now)
        try:
            update = self._write(host, desired)
        except exception.ResourceProviderNotFound:
            self._applied.pop(host, None)
            self._retry.discard(host)
            if desired:
                LOG.warning("Host %s is trusted (%s) but Placement has no "
                            "resource provider named %s: no trait added",
                            host, why, host)
            else:
                LOG.info("Host %s has no resource provider in Placement "
                         "and is not trusted (%s): nothing to do", host, why)
            return SyncRecord(host, "no_provider", reason=why)
        except (exception.ServiceUnavailable, exception.ServiceAPIError,
                exception.ConcurrentUpdate) as error:
            self._retry.add(host)
            LOG.warning("Could not update the trust traits of host %s "
                        "(%s); retried at the next sweep. Wanted: %s",
                        host, error, ", ".join(sorted(desired)) or "none")
            return SyncRecord(host, "failed", reason=str(error))
        self._retry.discard(host)
        self._applied[host] = desired
        added = (update.after - update.before) & MANAGED_TRAITS
        removed = (update.before - update.after) & MANAGED_TRAITS
        if update.written:
            LOG.info("Resource provider %s (host %s): added %s, removed %s "
                     "because %s", update.provider, host,
                     ", ".join(sorted(added)) or "nothing",
                     ", ".join(sorted(removed)) or "nothing", why)
        return SyncRecord(host, "updated" if update.written else "unchanged",
                          provider=update.provider, added=added,
                          removed=removed, conflicts=update.conflicts,
                          reason=why)

    # --- periodic ----------------------------------------------------------------

    @_one_writer
    def sweep(self) -> list[SyncRecord]:
        """Re-check the hosts that carry our traits (or failed last time):
        a verdict can turn stale or expire without any message."""
        now = self.cache.monotonic()
        hosts = {h for h, t in self._applied.items() if t} | self._retry
        return [self.sync_host(host) for host in sorted(hosts)
                if host in self._retry or self.desired(host, now)
                != self._applied.get(host)]

    @_one_writer
    def resync(self) -> ResyncReport:
        """Recompute every provider carrying one of our traits and every
        host known to the cache; write only where it differs."""
        started = time.monotonic()
        self.client.ensure_traits(MANAGED_TRAITS)
        providers = {p.name: p.uuid for p in self.client.providers()}
        current: dict[str, set[str]] = {}
        for trait in sorted(MANAGED_TRAITS):
            for provider in self.client.providers(required_any=[trait]):
                current.setdefault(provider.name, set()).add(trait)
        self._providers = dict(providers)
        hosts = set(current) | set(self.cache.hosts()) | set(self._applied)
        now = self.cache.monotonic()
        changed, missing, failed = 0, [], []
        for host in sorted(hosts):
            desired = self.desired(host, now)
            if host not in providers:
                if desired:
                    missing.append(host)
                    LOG.warning("Host %s is trusted but Placement has no "
                                "resource provider named %s: no trait "
                                "added", host, host)
                self._applied.pop(host, None)
                continue
            if frozenset(current.get(host, ())) == desired:
                self._applied[host] = desired
                continue
            record = self.sync_host(host)
            if record.outcome == "updated":
                changed += 1
            elif record.outcome == "failed":
                failed.append(host)
        report = ResyncReport(checked=len(hosts), changed=changed,
                              missing_providers=tuple(missing),
                              failed=tuple(failed),
                              seconds=time.monotonic() - started)
        LOG.info("Full trait resync: %d hosts checked, %d changed, %d "
                 "without provider, %d failed, %.2f s", report.checked,
                 report.changed, len(missing), len(failed), report.seconds)
        return report

    # --- the worker ----------------------------------------------------------------

    def observe(self, verdict: Verdict) -> None:
        """Observer for :class:`ObservedVerdictCache`: queue the host."""
        self.enqueue(verdict.host)

    def enqueue(self, host: str) -> None:
        with self._lock:
            if host in self._queued:
                return
            self._queued.add(host)
            self._busy += 1
        self._queue.put(host)

    def _next_host(self, timeout: float) -> str | None:
        try:
            host = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        with self._lock:
            self._queued.discard(host)
        return host

    def _run(self, initial_resync: bool, periodic: bool) -> None:
        last_resync = time.monotonic()
        if initial_resync:
            self._guarded(self.resync)
        last_sweep = time.monotonic()
        while not self._stop.is_set():
            host = self._next_host(min(self.sweep_interval, 0.5))
            if host is not None:
                try:
                    self._guarded(lambda: self.sync_host(host))
                finally:
                    with self._lock:
                        self._busy -= 1
                continue
            if not periodic:
                continue
            now = time.monotonic()
            if self.resync_interval and now - last_resync \
                    >= self.resync_interval:
                last_resync = now
                self._guarded(self.resync)
            elif now - last_sweep >= self.sweep_interval:
                last_sweep = now
                self._guarded(self.sweep)

    @staticmethod
    def _guarded(job: Callable[[], object]) -> None:
        try:
            job()
        except exception.TrustedPoolsError as error:
            LOG.warning("Trait keeper round failed: %s; retrying later",
                        error)
        except Exception:  # noqa: BLE001 - the keeper must keep running
            LOG.exception("Trait keeper round failed unexpectedly")

    def resync_guarded(self) -> None:
        """A resync that logs instead of raising (a periodic job)."""
        self._guarded(self.resync)

    def sweep_guarded(self) -> None:
        """A sweep that logs instead of raising (a periodic job)."""
        self._guarded(self.sweep)

    def start(self, initial_resync: bool = True,
              periodic: bool = True) -> None:
        """Start the queue consumer; with ``periodic`` it also sweeps and
        resyncs on its intervals (else the caller schedules
        :meth:`sweep_guarded` and :meth:`resync_guarded`)."""
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(initial_resync, periodic),
            name="trusted-pools-trait-keeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every queued host is synced; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._busy == 0:
                    return True
            time.sleep(0.002)
        return False

    def applied(self, host: str) -> frozenset[str]:
        """Our traits on ``host``'s provider as last written or seen."""
        return self._applied.get(host, _NO_TRAITS)

