"""Rules for /v1/vtpm-migrations (issue 12)."""

from __future__ import annotations

from oslo_policy import policy

from trusted_pools.api.policies import base

rules = [
    policy.DocumentedRuleDefault(
        name=base.PREFIX % "vtpm_migration:list",
        # Where instances move and why a move was refused: the cloud
        # operator's business (and a service's), not a project's.
        check_str=base.RULE_ADMIN_OR_READER_OR_SERVICE,
        description="vTPM migrations with their step, epoch, age and "
                    "outcome.",
        operations=[{"method": "GET", "path": "/v1/vtpm-migrations"}],
        scope_types=base.SCOPES),
    policy.DocumentedRuleDefault(
        name=base.PREFIX % "vtpm_migration:show",
        check_str=base.RULE_ADMIN_OR_READER_OR_SERVICE,
        description="One vTPM migration.",
        operations=[{"method": "GET",
                     "path": "/v1/vtpm-migrations/{migration_id}"}],
        scope_types=base.SCOPES),
]


def list_rules() -> list[policy.DocumentedRuleDefault]:
    return rules
