"""Cold vTPM migration end to end (issue 12), with the real parts: swtpm
host TPMs booted from real event logs, their agents and a conductor on the
real RabbitMQ, SQLite, the swtpm vTPM driver.

The attacks are a compromised compute host's: it owns its agent, its
files and its bus credentials, not its TPM's keys or another host's."""

from __future__ import annotations

import base64
import os

import pytest

from tests.functional.migration.conftest import BusTap
from trusted_pools import exception
from trusted_pools.protocol import vtpm_migration as proto
from trusted_pools.tpm import sealing

pytestmark = [pytest.mark.swtpm, pytest.mark.rabbitmq, pytest.mark.slow]


def _forms(secret: bytes) -> list[bytes]:
    """How bytes could show up in a message: raw, base64, hex."""
    return [secret, base64.b64encode(secret), secret.hex().encode(),
            secret.hex().upper().encode()]


class _RecordingAESGCM:
    """The payload cipher, remembering each fresh key it made (to look
    for it on the bus afterwards)."""

    made: list[bytes] = []

    def __new__(cls, key: bytes):
        return _REAL_AESGCM(key)

    @classmethod
    def generate_key(cls, bit_length: int) -> bytes:
        key = _REAL_AESGCM.generate_key(bit_length)
        cls.made.append(key)
        return key


_REAL_AESGCM = proto.AESGCM


def test_cold_migration_moves_the_marker_and_erases_the_source(
        migration_pool, rabbit_url, monkeypatch):
    mp = migration_pool
    a, b, _ = mp.hosts
    marker = os.urandom(32)
    uuid = mp.create_marked_vtpm(a, marker)

    # What must never cross the bus in the clear: the vTPM state as the
    # source holds it, its state key, the payload key, the transport
    # key's private blob, the marker, the plaintext payload.
    state_dir = mp.driver(a).state_dir / uuid
    state_files = [p.read_bytes() for p in (state_dir / "tpm").iterdir()
                   if p.name.startswith("tpm2-00.")]
    state_key = mp.driver(a)._unwrap(
        uuid, (state_dir / "state-key.wrapped").read_bytes())
    seen: dict[str, list[bytes]] = {"private": [], "payload": [],
                                    "plaintext": []}
    monkeypatch.setattr(proto, "AESGCM", _RecordingAESGCM)
    real_encode = proto.encode_cold_state

    def encode(**kwargs):
        plaintext = real_encode(**kwargs)
        seen["plaintext"].append(plaintext)
        return plaintext
    monkeypatch.setattr(proto, "encode_cold_state", encode)

    def after(host):
        def hook(step):
            entry = max(mp.migrations(host)._entries(),
                        key=lambda e: e["updated_at"])
            if step == "prepare":
                seen["private"].append(base64.b64decode(
                    entry["transport"]["private"]))
            if step == "export":
                seen["payload"].append(base64.b64decode(
                    entry["payload"]["ciphertext"]))
        return hook
    mp.migrations(a).after_step = after(a)
    mp.migrations(b).after_step = after(b)

    tap = BusTap(rabbit_url)
    try:
        done = mp.migrate(uuid, a, b)
        captured = tap.drain()
    finally:
        tap.close()
    assert (done["step"], done["outcome"], done["epoch"]) == (
        "completed", "completed", 1), done
    assert done["transport_key_name"]

    # The tap saw the migration: the sealed payload went through it.
    assert seen["payload"] and base64.b64encode(seen["payload"][0]) \
        in captured
    secrets = [marker, state_key, *state_files, *seen["private"],
               *_RecordingAESGCM.made, *seen["plaintext"]]
    assert len(_RecordingAESGCM.made) == 1 and seen["private"] and \
        seen["plaintext"]
    for secret in secrets:
        for form in _forms(secret):
            assert form not in captured, "plaintext on the bus"
    # The plaintext state key is not in the payload's plaintext either:
    # it travels wrapped to the destination's binding key.
    assert not any(form in seen["plaintext"][0]
                   for form in _forms(state_key))

    # The marker reads back at the destination, which sealed the state to
    # its own TPM; the source copy is gone.
    assert mp.read_marker(b, uuid) == marker
    assert mp.driver(b).status(uuid).metadata["migration_epoch"] == 1
    with pytest.raises(exception.VTPMNotFound):
        mp.driver(a).status(uuid)
    assert not state_dir.exists()
    assert mp.migrations(a).epoch_floor(uuid) == 1
    # And back: epoch 2.
    back = mp.migrate(uuid, b, a)
    assert (back["step"], back["epoch"]) == ("completed", 2), back
    assert mp.read_marker(a, uuid) == marker
    assert mp.pool.db.vtpm_epoch(uuid) == 2
    assert sealing.LABEL_VTPM_STATE  # the at-rest label is unchanged
