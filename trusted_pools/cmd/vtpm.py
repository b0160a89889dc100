"""``trusted-pools-vtpm``: this compute host's vTPMs, from the host itself.

What a hypervisor hook or an operator on the compute host runs: create,
start, stop and destroy an instance's vTPM, list and show them, and print
what a hypervisor needs to attach one (the libvirt ``<tpm>`` element or the
QEMU arguments). It reads the agent's configuration (``--config-file``) and
loads the same driver (``[vtpm] driver``) on the same state directory.
``start`` applies the agent's migration epoch rules from its journal
(``[vtpm] migration_journal_dir``, read only): a stale copy or one whose
migration never committed here does not run.

A new vTPM gets an attestation key certified by the host's vTPM CA, as the
agent's do (:class:`trusted_pools.vtpm.binding.Provisioner`): the host must
be enrolled (its AK at ``[tpm] ak_handle``). This command opens the host
TPM itself; on a TPM without a resource manager (swtpm) that serves one
connection at a time, run it while the agent is stopped. It never adopts or
reaps swtpm processes: that is the agent's job at its start.

Exit status: 0 when what was asked succeeded; 1 when it failed (no such
vTPM, a vTPM in the wrong state, a state that does not decrypt on this
host, the host TPM unreachable); 2 for bad usage (an argument that is not
an instance UUID; argparse's own usage errors). Errors are one line on
standard error, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import Any, Callable, Sequence, TextIO

from oslo_config import cfg

from trusted_pools import cmd
from trusted_pools import exception
from trusted_pools.conf import CONF
from trusted_pools.vtpm import driver as vtpm_driver

PROG = "trusted-pools-vtpm"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

DriverFactory = Callable[[cfg.ConfigOpts], vtpm_driver.VTPMDriver]

_TABLE_FORMATS = ("table", "json")
_ATTACH_FORMATS = ("libvirt", "qemu", "json")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run this compute host's vTPMs (one per instance, its "
                    "state sealed to the host's TPM) with the driver of "
                    "[vtpm] driver, and print how a hypervisor attaches "
                    "one.")
    cmd.add_config_arguments(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    def command(name: str, help_text: str, run: Callable[..., int],
                with_uuid: bool = True,
                formats: Sequence[str] | None = _TABLE_FORMATS
                ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text,
                                  description=help_text)
        if with_uuid:
            sub.add_argument("uuid", metavar="UUID",
                             help="the Nova instance UUID")
        if formats:
            sub.add_argument("--format", choices=formats,
                             default=formats[0],
                             help="output format (default: %s)" % formats[0])
        sub.set_defaults(run=run)
        return sub

    command("create", "Make a stopped vTPM for an instance (EK and "
            "platform certificates, an AK certified by this host's vTPM "
            "CA).", _create)
    command("start", "Run the instance's vTPM so that a hypervisor can "
            "connect to it (a running one is left alone; a failed one runs "
            "again on its state).", _start)
    command("stop", "Shut the instance's vTPM down gracefully (its state "
            "is saved).", _stop)
    command("destroy", "Stop the instance's vTPM if it runs and erase its "
            "state and key.", _destroy)
    command("list", "Every vTPM on this host and its state.", _list,
            with_uuid=False)
    command("show", "One vTPM: state, process, socket, metadata.", _show)
    attach = command(
        "attach", "What a hypervisor needs to attach the instance's vTPM: "
        "the libvirt <tpm> element (external backend) or the QEMU "
        "arguments.", _attach, formats=None)
    attach.add_argument("--format", choices=_ATTACH_FORMATS,
                        default="libvirt",
                        help="libvirt: the domain's <tpm> element; qemu: "
                             "the qemu-system arguments (one shell-quoted "
                             "line); json: both (default: libvirt)")
    attach.add_argument("--model", choices=("tpm-crb", "tpm-tis"),
                        default="tpm-crb",
                        help="the TPM device the guest sees "
                             "(default: tpm-crb)")
    return parser


def load_config(args: argparse.Namespace) -> cfg.ConfigOpts:
    """Load the oslo.config files named on the command line (or the
    defaults)."""
    cli: list[str] = []
    for path in args.config_file or ():
        cli += ["--config-file", path]
    if args.config_dir:
        cli += ["--config-dir", args.config_dir]
    CONF(cli, project="trusted-pools", prog=PROG,
         validate_default_values=True)
    return CONF


def default_driver(conf: cfg.ConfigOpts) -> vtpm_driver.VTPMDriver:
    """The driver of ``[vtpm] driver``, with the host's vTPM CA as its
    provisioner, opening the host TPM for each use."""
    from trusted_pools.tpm import device as tpm_device
    from trusted_pools.vtpm import binding

    tcti = conf.vtpm.host_tcti or conf.tpm.tcti
    try:
        ak_handle = int(conf.tpm.ak_handle, 16)
    except ValueError:
        raise exception.ConfigInvalid(
            reason="[tpm] ak_handle %r is not a hexadecimal handle"
            % conf.tpm.ak_handle) from None
    ca = binding.HostCA(conf.agent.host,
                        lambda: tpm_device.TPMDevice(tcti),
                        ak_handle=ak_handle)
    # recover=False: adopting and reaping is the agent's, at its start; a
    # one-shot command doing it could kill a vTPM the agent is creating.
    return vtpm_driver.load_driver(
        conf.vtpm.driver, conf=conf, recover=False,
        provisioner=binding.Provisioner(ca))


def main(argv: Sequence[str] | None = None, *,
         driver_factory: DriverFactory | None = None,
         out: TextIO | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out = out if out is not None else sys.stdout
    if getattr(args, "uuid", None) is not None:
        try:
            args.uuid = vtpm_driver.canonical_uuid(args.uuid)
        except exception.InvalidParameterValue:
            return _fail(EXIT_USAGE, "%r is not an instance UUID"
                         % args.uuid)
    try:
        conf = load_config(args)
    except cfg.Error as error:
        return _fail(EXIT_USAGE, "configuration error: %s"
                     % _one_line(error))
    try:
        driver = (driver_factory or default_driver)(conf)
        return args.run(driver, args, out)
    except cfg.Error as error:
        # oslo.config checks a value when it is first read.
        return _fail(EXIT_USAGE, "configuration error: %s"
                     % _one_line(error))
    except exception.TrustedPoolsError as error:
        return _fail(EXIT_FAILED, _one_line(error))
    except OSError as error:
        return _fail(EXIT_FAILED, "%s: %s" % (type(error).__name__,
                                              _one_line(error)))


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _fail(code: int, message: str) -> int:
    print("%s: error: %s" % (PROG, message), file=sys.stderr)
    return code


# --- output --------------------------------------------------------------


def _as_dict(info: vtpm_driver.VTPMInfo) -> dict[str, Any]:
    return {"instance_uuid": info.instance_uuid,
            "status": info.status.value, "migration": info.migration,
            "reason": info.reason,
            "pid": info.pid, "socket_path": info.socket_path,
            "metadata": dict(info.metadata)}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return " ".join(str(value).split())


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
           out: TextIO) -> None:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells])
              for i, h in enumerate(headers)]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in
                                 zip(values, widths)) + " |"
    print(rule, file=out)
    print(line(headers), file=out)
    print(rule, file=out)
    for row in cells:
        print(line(row), file=out)
    print(rule, file=out)


def _json(value: Any, out: TextIO) -> None:
    json.dump(value, out, indent=2, sort_keys=True)
    out.write("\n")


def _status_word(info: vtpm_driver.VTPMInfo) -> str:
    """``migrating (incoming)`` and the like: which way it is going."""
    if info.migration:
        return "%s (%s)" % (info.status.value, info.migration)
    return info.status.value


def _print_info(info: vtpm_driver.VTPMInfo, fmt: str, out: TextIO) -> None:
    data = _as_dict(info)
    if fmt == "json":
        _json(data, out)
        return
    rows = [(k, data[k]) for k in ("instance_uuid", "status", "migration",
                                   "reason", "pid", "socket_path")]
    rows += [("metadata." + k, v)
             for k, v in sorted(data["metadata"].items())]
    _table(("Field", "Value"), rows, out)


# --- commands ------------------------------------------------------------


def _create(driver: vtpm_driver.VTPMDriver, args: argparse.Namespace,
            out: TextIO) -> int:
    _print_info(driver.create(args.uuid), args.format, out)
    return EXIT_OK


def _start(driver: vtpm_driver.VTPMDriver, args: argparse.Namespace,
           out: TextIO) -> int:
    # The agent's rule for a vTPM that migrated: a copy older than the
    # newest epoch this host saw committed (a restored backup, a source
    # copy that was not erased) or newer than it (a migration's copy that
    # never committed here) does not run; this command is how a
    # hypervisor hook starts one.
    from trusted_pools.agent import migration as migration_mod
    from trusted_pools.conf import vtpm as vtpm_conf
    migration_mod.MigrationAgent(
        CONF.agent.host, None, driver,
        vtpm_conf.migration_journal_dir(CONF),
        create_journal=False).check_startable(args.uuid)
    _print_info(driver.start(args.uuid), args.format, out)
    return EXIT_OK


def _stop(driver: vtpm_driver.VTPMDriver, args: argparse.Namespace,
          out: TextIO) -> int:
    _print_info(driver.stop(args.uuid), args.format, out)
    return EXIT_OK


def _destroy(driver: vtpm_driver.VTPMDriver, args: argparse.Namespace,
             out: TextIO) -> int:
    driver.destroy(args.uuid)
    if args.format == "json":
        _json({"instance_uuid": args.uuid, "destroyed": True}, out)
    else:
        print("destroyed the vTPM of instance %s" % args.uuid, file=out)
    return EXIT_OK


def _list(driver: vtpm_driver.VTPMDriver, args: argparse.Namespace,
          out: TextIO) -> int:
    infos = driver.list()
    if args.format == "json":
        _json([_as_dict(i) for i in infos], out)
    else:
        _table(("Instance UUID", "Status", "PID", "Socket", "Reason"),
               [(i.instance_uuid, _status_word(i), i.pid, i.socket_path,
                 i.reason) for i in infos], out)
    return EXIT_OK


def _show(driver: vtpm_driver.VTPMDriver, args: argparse.Namespace,
          out: TextIO) -> int:
    _print_info(driver.status(args.uuid), args.format, out)
    return EXIT_OK


def _attach(driver: vtpm_driver.VTPMDriver, args: argparse.Namespace,
            out: TextIO) -> int:
    # VTPMNotFound for an unknown instance. Any other state is fine: a
    # hook writes the domain XML before the vTPM starts.
    driver.status(args.uuid)
    attach = driver.attach_info(args.uuid, model=args.model)
    if args.format == "libvirt":
        print(attach.libvirt_xml(), file=out)
    elif args.format == "qemu":
        print(shlex.join(attach.qemu_args()), file=out)
    else:
        _json({"instance_uuid": attach.instance_uuid,
               "socket_path": attach.socket_path, "model": attach.model,
               "libvirt_xml": attach.libvirt_xml(),
               "qemu_args": attach.qemu_args()}, out)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
