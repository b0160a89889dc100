"""The operator's commands start quietly and quickly: no library warning
on stdout or stderr, and commands that run no service do not load the
service machinery (futurist, eventlet, oslo.messaging, SQLAlchemy)."""

import subprocess
import sys

import pytest

_HEAVY = ("eventlet", "futurist", "oslo_messaging", "sqlalchemy", "alembic")


def _run(*code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "\n".join(code)],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("argv", [
    ["--help"], ["evidence", "verify", "--help"], ["db", "--help"],
    ["ek-sha256", "--help"], ["rabbitmq", "--help"]])
def test_manage_help_prints_no_warning_and_loads_nothing_heavy(argv):
    result = _run(
        "import sys",
        "from trusted_pools.cmd import manage",
        "try:",
        "    manage.main(%r)" % (argv,),
        "except SystemExit as e:",
        "    assert e.code == 0, e.code",
        "loaded = [m for m in %r if m in sys.modules]" % (_HEAVY,),
        "sys.stdout.write('LOADED=%s' % ','.join(loaded))")
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    assert "Warning" not in result.stdout
    assert result.stdout.rstrip().endswith("LOADED="), \
        result.stdout[-300:]


def test_a_service_still_runs_on_the_threading_backend():
    # The backend is preferred, not loaded, by the commands package; the
    # moment oslo.messaging loads oslo.service, threading must win.
    result = _run(
        "import trusted_pools.cmd",
        "import oslo_messaging",
        "from oslo_service import backend, service",
        "print(backend.get_backend_type().value)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "threading"
    assert "Eventlet is deprecated" not in result.stderr


def test_an_other_backend_chosen_first_is_kept_and_launch_refuses():
    result = _run(
        "from oslo_service import backend",
        "backend.init_backend(backend.BackendType.EVENTLET)",
        "import trusted_pools.cmd",
        "from trusted_pools import exception",
        "from trusted_pools.common import backend as ours",
        "print(backend.get_backend_type().value)",
        "try:",
        "    ours.select_threading_backend()",
        "except exception.ConfigInvalid as e:",
        "    print('refused:', e)")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "eventlet"
    assert lines[1].startswith("refused:") and "threading" in lines[1]
