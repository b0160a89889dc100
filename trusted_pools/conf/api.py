"""[trusted_pools_api]: trusted-pools-api, the management REST service."""

from __future__ import annotations

from oslo_config import cfg

group = cfg.OptGroup(
    "trusted_pools_api", title="Management REST API",
    help="trusted-pools-api: the REST service operators, the openstack "
         "client plugin and Nova-side consumers call (Keystone service "
         "type 'trusted-pools').")

opts = [
    cfg.HostAddressOpt("host", default="0.0.0.0",
                       help="Address the built-in server listens on "
                            "(trusted-pools-api console script; under "
                            "uwsgi or mod_wsgi the web server decides)."),
    cfg.PortOpt("port", default=9440,
                help="TCP port the built-in server listens on."),
    cfg.StrOpt("auth_strategy", default="keystone",
               choices=[("keystone", "Validate every request's token with "
                         "keystonemiddleware auth_token "
                         "([keystone_authtoken])."),
                        ("noauth", "No authentication: every request acts "
                         "as an admin of a fixed project. For the embedded "
                         "demo on one machine only, never in a cloud.")],
               mutable=False,
               help="How requests are authenticated. 'noauth' turns off "
                    "every access control of the API; it is not mutable "
                    "at runtime so that a reload cannot open the API."),
    cfg.IntOpt("max_limit", default=1000, min=1, max=100000,
               help="Largest number of items one list request may return "
                    "(the 'limit' query parameter; items)."),
    cfg.IntOpt("default_limit", default=100, min=1, max=100000,
               help="Items a list request returns when it gives no "
                    "'limit' (items; at most max_limit)."),
    cfg.IntOpt("max_request_body_size", default=16 * 1024 * 1024, min=1024,
               help="Largest request body accepted, in bytes (policy "
                    "bodies with IMA allow lists are large)."),
    cfg.IntOpt("rpc_timeout", default=30, min=1, max=3600,
               help="Seconds to wait for the owning conductor to answer "
                    "a request (it answers at once with an operation; the "
                    "host's own work runs after) before answering 503 "
                    "naming the conductor, the call and whether the "
                    "message broker accepts connections. At microversion "
                    "1.0 also how long the API waits for the operation."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(group)
    conf.register_opts(opts, group=group)
