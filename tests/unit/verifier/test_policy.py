"""Policy bodies: what validates, what is rejected and how it is named."""

from __future__ import annotations

import copy
import dataclasses
import json
import pathlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trusted_pools import exception
from trusted_pools.verifier import policy as pol
from trusted_pools.protocol.levels import Rung

ROOT = pathlib.Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "etc" / "trusted-pools" / "policies"
HEX32 = "ab" * 32


def measured(body, name="prod-boot", version=3):
    return pol.MeasuredBootPolicy.from_json(body, name=name, version=version)


def runtime(body, name="prod-ima", version=1):
    return pol.RuntimePolicy.from_json(body, name=name, version=version)


def minimal_boot() -> dict:
    return {"kind": "measured_boot",
            "pcrs": {"sha256": {"0": HEX32}},
            "platform_firmware": {"crtm_versions": ["edk2"]},
            "os_boot": {"boot_loaders": {"sha256": [HEX32]},
                        "kernels": {"sha256": [HEX32]},
                        "kernel_command_lines": ["ro quiet"]}}


def minimal_runtime() -> dict:
    return {"kind": "ima", "digests": {"/usr/bin/bash": [
        "sha256:" + HEX32]}, "excludes": ["/tmp/*", "/var/log/"]}


# --- examples and round trips --------------------------------------------------------

def test_example_files_load_and_round_trip():
    boot_body = json.loads((EXAMPLES / "measured-boot-example.json")
                           .read_text())
    boot = pol.load_policy("measured_boot", boot_body, name="ex", version=1)
    assert isinstance(boot, pol.MeasuredBootPolicy)
    assert boot.to_json() == boot_body
    assert boot.platform_firmware.secure_boot.required is True
    assert boot.covers(Rung.PLATFORM_FIRMWARE) and boot.covers(Rung.OS_BOOT)
    ima_body = json.loads((EXAMPLES / "runtime-example.json").read_text())
    ima = pol.load_policy("ima", ima_body, name="ex", version=2)
    assert isinstance(ima, pol.RuntimePolicy)
    assert ima.to_json() == ima_body
    assert runtime(ima.to_json(), name="ex", version=2) == ima


def test_policy_is_immutable():
    policy = measured(minimal_boot())
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.version = 4
    with pytest.raises(TypeError):
        policy.pcrs[11] = {}
    with pytest.raises(AttributeError):
        policy.platform_firmware.crtm_versions.add("x")


def test_pcrs_are_split_by_rung():
    body = minimal_boot()
    body["pcrs"] = {"sha256": {"0": HEX32, "4": HEX32, "7": HEX32,
                               "9": HEX32}}
    policy = measured(body)
    assert [p for _, p, _ in policy.pcrs_of(Rung.PLATFORM_FIRMWARE)] == \
        [0, 7]
    assert [p for _, p, _ in policy.pcrs_of(Rung.OS_BOOT)] == [4, 9]
    assert policy.required_pcrs() == {0, 4, 7, 8, 9, 12}


def test_json_text_is_accepted():
    text = json.dumps(minimal_runtime())
    assert runtime(text).digests["/usr/bin/bash"] == {"sha256:" + HEX32}
    assert runtime(text.encode()).excludes == ("/tmp/*", "/var/log/")


# --- excludes ----------------------------------------------------------------------

@pytest.mark.parametrize("path,excluded", [
    ("/tmp/a", True), ("/tmp/a/b/c", True), ("/var/log/x/y", True),
    ("/var/logs", False), ("/TMP/a", False), ("/usr/bin/bash", False),
    ("/tmp", False)])
def test_excludes(path, excluded):
    assert runtime(minimal_runtime()).is_excluded(path) is excluded


# --- rejections name the field -------------------------------------------------------

def _mutate(body, path, value):
    body = copy.deepcopy(body)
    target = body
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return body


@pytest.mark.parametrize("path,value,field,words", [
    (("kind",), "ima", "kind", "'measured_boot'"),
    (("kind",), KeyError, "kind", "missing"),
    (("kernals",), {}, "(body)", "unknown key 'kernals'"),
    (("pcrs", "sha256", "10"), HEX32, "pcrs.sha256", "unknown key '10'"),
    (("pcrs", "sha256", "0"), "ab" * 20, "pcrs.sha256.0", "64 hex digits"),
    (("pcrs", "sha256", "0"), "zz" * 32, "pcrs.sha256.0", "64 hex digits"),
    (("pcrs", "md5"), {}, "pcrs", "unknown key 'md5'"),
    (("os_boot", "kernels", "sha256"), [], "os_boot.kernels.sha256",
     "must not be empty"),
    (("os_boot", "kernels", "sha256"), [1], "os_boot.kernels.sha256[0]",
     "expected a string"),
    (("os_boot", "kernels"), {}, "os_boot.kernels", "at least one bank"),
    (("os_boot", "allow_any_kernel_command_line"), True,
     "os_boot.allow_any_kernel_command_line", "remove one of them"),
    (("os_boot", "allow_any_kernel_command_line"), 1,
     "os_boot.allow_any_kernel_command_line", "true or false"),
    (("os_boot", "boot_loaders"), KeyError, "os_boot.kernel_command_lines",
     "needs boot_loaders"),
    (("platform_firmware", "secure_boot"), {"pk": ["x509:" + HEX32]},
     "platform_firmware.secure_boot.required", "missing"),
    (("platform_firmware", "secure_boot"), {"required": True,
                                            "db": ["CN=Microsoft"]},
     "platform_firmware.secure_boot.db[0]", "'<type>:<hex>'"),
    (("platform_firmware", "crtm_versions"), "edk2",
     "platform_firmware.crtm_versions", "expected a JSON array"),
    (("description",), 5, "description", "expected a string"),
    (("annotations",), [], "annotations", "JSON object"),
])
def test_measured_boot_rejections(path, value, field, words):
    with pytest.raises(exception.PolicyInvalid) as info:
        measured(_mutate(minimal_boot(), path, value))
    assert info.value.kwargs["field"] == field
    assert words in str(info.value)
    assert "'prod-boot' v3" in str(info.value)
    assert isinstance(info.value, exception.InvalidParameterValue)


