"""trusted-pools-api: the management REST service (Keystone service type
``trusted-pools``).

The only way operators and their tools change what the verifier trusts:
every request is authenticated by keystonemiddleware ``auth_token`` and
authorized by oslo.policy before it reads the database or asks the
conductor that owns a host to talk to its TPM. Compute hosts hold no
credential that reaches it.

Layout: :mod:`.app` builds the WSGI pipeline, :mod:`.router` maps paths to
:mod:`.handlers`, :mod:`.microversion` negotiates versions, :mod:`.schemas`
validates requests, :mod:`.errors` renders the OpenStack error format,
:mod:`.policy` and :mod:`.policies` hold the access rules,
:mod:`.conductors` reaches the owning conductor, :mod:`.views` shapes the
JSON, :mod:`.pagination` pages lists.
"""
