"""Feeding the verdict cache: trust notifications and bulk refreshes.

The conductor publishes ``trusted_pools.host.trust.update`` (driver
messagingv2, topic ``trusted_pools_notifications``) whenever a host's trust
changes, with payload ``{"host", "status", "level", "signed_result"}``. Only
``signed_result`` is trusted, after its signature verifies; the other
fields are cross-checked and a disagreement is logged (the signed result
counts). A payload that is not of that shape is refused with a log line.

Because the conductor notifies only on a change, a bulk ``verdicts_since``
refresh runs at start, every ``refresh_interval`` seconds, and again soon
after a failed one (its cursor stays put, so the gap is covered).

"Contact" (without it for ``grace`` seconds every host fails
trust-requiring requests) is proof that a conductor is alive, so only what
a conductor must have signed recently counts: a notification whose token
verified and is newer than the one kept, or a bulk refresh that returned at
least one token that verifies now. A malformed or unverifiable payload, or
an old token again (anyone on the bus can replay one), is not contact.

Each scheduler process listens in its own notification pool: processes in
one pool would share a queue and each would see only part of the updates.

Keys never come from the bus: they are pinned in configuration
(``conductor_public_keys``) or, with ``fetch_public_keys``, read from
trusted-pools-api's JWKS (``GET /v1/keys``) over keystoneauth, an
authenticated HTTPS call to the endpoint in the Keystone catalog. Anyone
holding bus credentials can publish a notification whose token names an
unknown key id; that triggers at most one JWKS fetch per 30 s and never
an RPC call.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any, Callable, Protocol

import oslo_messaging as messaging
from keystoneauth1 import exceptions as ks_exceptions
from oslo_config import cfg

from trusted_pools import exception
from trusted_pools.protocol import keystore
from trusted_pools.common import keystone
from trusted_pools.common import rpc
from trusted_pools.conductor import rpcapi as conductor_rpcapi
from trusted_pools.protocol import topics
from trusted_pools.nova.scheduler import opts as scheduler_conf
from trusted_pools.nova.scheduler.cache import Admission, VerdictCache

__all__ = [
    "TRUST_EVENT", "ConductorSource", "KeySource", "verdicts_client",
    "JWKSKeySource",
    "TrustNotificationEndpoint", "TrustListener", "load_public_keys",
    "default_cache", "stop_default",
]

LOG = logging.getLogger(__name__)

#: Event type of the conductor's trust notifications.
TRUST_EVENT = topics.TRUST_EVENT
#: Keystone service type of trusted-pools-api.
API_SERVICE_TYPE = "trusted-pools"
#: Seconds between two key fetches triggered by unknown key ids.
_KEY_FETCH_SPACING = 30.0
#: Seconds before retrying a failed refresh (at most refresh_interval).
_RETRY_AFTER = 5.0


class ConductorSource(Protocol):
    """What the listener needs of the conductor
    (:class:`trusted_pools.conductor.rpcapi.VerdictsAPI` fits)."""

    def verdicts_since(self, context: dict, since: float
                       ) -> list[dict[str, Any]]: ...


class KeySource(Protocol):
    """Where keys beyond the pinned ones come from (never the bus)."""

    def fetch(self) -> dict[str, Any]: ...


def verdicts_client(transport: messaging.Transport, exchange: str,
                    timeout: float) -> conductor_rpcapi.VerdictsAPI:
    """The conductors' verdict read API (``verdicts_since``, the only
    conductor method a consumer may call) on the consumer's own transport.

    nova-scheduler's own ``control_exchange`` is ``nova``; the conductor
    listens on the trusted_pools exchange, so the target names it.
    """
    return conductor_rpcapi.VerdictsAPI(timeout=timeout, transport=transport,
                                        exchange=exchange)


class JWKSKeySource:
    """The conductors' public keys from trusted-pools-api's ``/v1/keys``
    (a JWKS) through a keystoneauth1 Adapter: the caller authenticates to
    Keystone and the API's endpoint comes from the catalog."""

    def __init__(self, adapter: Any,
                 group: str = "trusted_pools_scheduler") -> None:
        self._adapter = adapter
        self.group = group

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts, group: str
                  ) -> "JWKSKeySource":
        return cls(keystone.adapter_from_conf(conf, group, API_SERVICE_TYPE),
                   group)

    def fetch(self) -> dict[str, Any]:
        try:
            response = self._adapter.get("/v1/keys")
        except ks_exceptions.ClientException as error:
            raise exception.ServiceUnavailable(
                service="trusted-pools", reason=_describe(error),
                group=self.group)
        if response.status_code != 200:
            raise exception.ServiceUnavailable(
                service="trusted-pools", group=self.group,
                reason="GET /v1/keys answered HTTP %d"
                % response.status_code)
        try:
            jwks = response.json()
        except ValueError:
            jwks = None
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"),
                                                          list):
            raise exception.ResultMalformed(
                reason="GET /v1/keys did not answer a JWKS object")
        return keys_from_jwks(jwks["keys"])