def test_empty_measured_boot_policy_is_rejected():
    with pytest.raises(exception.PolicyInvalid, match="checks nothing"):
        measured({"kind": "measured_boot",
                  "os_boot": {"allow_any_kernel_command_line": True}})


@pytest.mark.parametrize("path,value,field,words", [
    (("digests", "/usr/bin/bash"), ["sha256:" + "ab" * 31],
     "digests['/usr/bin/bash'][0]", "64 hex digits"),
    (("digests", "/usr/bin/bash"), [HEX32],
     "digests['/usr/bin/bash'][0]", "'<algorithm>:<hex digest>'"),
    (("digests", "/usr/bin/bash"), "sha256:" + HEX32,
     "digests['/usr/bin/bash']", "expected a JSON array"),
    (("digests", ""), ["sha256:" + HEX32], "digests (a path)",
     "must not be empty"),
    (("digests",), [], "digests", "path -> list"),
    (("excludes",), "/tmp", "excludes", "expected a JSON array"),
    (("excludes",), [""], "excludes[0]", "must not be empty"),
    (("allow_unknown",), "no", "allow_unknown", "true or false"),
    (("require_boot_aggregate",), None, "require_boot_aggregate",
     "true or false"),
    (("kind",), "measured_boot", "kind", "'ima'"),
    (("signatures",), True, "(body)", "unknown key 'signatures'"),
])
def test_runtime_rejections(path, value, field, words):
    with pytest.raises(exception.PolicyInvalid) as info:
        runtime(_mutate(minimal_runtime(), path, value))
    assert info.value.kwargs["field"] == field
    assert words in str(info.value)


def test_runtime_digest_normalisation_and_unknown_algorithms():
    body = minimal_runtime()
    body["digests"]["/x"] = ["SHA256:" + HEX32.upper(), "foo:0011"]
    policy = runtime(body)
    assert policy.digests["/x"] == {"sha256:" + HEX32, "foo:0011"}
    body["digests"]["/x"] = ["foo:001"]
    with pytest.raises(exception.PolicyInvalid, match="even number"):
        runtime(body)


@pytest.mark.parametrize("body", ["{", b"\xff", "[]", "null", "3"])
def test_non_object_bodies(body):
    with pytest.raises(exception.PolicyInvalid):
        runtime(body)
    with pytest.raises(exception.PolicyInvalid):
        measured(body)


@pytest.mark.parametrize("name,version", [("", 1), ("p", -1), ("p", True),
                                          (None, 1), ("p", "1")])
def test_name_and_version_are_checked(name, version):
    with pytest.raises(exception.InvalidParameterValue):
        measured(minimal_boot(), name=name, version=version)


def test_load_policy_unknown_kind():
    with pytest.raises(exception.InvalidParameterValue, match="kind"):
        pol.load_policy("tpm", {}, name="p", version=1)


# --- property tests: any JSON gives a policy or a PolicyInvalid -----------------------

_keys = st.sampled_from([
    "kind", "pcrs", "platform_firmware", "os_boot", "description",
    "annotations", "sha256", "sha1", "0", "7", "10", "crtm_versions",
    "firmware_digests", "secure_boot", "required", "pk", "db",
    "dbx_contains", "authorities", "boot_loaders", "kernels", "initrds",
    "boot_files",
    "kernel_command_lines", "allow_any_kernel_command_line", "digests",
    "excludes", "allow_unknown", "allow_violations",
    "require_boot_aggregate", "/usr/bin/bash", "x"])
_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
    st.text(max_size=20), st.sampled_from([
        "measured_boot", "ima", HEX32, "sha256:" + HEX32, "x509:" + HEX32,
        "ab" * 20, "/tmp/*", "[", "sha256:"]))
json_values = st.recursive(
    _leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(_keys, st.text(max_size=5)), children,
                        max_size=5)),
    max_leaves=30)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, prefix + (key,))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield from _paths(child, prefix + (i,))


def _parse_both(body) -> None:
    for parse in (measured, runtime):
        try:
            policy = parse(body)
        except exception.PolicyInvalid:
            continue
        # Whatever validates survives its own JSON form.
        again = parse(json.loads(json.dumps(policy.to_json())))
        assert again == policy


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_keys, json_values, max_size=6))
def test_arbitrary_json_gives_policy_or_policy_invalid(body):
    body.setdefault("kind", "measured_boot")
    _parse_both(body)
    body["kind"] = "ima"
    _parse_both(body)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_valid_bodies_give_policy_or_policy_invalid(data):
    base = data.draw(st.sampled_from([minimal_boot(), minimal_runtime()]))
    paths = [p for p in _paths(base) if p]
    path = data.draw(st.sampled_from(paths))
    replacement = data.draw(json_values)
    _parse_both(_mutate(base, path, replacement))
