"""A small client of trusted-pools-api v1 for the OpenStack client plugin.

It runs on an operator's machine, so it imports nothing from the services:
only keystoneauth1 (sessions, the service catalog, microversion headers)
and osc-lib (the error type the ``openstack`` shell prints).

* Every request goes through a keystoneauth1 ``Adapter`` for the service
  type ``trusted-pools`` and carries ``OpenStack-API-Version:
  trusted-pools X.Y``.
* An error response in the OpenStack error format becomes an
  :class:`APIError` (an osc-lib ``CommandError``) whose message is the
  API's own detail, with the HTTP status, the error code and request id.
* List calls follow the API's ``next`` links. Only the ``marker`` and
  ``limit`` of a link are used; the request goes to the same path on the
  endpoint from the catalog, so a link naming another host never receives
  the caller's token.
"""

from __future__ import annotations

import time
import urllib.parse
from typing import Any, Callable, Iterable, Mapping

from keystoneauth1 import adapter as ksa_adapter
from keystoneauth1 import exceptions as ksa_exceptions
from osc_lib import exceptions as osc_exceptions

__all__ = ["SERVICE_TYPE", "MIN_VERSION", "MAX_VERSION", "APIError",
           "Client", "parse_version"]

SERVICE_TYPE = "trusted-pools"
#: The range of API microversions this client can speak and render.
MIN_VERSION = (1, 0)
MAX_VERSION = (1, 5)
#: Seconds a command waits for an operation by default.
DEFAULT_WAIT_TIMEOUT = 300

#: A list never needs more pages than this; more means a broken server.
_MAX_PAGES = 10_000
#: The largest page the contract lets a client ask for; a larger --limit
#: is reached by following next links.
MAX_PAGE_LIMIT = 1000

Query = Mapping[str, Any]


def parse_version(text: str) -> tuple[int, int]:
    """``"1"`` -> (1, 0), ``"1.2"`` -> (1, 2), within what the client knows.

    :raises osc_lib.exceptions.UnsupportedVersion: malformed or outside
        ``MIN_VERSION``..``MAX_VERSION``.
    """
    parts = str(text).strip().split(".")
    if not 1 <= len(parts) <= 2 or not all(p.isdigit() for p in parts):
        raise osc_exceptions.UnsupportedVersion(
            "Invalid trusted-pools API version %r: give MAJOR or "
            "MAJOR.MINOR, e.g. 1.0" % text)
    version = (int(parts[0]), int(parts[1]) if len(parts) == 2 else 0)
    if not MIN_VERSION <= version <= MAX_VERSION:
        raise osc_exceptions.UnsupportedVersion(
            "trusted-pools API version %s is not supported by this client "
            "(it supports %s to %s)" % (text, _text(MIN_VERSION),
                                        _text(MAX_VERSION)))
    return version


def _text(version: tuple[int, int]) -> str:
    return "%d.%d" % version


class APIError(osc_exceptions.CommandError):
    """A refusal or failure reported by trusted-pools-api."""

    def __init__(self, status: int, title: str, detail: str,
                 code: str | None = None, request_id: str | None = None
                 ) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.code = code
        self.request_id = request_id
        where = ", ".join(part for part in (
            "code %s" % code if code else "",
            "request %s" % request_id if request_id else "") if part)
        super().__init__("%s (HTTP %d): %s%s" % (
            title, status, detail, " [%s]" % where if where else ""))


def _error_from(response: Any) -> APIError:
    """The :class:`APIError` for a non-2xx ``requests`` response.

    Reads the OpenStack error format (``{"errors": [...]}``), the
    ``{"error": {...}}`` shape keystonemiddleware answers a bad token with,
    and otherwise shows the start of the body as text."""
    status = response.status_code
    title = response.reason or "HTTP error"
    request_id = response.headers.get("X-OpenStack-Request-ID")
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("errors"), list) \
            and body["errors"]:
        entries = [e for e in body["errors"] if isinstance(e, dict)]
        first = entries[0] if entries else {}
        detail = "; ".join(str(e.get("detail") or e.get("title") or "")
                           for e in entries) or title
        return APIError(status, str(first.get("title") or title), detail,
                        code=first.get("code"),
                        request_id=first.get("request_id") or request_id)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        return APIError(status, str(error.get("title") or title),
                        str(error.get("message") or title),
                        request_id=request_id)
    text = (response.text or "").strip()
    return APIError(status, title,
                    text[:300] if text else "no detail in the response",
                    request_id=request_id)


