"""A small Placement client: resource providers and their traits.

Through keystoneauth1 (a Session and an Adapter for service type
``placement``), so the endpoint comes from the service catalog and the
credentials from the ``[placement]`` options, exactly as Nova's own report
client does. :meth:`PlacementClient.for_endpoint` builds one for a fixed
URL and token (no catalog), which is what the tests and the benchmark use
against a no-auth Placement.

Trait updates are read-modify-write guarded by the provider generation:
the traits are read with their generation, our names are added or removed,
everything else is written back untouched, and Placement refuses the write
(409) if anyone changed the provider in between. Then the traits are read
again and the change re-applied, a bounded number of times. A trait we
would add is created first (``PUT /traits/{name}``) if missing.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Iterable

from keystoneauth1 import adapter as ks_adapter
from keystoneauth1 import exceptions as ks_exceptions
from oslo_config import cfg

from trusted_pools import exception
from trusted_pools.common.keystone import (adapter_for_endpoint,
                                           adapter_from_conf)

__all__ = [
    "SERVICE_TYPE", "DEFAULT_MICROVERSION", "ResourceProvider",
    "ProviderTraits", "TraitUpdate", "PlacementClient", "api_call",
]

LOG = logging.getLogger(__name__)

SERVICE_TYPE = "placement"
#: 1.39 brings ``required=in:A,B`` (find providers with any of our traits).
DEFAULT_MICROVERSION = "1.39"
#: Placement's error code for a lost generation race.
_CONCURRENT_UPDATE = "placement.concurrent_update"


# --- HTTP through keystoneauth1 (sessions: trusted_pools.common.keystone) -----------

def _error_text(response: Any) -> str:
    """First error title/detail of an OpenStack error body, bounded."""
    try:
        body = response.json()
    except ValueError:
        return (response.text or "")[:300]
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0],
                                                              dict):
            first = errors[0]
            return str(first.get("detail") or first.get("title"))[:300]
        for value in body.values():
            if isinstance(value, dict) and "message" in value:
                return str(value["message"])[:300]
    return str(body)[:300]


def _error_code(response: Any) -> str | None:
    try:
        body = response.json()
        return body["errors"][0].get("code")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None


def api_call(adapter: ks_adapter.Adapter, method: str, path: str, *,
             service: str, group: str, ok: Iterable[int] = (200,),
             conflict_ok: bool = False, **kwargs: Any) -> Any:
    """One request; the response when its status is in ``ok`` (or 409 with
    ``conflict_ok``), else a typed error.

    Transport failures and 5xx are :class:`ServiceUnavailable` (retry
    later); other statuses are :class:`ServiceAPIError` naming the call.
    """
    try:
        response = adapter.request(path, method, **kwargs)
    except ks_exceptions.ClientException as error:
        raise exception.ServiceUnavailable(
            service=service, group=group,
            reason="%s %s: %s" % (method, path, type(error).__name__))
    status = response.status_code
    if status in tuple(ok) or (conflict_ok and status == 409):
        return response
    if status >= 500:
        raise exception.ServiceUnavailable(
            service=service, group=group,
            reason="%s %s answered HTTP %d: %s" % (
                method, path, status, _error_text(response)))
    raise exception.ServiceAPIError(service=service, method=method,
                                    path=path, status=status,
                                    reason=_error_text(response))


def _json_object(response: Any, what: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise exception.ServiceAPIError(
            service=SERVICE_TYPE, method=response.request.method
            if response.request is not None else "?", path=what,
            status=response.status_code, reason="body is not a JSON object")
    return body


# --- values -------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ResourceProvider:
    uuid: str
    name: str
    generation: int


@dataclasses.dataclass(frozen=True)
class ProviderTraits:
    """A provider's traits as read, with the generation they belong to."""

    traits: frozenset[str]
    generation: int


@dataclasses.dataclass(frozen=True)
class TraitUpdate:
    """Outcome of :meth:`PlacementClient.update_traits`."""

    provider: str
    before: frozenset[str]
    after: frozenset[str]
    #: 409s met (each followed by a re-read).
    conflicts: int
    #: False when the traits were already right (nothing written).
    written: bool


def _provider(item: Any) -> ResourceProvider:
    if (not isinstance(item, dict) or not isinstance(item.get("uuid"), str)
            or not isinstance(item.get("name"), str)
            or type(item.get("generation")) is not int):
        raise exception.ServiceAPIError(
            service=SERVICE_TYPE, method="GET", path="/resource_providers",
            status=200, reason="a provider without uuid, name, generation")
    return ResourceProvider(item["uuid"], item["name"], item["generation"])


def _traits(body: dict[str, Any], path: str) -> ProviderTraits:
    traits = body.get("traits")
    generation = body.get("resource_provider_generation")
    if (not isinstance(traits, list)
            or not all(isinstance(t, str) for t in traits)
            or type(generation) is not int):
        raise exception.ServiceAPIError(
            service=SERVICE_TYPE, method="GET", path=path, status=200,
            reason="traits body without a list of names and a generation")
    return ProviderTraits(frozenset(traits), generation)


