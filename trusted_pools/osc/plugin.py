"""The ``openstack`` client plugin of trusted-pools (osc-lib interface).

Registered as the ``openstack.cli.extension`` entry point ``trusted``;
its commands are the ``openstack.trusted.v1`` entry points
(``openstack trusted host list`` and so on). The shell reads the module
attributes below: ``API_NAME`` names the client on the client manager
(``self.app.client_manager.trusted``) and, with the major version, the
command group.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from keystoneauth1 import adapter as ksa_adapter
from osc_lib import utils

from trusted_pools.osc import client

LOG = logging.getLogger(__name__)

API_NAME = "trusted"
API_VERSION_OPTION = "os_trusted_pools_api_version"
DEFAULT_API_VERSION = "%d.%d" % client.MAX_VERSION
#: Major version -> the client class (osc-lib's convention).
API_VERSIONS = {"1": "trusted_pools.osc.client.Client"}


def check_api_version(version: str) -> bool:
    """Validate ``--os-trusted-pools-api-version`` (MAJOR or MAJOR.MINOR).

    Returns True so the shell skips its own check against ``API_VERSIONS``
    (which knows major versions only).

    :raises osc_lib.exceptions.UnsupportedVersion: malformed, or a version
        this client does not know.
    """
    client.parse_version(version)
    return True


def _microversion(version: str) -> str:
    return "%d.%d" % client.parse_version(version)


def make_client(instance: Any) -> client.Client:
    """The API client for the shell's client manager: its session,
    interface and region, and the requested microversion."""
    version = _microversion(instance._api_version[API_NAME])
    LOG.debug("trusted-pools API client, microversion %s", version)
    adapter = ksa_adapter.Adapter(
        session=instance.session,
        service_type=client.SERVICE_TYPE,
        interface=instance.interface,
        region_name=instance.region_name,
        default_microversion=version,
    )
    return client.Client(adapter, progress=_to_stderr)


def _to_stderr(text: str) -> None:
    # Progress of a long wait: on stderr, so -f json output stays clean.
    sys.stderr.write(text)
    sys.stderr.flush()


def build_option_parser(parser: argparse.ArgumentParser
                        ) -> argparse.ArgumentParser:
    """Add ``--os-trusted-pools-api-version`` to the shell's options."""
    parser.add_argument(
        "--os-trusted-pools-api-version",
        metavar="<trusted-pools-api-version>",
        default=utils.env("OS_TRUSTED_POOLS_API_VERSION",
                          default=DEFAULT_API_VERSION),
        help="trusted-pools API microversion, MAJOR.MINOR (default: %s; "
             "env OS_TRUSTED_POOLS_API_VERSION)" % DEFAULT_API_VERSION)
    return parser
