"""``trusted-pools-manage rabbitmq setup``: broker users per role.

What the broker enforces (doc/source/architecture.md, "Trust boundary"):

* two virtual hosts. The **management** one (``transport_url`` of the API,
  conductors and consumers) carries the conductors' management topic, the
  verdict reads and the trust notifications. The **agent** one (the
  agents' ``transport_url``, the conductors' ``[conductor]
  agent_transport_url``) carries the evidence topic, the agents' topic and
  the epoch fanout. Compute hosts hold no user of the management vhost.

  Why two and not topic permissions alone: oslo.messaging answers an RPC
  call through RabbitMQ's default exchange (``amq.default``), and a user
  allowed to publish there can put a message straight into any queue of
  the vhost by its name, whatever its topic permissions. An agent must
  answer its conductor's calls, so it needs that right; in its own vhost
  it reaches only queues whose messages are checked anyway (signed
  conductor requests, evidence that must verify).

* per-role users with ``set_permissions`` (configure/write/read regular
  expressions over exchange and queue names) and ``set_topic_permissions``
  (routing keys on the ``control_exchange`` topic exchange):

  - ``service`` (trusted-pools-api and the conductors): everything in both
    vhosts;
  - ``consumer`` (nova-scheduler's filter): in the management vhost, its
    notification pool queues and reply queues; publishes only to the
    verdict read topic; binds only to notification routing keys;
  - ``remediation`` (trusted-pools-placement-sync): a consumer that may
    also publish its own notifications (the response to distrust);
  - ``agent`` (one per compute host): in the agent vhost only, its own
    queues, the epoch fanout and ``amq.default`` (its replies); publishes
    on the topic exchange only to ``trusted_pools_evidence.<conductor>``;
    binds only its own routing keys. It has no write on the fanout
    exchange: it cannot announce an epoch.
  - ``relay`` (trusted-pools-relay of a rack or cell, ``--relay-user``):
    where it takes pushes (``--relay-vhost``, default the agent one), its
    relay topic's queues and the fanout exchange its RPC server declares,
    binding only its topic's routing keys; where the conductors are (the
    agent vhost), publishes on the topic exchange only to
    ``trusted_pools_evidence.<conductor>``. No ``amq.default``: it only
    casts, it answers nothing. With a relay topic (``--relay-topic``, or
    the default one when a relay user is set up), each agent may also
    publish to that routing key, and nothing more: it cannot consume the
    relay's queue (a compromised agent serving the relay topic would take
    its share of its neighbours' pushes and drop them).

What stays possible for an agent, and why that is no lever: publishing
through ``amq.default`` into other agents' queues (their requests are
signed by a conductor key they pin), into a conductor's evidence queue
(the channel it has anyway) or reply queue (an answer is matched by an
unguessable message id, and evidence must verify); declaring and so also
deleting the shared exchanges (RabbitMQ ties declare and delete to one
"configure" right, and oslo.messaging declares on consume): availability
only, hosts then go "unknown", never trusted.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import dataclass

from trusted_pools import exception
from trusted_pools.protocol import topics

EXIT_OK = 0
EXIT_FAILED = 1

#: Names oslo.messaging's rabbit driver uses (see the module docstring of
#: trusted_pools.common.rpc and tests/functional/test_bus_boundary.py).
CONTROL_EXCHANGE = topics.CONTROL_EXCHANGE
AGENT_TOPIC = topics.AGENT_TOPIC
EVIDENCE_TOPIC = topics.EVIDENCE_TOPIC
VERDICTS_TOPIC = topics.VERDICTS_TOPIC
NOTIFICATIONS_TOPIC = topics.NOTIFICATIONS_TOPIC
_REPLY_QUEUE = r"reply_[0-9a-f]+"
# Notification pools of the consumers (scheduler and placement-sync
# listeners: 'trusted-pools-...'); the queue a notifier creates for its
# topic when nobody listens yet is 'trusted_pools_notifications.<prio>'.
_POOL_QUEUE = r"trusted-pools-[A-Za-z0-9_.-]+"

_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,255}$")
# A relay topic ([relay] topic's rule).
_TOPIC = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")


@dataclass(frozen=True)
class Grant:
    """One user's rights in one vhost."""

    user: str
    vhost: str
    configure: str
    write: str
    read: str
    topic_write: str | None = None
    topic_read: str | None = None


def _any_of(*patterns: str) -> str:
    return "^(%s)$" % "|".join(patterns)


