"""Placement traits that follow the conductor's signed verdicts.

``client``: a keystoneauth1 Placement client (providers, generation-safe
trait updates); ``sync``: the trait keeper; ``service``: the
``trusted-pools-placement-sync`` service that runs it.
"""
