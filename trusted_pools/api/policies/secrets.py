"""Rules for /v1/secrets (the key service: Nova vTPM secrets).

Nova calls these with the token of the request it serves (the instance
owner's), so a project's members may store, release and delete their own
project's secrets. A release is answered only to an attested host and is
wrapped to that host's TPM, so letting the owner ask gives nothing more
than the owner could already have; the attestation check, not the caller,
decides where a secret may be opened.
"""

from __future__ import annotations

from oslo_policy import policy

from trusted_pools.api.policies import base

_SECRETS = "/v1/secrets"
_SECRET = "/v1/secrets/{secret_id}"

OWNER = "project_id:%(project_id)s"
ADMIN_SERVICE_OR_OWNER = "rule:admin or rule:service or (role:member and " \
    + OWNER + ")"


def _rule(name: str, check: str, description: str, method: str, path: str
          ) -> policy.DocumentedRuleDefault:
    return policy.DocumentedRuleDefault(
        name=base.PREFIX % name, check_str=check, description=description,
        operations=[{"method": method, "path": path}],
        scope_types=["project"])


rules = [
    _rule("secret:create", "rule:admin or rule:service or role:member",
          "Store a secret, owned by the caller's project.", "POST",
          _SECRETS),
    _rule("secret:get", ADMIN_SERVICE_OR_OWNER,
          "Show a secret's metadata (never its value).", "GET", _SECRET),
    _rule("secret:release", ADMIN_SERVICE_OR_OWNER,
          "Release a secret to a compute host (?host=): answered only if "
          "the host is attested, wrapped to its TPM.", "GET",
          _SECRET + "?host={host}"),
    _rule("secret:delete", ADMIN_SERVICE_OR_OWNER,
          "Delete a secret.", "DELETE", _SECRET),
]


def list_rules() -> list[policy.DocumentedRuleDefault]:
    return rules
