"""Rules for /v1/distrust-actions (issue 14)."""

from __future__ import annotations

from oslo_policy import policy

from trusted_pools.api.policies import base

rules = [
    # trusted-pools-placement-sync reports with its [trusted_pools_distrust]
    # user's token: the admin that may disable compute services. Not the
    # service role: every compute host's Nova holds it, and a compromised
    # host must not write the record of what was done to it.
    base.rule("distrust_action:create", base.RULE_ADMIN,
              "Report actions taken on a host that stopped being trusted "
              "(stored with the reporting user; changes no verdict).",
              "POST", "/v1/distrust-actions"),
    base.rule("distrust_action:list", base.RULE_ADMIN_OR_SYSTEM_READER,
              "Actions taken on hosts that stopped being trusted, as "
              "reported, newest first.", "GET", "/v1/distrust-actions"),
]


def list_rules() -> list[policy.DocumentedRuleDefault]:
    return rules
