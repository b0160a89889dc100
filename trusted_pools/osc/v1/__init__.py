"""Commands of the trusted-pools API v1 (``openstack.trusted.v1``)."""
