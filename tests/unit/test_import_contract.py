"""The import contract (``.importlinter``): each package stays on its side
of the trust boundary. The evidence library and the protocol import no
oslo library and no service; the agent imports nothing of the verifier;
the relay (host side) imports nothing of the verifier or the conductor
but its RPC client;
no service imports another sideways; the layers go cmd > api/conductor >
verifier > protocol > tpm.

import-linter runs in a subprocess (it finds the root package on
``PYTHONPATH``, so a copy of the tree with a forbidden import can be
checked too: the contract must break on it, naming the contract).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import importlinter  # noqa: F401 - a missing import-linter fails, not skips
import pytest

import trusted_pools

ROOT = pathlib.Path(trusted_pools.__file__).resolve().parent.parent
CONFIG = ROOT / ".importlinter"
_RUN = ("import sys; from importlinter.cli import lint_imports_command; "
        "sys.argv[0] = 'lint-imports'; sys.exit(lint_imports_command())")


def lint(top: pathlib.Path) -> subprocess.CompletedProcess:
    """lint-imports on the trusted_pools package under ``top``."""
    env = dict(os.environ, PYTHONPATH=str(top))
    return subprocess.run(
        [sys.executable, "-c", _RUN, "--config", str(top / ".importlinter"),
         "--no-cache"],
        cwd=top, env=env, capture_output=True, text=True, timeout=120)


def test_the_tree_keeps_the_contract():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
    # every contract was checked, none skipped
    contracts = CONFIG.read_text().count("[importlinter:contract:")
    assert "Contracts: %d kept" % contracts in result.stdout


# A compromised or careless change, and the contract that must catch it.
VIOLATIONS = [
    pytest.param("trusted_pools/agent/manager.py",
                 "from trusted_pools.verifier import appraisal",
                 "The agent (attester, vTPMs) imports nothing of the "
                 "verifier", id="agent-imports-verifier"),
    pytest.param("trusted_pools/vtpm/swtpm.py",
                 "from trusted_pools.conductor import keys",
                 "The agent (attester, vTPMs) imports nothing of the "
                 "verifier", id="vtpm-imports-conductor"),
    pytest.param("trusted_pools/relay/manager.py",
                 "from trusted_pools.conductor import manager",
                 "The relay (host side, untrusted) imports nothing of the "
                 "verifier", id="relay-imports-the-conductor"),
    pytest.param("trusted_pools/relay/service.py",
                 "from trusted_pools.verifier import pipeline",
                 "The relay (host side, untrusted) imports nothing of the "
                 "verifier", id="relay-imports-the-verifier"),
    pytest.param("trusted_pools/keymanager/backend.py",
                 "from trusted_pools.db import api",
                 "The Nova side reads signed verdicts and opens released "
                 "keys", id="keymanager-imports-db"),
    pytest.param("trusted_pools/guest/__init__.py",
                 "from trusted_pools.protocol import evidence",
                 "The guest-side attester runs inside a VM",
                 id="guest-imports-protocol"),
    pytest.param("trusted_pools/tpm/quote.py",
                 "import oslo_config",
                 "The evidence library (tpm/) imports no oslo library",
                 id="tpm-imports-oslo"),
    pytest.param("trusted_pools/protocol/verdict.py",
                 "from trusted_pools.conductor import manager",
                 "The protocol (protocol/) imports no oslo library and no "
                 "service", id="protocol-imports-a-service"),
    pytest.param("trusted_pools/nova/scheduler/filters.py",
                 "from trusted_pools.api import views",
                 "No service imports another sideways",
                 id="nova-side-imports-the-api"),
    pytest.param("trusted_pools/verifier/appraisal.py",
                 "from trusted_pools.conductor import service",
                 "Layers:", id="verifier-imports-the-conductor"),
]


@pytest.mark.parametrize("path, line, contract", VIOLATIONS)
def test_a_forbidden_import_breaks_the_contract(tmp_path, path, line,
                                                contract):
    shutil.copytree(ROOT / "trusted_pools", tmp_path / "trusted_pools",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(CONFIG, tmp_path / ".importlinter")
    target = tmp_path / path
    target.write_text(target.read_text() + "\n%s  # noqa\n" % line)
    result = lint(tmp_path)
    assert result.returncode != 0, result.stdout
    assert "Broken contracts" in result.stdout, result.stdout + result.stderr
    # The report of broken contracts names this one, and the importer.
    broken = " ".join(result.stdout.split("Broken contracts", 1)[1].split())
    assert contract in broken, result.stdout
    importer = path[:-3].replace("/", ".").removesuffix(".__init__")
    assert importer in broken, result.stdout
