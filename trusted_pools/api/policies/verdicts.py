"""Rules for /v1/verdicts and /v1/keys."""

from __future__ import annotations

from oslo_policy import policy

from trusted_pools.api.policies import base

rules = [
    policy.DocumentedRuleDefault(
        name=base.PREFIX % "verdict:list",
        check_str=base.RULE_ADMIN_OR_READER_OR_SERVICE,
        description="The newest signed verdict of each host.",
        operations=[{"method": "GET", "path": "/v1/verdicts"}],
        scope_types=base.SCOPES),
    policy.DocumentedRuleDefault(
        name=base.PREFIX % "key:list",
        # Any authenticated caller: public keys are public, and consumers
        # pin them from here instead of taking them from the bus.
        check_str="",
        description="The conductors' public result-signing keys (JWKS).",
        operations=[{"method": "GET", "path": "/v1/keys"}],
        scope_types=["system", "domain", "project"]),
]


def list_rules() -> list[policy.DocumentedRuleDefault]:
    return rules
