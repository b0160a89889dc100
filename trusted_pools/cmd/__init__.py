"""Console scripts.

The services run on oslo.service's threading backend. It is chosen here,
before any command imports oslo.messaging: oslo.messaging's server module
imports ``oslo_service.service``, which fixes the backend (eventlet by
default) the moment it is imported.
"""

from trusted_pools import exception as _exception
from trusted_pools.common import service as _service

try:
    _service.select_threading_backend()
except _exception.ConfigInvalid:
    # Imported into a process that already chose another backend (a tool
    # or a test importing a command module): nothing needs the backend
    # until a service launches, and launch() refuses then, saying why.
    pass
