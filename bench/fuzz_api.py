"""REST API fuzz targets: one per (method, route) of trusted-pools-api.

Each input is one HTTP request through the API's whole pipeline
(:func:`trusted_pools.api.app.build`: request id, CORS, keystonemiddleware
``auth_token`` with tokens from its ``AuthTokenFixture``, microversions,
routing, oslo.policy, JSON schema validation, the handler) on a real
SQLite database. The conductors are an in-process stand-in that records
each call and answers as a conductor may: a typed refusal, an outage
(timeout, no conductor alive), a verdict that is never trusted, a capture,
nothing. The conductor's own side of those calls is fuzzed by the
``conductor.management`` target.

What is generated, all read from the fuzzer's bytes (:mod:`bench.fuzz_input`):

* who asks: ``admin`` (cloud admin project), ``reader`` (system-scoped
  auditor), ``member`` (tenant project), ``other`` (member of another
  project), ``service`` (nova), no token, a forged token; sometimes with
  forged identity headers (``X-Roles: admin``...);
* the path ids: the seeded names, missing ones, and random text
  (percent-encoded, unicode, ``..``, slashes, 300 characters);
* the query string (``limit``, ``marker``, ``since``, ``version``,
  ``from``, ``to``, ``group``, ``state``, ``status``, unknown and repeated
  names, raw bytes);
* the ``OpenStack-API-Version`` header;
* the body: the resource's real members mutated
  (:func:`bench.fuzz_input.structured`), random JSON, broken JSON, other
  content types.

The contract (:class:`bench.fuzz_targets.Violation` otherwise):

* no 5xx, except a 503 when the stand-in conductor was made unreachable
  for this very request;
* every error is the OpenStack error format with a ``trusted-pools.``
  code, except auth_token's own 401 for a missing or forged token (and
  such a request never reaches a handler);
* nobody but the admin changes anything: the database is the same before
  and after and no conductor was called; a tenant (``member``, ``other``)
  gets no 2xx anywhere but ``/v1/keys``;
* no response says a host is trusted, and no trusted verdict appears in
  the database: the seeded database has none.
"""

from __future__ import annotations

import collections
import datetime
import hashlib
import json
import os
import sqlite3
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from bench.fuzz_input import Source, structured
from trusted_pools import exception

#: Table order for a restore: parents first.
_TABLES = ("conductors", "hosts", "registrations", "policies",
           "policy_assignments", "verdict_sequence", "verdicts",
           "ima_state", "host_operations", "host_binding_keys", "secrets")

HOSTS = ("compute-1", "compute-2", "compute-3")
POLICIES = ("boot", "runtime")
GROUPS = ("default", "edge")
NAMES = HOSTS + POLICIES + GROUPS + ("missing",)

MEASURED_BOOT = {"kind": "measured_boot",
                 "pcrs": {"sha256": {"0": "00" * 32, "7": "11" * 32}}}
RUNTIME = {"kind": "ima", "allow": {"/usr/bin/true": ["sha256:" + "ab" * 32]}}

#: Persona -> token id sent (None: no X-Auth-Token).
PERSONAS: dict[str, str | None] = {
    "admin": "admin", "reader": "reader", "member": "member",
    "other": "other", "service": "service", "none": None,
    "forged": "forged-token",
}
#: Who may read the infrastructure (oslo.policy defaults).
READERS = ("admin", "reader")
TENANTS = ("member", "other")
UNAUTHENTICATED = ("none", "forged")

_QUERY_KEYS = ["limit", "marker", "since", "version", "from", "to",
               "group", "state", "status", "x"]
_QUERY_VALUES = ["1", "0", "-1", "2", "1000", "1001", "999999999",
                 "1000000000", "", "latest", "1.0", "compute-1", "boot",
                 "default", "missing", "enrolled", "enrolling", "trusted",
                 "untrusted", "unknown", "2026-01-01T00:00:00",
                 "2026-01-01T00:00:00+00:00", "2026-13-45T99:00:00",
                 "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-23:59",
                 "1970-01-01", "a/b", "%", "\x00", "é", " 1", "1 ", "٣",
                 "a" * 300]
