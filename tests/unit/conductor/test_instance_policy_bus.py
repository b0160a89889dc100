"""Instance policies are not on any bus (issue 11, instance policies):
a compromised host holding its agent's bus credentials cannot create,
assign or delete one, nor name an instance's image. Policies are written
by trusted-pools-api (or the manage CLI) straight into the database; the
only bus method that carries an image is the management endpoint's
challenge_instance, served on the management bus that agents do not
reach (the broker's permissions, tests/functional/test_bus_boundary.py).
"""

from __future__ import annotations

import inspect

from trusted_pools.conductor import endpoints


def _signature(member) -> inspect.Signature:
    """The endpoint method's own signature (oslo.messaging's
    expected_exceptions wraps it without functools.wraps: the method is
    in the wrapper's closure)."""
    for cell in member.__closure__ or ():
        if inspect.isfunction(cell.cell_contents):
            return _signature(cell.cell_contents)
    return inspect.signature(member)


def _exposed(cls: type) -> dict[str, inspect.Signature]:
    return {name: _signature(member)
            for name, member in inspect.getmembers(cls, inspect.isfunction)
            if getattr(member, "exposed", False)}


def test_the_agents_endpoint_takes_evidence_only():
    assert set(_exposed(endpoints.EvidenceEndpoint)) == {
        "submit_evidence", "submit_evidence_batch"}


def test_no_endpoint_writes_instance_policies():
    for cls in (endpoints.EvidenceEndpoint, endpoints.ManagementEndpoint,
                endpoints.VerdictsEndpoint):
        for name in _exposed(cls):
            assert "instance_polic" not in name, (cls.__name__, name)
            assert not name.startswith(("assign", "unassign",
                                        "create_polic", "delete_polic")), \
                (cls.__name__, name)


def test_only_the_management_challenge_names_an_image():
    carrying = [(cls.__name__, name)
                for cls in (endpoints.EvidenceEndpoint,
                            endpoints.ManagementEndpoint,
                            endpoints.VerdictsEndpoint)
                for name, signature in _exposed(cls).items()
                if "image" in signature.parameters]
    assert carrying == [("ManagementEndpoint", "challenge_instance")]
