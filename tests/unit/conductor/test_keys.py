"""The key service's storage and refusals (SQLite; the release path with
real TPMs is in tests/functional/conductor/test_key_release.py)."""

from __future__ import annotations

import dataclasses
import os

import pytest

from trusted_pools import exception
from trusted_pools.conductor import keys
from trusted_pools.db import api as db_api
from trusted_pools.db import migration


@pytest.fixture
def db(tmp_path) -> db_api.Connection:
    conn = db_api.Connection(db_api.make_context_manager(
        "sqlite:///%s" % (tmp_path / "keys.sqlite")))
    migration.upgrade(engine=conn.get_engine())
    return conn


class Notifier:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []

    def info(self, ctx, event, payload):
        self.sent.append((event, payload))

    warn = info


@pytest.fixture
def service(db, tmp_path) -> keys.KeyService:
    return keys.KeyService(db, keys.load_or_create_kek(
        str(tmp_path / "kek")), Notifier())


def test_kek_file_created_0600_and_reused(tmp_path):
    path = tmp_path / "kek"
    first = keys.load_or_create_kek(str(path))
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert keys.load_or_create_kek(str(path)).kek_id == first.kek_id


def test_kek_file_readable_by_others_or_wrong_size_is_refused(tmp_path):
    path = tmp_path / "kek"
    path.write_bytes(os.urandom(32))
    path.chmod(0o644)
    with pytest.raises(exception.KeyEncryptionKeyInvalid) as error:
        keys.load_or_create_kek(str(path))
    assert "chmod 600" in str(error.value)
    path.chmod(0o600)
    path.write_bytes(b"short")
    with pytest.raises(exception.KeyEncryptionKeyInvalid):
        keys.load_or_create_kek(str(path))


def test_stored_encrypted_and_bound_to_its_row(service, db):
    stored = service.store("proj", b"secret-value" * 3, "passphrase",
                           owner="inst-1", name="vTPM")
    record = db.get_secret(stored["id"])
    assert b"secret-value" not in record.ciphertext
    assert service.kek.decrypt(record) == b"secret-value" * 3
    # Moved to another project or id, or altered: does not open.
    for changed in (dataclasses.replace(record, project_id="other"),
                    dataclasses.replace(record, id="another-id"),
                    dataclasses.replace(record, secret_type="opaque"),
                    dataclasses.replace(record, ciphertext=bytes(
                        [record.ciphertext[0] ^ 1]) + record.ciphertext[1:])):
        with pytest.raises(exception.SecretUndecryptable):
            service.kek.decrypt(changed)


def test_other_kek_is_named_not_tried(service, db, tmp_path):
    stored = service.store("proj", b"v" * 16, "opaque")
    other = keys.load_or_create_kek(str(tmp_path / "kek2"))
    with pytest.raises(exception.SecretUndecryptable) as error:
        other.decrypt(db.get_secret(stored["id"]))
    assert service.kek.kek_id in str(error.value)


@pytest.mark.parametrize("kwargs", [
    dict(payload=b"", secret_type="opaque"),
    dict(payload=b"x" * 4097, secret_type="opaque"),
    dict(payload=b"x", secret_type="private"),
    dict(payload=b"x", secret_type="opaque", min_level=5),
    dict(payload=b"x", secret_type="opaque", min_level=True),
])
def test_store_refuses_what_cannot_be_released(service, kwargs):
    with pytest.raises(exception.Invalid):
        service.store("proj", **kwargs)


def test_unknown_and_unenrolled_hosts_are_refused_and_notified(service, db):
    stored = service.store("proj", b"v" * 16, "opaque")
    with pytest.raises(exception.KeyReleaseRefused) as refused:
        service.release(stored["id"], "compute-9")
    assert str(refused.value) == ("compute-9 is unknown: it is not a "
                                  "registered host; the vTPM key is "
                                  "withheld")
    db.create_host("compute-1")
    with pytest.raises(exception.KeyReleaseRefused) as refused:
        service.release(stored["id"], "compute-1")
    assert "not enrolled" in str(refused.value)
    assert [p["host"] for _, p in service.notifier.sent] == [
        "compute-9", "compute-1"]
    assert not any(p["released"] for _, p in service.notifier.sent)


