"""[relay]: the evidence relay of a rack or cell of compute hosts."""

import socket

from oslo_config import cfg

from trusted_pools.protocol import topics

group = cfg.OptGroup(
    "relay", title="Evidence relay",
    help="trusted-pools-relay: takes the pushes of the agents of a rack or "
         "cell ([agent] relay_topic) and forwards them to their conductors "
         "in batches, one bus message per batch. Untrusted: it can delay or "
         "drop evidence, never forge or change it (each push is verified "
         "alone by the conductor).")

# The conductor refuses a batch of more pushes than this whole
# (trusted_pools.conductor.manager.MAX_EVIDENCE_BATCH).
_CONDUCTOR_MAX_BATCH = 1000

opts = [
    cfg.StrOpt("host", default=socket.gethostname(),
               sample_default="<hostname>",
               help="Name of this relay on its topic (several relays may "
                    "share a topic; each push goes to one of them)."),
    cfg.StrOpt("topic", default=topics.RELAY_TOPIC,
               regex=r"^[A-Za-z0-9_.-]{1,200}$",
               help="Topic on the agent bus this relay takes pushes on; "
                    "the agents of its rack or cell name it in [agent] "
                    "relay_topic."),
    cfg.IntOpt("max_batch", default=200, min=1, max=_CONDUCTOR_MAX_BATCH,
               help="Pushes per message to one conductor: a batch this "
                    "large is sent at once. At most %d (the conductors "
                    "refuse larger batches whole). A batch of first "
                    "pushes carries each host's whole event log: keep "
                    "batches to a few megabytes." % _CONDUCTOR_MAX_BATCH),
    cfg.IntOpt("max_batch_bytes", default=8 * 1024 * 1024,
               min=64 * 1024, max=100 * 1024 * 1024,
               help="Bytes of pushes (as the bus encodes them) per message "
                    "to one conductor: a push that would take a batch over "
                    "sends it first, and a push this large is sent alone. "
                    "Keep it well under the broker's max_message_size "
                    "(RabbitMQ refuses a larger message whole): one "
                    "agent's big pushes then never take other hosts' "
                    "pushes down with them, and the relay holds at most "
                    "max_conductors times this many bytes."),
    cfg.FloatOpt("max_delay", default=0.5, min=0.01, max=10.0,
                 help="Seconds a push may wait in a batch that is not "
                      "full before the batch is sent anyway (it is sent "
                      "within 1.5 times this)."),
    cfg.StrOpt("conductor_transport_url", secret=True, mutable=False,
               help="Message bus (an oslo.messaging URL) where this relay "
                    "sends its batches to the conductors' evidence topic, "
                    "when it is not the bus it takes pushes on "
                    "(transport_url): with a broker or virtual host of a "
                    "rack or cell for its agents' pushes ([agent] "
                    "relay_transport_url), the conductors' broker carries "
                    "one message per batch instead of one per host. Its "
                    "user there needs only what an agent's has (publish "
                    "to the evidence topic). Unset: the same bus."),
    cfg.IntOpt("max_conductors", default=64, min=1, max=10000,
               help="Conductors with a batch being gathered at once. A "
                    "push for another conductor first sends the oldest "
                    "batch early: memory stays under max_conductors x "
                    "max_batch pushes (and max_batch_bytes), and pushes "
                    "naming invented conductors cost early sends, never "
                    "honest pushes."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(group)
    conf.register_opts(opts, group=group)
