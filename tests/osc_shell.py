"""The real ``openstack`` shell (python-openstackclient) with the
trusted-pools plugin, run in the test process.

The virtualenv has the project installed from another checkout, so the
plugin's entry points may not be registered there. :func:`plugin_visible`
writes a throwaway ``*.dist-info`` whose ``entry_points.txt`` is made from
*this* tree's ``setup.cfg`` (so a wrong entry point fails the tests) and
puts it on ``sys.path`` before the shell is imported; the shell then finds
the plugin through stevedore exactly as an installed package's.

:func:`run_openstack` is ``openstack ARGS...``: it returns the exit code,
standard output and standard error.

Test-side only.
"""

from __future__ import annotations

import configparser
import contextlib
import importlib
import io
import logging
import os
import pathlib
import sys
from dataclasses import dataclass

__all__ = ["ENTRY_POINT_GROUPS", "plugin_visible", "run_openstack",
           "Result"]

ROOT = pathlib.Path(__file__).resolve().parent.parent
ENTRY_POINT_GROUPS = ("openstack.cli.extension", "openstack.trusted.v1")
_DIST = "trusted_pools_osc_under_test-0.0.dist-info"


def entry_points_text(setup_cfg: pathlib.Path = ROOT / "setup.cfg") -> str:
    """``entry_points.txt`` for the plugin's groups of ``setup.cfg``."""
    parser = configparser.ConfigParser()
    parser.read(setup_cfg)
    sections = []
    for group in ENTRY_POINT_GROUPS:
        lines = [line.strip() for line in
                 parser["entry_points"][group].strip().splitlines()]
        sections.append("[%s]\n%s\n" % (group, "\n".join(lines)))
    return "\n".join(sections)


def plugin_visible(directory: pathlib.Path) -> None:
    """Register the plugin for this process (idempotent).

    Must run before ``openstackclient.common.clientmanager`` is first
    imported: the shell reads its plugin list once, at import."""
    if "openstackclient.common.clientmanager" in sys.modules:
        from openstackclient.common import clientmanager
        names = {m.__name__ for m in clientmanager.PLUGIN_MODULES}
        if "trusted_pools.osc.plugin" not in names:
            raise RuntimeError("openstackclient was imported before the "
                               "trusted-pools plugin was made visible")
        return
    dist = directory / _DIST
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: trusted-pools-osc-under-test\n"
        "Version: 0.0\n")
    (dist / "entry_points.txt").write_text(entry_points_text())
    sys.path.insert(0, str(directory))
    importlib.invalidate_caches()


def _forget_clients() -> None:
    """Drop the API clients the shell cached by the previous run.

    The shell keeps each plugin's client in a descriptor on the
    ClientManager class: one per process, as a real ``openstack`` process
    runs one command. Each run here must build its own, with its own
    endpoint and token."""
    from openstackclient.common import clientmanager
    from osc_lib import clientmanager as osc_clientmanager
    for module in clientmanager.PLUGIN_MODULES:
        cache = vars(osc_clientmanager.ClientManager).get(module.API_NAME)
        if isinstance(cache, osc_clientmanager.ClientCache):
            cache._handle = None


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str


def run_openstack(argv: list[str]) -> Result:
    """``openstack argv...`` in this process, without the caller's OS_*
    environment or clouds.yaml files."""
    from openstackclient import shell
    _forget_clients()

    saved_env = {k: os.environ.pop(k) for k in list(os.environ)
                 if k.startswith("OS_")}
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    out, err = io.StringIO(), io.StringIO()
    try:
        app = shell.OpenStackShell()
        app.stdout = out
        app.stderr = err
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(
                out):
            try:
                code = app.run(list(argv))
            except SystemExit as exit_:  # argparse refusing arguments
                code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        # The shell adds console handlers to the root logger on each run.
        for handler in list(root.handlers):
            if handler not in saved_handlers:
                root.removeHandler(handler)
        root.setLevel(saved_level)
        os.environ.update(saved_env)
    return Result(code, out.getvalue(), err.getvalue())
