"""Attestation protocols built on the evidence library (``trusted_pools.tpm``).

Plain functions, no oslo and no bus: the services carry them over RPC.
Modules import what they need; importing this package pulls in nothing
(in particular not tpm2-pytss, which only the attester side needs).
"""
