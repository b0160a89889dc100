"""The oslo.policy enforcer of trusted-pools-api.

:func:`authorize` refuses with a 403 naming the rule; the rules and their
personas are in :mod:`trusted_pools.api.policies`.
"""

from __future__ import annotations

import threading

from oslo_config import cfg
from oslo_context import context as oslo_context
from oslo_policy import policy as oslo_policy

from trusted_pools.api import errors
from trusted_pools.api import policies

_ENFORCER: oslo_policy.Enforcer | None = None
_LOCK = threading.Lock()


def make_enforcer(conf: cfg.ConfigOpts) -> oslo_policy.Enforcer:
    enforcer = oslo_policy.Enforcer(conf)
    enforcer.register_defaults(policies.list_rules())
    return enforcer


def init(conf: cfg.ConfigOpts | None = None) -> oslo_policy.Enforcer:
    """The process-wide enforcer (built once, from ``conf``)."""
    global _ENFORCER
    with _LOCK:
        if _ENFORCER is None:
            _ENFORCER = make_enforcer(conf or cfg.CONF)
        return _ENFORCER


def get_enforcer() -> oslo_policy.Enforcer:
    """Entry point ``oslo.policy.enforcer`` for oslopolicy-policy-generator
    and friends: they need the enforcer with the defaults registered."""
    cfg.CONF([], project="trusted-pools")
    return init(cfg.CONF)


def authorize(enforcer: oslo_policy.Enforcer, rule: str,
              context: oslo_context.RequestContext,
              target: dict | None = None) -> None:
    """Allow the request, or raise a 403 naming ``rule``."""
    try:
        allowed = enforcer.authorize(rule, target or {}, context,
                                     do_raise=False)
    except oslo_policy.InvalidScope:
        allowed = False
    if not allowed:
        raise errors.forbidden(rule)
