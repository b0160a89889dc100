"""A bootable test guest: a Debian kernel and an initramfs made at test time.

* :func:`kernel` returns the ``vmlinuz`` of Debian's ``linux-image-amd64``
  (its versioned dependency, e.g. ``linux-image-6.1.0-57-amd64``), fetched
  with ``apt-get download`` and unpacked into the cache directory; nothing
  is installed system-wide. ``TP_GUEST_KERNEL=/path/to/vmlinuz`` uses that
  kernel instead. Debian 12's kernel has the TPM CRB and TIS drivers built
  in (``CONFIG_TCG_CRB=y``), so the initramfs carries no modules; a kernel
  that has them as modules is refused with that reason.
* :func:`initramfs` builds a gzip'd cpio (newc) with busybox (static),
  ``tpm2_quote``/``tpm2_pcrread`` (and the PCR-extend and NV tools the
  live-migration guest uses) with every shared library ``ldd`` names
  plus the device TCTI (dlopen'ed, so ``ldd`` cannot see it), the product's
  guest attester (``trusted_pools/guest/attest.sh``) and ``init.sh`` from
  this directory as ``/init``. The archive is deterministic (mtime 0, owner
  root) and cached under a name derived from its contents, so it is built
  once per change of any of its inputs.

Cache directory: ``$TP_GUEST_CACHE``, else ``$XDG_CACHE_HOME/trusted_pools/
guest``, else ``~/.cache/trusted_pools/guest`` (never inside the checkout).

A missing part raises :class:`GuestPartMissing` naming the part and the
Debian package that provides it; tests turn it into a failure, not a skip.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

from trusted_pools import guest as product_guest

HERE = Path(__file__).resolve().parent
INIT_SCRIPT = HERE / "init.sh"
KERNEL_META_PACKAGES = ("linux-image-amd64", "linux-image-generic")
# Tools the initramfs carries; Debian ships them as symlinks to one binary.
GUEST_TOOLS = ("tpm2_quote", "tpm2_pcrread", "tpm2_pcrextend", "tpm2_nvdefine",
               "tpm2_nvwrite", "tpm2_nvread")
TCTI_LIBRARY = "libtss2-tcti-device.so.0"
LIBRARY_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
                "/lib64", "/usr/lib64", "/lib", "/usr/lib")
BUSYBOX_PATHS = ("/bin/busybox", "/usr/bin/busybox")
# The kernel config options the guest needs, built in.
REQUIRED_KERNEL_CONFIG = ("CONFIG_TCG_TPM", "CONFIG_TCG_CRB",
                          "CONFIG_SECURITYFS", "CONFIG_DEVTMPFS",
                          "CONFIG_SERIAL_8250_CONSOLE", "CONFIG_RD_GZIP",
                          "CONFIG_EFI_STUB")


class GuestPartMissing(RuntimeError):
    """Something the test guest needs is not on this machine."""


def cache_dir() -> Path:
    base = os.environ.get("TP_GUEST_CACHE")
    if base:
        path = Path(base)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or \
            os.path.join(os.path.expanduser("~"), ".cache")
        path = Path(xdg) / "trusted_pools" / "guest"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run(argv: list[str], what: str, cwd: Path | None = None,
         timeout: float = 300) -> str:
    try:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except FileNotFoundError:
        raise GuestPartMissing("%s: %s is not installed" % (what, argv[0])) \
            from None
    except subprocess.TimeoutExpired:
        raise GuestPartMissing("%s: timed out after %ss" % (what, timeout)) \
            from None
    if proc.returncode != 0:
        raise GuestPartMissing("%s failed (exit %d): %s" % (
            what, proc.returncode, (proc.stderr or proc.stdout)[-1500:]))
    return proc.stdout


# --- the kernel ------------------------------------------------------------

def kernel_package() -> str:
    """The versioned package behind linux-image-amd64 (Debian) or
    linux-image-generic (Ubuntu), as apt sees it."""
    for meta in KERNEL_META_PACKAGES:
        proc = subprocess.run(["apt-cache", "depends", meta],
                              capture_output=True, text=True, timeout=60)
        for line in proc.stdout.splitlines():
            match = re.match(r"\s*Depends:\s*(linux-image-\S+)", line)
            if match:
                return match.group(1)
    raise GuestPartMissing(
        "apt knows none of %s (run apt-get update): the guest kernel comes "
        "from there (or set TP_GUEST_KERNEL=/path/to/vmlinuz)"
        % ", ".join(KERNEL_META_PACKAGES))


def kernel() -> Path:
    """Path of the guest kernel (see the module docstring)."""
    override = os.environ.get("TP_GUEST_KERNEL")
    if override:
        path = Path(override)
        if not path.is_file():
            raise GuestPartMissing("TP_GUEST_KERNEL=%s is not a file"
                                   % override)
        return path
    cache = cache_dir()
    cached = sorted(cache.glob("vmlinuz-*"))
    if cached:
        return cached[-1]
    package = kernel_package()
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        work = Path(tmp)
        # apt-get download as root warns that _apt cannot write here; the
        # download itself works.
        _run(["apt-get", "download", "-q", package],
             "apt-get download %s" % package, cwd=work)
        debs = list(work.glob("*.deb"))
        if len(debs) != 1:
            raise GuestPartMissing("apt-get download %s left %d .deb files"
                                   % (package, len(debs)))
        tree = work / "x"
        tree.mkdir()
        # Only /boot is needed: unpacking all modules takes seconds.
        tar = subprocess.run(
            "dpkg-deb --fsys-tarfile %s | tar -x -C %s --wildcards "
            "'./boot/vmlinuz-*' './boot/config-*'"
            % (_quote(debs[0]), _quote(tree)),
            shell=True, capture_output=True, text=True, timeout=300)
        if tar.returncode != 0:
            raise GuestPartMissing("unpacking %s failed: %s"
                                   % (debs[0].name, tar.stderr[-1000:]))
        vmlinuz = next((tree / "boot").glob("vmlinuz-*"), None)
        config = next((tree / "boot").glob("config-*"), None)
        if vmlinuz is None or config is None:
            raise GuestPartMissing("%s has no /boot/vmlinuz-*" % package)
        _check_kernel_config(config.read_text())
        version = vmlinuz.name[len("vmlinuz-"):]
        shutil.copyfile(config, cache / ("config-" + version))
        target = cache / vmlinuz.name
        os.replace(vmlinuz, target)
    return target


def _check_kernel_config(config: str) -> None:
    values = dict(re.findall(r"^(CONFIG_\w+)=(\S+)$", config, re.M))
    wrong = [name for name in REQUIRED_KERNEL_CONFIG
             if values.get(name) != "y"]
    if wrong:
        raise GuestPartMissing(
            "the guest kernel lacks built-in %s (this initramfs carries no "
            "modules)" % ", ".join(wrong))


def _quote(path: Path) -> str:
    return shlex.quote(str(path))


# --- the initramfs ---------------------------------------------------------

def _find_busybox() -> Path:
    for candidate in BUSYBOX_PATHS:
        if Path(candidate).is_file():
            return Path(candidate)
    raise GuestPartMissing("busybox not found; install with: "
                           "apt-get install -y busybox-static")


def _find_library(name: str) -> Path:
    for directory in LIBRARY_DIRS:
        path = Path(directory) / name
        if path.exists():
            return path
    raise GuestPartMissing("%s not found; install with: apt-get install -y "
                           "libtss2-tcti-device0" % name)


def _shared_libraries(binary: Path) -> dict[str, Path]:
    """soname -> path, from ldd (the loader itself included)."""
    proc = subprocess.run(["ldd", str(binary)], capture_output=True,
                          text=True, timeout=60, check=False)
    if "not a dynamic executable" in proc.stdout + proc.stderr:
        return {}  # static (busybox-static)
    if proc.returncode != 0:
        raise GuestPartMissing("ldd %s failed: %s" % (binary, proc.stderr))
    out = proc.stdout
    libraries: dict[str, Path] = {}
    for line in out.splitlines():
        line = line.strip()
        match = re.match(r"(\S+) => (/\S+) \(", line)
        if match:
            libraries[match.group(1)] = Path(match.group(2))
            continue
        match = re.match(r"(/\S+) \(", line)
        if match:  # the dynamic loader
            libraries[match.group(1)] = Path(match.group(1))
        elif "not found" in line:
            raise GuestPartMissing("ldd %s: %s" % (binary, line))
    return libraries


def initramfs_files() -> dict[str, tuple[int, bytes | str]]:
    """Archive path -> (mode, content bytes, or a symlink target str)."""
    files: dict[str, tuple[int, bytes | str]] = {}

    def add_file(arcname: str, source: Path, mode: int = 0o755) -> None:
        files[arcname] = (stat.S_IFREG | mode, source.read_bytes())

    busybox = _find_busybox()
    add_file("bin/busybox", busybox)
    files["bin/sh"] = (stat.S_IFLNK | 0o777, "busybox")
    tools = []
    for tool in GUEST_TOOLS:
        found = shutil.which(tool)
        if found is None:
            raise GuestPartMissing("%s not found; install with: apt-get "
                                   "install -y tpm2-tools" % tool)
        tools.append(Path(found).resolve())
    for binary in sorted(set(tools)):
        add_file("usr/bin/" + binary.name, binary)
    for tool, binary in zip(GUEST_TOOLS, tools):
        if binary.name != tool:
            files["usr/bin/" + tool] = (stat.S_IFLNK | 0o777, binary.name)
    tcti = _find_library(TCTI_LIBRARY)
    libraries: dict[str, Path] = {}
    for binary in sorted(set(tools)) + [tcti, busybox]:
        libraries.update(_shared_libraries(binary))
    libraries[TCTI_LIBRARY] = tcti
    for soname, path in sorted(libraries.items()):
        if soname.startswith("/"):  # the loader, at its absolute path
            add_file(soname.lstrip("/"), path.resolve())
        else:
            add_file("lib/" + soname, path.resolve())
    add_file("usr/bin/tp-attest", product_guest.ATTEST_SCRIPT)
    add_file("init", INIT_SCRIPT)
    return files


def _directories(paths: list[str]) -> list[str]:
    dirs = {"dev", "proc", "sys", "tmp", "run"}
    for path in paths:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    return sorted(dirs)


def _cpio_entry(out: io.BytesIO, ino: int, name: str, mode: int,
                data: bytes) -> None:
    encoded = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
    out.write(b"070701" + b"".join(b"%08X" % f for f in fields))
    out.write(encoded)
    out.write(b"\0" * (-(110 + len(encoded)) % 4))
    out.write(data)
    out.write(b"\0" * (-len(data) % 4))


def cpio_newc(files: dict[str, tuple[int, bytes | str]]) -> bytes:
    """A cpio archive (newc, the format the kernel unpacks) of ``files``,
    parent directories included, deterministic."""
    out = io.BytesIO()
    ino = 1
    for directory in _directories(list(files)):
        _cpio_entry(out, ino, directory, stat.S_IFDIR | 0o755, b"")
        ino += 1
    for name in sorted(files):
        mode, content = files[name]
        data = content.encode() if isinstance(content, str) else content
        _cpio_entry(out, ino, name, mode, data)
        ino += 1
    _cpio_entry(out, 0, "TRAILER!!!", 0, b"")
    return out.getvalue()


def initramfs() -> Path:
    """Path of the cached initramfs for the current inputs (built when
    missing)."""
    files = initramfs_files()
    key = hashlib.sha256()
    for name in sorted(files):
        mode, content = files[name]
        data = content.encode() if isinstance(content, str) else content
        key.update(b"%s\0%o\0%d\0" % (name.encode(), mode, len(data)))
        key.update(data)
    target = cache_dir() / ("initramfs-%s.cpio.gz" % key.hexdigest()[:20])
    if target.exists():
        return target
    archive = gzip.compress(cpio_newc(files), compresslevel=6, mtime=0)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as handle:
        handle.write(archive)
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
    return target
