"""Friction 10 of issue 14: every ``openstack trusted`` command takes
``-f json``, swept from the plugin's entry points in setup.cfg (a command
added later is checked too), and the ones that only change something
print what they did as JSON when asked."""

from __future__ import annotations

import configparser
import importlib
import json
import pathlib
from typing import Any

import pytest

from tests.osc_shell import plugin_visible, run_openstack
from tests.unit.osc.scripted import api  # noqa: F401 - the fixture
from tests.unit.osc.scripted import json_reply

ROOT = pathlib.Path(__file__).resolve().parents[3]


def _commands() -> list[tuple[str, type]]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    found = []
    for line in parser["entry_points"]["openstack.trusted.v1"].splitlines():
        if "=" not in line:
            continue
        name, target = (part.strip() for part in line.split("=", 1))
        module, cls = target.split(":")
        found.append((name, getattr(importlib.import_module(module), cls)))
    return found


@pytest.mark.parametrize("name,cls", _commands(),
                         ids=[n for n, _ in _commands()])
def test_every_command_takes_format_json(name, cls):
    parser = cls(app=None, app_args=None).get_parser("openstack " + name)
    formats = [a for a in parser._actions if "--format" in a.option_strings
               or "-f" in a.option_strings]
    assert formats, "%s has no -f/--format" % name
    assert "json" in (formats[0].choices or ()), (name, formats[0].choices)


@pytest.fixture(scope="module", autouse=True)
def _plugin(tmp_path_factory) -> None:
    plugin_visible(tmp_path_factory.mktemp("osc-plugin"))


def openstack(api: Any, *argv: str):  # noqa: F811
    return run_openstack(["--os-auth-type", "admin_token",
                          "--os-endpoint", api.url, "--os-token", "t",
                          *argv])


def test_changes_say_what_they_did_in_json(api):  # noqa: F811
    api.answer = lambda r: json_reply(204, None) if r.method == "DELETE" \
        else json_reply(200, {})
    deleted = openstack(api, "trusted", "host", "delete", "compute-1",
                        "compute-2", "-f", "json")
    assert deleted.code == 0, deleted.stderr
    assert json.loads(deleted.stdout) == {"deleted": ["compute-1",
                                                      "compute-2"],
                                          "failed": []}
    reset = openstack(api, "trusted", "host", "reset-enrollment",
                      "compute-1", "-f", "json")
    assert reset.code == 0, reset.stderr
    assert json.loads(reset.stdout) == {"host": "compute-1",
                                        "enrollment_reset": True}
    unassigned = openstack(api, "trusted", "policy", "unassign", "golden",
                           "--group", "gold", "-f", "json")
    assert unassigned.code == 0, unassigned.stderr
    assert json.loads(unassigned.stdout)["unassigned"] is True
    # Without -f: silent, as OpenStack's client is for such commands.
    quiet = openstack(api, "trusted", "host", "delete", "compute-3")
    assert quiet.code == 0 and quiet.stdout == ""
