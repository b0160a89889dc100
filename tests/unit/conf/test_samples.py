"""The committed samples are what the generators make from the code: an
option or a policy rule added without regenerating fails here.

Regenerate with::

    oslo-config-generator --config-file \
        etc/trusted-pools/trusted-pools-config-generator.conf
    oslopolicy-sample-generator --config-file \
        etc/trusted-pools/trusted-pools-policy-generator.conf
"""

import difflib
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
ETC = ROOT / "etc" / "trusted-pools"


def _generated(tool: str, generator_conf: str, tmp_path) -> str:
    # The generators' own console scripts, from this interpreter's venv:
    # they find the options and rules through the installed entry points.
    script = pathlib.Path(sys.executable).parent / tool
    assert script.exists(), "%s is missing: install the project's " \
        "requirements (tools/bootstrap.sh)" % script
    out = tmp_path / "sample"
    result = subprocess.run(
        [str(script), "--config-file", str(ETC / generator_conf),
         "--output-file", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return out.read_text()


@pytest.mark.parametrize("tool,generator_conf,sample", [
    ("oslo-config-generator", "trusted-pools-config-generator.conf",
     "trusted-pools.conf.sample"),
    ("oslopolicy-sample-generator", "trusted-pools-policy-generator.conf",
     "policy.yaml.sample"),
])
def test_sample_has_not_drifted(tool, generator_conf, sample, tmp_path):
    committed = (ETC / sample).read_text()
    generated = _generated(tool, generator_conf, tmp_path)
    diff = "".join(difflib.unified_diff(
        committed.splitlines(True), generated.splitlines(True),
        "committed " + sample, "generated"))
    assert not diff, "etc/trusted-pools/%s drifted from the code; " \
        "regenerate it (see this module's docstring):\n%s" % (sample, diff)
