"""Nova's vTPM secrets from trusted_pools: a castellan key manager.

:mod:`.backend` is the castellan ``KeyManager`` (entry point
``castellan.drivers: trusted_pools``) that runs inside nova-compute;
:mod:`.release` is the wire format both sides share (the label a released
secret is wrapped with). This package's ``__init__`` imports neither, so
the conductor can use :mod:`.release` without castellan installed.
"""
