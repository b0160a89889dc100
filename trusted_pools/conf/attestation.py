"""[attestation]: limits applied to evidence before it is parsed."""

from oslo_config import cfg

from trusted_pools.tpm import eventlog, ima

group = cfg.OptGroup(
    "attestation", title="Evidence limits",
    help="Limits on evidence sent by attesters. Evidence over a limit is "
         "rejected (the host is not trusted) before it is parsed.")

opts = [
    cfg.IntOpt("max_event_log_bytes", default=eventlog.DEFAULT_MAX_SIZE,
               min=1024, max=512 * 1024 * 1024,
               help="Largest measured-boot event log accepted, in bytes: "
                    "on the bus, and by the conductor's parser. Real "
                    "firmware logs are tens of KiB; the default leaves "
                    "ample room."),
    cfg.IntOpt("max_ima_log_bytes", default=ima.DEFAULT_MAX_LOG_SIZE,
               min=1024, max=1024 * 1024 * 1024,
               help="Largest IMA runtime measurement list accepted, in "
                    "bytes: in one piece of evidence on the bus, and what "
                    "the conductor replays in one round (the entries a "
                    "host sent beyond its last quote included)."),
    cfg.ListOpt("pcr_banks", default=["sha256"],
                item_type=cfg.types.String(
                    choices=["sha1", "sha256", "sha384", "sha512"]),
                help="PCR banks a quote must cover. SHA-1 alone is weak: "
                     "keep sha256 unless the TPM lacks it."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(group)
    conf.register_opts(opts, group=group)
