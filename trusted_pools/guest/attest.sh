#!/bin/sh
# trusted_pools guest attester: quote this guest's vTPM over a verifier's
# nonce and print the evidence as text blocks on standard output.
#
# It runs inside the guest (POSIX sh, busybox is enough) and needs
# tpm2-tools (tpm2_quote) with the device TCTI (libtss2-tcti-device). The
# verifier gives the nonce and the handle of the guest's persistent AK;
# nothing in the guest is trusted by the verifier: the blocks are checked
# against the AK public the verifier recorded (signature, nonce = extraData,
# PCR digest) and, for the event log, replayed against the quoted PCRs.
#
# Usage:
#   attest.sh -n NONCE_HEX -k AK_HANDLE [-l PCR_SELECTION] [-T TCTI] [-E]
#     -n  the verifier's nonce, hex (at most 64 bytes)
#     -k  persistent handle of the AK, e.g. 0x81008001
#     -l  tpm2-tools PCR selection (default sha256:0,1,2,3,4,5,6,7)
#     -T  TCTI (default: device:/dev/tpmrm0, else device:/dev/tpm0)
#     -E  leave out the firmware event log
#
# Output (each block's body is base64, any line length):
#   TP-ATTEST-BEGIN <name>
#   ...
#   TP-ATTEST-END <name>
# for <name> in quote-msg (TPMS_ATTEST), quote-sig (TPMT_SIGNATURE),
# quote-pcrs (tpm2_quote -o: the quoted PCR values) and eventlog (the
# firmware's TCG event log, when the kernel exposes it), then
#   TP-ATTEST-DONE 0
# or, on failure, "TP-ATTEST-ERROR <message>" and "TP-ATTEST-DONE <rc>".
# The exit status is that rc.

set -u

nonce=""
ak=""
pcrs="sha256:0,1,2,3,4,5,6,7"
tcti=""
eventlog=1

fail() {
    echo "TP-ATTEST-ERROR $2"
    echo "TP-ATTEST-DONE $1"
    exit "$1"
}

while getopts "n:k:l:T:E" opt; do
    case "$opt" in
        n) nonce="$OPTARG" ;;
        k) ak="$OPTARG" ;;
        l) pcrs="$OPTARG" ;;
        T) tcti="$OPTARG" ;;
        E) eventlog=0 ;;
        *) fail 2 "usage: attest.sh -n NONCE_HEX -k AK_HANDLE [-l PCRS] [-T TCTI] [-E]" ;;
    esac
done

case "$nonce" in
    "" | *[!0-9a-fA-F]*) fail 2 "the nonce (-n) must be hex" ;;
esac
[ $(( ${#nonce} % 2 )) -eq 0 ] && [ "${#nonce}" -le 128 ] \
    || fail 2 "the nonce (-n) must be whole bytes, at most 64"
case "$ak" in
    0x81[0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F]) ;;
    *) fail 2 "the AK (-k) must be a persistent handle 0x81xxxxxx" ;;
esac

if [ -z "$tcti" ]; then
    if [ -c /dev/tpmrm0 ]; then tcti="device:/dev/tpmrm0"
    elif [ -c /dev/tpm0 ]; then tcti="device:/dev/tpm0"
    else fail 3 "no TPM device (/dev/tpmrm0, /dev/tpm0)"
    fi
fi
command -v tpm2_quote >/dev/null 2>&1 || fail 3 "tpm2_quote not found"

work="$(mktemp -d)" || fail 4 "mktemp failed"
trap 'rm -rf "$work"' EXIT

if ! TPM2TOOLS_TCTI="$tcti" tpm2_quote -c "$ak" -l "$pcrs" -q "$nonce" \
        -m "$work/msg" -s "$work/sig" -o "$work/pcrs" -g sha256 \
        >"$work/out" 2>&1; then
    fail 5 "tpm2_quote failed: $(tr '\n' ' ' <"$work/out")"
fi

block() {
    echo "TP-ATTEST-BEGIN $1"
    base64 <"$2"
    echo "TP-ATTEST-END $1"
}

block quote-msg "$work/msg"
block quote-sig "$work/sig"
block quote-pcrs "$work/pcrs"
log=/sys/kernel/security/tpm0/binary_bios_measurements
if [ "$eventlog" = 1 ] && [ -r "$log" ]; then
    # securityfs files report size 0: copy before encoding.
    cat "$log" >"$work/eventlog" && block eventlog "$work/eventlog"
fi
echo "TP-ATTEST-DONE 0"
