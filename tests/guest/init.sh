#!/bin/sh
# /init of the test guest's initramfs (tests/guest/image.py builds it).
# Reads tp.nonce=<hex>, tp.ak=<handle>, tp.pcrs=<selection> from the kernel
# command line, runs the product's guest attester (trusted_pools/guest/
# attest.sh, here /usr/bin/tp-attest) and powers the guest off. Everything
# it prints goes to the serial console, where the test reads it.
/bin/busybox --install -s /bin
export PATH=/usr/bin:/bin LD_LIBRARY_PATH=/lib
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
mount -t tmpfs tmpfs /tmp

nonce=""
ak=""
pcrs="sha256:0,1,2,3,4,5,6,7"
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        tp.nonce=*) nonce="${arg#tp.nonce=}" ;;
        tp.ak=*) ak="${arg#tp.ak=}" ;;
        tp.pcrs=*) pcrs="${arg#tp.pcrs=}" ;;
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
tp-attest -n "$nonce" -k "$ak" -l "$pcrs"
echo "TP-GUEST-OFF $(cut -d' ' -f1 /proc/uptime)"
sync
poweroff -f
