"""Scheduling on trusted hosts: Nova's TrustedHostFilter and its cache.

Nova is an optional dependency (``trusted-pools[nova]``): only
:mod:`.filters` and :func:`.extra_specs.register` import it.
"""
