"""What both sides of the trust boundary share: the evidence wire format,
nonces and epochs, the verdict and its signed form, key sets, the agent
request signatures, the conductors' hash ring, and the names of topics and
notifications. Nothing here judges a host, and nothing here imports an
oslo library or a service package (tests/unit/test_import_contract.py)."""
