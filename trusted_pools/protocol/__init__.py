"""What both sides of the trust boundary share.

``evidence`` (the wire format of evidence and its size limits),
``freshness`` (nonces, epochs, the TPM clock rules), ``verdict`` and
``levels`` (the verdict, its levels of assurance and trustworthiness
vector, and the one trust rule, ``verdict.trusted_level``), ``results``
(the signed verdict), ``keystore`` (key sets), ``agent_requests`` (the
conductor's signatures on requests to agents: signer and verifier),
``hash_ring`` (which conductor owns a host) and ``topics`` (names on the
bus).

Evidence is judged only in :mod:`trusted_pools.verifier`; the verdict's
constructors and the level rules sit here, beside the types they build,
because a consumer rebuilds a verdict from a token and validates it by the
same rules. Nothing here imports an oslo library or a service package
(``.importlinter``, tests/unit/test_import_contract.py).
"""
