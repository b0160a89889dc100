"""JSON schemas of request bodies and query strings, and their checks.

Unknown fields are refused (``additionalProperties: false``): a typo in a
field name must not silently do something else. A refusal is a 400 naming
the field; nothing is changed.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import webob

from trusted_pools.api import errors

_NAME = {"type": "string", "minLength": 1, "maxLength": 255,
         "pattern": r"^[^/\s]+$"}
_SHA256 = {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}
# "ima" is the body's own spelling of "runtime" (accepted as an alias).
_API_KINDS = ("measured_boot", "runtime", "ima")

enroll_host = {
    "type": "object",
    "properties": {"name": _NAME, "group": _NAME, "ek_sha256": _SHA256},
    "required": ["name"],
    "additionalProperties": False,
}

update_host = {
    "type": "object",
    "properties": {"group": _NAME},
    "required": ["group"],
    "additionalProperties": False,
}

create_policy = {
    "type": "object",
    "properties": {"name": _NAME, "kind": {"enum": list(_API_KINDS)},
                   "body": {"type": "object"}},
    "required": ["name", "kind", "body"],
    "additionalProperties": False,
}

assign_policy = {
    "type": "object",
    "properties": {"version": {"type": ["integer", "null"], "minimum": 1}},
    "required": ["version"],
    "additionalProperties": False,
}

#: From microversion 1.2: a group no host is in must be named on purpose.
assign_policy_1_2 = {
    "type": "object",
    "properties": {"version": {"type": ["integer", "null"], "minimum": 1},
                   "allow_empty_group": {"type": "boolean"}},
    "required": ["version"],
    "additionalProperties": False,
}

create_secret = {
    "type": "object",
    "properties": {
        # base64 of 1-4096 bytes (Nova's vTPM passphrases are 512).
        "payload": {"type": "string", "minLength": 4, "maxLength": 5464,
                    "pattern": "^[A-Za-z0-9+/]+={0,2}$"},
        "secret_type": {"enum": ["passphrase", "symmetric", "opaque"]},
        "owner": {"type": "string", "maxLength": 255},
        "name": {"type": "string", "maxLength": 255},
        "algorithm": {"type": "string", "maxLength": 32},
        "bit_length": {"type": "integer", "minimum": 1, "maximum": 32768},
        "min_level": {"type": ["integer", "null"], "minimum": 1,
                      "maximum": 4},
        # The compute host storing a secret it made (Nova's first boot of
        # a vTPM): it must pass the release check itself.
        "host": _NAME,
    },
    "required": ["payload", "secret_type"],
    "additionalProperties": False,
}

_UUID = {"type": "string", "pattern":
         "^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?"
         "[0-9a-fA-F]{12}$"}
_BASE64 = {"type": "string", "minLength": 4, "maxLength": 8192,
           "pattern": "^[A-Za-z0-9+/]+={0,2}$"}

#: POST /v1/instances/{uuid}/challenge (1.3): the instance's host; only
#: a deep attestation of that host may spend the nonce (kept in the
#: database, for whichever conductor verifies the quote).
challenge_instance = {
    "type": "object",
    "properties": {"host": _NAME},
    "required": ["host"],
    "additionalProperties": False,
}

#: POST /v1/hosts/{name}/deep-attest (1.3): one entry per instance, in
#: the form the guest-side attester prints (trusted_pools.guest); the
#: conductor checks each entry's content.
deep_attest = {
    "type": "object",
    "properties": {"instances": {
        "type": "array", "minItems": 1, "maxItems": 4096,
        "items": {
            "type": "object",
            "properties": {
                "instance": _UUID, "vm_quote": _BASE64,
                "vm_signature": _BASE64,
                "vm_pcrs": {"type": "object", "maxProperties": 8},
                "vtpm_certificate": {"type": "object",
                                     "maxProperties": 16}},
            "required": ["instance", "vm_quote", "vm_signature", "vm_pcrs",
                         "vtpm_certificate"],
            "additionalProperties": False}}},
    "required": ["instances"],
    "additionalProperties": False,
}

#: POST /v1/distrust-actions: what trusted-pools-placement-sync did (at
#: most 50 records a request, each bounded).
report_distrust_actions = {
    "type": "object",
    "properties": {"actions": {
        "type": "array", "minItems": 1, "maxItems": 50,
        "items": {
            "type": "object",
            "properties": {
                "host": _NAME,
                "action": {"type": "string",
                           "pattern": "^[a-z][a-z0-9_]{0,63}$"},
                "outcome": {"enum": ["done", "skipped", "failed"]},
                "detail": {"type": "string", "maxLength": 2000},
                "items": {"type": "array", "maxItems": 1000, "items": {
                    "type": "array", "minItems": 2, "maxItems": 2,
                    "items": {"type": "string", "maxLength": 1000}}},
                "verdict": {"type": ["string", "null"], "maxLength": 64},
                "status": {"enum": ["trusted", "untrusted", "unknown",
                                    None]}},
            "required": ["host", "action", "outcome", "detail"],
            "additionalProperties": False}}},
    "required": ["actions"],
    "additionalProperties": False,
}

# Query strings: values arrive as strings; numbers are checked by pattern
# and converted by the handler.
_DIGITS = {"type": "string", "pattern": "^[0-9]{1,9}$"}
_PAGE = {"limit": _DIGITS, "marker": _NAME}

list_hosts_query = {
    "type": "object",
    "properties": dict(_PAGE, group=_NAME,
                       state={"enum": ["enrolling", "enrolled", "disabled"]},
                       status={"enum": ["trusted", "untrusted",
                                        "unknown"]}),
    "additionalProperties": False,
}
page_query = {"type": "object", "properties": dict(_PAGE),
              "additionalProperties": False}
limit_query = {"type": "object", "properties": {"limit": _DIGITS},
               "additionalProperties": False}
no_query = {"type": "object", "additionalProperties": False}
vtpm_migrations_query = {
    "type": "object",
    "properties": {"limit": _DIGITS,
                   "instance": {"type": "string", "maxLength": 36},
                   "active": {"enum": ["true", "false"]}},
    "additionalProperties": False}
#: GET /v1/hosts/{name}/verdicts from 1.4: the marker is the sequence of
#: the last verdict of the previous page.
history_query = {"type": "object",
                 "properties": {"limit": _DIGITS, "marker": _DIGITS},
                 "additionalProperties": False}
key_releases_query = {
    "type": "object",
    "properties": {"limit": _DIGITS, "marker": _DIGITS, "host": _NAME,
                   "outcome": {"enum": ["released", "refused"]},
                   "secret_id": {"type": "string", "minLength": 1,
                                 "maxLength": 36}},
    "additionalProperties": False}
distrust_actions_query = {
    "type": "object",
    "properties": {"limit": _DIGITS, "marker": _DIGITS, "host": _NAME},
    "additionalProperties": False}
show_policy_query = {"type": "object", "properties": {"version": _DIGITS},
                     "additionalProperties": False}
diff_query = {"type": "object",
              "properties": {"from": _DIGITS, "to": _DIGITS},
              "required": ["from", "to"], "additionalProperties": False}
release_secret_query = {"type": "object", "properties": {"host": _NAME},
                        "additionalProperties": False}
verdicts_query = {"type": "object",
                  "properties": {"since": {"type": "string",
                                           "maxLength": 64}},
                  "additionalProperties": False}


def _where(error: jsonschema.ValidationError, root: str) -> str:
    path = "/".join(str(p) for p in error.absolute_path)
    return root + ("/" + path if path else "")


def _message(error: jsonschema.ValidationError) -> str:
    # jsonschema repeats the offending value; a policy body can be large.
    text = error.message
    return text if len(text) <= 300 else text[:300] + "..."


def validate(instance: Any, schema: dict, root: str) -> None:
    """Raise a 400 naming the first invalid field under ``root``."""
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if error is not None:
        raise errors.bad_request("Invalid input for %s: %s"
                                 % (_where(error, root), _message(error)))


def query(request: webob.Request, schema: dict) -> dict[str, str]:
    """The query string as a dict, validated (a repeated parameter is a
    400: which one would count is ambiguous)."""
    params: dict[str, str] = {}
    try:
        items = list(request.GET.items())
    except UnicodeDecodeError:
        raise errors.bad_request("The query string is not UTF-8 once "
                                 "percent-decoded",
                                 code="request.malformed") from None
    for name, value in items:
        if name in params:
            raise errors.bad_request("Query parameter %s is given more "
                                     "than once" % name)
        params[name] = value
    validate(params, schema, "query")
    return params


def body(request: webob.Request, schema: dict, max_bytes: int) -> Any:
    """The JSON request body, parsed and validated."""
    if request.content_length is not None and \
            request.content_length > max_bytes:
        raise errors.APIError(413, "request.too_large",
                              "The request body is over %d bytes"
                              % max_bytes)
    if request.content_type not in ("application/json", ""):
        raise errors.APIError(415, "request.media_type",
                              "Send the body as application/json, not %s"
                              % request.content_type)
    raw = request.body_file.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise errors.APIError(413, "request.too_large",
                              "The request body is over %d bytes"
                              % max_bytes)
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.bad_request("The request body is not valid JSON: %s"
                                 % exc, code="request.malformed")
    validate(data, schema, "body")
    return data

#: POST /v1/instances/{uuid}/challenge from 1.5: the instance's image
#: may be named (it picks the image's instance policy). The caller is
#: the trusted party here: the host and the guest never name the image.
challenge_instance_1_5 = {
    "type": "object",
    "properties": {"host": _NAME, "image": _UUID},
    "required": ["host"],
    "additionalProperties": False,
}

#: POST /v1/instance-policies (1.5): ``pcrs`` bank -> PCR -> allowed hex
#: value(s); the verifier's loader checks the content.
create_instance_policy = {
    "type": "object",
    "properties": {"name": _NAME,
                   "level": {"type": "integer", "enum": [2, 3]},
                   "pcrs": {"type": "object", "minProperties": 1,
                            "maxProperties": 8}},
    "required": ["name", "pcrs"],
    "additionalProperties": False,
}

#: POST /v1/instances/{uuid}/capture-policy (1.5).
capture_instance_policy = {
    "type": "object",
    "properties": {"name": _NAME,
                   "level": {"type": "integer", "enum": [2, 3]},
                   "pcrs": {"type": "array", "minItems": 1, "maxItems": 24,
                            "items": {"type": "integer", "minimum": 0,
                                      "maximum": 23}},
                   "banks": {"type": "array", "minItems": 1,
                             "maxItems": 8,
                             "items": {"type": "string", "maxLength": 16}}},
    "required": ["name"],
    "additionalProperties": False,
}

#: PUT /v1/{images,instances}/{uuid}/instance-policy (1.5).
assign_instance_policy = {
    "type": "object",
    "properties": {"name": _NAME,
                   "version": {"type": ["integer", "null"], "minimum": 1,
                               "maximum": 999999999}},
    "required": ["name"],
    "additionalProperties": False,
}

#: GET /v1/instance-policies/{name} and DELETE (1.5).
instance_policy_version_query = {
    "type": "object",
    "properties": {"version": {"type": "string",
                               "pattern": "^[1-9][0-9]{0,8}$"}},
    "additionalProperties": False,
}