class Client:
    """Calls of the v1 API; each returns the decoded resource(s)."""

    #: Seconds of waiting for an operation before the first progress
    #: line, and between two.
    PROGRESS_AFTER = 3.0
    PROGRESS_EVERY = 5.0

    def __init__(self, adapter: ksa_adapter.Adapter,
                 progress: Callable[[str], None] | None = None) -> None:
        self.adapter = adapter
        #: Where "still waiting" lines go (the shell's stderr); None: none.
        self.progress = progress

    # -- transport ---------------------------------------------------------

    def _request(self, method: str, path: str, *,
                 params: Query | None = None, body: Any = None) -> Any:
        """One request; the decoded JSON body (None when empty).

        :raises APIError: the API answered with an error status.
        :raises osc_lib.exceptions.CommandError: the API cannot be reached.
        """
        kwargs: dict[str, Any] = {"raise_exc": False}
        if params:
            kwargs["params"] = {k: v for k, v in params.items()
                                if v is not None}
        if body is not None:
            kwargs["json"] = body
        try:
            response = self.adapter.request(path, method, **kwargs)
        except ksa_exceptions.EndpointNotFound as error:
            raise osc_exceptions.CommandError(
                "No %s endpoint found (%s): is trusted-pools-api registered "
                "in the service catalog for this region and interface?"
                % (SERVICE_TYPE, error)) from error
        except ksa_exceptions.ConnectionError as error:
            raise osc_exceptions.CommandError(
                "Cannot reach trusted-pools-api for %s %s: %s"
                % (method, path, error)) from error
        if response.status_code >= 400:
            raise _error_from(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as error:
            raise osc_exceptions.CommandError(
                "trusted-pools-api answered %s %s with a body that is not "
                "JSON" % (method, path)) from error

    def _list(self, path: str, key: str, params: Query | None = None,
              limit: int | None = None, marker: str | None = None
              ) -> list[dict[str, Any]]:
        """Every item of a paginated list, following ``next`` links; at
        most ``limit`` items (all of them when None), from after
        ``marker``."""
        query: dict[str, Any] = dict(params or {})
        items: list[dict[str, Any]] = []
        seen: set[str] = set()
        for _ in range(_MAX_PAGES):
            query["marker"] = marker
            query["limit"] = None if limit is None else min(
                limit - len(items), MAX_PAGE_LIMIT)
            page = self._request("GET", path, params=query) or {}
            items.extend(page.get(key) or [])
            marker = _next_marker(page.get("links") or [])
            if marker is None or (limit is not None and len(items) >= limit):
                return items if limit is None else items[:limit]
            if marker in seen:
                raise osc_exceptions.CommandError(
                    "trusted-pools-api sent the page after %r twice while "
                    "listing %s; stopped" % (marker, path))
            seen.add(marker)
        raise osc_exceptions.CommandError(
            "trusted-pools-api sent more than %d pages for %s; stopped"
            % (_MAX_PAGES, path))

    # -- hosts -------------------------------------------------------------

    def list_hosts(self, group: str | None = None, state: str | None = None,
                   status: str | None = None, limit: int | None = None,
                   marker: str | None = None) -> list[dict[str, Any]]:
        return self._list("/v1/hosts", "hosts",
                          {"group": group, "state": state, "status": status},
                          limit, marker)

    def get_host(self, name: str) -> dict[str, Any]:
        answer = self._request("GET", _path("hosts", name))
        return _member(answer, "host")

    def list_host_verdicts(self, name: str, limit: int | None = None
                           ) -> list[dict[str, Any]]:
        answer = self._request("GET", _path("hosts", name, "verdicts"),
                               params={"limit": limit})
        return _member(answer, "verdicts")

    # Enroll, attest and capture: from microversion 1.1 the API answers
    # 202 with an operation; with ``wait`` (the default) the client polls
    # it and returns what 1.0 returned; without, the operation itself.

    def enroll_host(self, name: str, group: str | None = None,
                    ek_sha256: str | None = None, wait: bool = True,
                    timeout: float = DEFAULT_WAIT_TIMEOUT
                    ) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name}
        if group is not None:
            body["group"] = group
        if ek_sha256 is not None:
            body["ek_sha256"] = ek_sha256
        answer = self._request("POST", "/v1/hosts", body=body)
        if not _is_operation(answer):
            return _member(answer, "host")
        if not wait:
            return answer["operation"]
        self.wait_operation(answer["operation"], timeout)
        return self.get_host(name)

    def attest_host(self, name: str, wait: bool = True,
                    timeout: float = DEFAULT_WAIT_TIMEOUT
                    ) -> dict[str, Any]:
        answer = self._request("POST", _path("hosts", name, "attest"))
        return self._result(answer, "verdict", wait, timeout)

    def capture_policies(self, name: str, wait: bool = True,
                         timeout: float = DEFAULT_WAIT_TIMEOUT
                         ) -> dict[str, Any]:
        answer = self._request("POST", _path("hosts", name, "capture"))
        return self._result(answer, "policies", wait, timeout)

    def _result(self, answer: Any, key: str, wait: bool, timeout: float
                ) -> dict[str, Any]:
        if not _is_operation(answer):
            return _member(answer, key)
        if not wait:
            return answer["operation"]
        done = self.wait_operation(answer["operation"], timeout)
        return _member(done.get("result"), key)

    def get_operation(self, host: str, operation_id: str
                      ) -> dict[str, Any]:
        answer = self._request("GET", _path("hosts", host, "operations",
                                            operation_id))
        return _member(answer, "operation")

    def list_operations(self, host: str, limit: int | None = None
                        ) -> list[dict[str, Any]]:
        answer = self._request("GET", _path("hosts", host, "operations"),
                               params={"limit": limit})
        return _member(answer, "operations")

    def wait_operation(self, operation: dict[str, Any], timeout: float,
                       interval: float = 1.0,
                       sleep: Callable[[float], None] = time.sleep,
                       clock: Callable[[], float] = time.monotonic
                       ) -> dict[str, Any]:
        """Poll ``operation`` until it ends; the done operation.

        :raises APIError: it failed (the API's error: status, code and
            detail, e.g. the conductor's refusal of an EK).
        :raises osc_lib.exceptions.CommandError: still pending after
            ``timeout`` seconds (it goes on; the message says how to
            follow it).
        """
        started = clock()
        deadline = started + timeout
        next_progress = started + self.PROGRESS_AFTER
        delay = min(0.2, interval)
        while True:
            state = operation.get("state")
            if state == "done":
                return operation
            if state == "failed":
                error = operation.get("error") or {}
                raise APIError(int(error.get("status") or 500),
                               str(error.get("title") or "Failed"),
                               str(error.get("detail") or "the operation "
                                   "failed"), code=error.get("code"),
                               request_id=operation.get("request_id"))
            if state != "pending":
                raise osc_exceptions.CommandError(
                    "trusted-pools-api sent an operation in state %r"
                    % (state,))
            if clock() >= deadline:
                raise osc_exceptions.CommandError(
                    "Operation %s (%s of host %s) is still pending after "
                    "%d s; follow it with 'openstack trusted host "
                    "operation show %s %s'" % (
                        operation.get("id"), operation.get("kind"),
                        operation.get("host"), timeout,
                        operation.get("host"), operation.get("id")))
            now = clock()
            if self.progress is not None and now >= next_progress:
                self.progress(
                    "Waiting for operation %s (%s of host %s): pending for "
                    "%d s (gives up after %d s)\n" % (
                        operation.get("id"), operation.get("kind"),
                        operation.get("host"), now - started, timeout))
                next_progress = now + self.PROGRESS_EVERY
            sleep(min(delay, max(0.0, deadline - clock())))
            delay = min(delay * 2, interval)
            operation = self.get_operation(str(operation.get("host")),
                                           str(operation.get("id")))

    def list_vtpms(self, name: str, refresh: bool = False,
                   timeout: float = DEFAULT_WAIT_TIMEOUT
                   ) -> dict[str, Any]:
        """The host's last vTPM report (microversion 1.3), or with
        ``refresh`` a new one (its agent is asked; the operation is
        waited for): what the host's agent reports, labelled
        host-reported; not evidence."""
        if refresh:
            answer = self._request("POST", _path("hosts", name, "vtpms"))
            done = self.wait_operation(_member(answer, "operation"),
                                       timeout)
            return _member(done.get("result"), "vtpms")
        answer = self._request("GET", _path("hosts", name, "vtpms"))
        return _member(answer, "vtpms")

    def reset_enrollment(self, name: str) -> None:
        self._request("POST", _path("hosts", name, "reset-enrollment"))

    def delete_host(self, name: str) -> None:
        self._request("DELETE", _path("hosts", name))

    def update_host(self, name: str, group: str) -> dict[str, Any]:
        """Move a host to another group (microversion 1.2)."""
        answer = self._request("PATCH", _path("hosts", name),
                               body={"group": group})
        return _member(answer, "host")

    # -- groups (microversion 1.2) -----------------------------------------

    def list_groups(self) -> list[dict[str, Any]]:
        return _member(self._request("GET", "/v1/groups"), "groups")

    def unassign_policy(self, group: str, name: str) -> None:
        self._request("DELETE", _path("groups", group, "policies", name))

    # -- policies ----------------------------------------------------------

    def list_policies(self, limit: int | None = None,
                      marker: str | None = None) -> list[dict[str, Any]]:
        return self._list("/v1/policies", "policies", None, limit, marker)

    def get_policy(self, name: str, version: int | None = None
                   ) -> dict[str, Any]:
        answer = self._request("GET", _path("policies", name),
                               params={"version": version})
        return _member(answer, "policy")

    def create_policy(self, name: str, kind: str, body: Any
                      ) -> dict[str, Any]:
        answer = self._request("POST", "/v1/policies", body={
            "name": name, "kind": kind, "body": body})
        return _member(answer, "policy")

    def diff_policy(self, name: str, old: int, new: int) -> dict[str, Any]:
        answer = self._request("GET", _path("policies", name, "diff"),
                               params={"from": old, "to": new})
        return _member(answer, "diff")

    def list_assignments(self, group: str) -> list[dict[str, Any]]:
        answer = self._request("GET", _path("groups", group, "policies"))
        return _member(answer, "assignments")

    def assign_policy(self, group: str, name: str, version: int | None,
                      allow_empty_group: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {"version": version}
        if allow_empty_group:
            body["allow_empty_group"] = True
        answer = self._request("PUT",
                               _path("groups", group, "policies", name),
                               body=body)
        return _member(answer, "assignment")

    # -- instance policies (microversion 1.5) -------------------------------

    def list_instance_policies(self, limit: int | None = None,
                               marker: str | None = None
                               ) -> list[dict[str, Any]]:
        return self._list("/v1/instance-policies", "instance_policies",
                          None, limit, marker)

    def get_instance_policy(self, name: str, version: int | None = None
                            ) -> dict[str, Any]:
        answer = self._request("GET", _path("instance-policies", name),
                               params={"version": version})
        return _member(answer, "instance_policy")

    def create_instance_policy(self, name: str, pcrs: Any,
                               level: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "pcrs": pcrs}
        if level is not None:
            body["level"] = level
        answer = self._request("POST", "/v1/instance-policies", body=body)
        return _member(answer, "instance_policy")

    def delete_instance_policy(self, name: str,
                               version: int | None = None) -> None:
        self._request("DELETE", _path("instance-policies", name),
                      params={"version": version})

    def capture_instance_policy(self, instance: str, name: str,
                                level: int | None = None,
                                pcrs: list[int] | None = None,
                                banks: list[str] | None = None
                                ) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name}
        for key, value in (("level", level), ("pcrs", pcrs),
                           ("banks", banks)):
            if value is not None:
                body[key] = value
        answer = self._request(
            "POST", _path("instances", instance, "capture-policy"),
            body=body)
        return dict(_member(answer, "instance_policy"),
                    captured_from=answer.get("captured_from"))

    def assign_instance_policy(self, kind: str, target: str, name: str,
                               version: int | None = None
                               ) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name}
        if version is not None:
            body["version"] = version
        answer = self._request(
            "PUT", _path(kind + "s", target, "instance-policy"), body=body)
        return _member(answer, "assignment")

    def unassign_instance_policy(self, kind: str, target: str) -> None:
        self._request("DELETE", _path(kind + "s", target, "instance-policy"))

    def list_instance_policy_assignments(self) -> list[dict[str, Any]]:
        return _member(self._request("GET",
                                     "/v1/instance-policy-assignments"),
                       "assignments")

    # -- verdicts and keys -------------------------------------------------

    def list_verdicts(self, since: str | None = None
                      ) -> list[dict[str, Any]]:
        answer = self._request("GET", "/v1/verdicts",
                               params={"since": since})
        return _member(answer, "verdicts")

    def list_keys(self) -> list[dict[str, Any]]:
        return _member(self._request("GET", "/v1/keys"), "keys")

    # -- vTPM migrations ---------------------------------------------------

    def list_vtpm_migrations(self, instance: str | None = None,
                             active: bool | None = None,
                             limit: int | None = None
                             ) -> list[dict[str, Any]]:
        params = {"instance": instance, "limit": limit,
                  "active": None if active is None
                  else ("true" if active else "false")}
        answer = self._request("GET", "/v1/vtpm-migrations", params=params)
        return _member(answer, "vtpm_migrations")

    # -- key releases (1.4) -------------------------------------------------

    def list_key_releases(self, host: str | None = None,
                          outcome: str | None = None,
                          secret_id: str | None = None,
                          limit: int | None = None,
                          marker: str | None = None
                          ) -> list[dict[str, Any]]:
        return self._list("/v1/key-releases", "key_releases",
                          {"host": host, "outcome": outcome,
                           "secret_id": secret_id}, limit, marker)

    def get_vtpm_migration(self, migration_id: str) -> dict[str, Any]:
        answer = self._request("GET", _path("vtpm-migrations",
                                            migration_id))
        return _member(answer, "vtpm_migration")