def service_grants(user: str, vhosts: list[str]) -> list[Grant]:
    return [Grant(user, vhost, ".*", ".*", ".*", ".*", ".*")
            for vhost in vhosts]


def consumer_grant(user: str, vhost: str, may_notify: bool = False
                   ) -> Grant:
    """nova-scheduler's filter (or, ``may_notify``, the trait keeper):
    notifications in, verdict reads out, nothing else."""
    own = [re.escape(CONTROL_EXCHANGE), _POOL_QUEUE, _REPLY_QUEUE]
    if may_notify:
        own.append(re.escape(NOTIFICATIONS_TOPIC) + r"\.[a-z]+")
    publish = [re.escape(VERDICTS_TOPIC)]
    if may_notify:
        publish.append(re.escape(NOTIFICATIONS_TOPIC) + r"\.[a-z]+")
    return Grant(user, vhost, configure=_any_of(*own), write=_any_of(*own),
                 read=_any_of(*own), topic_write=_any_of(*publish),
                 topic_read=_any_of(re.escape(NOTIFICATIONS_TOPIC)
                                    + r"\.[a-z]+"))


def agent_grant(user: str, host: str, vhost: str,
                relay_topic: str | None = None) -> Grant:
    """One compute host's agent: its own queues, the epoch fanout it
    listens to, its replies (``amq.default``), and evidence pushes (to
    the conductors, and to ``relay_topic`` if its relay is in this
    vhost)."""
    if not _NAME.match(host):
        raise exception.InvalidParameterValue(
            name="host", reason="%r is not a host name" % host)
    own_key = re.escape("%s.%s" % (AGENT_TOPIC, host))
    fanout = re.escape(AGENT_TOPIC + "_fanout")
    queues = [re.escape(AGENT_TOPIC), own_key, fanout + r"_[0-9a-f]+"]
    exchanges = [re.escape(CONTROL_EXCHANGE)]
    pushes = [re.escape(EVIDENCE_TOPIC) + r"\.[^.]+"]
    if relay_topic is not None:
        _check_topic(relay_topic)
        pushes.append(re.escape(relay_topic))
    return Grant(
        user, vhost,
        configure=_any_of(*exchanges, fanout, *queues),
        # No write on the fanout exchange: epochs are not the agent's.
        write=_any_of(*exchanges, r"amq\.default", *queues),
        read=_any_of(*exchanges, fanout, *queues),
        topic_write=_any_of(*pushes),
        topic_read=_any_of(re.escape(AGENT_TOPIC), own_key))


def _topic_names(topic: str, host: str) -> tuple[list[str], list[str]]:
    """What an RPC server of ``topic`` on ``host`` declares with
    oslo.messaging's rabbit driver: (exchanges, queues), as patterns."""
    fanout = re.escape(topic + "_fanout")
    return ([re.escape(CONTROL_EXCHANGE), fanout],
            [re.escape(topic), re.escape("%s.%s" % (topic, host)),
             fanout + r"_[0-9a-f]+"])


def _check_topic(topic: str) -> None:
    if not _TOPIC.match(topic):
        raise exception.InvalidParameterValue(
            name="relay-topic", reason="%r is not a topic name" % topic)


def relay_grants(user: str, host: str, vhost: str, relay_vhost: str,
                 topic: str = topics.RELAY_TOPIC) -> list[Grant]:
    """One trusted-pools-relay: takes its topic's pushes in
    ``relay_vhost``, casts batches to the conductors' evidence topic in
    ``vhost`` (the agent vhost; the same one or not)."""
    if not _NAME.match(host):
        raise exception.InvalidParameterValue(
            name="host", reason="%r is not a host name" % host)
    _check_topic(topic)
    exchanges, queues = _topic_names(topic, host)
    evidence = _any_of(re.escape(EVIDENCE_TOPIC) + r"\.[^.]+")
    binds = _any_of(re.escape(topic), re.escape("%s.%s" % (topic, host)))
    taking = Grant(
        user, relay_vhost,
        configure=_any_of(*exchanges, *queues),
        # Write on its queues: binding them needs it. No amq.default.
        write=_any_of(exchanges[0], *queues),
        read=_any_of(*exchanges, *queues),
        topic_write=evidence if relay_vhost == vhost else "^$",
        topic_read=binds)
    if relay_vhost == vhost:
        return [taking]
    control = _any_of(re.escape(CONTROL_EXCHANGE))
    return [taking, Grant(user, vhost, configure=control, write=control,
                          read="^$", topic_write=evidence, topic_read="^$")]


