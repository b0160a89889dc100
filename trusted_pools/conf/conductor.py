"""[conductor]: the remote verifier."""

import socket

from oslo_config import cfg

group = cfg.OptGroup(
    "conductor", title="Attestation conductor",
    help="trusted-pools-conductor: registers hosts, attests them at an "
         "interval and publishes signed verdicts.")

opts = [
    cfg.StrOpt("host", default=socket.gethostname(), sample_default="<hostname>",
               help="Name of this conductor in the hash ring and in the "
                    "issuer of its signed results."),
    cfg.IntOpt("attestation_interval", default=60, min=1, max=86400,
               help="Seconds between two attestations of each host (the "
                    "epoch length; ETSI GR NFV-SEC 007 7.2.2)."),
    cfg.FloatOpt("epoch_spread", default=0.5, min=0.0, max=0.9,
                 help="Fraction of the interval over which hosts answer an "
                      "epoch: each waits a random time up to this share of "
                      "the interval, so evidence arrives spread out instead "
                      "of all at once (the per-host jitter)."),
    cfg.IntOpt("unknown_after_missed", default=2, min=1, max=100,
               help="Epochs a host may miss before its verdict becomes "
                    "'unknown' (never trusted). Each verdict also expires "
                    "after this many intervals plus one."),
    cfg.IntOpt("heartbeat_interval", default=10, min=1,
               help="Seconds between two heartbeats of this conductor."),
    cfg.IntOpt("heartbeat_timeout", default=60, min=2,
               help="Seconds without a heartbeat after which a conductor "
                    "counts as dead and its hosts move to the others. "
                    "Its hosts are attested by the others within two of "
                    "these timeouts."),
    cfg.StrOpt("signing_key_path",
               default="/var/lib/trusted-pools/conductor-signing-key.pem",
               help="PEM private key (Ed25519 or ECDSA P-256) that signs "
                    "attestation results; created (mode 0600) on first "
                    "start if absent. Share it between conductors, or "
                    "give consumers every conductor's public key. It also "
                    "signs this conductor's requests to agents, which pin "
                    "its public key ([agent] conductor_keys_file)."),
    cfg.StrOpt("ek_ca_bundle", default="/etc/trusted-pools/ek-ca.pem",
               help="PEM bundle of the TPM manufacturers' CA certificates "
                    "that EK certificates must chain to. A host whose EK "
                    "does not chain cannot enroll. Every leaf must also "
                    "match the TCG EK profile (see ek_only_anchors)."),
    cfg.ListOpt("ek_only_anchors", default=[], item_type=cfg.types.String(
                    regex=r"^[0-9A-Fa-f:]{64,95}$"),
                mutable=False,
                help="SHA-256 fingerprints (hex of the DER, colons "
                     "allowed) of CA certificates in ek_ca_bundle that sign "
                     "nothing but EK certificates (a TPM vendor's EK CA). "
                     "Under such an anchor an EK certificate without the "
                     "EK purpose OID 2.23.133.8.1 (older vendor profiles) "
                     "is accepted when its keyUsage is keyEncipherment or "
                     "keyAgreement and its SAN names the TPM manufacturer. "
                     "Under every other anchor the EK purpose OID is "
                     "required. Not mutable at runtime: it widens what "
                     "counts as an EK certificate."),
    cfg.IntOpt("evidence_batch_size", default=500, min=1, max=100000,
               help="Evidence messages verified and written to the "
                    "database together."),
    cfg.IntOpt("evidence_queue_limit", default=20000, min=1,
               max=10000000,
               help="Evidence pushes waiting for verification beyond "
                    "which new pushes are shed (dropped unverified): a "
                    "conductor that cannot keep up stays bounded in "
                    "memory and in delay. A push that waited more than "
                    "attestation_interval is shed too. Hosts whose "
                    "evidence is shed become unknown after "
                    "unknown_after_missed intervals, never trusted on old "
                    "evidence. Size it to about 20 s of this conductor's "
                    "verification rate (see doc/source/scale.md)."),
    cfg.IntOpt("evidence_pending_per_host", default=2, min=1, max=100,
               help="Evidence pushes one host name may have waiting for "
                    "verification at once. Later pushes in that name are "
                    "dropped until the worker takes one (the first ones "
                    "keep their places: a newer push never displaces an "
                    "older one, which may be the honest host's). A flood "
                    "of pushes in one host's name, which any compute "
                    "host's bus credentials can cast, so costs the other "
                    "hosts nothing; the pushes that fail verification earn "
                    "the named host a direct challenge, at most one per "
                    "interval, never a verdict against it. Keep "
                    "evidence_queue_limit at least this many times the "
                    "hosts one conductor owns. Pushes naming hosts that "
                    "are not enrolled are dropped before they are queued."),
    cfg.FloatOpt("evidence_wait", default=0.5, min=0.05, max=5.0,
                 help="Seconds the evidence worker waits for queued "
                      "evidence before its round ends; it starts the next "
                      "round at once. A stop waits at most this long plus "
                      "the batch being verified."),
    cfg.IntOpt("agent_request_lifetime", default=60, min=5, max=600,
               help="Seconds a request this conductor signs for an agent "
                    "(identity, credential activation, challenge, epoch) "
                    "stays valid. Agents refuse it afterwards, so a "
                    "captured request cannot be replayed later; keep the "
                    "hosts' clocks within [agent] request_clock_leeway."),
    cfg.IntOpt("agent_rpc_timeout", default=30, min=1, max=600,
               help="Seconds a conductor waits for an agent's answer to a "
                    "call (identity, credential activation, a direct "
                    "challenge). An operation whose agent does not answer "
                    "in time fails with AgentUnreachable. These calls run "
                    "on the conductor's worker pool, never on an RPC "
                    "thread."),
    cfg.StrOpt("agent_transport_url", secret=True, mutable=False,
               help="Message bus (an oslo.messaging URL, normally its own "
                    "RabbitMQ virtual host) the compute hosts' agents "
                    "share: agents push evidence to this conductor there "
                    "and take its challenges and epochs. transport_url "
                    "stays the management bus that only trusted-pools-api, "
                    "the conductors and the verdict consumers can reach. "
                    "Unset: agents share the management bus, and any "
                    "compute host's bus credentials reach the management "
                    "queues through RabbitMQ's default exchange; set it "
                    "in every deployment but a one-machine demo. See "
                    "'trusted-pools-manage rabbitmq setup'."),
    cfg.PortOpt("metrics_port", default=0, mutable=False,
                help="TCP port of this conductor's Prometheus endpoint "
                     "(GET /metrics: verdicts given, verification time per "
                     "phase, evidence rejected by reason, the evidence "
                     "queue, key releases, hosts by status and level). 0 "
                     "(the default) serves none. Plain HTTP without "
                     "authentication, as Prometheus exporters are: keep it "
                     "on loopback or a management network (metrics_host)."),
    cfg.HostAddressOpt("metrics_host", default="127.0.0.1", mutable=False,
                       help="Address the Prometheus endpoint listens on "
                            "when metrics_port is set (0.0.0.0 or :: for "
                            "every interface)."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(group)
    conf.register_opts(opts, group=group)
