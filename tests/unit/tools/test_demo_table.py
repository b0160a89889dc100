"""The demo's final table (tools/demo_support.py) reads back, row for
row, with the parser tests/functional/test_demo.py checks it with; a
failed expectation is kept for the exit status."""

from __future__ import annotations

import pathlib
import sys

import pytest

TOOLS = pathlib.Path(__file__).resolve().parents[3] / "tools"


@pytest.fixture
def support(monkeypatch):
    monkeypatch.syspath_prepend(str(TOOLS))
    import demo_support
    yield demo_support
    sys.modules.pop("demo_support", None)


def test_table_reads_back(support):
    from tests.functional.test_demo import parse_table
    story = support.Story()
    story.hosts += [("compute-00", "trusted", 4, "-"),
                    ("compute-03", "untrusted", 2, "tampered boot loader")]
    story.vms.append(("vm-secure-1", "compute-00", "yes",
                      "trust:trusted_host=required, hw:tpm_version=2.0"))
    story.vtpms.append(("vm-secure-1", "compute-02", "stopped",
                        "trusted (level 1)", "compute-00, compute-02",
                        "compute-03"))
    long_reason = "host compute-03 is untrusted  (" + "x \n" * 100 + ")"
    story.migrations.append(("vm-secure-2", "compute-01", "compute-03",
                             "aborted", long_reason))
    output = "noise\n=== The pool at the end\n%s\n=== demo PASSED\n" % (
        "\n".join(support.table_lines(story)))
    table = parse_table(output)
    assert table["HOSTS"] == [
        {"HOST": "compute-00", "VERDICT": "trusted", "LEVEL": "4",
         "ROLE": "-"},
        {"HOST": "compute-03", "VERDICT": "untrusted", "LEVEL": "2",
         "ROLE": "tampered boot loader"}]
    assert table["VTPMS"][0]["KEY RELEASED TO"] == "compute-00, compute-02"
    (moved,) = table["MIGRATIONS"]
    assert moved["OUTCOME"] == "aborted"
    assert moved["REASON"].startswith("host compute-03 is untrusted (x x")
    assert moved["REASON"].endswith("...") and len(moved["REASON"]) == 110
    assert table["VMS"][0]["PLACED ON"] == "compute-00"


def test_a_missed_expectation_is_kept(support, capsys):
    story = support.Story()
    assert story.expect(True, "fine")
    assert not story.expect(False, "compute-03 got the key")
    assert story.unexpected == ["compute-03 got the key"]
    assert "UNEXPECTED: compute-03 got the key" in capsys.readouterr().out
