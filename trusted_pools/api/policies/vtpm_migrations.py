"""Rules for /v1/vtpm-migrations (issue 12)."""

from __future__ import annotations

from oslo_policy import policy

from trusted_pools.api.policies import base

# Where instances move and why a move was refused: the cloud operator's
# business (and a service's), not a project's.
rules = [
    base.rule("vtpm_migration:list", base.RULE_ADMIN_OR_READER_OR_SERVICE,
              "vTPM migrations with their step, epoch, age and outcome.",
              "GET", "/v1/vtpm-migrations"),
    base.rule("vtpm_migration:show", base.RULE_ADMIN_OR_READER_OR_SERVICE,
              "One vTPM migration.", "GET",
              "/v1/vtpm-migrations/{migration_id}"),
]


def list_rules() -> list[policy.DocumentedRuleDefault]:
    return rules
