"""[rpc_pins]: RPC version pins for rolling upgrades.

Each option caps the version of one RPC API that this process sends, as
Nova's ``[upgrade_levels]`` and Ironic's release pin do: during an upgrade,
pin the new services to what the oldest still-running peer understands,
then remove the pin once every peer runs the new release. A method newer
than the pin is refused by the client (``RPCVersionCapError``), never sent
to a peer that would reject it.
"""

from oslo_config import cfg

group = cfg.OptGroup(
    "rpc_pins", title="RPC version pins",
    help="Highest version of each RPC API this process sends (rolling "
         "upgrades). Unset: the newest version this release knows.")

_VERSION = cfg.types.String(regex=r"^\d+\.\d+$")

opts = [
    cfg.Opt("conductor", type=_VERSION,
            help="Conductor management API (trusted-pools-api calls it: "
                 "enroll, attest, capture, reset), e.g. '3.0'. 3.0 (operations"
                 " run on the conductor's worker) is a major version: a"
                 " pin below it refuses every call."),
    cfg.Opt("evidence", type=_VERSION,
            help="Conductor evidence API (agents push evidence with it), "
                 "e.g. '1.0'."),
    cfg.Opt("verdicts", type=_VERSION,
            help="Conductor verdict read API (bulk 'verdicts since' "
                 "refresh), e.g. '1.0'."),
    cfg.Opt("agent", type=_VERSION,
            help="Agent API (conductors call it: identity, credential "
                 "activation, challenges, epochs), e.g. '1.1'. Below 1.1 "
                 "requests go unsigned and agents at 1.1 refuse them."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(group)
    conf.register_opts(opts, group=group)
