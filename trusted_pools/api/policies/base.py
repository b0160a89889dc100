"""The personas every rule is built from (OpenStack secure RBAC).

* **admin** - ``role:admin`` in any scope: the cloud administrator, who
  may do everything (enroll, attest, change policy).
* **system reader** - ``role:reader`` on a system-scoped token: auditors
  and operators' dashboards read hosts, policies and verdicts. A reader
  in an ordinary project is not one: the infrastructure is not a
  project's resource (Ironic's convention for infrastructure APIs).
* **service** - ``role:service``: Nova-side consumers (scheduler filter,
  trait keeper) read verdicts and keys.

A member of an ordinary project matches none of them: every host, policy
and verdict request is refused (403). ``GET /v1/keys`` is open to any
authenticated caller: public keys are public.
"""

from __future__ import annotations

from oslo_policy import policy

PREFIX = "trusted_pools:%s"

ADMIN = "role:admin"
SYSTEM_READER = "role:reader and system_scope:all"
SERVICE = "role:service"

RULE_ADMIN = "rule:admin"
RULE_ADMIN_OR_SYSTEM_READER = "rule:admin_or_system_reader"
RULE_ADMIN_OR_READER_OR_SERVICE = "rule:admin_or_system_reader_or_service"

#: Both token scopes carry the personas above: a system-scoped token for
#: readers, an admin's project-scoped token for the cloud admin.
SCOPES = ["system", "project"]


def rule(name: str, check: str, description: str, method: str, path: str
         ) -> policy.DocumentedRuleDefault:
    """One documented API rule, named ``trusted_pools:<name>``, for one
    operation, in both scopes."""
    return policy.DocumentedRuleDefault(
        name=PREFIX % name, check_str=check, description=description,
        operations=[{"method": method, "path": path}],
        scope_types=SCOPES)

rules = [
    policy.RuleDefault("admin", ADMIN,
                       description="The cloud administrator."),
    policy.RuleDefault("system_reader", SYSTEM_READER,
                       description="A reader with a system-scoped token."),
    policy.RuleDefault("service", SERVICE,
                       description="An OpenStack service user."),
    policy.RuleDefault("admin_or_system_reader",
                       "rule:admin or rule:system_reader",
                       description="Who may read the infrastructure."),
    policy.RuleDefault("admin_or_system_reader_or_service",
                       "rule:admin or rule:system_reader or rule:service",
                       description="Who may read verdicts."),
]


def list_rules() -> list[policy.RuleDefault]:
    return rules