class PlacementClient:
    """Resource providers and traits; every call is one keystoneauth1
    request with the configured microversion."""

    def __init__(self, adapter: ks_adapter.Adapter, *,
                 conflict_retries: int = 5,
                 group: str = "trusted_pools_placement") -> None:
        if type(conflict_retries) is not int or conflict_retries < 0:
            raise exception.InvalidParameterValue(
                name="conflict_retries", reason="must be 0 or more")
        self.adapter = adapter
        self.conflict_retries = conflict_retries
        self._group = group
        self._known_traits: set[str] = set()

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts,
                  group: str = "trusted_pools_placement"
                  ) -> "PlacementClient":
        section = conf[group]
        return cls(adapter_from_conf(conf, group, SERVICE_TYPE,
                                     section.microversion),
                   conflict_retries=section.conflict_retries, group=group)

    @classmethod
    def for_endpoint(cls, endpoint: str, token: str = "admin", *,
                     microversion: str = DEFAULT_MICROVERSION,
                     conflict_retries: int = 5, timeout: float = 10.0
                     ) -> "PlacementClient":
        return cls(adapter_for_endpoint(endpoint, SERVICE_TYPE, microversion,
                                        token=token, timeout=timeout),
                   conflict_retries=conflict_retries)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return api_call(self.adapter, method, path, service=SERVICE_TYPE,
                        group=self._group, **kwargs)

    # --- providers -----------------------------------------------------------

    def providers(self, required_any: Iterable[str] | None = None,
                  name: str | None = None) -> list[ResourceProvider]:
        """Resource providers, optionally those carrying any of
        ``required_any`` (``required=in:``) or the one named ``name``."""
        params: dict[str, str] = {}
        if required_any is not None:
            names = sorted(set(required_any))
            if not names:
                return []
            params["required"] = "in:" + ",".join(names)
        if name is not None:
            params["name"] = name
        response = self._call("GET", "/resource_providers", params=params)
        items = _json_object(response, "/resource_providers").get(
            "resource_providers")
        if not isinstance(items, list):
            raise exception.ServiceAPIError(
                service=SERVICE_TYPE, method="GET",
                path="/resource_providers", status=200,
                reason="no resource_providers list")
        return [_provider(item) for item in items]

    def provider_by_name(self, name: str) -> ResourceProvider:
        """The compute node's provider (named after the node); raises
        ResourceProviderNotFound."""
        found = self.providers(name=name)
        if not found:
            raise exception.ResourceProviderNotFound(name=name[:255])
        return found[0]

    def create_provider(self, name: str, uuid: str | None = None
                        ) -> ResourceProvider:
        """Create a provider (tests, benchmark; Nova creates real ones)."""
        body: dict[str, str] = {"name": name}
        if uuid is not None:
            body["uuid"] = uuid
        response = self._call("POST", "/resource_providers", json=body,
                              ok=(200,))
        return _provider(_json_object(response, "/resource_providers"))

    # --- traits ----------------------------------------------------------------

    def get_traits(self, provider: str) -> ProviderTraits:
        path = "/resource_providers/%s/traits" % provider
        return _traits(_json_object(self._call("GET", path), path), path)

    def put_traits(self, provider: str, traits: Iterable[str],
                   generation: int) -> ProviderTraits | None:
        """Write the whole trait set; None if the generation is stale
        (409: someone else changed the provider since it was read)."""
        path = "/resource_providers/%s/traits" % provider
        response = self._call("PUT", path, conflict_ok=True, json={
            "traits": sorted(traits),
            "resource_provider_generation": generation})
        if response.status_code == 409:
            code = _error_code(response)
            if code not in (None, _CONCURRENT_UPDATE):
                raise exception.ServiceAPIError(
                    service=SERVICE_TYPE, method="PUT", path=path,
                    status=409, reason=_error_text(response))
            return None
        return _traits(_json_object(response, path), path)

    def ensure_traits(self, names: Iterable[str]) -> None:
        """Create the custom traits this client has not seen yet
        (standard traits exist in every Placement)."""
        for name in sorted(set(names) - self._known_traits):
            if not name.startswith("CUSTOM_"):
                continue
            self._call("PUT", "/traits/%s" % name, ok=(201, 204))
            self._known_traits.add(name)

    def list_traits(self, prefix: str) -> list[str]:
        response = self._call("GET", "/traits",
                              params={"name": "startswith:" + prefix})
        traits = _json_object(response, "/traits").get("traits")
        if not isinstance(traits, list):
            raise exception.ServiceAPIError(
                service=SERVICE_TYPE, method="GET", path="/traits",
                status=200, reason="no traits list")
        return [t for t in traits if isinstance(t, str)]

    def update_traits(self, provider: str, add: Iterable[str] = (),
                      remove: Iterable[str] = ()) -> TraitUpdate:
        """Add ``add`` and remove ``remove`` on one provider, leaving every
        other trait as it is; generation-safe, retried on conflict.

        Raises ConcurrentUpdate after ``conflict_retries`` lost races.
        """
        add_set, remove_set = frozenset(add), frozenset(remove)
        if add_set & remove_set:
            raise exception.InvalidParameterValue(
                name="add", reason="a trait cannot be added and removed")
        if add_set:
            self.ensure_traits(add_set)
        conflicts = 0
        while True:
            current = self.get_traits(provider)
            wanted = (current.traits - remove_set) | add_set
            if wanted == current.traits:
                return TraitUpdate(provider, current.traits, wanted,
                                   conflicts, written=False)
            if self.put_traits(provider, wanted,
                               current.generation) is not None:
                return TraitUpdate(provider, current.traits, wanted,
                                   conflicts, written=True)
            conflicts += 1
            LOG.info("Traits of resource provider %s changed while we "
                     "updated them (generation %d is stale); reading them "
                     "again (%d of %d)", provider, current.generation,
                     conflicts, self.conflict_retries)
            if conflicts > self.conflict_retries:
                raise exception.ConcurrentUpdate(
                    what="resource provider %s" % provider,
                    reason="%d generation conflicts in a row" % conflicts)