_VERSIONS = [None, "trusted-pools 1.0", "trusted-pools latest",
             "trusted-pools 1.1", "trusted-pools 2.0", "trusted-pools 0.9",
             "trusted-pools 1", "trusted-pools 1.x", "trusted-pools",
             "trusted-pools  latest ", "compute 2.1", "trusted-pools 1.0, "
             "trusted-pools 1.0", "trusted-pools 01.00",
             "trusted-pools 1.99999999999999999999", "trusted-pools -1.0"]
_BODY_KEYS = ["name", "group", "ek_sha256", "kind", "body", "version",
              "pcrs", "sha256", "allow", "measured_boot", "runtime", "ima",
              "status", "0", "7", "/usr/bin/true"]
_CONTENT_TYPES = ["application/json", "application/json",
                  "application/json; charset=utf-8", "", "text/plain",
                  "application/x-www-form-urlencoded", "application/JSON"]
_FORGED_HEADERS = {"X-Roles": "admin,member,reader",
                   "X-Service-Roles": "admin", "X-Project-Id": "admin-id",
                   "OpenStack-System-Scope": "all",
                   "X-Identity-Status": "Confirmed", "X-User-Id": "root"}


def body_seeds(method: str, path: str) -> list[Any]:
    """The real bodies of the route (mutated by the generator)."""
    if (method, path) == ("POST", "/v1/hosts"):
        return [{"name": "compute-9"}, {"name": "compute-1",
                                        "group": "edge",
                                        "ek_sha256": "ab" * 32}]
    if (method, path) == ("POST", "/v1/policies"):
        return [{"name": "boot", "kind": "measured_boot",
                 "body": MEASURED_BOOT},
                {"name": "new", "kind": "runtime", "body": RUNTIME},
                {"name": "new", "kind": "ima", "body": RUNTIME}]
    if method == "PUT":
        return [{"version": 1}, {"version": None}, {"version": 3}]
    return [{}]


@dataclass
class FakeConductors:
    """The API's way to the conductors, in process: records each call and
    answers from the current input's bytes as a real conductor may."""

    db: Any
    src: Source = field(default_factory=lambda: Source(b""))
    calls: list[tuple[str, str]] = field(default_factory=list)
    outage: bool = False

    def ring(self) -> Any:
        from trusted_pools.protocol.hash_ring import HashRing
        return HashRing(["conductor-a", "conductor-b"])

    def owner(self, host: str) -> str:
        return self.ring().owner(host)

    def call(self, method: str, context: dict, host: str, **kwargs: Any
             ) -> Any:
        import oslo_messaging as messaging
        self.calls.append((method, host))
        mode = self.src.byte() % 8
        if mode == 5:
            self.outage = True
            raise messaging.MessagingTimeout("no answer")
        if mode == 6:
            self.outage = True
            raise exception.TemporaryFailure(reason="no conductor is alive")
        if mode == 7:
            raise self.src.choice([
                exception.HostNotFound(host=host),
                exception.HostNotOwned(host=host, owner="conductor-b"),
                exception.EKNotApproved(host=host, presented="ab" * 32,
                                        reason="no EK is approved"),
                exception.InvalidQuote(reason="signature"),
                exception.HostAlreadyExists(host=host)])
        if method in _OPERATIONS:
            return self._operation(method, host, kwargs)
        if method == "challenge_instance":
            return {"instance": kwargs.get("instance"), "host": host,
                    "nonce": "bm9uY2Vub25jZW5vbmNlbm9uY2Vub25jZW5vbmNlbm8=",
                    "expires_in": 300}
        return None

    def _operation(self, method: str, host: str, kwargs: dict) -> Any:
        """What a conductor (RPC 3.0) does for enroll, attest and capture:
        record the operation, do the work (here at once), record its
        result, answer with the pending operation."""
        operation = self.db.create_operation(host, _OPERATIONS[method],
                                             "conductor-a")
        if method == "enroll_host":
            # What the real conductor writes: the host, enrolled.
            self.db.create_host(host, group=kwargs.get("group", "default"),
                                state="enrolled")
            result: Any = {"host": host, "state": "enrolled"}
        elif method == "attest_now":
            now = datetime.datetime.now(datetime.timezone.utc).timestamp()
            result = {"verdict": {
                "status": self.src.choice(["untrusted", "unknown"]),
                "level": self.src.below(4),
                "reasons": ["generated"], "issued_at": now,
                "expires_at": now + 180},
                "signed_result": self.src.choice([None, "x.y.z"])}
        elif method == "certify_binding_key":
            result = {"host": host, "name": "000b" + "ab" * 32,
                      "generation": 1}
        elif method == "deep_attest":
            result = {"host": host, "instances": [
                {"instance": item.get("instance"),
                 "error": {"type": "VMQuoteInvalid", "reason": "generated"}}
                for item in kwargs.get("instances") or ()]}
        elif method == "list_vtpms":
            result = {"host": host, "source": "host-reported", "note": "",
                      "enabled": self.src.flag(), "driver": "swtpm",
                      "reported_at": 0, "vtpms": []}
        else:
            result = {"measured_boot": MEASURED_BOOT, "ima": RUNTIME}
        if method == "list_vtpms" and self.src.flag():
            # A compromised host's report the conductor refused.
            self.db.finish_operation(
                operation.id, error_type="HostReportRefused",
                error={"message": "refused", "kwargs": {
                    "host": host, "what": "vTPM report",
                    "reason": "generated"}})
            return {"host": host, "operation": operation.id,
                    "state": "pending"}
        self.db.finish_operation(operation.id, result=result)
        return {"host": host, "operation": operation.id, "state": "pending"}


