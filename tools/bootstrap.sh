#!/usr/bin/env bash
# Prepare a fresh Debian/Ubuntu machine for trusted_pools: system packages
# (swtpm, tpm2-tools, libtss2 headers for tpm2-pytss), a virtualenv in .venv
# and the project installed into it. Safe to run again: it only does what is
# missing. Sourced by run-demo.sh and run-tests.sh.
set -euo pipefail

TP_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TP_VENV="${TP_VENV:-$TP_ROOT/.venv}"
TP_PYTHON="${TP_PYTHON:-python3}"

log() { printf '[bootstrap] %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"
    else return 1
    fi
}

need_system_packages() {
    local missing=()
    command -v swtpm >/dev/null 2>&1 || missing+=(swtpm)
    command -v swtpm_setup >/dev/null 2>&1 || missing+=(swtpm-tools)
    command -v tpm2_quote >/dev/null 2>&1 || missing+=(tpm2-tools)
    [ -e /usr/include/tss2/tss2_esys.h ] || missing+=(libtss2-dev)
    # tests/unit/test_devstack_phases.py keeps the devstack plugin clean.
    command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
    "$TP_PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1 \
        || missing+=(python3-venv)
    printf '%s\n' "${missing[@]}"
}

# The real-guest tests (tests/functional/vtpm/test_guest_*.py) boot OVMF and
# a Debian kernel under QEMU (TCG) on a vTPM. Installed without recommends:
# qemu-system-x86's recommends pull in ~150 GUI and media packages that a
# headless guest does not use. The kernel is not installed: the tests fetch
# linux-image-amd64's vmlinuz with apt-get download into their cache
# (tests/guest/image.py), which needs the apt lists.
need_guest_packages() {
    local missing=()
    command -v qemu-system-x86_64 >/dev/null 2>&1 || missing+=(qemu-system-x86)
    [ -e /usr/share/OVMF/OVMF_CODE_4M.fd ] || [ -e /usr/share/OVMF/OVMF_CODE.fd ] \
        || missing+=(ovmf)
    [ -x /bin/busybox ] || [ -x /usr/bin/busybox ] || missing+=(busybox-static)
    printf '%s\n' "${missing[@]}"
}

install_guest_packages() {
    local missing
    missing="$(need_guest_packages)"
    if [ -z "$missing" ]; then
        # apt-get download of the guest kernel needs package lists.
        apt-cache show linux-image-amd64 >/dev/null 2>&1 \
            || apt-cache show linux-image-generic >/dev/null 2>&1 \
            || as_root apt-get update -qq || true
        return 0
    fi
    log "installing the real-guest test packages: $(echo $missing)"
    # shellcheck disable=SC2086
    if ! as_root apt-get update -qq \
        || ! as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends $missing >/dev/null; then
        log "could not install: $(echo $missing)."
        log "run as root: apt-get install -y --no-install-recommends $(echo $missing)"
        return 1
    fi
}

# The dashboard's browser test (tests/functional/api/test_dashboard_browser.py)
# drives Debian's Chromium headless through Playwright (PyPI); Playwright's
# own browser downloads are never used. Fonts so that pages render text.
need_browser_packages() {
    local missing=()
    [ -x /usr/bin/chromium ] || missing+=(chromium)
    [ -d /usr/share/fonts/truetype/liberation ] || missing+=(fonts-liberation)
    printf '%s\n' "${missing[@]}"
}

install_browser_packages() {
    local missing
    missing="$(need_browser_packages)"
    [ -z "$missing" ] && return 0
    log "installing the dashboard test's browser: $(echo $missing)"
    # shellcheck disable=SC2086
    if ! as_root apt-get update -qq \
        || ! as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends $missing >/dev/null; then
        log "could not install: $(echo $missing)."
        log "run as root: apt-get install -y --no-install-recommends $(echo $missing)"
        return 1
    fi
}

install_system_packages() {
    local missing
    missing="$(need_system_packages)"
    [ -z "$missing" ] && return 0
    log "installing system packages: $(echo $missing)"
    # shellcheck disable=SC2086
    if ! as_root apt-get update -qq \
        || ! as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq $missing >/dev/null; then
        log "could not install: $(echo $missing)."
        log "run as root: apt-get install -y $(echo $missing)"
        return 1
    fi
}

make_venv() {
    if [ ! -x "$TP_VENV/bin/python" ]; then
        log "creating virtualenv $TP_VENV"
        "$TP_PYTHON" -m venv "$TP_VENV"
        "$TP_VENV/bin/pip" install -q --upgrade pip
    fi
}

install_project() {
    local stamp="$TP_VENV/.trusted-pools-installed"
    local newest
    newest="$(cd "$TP_ROOT" && ls -t setup.cfg requirements.txt \
        test-requirements.txt pyproject.toml | head -1)"
    if [ -f "$stamp" ] && [ "$stamp" -nt "$TP_ROOT/$newest" ]; then
        return 0
    fi
    log "installing trusted_pools and its dependencies into $TP_VENV"
    # pbr takes the version from git; a tarball checkout has no history.
    if ! git -C "$TP_ROOT" rev-parse HEAD >/dev/null 2>&1; then
        export PBR_VERSION="${PBR_VERSION:-0.0.0}"
    fi
    "$TP_VENV/bin/pip" install -q -r "$TP_ROOT/requirements.txt" \
        -r "$TP_ROOT/test-requirements.txt" 2>&1 | grep -v '^WARNING: Location' || true
    "$TP_VENV/bin/pip" install -q -e "$TP_ROOT" 2>&1 \
        | grep -v '^WARNING: Location' || true
    "$TP_VENV/bin/python" -c 'import trusted_pools, tpm2_pytss' \
        || { log "installation failed; see the pip output above"; return 1; }
    touch "$stamp"
}

install_system_packages
install_guest_packages
install_browser_packages
make_venv
install_project
