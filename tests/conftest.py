"""Shared pytest configuration; fixtures for real parts live in tests/."""

pytest_plugins = ("tests.swtpm_pool", "tests.rabbitmq")