def agent_relay_grant(user: str, relay_vhost: str, topic: str) -> Grant:
    """An agent's rights in a relay vhost that is not the agent vhost:
    cast to the relay topic, nothing else."""
    _check_topic(topic)
    control = _any_of(re.escape(CONTROL_EXCHANGE))
    return Grant(user, relay_vhost, configure=control, write=control,
                 read="^$", topic_write=_any_of(re.escape(topic)),
                 topic_read="^$")


def commands(grant: Grant) -> list[list[str]]:
    """The rabbitmqctl invocations that give ``grant`` (idempotent)."""
    argv = [["set_permissions", "-p", grant.vhost, grant.user,
             grant.configure, grant.write, grant.read]]
    if grant.topic_write is not None:
        argv.append(["set_topic_permissions", "-p", grant.vhost, grant.user,
                     CONTROL_EXCHANGE, grant.topic_write,
                     grant.topic_read or "^$"])
    return argv


@dataclass(frozen=True)
class Plan:
    vhosts: list[str]
    users: dict[str, str | None]  # name -> password (None: must exist)
    grants: list[Grant]


def build_plan(args: argparse.Namespace,
               passwords: dict[str, str]) -> Plan:
    grants: list[Grant] = []
    users: dict[str, str | None] = {}
    vhosts = [args.vhost, args.agent_vhost]
    for name in args.service_user or ():
        grants += service_grants(name, vhosts)
        users[name] = passwords.get(name)
    for name in args.consumer_user or ():
        grants.append(consumer_grant(name, args.vhost))
        users[name] = passwords.get(name)
    for name in args.remediation_user or ():
        grants.append(consumer_grant(name, args.vhost, may_notify=True))
        users[name] = passwords.get(name)
    relay_users = getattr(args, "relay_user", None) or ()
    relay_vhost = getattr(args, "relay_vhost", None) or args.agent_vhost
    relay_topic = getattr(args, "relay_topic", None) or (
        topics.RELAY_TOPIC if relay_users else None)
    if relay_topic is not None and relay_vhost not in vhosts:
        vhosts.append(relay_vhost)
    for spec in args.agent_user or ():
        name, _, host = spec.partition("=")
        grants.append(agent_grant(
            name, host or name, args.agent_vhost,
            relay_topic if relay_vhost == args.agent_vhost else None))
        if relay_topic is not None and relay_vhost != args.agent_vhost:
            grants.append(agent_relay_grant(name, relay_vhost, relay_topic))
        users[name] = passwords.get(name)
    for spec in relay_users:
        name, _, host = spec.partition("=")
        grants += relay_grants(name, host or name, args.agent_vhost,
                               relay_vhost, relay_topic or
                               topics.RELAY_TOPIC)
        users[name] = passwords.get(name)
    for name in users:
        if not _NAME.match(name):
            raise exception.InvalidParameterValue(
                name="user", reason="%r is not a RabbitMQ user name" % name)
    return Plan(vhosts, users, grants)


def read_passwords(path: str | None) -> dict[str, str]:
    """``user password`` per line; '#' starts a comment."""
    if path is None:
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError as error:
        raise exception.InvalidParameterValue(
            name=path, reason="cannot be read (%s)" % error.strerror)
    passwords = {}
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, password = line.partition(" ")
        if not password.strip():
            raise exception.InvalidParameterValue(
                name=path, reason="line for %r has no password" % name)
        passwords[name] = password.strip()
    return passwords


