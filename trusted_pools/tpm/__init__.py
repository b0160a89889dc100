"""The evidence library: parse and verify what TPMs say.

Pure Python on ``struct`` and ``cryptography``; imports no oslo library and
needs no TPM of its own. Parsing checks structure only and returns
unverified data; only the ``verify_*`` / ``replay_*`` functions establish
that something is covered by a signature or a PCR value.
"""
