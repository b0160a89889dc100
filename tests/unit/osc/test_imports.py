"""The plugin runs on operators' machines: importing it and its commands
loads nothing of the project outside trusted_pools.osc."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[3]

PROBE = """
import sys
import trusted_pools.osc.plugin
import trusted_pools.osc.v1.hosts
import trusted_pools.osc.v1.policies
import trusted_pools.osc.v1.verdicts
print("\\n".join(sorted(m for m in sys.modules
                        if m.startswith("trusted_pools"))))
"""


def test_plugin_imports_only_its_own_package():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    loaded = subprocess.run([sys.executable, "-c", PROBE], env=env,
                            cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout.split()
    assert "trusted_pools.osc.plugin" in loaded
    outside = [m for m in loaded if m != "trusted_pools"
               and not m.startswith("trusted_pools.osc")]
    assert outside == []
