"""The request context of trusted_pools services, and its RPC serializer.

trusted-pools-api builds a :class:`RequestContext` from what
keystonemiddleware put in the request (user, project, roles) and the
request id oslo.middleware gave it; the management and verdicts RPC
clients and servers carry it with :class:`RequestContextSerializer`, so
the conductor's log lines for the work (on the RPC thread and on the
worker that runs it) carry the API's request id.

The agents' bus never carries one of these: what an agent sends as its
context is a plain dict that nothing reads. Agents are the parties being
judged; a context from them (roles, admin flags, a request id) is never
believed for anything (:mod:`trusted_pools.conductor.endpoints`).
"""

from __future__ import annotations

from typing import Any

import oslo_messaging as messaging
from oslo_context import context as oslo_context

__all__ = ["RequestContext", "RequestContextSerializer", "agent_context",
           "clear_current", "get_admin_context"]


class RequestContext(oslo_context.RequestContext):
    """Who asked, and the request id that ties the API's log to the
    conductor's."""

    @classmethod
    def from_dict(cls, values: dict[str, Any], **kwargs: Any
                  ) -> "RequestContext":
        if not isinstance(values, dict):
            values = {}
        return super().from_dict(values, **kwargs)


def get_admin_context() -> RequestContext:
    """The context of a service's own work (no user asked for it)."""
    return RequestContext(is_admin=True, overwrite=False)


def clear_current() -> None:
    """Forget this thread's current context (a pooled worker thread that
    finished a request's work must not log the next job under its id).
    oslo.context keeps it in a thread-local with no public reset."""
    store = getattr(oslo_context, "_request_store", None)
    if store is not None:
        store.context = None


def agent_context(context: Any) -> dict[str, Any]:
    """What a conductor sends an agent as its context: the request id, for
    the agent's log, and nothing that speaks for a user."""
    request_id = getattr(context, "request_id", None)
    if request_id is None and isinstance(context, dict):
        request_id = context.get("request_id")
    return {"request_id": request_id} if isinstance(request_id, str) else {}


class RequestContextSerializer(messaging.Serializer):
    """Sends a :class:`RequestContext` as its dict and rebuilds it on the
    server (which makes it the thread's current context for oslo.log).

    Only for the management bus (trusted-pools-api, conductors, verdict
    consumers): never on a server the agents can reach."""

    def __init__(self, base: messaging.Serializer | None = None) -> None:
        self._base = base or messaging.NoOpSerializer()

    def serialize_entity(self, context: Any, entity: Any) -> Any:
        return self._base.serialize_entity(context, entity)

    def deserialize_entity(self, context: Any, entity: Any) -> Any:
        return self._base.deserialize_entity(context, entity)

    def serialize_context(self, context: Any) -> dict[str, Any]:
        if isinstance(context, oslo_context.RequestContext):
            return context.to_dict()
        if isinstance(context, dict):
            return dict(context)
        return {}

    def deserialize_context(self, context: Any) -> RequestContext:
        return RequestContext.from_dict(context)
