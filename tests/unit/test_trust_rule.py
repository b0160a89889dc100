"""The trust rule is written once (``verdict.trusted_level``) and every
consumer reads a verdict through it: the scheduler's cache, the trait
keeper, the distrust responder and ``verdict.is_trusted`` agree on every
kind of verdict, and no other module spells the rule out again."""

from __future__ import annotations

import ast
import pathlib

import pytest

import trusted_pools
from tests.nova_harness import VerdictFactory
from trusted_pools.protocol import verdict as vmod
from trusted_pools.nova.remediation import distrust
from trusted_pools.nova.remediation.traits import (ObservedVerdictCache,
                                                   TraitKeeper)
from trusted_pools.nova.scheduler.cache import VerdictCache

T0 = 1_750_000_000
KINDS = [("trusted", 1), ("trusted", 2), ("trusted", 3), ("trusted", 4),
         ("untrusted", 3), ("untrusted", 0), ("unknown", 0)]


@pytest.mark.parametrize("status, level", KINDS)
def test_consumers_agree_with_the_rule(status, level):
    factory = VerdictFactory()
    wall, mono = float(T0), 1000.0
    cache = ObservedVerdictCache(factory.public_keys, wall=lambda: wall,
                                 monotonic=lambda: mono)
    cache.mark_contact()
    verdict = cache.admit(factory.token("h1", status=status, level=level,
                                        issued_at=T0))
    rule = vmod.trusted_level(verdict)
    assert rule == (level if status == "trusted" else vmod.NOT_TRUSTED)
    for wanted in range(1, 5):
        expected = rule >= wanted
        assert cache.is_trusted("h1", wanted) is expected
        assert vmod.is_trusted(verdict, vmod.AssuranceLevel(wanted), T0,
                               60) is expected
    assert distrust._is_trusted(verdict) is (rule >= 1)
    keeper = TraitKeeper.__new__(TraitKeeper)
    keeper.cache = cache
    assert bool(keeper.desired("h1")) is (rule >= 1)


def _spells_the_rule(tree: ast.AST) -> list[int]:
    """Lines that compare a status with TRUSTED or call contraindicated()
    themselves: the rule written again."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "TRUSTED" and \
                isinstance(node.ctx, ast.Load) and \
                isinstance(getattr(node, "value", None), ast.Name) and \
                node.value.id == "Status":
            lines.append(node.lineno)
        if isinstance(node, ast.Call) and \
                isinstance(node.func, ast.Attribute) and \
                node.func.attr == "contraindicated":
            lines.append(node.lineno)
    return lines


def test_the_rule_is_written_once():
    root = pathlib.Path(trusted_pools.__file__).parent
    owners = {"verdict.py", "levels.py"}  # where the rule and claims live
    found = {}
    for path in root.rglob("*.py"):
        if path.name in owners:
            continue
        lines = _spells_the_rule(ast.parse(path.read_text()))
        if lines:
            found[str(path.relative_to(root))] = lines
    assert found == {}, "the trust rule written again: %s" % found
