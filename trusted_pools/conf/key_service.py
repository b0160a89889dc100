"""[key_service]: the conductors' store of Nova vTPM secrets."""

from oslo_config import cfg

group = cfg.OptGroup(
    "key_service", title="Key service",
    help="Secrets (Nova vTPM passphrases) kept by the conductors, encrypted "
         "at rest, and released only to attested hosts, wrapped to their "
         "TPM (trusted_pools.conductor.keys).")

opts = [
    cfg.BoolOpt("enabled", default=False, mutable=False,
                help="Serve the key service on this conductor (it needs "
                     "kek_path, the same on every conductor). Disabled: "
                     "every store and release is refused (503)."),
    cfg.StrOpt("kek_path",
               default="/var/lib/trusted-pools/key-encryption-key",
               mutable=False,
               help="File of the 32-byte key-encryption key (AES-256-GCM) "
                    "under which secrets are stored; created (mode 0600) "
                    "on first start if absent. Every conductor needs the "
                    "same file: a secret stored under one KEK opens only "
                    "with it. A file readable by group or others is "
                    "refused. Not mutable at runtime: rows name the KEK "
                    "they were written under."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(group)
    conf.register_opts(opts, group=group)
