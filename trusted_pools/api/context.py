"""What a handler gets: the request, who asks, the negotiated version and
the services (configuration, database, conductors, policy enforcer)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import microversion_parse
import webob
from oslo_config import cfg
from oslo_context import context as oslo_context
from oslo_policy import policy as oslo_policy

from trusted_pools.api import conductors as conductors_mod
from trusted_pools.api import pagination
from trusted_pools.api import policy
from trusted_pools.api import schemas
from trusted_pools.db import api as db_api


@dataclass(frozen=True)
class Services:
    conf: cfg.ConfigOpts
    db: db_api.Connection
    conductors: conductors_mod.Conductors
    enforcer: oslo_policy.Enforcer


@dataclass(frozen=True)
class Call:
    """One API request on its way through a handler."""

    request: webob.Request
    context: oslo_context.RequestContext
    version: microversion_parse.Version
    services: Services

    @property
    def db(self) -> db_api.Connection:
        return self.services.db

    @property
    def conductors(self) -> conductors_mod.Conductors:
        return self.services.conductors

    def authorize(self, rule: str) -> None:
        policy.authorize(self.services.enforcer, rule, self.context)

    def query(self, schema: dict) -> dict[str, str]:
        return schemas.query(self.request, schema)

    def body(self, schema: dict) -> Any:
        return schemas.body(self.request, schema,
                            self.services.conf.trusted_pools_api.max_request_body_size)

    def page(self, params: dict[str, str]) -> pagination.Page:
        group = self.services.conf.trusted_pools_api
        return pagination.page_of(params, group.default_limit,
                                  group.max_limit)

    @property
    def actor(self) -> str:
        """Who made a change, as stored with it (``created_by``)."""
        ctx = self.context
        return ctx.user_name or ctx.user_id or "unknown"

    def rpc_context(self) -> oslo_context.RequestContext:
        """The context sent with conductor calls (RequestContextSerializer
        carries it): the request id oslo.middleware gave this request, and
        who asked (user, project, roles from keystonemiddleware's
        headers), for the conductor's logs and its operation rows."""
        return self.context