def test_missing_secret_is_not_found(service):
    with pytest.raises(exception.SecretNotFound):
        service.release("nope", "compute-1")
    with pytest.raises(exception.SecretNotFound):
        service.delete("nope")


@pytest.mark.parametrize("secret_id", [{"id": 1}, ["x"], 7, None,
                                       "a" * 400])
def test_release_and_delete_refuse_an_id_that_is_no_secret_id(service,
                                                              secret_id):
    """Found by bench/fuzz.py (conductor.management): a dict or list as
    the secret id reached the database driver (an untyped error)."""
    with pytest.raises(exception.InvalidParameterValue) as error:
        service.release(secret_id, "compute-1")
    assert "secret_id" in str(error.value)
    with pytest.raises(exception.InvalidParameterValue):
        service.delete(secret_id)


@pytest.mark.parametrize("host", [{"h": 1}, ["compute-1"], 7, "",
                                  "h" * 300])
def test_store_and_release_refuse_a_host_that_is_no_name(service, host):
    """Found by bench/fuzz.py: a compute host that is not a name reached
    the database lookup."""
    with pytest.raises(exception.InvalidParameterValue) as error:
        service.store("project", b"secret", "passphrase", host=host)
    assert "host" in str(error.value)
    with pytest.raises(exception.InvalidParameterValue):
        service.release("00000000-0000-4000-8000-000000000000", host)


def test_store_refuses_a_project_id_longer_than_its_column(service):
    with pytest.raises(exception.InvalidParameterValue):
        service.store("p" * 256, b"secret", "passphrase")


def test_refusals_are_recorded_with_reason_code_never_the_key(service, db):
    """Each refusal is kept (host, secret, outcome, reason, who asked)
    for GET /v1/key-releases; the stored row has no key material."""
    stored = service.store("proj", b"topsecret-value!", "passphrase",
                           owner="inst-1")
    db.create_host("compute-1")
    for host in ("compute-9", "compute-1"):
        with pytest.raises(exception.KeyReleaseRefused):
            service.release(stored["id"], host,
                            {"user_name": "nova", "request_id": "req-7"})
    records = db.list_key_releases()
    assert [(r.host, r.outcome, r.reason_code) for r in records] == [
        ("compute-1", "refused", "not_enrolled"),
        ("compute-9", "refused", "not_registered")]
    assert all(r.secret_id == stored["id"] and r.owner == "inst-1"
               and r.requested_by == "nova" and r.request_id == "req-7"
               for r in records)
    for record in records:
        assert b"topsecret" not in repr(record).encode()
    assert [p["reason_code"] for _, p in service.notifier.sent] == [
        "not_registered", "not_enrolled"]


def test_refusal_stands_when_its_record_cannot_be_written(service, db,
                                                          monkeypatch):
    """A database that cannot take the record does not turn a refusal
    into anything else (the caller still gets KeyReleaseRefused)."""
    stored = service.store("proj", b"v" * 16, "opaque")

    def broken(record):
        raise exception.DatabaseError(reason="disk full")

    monkeypatch.setattr(db, "record_key_release", broken)
    with pytest.raises(exception.KeyReleaseRefused):
        service.release(stored["id"], "compute-9")


def test_metrics_count_refusals_by_reason(db, tmp_path):
    from trusted_pools.conductor import metrics as metrics_mod
    metrics = metrics_mod.ConductorMetrics()
    service = keys.KeyService(db, keys.load_or_create_kek(
        str(tmp_path / "kek")), None, metrics=metrics)
    stored = service.store("proj", b"v" * 16, "opaque")
    for _ in range(2):
        with pytest.raises(exception.KeyReleaseRefused):
            service.release(stored["id"], "compute-9")
    value = metrics.registry.get_sample_value(
        "trusted_pools_key_release_reasons_total",
        {"reason": "not_registered"})
    assert value == 2


