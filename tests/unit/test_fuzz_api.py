"""The REST API fuzz targets (bench/fuzz_api.py): every route has one, and
each one fails when its route is broken on purpose: an untyped error
(a 500), a write for a reader, a conductor call for a tenant, an error
outside the OpenStack format, a host reported trusted.

The slice that runs the targets against the real API is in
tests/unit/test_fuzz_slice.py (one test per target)."""

from __future__ import annotations

import pytest

from bench import fuzz
from bench import fuzz_api
from bench import fuzz_targets
from trusted_pools.api import router

ROUTES = [(method, path) for path, methods in router.ROUTES.items()
          for method in sorted(methods)]
INPUTS = 300


def test_every_route_and_method_has_a_target():
    assert sorted(fuzz_targets.API_TARGETS) == sorted(
        fuzz_targets.api_target_name(m, p) for m, p in ROUTES)
    assert len(set(fuzz_targets.API_TARGETS)) == len(ROUTES)
    for name in fuzz_targets.API_TARGETS:
        assert name in fuzz_targets.names()
    assert fuzz.select(["api.*"]) == sorted(fuzz_targets.API_TARGETS)


def _key_error(call, **kwargs):
    return {}["missing"]


def _writes(call, **kwargs):
    call.db.create_policy_version("planted", "measured_boot",
                                  {"kind": "measured_boot", "pcrs": {}},
                                  created_by="planted")
    return 200, {}


def _calls_conductor(call, **kwargs):
    call.conductors.call("attest_now", {}, "compute-1")
    return 200, {}


def _bad_error(call, **kwargs):
    return 400, {"message": "no code, not the OpenStack format"}


def _says_trusted(call, **kwargs):
    return 200, {"hosts": [{"name": "compute-1", "status": "trusted"}]}


def _records_trusted(call, **kwargs):
    import datetime
    from trusted_pools.db import api as db_api
    host = call.db.get_host_by_name("compute-2")
    now = datetime.datetime.now(datetime.timezone.utc)
    call.db.add_verdicts([db_api.NewVerdict(
        host_id=host.id, status="trusted", level=3, issued_at=now,
        expires_at=now + datetime.timedelta(seconds=60))])
    return 200, {}


@pytest.mark.parametrize("planted, says", [
    (_key_error, "500"),
    (_writes, "changed"),
    (_calls_conductor, "reached the conductor"),
    (_bad_error, "OpenStack error format"),
    (_says_trusted, "trusted"),
    (_records_trusted, "trusted"),
], ids=["key_error", "writes", "calls_conductor", "bad_error",
        "says_trusted", "records_trusted"])
@pytest.mark.parametrize("method, path", ROUTES,
                         ids=["%s %s" % r for r in ROUTES])
def test_target_finds_a_planted_bug(method, path, planted, says,
                                    monkeypatch, tmp_path):
    name = fuzz_targets.api_target_name(method, path)
    monkeypatch.setitem(router.ROUTES[path], method, planted)
    stats = fuzz.run_hypothesis(name, INPUTS, seconds=60, per_input=5.0,
                                crash_dir=str(tmp_path), derandomize=True,
                                max_failures=1)
    assert stats.failures, "%s found nothing in %d inputs" % (
        name, stats.inputs)
    failure = stats.failures[0]
    assert failure.kind == "violation", failure.detail
    assert says in failure.detail.strip().splitlines()[-1], failure.detail
    # The harness put the database back: the unbroken route passes again.
    monkeypatch.undo()
    clean = fuzz.run_hypothesis(name, 30, seconds=30, per_input=5.0,
                                crash_dir=str(tmp_path), derandomize=True)
    assert not clean.failures, clean.failures[0].detail


def test_requests_reach_each_persona_and_outcome():
    """The generator is not stuck at the door: over a few hundred inputs
    of one write route, every persona asks, the admin succeeds and is
    refused, tenants and readers get 403s, missing tokens 401s."""
    name = fuzz_targets.api_target_name("POST", "/v1/policies")
    seen = {}
    original = fuzz_api.send

    def recording(app, request):
        response = original(app, request)
        seen.setdefault(request.persona, set()).add(response.status_int)
        return response

    fuzz_api.send = recording
    try:
        fuzz.run_hypothesis(name, 400, seconds=60, per_input=5.0,
                            crash_dir=None, derandomize=True)
    finally:
        fuzz_api.send = original
    assert set(seen) == set(fuzz_api.PERSONAS)
    assert {201, 400} <= seen["admin"]
    for persona in ("reader", "member", "other", "service"):
        assert 403 in seen[persona], (persona, seen[persona])
    assert seen["none"] == seen["forged"] == {401}


def test_seeded_database_has_no_trusted_verdict():
    harness = fuzz_api.build_harness()
    assert harness.trusted_in_db() == 0
    rows = harness.snapshot()
    assert rows["hosts"] and rows["verdicts"] and rows["policies"]
    assert not any("trusted" in row for row in rows["verdicts"])
