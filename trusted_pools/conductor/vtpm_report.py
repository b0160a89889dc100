"""A host's report of its vTPMs (agent RPC ``list_vtpms``), checked.

The report is what the host's agent says about its own vTPMs (instance,
status, reason): useful to an operator, and never evidence. A compromised
host can say anything in it, so the conductor only bounds its size and
shape and labels it ``host-reported``; nothing is derived from it (no
verdict, no enrollment, no instance verdict changes), and an entry that
names an instance whose deep-attestation verdict was made on another host
is shown with that other host's name beside it, so the operator sees the
claim for what it is.

Written by hand: a few checks over a small JSON shape; the bounds are the
point.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable

from trusted_pools import exception
from trusted_pools.protocol import display

__all__ = ["MAX_VTPMS", "MAX_REASON", "SOURCE", "NOTE", "check_report"]

#: Most vTPMs one host may report (one per instance; far above what a
#: compute host runs). A larger report is refused whole.
MAX_VTPMS = 4096
#: Longest reason kept per entry (characters); longer ones are cut.
MAX_REASON = 512
SOURCE = "host-reported"
NOTE = ("reported by the host's agent; not evidence: a compromised host "
        "can report anything here")
_STATUSES = frozenset({"running", "stopped", "migrating", "failed"})


def _refused(host: str, reason: str) -> exception.HostReportRefused:
    return exception.HostReportRefused(host=host, what="vTPM report",
                                       reason=reason)


def _instance(host: str, index: int, value: Any) -> str:
    if isinstance(value, str) and len(value) <= 64:
        try:
            return str(uuid.UUID(value))
        except ValueError:
            pass
    raise _refused(host, "entry %d: instance is not a UUID" % index)


def check_report(host: str, answer: Any, reported_at: int,
                 located: Callable[[list[str]], dict[str, str]]
                 ) -> dict[str, Any]:
    """The report as the conductor keeps it, or :class:`HostReportRefused`.

    ``located(instances) -> {instance: host}``: where each instance's
    stored deep-attestation verdict was made (only those that have one).
    """
    if not isinstance(answer, dict):
        raise _refused(host, "not an object")
    if answer.get("host") != host:
        raise _refused(host, "it names host %r" % (str(answer.get(
            "host"))[:255],))
    entries = answer.get("vtpms")
    if not isinstance(entries, list):
        raise _refused(host, "vtpms is not a list")
    if len(entries) > MAX_VTPMS:
        raise _refused(host, "%d entries, at most %d" % (len(entries),
                                                          MAX_VTPMS))
    driver = answer.get("driver")
    if driver is not None and (not isinstance(driver, str) or
                               len(driver) > 64):
        raise _refused(host, "driver is not a short name")
    vtpms, seen = [], set()
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise _refused(host, "entry %d is not an object" % index)
        instance = _instance(host, index, entry.get("instance"))
        if instance in seen:
            raise _refused(host, "entry %d: instance %s listed twice"
                           % (index, instance))
        seen.add(instance)
        status = entry.get("status")
        if status not in _STATUSES:
            raise _refused(host, "entry %d: status is not one of %s"
                           % (index, ", ".join(sorted(_STATUSES))))
        reason = entry.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise _refused(host, "entry %d: reason is not text" % index)
        vtpms.append({"instance": instance, "status": status,
                      "reason": None if reason is None
                      else reason[:MAX_REASON]})
    elsewhere = located(sorted(seen)) if seen else {}
    for entry in vtpms:
        other = elsewhere.get(entry["instance"])
        entry["attested_on"] = other
        entry["conflict"] = other is not None and other != host
    return {"host": host, "source": SOURCE, "note": NOTE,
            "enabled": bool(answer.get("enabled")), "driver": driver,
            "reported_at": display.iso_time(reported_at), "vtpms": vtpms}