def _describe(error: Exception) -> str:
    return "%s: %s" % (type(error).__name__, error)


def keys_from_jwks(jwks: list[Any]) -> dict[str, Any]:
    """kid -> key from a JWKS's ``keys``; a key whose kid is not its own
    thumbprint is refused (the whole set: a consumer pins what it gets)."""
    keys = {}
    for jwk in jwks:
        key = keystore.public_key_from_jwk(jwk)
        kid = jwk.get("kid") if isinstance(jwk, dict) else None
        if keystore.jwk_thumbprint(key) != kid:
            raise exception.InvalidParameterValue(
                name="keys", reason="kid %r is not the thumbprint of its "
                "key" % (kid,))
        keys[kid] = key
    return keys


def load_public_keys(paths: list[str]) -> dict[str, Any]:
    """kid -> key from PEM files; an unreadable file is a ConfigInvalid."""
    keys = []
    for path in paths:
        try:
            with open(path, "rb") as handle:
                data = handle.read(64 * 1024)
        except OSError as error:
            raise exception.ConfigInvalid(
                reason="cannot read conductor public key %s: %s"
                % (path, error.strerror))
        try:
            keys.append(keystore.public_key_from_pem(data))
        except exception.InvalidParameterValue as error:
            raise exception.ConfigInvalid(
                reason="conductor public key %s: %s" % (path, error))
    return keystore.key_set(keys)


class TrustNotificationEndpoint:
    """oslo.messaging notification endpoint: verified verdicts -> cache."""

    filter_rule = messaging.NotificationFilter(
        event_type="^" + TRUST_EVENT.replace(".", r"\.") + "$")

    def __init__(self, cache: VerdictCache,
                 on_unknown_key: Callable[[], bool] | None = None) -> None:
        self.cache = cache
        self._on_unknown_key = on_unknown_key

    def info(self, ctxt: Any, publisher_id: str, event_type: str,
             payload: Any, metadata: Any) -> Any:
        self.handle(payload, publisher_id)
        return messaging.NotificationResult.HANDLED

    def handle(self, payload: Any, origin: str = "conductor") -> bool:
        """Admit the signed result of one payload; False if refused."""
        if (not isinstance(payload, dict)
                or not isinstance(payload.get("signed_result"), str)
                or not isinstance(payload.get("host"), str)):
            LOG.warning("Refused trust notification from %s: malformed "
                        "payload (expected a JSON object with string 'host' "
                        "and 'signed_result'); nothing admitted",
                        str(origin)[:128])
            return False
        host = payload["host"][:255]
        try:
            admission = admit_with_key_retry(self.cache, payload[
                "signed_result"], self._on_unknown_key)
        except exception.SignedResultError as error:
            LOG.warning("Refused trust notification for host %s from %s: "
                        "%s; nothing admitted", host, str(origin)[:128],
                        error)
            return False
        verdict = admission.verdict
        if not admission.kept:
            LOG.info("Trust notification for host %s carries verdict "
                     "sequence %d, not newer than the one kept; ignored",
                     verdict.host, admission.sequence)
            return False
        self.cache.mark_contact()
        claimed = (payload.get("host"), payload.get("status"),
                   payload.get("level"))
        signed = (verdict.host, verdict.status.value, int(verdict.level))
        if claimed != signed:
            LOG.warning("Trust notification fields %r disagree with its "
                        "signed result %r; the signed result counts",
                        claimed, signed)
        LOG.info("Host %s is %s at level %d per the conductor's signed "
                 "result", verdict.host, verdict.status.value,
                 verdict.level)
        return True


def admit_with_key_retry(cache: VerdictCache, token: str,
                         on_unknown_key: Callable[[], bool] | None
                         ) -> Admission:
    try:
        return cache.admit_token(token)
    except exception.ResultKeyUnknown:
        if on_unknown_key is None or not on_unknown_key():
            raise
        return cache.admit_token(token)


