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
    cfg.StrOpt("ak_handle", default="0x81008001",
               help="Persistent handle (hex, owner range 0x81000000-"
                    "0x817FFFFF) where the attestation key is kept once "
                    "created. Keep it clear of the SRK (0x81000001) and "
                    "the TCG EK range (0x8101xxxx)."),
    cfg.StrOpt("binding_key_handle", default="0x81008002",
               help="Persistent handle (hex, owner range) of this host's "
                    "binding key: a decrypt-only RSA-2048 key made in the "
                    "TPM, certified by the AK, that the conductors wrap "
                    "released secrets (Nova vTPM keys) to. The agent "
                    "creates it on first use; the castellan backend "
                    "(trusted_pools.keymanager) decrypts with it."),
    cfg.StrOpt("ak_algorithm", default="ecc", choices=["ecc", "rsa"],
               help="Key type of a newly created attestation key: ECC "
                    "P-256 (fast to create and to quote) or RSA-2048."),
    cfg.StrOpt("ek_kind", default="rsa2048",
               choices=["rsa2048", "ecc256", "rsa2048-high", "ecc256-high",
                        "ecc384-high"],
               help="Which endorsement key (and EK certificate) binds the "
                    "attestation key; the TPM must hold its certificate."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(group)
    conf.register_opts(opts, group=group)
