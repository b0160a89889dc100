"""[tpm]: how the agent reaches its host's TPM."""

from oslo_config import cfg

group = cfg.OptGroup(
    "tpm", title="Host TPM",
    help="Access to this host's TPM 2.0 (used by trusted-pools-agent).")

opts = [
    cfg.StrOpt("tcti", default="device:/dev/tpmrm0",
               help="TCTI string for the host TPM. Use the kernel resource "
                    "manager device:/dev/tpmrm0 on real hosts; "
                    "swtpm:host=127.0.0.1,port=2321 for a software TPM."),
    cfg.StrOpt("ak_handle", default="0x81010002",
               help="Persistent handle (hex) where the attestation key is "
                    "kept once created."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(group)
    conf.register_opts(opts, group=group)
