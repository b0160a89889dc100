"""The default rules, the entry points the oslopolicy tools load, and the
sample file generated from them."""

from __future__ import annotations

import configparser
import importlib
import pathlib

from oslo_config import cfg
from oslo_policy import generator
from oslo_policy import policy as oslo_policy

from trusted_pools.api import policies
from trusted_pools.api import policy as api_policy

ROOT = pathlib.Path(__file__).resolve().parents[3]


def _entry_point(group: str) -> object:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    line = parser["entry_points"][group].strip()
    name, target = (part.strip() for part in line.split("="))
    assert name == "trusted_pools"
    module, attribute = target.split(":")
    return getattr(importlib.import_module(module), attribute)


def test_every_operation_rule_is_documented_with_scopes():
    rules = policies.list_rules()
    documented = [r for r in rules
                  if isinstance(r, oslo_policy.DocumentedRuleDefault)]
    assert len(documented) == 44
    for rule in documented:
        assert rule.name.startswith("trusted_pools:")
        assert rule.scope_types and rule.operations and rule.description


def test_entry_points_give_rules_and_enforcer():
    assert _entry_point("oslo.policy.policies")() == policies.list_rules()
    enforcer = api_policy.make_enforcer(_private_conf())
    enforcer.load_rules()
    assert set(enforcer.rules) >= {r.name for r in policies.list_rules()}
    assert _entry_point("oslo.policy.enforcer") is api_policy.get_enforcer


def _private_conf() -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    conf([], project="trusted-pools-test", default_config_files=[])
    return conf


def test_sample_file_matches_the_rules():
    sample = (ROOT / "etc/trusted-pools/policy.yaml.sample").read_text()
    for rule in policies.list_rules():
        assert generator._format_rule_default_yaml(rule) in sample
