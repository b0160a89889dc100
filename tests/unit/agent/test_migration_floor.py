"""The epoch floor of an agent's migration journal (issue 12): a commit
or a finish is one journal write, the floor is read from it, and it
outlives the entry when the entry is pruned."""

from __future__ import annotations

import time
import uuid

from trusted_pools.agent.migration import MigrationAgent


def _ended(agent, instance, epoch, step, role):
    entry = {"id": str(uuid.uuid4()), "role": role, "instance": instance,
             "epoch": epoch, "step": step, "kind": "cold"}
    agent._save_ended(entry)
    return entry


def test_floor_comes_from_the_journal_and_outlives_pruning(tmp_path):
    instance = str(uuid.uuid4())
    agent = MigrationAgent("h", None, None, tmp_path)
    assert agent.epoch_floor(instance) == 0
    _ended(agent, instance, 1, "committed", "destination")
    _ended(agent, instance, 2, "finished", "source")
    assert agent.epoch_floor(instance) == 2
    assert not (tmp_path / "epochs.json").exists()  # one write each
    # An aborted entry moves nothing; a restarted agent reads the same.
    agent._save({"id": str(uuid.uuid4()), "role": "destination",
                 "instance": instance, "epoch": 5, "step": "aborted"})
    again = MigrationAgent("h", None, None, tmp_path)
    assert again.epoch_floor(instance) == 2
    # A week later the entries go; their floor stays (epochs.json).
    assert again.prune(now=time.time() + 8 * 86400) == 3
    assert list(tmp_path.glob("*.json")) == [tmp_path / "epochs.json"]
    assert MigrationAgent("h", None, None, tmp_path).epoch_floor(
        instance) == 2


def test_a_journal_write_is_durable_with_its_directory(tmp_path,
                                                       monkeypatch):
    """A commit's one write is fsynced, and so is the directory after the
    rename (else a power loss may undo the rename: the commit the
    conductor recorded would vanish and the copy never start)."""
    import os
    import stat
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    agent = MigrationAgent("h", None, None, tmp_path)
    instance = str(uuid.uuid4())
    _ended(agent, instance, 1, "committed", "destination")
    assert synced == [False, True]
    assert MigrationAgent("h", None, None, tmp_path).epoch_floor(
        instance) == 1
