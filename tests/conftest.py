"""Shared pytest configuration; fixtures for real parts live in tests/."""

from trusted_pools.common import service as _service

# The services' backend, chosen before any test module imports
# oslo.messaging (which would fix oslo.service on eventlet): tests run the
# services in-process as the console scripts run them.
_service.select_threading_backend()

pytest_plugins = ("tests.swtpm_pool", "tests.rabbitmq")
