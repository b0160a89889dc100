"""Rules for /v1/instance-policies and the instance-policy assignments of
images and instances (microversion 1.5): golden guest measurements for
deep attestation. Admins write; readers read (like host policies)."""

from __future__ import annotations

from oslo_policy import policy

from trusted_pools.api.policies import base

_POLICIES = "/v1/instance-policies"
_POLICY = "/v1/instance-policies/{name}"

rules = [
    base.rule("instance_policy:list", base.RULE_ADMIN_OR_SYSTEM_READER,
              "List instance policies (newest versions).", "GET", _POLICIES),
    base.rule("instance_policy:get", base.RULE_ADMIN_OR_SYSTEM_READER,
              "Show an instance policy version with its PCR values.", "GET",
              _POLICY),
    base.rule("instance_policy:create", base.RULE_ADMIN,
              "Create an instance policy, or a new version of one.", "POST",
              _POLICIES),
    base.rule("instance_policy:delete", base.RULE_ADMIN,
              "Delete an instance policy (or one version) that nothing is "
              "held to.", "DELETE", _POLICY),
    base.rule("instance_policy:capture", base.RULE_ADMIN,
              "Create an instance policy version from the PCR values an "
              "instance's latest deep attestation verified.", "POST",
              "/v1/instances/{uuid}/capture-policy"),
    base.rule("instance_policy:assignment:list",
              base.RULE_ADMIN_OR_SYSTEM_READER,
              "List which images and instances are held to which instance "
              "policies.", "GET", "/v1/instance-policy-assignments"),
    base.rule("instance_policy:assign", base.RULE_ADMIN,
              "Hold an image (PUT /v1/images/{uuid}/instance-policy) or an "
              "instance (PUT /v1/instances/{uuid}/instance-policy) to an "
              "instance policy.", "PUT", "/v1/images/{uuid}/instance-policy"),
    base.rule("instance_policy:unassign", base.RULE_ADMIN,
              "Release an image (or, at /v1/instances/{uuid}/"
              "instance-policy, an instance) from its instance policy.",
              "DELETE", "/v1/images/{uuid}/instance-policy"),
]


def list_rules() -> list[policy.DocumentedRuleDefault]:
    return rules
