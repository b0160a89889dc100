"""TrustedHostFilter: Nova places trust-requiring servers on trusted hosts.

Enable it in ``nova.conf`` of nova-scheduler beside Nova's filters::

    [filter_scheduler]
    available_filters = nova.scheduler.filters.all_filters
    available_filters = trusted_pools.nova.scheduler.filters.TrustedHostFilter
    enabled_filters = ComputeFilter,...,TrustedHostFilter

Requests without trust extra specs or trust traits pass untouched (see
:mod:`trusted_pools.nova.scheduler.extra_specs`), except requests for a
vTPM while ``[trusted_pools_scheduler] vtpm_requires_trust`` is on (the
default): those need a trusted host at ``default_min_level``, the hosts
the trusted_pools key manager gives a vTPM's key to. Nova runs the filters
for every boot, cold migration and resize (a named target host included),
and for live migrations unless forced with an API microversion below
2.68; so an untrusted destination is refused before the server is stopped
on its source. For the requests that need trust, the decision per host is
a lookup in the process's :class:`~.cache.VerdictCache`: no network call,
no signature check. The cache is fed in the background by
:mod:`trusted_pools.nova.scheduler.listener`.

The filter runs for every instance of a multi-create request (trust may
change between two of them) and on rebuild (``RUN_ON_REBUILD``): a rebuild
writes a new image onto the host, which must still be trusted.

Refusals are logged for the operator in nova-scheduler's log: one INFO
line per request naming the refused hosts and why (the first
``_LOGGED_REASONS`` of them), and one DEBUG line per refused host.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

from nova.scheduler import filters
from oslo_config import cfg

from trusted_pools.nova.scheduler import opts as scheduler_conf
from trusted_pools.nova.scheduler import extra_specs
from trusted_pools.nova.scheduler.cache import VerdictCache

__all__ = ["TrustedHostFilter", "requirement_of"]

LOG = logging.getLogger(__name__)

_LOGGED_REASONS = 10


def _image_traits(spec_obj: Any) -> list[str]:
    image = getattr(spec_obj, "image", None)
    if image is None or not image.obj_attr_is_set("properties"):
        return []
    props = image.properties
    if props is None or not props.obj_attr_is_set("traits_required"):
        return []
    return list(props.traits_required or ())


def _flavor_specs(spec_obj: Any) -> dict[str, Any]:
    flavor = getattr(spec_obj, "flavor", None)
    if flavor is None:
        return {}
    return flavor.extra_specs or {}


def _asks_for_vtpm(spec_obj: Any) -> bool:
    """Whether the request's flavor or image asks for a vTPM, as Nova's
    libvirt driver decides it. A request whose vTPM settings Nova itself
    finds contradictory counts as asking for one (fail closed)."""
    from nova.virt import hardware
    flavor = getattr(spec_obj, "flavor", None)
    if flavor is None:
        return False
    image = getattr(spec_obj, "image", None)
    try:
        return hardware.get_vtpm_constraint(flavor, image) is not None
    except Exception:  # noqa: BLE001 - Nova's own validation errors
        return True


def requirement_of(spec_obj: Any, default_min_level: int = 1,
                   vtpm_requires_trust: bool = False
                   ) -> extra_specs.TrustRequirement | None:
    """The trust a Nova ``RequestSpec`` asks for (None: no trust asked).

    With ``vtpm_requires_trust``, a vTPM request without trust specs asks
    for a trusted host at ``default_min_level``: the trusted_pools key
    manager releases a vTPM's key to trusted hosts only, and the scheduler
    is the last point where Nova can still refuse a cold migration or a
    resize before the source is stopped.
    """
    requirement = extra_specs.requirement_from_specs(
        _flavor_specs(spec_obj), _image_traits(spec_obj), default_min_level)
    if requirement is None and vtpm_requires_trust and \
            _asks_for_vtpm(spec_obj):
        requirement = extra_specs.TrustRequirement(
            min_level=max(default_min_level, 1),
            source="a vTPM ([trusted_pools_scheduler] vtpm_requires_trust)")
    return requirement


class TrustedHostFilter(filters.BaseHostFilter):
    """Pass only hosts with a fresh trusted verdict of the conductor."""

    RUN_ON_REBUILD = True
    run_filter_once_per_request = False

    def __init__(self, cache: VerdictCache | None = None,
                 conf: cfg.ConfigOpts | None = None) -> None:
        super().__init__()
        self._conf = cfg.CONF if conf is None else conf
        if scheduler_conf.group.name not in self._conf:
            scheduler_conf.register_opts(self._conf)
        self._own_cache = cache
        group = self._conf[scheduler_conf.group.name]
        self._default_min_level = group.default_min_level
        self._vtpm_requires_trust = group.vtpm_requires_trust
        self._use_nodename = group.host_key == "nodename"
        if cache is None:
            # Start the listener (and first bulk refresh) with the service,
            # not with the first request.
            self._cache()

    def _cache(self) -> VerdictCache:
        if self._own_cache is not None:
            return self._own_cache
        from trusted_pools.nova.scheduler import listener
        return listener.default_cache(self._conf)

    def _host_name(self, host_state: Any) -> str:
        return host_state.nodename if self._use_nodename else host_state.host

    def _limits(self, cache: VerdictCache,
                requirement: extra_specs.TrustRequirement) -> tuple[int, int]:
        max_age = cache.max_age
        if requirement.max_age is not None:
            max_age = min(max_age, requirement.max_age)
        return requirement.min_level, max_age

    # --- Nova's API ------------------------------------------------------------

    def host_passes(self, host_state: Any, spec_obj: Any) -> bool:
        """One host: parse the request, then a cache lookup."""
        requirement = requirement_of(spec_obj, self._default_min_level,
                                     self._vtpm_requires_trust)
        if requirement is None:
            return True
        return bool(list(self._filter([host_state], spec_obj, requirement)))

    def filter_all(self, filter_obj_list: Iterable[Any], spec_obj: Any
                   ) -> Iterable[Any]:
        """Every host of a request: parse the request once, then look up
        each host."""
        requirement = requirement_of(spec_obj, self._default_min_level,
                                     self._vtpm_requires_trust)
        if requirement is None:
            return filter_obj_list
        return self._filter(filter_obj_list, spec_obj, requirement)

    # --- the decision ----------------------------------------------------------

    def _filter(self, hosts: Iterable[Any], spec_obj: Any,
                requirement: extra_specs.TrustRequirement) -> list[Any]:
        cache = self._cache()
        instance = getattr(spec_obj, "instance_uuid", None)
        if requirement.invalid is not None:
            LOG.error("TrustedHostFilter refuses every host for instance "
                      "%s: the request's trust specification is invalid "
                      "(%s); fix the flavor or image", instance,
                      requirement.invalid)
            return []
        min_level, max_age = self._limits(cache, requirement)
        now = cache.monotonic()
        if not cache.in_contact(now):
            LOG.warning("TrustedHostFilter refuses every host for instance "
                        "%s: %s", instance,
                        cache.explain("", min_level, max_age, now))
            return []
        passes = cache.passes
        name_of = self._host_name
        kept, refused = [], []
        for host_state in hosts:
            if passes(name_of(host_state), min_level, max_age, now):
                kept.append(host_state)
            else:
                refused.append(host_state)
        if refused:
            self._log_refusals(cache, refused, instance, requirement,
                               min_level, max_age, now)
        return kept

    def _log_refusals(self, cache: VerdictCache, refused: list[Any],
                      instance: Any,
                      requirement: extra_specs.TrustRequirement,
                      min_level: int, max_age: int, now: float) -> None:
        details = []
        for host_state in refused:
            name = self._host_name(host_state)
            reason = None
            if len(details) < _LOGGED_REASONS or LOG.isEnabledFor(
                    logging.DEBUG):
                reason = cache.explain(name, min_level, max_age, now)
                LOG.debug("TrustedHostFilter refused host %s for instance "
                          "%s: %s", name, instance, reason)
            if len(details) < _LOGGED_REASONS:
                details.append("%s: %s" % (name, reason))
        more = len(refused) - len(details)
        LOG.info("TrustedHostFilter refused %d host(s) for instance %s, "
                 "which requires %s: %s%s", len(refused), instance,
                 requirement.describe(), "; ".join(details),
                 " (and %d more)" % more if more > 0 else "")
