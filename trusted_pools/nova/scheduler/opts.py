"""[trusted_pools_scheduler]: the trust filter inside nova-scheduler.

The definitions live here, not in ``trusted_pools.conf.scheduler``, so that
nova-scheduler can load the filter without importing ``trusted_pools.conf``:
that package registers every project option (``[DEFAULT] state_path``
among them) on the global ``cfg.CONF`` it shares with Nova, which collides
with Nova's own options. ``trusted_pools.conf.scheduler`` re-exports them
for the sample generator.

These options are read from the configuration of the process that loads the
filter (``nova.conf`` of nova-scheduler), hence the group name that says
whose options they are.
"""

from trusted_pools.common import keystone
from oslo_config import cfg

group = cfg.OptGroup(
    "trusted_pools_scheduler", title="Trusted pools scheduler filter",
    help="TrustedHostFilter: the verdict cache in nova-scheduler, fed by "
         "the conductor's signed trust notifications.")

opts = [
    cfg.IntOpt("max_age", default=180, min=1, max=86400,
               help="Seconds a verdict counts as fresh, measured from the "
                    "moment this scheduler received it (its local "
                    "monotonic clock, not the conductor's clock). A flavor "
                    "may ask for less with trust:max_age, never for more. "
                    "Keep it above refresh_interval plus the conductor's "
                    "attestation interval."),
    cfg.IntOpt("grace", default=120, min=1, max=86400,
               help="Seconds without any successful contact with the "
                    "conductor (a verified notification or a bulk refresh) "
                    "after which no host passes a request that needs trust. "
                    "Keep it above refresh_interval."),
    cfg.IntOpt("refresh_interval", default=30, min=1, max=3600,
               help="Seconds between two bulk 'verdicts since' refreshes. "
                    "The conductor only notifies on a change of trust, so "
                    "this refresh is what carries re-issued verdicts and "
                    "keeps contact alive in a quiet fleet."),
    cfg.IntOpt("default_min_level", default=1, min=1, max=4,
               help="Level of assurance required when a request asks for "
                    "trust without trust:min_level (1 identity, 2 platform "
                    "firmware, 3 OS boot, 4 runtime)."),
    cfg.BoolOpt("vtpm_requires_trust", default=True, mutable=False,
                help="Treat every request for a vTPM (flavor hw:tpm_version "
                     "or image hw_tpm_version) as one that needs a trusted "
                     "host at default_min_level, even without trust: extra "
                     "specs. With the trusted_pools key manager only a "
                     "trusted host is given a vTPM's key; this makes Nova "
                     "refuse an untrusted destination (NoValidHost) before "
                     "a cold migration or resize stops the server on its "
                     "source, instead of failing on the destination after. "
                     "Not mutable at runtime: turning it off lets vTPM "
                     "servers be sent where their key is withheld."),
    cfg.IntOpt("clock_leeway", default=5, min=0, max=300,
               help="Seconds of clock difference allowed between conductor "
                    "and scheduler when checking a verdict's own issue and "
                    "expiry times."),
    cfg.ListOpt("conductor_public_keys", default=[],
                help="Paths of PEM files with the conductor public keys "
                     "(Ed25519 or ECDSA P-256) whose signatures are "
                     "accepted. Copy them from 'trusted-pools-manage' or "
                     "from each conductor's signing key."),
    cfg.BoolOpt("fetch_public_keys", default=False, mutable=False,
                help="Also accept the conductor public keys that "
                     "trusted-pools-api publishes as a JWKS (GET /v1/keys, "
                     "Keystone service type 'trusted-pools'), fetched with "
                     "this group's keystoneauth options (auth_type, "
                     "auth_url, username, ..., cafile) at start and at "
                     "most every 30 seconds on an unknown key id. Keys "
                     "never come from the message bus. Off by default and "
                     "not mutable at runtime: it widens whose signatures "
                     "count to whatever the API serves."),
    cfg.StrOpt("transport_url", secret=True,
               help="Message bus where the conductor publishes its trust "
                    "notifications and answers RPC. Unset: the process's "
                    "own [oslo_messaging_notifications] / [DEFAULT] "
                    "transport_url."),
    cfg.StrOpt("control_exchange", default="trusted_pools",
               help="Exchange of the trusted_pools services (their "
                    "[DEFAULT] control_exchange)."),
    cfg.StrOpt("notification_pool",
               help="Listener pool (queue) name. Each scheduler process "
                    "needs every notification, so each needs its own pool. "
                    "Unset: 'trusted-pools-scheduler-<hostname>-<pid>'."),
    cfg.IntOpt("rpc_timeout", default=10, min=1, max=300,
               help="Seconds to wait for the conductor's answer to a bulk "
                    "refresh."),
    cfg.StrOpt("host_key", default="host", choices=[
        ("host", "HostState.host: the nova-compute service host, which is "
                 "the name the host agent attests under (both default to "
                 "the machine's hostname)"),
        ("nodename", "HostState.nodename: the hypervisor node name")],
               help="Which name of a Nova host is looked up in the verdict "
                    "cache."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    """The group, and the keystoneauth1 options fetch_public_keys uses."""
    conf.register_group(group)
    conf.register_opts(opts, group=group)
    keystone.register_conf_options(conf, group.name)


def list_opts() -> list[tuple[cfg.OptGroup, list[cfg.Opt]]]:
    """The group with its keystoneauth1 options (sample generator)."""
    return [(group, list(opts) + keystone.conf_options())]
