"""What only the verifier does, built on the evidence library
(``trusted_pools.tpm``) and the protocol (``trusted_pools.protocol``).

``enrollment`` (EK certificate and AK checks, the credential challenge),
``policy`` (golden measurements), ``appraisal`` (evidence against policy,
per rung), ``pipeline`` (verify and appraise one host's evidence, with its
state between rounds).

Plain functions, no oslo and no bus: the conductor carries them over RPC
and passes its configuration in. The agent imports nothing from here (its
half of enrollment is :mod:`trusted_pools.agent.enrollment`).
"""