#: Conductor methods that run as host operations, and their kind.
_OPERATIONS = {"enroll_host": "enroll", "attest_now": "attest",
               "capture_policy": "capture", "certify_binding_key": "certify",
               "deep_attest": "deep_attest", "list_vtpms": "list_vtpms"}


@dataclass
class Harness:
    app: Any
    db: Any
    conductors: FakeConductors
    seed_rows: dict[str, list[tuple]]
    inputs: int = 0
    #: (route, persona, status) -> count: what the inputs reached.
    outcomes: collections.Counter = field(default_factory=collections.Counter)

    #: The harness's own connection to the same SQLite file (the API's
    #: engine opens one per request): reads what the API committed.
    raw: Any = None

    def snapshot(self) -> dict[str, list[tuple]]:
        return {table: self.raw.execute(
            "SELECT * FROM %s ORDER BY rowid" % table).fetchall()
            for table in _TABLES}

    def restore(self) -> None:
        """Back to the seeded rows (after an admin changed something)."""
        self.raw.execute("BEGIN IMMEDIATE")
        try:
            for table in reversed(_TABLES):
                self.raw.execute("DELETE FROM %s" % table)
            for table in _TABLES:
                rows = self.seed_rows[table]
                if rows:
                    self.raw.executemany(
                        "INSERT INTO %s VALUES (%s)" % (
                            table, ", ".join("?" * len(rows[0]))), rows)
        except BaseException:
            self.raw.execute("ROLLBACK")
            raise
        self.raw.execute("COMMIT")

    def trusted_in_db(self) -> int:
        return self.raw.execute(
            "SELECT count(*) FROM verdicts WHERE status = 'trusted'"
        ).fetchone()[0]


def _token_fixture() -> Any:
    """auth_token accepts exactly the persona tokens (ids = names); the
    ``other`` persona is a member of another tenant project."""
    from keystonemiddleware import fixture as ksm_fixture
    from tests.api_fixtures import _project_token, _system_token
    fixture = ksm_fixture.AuthTokenFixture()
    # Its setUp patches auth_token's class for the whole process; the
    # harness lives as long as the process (and beside tests that use the
    # fixture themselves), so only the harness's own middleware instance
    # gets the fixture's fetch_token (see _install_tokens).
    fixture.setUp()
    fixture.cleanUp()
    fixture.add_token(_project_token("cloud-admin", "admin",
                                     ["admin", "member", "reader"]),
                      token_id="admin")
    fixture.add_token(_system_token("auditor", ["reader"]),
                      token_id="reader")
    fixture.add_token(_project_token("alice", "tenant",
                                     ["member", "reader"]),
                      token_id="member")
    fixture.add_token(_project_token("mallory", "other-tenant",
                                     ["member", "reader"]),
                      token_id="other")
    fixture.add_token(_project_token("nova", "service", ["service"]),
                      token_id="service")
    return fixture


