"""Paths and methods of the v1 API, mapped to handlers (Routes)."""

from __future__ import annotations

from typing import Any, Callable

import routes

from trusted_pools.api import errors
from trusted_pools.api.handlers import distrust_actions
from trusted_pools.api.handlers import hosts
from trusted_pools.api.handlers import instance_policies
from trusted_pools.api.handlers import instances
from trusted_pools.api.handlers import key_releases
from trusted_pools.api.handlers import policies
from trusted_pools.api.handlers import secrets
from trusted_pools.api.handlers import verdicts
from trusted_pools.api.handlers import vtpm_migrations

Handler = Callable[..., tuple[int, Any]]

_SEGMENT = r"[^/]+"

ROUTES: dict[str, dict[str, Handler]] = {
    "/v1/hosts": {"GET": hosts.list_hosts, "POST": hosts.enroll},
    "/v1/hosts/{name}": {"GET": hosts.show, "PATCH": hosts.update,
                         "DELETE": hosts.decommission},
    "/v1/hosts/{name}/verdicts": {"GET": hosts.verdicts},
    "/v1/hosts/{name}/attest": {"POST": hosts.attest},
    "/v1/hosts/{name}/capture": {"POST": hosts.capture},
    "/v1/hosts/{name}/reset-enrollment": {"POST": hosts.reset_enrollment},
    "/v1/hosts/{name}/operations": {"GET": hosts.list_operations},
    "/v1/hosts/{name}/operations/{operation_id}": {
        "GET": hosts.show_operation},
    "/v1/hosts/{name}/certify-binding-key": {
        "POST": hosts.certify_binding_key},
    "/v1/hosts/{name}/deep-attest": {"POST": hosts.deep_attest},
    "/v1/hosts/{name}/vtpms": {"GET": hosts.list_vtpms,
                               "POST": hosts.refresh_vtpms},
    "/v1/instances/{uuid}/challenge": {"POST": instances.challenge},
    "/v1/instances/{uuid}/verdict": {"GET": instances.verdict},
    "/v1/instances/{uuid}/capture-policy": {
        "POST": instance_policies.capture},
    "/v1/instances/{uuid}/instance-policy": {
        "PUT": instance_policies.assign_instance,
        "DELETE": instance_policies.unassign_instance},
    "/v1/images/{uuid}/instance-policy": {
        "PUT": instance_policies.assign_image,
        "DELETE": instance_policies.unassign_image},
    "/v1/instance-policies": {"GET": instance_policies.list_policies,
                              "POST": instance_policies.create},
    "/v1/instance-policies/{name}": {"GET": instance_policies.show,
                                     "DELETE": instance_policies.delete},
    "/v1/instance-policy-assignments": {
        "GET": instance_policies.list_assignments},
    "/v1/policies": {"GET": policies.list_policies,
                     "POST": policies.create},
    "/v1/policies/{name}": {"GET": policies.show},
    "/v1/policies/{name}/diff": {"GET": policies.diff},
    "/v1/groups/{group}/policies": {"GET": policies.list_assignments},
    "/v1/groups": {"GET": policies.list_groups},
    "/v1/groups/{group}/policies/{name}": {"PUT": policies.assign,
                                           "DELETE": policies.unassign},
    "/v1/verdicts": {"GET": verdicts.list_verdicts},
    "/v1/keys": {"GET": verdicts.list_keys},
    "/v1/secrets": {"POST": secrets.create},
    "/v1/secrets/{secret_id}": {"GET": secrets.show,
                                "DELETE": secrets.delete},
    "/v1/vtpm-migrations": {"GET": vtpm_migrations.list_migrations},
    "/v1/key-releases": {"GET": key_releases.list_key_releases},
    "/v1/distrust-actions": {"GET": distrust_actions.list_actions,
                             "POST": distrust_actions.report},
    "/v1/vtpm-migrations/{migration_id}": {"GET": vtpm_migrations.show},
}


def make_mapper() -> routes.Mapper:
    mapper = routes.Mapper()
    for path in ROUTES:
        mapper.connect(path, path=path,
                       requirements={"name": _SEGMENT, "group": _SEGMENT,
                                     "operation_id": _SEGMENT,
                                     "secret_id": _SEGMENT,
                                     "migration_id": _SEGMENT,
                                     "uuid": _SEGMENT})
    return mapper


def resolve(mapper: routes.Mapper, method: str, path_info: str
            ) -> tuple[Handler, dict[str, str]]:
    """The handler and path arguments; 404 for an unknown path, 405 (with
    Allow) for a known path and another method."""
    match = mapper.match(path_info)
    if match is None:
        raise errors.APIError(404, "resource.not_found",
                              "No resource at %s" % path_info)
    path = match.pop("path")
    methods = ROUTES[path]
    handler = methods.get(method)
    if handler is None:
        raise errors.APIError(
            405, "method.not_allowed", "%s is not allowed on %s; use %s"
            % (method, path, ", ".join(sorted(methods))),
            headers={"Allow": ", ".join(sorted(methods))})
    return handler, {k: v for k, v in match.items() if v is not None}
