"""Default access rules of trusted-pools-api (oslo.policy).

``oslopolicy-sample-generator --namespace trusted_pools`` documents them;
operators override them in ``/etc/trusted-pools/policy.yaml``.
"""

from __future__ import annotations

import itertools

from oslo_policy import policy

from trusted_pools.api.policies import base
from trusted_pools.api.policies import distrust_actions
from trusted_pools.api.policies import hosts
from trusted_pools.api.policies import instance_policies
from trusted_pools.api.policies import instances
from trusted_pools.api.policies import key_releases
from trusted_pools.api.policies import policies
from trusted_pools.api.policies import secrets
from trusted_pools.api.policies import verdicts
from trusted_pools.api.policies import vtpm_migrations


def list_rules() -> list[policy.RuleDefault]:
    """Every default rule (entry point ``oslo.policy.policies``)."""
    return list(itertools.chain(base.list_rules(), hosts.list_rules(),
                                distrust_actions.list_rules(),
                                instances.list_rules(),
                                key_releases.list_rules(),
                                instance_policies.list_rules(),
                                policies.list_rules(),
                                secrets.list_rules(),
                                verdicts.list_rules(),
                                vtpm_migrations.list_rules()))
