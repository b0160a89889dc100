"""Decoding of TPM 2.0 and TSS2 response codes.

A response code is what a TPM (or the TSS stack in front of it) returns
instead of a result. Operators see it in logs and callers decide on it (a
warning such as ``TPM_RC_RETRY`` may be retried; ``TPM_RC_LOCKOUT`` must not
be hammered), so it is decoded into named parts instead of shown as a bare
number.

Layout (TPM 2.0 Library Part 2, 6.6 "TPM_RC"):

* bits 16-23: the TSS layer that produced the code (0 = the TPM itself,
  10 = the TCTI, ...). Only layer 0 codes follow the TPM layout below.
* bit 7 set - *format one*: bits 0-5 are the error, bit 6 says whether
  bits 8-11 number the parameter (1-15); otherwise bits 8-10 number the
  handle (bit 11 clear) or the session (bit 11 set), 1-7.
* bit 7 clear - *format zero*: bit 8 (VER1) marks a TPM 2.0 code (clear
  means a TPM 1.2 code), bit 10 a vendor code, bit 11 a warning; bits 0-6
  are the error.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DecodedRC", "decode_rc", "describe_rc",
           "TPM_RC_SUCCESS", "TPM_RC_LOCKOUT", "TPM_RC_OBJECT_MEMORY",
           "TPM_RC_HANDLE", "TPM_RC_AUTH_FAIL", "TPM_RC_BAD_AUTH",
           "TPM_RC_RETRY"]

RC_VER1 = 0x100
RC_FMT1 = 0x080
RC_WARN = 0x900

TPM_RC_SUCCESS = 0x000
# Base values (format and bits as the TPM returns them, handle/parameter/
# session number stripped) for codes callers test against.
TPM_RC_LOCKOUT = RC_WARN + 0x021
TPM_RC_OBJECT_MEMORY = RC_WARN + 0x002
TPM_RC_RETRY = RC_WARN + 0x022
TPM_RC_HANDLE = RC_FMT1 + 0x00B
TPM_RC_AUTH_FAIL = RC_FMT1 + 0x00E
TPM_RC_BAD_AUTH = RC_FMT1 + 0x022

_LAYERS: dict[int, str] = {
    0: "tpm",
    6: "feature",
    7: "esapi",
    8: "sys",
    9: "mu",
    10: "tcti",
    11: "resmgr",
    12: "resmgr-tpm",
}

# (name, description) by the error number in bits 0-6 of format zero.
_FMT0: dict[int, tuple[str, str]] = {
    0x000: ("INITIALIZE", "TPM not initialized by TPM2_Startup"),
    0x001: ("FAILURE", "commands not accepted: the TPM is in failure mode"),
    0x003: ("SEQUENCE", "improper use of a sequence handle"),
    0x00B: ("PRIVATE", "not currently used"),
    0x019: ("HMAC", "not currently used"),
    0x020: ("DISABLED", "the command is disabled"),
    0x021: ("EXCLUSIVE", "command failed because audit sequence required "
                         "exclusivity"),
    0x024: ("AUTH_TYPE", "authorization handle is not correct for command"),
    0x025: ("AUTH_MISSING", "command requires an authorization session for "
                            "a handle and it is not present"),
    0x026: ("POLICY", "policy failure in math operation or an invalid "
                      "authPolicy value"),
    0x027: ("PCR", "PCR check fail"),
    0x028: ("PCR_CHANGED", "PCR have changed since checked"),
    0x02D: ("UPGRADE", "the TPM is in field upgrade mode"),
    0x02E: ("TOO_MANY_CONTEXTS", "context ID counter is at maximum"),
    0x02F: ("AUTH_UNAVAILABLE", "authValue or authPolicy is not available "
                                "for the selected entity"),
    0x030: ("REBOOT", "a _TPM_Init and Startup(CLEAR) is required"),
    0x031: ("UNBALANCED", "the protection algorithms (hash and symmetric) "
                          "are not reasonably balanced"),
    0x042: ("COMMAND_SIZE", "command size does not match the bytes sent"),
    0x043: ("COMMAND_CODE", "command code not supported"),
    0x044: ("AUTHSIZE", "the value of authorizationSize is out of range"),
    0x045: ("AUTH_CONTEXT", "use of an authorization session with a "
                            "context command or another command that "
                            "cannot have one"),
    0x046: ("NV_RANGE", "NV offset+size is out of range"),
    0x047: ("NV_SIZE", "requested allocation size is larger than allowed"),
    0x048: ("NV_LOCKED", "NV access locked"),
    0x049: ("NV_AUTHORIZATION", "NV access authorization fails in command "
                                "actions"),
    0x04A: ("NV_UNINITIALIZED", "an NV Index is used before being "
                                "initialized or its state could not be "
                                "restored"),
    0x04B: ("NV_SPACE", "insufficient space for NV allocation"),
    0x04C: ("NV_DEFINED", "NV Index or persistent object already defined"),
    0x050: ("BAD_CONTEXT", "context in TPM2_ContextLoad() is not valid"),
    0x051: ("CPHASH", "cpHash value already set or not correct for use"),
    0x052: ("PARENT", "handle for parent is not a valid parent"),
    0x053: ("NEEDS_TEST", "some function needs testing"),
    0x054: ("NO_RESULT", "an internal function cannot process a request "
                         "due to an unspecified problem"),
    0x055: ("SENSITIVE", "the sensitive area did not unmarshal correctly "
                         "after decryption"),
}

# (name, description) by the error number in bits 0-5 of format one.
_FMT1: dict[int, tuple[str, str]] = {
    0x001: ("ASYMMETRIC", "asymmetric algorithm not supported or not "
                          "correct"),
    0x002: ("ATTRIBUTES", "inconsistent attributes"),
    0x003: ("HASH", "hash algorithm not supported or not appropriate"),
    0x004: ("VALUE", "value is out of range or is not correct for the "
                     "context"),
    0x005: ("HIERARCHY", "hierarchy is not enabled or is not correct for "
                         "the use"),
    0x007: ("KEY_SIZE", "key size is not supported"),
    0x008: ("MGF", "mask generation function not supported"),
    0x009: ("MODE", "mode of operation not supported"),
    0x00A: ("TYPE", "the type of the value is not appropriate for the use"),
    0x00B: ("HANDLE", "the handle is not correct for the use"),
    0x00C: ("KDF", "unsupported key derivation function or function not "
                   "appropriate for use"),
    0x00D: ("RANGE", "value was out of allowed range"),
    0x00E: ("AUTH_FAIL", "the authorization HMAC check failed and DA "
                         "counter incremented"),
    0x00F: ("NONCE", "invalid nonce size or nonce value mismatch"),
    0x010: ("PP", "authorization requires assertion of PP"),
    0x012: ("SCHEME", "unsupported or incompatible scheme"),
    0x015: ("SIZE", "structure is the wrong size"),
    0x016: ("SYMMETRIC", "unsupported symmetric algorithm or key size, or "
                         "not appropriate for instance"),
    0x017: ("TAG", "incorrect structure tag"),
    0x018: ("SELECTOR", "union selector is incorrect"),
    0x01A: ("INSUFFICIENT", "the TPM was unable to unmarshal a value "
                            "because there were not enough octets in the "
                            "input buffer"),
    0x01B: ("SIGNATURE", "the signature is not valid"),
    0x01C: ("KEY", "key fields are not compatible with the selected use"),
    0x01D: ("POLICY_FAIL", "a policy check failed"),
    0x01F: ("INTEGRITY", "integrity check failed"),
    0x020: ("TICKET", "invalid ticket"),
    0x021: ("RESERVED_BITS", "reserved bits not set to zero as required"),
    0x022: ("BAD_AUTH", "authorization failure without DA implications"),
    0x023: ("EXPIRED", "the policy has expired"),
    0x024: ("POLICY_CC", "the commandCode in the policy is not the "
                         "commandCode of the command or the command code "
                         "in a policy command references a command that "
                         "is not implemented"),
    0x025: ("BINDING", "public and sensitive portions of an object are "
                       "not cryptographically bound"),
    0x026: ("CURVE", "curve not supported"),
    0x027: ("ECC_POINT", "point is not on the required curve"),
}

# (name, description) by the error number in bits 0-6 of a warning.
_WARN: dict[int, tuple[str, str]] = {
    0x001: ("CONTEXT_GAP", "gap for context ID is too large"),
    0x002: ("OBJECT_MEMORY", "out of memory for object contexts: flush "
                             "transient objects"),
    0x003: ("SESSION_MEMORY", "out of memory for session contexts: flush "
                              "sessions"),
    0x004: ("MEMORY", "out of shared object/session memory or need space "
                      "for internal operations"),
    0x005: ("SESSION_HANDLES", "out of session handles"),
    0x006: ("OBJECT_HANDLES", "out of object handles"),
    0x007: ("LOCALITY", "bad locality"),
    0x008: ("YIELDED", "the TPM has suspended operation on the command"),
    0x009: ("CANCELED", "the command was canceled"),
    0x00A: ("TESTING", "TPM is performing self-tests"),
    0x020: ("NV_RATE", "the TPM is rate-limiting accesses to prevent "
                       "wearout of NV"),
    0x021: ("LOCKOUT", "authorizations for objects subject to DA "
                       "protection are not allowed at this time because "
                       "the TPM is in DA lockout mode"),
    0x022: ("RETRY", "the TPM was not able to start the command"),
    0x023: ("NV_UNAVAILABLE", "the command may require writing of NV and "
                              "NV is not current accessible"),
    0x07F: ("NOT_USED", "this value is reserved and shall not be returned "
                        "by the TPM"),
}
for _n in range(7):
    _WARN[0x010 + _n] = ("REFERENCE_H%d" % _n,
                         "handle %d references a transient object or "
                         "session that is not loaded" % _n)
    _WARN[0x018 + _n] = ("REFERENCE_S%d" % _n,
                         "session %d references a session that is not "
                         "loaded" % _n)
del _n

# Warnings after which the same command may simply be sent again.
_RETRYABLE_WARNINGS = frozenset({0x008, 0x009, 0x00A, 0x020, 0x022})

# TSS2 base error codes shared by every non-TPM layer (tss2_common.h).
_TSS2_BASE: dict[int, tuple[str, str]] = {
    1: ("GENERAL_FAILURE", "catch-all for otherwise unspecified errors"),
    2: ("NOT_IMPLEMENTED", "the function is not implemented"),
    3: ("BAD_CONTEXT", "a context structure is bad"),
    4: ("ABI_MISMATCH", "passed-in ABI version does not match the called "
                        "module's"),
    5: ("BAD_REFERENCE", "a pointer is NULL that isn't allowed to be NULL"),
    6: ("INSUFFICIENT_BUFFER", "a buffer is not large enough"),
    7: ("BAD_SEQUENCE", "function called in the wrong order"),
    8: ("NO_CONNECTION", "fails to connect to the next lower layer"),
    9: ("TRY_AGAIN", "operation timed out; function must be called again"),
    10: ("IO_ERROR", "IO failure"),
    11: ("BAD_VALUE", "a parameter has a bad value"),
    12: ("NOT_PERMITTED", "operation not permitted"),
    13: ("INVALID_SESSIONS", "session structures were sent, but the "
                             "command doesn't use them or doesn't use the "
                             "specified number of them"),
    14: ("NO_DECRYPT_PARAM", "the command has no decrypt parameter"),
    15: ("NO_ENCRYPT_PARAM", "the command has no encrypt parameter"),
    16: ("BAD_SIZE", "a size parameter is bad"),
    17: ("MALFORMED_RESPONSE", "the response is malformed"),
    18: ("INSUFFICIENT_CONTEXT", "context not large enough"),
    19: ("INSUFFICIENT_RESPONSE", "response is not long enough"),
    20: ("INCOMPATIBLE_TCTI", "unknown or unusable TCTI version"),
    21: ("NOT_SUPPORTED", "functionality not supported"),
    22: ("BAD_TCTI_STRUCTURE", "TCTI context is bad"),
    23: ("MEMORY", "memory allocation failed"),
    24: ("BAD_TR", "invalid ESYS_TR handle"),
    25: ("MULTIPLE_DECRYPT_SESSIONS", "more than one session with "
                                      "TPMA_SESSION_DECRYPT bit set"),
    26: ("MULTIPLE_ENCRYPT_SESSIONS", "more than one session with "
                                      "TPMA_SESSION_ENCRYPT bit set"),
    27: ("RSP_AUTH_FAILED", "the TPM's response authorization did not "
                            "verify"),
    28: ("NO_CONFIG", "no config is available"),
    29: ("BAD_PATH", "the provided path is bad"),
    30: ("NOT_DELETABLE", "the object is not deletable"),
    31: ("PATH_ALREADY_EXISTS", "the provided path already exists"),
}


@dataclass(frozen=True)
class DecodedRC:
    """The parts of one response code. ``base`` is the code with the
    handle/parameter/session number stripped, so it can be compared with
    the ``TPM_RC_*`` constants of this module."""

    rc: int
    layer: int
    layer_name: str
    name: str
    description: str
    base: int
    format_one: bool = False
    warning: bool = False
    vendor: bool = False
    tpm12: bool = False
    parameter: int | None = None
    handle: int | None = None
    session: int | None = None

    @property
    def retryable(self) -> bool:
        """True for warnings after which resending the command may work."""
        return (self.layer == 0 and self.warning
                and (self.base & 0x7F) in _RETRYABLE_WARNINGS)

    @property
    def is_lockout(self) -> bool:
        return self.layer == 0 and self.base == TPM_RC_LOCKOUT

    def __str__(self) -> str:
        where = ""
        if self.parameter is not None:
            where = ", parameter %d" % self.parameter
        elif self.handle is not None:
            where = ", handle %d" % self.handle
        elif self.session is not None:
            where = ", session %d" % self.session
        kind = "warning" if self.warning else "error"
        return "%s %s %s: %s%s" % (self.layer_name, kind, self.name,
                                   self.description, where)


def decode_rc(rc: int) -> DecodedRC:
    """Split a TSS2/TPM response code into its named parts.

    Unknown error numbers are decoded structurally and named
    ``UNKNOWN(0x..)`` rather than refused: the code comes from a device we
    do not control and must still be reported.
    """
    if isinstance(rc, bool) or not isinstance(rc, int):
        raise TypeError("rc must be an int, not %s" % type(rc).__name__)
    if not 0 <= rc <= 0xFFFFFFFF:
        raise ValueError("rc must be a 32-bit unsigned value, got %r" % rc)
    layer = (rc >> 16) & 0xFF
    layer_name = _LAYERS.get(layer, "layer-%d" % layer)
    code = rc & 0xFFFF
    if layer not in (0, 12):
        name, text = _TSS2_BASE.get(
            code, ("UNKNOWN(%#x)" % code, "unknown TSS2 error"))
        return DecodedRC(rc=rc, layer=layer, layer_name=layer_name,
                         name="TSS2_BASE_RC_" + name, description=text,
                         base=code)
    if code == TPM_RC_SUCCESS:
        return DecodedRC(rc=rc, layer=layer, layer_name=layer_name,
                         name="TPM_RC_SUCCESS", description="success",
                         base=0)
    if code & RC_FMT1:
        return _decode_format_one(rc, layer, layer_name, code)
    return _decode_format_zero(rc, layer, layer_name, code)


def _decode_format_one(rc: int, layer: int, layer_name: str,
                       code: int) -> DecodedRC:
    number = code & 0x3F
    name, text = _FMT1.get(number, ("UNKNOWN(%#x)" % number,
                                    "unknown format-one error"))
    parameter = handle = session = None
    n = (code >> 8) & 0xF
    # Number 0 means "not tied to a handle, parameter or session".
    if code & 0x40:
        parameter = n or None
    elif code & 0x800:
        session = (n & 0x7) or None
    else:
        handle = (n & 0x7) or None
    return DecodedRC(rc=rc, layer=layer, layer_name=layer_name,
                     name="TPM_RC_" + name, description=text,
                     base=RC_FMT1 + number, format_one=True,
                     parameter=parameter, handle=handle, session=session)


def _decode_format_zero(rc: int, layer: int, layer_name: str,
                        code: int) -> DecodedRC:
    number = code & 0x7F
    if not code & RC_VER1:
        return DecodedRC(rc=rc, layer=layer, layer_name=layer_name,
                         name="TPM12_RC(%#x)" % code,
                         description="a TPM 1.2 response code", base=code,
                         tpm12=True)
    vendor = bool(code & 0x400)
    warning = bool(code & 0x800)
    if vendor:
        name, text = "VENDOR(%#x)" % number, "TPM vendor-specific code"
    elif warning:
        name, text = _WARN.get(number, ("UNKNOWN(%#x)" % number,
                                        "unknown warning"))
    else:
        name, text = _FMT0.get(number, ("UNKNOWN(%#x)" % number,
                                        "unknown format-zero error"))
    return DecodedRC(rc=rc, layer=layer, layer_name=layer_name,
                     name="TPM_RC_" + name, description=text,
                     base=code & 0xFFF, warning=warning, vendor=vendor)


def describe_rc(rc: int) -> str:
    """One line for logs and error messages, e.g. ``tpm warning
    TPM_RC_OBJECT_MEMORY: out of memory for object contexts...``."""
    return str(decode_rc(rc))
