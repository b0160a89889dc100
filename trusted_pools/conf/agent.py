"""[agent]: the attester on each compute host."""

import socket

from oslo_config import cfg

group = cfg.OptGroup(
    "agent", title="Host agent",
    help="trusted-pools-agent: answers attestation challenges from this "
         "host's TPM.")

opts = [
    cfg.StrOpt("host", default=socket.gethostname(), sample_default="<hostname>",
               help="Name of this compute host as Nova knows it; the "
                    "agent's RPC topic and the host's identity in verdicts."),
    cfg.StrOpt("event_log_path",
               default="/sys/kernel/security/tpm0/binary_bios_measurements",
               help="Measured-boot event log of this host, as the kernel "
                    "exposes it. Empty: send no event log."),
    cfg.StrOpt("ima_log_path",
               default="/sys/kernel/security/ima/ascii_runtime_measurements",
               help="IMA runtime measurement list (ascii). Empty: send no "
                    "IMA log."),
    cfg.IntOpt("pcr_read_retries", default=5, min=1, max=100,
               help="How often to retry reading PCR values that changed "
                    "while the quote was taken (IMA extends PCR 10 at any "
                    "time)."),
    cfg.StrOpt("conductor_keys_file",
               default="/etc/trusted-pools/conductor-keys.pem",
               help="File of the conductors' public keys this agent trusts: "
                    "one or more PEM public keys ('openssl pkey -in "
                    "<conductor signing_key_path> -pubout' on each "
                    "conductor), or a JWKS ({\"keys\": [...]}). The agent "
                    "answers only requests signed with one of them, and "
                    "refuses to start when the file is missing or holds "
                    "none. Read at start."),
    cfg.IntOpt("request_clock_leeway", default=5, min=0, max=300,
               help="Seconds of clock difference tolerated between a "
                    "conductor and this host when checking the issue and "
                    "expiry times of the conductor's signed requests."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(group)
    conf.register_opts(opts, group=group)
