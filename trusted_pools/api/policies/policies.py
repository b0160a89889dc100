"""Rules for /v1/policies, /v1/groups and /v1/groups/{group}/policies."""

from __future__ import annotations

from oslo_policy import policy

from trusted_pools.api.policies import base

_POLICIES = "/v1/policies"
_POLICY = "/v1/policies/{name}"
_ASSIGNMENTS = "/v1/groups/{group}/policies"



rules = [
    base.rule("policy:list", base.RULE_ADMIN_OR_SYSTEM_READER,
              "List golden-measurement policies (newest versions).", "GET",
              _POLICIES),
    base.rule("policy:get", base.RULE_ADMIN_OR_SYSTEM_READER,
              "Show a policy version with its body.", "GET", _POLICY),
    base.rule("policy:diff", base.RULE_ADMIN_OR_SYSTEM_READER,
              "Compare two versions of a policy.", "GET", _POLICY + "/diff"),
    base.rule("policy:create", base.RULE_ADMIN,
              "Create a policy, or a new version of one.", "POST", _POLICIES),
    base.rule("policy:assignment:list", base.RULE_ADMIN_OR_SYSTEM_READER,
              "List the policies a host group is held to.", "GET",
              _ASSIGNMENTS),
    base.rule("policy:assign", base.RULE_ADMIN,
              "Hold a host group to a policy (pinned or latest version).",
              "PUT", _ASSIGNMENTS + "/{name}"),
    base.rule("policy:unassign", base.RULE_ADMIN,
              "Release a host group from a policy (microversion 1.2).",
              "DELETE", _ASSIGNMENTS + "/{name}"),
    base.rule("group:list", base.RULE_ADMIN_OR_SYSTEM_READER,
              "List host groups with their host counts and policy "
              "assignments (microversion 1.2).", "GET", "/v1/groups"),
]


def list_rules() -> list[policy.DocumentedRuleDefault]:
    return rules
