"""Errors in the OpenStack API error format.

Every failure leaves the API as ``{"errors": [{"status", "code", "title",
"detail", "request_id"}]}`` with the matching HTTP status. The project's
exceptions are mapped by meaning (their branch in
:mod:`trusted_pools.exception`), never by message; anything unexpected is
a 500 whose detail says nothing about the internals (the log has it).
"""

from __future__ import annotations

import json
import logging
import re
from http import HTTPStatus

import oslo_messaging as messaging
import webob
from oslo_policy import policy as oslo_policy

from trusted_pools import exception

LOG = logging.getLogger(__name__)

CODE_PREFIX = "trusted-pools."
_JSON = "application/json"


class APIError(Exception):
    """A refusal decided by the API layer itself (validation, version,
    routing, policy), with its HTTP status and error code."""

    def __init__(self, status: int, code: str, detail: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = CODE_PREFIX + code
        self.detail = detail
        self.headers = headers or {}


def bad_request(detail: str, code: str = "request.invalid") -> APIError:
    return APIError(400, code, detail)


def forbidden(rule: str) -> APIError:
    return APIError(403, "policy.forbidden",
                    "Policy doesn't allow %s to be performed." % rule)


# Order matters: the first branch an exception belongs to decides.
_STATUS_BY_BRANCH: tuple[tuple[type[Exception], int], ...] = (
    (exception.NotFound, 404),
    (exception.Conflict, 409),
    (exception.EnrollmentRejected, 400),
    (exception.Invalid, 400),
    (exception.EvidenceError, 409),
    (exception.TemporaryFailure, 503),
    # A release the key service refused (the host is not attested).
    (exception.NotAuthorized, 403),
)


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_",
                  name).lower()


def code_of(error: exception.TrustedPoolsError) -> str:
    """``HostNotFound`` -> ``trusted-pools.host.not_found``;
    ``EKNotApproved`` -> ``trusted-pools.ek_not_approved``."""
    # oslo.messaging re-raises a conductor's error as a subclass named
    # "<Name>_Remote"; the code is the original's.
    name = type(error).__name__.removesuffix("_Remote")
    if name.endswith("NotFound") and name != "NotFound":
        return CODE_PREFIX + _snake(name[:-len("NotFound")]) + ".not_found"
    return CODE_PREFIX + _snake(name)


def status_of(error: exception.TrustedPoolsError) -> int:
    for branch, status in _STATUS_BY_BRANCH:
        if isinstance(error, branch):
            return status
    return 500


def _body(status: int, code: str, detail: str, request_id: str | None
          ) -> bytes:
    entry = {"status": status, "code": code,
             "title": HTTPStatus(status).phrase, "detail": detail,
             "request_id": request_id}
    return json.dumps({"errors": [entry]}).encode()


def response(request: webob.Request, status: int, code: str, detail: str,
             headers: dict[str, str] | None = None) -> webob.Response:
    request_id = request.environ.get("openstack.request_id")
    resp = webob.Response(status=status, content_type=_JSON, charset=None,
                          body=_body(status, code, detail, request_id))
    for name, value in (headers or {}).items():
        resp.headers[name] = value
    return resp


def _path(request: webob.Request) -> str:
    """The request's path for a log line, as sent (percent-decoded bytes
    that are not UTF-8 must not make the error handler fail too)."""
    return repr(request.environ.get("PATH_INFO", ""))[1:-1]


def from_exception(request: webob.Request, error: Exception
                   ) -> webob.Response:
    """The response for any exception a handler raised."""
    if isinstance(error, APIError):
        return response(request, error.status, error.code, error.detail,
                        error.headers)
    if isinstance(error, exception.TrustedPoolsError):
        status = status_of(error)
        if status >= 500:
            LOG.error("Request %s %s failed: %s", request.method,
                      _path(request), error)
        return response(request, status, code_of(error), error.message)
    if isinstance(error, (oslo_policy.PolicyNotAuthorized,
                          oslo_policy.InvalidScope)):
        # The enforcer's rule name is in the message; handlers normally
        # turn these into forbidden(rule) themselves.
        return response(request, 403, CODE_PREFIX + "policy.forbidden",
                        str(error))
    if isinstance(error, messaging.MessagingTimeout):
        return response(request, 503, CODE_PREFIX + "conductor.timeout",
                        "The conductor that owns the host did not answer in "
                        "time; retry, and check that it runs.")
    if isinstance(error, messaging.MessagingException):
        LOG.error("Conductor call for %s %s failed: %s", request.method,
                  _path(request), error)
        return response(request, 503, CODE_PREFIX + "conductor.unavailable",
                        "The conductor could not be reached; retry later.")
    LOG.exception("Unexpected error in %s %s", request.method,
                  _path(request))
    return response(request, 500, CODE_PREFIX + "internal",
                    "An unexpected error occurred; the API log has the "
                    "details under this request id.")
