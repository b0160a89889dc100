"""Rules for /v1/key-releases (issue 14)."""

from __future__ import annotations

from oslo_policy import policy

from trusted_pools.api.policies import base

# Which host asked for which instance's key, and why it was refused: an
# audit trail for the cloud's operators and auditors (system readers), not
# for services or projects.
rules = [
    base.rule("key_release:list", base.RULE_ADMIN_OR_SYSTEM_READER,
              "Key releases and refusals (host, secret id, outcome, "
              "reason; never a key).", "GET", "/v1/key-releases"),
]


def list_rules() -> list[policy.DocumentedRuleDefault]:
    return rules