def test_a_host_flooding_refusals_does_not_grow_the_table(db, tmp_path):
    """Attack: a compromised compute host holds Nova's service role, so
    it may ask for any secret in any name, as often as it likes. Each ask
    is refused (and counted), but the rows written stay bounded: a repeat
    within the window is not stored again, nor more than the budget a
    minute in made-up names."""
    from trusted_pools.conductor import metrics as metrics_mod
    from trusted_pools.conductor import refusal_budget
    now = [1_000_000.0]
    metrics = metrics_mod.ConductorMetrics()
    service = keys.KeyService(
        db, keys.load_or_create_kek(str(tmp_path / "kek")), Notifier(),
        clock=lambda: now[0], metrics=metrics,
        refusals=refusal_budget.RefusalBudget(per_minute=5,
                                              repeat_window=60),
        unregistered=refusal_budget.RefusalBudget(per_minute=5,
                                                  repeat_window=60))
    stored = service.store("proj", b"v" * 16, "opaque")
    for _ in range(50):
        with pytest.raises(exception.KeyReleaseRefused):
            service.release(stored["id"], "compute-9")
    assert len(db.list_key_releases()) == 1
    for n in range(50):
        with pytest.raises(exception.KeyReleaseRefused):
            service.release(stored["id"], "made-up-%d" % n)
    assert len(db.list_key_releases()) == 5
    # Every refusal was still answered, notified and counted.
    assert len(service.notifier.sent) == 100
    assert metrics.registry.get_sample_value(
        "trusted_pools_key_release_reasons_total",
        {"reason": "not_registered"}) == 100
    # That flood did not use up the records of refusals to real hosts.
    db.create_host("compute-1")
    with pytest.raises(exception.KeyReleaseRefused):
        service.release(stored["id"], "compute-1")
    assert db.list_key_releases()[0].host == "compute-1"
    assert len(db.list_key_releases()) == 6
    # A minute later the budget is back, one repeat is recorded again.
    now[0] += 61
    with pytest.raises(exception.KeyReleaseRefused):
        service.release(stored["id"], "compute-9")
    assert len(db.list_key_releases()) == 7


def test_refusal_budget_refills_and_forgets():
    from trusted_pools.conductor import refusal_budget
    budget = refusal_budget.RefusalBudget(per_minute=2, repeat_window=10)
    assert budget.admit(("s", "a", "r"), 0.0)
    assert not budget.admit(("s", "a", "r"), 5.0)     # a repeat
    assert budget.admit(("s", "b", "r"), 5.0)
    assert not budget.admit(("s", "c", "r"), 6.0)     # budget spent
    assert budget.admit(("s", "c", "r"), 36.0)        # one token back
    assert budget.admit(("s", "a", "r"), 66.0)        # forgotten, refilled
    assert not budget.admit(("s", "a", "r"), 67.0)
    with pytest.raises(ValueError):
        refusal_budget.RefusalBudget(per_minute=0)


def test_a_release_whose_record_fails_is_not_counted_released(
        db, tmp_path, monkeypatch):
    """No key leaves without its record; the metrics must not count one
    that did not leave."""
    from trusted_pools.conductor import metrics as metrics_mod
    metrics = metrics_mod.ConductorMetrics()
    service = keys.KeyService(db, keys.load_or_create_kek(
        str(tmp_path / "kek")), None, metrics=metrics)
    stored = db.get_secret(service.store("proj", b"v" * 16, "opaque")["id"])

    def broken(record):
        raise exception.DatabaseError(reason="disk full")

    monkeypatch.setattr(db, "record_key_release", broken)
    with pytest.raises(exception.DatabaseError):
        service._announce(None, keys.RELEASE_EVENT, stored, "compute-1",
                          "trusted", 3, keys.Reason("released", "trusted"))
    assert metrics.registry.get_sample_value(
        "trusted_pools_key_releases_total",
        {"outcome": "released", "status": "trusted"}) == 0
    assert metrics.registry.get_sample_value(
        "trusted_pools_key_release_reasons_total",
        {"reason": "released"}) == 0
