"""The ``openstack trusted ...`` client plugin (runs on operators' machines).

It talks only to trusted-pools-api, through keystoneauth1, and imports
nothing from the services' packages (verifier, conductor, agent, api).
"""
