"""/v1/policies and /v1/groups/{group}/policies.

Policy writes go straight to the database: a body is validated with the
appraisal's own loader first (nothing invalid is stored), and conductors
pick up new versions and assignments at their next cycle
(``refresh_policies``). No conductor call is needed, so a policy change
never depends on the bus.
"""

from __future__ import annotations

import logging
from typing import Any

from trusted_pools.api import errors
from trusted_pools.api import microversion
from trusted_pools.api import pagination
from trusted_pools.api import schemas
from trusted_pools.api import views
from trusted_pools.api.context import Call
from trusted_pools.verifier import policy as policy_mod

LOG = logging.getLogger(__name__)

Result = tuple[int, Any]


def list_policies(call: Call) -> Result:
    call.authorize("trusted_pools:policy:list")
    page = call.page(call.query(schemas.page_query))
    newest: dict[str, Any] = {}
    for record in call.db.list_policies():  # by name, then version
        newest[record.name] = record
    chunk, next_marker = pagination.cut(list(newest.values()),
                                        lambda p: p.name, page)
    return 200, {"policies": [views.policy_summary(p) for p in chunk],
                 "links": pagination.links(call.request, next_marker)}


def create(call: Call) -> Result:
    call.authorize("trusted_pools:policy:create")
    call.query(schemas.no_query)
    body = call.body(schemas.create_policy)
    kind = views.DB_KIND[body["kind"]]
    # Refuse what the appraisal could not load: nothing invalid is stored.
    policy_mod.load_policy(kind, body["body"], name=body["name"], version=1)
    record = call.db.create_policy_version(body["name"], kind, body["body"],
                                           created_by=call.actor)
    LOG.info("Policy %s version %d created by %s", record.name,
             record.version, call.actor)
    return 201, {"policy": views.policy(record)}


def _version(params: dict[str, str], name: str) -> int | None:
    if name not in params:
        return None
    value = int(params[name])
    if value < 1:
        raise errors.bad_request("Invalid input for query/%s: versions "
                                 "start at 1" % name)
    return value


def show(call: Call, name: str) -> Result:
    call.authorize("trusted_pools:policy:get")
    params = call.query(schemas.show_policy_query)
    record = call.db.get_policy(name, _version(params, "version"))
    return 200, {"policy": views.policy(record)}


def diff(call: Call, name: str) -> Result:
    call.authorize("trusted_pools:policy:diff")
    params = call.query(schemas.diff_query)
    old = call.db.get_policy(name, _version(params, "from"))
    new = call.db.get_policy(name, _version(params, "to"))
    added, removed = body_diff(old.body, new.body)
    return 200, {"diff": {"added": added, "removed": removed}}


def body_diff(old: Any, new: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """What ``new`` adds to and removes from ``old``, by JSON pointer.

    Lists are compared as sets (allow lists: order carries no meaning):
    ``{"/os_boot/kernels": ["sha256:..."]}``. A changed scalar is removed
    with its old value and added with its new one.
    """
    added: dict[str, Any] = {}
    removed: dict[str, Any] = {}
    _diff(old, new, "", added, removed)
    return added, removed


def _pointer(path: str, key: str) -> str:
    return path + "/" + key.replace("~", "~0").replace("/", "~1")


def _diff(old: Any, new: Any, path: str, added: dict[str, Any],
          removed: dict[str, Any]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            where = _pointer(path, str(key))
            if key not in new:
                removed[where] = old[key]
            elif key not in old:
                added[where] = new[key]
            else:
                _diff(old[key], new[key], where, added, removed)
    elif isinstance(old, list) and isinstance(new, list):
        gone = [item for item in old if item not in new]
        came = [item for item in new if item not in old]
        if gone:
            removed[path or "/"] = gone
        if came:
            added[path or "/"] = came
    elif old != new:
        removed[path or "/"] = old
        added[path or "/"] = new


def list_assignments(call: Call, group: str) -> Result:
    call.authorize("trusted_pools:policy:assignment:list")
    call.query(schemas.no_query)
    return 200, {"assignments": [views.assignment(a) for a in
                                 call.db.list_assignments(group)]}


def list_groups(call: Call) -> Result:
    """Every group a host is in or a policy is assigned to (1.2)."""
    call.authorize("trusted_pools:group:list")
    microversion.require(call.version, microversion.GROUPS,
                         call.request.path_info)
    call.query(schemas.no_query)
    counts: dict[str, int] = {}
    for host in call.db.list_hosts():
        counts[host.group] = counts.get(host.group, 0) + 1
    assigned: dict[str, list[dict[str, Any]]] = {}
    for record in call.db.list_assignments():
        assigned.setdefault(record.group, []).append(
            views.assignment(record))
    return 200, {"groups": [
        {"name": group, "hosts": counts.get(group, 0),
         "assignments": assigned.get(group, [])}
        for group in sorted(set(counts) | set(assigned))]}


def unassign(call: Call, group: str, name: str) -> Result:
    """Release a group from a policy (1.2): its hosts are appraised
    without it from the conductors' next policy refresh."""
    call.authorize("trusted_pools:policy:unassign")
    microversion.require(call.version, microversion.GROUPS,
                         call.request.path_info)
    call.query(schemas.no_query)
    call.db.unassign_policy(group, name)
    LOG.warning("Host group %s released from policy %s by %s", group, name,
                call.actor)
    return 204, None


def assign(call: Call, group: str, name: str) -> Result:
    call.authorize("trusted_pools:policy:assign")
    call.query(schemas.no_query)
    if call.version >= microversion.GROUPS:
        body = call.body(schemas.assign_policy_1_2)
        if not body.get("allow_empty_group") and not call.db.list_hosts(
                group=group):
            raise errors.APIError(
                404, "group.not_found",
                "No host is in group %s (a typo?). To hold a group to a "
                "policy before its first host enrolls, send "
                "\"allow_empty_group\": true ('openstack trusted policy "
                "assign --allow-empty-group')." % group)
    else:
        body = call.body(schemas.assign_policy)
    record = call.db.assign_policy(group, name, body["version"])
    LOG.info("Host group %s held to policy %s version %s by %s", group,
             name, body["version"] or "latest", call.actor)
    return 200, {"assignment": views.assignment(record)}
