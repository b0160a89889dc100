"""Enrollment's uniqueness rules in the database, on SQLite, PostgreSQL
and MariaDB (issue 9 item 3): one AK speaks for one host, and two hosts
enrolling the same EK at the same moment cannot both win."""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import pytest

from trusted_pools import exception
from trusted_pools.db import api
from tests.db_fixtures import *  # noqa: F401,F403 (fixtures)


def _ek(tag: str) -> str:
    return hashlib.sha256(b"ek-" + tag.encode()).hexdigest()


def _enroll(db_api: api.Connection, host: str, ek: str, ak: bytes
            ) -> tuple[api.Host, api.Registration]:
    return db_api.enroll(host, "default", b"cert-" + ek.encode(), ek,
                         b"public-" + ak, ak, approve=ek)


def _everything(db_api: api.Connection) -> list[Any]:
    hosts = db_api.list_hosts()
    registrations = []
    for host in hosts:
        try:
            registrations.append(db_api.get_registration(host.id))
        except exception.RegistrationNotFound:
            pass
    return [hosts, registrations]


def test_ak_of_another_host_is_refused_naming_it(db_api):
    _enroll(db_api, "host-b", _ek("b"), b"ak-b")
    _enroll(db_api, "host-a", _ek("a"), b"ak-a")
    before = _everything(db_api)
    # host-a presents its own, approved EK with host-b's AK: refused when
    # checked before the TPM is challenged, and when written.
    with pytest.raises(exception.AKAlreadyRegistered) as info:
        db_api.check_enrollment("host-a", _ek("a"), b"ak-b")
    assert "host-b" in str(info.value)
    with pytest.raises(exception.AKAlreadyRegistered) as info:
        _enroll(db_api, "host-a", _ek("a"), b"ak-b")
    assert info.value.kwargs["other"] == "host-b"
    assert info.value.kwargs["ak_name"] == b"ak-b".hex()
    # A new host name with that AK is refused the same way.
    with pytest.raises(exception.AKAlreadyRegistered) as info:
        _enroll(db_api, "host-c", _ek("c"), b"ak-b")
    assert "host-b" in str(info.value)
    assert _everything(db_api) == before
