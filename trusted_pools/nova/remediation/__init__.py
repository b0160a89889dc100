"""Remediation beside Nova: Placement traits that follow the conductor's
signed verdicts, and the response to distrust.

``placement``: a keystoneauth1 Placement client (providers,
generation-safe trait updates); ``traits``: the trait keeper; ``distrust``:
the actions on a trusted -> not trusted transition (notify, disable the
compute service, live-migrate trust-requiring instances); ``service``: the
``trusted-pools-placement-sync`` service that runs them.
"""