def _rabbitmqctl(argv: list[str], secret: str | None = None) -> str:
    shown = " ".join(argv if secret is None else
                     [a if a != secret else "****" for a in argv])
    try:
        result = subprocess.run(["rabbitmqctl", "-q", *argv],
                                capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as error:
        raise exception.ServiceUnavailable(
            service="rabbitmq", group="DEFAULT",
            reason="rabbitmqctl %s: %s" % (shown, error))
    if result.returncode != 0:
        raise exception.ServiceUnavailable(
            service="rabbitmq", group="DEFAULT",
            reason="rabbitmqctl %s: %s" % (shown, result.stderr.strip()
                                           or result.stdout.strip()))
    return result.stdout


def apply(plan: Plan, dry_run: bool = False) -> list[str]:
    """Create what is missing and set every permission; returns what was
    done (passwords masked)."""
    done: list[str] = []

    def run(argv: list[str], secret: str | None = None) -> None:
        done.append(" ".join("****" if a == secret and secret else a
                             for a in argv))
        if not dry_run:
            _rabbitmqctl(argv, secret)

    existing_vhosts = set() if dry_run else set(
        _rabbitmqctl(["list_vhosts", "name"]).split())
    existing_users = set() if dry_run else {
        line.split("\t")[0] for line in
        _rabbitmqctl(["list_users"]).splitlines() if line}
    for vhost in dict.fromkeys(plan.vhosts):
        if vhost not in existing_vhosts:
            run(["add_vhost", vhost])
    for name, password in plan.users.items():
        if name in existing_users:
            if password is not None:
                run(["change_password", name, password], password)
            continue
        if password is None and dry_run:
            done.append("add_user %s <password> (unless it exists)" % name)
            continue
        if password is None:
            raise exception.InvalidParameterValue(
                name=name, reason="user does not exist and --password-file "
                "gives no password for it")
        run(["add_user", name, password], password)
    for grant in plan.grants:
        for argv in commands(grant):
            run(argv)
    return done


def add_commands(commands_: argparse._SubParsersAction) -> None:
    group = commands_.add_parser(
        "rabbitmq", help="broker users and permissions per role")
    sub = group.add_subparsers(dest="rabbitmq_command", metavar="ACTION")
    sub.required = True
    setup = sub.add_parser(
        "setup", help="create vhosts and users; set permissions",
        description="Create the management and agent virtual hosts and "
                    "the users of each role, and set their permissions and "
                    "topic permissions (run on a broker node, as a user "
                    "that may run rabbitmqctl). Idempotent.")
    setup.add_argument("--vhost", required=True,
                       help="management virtual host (API, conductors, "
                            "consumers)")
    setup.add_argument("--agent-vhost", required=True,
                       help="agent virtual host (agents and conductors)")
    setup.add_argument("--service-user", action="append", metavar="NAME",
                       help="user of trusted-pools-api and the conductors "
                            "(both vhosts, every right)")
    setup.add_argument("--consumer-user", action="append", metavar="NAME",
                       help="user of nova-scheduler's filter")
    setup.add_argument("--remediation-user", action="append",
                       metavar="NAME",
                       help="user of trusted-pools-placement-sync")
    setup.add_argument("--agent-user", action="append",
                       metavar="NAME[=HOST]",
                       help="user of the agent of compute host HOST "
                            "(default: the user name); repeat per host")
    setup.add_argument("--relay-user", action="append",
                       metavar="NAME[=HOST]",
                       help="user of trusted-pools-relay on host HOST "
                            "([relay] host; default: the user name)")
    setup.add_argument("--relay-topic", metavar="TOPIC",
                       help="the relay topic of these agents and relays "
                            "([agent] relay_topic, [relay] topic; default "
                            "%s when a relay user is set up): the agents "
                            "may cast to it" % topics.RELAY_TOPIC)
    setup.add_argument("--relay-vhost", metavar="VHOST",
                       help="virtual host of the relay topic, when it is "
                            "a rack's or cell's own ([agent] "
                            "relay_transport_url; default: the agent "
                            "vhost)")
    setup.add_argument("--password-file", metavar="PATH",
                       help="'user password' per line, for users to create "
                            "or whose password to set")
    setup.add_argument("--dry-run", action="store_true",
                       help="print the rabbitmqctl commands, run nothing")
    setup.add_argument("--format", choices=("text", "json"), default="text",
                       help="text (default): one rabbitmqctl line each; "
                            "json: {\"dry_run\", \"commands\"}")
    setup.set_defaults(func=run_setup, needs_config=False)


def run_setup(args: argparse.Namespace) -> int:
    try:
        plan = build_plan(args, read_passwords(args.password_file))
        lines = []
        for line in apply(plan, dry_run=args.dry_run):
            if args.format == "json":
                lines.append(line)
            else:
                sys.stdout.write("rabbitmqctl %s\n" % line)
        if args.format == "json":
            import json
            json.dump({"dry_run": bool(args.dry_run), "commands": [
                "rabbitmqctl %s" % line for line in lines]}, sys.stdout,
                indent=2)
            sys.stdout.write("\n")
    except exception.TrustedPoolsError as error:
        sys.stderr.write("trusted-pools-manage: %s: %s\n"
                         % (type(error).__name__, error.message))
        return EXIT_FAILED
    return EXIT_OK


__all__ = ["add_commands", "agent_grant", "agent_relay_grant", "apply",
           "build_plan", "consumer_grant", "relay_grants",
           "service_grants"]
