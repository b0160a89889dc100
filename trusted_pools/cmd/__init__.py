"""Console scripts.

The services run on oslo.service's threading backend. It is chosen here,
before any command imports oslo.messaging: oslo.messaging's server module
imports ``oslo_service.service``, which fixes the backend (eventlet by
default) the moment it is imported.
"""

from trusted_pools.common import service as _service

_service.select_threading_backend()