def _install_tokens(app: Any, fixture: Any) -> None:
    """Give the pipeline's auth_token middleware the fixture's tokens."""
    from keystonemiddleware import auth_token
    layer, seen = app, 0
    while not isinstance(layer, auth_token.AuthProtocol):
        layer = getattr(layer, "authenticated", None) or getattr(
            layer, "application", None) or getattr(layer, "_app", None)
        seen += 1
        if layer is None or seen > 20:
            raise RuntimeError("no auth_token middleware in the pipeline")
    layer.fetch_token = fixture.fetch_token


def _seed(db: Any) -> None:
    """Hosts with untrusted and unknown verdicts (never a trusted one),
    policies with two versions, an assignment, conductor keys (one with a
    kid that is not its key's)."""
    from trusted_pools.protocol import keystore
    from trusted_pools.db import api as db_api
    now = datetime.datetime.now(datetime.timezone.utc)
    for name, state, status in (("compute-1", "enrolled", "untrusted"),
                                ("compute-2", "enrolling", None),
                                ("compute-3", "enrolled", "unknown")):
        host = db.create_host(name, state=state,
                              group="edge" if name == "compute-3"
                              else "default")
        if status:
            db.add_verdicts([db_api.NewVerdict(
                host_id=host.id, status=status, level=1, issued_at=now,
                expires_at=now + datetime.timedelta(days=3650),
                reasons=["OS boot: kernel not allowed"],
                signed_result="token-of-" + name)])
    for version in (1, 2):
        body = json.loads(json.dumps(MEASURED_BOOT))
        body["pcrs"]["sha256"]["4"] = "%02x" % version * 32
        db.create_policy_version("boot", "measured_boot", body, "seed")
    db.create_policy_version("runtime", "ima", RUNTIME, "seed")
    db.assign_policy("default", "boot", None)
    db.assign_policy("edge", "runtime", 1)
    for name, kid in (("conductor-a", None), ("conductor-b", "not-its-kid")):
        key = keystore.generate_signing_key()
        public = keystore.public_key_of(key)
        db.register_conductor(name, public_key=keystore.public_key_pem(
            public), key_id=kid or keystore.jwk_thumbprint(public))


def build_harness() -> Harness:
    from tests.api_fixtures import make_api_conf
    from trusted_pools.api import app as api_app
    from trusted_pools.db import api as db_api
    from trusted_pools.db import migration
    workdir = tempfile.mkdtemp(prefix="tp-fuzz-api-")
    db = db_api.Connection(db_api.make_context_manager(
        "sqlite:///%s" % os.path.join(workdir, "api.sqlite")))
    migration.upgrade(engine=db.get_engine())
    _seed(db)
    conductors = FakeConductors(db)
    app = api_app.build(make_api_conf(), db=db, conductors=conductors)
    _install_tokens(app, _token_fixture())
    harness = Harness(app, db, conductors, {})
    harness.raw = sqlite3.connect(os.path.join(workdir, "api.sqlite"),
                                  isolation_level=None)
    harness.raw.execute("PRAGMA foreign_keys = OFF")
    harness.seed_rows = harness.snapshot()
    return harness


# --- one request ------------------------------------------------------------

#: Query parameters each route reads (others are refused by its schema).
_ROUTE_QUERY = {
    ("GET", "/v1/hosts"): ["limit", "marker", "group", "state", "status"],
    ("GET", "/v1/hosts/{name}/verdicts"): ["limit"],
    ("GET", "/v1/policies"): ["limit", "marker"],
    ("GET", "/v1/policies/{name}"): ["version"],
    ("GET", "/v1/policies/{name}/diff"): ["from", "to"],
    ("GET", "/v1/verdicts"): ["since"],
}
_VALUES_BY_KEY = {
    "limit": ["1", "2", "3", "1000", "0", "1001", "01", "999999999"],
    "version": ["1", "2", "3", "0", "00", "999999999"],
    "from": ["1", "2", "3", "0"], "to": ["1", "2", "3", "0"],
    "marker": list(NAMES), "group": list(GROUPS),
    "state": ["enrolled", "enrolling", "disabled", "gone"],
    "status": ["trusted", "untrusted", "unknown", "TRUSTED"],
    "since": ["2020-01-01T00:00:00", "2020-01-01T00:00:00+00:00",
              "2999-01-01", "0001-01-01T00:00:00+14:00",
              "9999-12-31T23:59:59-23:59", "2026-13-45T99:00:00", "now"],
}


