"""OpenStack microversions for trusted-pools-api.

Clients ask with ``OpenStack-API-Version: trusted-pools 1.x`` (or
``latest``); without the header they get the minimum. Every response of
the v1 API names the version it used and varies on the header.

Version history (raise ``MAX`` and add a line for every change a client
can see, with the release note):

* 1.0 - Initial version: hosts (list, show, verdicts, enroll, attest,
  capture, reset-enrollment, decommission), policies (list, create, show,
  diff, group assignments), verdicts since a time, conductor keys (JWKS).
* 1.1 - Enroll (POST /v1/hosts), attest and capture answer 202 Accepted
  with the pending operation and a Location header; GET
  /v1/hosts/{name}/operations and /v1/hosts/{name}/operations/{id} show
  operations (state pending, done or failed, with the result or the error
  in the OpenStack error format). At 1.0 the API waits for the operation
  and answers as before.
* 1.2 - Day-2 operations on groups: PATCH /v1/hosts/{name} moves a host to
  another group; GET /v1/groups lists groups with their host counts and
  assignments; DELETE /v1/groups/{group}/policies/{name} unassigns. PUT
  /v1/groups/{group}/policies/{name} refuses (404) a group no host is in
  unless the body says ``"allow_empty_group": true``; POST /v1/hosts
  refuses (409) a ``group`` other than an existing host's own.
* 1.3 - Deep attestation and the vTPM view (issue 11): POST
  /v1/instances/{uuid}/challenge (a nonce for the guest, body
  ``{"host"}``), POST /v1/hosts/{name}/deep-attest (202 with an operation
  of kind ``deep_attest`` whose result lists each instance's verdict or
  error), GET /v1/instances/{uuid}/verdict (the latest instance verdict,
  judged again against its host's verdicts since), POST
  /v1/hosts/{name}/vtpms (202: an operation of kind ``list_vtpms`` asks
  the host's agent for a report) and GET /v1/hosts/{name}/vtpms (the last
  report: host-reported, not evidence). POST
  /v1/hosts/{name}/certify-binding-key answers 202 with an operation of
  kind ``certify`` (at 1.0 and 1.1 it waits and answers 200 with the
  binding key, as before).
* 1.4 - Key releases (issue 14): GET /v1/key-releases lists the key
  service's answers, newest first (host, secret id, owner, outcome, the
  host's standing, reason code and text, who asked; never a key), paged
  with ``?marker=<id>&limit=N`` and filtered by ``host``, ``outcome``,
  ``secret_id``. GET /v1/hosts/{name}/verdicts pages too: each verdict
  carries its ``sequence``, ``?marker=<sequence>`` gives older ones, and
  the answer has ``links`` with the next page. POST /v1/distrust-actions
  (trusted-pools-placement-sync reports the actions it took on a host
  that stopped being trusted) and GET /v1/distrust-actions (readers).
* 1.5 - Instance policies (golden guest measurements for deep
  attestation): GET/POST /v1/instance-policies, GET/DELETE
  /v1/instance-policies/{name} (``?version=N``), POST
  /v1/instances/{uuid}/capture-policy (a new version from the PCR values
  the instance's latest deep attestation verified), PUT/DELETE
  /v1/images/{uuid}/instance-policy and /v1/instances/{uuid}/
  instance-policy (an instance's assignment wins over its image's), GET
  /v1/instance-policy-assignments. POST /v1/instances/{uuid}/challenge
  takes an optional ``image`` (the instance's image, named by the
  caller, never by the host or the guest). Instance verdicts name the
  policy (``name@version``) they were appraised against.
"""

from __future__ import annotations

import microversion_parse

from trusted_pools.api import errors

SERVICE_TYPE = "trusted-pools"
HEADER = "OpenStack-API-Version"
VERSIONS = ("1.0", "1.1", "1.2", "1.3", "1.4", "1.5")
MIN = microversion_parse.parse_version_string(VERSIONS[0])
MAX = microversion_parse.parse_version_string(VERSIONS[-1])
#: Enroll, attest and capture answer 202 with an operation to poll.
ASYNC_OPERATIONS = microversion_parse.parse_version_string("1.1")
#: Host group changes, group listing, unassignment.
GROUPS = microversion_parse.parse_version_string("1.2")
#: Deep attestation, instance verdicts, the vTPM view; certify-binding-key
#: answers 202 with an operation.
DEEP_ATTESTATION = microversion_parse.parse_version_string("1.3")
#: GET /v1/key-releases, /v1/distrust-actions; a host's verdict history
#: pages with a marker.
KEY_RELEASES = microversion_parse.parse_version_string("1.4")
#: Instance policies; the challenge names the image.
INSTANCE_POLICIES = microversion_parse.parse_version_string("1.5")


def require(version: microversion_parse.Version,
            minimum: microversion_parse.Version, path: str) -> None:
    """A resource that does not exist before ``minimum`` is a 404 there."""
    if version < minimum:
        raise errors.APIError(404, "resource.not_found",
                              "No resource at %s before microversion %s"
                              % (path, minimum))


def negotiate(environ: dict) -> microversion_parse.Version:
    """The version a request asks for.

    :raises APIError: 400 for a malformed version, 406 for a well-formed
        one this service does not offer (the microversion convention).
    """
    headers = microversion_parse.headers_from_wsgi_environ(environ)
    asked = microversion_parse.get_version(headers,
                                           service_type=SERVICE_TYPE)
    if asked is None:
        return MIN
    if asked.strip() == "latest":
        return MAX
    try:
        version = microversion_parse.parse_version_string(asked)
    except TypeError:
        raise errors.bad_request(
            "Invalid %s header %r: give '%s X.Y' or '%s latest'"
            % (HEADER, asked, SERVICE_TYPE, SERVICE_TYPE),
            code="microversion.invalid")
    if not (MIN <= version <= MAX):
        raise errors.APIError(
            406, "microversion.unsupported",
            "Version %s is not supported by the API. Minimum is %s and "
            "maximum is %s." % (version, MIN, MAX),
            headers=response_headers(MAX))
    return version


def response_headers(version: microversion_parse.Version
                     ) -> dict[str, str]:
    return {HEADER: "%s %s" % (SERVICE_TYPE, version), "Vary": HEADER}
