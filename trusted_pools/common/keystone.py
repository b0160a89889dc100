"""keystoneauth1 in one place: options, sessions and adapters.

Every call the Nova side makes to an OpenStack API (trusted-pools-api's
JWKS, Placement, the compute API) authenticates through a keystoneauth1
session built here from a configuration group's options, or, for a
no-auth service (Placement's ``noauth2``, test servers), a fixed endpoint
and token. keystoneauth's errors in the options become
:class:`~trusted_pools.exception.ConfigInvalid` naming the group.
"""

from __future__ import annotations

from typing import Any

from keystoneauth1 import adapter as ks_adapter
from keystoneauth1 import exceptions as ks_exceptions
from keystoneauth1 import loading as ks_loading
from keystoneauth1 import session as ks_session
from keystoneauth1 import token_endpoint
from oslo_config import cfg

from trusted_pools import exception

__all__ = [
    "register_conf_options", "conf_options", "session_from_conf",
    "adapter_from_conf", "session_for_endpoint", "adapter_for_endpoint",
]


def register_conf_options(conf: cfg.ConfigOpts, group: str) -> None:
    """Register keystoneauth1's session, auth and adapter options in
    ``[group]``."""
    ks_loading.register_session_conf_options(conf, group)
    ks_loading.register_auth_conf_options(conf, group)
    ks_loading.register_adapter_conf_options(conf, group)


def conf_options(**adapter_kwargs: Any) -> list[cfg.Opt]:
    """The same options, for the sample config generator."""
    return (ks_loading.get_session_conf_options()
            + ks_loading.get_auth_common_conf_options()
            + ks_loading.get_adapter_conf_options(**adapter_kwargs))


def session_from_conf(conf: cfg.ConfigOpts, group: str
                      ) -> tuple[ks_session.Session, Any]:
    """Session and auth plugin from ``[group]``'s options."""
    try:
        auth = ks_loading.load_auth_from_conf_options(conf, group)
        return ks_loading.load_session_from_conf_options(
            conf, group, auth=auth), auth
    except ks_exceptions.ClientException as error:
        raise exception.ConfigInvalid(
            reason="[%s] keystoneauth options: %s" % (group, error))


def adapter_from_conf(conf: cfg.ConfigOpts, group: str, service_type: str,
                      microversion: str | None = None) -> ks_adapter.Adapter:
    """An Adapter for ``service_type`` from the service catalog, with
    ``[group]``'s session, auth and adapter options. Errors are returned
    as responses (``raise_exc=False``): the caller reads the status."""
    session, auth = session_from_conf(conf, group)
    try:
        return ks_loading.load_adapter_from_conf_options(
            conf, group, session=session, auth=auth,
            service_type=service_type, default_microversion=microversion,
            raise_exc=False)
    except ks_exceptions.ClientException as error:
        raise exception.ConfigInvalid(
            reason="[%s] keystoneauth options: %s" % (group, error))


def session_for_endpoint(endpoint: str, token: str = "admin",
                         timeout: float = 10.0) -> ks_session.Session:
    """A session with a fixed endpoint and token, no service catalog."""
    return ks_session.Session(auth=token_endpoint.Token(endpoint, token),
                              timeout=timeout)


def adapter_for_endpoint(endpoint: str, service_type: str,
                         microversion: str | None = None,
                         token: str = "admin",
                         timeout: float = 10.0) -> ks_adapter.Adapter:
    """An Adapter for a fixed endpoint and token (no-auth services)."""
    return ks_adapter.Adapter(session_for_endpoint(endpoint, token, timeout),
                              service_type=service_type,
                              default_microversion=microversion,
                              raise_exc=False)
