"""[vtpm_migration]: how conductors drive vTPM migrations (issue 12)."""

from oslo_config import cfg

group = cfg.OptGroup(
    "vtpm_migration", title="vTPM migration",
    help="trusted-pools-conductor: moving a vTPM only to a freshly "
         "attested host, rolled back or finished after any crash.")

opts = [
    cfg.IntOpt("step_timeout", default=300, min=10, max=86400,
               help="Seconds a migration may stay at one step before the "
                    "conductor rolls it back (before the commit) or "
                    "repeats its end (after). For a live migration it is "
                    "also how long the destination stays prepared for the "
                    "hypervisor's own migration."),
    cfg.IntOpt("resume_interval", default=30, min=1, max=3600,
               help="Seconds between two runs of the job that takes over "
                    "migrations no worker drives (a restarted or dead "
                    "conductor's): rolled back before the commit, "
                    "finished after it."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(group)
    conf.register_opts(opts, group=group)
