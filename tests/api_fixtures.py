"""trusted-pools-api under test: the real pipeline behind
keystonemiddleware ``auth_token``, with real tokens for the personas.

A real Keystone cannot run on the test machines, so tokens come from
keystonemiddleware's own test fixture (``keystonemiddleware.fixture.
AuthTokenFixture``): it replaces only the token fetch from Keystone; the
middleware still validates every request's ``X-Auth-Token``, strips
forged identity headers and sets the ones oslo.context and oslo.policy
read, exactly as with a real Keystone.

Personas (token id -> who):

* ``admin`` - role admin (with the implied member, reader) in the
  cloud-admin project;
* ``reader`` - role reader on a system-scoped token (an auditor);
* ``member`` - roles member, reader in an ordinary tenant project;
* ``service`` - role service in the service project (nova-scheduler).

Test-side only: the product never imports this module.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import pytest
import webob
from keystoneauth1 import fixture as ksa_fixture
from keystonemiddleware import fixture as ksm_fixture
from oslo_config import cfg

from trusted_pools.api import app as api_app
from trusted_pools.api import microversion

__all__ = ["PERSONAS", "auth_tokens", "make_api_conf", "Client", "error_of"]

PERSONAS = ("admin", "reader", "member", "service")
KEYSTONE_URL = "http://keystone.test/identity"


def _project_token(user: str, project: str, roles: list[str]
                   ) -> ksa_fixture.V3Token:
    token = ksa_fixture.V3Token(user_id=user + "-id", user_name=user,
                                project_id=project + "-id",
                                project_name=project,
                                user_domain_id="default",
                                project_domain_id="default")
    for role in roles:
        token.add_role(name=role)
    return token


def _system_token(user: str, roles: list[str]) -> ksa_fixture.V3Token:
    token = ksa_fixture.V3Token(user_id=user + "-id", user_name=user,
                                user_domain_id="default")
    token.set_system_scope()
    for role in roles:
        token.add_role(name=role)
    return token


@pytest.fixture
def auth_tokens() -> Iterator[ksm_fixture.AuthTokenFixture]:
    """auth_token accepts exactly the persona tokens (ids = names)."""
    fixture = ksm_fixture.AuthTokenFixture()
    fixture.setUp()
    fixture.add_token(_project_token("cloud-admin", "admin",
                                     ["admin", "member", "reader"]),
                      token_id="admin")
    fixture.add_token(_system_token("auditor", ["reader"]),
                      token_id="reader")
    fixture.add_token(_project_token("alice", "tenant",
                                     ["member", "reader"]),
                      token_id="member")
    fixture.add_token(_project_token("nova", "service", ["service"]),
                      token_id="service")
    try:
        yield fixture
    finally:
        fixture.cleanUp()


def make_api_conf(conf: cfg.ConfigOpts | None = None,
                  auth_strategy: str = "keystone") -> cfg.ConfigOpts:
    """A configuration with the [api] and [conductor] groups registered
    (a private one unless ``conf`` is given: the global one when the test
    also runs conductors)."""
    from trusted_pools.conf import api as api_conf
    from trusted_pools.conf import conductor as conductor_conf
    if conf is None:
        conf = cfg.ConfigOpts()
        api_conf.register_opts(conf)
        conductor_conf.register_opts(conf)
        conf([], project="trusted-pools-test", default_config_files=[])
    conf.set_override("auth_strategy", auth_strategy, group="trusted_pools_api")
    # What a deployment sets in [keystone_authtoken]: where clients get
    # tokens (named in the 401's WWW-Authenticate header).
    from keystonemiddleware import auth_token
    for group, options in auth_token.list_opts():
        conf.register_opts(options, group=group)
    conf.set_override("www_authenticate_uri", KEYSTONE_URL,
                      group="keystone_authtoken")
    return conf


def pool_with_api(tmp_path: Any, rabbit_conf: Any, swtpm_pool: Any,
                  swtpm_ca: Any, hosts: int, tamper: tuple[int, ...] = ()
                  ) -> tuple[Any, Any]:
    """A started pool (``hosts`` swtpm hosts, ``tamper`` ones booted with
    an unapproved boot loader, their agents, conductor-a, SQLite) and
    trusted-pools-api's WSGI app in front of it, with the API's own
    configuration (as in its own process) on the pool's bus and database.
    The caller closes the pool."""
    from tests.pool_harness import TrustedPool
    pool = TrustedPool(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca,
                       "sqlite:///%s" % (tmp_path / "pool.sqlite"))
    try:
        pool.configure()
        pool.add_hosts(hosts, tamper=list(tamper))
        pool.start_agents()
        pool.start_conductor("conductor-a")
        conf = make_api_conf()
        conf.set_override("heartbeat_timeout",
                          rabbit_conf.conductor.heartbeat_timeout,
                          group="conductor")
        return pool, api_app.build(conf, db=pool.db)
    except BaseException:
        pool.close()
        raise


class Client:
    """Requests through the whole pipeline, as a persona."""

    def __init__(self, application: api_app.WSGIApp) -> None:
        self.application = application

    def request(self, method: str, path: str, persona: str | None = None,
                body: Any = None, raw: bytes | None = None,
                version: str | None = None,
                headers: dict[str, str] | None = None) -> webob.Response:
        request = webob.Request.blank(path, method=method)
        if persona is not None:
            request.headers["X-Auth-Token"] = persona
        if version is not None:
            request.headers[microversion.HEADER] = version
        if body is not None or raw is not None:
            request.body = raw if raw is not None else json.dumps(
                body).encode()
            request.content_type = "application/json"
        for name, value in (headers or {}).items():
            request.headers[name] = value
        return request.get_response(self.application)

    def get(self, path: str, persona: str | None = "admin", **kw: Any
            ) -> webob.Response:
        return self.request("GET", path, persona, **kw)

    def post(self, path: str, body: Any = None, persona: str = "admin",
             **kw: Any) -> webob.Response:
        return self.request("POST", path, persona, body=body, **kw)

    def put(self, path: str, body: Any = None, persona: str = "admin",
            **kw: Any) -> webob.Response:
        return self.request("PUT", path, persona, body=body, **kw)

    def delete(self, path: str, persona: str = "admin", **kw: Any
               ) -> webob.Response:
        return self.request("DELETE", path, persona, **kw)


def error_of(response: webob.Response) -> dict[str, Any]:
    """The single error of an OpenStack-format error response."""
    assert response.content_type == "application/json", response.body
    errors = response.json["errors"]
    assert len(errors) == 1
    error = errors[0]
    assert error["status"] == response.status_code
    assert set(error) == {"status", "code", "title", "detail",
                          "request_id"}
    assert error["request_id"].startswith("req-")
    return error
