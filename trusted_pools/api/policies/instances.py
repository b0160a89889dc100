"""Rules for /v1/instances (deep attestation, microversion 1.3).

Instances are not this service's resources (Nova owns them, and this API
does not ask Nova whose they are), so the defaults follow the host rules:
the cloud administrator asks for nonces and submits evidence (an operator
may grant a relaying service the same: only admins reach the conductors
by default); readers and services read verdicts (signed results).
"""

from __future__ import annotations

from oslo_policy import policy

from trusted_pools.api.policies import base

_INSTANCE = "/v1/instances/{uuid}"

rules = [
    base.rule("instance:challenge", base.RULE_ADMIN,
              "A one-use nonce for an instance's guest to quote over with "
              "its vTPM.", "POST", _INSTANCE + "/challenge"),
    base.rule("instance:verdict:get", base.RULE_ADMIN_OR_READER_OR_SERVICE,
              "An instance's latest deep-attestation verdict (read against "
              "its host's verdicts since) with its signed result.", "GET",
              _INSTANCE + "/verdict"),
]


def list_rules() -> list[policy.DocumentedRuleDefault]:
    return rules
