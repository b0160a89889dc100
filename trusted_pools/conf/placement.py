"""[placement] and [trusted_pools_distrust]: where trust turns into Placement traits and
into actions on a host that stops being trusted.

``[trusted_pools_placement]`` carries the keystoneauth1 auth and adapter options of the
Placement client (``auth_type``, ``auth_url``, ..., ``valid_interfaces``,
``region_name``, ``endpoint_override``) plus the trait keeper's own
options. ``[trusted_pools_distrust]`` carries the distrust policy and the keystoneauth1
options of the compute API client that carries it out.

Both groups live in this one module because the same service (the trait
keeper, ``trusted-pools-placement-sync``) reads both.
"""

from __future__ import annotations

from trusted_pools.common import keystone
from oslo_config import cfg

group = cfg.OptGroup(
    "trusted_pools_placement", title="Placement traits",
    help="The trait keeper: CUSTOM_TRUSTED_POOLS_* traits on the resource "
         "provider of each compute node, kept in step with the conductor's "
         "signed verdicts.")

opts = [
    cfg.StrOpt("microversion", default="1.39",
               regex=r"^1\.(3[9]|[4-9][0-9])$",
               help="Placement API microversion sent with every request. "
                    "1.39 is the lowest that has 'required=in:' (used by "
                    "the full resync to find every provider carrying one of "
                    "our traits)."),
    cfg.IntOpt("conflict_retries", default=5, min=0, max=50,
               help="How many times a trait update that lost a race "
                    "(HTTP 409, someone else changed the provider's "
                    "generation) is read again and retried before it is "
                    "given up for this round (the next sweep tries again)."),
    cfg.IntOpt("sweep_interval", default=5, min=1, max=300,
               help="Seconds between two checks of the hosts this keeper "
                    "marked trusted: a verdict that turned stale or expired "
                    "without any new notification loses its traits at the "
                    "next check, so this is the longest a stale host keeps "
                    "them."),
    cfg.IntOpt("resync_interval", default=600, min=0, max=86400,
               help="Seconds between two full resyncs (every provider "
                    "carrying a CUSTOM_TRUSTED_POOLS_ trait or known to "
                    "the verdict cache is recomputed). One runs at start "
                    "whatever the value; 0 disables the periodic one."),
]

distrust_group = cfg.OptGroup(
    "trusted_pools_distrust", title="Response to distrust",
    help="What happens when a host goes from trusted to not trusted in the "
         "conductor's signed verdict stream, and the compute API client "
         "that carries it out.")

#: The actions shipped with trusted_pools (stevedore namespace
#: ``trusted_pools.distrust.actions``).
DISTRUST_ACTIONS = ("notify", "disable_compute", "migrate_trusted_instances")

distrust_opts = [
    cfg.ListOpt("actions", default=["notify"],
                item_type=cfg.types.String(choices=DISTRUST_ACTIONS),
                help="Actions run, in order, when a host goes from trusted "
                     "to not trusted: notify (log and a notification "
                     "only), disable_compute (disable the host's "
                     "nova-compute service through the compute API), "
                     "migrate_trusted_instances (live-migrate the "
                     "instances whose flavor requires trust; the scheduler "
                     "picks a trusted host). Each outcome is logged."),
    cfg.StrOpt("compute_microversion", default="2.53",
               regex=r"^2\.(5[3-9]|[6-9][0-9])$",
               help="Compute API microversion: at least 2.53 (services "
                    "addressed by UUID; embedded flavor extra specs need "
                    "2.47)."),
    cfg.IntOpt("max_migrations", default=50, min=0, max=10000,
               help="Most live migrations started for one distrusted "
                    "host; the rest are logged and left to the operator."),
    cfg.BoolOpt("report_actions", default=True,
                help="Report each action's outcome to trusted-pools-api "
                     "(POST /v1/distrust-actions, microversion 1.4), "
                     "which keeps it for the dashboard and GET "
                     "/v1/distrust-actions. Sent with this group's "
                     "keystoneauth user (admin; the API's "
                     "trusted_pools:distrust_action:create rule) to the "
                     "catalog's trusted-pools endpoint; without usable "
                     "credentials the service says so at start and only "
                     "logs."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register both groups and the keystoneauth1 options of each."""
    conf.register_group(group)
    conf.register_opts(opts, group=group)
    keystone.register_conf_options(conf, group.name)
    conf.register_group(distrust_group)
    conf.register_opts(distrust_opts, group=distrust_group)
    keystone.register_conf_options(conf, distrust_group.name)


def _keystoneauth_opts(include_deprecated: bool = False) -> list[cfg.Opt]:
    return keystone.conf_options(include_deprecated=include_deprecated)


def list_opts() -> list[tuple[cfg.OptGroup, list[cfg.Opt]]]:
    """Both groups for the sample generator (``conf/opts.py``)."""
    return [(group, list(opts) + _keystoneauth_opts()),
            (distrust_group, list(distrust_opts) + _keystoneauth_opts())]
