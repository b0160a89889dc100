"""TPM/TSS2 response code decoding against the layout in TPM 2.0 Part 2."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from trusted_pools.tpm import rc


# (code, name, warning, format_one, parameter, handle, session) - codes seen
# from real TPMs and swtpm while writing the device module.
VECTORS = [
    (0x000, "TPM_RC_SUCCESS", False, False, None, None, None),
    (0x100, "TPM_RC_INITIALIZE", False, False, None, None, None),
    (0x101, "TPM_RC_FAILURE", False, False, None, None, None),
    (0x14C, "TPM_RC_NV_DEFINED", False, False, None, None, None),
    (0x902, "TPM_RC_OBJECT_MEMORY", True, False, None, None, None),
    (0x903, "TPM_RC_SESSION_MEMORY", True, False, None, None, None),
    (0x921, "TPM_RC_LOCKOUT", True, False, None, None, None),
    (0x922, "TPM_RC_RETRY", True, False, None, None, None),
    (0x910, "TPM_RC_REFERENCE_H0", True, False, None, None, None),
    (0x919, "TPM_RC_REFERENCE_S1", True, False, None, None, None),
    (0x18B, "TPM_RC_HANDLE", False, True, None, 1, None),
    (0x28B, "TPM_RC_HANDLE", False, True, None, 2, None),
    (0x98E, "TPM_RC_AUTH_FAIL", False, True, None, None, 1),
    (0x9A2, "TPM_RC_BAD_AUTH", False, True, None, None, 1),
    (0x1D5, "TPM_RC_SIZE", False, True, 1, None, None),
    (0x2D6, "TPM_RC_SYMMETRIC", False, True, 2, None, None),
    (0x2C4, "TPM_RC_VALUE", False, True, 2, None, None),
    (0xFDF, "TPM_RC_INTEGRITY", False, True, 15, None, None),
    (0x09F, "TPM_RC_INTEGRITY", False, True, None, None, None),
]


@pytest.mark.parametrize(
    "code,name,warning,format_one,parameter,handle,session", VECTORS)
def test_known_codes(code, name, warning, format_one, parameter, handle,
                     session):
    decoded = rc.decode_rc(code)
    assert decoded.name == name
    assert decoded.warning is warning
    assert decoded.format_one is format_one
    assert (decoded.parameter, decoded.handle, decoded.session) == \
        (parameter, handle, session)
    assert decoded.layer == 0 and decoded.layer_name == "tpm"


def test_base_strips_the_numbers_so_constants_compare():
    assert rc.decode_rc(0x18B).base == rc.TPM_RC_HANDLE
    assert rc.decode_rc(0x48B).base == rc.TPM_RC_HANDLE
    assert rc.decode_rc(0x98E).base == rc.TPM_RC_AUTH_FAIL
    assert rc.decode_rc(0x921).base == rc.TPM_RC_LOCKOUT
    assert rc.decode_rc(0x902).base == rc.TPM_RC_OBJECT_MEMORY


def test_lockout_and_retry_flags():
    assert rc.decode_rc(0x921).is_lockout
    assert not rc.decode_rc(0x921).retryable
    assert rc.decode_rc(0x922).retryable      # RETRY
    assert rc.decode_rc(0x90A).retryable      # TESTING
    assert not rc.decode_rc(0x902).retryable  # flush first, then retry
    assert not rc.decode_rc(0x98E).retryable


@pytest.mark.parametrize("code,layer,name", [
    (0xA000A, "tcti", "TSS2_BASE_RC_IO_ERROR"),
    (0xA0015, "tcti", "TSS2_BASE_RC_NOT_SUPPORTED"),
    (0x70018, "esapi", "TSS2_BASE_RC_BAD_TR"),
    (0x8000B, "sys", "TSS2_BASE_RC_BAD_VALUE"),
    (0x90010, "mu", "TSS2_BASE_RC_BAD_SIZE"),
])
def test_tss_layers(code, layer, name):
    decoded = rc.decode_rc(code)
    assert decoded.layer_name == layer
    assert decoded.name == name
    assert not decoded.format_one and not decoded.warning


def test_resource_manager_tpm_layer_uses_tpm_layout():
    decoded = rc.decode_rc(0x0C0902)
    assert decoded.layer_name == "resmgr-tpm"
    assert decoded.name == "TPM_RC_OBJECT_MEMORY"


def test_tpm12_and_vendor_codes_are_named_not_refused():
    assert rc.decode_rc(0x03C).tpm12
    vendor = rc.decode_rc(0x501)
    assert vendor.vendor and vendor.name.startswith("TPM_RC_VENDOR")
    unknown = rc.decode_rc(0x97E)
    assert "UNKNOWN" in unknown.name


def test_describe_names_code_and_position():
    text = rc.describe_rc(0x2C4)
    assert "TPM_RC_VALUE" in text and "parameter 2" in text
    assert "session 1" in rc.describe_rc(0x98E)
    assert "handle 1" in rc.describe_rc(0x18B)


@pytest.mark.parametrize("bad", [-1, 1 << 32])
def test_out_of_range_is_value_error(bad):
    with pytest.raises(ValueError):
        rc.decode_rc(bad)


@pytest.mark.parametrize("bad", ["0x902", 2.0, None, True])
def test_wrong_type_is_type_error(bad):
    with pytest.raises(TypeError):
        rc.decode_rc(bad)


@given(st.integers(min_value=0, max_value=0xFFFFFFFF))
def test_any_code_decodes_consistently(code):
    decoded = rc.decode_rc(code)
    assert decoded.rc == code
    assert decoded.layer == (code >> 16) & 0xFF
    assert str(decoded)  # always printable
    positions = [decoded.parameter, decoded.handle, decoded.session]
    assert sum(p is not None for p in positions) <= 1
    if decoded.layer in (0, 12) and code & 0xFFFF:
        assert decoded.format_one == bool(code & 0x80)
        if decoded.format_one:
            assert not decoded.warning
            if decoded.parameter is not None:
                assert 1 <= decoded.parameter <= 15
            for n in (decoded.handle, decoded.session):
                assert n is None or 1 <= n <= 7


@given(st.integers(min_value=0, max_value=0x3F),
       st.integers(min_value=1, max_value=15))
def test_parameter_number_round_trips(error, number):
    code = 0x80 | 0x40 | (number << 8) | error
    decoded = rc.decode_rc(code)
    assert decoded.parameter == number
    assert decoded.base == 0x80 + error