def _path_id(src: Source, likely: tuple[str, ...]) -> str:
    kind = src.byte() % 8
    if kind < 5:
        return urllib.parse.quote(src.choice(likely), safe="")
    if kind == 5:
        return src.choice(["", "..", ".", "%2F", "a%2Fb", "%zz", "%00",
                           "compute-1%20", "COMPUTE-1", "a" * 300,
                           "%C3%A9" * 3, "%FF%FE", "compute-1/verdicts",
                           "*", "compute-1;x", "%252F", "missing"])
    raw = src.take(src.below(24))
    if kind == 6:
        return urllib.parse.quote(raw, safe="")
    # Unquoted text as a broken client sends it (keeps the path's ASCII).
    return "".join(chr(b) if 0x21 <= b < 0x7f and b not in b"?#" else
                   "%%%02X" % b for b in raw)


def _query(src: Source, method: str, path: str) -> str:
    mode = src.byte() % 8
    known = _ROUTE_QUERY.get((method, path), [])
    if mode in (1, 2) or (mode == 0 and not known):
        return ""
    if mode == 3:
        return "".join(chr(b) if 0x21 <= b < 0x7f and b != ord("#") else
                       "%%%02X" % b for b in src.take(src.below(40)))
    if known and mode in (0, 4, 5):
        # Well formed: the route's own parameters, once each.
        return urllib.parse.urlencode([
            (key, src.choice(_VALUES_BY_KEY[key])) for key in known
            if src.byte() % 4 != 3])
    pairs = []
    for _ in range(1 + src.below(3)):
        key = src.choice(known) if known and src.byte() % 4 else \
            src.choice(_QUERY_KEYS)
        pick = src.byte() % 4
        if pick < 2 and key in _VALUES_BY_KEY:
            value = src.choice(_VALUES_BY_KEY[key])
        elif pick < 3:
            value = src.choice(_QUERY_VALUES)
        else:
            value = src.take(src.below(16)).decode("latin-1")
        pairs.append((key, value))
    return urllib.parse.urlencode(pairs)


def _body(src: Source, method: str, path: str) -> tuple[bytes | None, str]:
    mode = src.byte() % 8
    if method in ("GET", "DELETE") and mode < 6:
        return None, ""
    content_type = src.choice(_CONTENT_TYPES) if src.byte() % 4 == 3 \
        else "application/json"
    if mode == 7:
        return src.take(src.below(64)), content_type
    if mode < 2:
        value = src.choice(body_seeds(method, path))
    else:
        value = structured(src, body_seeds(method, path), _BODY_KEYS)
    text = json.dumps(value)
    if mode == 6:
        raw = bytearray(text.encode())
        for _ in range(1 + src.below(3)):
            if raw:
                raw[src.below(len(raw))] = src.byte()
        return bytes(raw), content_type
    return text.encode(), content_type


@dataclass
class Request:
    persona: str
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None


def generate(src: Source, method: str, path: str) -> Request:
    persona = src.choice(list(PERSONAS))
    concrete = path
    if "{group}" in concrete:
        concrete = concrete.replace("{group}", _path_id(src, GROUPS))
    if "{name}" in concrete:
        concrete = concrete.replace("{name}", _path_id(
            src, HOSTS if path.startswith("/v1/hosts") else POLICIES))
    # Zero bytes (what short inputs read as) make a well-formed request.
    if src.byte() % 16 == 15:
        concrete += src.choice(["/", "//", "/x", ".json"])
    query = _query(src, method, path)
    headers: dict[str, str] = {}
    token = PERSONAS[persona]
    if token is not None:
        headers["X-Auth-Token"] = token
    version = src.choice(_VERSIONS[:3]) if src.byte() % 4 else \
        src.choice(_VERSIONS)
    if version is not None:
        headers["OpenStack-API-Version"] = version
    if src.byte() % 8 == 7:
        headers.update(_FORGED_HEADERS)
    body, content_type = _body(src, method, path)
    if body is not None and content_type:
        headers["Content-Type"] = content_type
    return Request(persona, method, concrete + ("?" + query if query else ""),
                   headers, body)


def send(app: Any, request: Request) -> Any:
    import webob
    blank = webob.Request.blank(request.url, method=request.method)
    for name, value in request.headers.items():
        blank.headers[name] = value
    if request.body is not None:
        blank.body = request.body
    return blank.get_response(app)


