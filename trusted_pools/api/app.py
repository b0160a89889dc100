"""The WSGI application of trusted-pools-api and its middleware pipeline.

From the outside in::

    http_proxy_to_wsgi -> request_id -> CORS -> /healthcheck | / and /v1
    (version documents) | /dashboard (static page, see dashboard.py)
    | auth (keystonemiddleware auth_token, or noauth)
    -> API application (microversion, routing, policy, handlers)

The pipeline is built in code (Placement's way) so the service and the
tests run exactly the same one.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Iterable

import webob
import webob.dec
from keystonemiddleware import auth_token
from oslo_config import cfg
from oslo_middleware import cors
from oslo_middleware import healthcheck
from oslo_middleware import http_proxy_to_wsgi
from oslo_middleware import request_id

from trusted_pools.api import conductors as conductors_mod
from trusted_pools.api import dashboard
from trusted_pools.api import errors
from trusted_pools.api import microversion
from trusted_pools.api import policy
from trusted_pools.api import router
from trusted_pools.api.context import Call, Services
from trusted_pools.api.handlers import root
from trusted_pools.common import context as context_mod
from trusted_pools.conductor import rpcapi
from trusted_pools.db import api as db_api

LOG = logging.getLogger(__name__)

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]

#: The identity every noauth request carries (the embedded demo only).
NOAUTH_PROJECT = "trusted-pools-noauth"
NOAUTH_USER = "noauth-admin"


def _json(status: int, body: Any, headers: dict[str, str]
          ) -> webob.Response:
    resp = webob.Response(status=status, headerlist=[])
    if body is not None:
        resp.content_type = "application/json"
        resp.charset = None
        resp.body = json.dumps(body).encode()
    for name, value in headers.items():
        resp.headers[name] = value
    return resp


class APIApplication:
    """Microversion, routing, context and handler for authenticated
    requests; every failure becomes the OpenStack error format."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.mapper = router.make_mapper()

    @webob.dec.wsgify
    def __call__(self, request: webob.Request) -> webob.Response:
        version_headers = microversion.response_headers(microversion.MIN)
        try:
            version = microversion.negotiate(request.environ)
            version_headers = microversion.response_headers(version)
            try:
                path = request.path_info
            except UnicodeDecodeError:
                raise errors.bad_request(
                    "The path is not UTF-8 once percent-decoded",
                    code="request.malformed") from None
            handler, arguments = router.resolve(
                self.mapper, request.method, path)
            context = context_mod.RequestContext.from_environ(
                request.environ)
            call = Call(request, context, version, self.services)
            answer = handler(call, **arguments)
            status, body = answer[0], answer[1]
            headers = dict(version_headers)
            if len(answer) > 2:
                headers.update(answer[2])
            return _json(status, body, headers)
        except Exception as error:  # noqa: BLE001 - rendered, logged
            response = errors.from_exception(request, error)
            for name, value in version_headers.items():
                response.headers.setdefault(name, value)
            return response


class NoAuth:
    """``[trusted_pools_api] auth_strategy = noauth``: every request is an admin of a
    fixed project. For the embedded demo on one machine only."""

    def __init__(self, application: WSGIApp) -> None:
        self.application = application

    def __call__(self, environ: dict, start_response: Callable
                 ) -> Iterable[bytes]:
        environ.update({
            "HTTP_X_IDENTITY_STATUS": "Confirmed",
            "HTTP_X_USER_ID": NOAUTH_USER, "HTTP_X_USER_NAME": NOAUTH_USER,
            "HTTP_X_PROJECT_ID": NOAUTH_PROJECT,
            "HTTP_X_ROLES": "admin,member,reader"})
        environ.pop("HTTP_OPENSTACK_SYSTEM_SCOPE", None)
        return self.application(environ, start_response)


class PathSplit:
    """Unauthenticated paths first (health, version documents, the
    dashboard's static files: no data), the rest through authentication."""

    def __init__(self, authenticated: WSGIApp, health: WSGIApp,
                 page: WSGIApp | None = None) -> None:
        self.authenticated = authenticated
        self.health = health
        self.page = page or dashboard.app()

    def __call__(self, environ: dict, start_response: Callable
                 ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        if path == "/healthcheck":
            return self.health(environ, start_response)
        if dashboard.is_dashboard(path):
            return self.page(environ, start_response)
        if path.rstrip("/") in ("", "/v1") and \
                environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
            return self._versions(environ, start_response)
        return self.authenticated(environ, start_response)

    @webob.dec.wsgify
    def _versions(self, request: webob.Request) -> webob.Response:
        if request.path_info.rstrip("/") == "/v1":
            body: Any = {"version": root.v1(request)}
        else:
            body = root.versions(request)
        return _json(200, body, {})


def _set_cors_defaults() -> None:
    cors.set_defaults(
        allow_headers=["X-Auth-Token", "X-OpenStack-Request-ID",
                       "Content-Type", microversion.HEADER],
        expose_headers=["X-OpenStack-Request-ID", microversion.HEADER,
                        "Vary"],
        allow_methods=["GET", "POST", "PUT", "DELETE"])


#: Seconds beyond [trusted_pools_api] rpc_timeout the API waits for a
#: conductor's answer before it says which one it waited for.
_CALL_MARGIN = 2.0


def _transport_url(conf: cfg.ConfigOpts) -> str | None:
    try:
        return conf.transport_url
    except cfg.NoSuchOptError:
        return None


def make_services(conf: cfg.ConfigOpts,
                  db: db_api.Connection | None = None,
                  conductors: conductors_mod.Conductors | None = None
                  ) -> Services:
    db = db or db_api.get_instance()
    if conductors is None:
        timeout = conf.trusted_pools_api.rpc_timeout
        conductors = conductors_mod.Conductors(
            db, lambda: rpcapi.ConductorAPI(timeout=timeout),
            conf.conductor.heartbeat_timeout,
            # oslo.messaging's own timeout covers the answer, not a broker
            # it keeps reconnecting to: the API's deadline covers both.
            call_timeout=timeout + _CALL_MARGIN,
            brokers=conductors_mod.broker_addresses(_transport_url(conf)))
    return Services(conf, db, conductors, policy.make_enforcer(conf))


def build(conf: cfg.ConfigOpts, db: db_api.Connection | None = None,
          conductors: conductors_mod.Conductors | None = None) -> WSGIApp:
    """The whole pipeline for ``conf`` ([trusted_pools_api], [keystone_authtoken],
    [oslo_policy], [cors], [healthcheck], [oslo_middleware])."""
    services = make_services(conf, db, conductors)
    application: WSGIApp = APIApplication(services)
    if conf.trusted_pools_api.auth_strategy == "noauth":
        LOG.warning(
            "*** [trusted_pools_api] auth_strategy = noauth: trusted-pools-api does NOT "
            "authenticate anyone; every request acts as an admin of "
            "project %s and may change what the cloud trusts. Use this "
            "for the embedded demo only, never in a cloud. ***",
            NOAUTH_PROJECT)
        application = NoAuth(application)
    else:
        application = auth_token.AuthProtocol(
            application, {"oslo_config_config": conf})
    application = PathSplit(application, healthcheck.Healthcheck(None, conf))
    _set_cors_defaults()
    application = cors.CORS(application, conf)
    application = request_id.RequestId(application)
    return http_proxy_to_wsgi.HTTPProxyToWSGI(application, conf)
