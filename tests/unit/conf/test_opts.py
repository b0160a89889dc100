"""The sample-config generator sees every option group."""

from trusted_pools.conf import CONF
from trusted_pools.conf import opts


def test_list_opts_covers_registered_groups():
    listed = {getattr(group, "name", group): [o.name for o in options]
              for group, options in opts.list_opts()}
    for expected in ("agent", "attestation", "conductor", "tpm",
                     "DEFAULT"):
        assert expected in listed
    for group, names in listed.items():
        section = CONF if group == "DEFAULT" else CONF[group]
        for name in names:
            # Raises NoSuchOptError if listed but never registered.
            section[name]
            assert name in section


def test_every_option_has_help_and_type():
    for _group, options in opts.list_opts():
        for opt in options:
            assert opt.help, opt.name
            assert opt.type is not None, opt.name
