"""Rules for /v1/hosts."""

from __future__ import annotations

from oslo_policy import policy

from trusted_pools.api.policies import base

_HOSTS = "/v1/hosts"
_HOST = "/v1/hosts/{name}"



rules = [
    base.rule("host:list", base.RULE_ADMIN_OR_SYSTEM_READER,
              "List hosts with their latest verdict.", "GET", _HOSTS),
    base.rule("host:get", base.RULE_ADMIN_OR_SYSTEM_READER,
              "Show a host with its verdict, level and reasons.", "GET",
              _HOST),
    base.rule("host:verdict:list", base.RULE_ADMIN_OR_SYSTEM_READER,
              "List a host's verdict history.", "GET", _HOST + "/verdicts"),
    base.rule("host:create", base.RULE_ADMIN,
              "Enroll a host (bind its name to its TPM).", "POST", _HOSTS),
    base.rule("host:attest", base.RULE_ADMIN,
              "Challenge a host now and record its verdict.", "POST",
              _HOST + "/attest"),
    base.rule("host:capture", base.RULE_ADMIN,
              "Capture golden measurements from a known-good host.", "POST",
              _HOST + "/capture"),
    base.rule("host:reset_enrollment", base.RULE_ADMIN,
              "Forget a host's TPM binding after a TPM or board swap.", "POST",
              _HOST + "/reset-enrollment"),
    base.rule("host:operation:list", base.RULE_ADMIN_OR_SYSTEM_READER,
              "List a host's enroll, attest and capture operations "
              "(microversion 1.1).", "GET", _HOST + "/operations"),
    base.rule("host:operation:get", base.RULE_ADMIN_OR_SYSTEM_READER,
              "Show one operation of a host with its result or error "
              "(microversion 1.1).", "GET",
              _HOST + "/operations/{operation_id}"),
    base.rule("host:certify_binding_key", base.RULE_ADMIN,
              "Have a host's AK certify its binding key (vTPM secrets are "
              "released wrapped to it).", "POST",
              _HOST + "/certify-binding-key"),
    base.rule("host:update", base.RULE_ADMIN,
              "Move a host to another group (microversion 1.2).", "PATCH",
              _HOST),
    base.rule("host:deep_attest", base.RULE_ADMIN,
              "Attest instances of a host together with the host (one "
              "host quote for the batch; microversion 1.3).", "POST",
              _HOST + "/deep-attest"),
    base.rule("host:vtpm:list", base.RULE_ADMIN_OR_SYSTEM_READER,
              "Show the vTPMs a host last reported (host-reported, not "
              "evidence; microversion 1.3).", "GET", _HOST + "/vtpms"),
    base.rule("host:vtpm:refresh", base.RULE_ADMIN,
              "Ask a host's agent for a new report of its vTPMs "
              "(microversion 1.3).", "POST", _HOST + "/vtpms"),
    base.rule("host:delete", base.RULE_ADMIN,
              "Decommission a host.", "DELETE", _HOST),
]


def list_rules() -> list[policy.DocumentedRuleDefault]:
    return rules
