"""README's main command, ``tools/run-demo.sh`` (which runs
``tools/demo.py``), end to end with its real parts (swtpm, tpm2-tools, RabbitMQ,
SQLite, trusted-pools-api): the final table must show the outcomes the
story promises, whatever the demo itself concluded, and the dashboard it
prints must be served, with the pool in it, to the token it prints and
to no one without one.

The demo runs with ``--hold``: it keeps the pool up after the table until
a line arrives on its standard input, so the test can read the dashboard
and the API while they run.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import tempfile
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.rabbitmq import require_broker
from tests.swtpm_pool import require_binaries

pytestmark = [pytest.mark.swtpm, pytest.mark.rabbitmq, pytest.mark.slow]

ROOT = pathlib.Path(__file__).resolve().parents[2]
# README's main command itself (its bootstrap is a no-op, 0.6 s, on a
# machine the test command has already set up), so the suite that CI runs
# runs both of README's commands.
DEMO = ROOT / "tools" / "run-demo.sh"
TAMPERED = "compute-03"
TRUSTED = {"compute-00", "compute-01", "compute-02"}


def parse_table(output: str) -> dict[str, list[dict[str, str]]]:
    """The sections of the final table: [TITLE], a header line, rows;
    columns are separated by two or more spaces."""
    final = output.split("=== The pool at the end", 1)
    assert len(final) == 2, "no final table in the demo's output"
    sections: dict[str, list[dict[str, str]]] = {}
    header: list[str] = []
    current: list[dict[str, str]] | None = None
    for line in final[1].splitlines():
        title = re.fullmatch(r"\[([A-Z]+)\]", line.strip())
        if title:
            current = sections.setdefault(title.group(1), [])
            header = []
        elif line.startswith("==="):
            break
        elif current is not None and line.strip():
            cells = re.split(r" {2,}", line.strip())
            if not header:
                header = cells
                continue
            assert len(cells) == len(header), (header, line)
            current.append(dict(zip(header, cells)))
    return sections


def _get(url: str, token: str | None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("X-Auth-Token", token)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


# The demo's directories: its work directory (host TPMs' state) and the
# short one for vTPM sockets (tools/demo.py, tools/demo_pool.py).
_DEMO_DIR = re.compile(r"(%s/(?:trusted-pools-demo-|tpd)[^/\s,=]+)"
                       % re.escape(tempfile.gettempdir()))


def _processes() -> dict[int, str]:
    """pid -> command line of every process (zombies have none)."""
    found = {}
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        found[int(entry.name)] = raw.replace(b"\0", b" ").decode(
            errors="replace")
    return found


def _left_behind(before: set[int]) -> list[str]:
    """Processes started since ``before`` that still use a demo directory
    the demo has already deleted: they outlived their demo (a demo still
    running elsewhere has its directories)."""
    return [cmd for pid, cmd in _processes().items() if pid not in before
            and any(not os.path.exists(d) for d in _DEMO_DIR.findall(cmd))]


def _run_demo_reading_the_dashboard() -> tuple[int, str, dict[str, Any]]:
    """Run the demo; when it holds, read its dashboard and API; let it
    finish. Returns (exit status, output, what was read)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    process = subprocess.Popen(
        [str(DEMO), "--hold"], cwd=ROOT, env=env,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    seen: dict[str, Any] = {}
    try:
        assert process.stdout is not None and process.stdin is not None
        for line in process.stdout:
            lines.append(line)
            held = re.search(r"dashboard at (http://\S+)/dashboard/#token="
                             r"(\S+) -- press Enter", line)
            if held:
                base, token = held.group(1), held.group(2)
                seen["page"] = _get(base + "/dashboard/", None)
                seen["hosts"] = _get(base + "/v1/hosts", token)
                seen["anonymous"] = _get(base + "/v1/hosts", None)
                process.stdin.write("\n")
                process.stdin.flush()
        status = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return status, "".join(lines), seen


def test_demo_tells_the_whole_story():
    require_broker()
    require_binaries()
    before = set(_processes())
    status, output, seen = _run_demo_reading_the_dashboard()
    tail = output[-6000:]
    assert status == 0, tail
    # Nothing it started runs on (host swtpms, vTPM swtpms): each would
    # hold a port or a socket of a demo that is gone.
    assert _left_behind(before) == [], tail
    assert "UNEXPECTED" not in output, tail
    table = parse_table(output)

    hosts = {row["HOST"]: row for row in table["HOSTS"]}
    assert {h: r["VERDICT"] for h, r in hosts.items()} == {
        **{h: "trusted" for h in TRUSTED}, TAMPERED: "untrusted"}, table

    vms = {row["VM"]: row for row in table["VMS"]}
    assert set(vms) == {"vm-secure-1", "vm-secure-2", "vm-plain"}
    for vm in ("vm-secure-1", "vm-secure-2"):
        assert vms[vm]["PLACED ON"] in TRUSTED, vms[vm]
        assert vms[vm]["VTPM"] == "yes", vms[vm]
    assert vms["vm-plain"]["VTPM"] == "-"

    migrations = {row["VM"]: row for row in table["MIGRATIONS"]}
    moved = migrations["vm-secure-1"]
    assert moved["FROM"] == vms["vm-secure-1"]["PLACED ON"]
    assert moved["TO"] in TRUSTED - {moved["FROM"]}
    assert moved["OUTCOME"] == "completed", moved
    refused = migrations["vm-secure-2"]
    assert (refused["FROM"], refused["TO"], refused["OUTCOME"]) == (
        vms["vm-secure-2"]["PLACED ON"], TAMPERED, "aborted"), refused
    assert refused["REASON"].startswith("host %s is untrusted" % TAMPERED)

    vtpms = {row["VM"]: row for row in table["VTPMS"]}
    first = vtpms["vm-secure-1"]
    assert first["HOST"] == moved["TO"], first
    assert first["STATE"] == "stopped"
    assert first["DEEP VERDICT"].startswith("trusted"), first
    assert set(first["KEY RELEASED TO"].split(", ")) == {
        moved["FROM"], moved["TO"]}, first
    assert first["KEY REFUSED TO"] == TAMPERED
    second = vtpms["vm-secure-2"]
    assert (second["HOST"], second["STATE"]) == (
        vms["vm-secure-2"]["PLACED ON"], "stopped"), second

    # The deep attestation says plainly where the VM quote came from.
    assert "not by a guest" in output

    # The dashboard it printed was served, and the API behind it gave the
    # printed token the pool, and nothing without a token.
    assert seen, "the demo never said where its dashboard is:\n" + tail
    page_status, page = seen["page"]
    assert page_status == 200 and b"<html" in page.lower()
    hosts_status, body = seen["hosts"]
    assert hosts_status == 200, body
    listed = {h["name"]: h["status"] for h in json.loads(body)["hosts"]}
    assert listed == {**{h: "trusted" for h in TRUSTED},
                      TAMPERED: "untrusted"}, listed
    assert seen["anonymous"][0] == 401
