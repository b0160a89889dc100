"""[trusted_pools] state_path and the [database] group (owned by oslo.db).

oslo.db registers and documents the ``[database]`` options itself
(``connection``, pool sizes, retries, ...); this module only sets the default
connection for the embedded case: an SQLite file under ``state_path``,
``sqlite:////var/lib/trusted-pools/trusted_pools.sqlite`` unless the operator
moves ``state_path``. Production deployments with several conductors set
``[database] connection`` to PostgreSQL or MariaDB: SQLite serializes every
writer and cannot be shared between machines.

``state_path`` lives in a group of its own, not in ``[DEFAULT]`` as in
Nova and Ironic: the scheduler filter runs inside nova-scheduler, whose
``[DEFAULT] state_path`` (another default, another help) would clash with
ours on the shared global configuration.
"""

from __future__ import annotations

from oslo_config import cfg
from oslo_db import options as db_options

group = cfg.OptGroup(
    "trusted_pools", title="trusted_pools",
    help="Settings shared by the trusted_pools services.")

opts = [
    cfg.StrOpt("state_path", default="/var/lib/trusted-pools",
               sample_default="/var/lib/trusted-pools",
               help="Directory where the service keeps its state: the "
                    "embedded SQLite database and, later, the conductor's "
                    "signing key. Must be writable by the service user "
                    "only."),
]

DEFAULT_CONNECTION = "sqlite:///$trusted_pools.state_path/trusted_pools.sqlite"


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register state_path and oslo.db's [database] options with our default.

    Safe to call more than once on the same ``conf``.
    """
    conf.register_group(group)
    conf.register_opts(opts, group=group)
    db_options.set_defaults(conf, connection=DEFAULT_CONNECTION)


def list_opts() -> list[tuple[cfg.OptGroup, list[cfg.Opt]]]:
    """Our own options; [database] comes from the ``oslo.db`` namespace."""
    return [(group, list(opts))]
