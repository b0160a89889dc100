"""The sample-config generator sees every option group, and every listed
option can be registered and read."""

from oslo_config import cfg

from trusted_pools.conf import CONF
from trusted_pools.conf import opts

# Registered only inside nova-scheduler: Nova's own DEFAULT options
# (state_path) would clash with the rest of ours in that process.
SCHEDULER_ONLY = "trusted_pools_scheduler"


def _name(group):
    return getattr(group, "name", group)


def test_every_module_registers_what_it_lists():
    for module in opts._MODULES:
        conf = cfg.ConfigOpts()
        module.register_opts(conf)
        section = conf if _name(module.group) == "DEFAULT" else \
            conf[_name(module.group)]
        for opt in module.opts:
            # Raises NoSuchOptError if listed but not registered.
            section[opt.dest]


def test_services_see_every_group_but_the_scheduler_one():
    listed = {_name(group): options for group, options in opts.list_opts()}
    for expected in ("agent", "attestation", "conductor", "tpm",
                     "trusted_pools", SCHEDULER_ONLY):
        assert expected in listed
    for group, options in listed.items():
        if group == SCHEDULER_ONLY:
            continue
        section = CONF if group == "DEFAULT" else CONF[group]
        for opt in options:
            assert opt.dest in section


def test_no_option_of_ours_lives_in_default():
    # Our options are loaded into nova-scheduler's global configuration:
    # any of ours in [DEFAULT] risks a clash with Nova's (state_path did).
    for group, options in opts.list_opts():
        assert _name(group) != "DEFAULT", [o.name for o in options]


def test_every_option_has_help_and_type():
    for _group, options in opts.list_opts():
        for opt in options:
            assert opt.help, opt.name
            assert opt.type is not None, opt.name


def test_our_options_and_novas_load_into_one_process():
    # The filter and the demo run our code inside Nova's global config: a
    # group both define with other options (Nova owns [api]) fails there
    # with DuplicateOptError. A child interpreter, as nova-scheduler is.
    import subprocess
    import sys
    code = ("import trusted_pools.conf, trusted_pools.conf.opts as o\n"
            "import nova.conf\n"
            "from oslo_config import cfg\n"
            "ours = {getattr(g, 'name', g) for g, _ in o.list_opts()}\n"
            "theirs = {g for g in cfg.CONF} - ours\n"
            "print(len(theirs))\n")
    result = subprocess.run([sys.executable, "-c", code],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
