#!/bin/sh
# /init of the test guest's initramfs (tests/guest/image.py builds it).
# Reads tp.nonce=<hex>, tp.ak=<handle>, tp.pcrs=<selection> from the kernel
# command line, runs the product's guest attester (trusted_pools/guest/
# attest.sh, here /usr/bin/tp-attest) and powers the guest off. Everything
# it prints goes to the serial console, where the test reads it.
#
# With tp.live=<64 hex digits> it is the live-migration guest instead: it
# extends PCR 23 with that value and writes its first 32 characters into
# the owner NV index 0x01500018 of its vTPM, then, once a second and for
# ever, reads both back from whatever vTPM it has now and prints
# "TP-LIVE <n> pcr23=<hex> nv=<text>" (a guest migrated to another host
# reads the destination's vTPM).
/bin/busybox --install -s /bin
export PATH=/usr/bin:/bin LD_LIBRARY_PATH=/lib
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
mount -t tmpfs tmpfs /tmp

nonce=""
ak=""
live=""
pcrs="sha256:0,1,2,3,4,5,6,7"
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        tp.nonce=*) nonce="${arg#tp.nonce=}" ;;
        tp.ak=*) ak="${arg#tp.ak=}" ;;
        tp.pcrs=*) pcrs="${arg#tp.pcrs=}" ;;
        tp.live=*) live="${arg#tp.live=}" ;;
    esac
done

# The CRB driver is built in, but its device node may appear a moment
# after /init starts.
i=0
while [ ! -c /dev/tpmrm0 ] && [ ! -c /dev/tpm0 ] && [ $i -lt 50 ]; do
    sleep 0.1
    i=$((i + 1))
done

echo "TP-GUEST-UP $(cut -d' ' -f1 /proc/uptime)"
if [ -n "$live" ]; then
    nv=0x01500018
    echo -n "$live" | head -c 32 >/tmp/marker
    tpm2_pcrextend "23:sha256=$live" \
        && tpm2_nvdefine -C o -s 32 -a "ownerread|ownerwrite" "$nv" >/dev/null \
        && tpm2_nvwrite -C o -i /tmp/marker "$nv" \
        && echo "TP-LIVE-MARKED"
    n=0
    while true; do
        pcr=$(tpm2_pcrread sha256:23 2>&1 | sed -n 's/.*23: 0x//p')
        text=$(tpm2_nvread -C o -s 32 "$nv" 2>/dev/null)
        echo "TP-LIVE $n pcr23=$pcr nv=$text"
        n=$((n + 1))
        sleep 1
    done
fi
tp-attest -n "$nonce" -k "$ak" -l "$pcrs"
echo "TP-GUEST-OFF $(cut -d' ' -f1 /proc/uptime)"
sync
poweroff -f
