"""The sample-config generator sees every option group."""

from trusted_pools.conf import CONF
from trusted_pools.conf import opts


def test_list_opts_covers_registered_groups():
    listed = {group.name: [o.name for o in options]
              for group, options in opts.list_opts()}
    assert "attestation" in listed and "tpm" in listed
    for group, names in listed.items():
        for name in names:
            # Raises NoSuchOptError if listed but never registered.
            CONF[group][name]
            assert name in CONF[group]


def test_every_option_has_help_and_type():
    for _group, options in opts.list_opts():
        for opt in options:
            assert opt.help, opt.name
            assert opt.type is not None, opt.name