class TrustListener:
    """Notification listener plus the periodic bulk refresh thread."""

    def __init__(self, cache: VerdictCache, source: ConductorSource | None,
                 *, notification_transport: messaging.Transport | None,
                 exchange: str, pool: str | None = None,
                 refresh_interval: float = 30.0,
                 key_source: KeySource | None = None,
                 wall: Callable[[], float] = time.time) -> None:
        self.cache = cache
        self.source = source
        self.key_source = key_source
        self.exchange = exchange
        self.pool = pool or "trusted-pools-scheduler-%s-%d" % (
            socket.gethostname(), os.getpid())
        self.refresh_interval = refresh_interval
        self.fetch_keys = key_source is not None
        self._wall = wall
        self._transport = notification_transport
        self._server: messaging.MessageHandlingServer | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._cursor: float | None = None
        self._last_refreshed: float | None = None
        self._last_key_fetch = 0.0
        # Keys from the configuration stay; fetched ones are replaced by
        # each fetch, so a key the conductors retired stops being accepted.
        self._configured_keys = cache.public_keys()
        self.endpoint = TrustNotificationEndpoint(
            cache, self._fetch_keys if self.fetch_keys else None)

    # --- keys ------------------------------------------------------------------

    def _fetch_keys(self) -> bool:
        """Fetch the conductors' keys from the API's JWKS (rate-limited);
        True if fetched. Never over the bus."""
        now = time.monotonic()
        if self.key_source is None or (self._last_key_fetch and now
                                       - self._last_key_fetch
                                       < _KEY_FETCH_SPACING):
            return False
        self._last_key_fetch = now
        try:
            keys = self.key_source.fetch()
        except exception.TrustedPoolsError as error:
            LOG.warning("Could not fetch the conductor public keys from "
                        "trusted-pools-api: %s", _describe(error))
            return False
        self.cache.set_public_keys({**self._configured_keys, **keys})
        LOG.info("Conductor public keys fetched from trusted-pools-api: "
                 "%s", ", ".join(sorted(keys)))
        return True

    # --- bulk refresh ----------------------------------------------------------

    def refresh(self) -> int:
        """Pull verdicts issued since the cursor; returns how many were
        admitted. Raises MessagingException when the conductor is away."""
        if self.source is None:
            return 0
        started = self._wall()
        since = (self._cursor if self._cursor is not None
                 else started - self.cache.max_age)
        items = self.source.verdicts_since({}, since)
        if not isinstance(items, list):
            raise exception.ResultMalformed(
                reason="verdicts_since answered a %s, not a list"
                % type(items).__name__)
        admitted = refused = verified = 0
        for item in items:
            token = item.get("signed_result") if isinstance(item,
                                                            dict) else None
            host = item.get("host") if isinstance(item, dict) else None
            if not isinstance(token, str) or not isinstance(host, str):
                refused += 1
                continue
            if self.cache.knows_token(host, token):
                # Verified when it arrived; still evidence of a live
                # conductor while it has not expired.
                verified += self.cache.holds_unexpired(host, token)
                continue
            try:
                kept = admit_with_key_retry(
                    self.cache, token, self._fetch_keys if self.fetch_keys
                    else None).kept
                verified += 1
                admitted += kept
            except exception.SignedResultError as error:
                refused += 1
                LOG.warning("Refused verdict for host %s from the bulk "
                            "refresh: %s; nothing admitted", host[:255],
                            error)
        if verified:
            self.cache.mark_contact()
        else:
            # An empty answer is normal between rounds; one whose every
            # token fails is not.
            LOG.log(logging.WARNING if items else logging.DEBUG,
                    "Bulk refresh since %.0f returned no verdict that "
                    "verifies (%d items): not counted as contact with the "
                    "conductor", since, len(items))
        # Overlap one interval plus the leeway: verdicts are written to the
        # conductor's database a little after they are issued.
        self._cursor = started - self.refresh_interval - self.cache.leeway
        LOG.debug("Bulk refresh since %.0f: %d verdicts, %d admitted, %d "
                  "refused", since, len(items), admitted, refused)
        return admitted

    def _refresh_logged(self) -> bool:
        try:
            self.refresh()
            return True
        except (messaging.MessagingException,
                exception.TrustedPoolsError) as error:
            age = self.cache.contact_age()
            LOG.warning("Bulk refresh of verdicts failed (%s); %s",
                        _describe(error),
                        "no contact with the conductor yet: every host "
                        "fails trust-requiring requests" if age is None
                        else "last contact %.0f s ago (grace %d s)"
                        % (age, self.cache.grace))
            return False

    @property
    def retry_spacing(self) -> float:
        """Seconds between rounds of :meth:`refresh_round`."""
        return min(_RETRY_AFTER, self.refresh_interval)

    def refresh_round(self) -> None:
        """One round for a caller's periodic job (every
        :attr:`retry_spacing` seconds): a bulk refresh once
        ``refresh_interval`` has passed since the last good one, and on
        every round after a failure."""
        now = time.monotonic()
        if self._last_refreshed is not None and \
                now - self._last_refreshed < self.refresh_interval:
            return
        if self._refresh_logged():
            self._last_refreshed = now

    def _run(self) -> None:
        ok = True
        while not self._stop.wait(self.refresh_interval if ok else min(
                _RETRY_AFTER, self.refresh_interval)):
            ok = self._refresh_logged()

    # --- life cycle ------------------------------------------------------------

    def start(self, initial_refresh: bool = True,
              refresh_thread: bool = True) -> None:
        """Listen for notifications; with ``refresh_thread`` a thread of
        its own runs the bulk refresh (else the caller schedules
        :meth:`refresh_round`, as ``trusted-pools-placement-sync`` does)."""
        if self.fetch_keys:
            self._fetch_keys()
        if initial_refresh and self._refresh_logged():
            self._last_refreshed = time.monotonic()
        if self._transport is not None:
            targets = [messaging.Target(topic=topic, exchange=self.exchange)
                       for topic in rpc.NOTIFICATION_TOPICS]
            self._server = messaging.get_notification_listener(
                self._transport, targets, [self.endpoint],
                executor="threading", pool=self.pool)
            self._server.start()
        if self.source is not None and refresh_thread:
            self._thread = threading.Thread(
                target=self._run, name="trusted-pools-verdict-refresh",
                daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.stop()
            self._server.wait()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


# --- the process-wide instance used by the filter ------------------------------

_DEFAULT: tuple[int, VerdictCache, TrustListener, list[Any]] | None = None
_DEFAULT_LOCK = threading.Lock()


def _build_default(conf: cfg.ConfigOpts
                   ) -> tuple[VerdictCache, TrustListener, list[Any]]:
    group = conf[scheduler_conf.group.name]
    keys = load_public_keys(list(group.conductor_public_keys))
    if not keys and not group.fetch_public_keys:
        LOG.error("[%s] conductor_public_keys is empty and "
                  "fetch_public_keys is off: no verdict can be verified, "
                  "so no host passes a request that needs trust",
                  scheduler_conf.group.name)
    cache = VerdictCache(keys, max_age=group.max_age, grace=group.grace,
                         leeway=group.clock_leeway)
    url = group.transport_url
    notification_transport = messaging.get_notification_transport(
        conf, url=url, allowed_remote_exmods=rpc.ALLOWED_EXMODS)
    rpc_transport = messaging.get_rpc_transport(
        conf, url=url, allowed_remote_exmods=rpc.ALLOWED_EXMODS)
    source = verdicts_client(rpc_transport, group.control_exchange,
                             group.rpc_timeout)
    listener = TrustListener(
        cache, source, notification_transport=notification_transport,
        exchange=group.control_exchange, pool=group.notification_pool,
        refresh_interval=group.refresh_interval,
        key_source=api_key_source(conf))
    listener.start()
    return cache, listener, [notification_transport, rpc_transport]


def api_key_source(conf: cfg.ConfigOpts) -> JWKSKeySource | None:
    """The API's JWKS as a key source if ``fetch_public_keys`` is on."""
    name = scheduler_conf.group.name
    if not conf[name].fetch_public_keys:
        return None
    return JWKSKeySource.from_conf(conf, name)


def default_cache(conf: cfg.ConfigOpts | None = None) -> VerdictCache:
    """The process's cache, its listener started on first use.

    Keyed by process id: a scheduler worker forked after the filter was
    loaded starts its own listener (threads do not survive a fork).
    """
    global _DEFAULT
    state = _DEFAULT
    if state is not None and state[0] == os.getpid():
        return state[1]
    conf = cfg.CONF if conf is None else conf
    with _DEFAULT_LOCK:
        state = _DEFAULT
        if state is None or state[0] != os.getpid():
            if scheduler_conf.group.name not in conf:
                scheduler_conf.register_opts(conf)
            cache, listener, transports = _build_default(conf)
            _DEFAULT = state = (os.getpid(), cache, listener, transports)
    return state[1]


def default_listener() -> TrustListener | None:
    state = _DEFAULT
    return state[2] if state is not None else None


def stop_default(wait: bool = True) -> None:
    """Stop the process's listener and close its transports.

    With ``wait=False`` the (seconds long) broker shutdown runs in a
    daemon thread; the cache is detached at once either way.
    """
    global _DEFAULT
    with _DEFAULT_LOCK:
        state, _DEFAULT = _DEFAULT, None
    if state is None or state[0] != os.getpid():
        return

    def shutdown() -> None:
        state[2].stop()
        for transport in state[3]:
            transport.cleanup()

    if wait:
        shutdown()
    else:
        threading.Thread(target=shutdown, name="trusted-pools-listener-stop",
                         daemon=True).start()
