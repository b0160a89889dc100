"""Rules for /v1/hosts."""

from __future__ import annotations

from oslo_policy import policy

from trusted_pools.api.policies import base

_HOSTS = "/v1/hosts"
_HOST = "/v1/hosts/{name}"


def _rule(name: str, check: str, description: str, method: str, path: str
          ) -> policy.DocumentedRuleDefault:
    return policy.DocumentedRuleDefault(
        name=base.PREFIX % name, check_str=check, description=description,
        operations=[{"method": method, "path": path}],
        scope_types=base.SCOPES)


rules = [
    _rule("host:list", base.RULE_ADMIN_OR_SYSTEM_READER,
          "List hosts with their latest verdict.", "GET", _HOSTS),
    _rule("host:get", base.RULE_ADMIN_OR_SYSTEM_READER,
          "Show a host with its verdict, level and reasons.", "GET", _HOST),
    _rule("host:verdict:list", base.RULE_ADMIN_OR_SYSTEM_READER,
          "List a host's verdict history.", "GET", _HOST + "/verdicts"),
    _rule("host:create", base.RULE_ADMIN,
          "Enroll a host (bind its name to its TPM).", "POST", _HOSTS),
    _rule("host:attest", base.RULE_ADMIN,
          "Challenge a host now and record its verdict.", "POST",
          _HOST + "/attest"),
    _rule("host:capture", base.RULE_ADMIN,
          "Capture golden measurements from a known-good host.", "POST",
          _HOST + "/capture"),
    _rule("host:reset_enrollment", base.RULE_ADMIN,
          "Forget a host's TPM binding after a TPM or board swap.", "POST",
          _HOST + "/reset-enrollment"),
    _rule("host:delete", base.RULE_ADMIN,
          "Decommission a host.", "DELETE", _HOST),
]


def list_rules() -> list[policy.DocumentedRuleDefault]:
    return rules