# --- the contract -----------------------------------------------------------

def _trusted_statuses(body: Any) -> Iterable[Any]:
    """Every host status a response body states."""
    if not isinstance(body, dict):
        return
    for key in ("host", "verdict"):
        if isinstance(body.get(key), dict):
            yield body[key].get("status")
    for key in ("hosts", "verdicts"):
        for item in body.get(key) or []:
            if isinstance(item, dict):
                yield item.get("status")


def check(harness: Harness, request: Request, response: Any,
          before: Any, fail: Callable[[str], Exception]) -> None:
    """Raise ``fail(reason)`` where ``response`` breaks the contract."""
    what = "%s %s as %s" % (request.method, request.url[:120],
                            request.persona)
    # The database first: whatever is found below, the next input starts
    # from the seed again.
    changed = harness.snapshot() != before
    trusted = harness.trusted_in_db()
    if changed or trusted:
        harness.restore()
    status = response.status_int
    outage = harness.conductors.outage
    calls = list(harness.conductors.calls)
    if status >= 500 and not (status == 503 and outage):
        raise fail("%s answered %s: %s" % (what, response.status,
                                           response.body[:300]))
    body: Any = None
    if response.body:
        if response.content_type != "application/json":
            raise fail("%s answered %s with %s, not JSON" % (
                what, response.status, response.content_type))
        try:
            body = json.loads(response.body)
        except ValueError:
            raise fail("%s answered unparsable JSON" % what)
    if request.persona in UNAUTHENTICATED:
        if status != 401:
            raise fail("%s (no valid token) answered %s" % (
                what, response.status))
    elif status >= 400:
        entries = body.get("errors") if isinstance(body, dict) else None
        if not (isinstance(entries, list) and len(entries) == 1
                and isinstance(entries[0], dict)):
            raise fail("%s answered %s not in the OpenStack error format: "
                       "%r" % (what, response.status, body))
        entry = entries[0]
        if set(entry) != {"status", "code", "title", "detail",
                          "request_id"} or entry["status"] != status \
                or not str(entry["code"]).startswith("trusted-pools.") \
                or not str(entry["request_id"]).startswith("req-") \
                or not isinstance(entry["detail"], str):
            raise fail("%s answered a malformed error: %r" % (what, entry))
        if status == 401:
            raise fail("%s: a valid token answered 401" % what)
    elif status not in (200, 201, 202, 204):
        raise fail("%s answered %s" % (what, response.status))
    if "trusted" in _trusted_statuses(body):
        raise fail("%s says a host is trusted: %r" % (what, body))
    if trusted:
        raise fail("%s left a trusted verdict in the database" % what)
    if request.persona != "admin":
        if calls:
            raise fail("%s reached the conductor: %r" % (what, calls))
        if changed:
            raise fail("%s changed the database" % what)
        if request.method != "GET" and status < 400:
            raise fail("%s changed something: %s" % (what,
                                                     response.status))
        if request.persona in TENANTS and status < 400 and \
                not request.url.startswith("/v1/keys"):
            raise fail("%s: a tenant read the infrastructure" % what)


def run_request(harness: Harness, method: str, path: str, data: bytes,
                fail: Callable[[str], Exception]) -> Any:
    src = Source(data)
    request = generate(src, method, path)
    harness.conductors.src = src
    harness.conductors.calls.clear()
    harness.conductors.outage = False
    harness.inputs += 1
    before = harness.seed_rows   # every input starts from the seed
    try:
        response = send(harness.app, request)
    except Exception:
        # The app answers every request; a raise got out of the pipeline.
        if harness.snapshot() != harness.seed_rows:
            harness.restore()
        raise
    harness.outcomes[(method + " " + path, request.persona,
                      response.status_int)] += 1
    check(harness, request, response, before, fail)
    return response


def seeds_for(method: str, path: str) -> list[bytes]:
    """Starting inputs: fixed pseudo-random blobs of several lengths (one
    input is one request whatever its bytes; the engines mutate these)."""
    out = []
    block = ("%s %s" % (method, path)).encode()
    for i in range(16):
        block = hashlib.sha256(block).digest()
        out.append((block * (1 + i % 8))[:16 + 24 * (i % 8)])
    return out
