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
               default="/sys/kernel/security/ima/binary_runtime_measurements",
               help="IMA runtime measurement list, in the format "
                    "ima_log_format says. Empty: send no IMA log."),
    cfg.StrOpt("ima_log_format", default="binary",
               choices=[("binary", "binary_runtime_measurements: "
                         "length-prefixed entries; a file name may hold any "
                         "byte"),
                        ("ascii", "ascii_runtime_measurements: one entry per "
                         "line; a file name holding a newline spans lines "
                         "and its entry must be found by its template hash "
                         "(a violation entry cannot be, and makes the host "
                         "untrusted until it reboots)")],
               help="Format of the list at ima_log_path. Use binary."),
    cfg.StrOpt("ima_template_hash", default="sha1",
               choices=[("sha1", "the kernel's legacy list"),
                        ("sha256", "binary_runtime_measurements_sha256"),
                        ("sha384", "binary_runtime_measurements_sha384"),
                        ("sha512", "binary_runtime_measurements_sha512")],
               help="Hash algorithm of the template hashes in a binary list "
                    "at ima_log_path (newer kernels publish one list per "
                    "PCR bank, named by its algorithm)."),
    cfg.IntOpt("pcr_read_retries", default=5, min=1, max=100,
               help="How often to retry reading PCR values that changed "
                    "while the quote was taken (IMA extends PCR 10 at any "
                    "time)."),
    cfg.StrOpt("conductor_keys_file",
               default="/etc/trusted-pools/conductor-keys.pem",
               help="File of the conductors' public keys this agent trusts: "
                    "one or more PEM public keys ('trusted-pools-manage "
                    "conductor-key show' on each conductor), or a JWKS ({\"keys\": [...]}). The agent "
                    "answers only requests signed with one of them, and "
                    "refuses to start when the file is missing or holds "
                    "none. Read at start."),
    cfg.StrOpt("relay_topic", regex=r"^[A-Za-z0-9_.-]{1,200}$",
               help="Topic of the evidence relay of this host's rack or "
                    "cell ([relay] topic of trusted-pools-relay): pushes go "
                    "there and the relay forwards them to the conductor in "
                    "batches. Unset (the default): each push is cast to "
                    "the conductor directly. The relay is not trusted: it "
                    "can delay or drop pushes (the host then goes "
                    "unknown), not change them. Direct challenges are "
                    "answered to the conductor either way."),
    cfg.StrOpt("relay_transport_url", secret=True, mutable=False,
               help="Message bus (an oslo.messaging URL) of the relay "
                    "named by relay_topic, when it is not this agent's bus (transport_url, which keeps the "
                    "epochs and the conductors' challenges): a broker or "
                    "virtual host of the rack or cell, so that the "
                    "conductors' broker does not carry one message per "
                    "host. Unset: the agent's bus. Ignored without "
                    "relay_topic."),
    cfg.IntOpt("request_clock_leeway", default=5, min=0, max=300,
               help="Seconds of clock difference tolerated between a "
                    "conductor and this host when checking the issue and "
                    "expiry times of the conductor's signed requests."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(group)
    conf.register_opts(opts, group=group)