def _member(answer: Any, key: str) -> Any:
    """``answer[key]``, or a clear error when the API's answer lacks it."""
    if not isinstance(answer, dict) or key not in answer:
        raise osc_exceptions.CommandError(
            "trusted-pools-api answered without %r; is the endpoint really "
            "trusted-pools-api v1?" % key)
    return answer[key]


def _is_operation(answer: Any) -> bool:
    """Whether the API answered with an operation (202, 1.1 and later)."""
    return isinstance(answer, dict) and \
        isinstance(answer.get("operation"), dict) and \
        "id" in answer["operation"]


def _path(*segments: str) -> str:
    """``/v1/a/b`` with each segment quoted: a name cannot add a path."""
    return "/v1/" + "/".join(urllib.parse.quote(s, safe="") for s in segments)


def _next_marker(links: Iterable[Any]) -> str | None:
    """The marker of the ``next`` link, None on the last page.

    :raises osc_lib.exceptions.CommandError: a next link without a marker
        (following it would restart the list)."""
    for link in links:
        if isinstance(link, dict) and link.get("rel") == "next":
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(
                str(link.get("href", ""))).query)
            markers = query.get("marker")
            if not markers or not markers[0]:
                raise osc_exceptions.CommandError(
                    "trusted-pools-api sent a next link without a marker: "
                    "%s" % link.get("href"))
            return markers[0]
    return None
