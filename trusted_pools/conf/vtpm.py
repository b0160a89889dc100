"""[vtpm]: the virtual TPMs this host's agent runs for its instances."""

from __future__ import annotations

from oslo_config import cfg

from trusted_pools import exception

group = cfg.OptGroup(
    "vtpm", title="vTPM driver",
    help="trusted-pools-agent: one virtual TPM per instance, its state "
         "sealed to this host's TPM.")

_BANKS = {"sha1": 0x0004, "sha256": 0x000B, "sha384": 0x000C,
          "sha512": 0x000D}

opts = [
    cfg.BoolOpt("enabled", default=False, mutable=False,
                help="Run this host's vTPMs from trusted-pools-agent: at "
                     "start it loads the driver, adopts the running vTPMs "
                     "and reaps orphan swtpm processes, and it checks them "
                     "every check_interval seconds. Off: the agent does not "
                     "touch vTPMs (trusted-pools-vtpm still works). Not "
                     "mutable at runtime: the driver is loaded once."),
    cfg.IntOpt("check_interval", default=60, min=1, max=86400,
               help="Seconds between two checks of every vTPM by the "
                    "agent ([vtpm] enabled); a vTPM whose process died "
                    "without being stopped is logged at ERROR and shown "
                    "as failed."),
    cfg.StrOpt("driver", default="swtpm",
               help="vTPM driver, by its entry point in the "
                    "trusted_pools.vtpm.drivers namespace. Only this one is "
                    "loaded."),
    cfg.StrOpt("state_dir", default="/var/lib/trusted-pools/vtpm",
               help="Directory holding one sub-directory per vTPM (state "
                    "encrypted at rest, the wrapped state key, metadata). "
                    "Created with mode 0700."),
    cfg.StrOpt("run_dir", default="/run/trusted-pools/vtpm",
               help="Directory of the vTPMs' UNIX sockets (the hypervisor "
                    "connects to <run_dir>/<instance uuid>.sock). At most "
                    "56 characters: UNIX socket paths are short."),
    cfg.StrOpt("migration_journal_dir",
               default="/var/lib/trusted-pools/vtpm-migrations",
               help="Directory of this agent's journal of vTPM migration "
                    "steps (one file per migration, and the newest "
                    "committed epoch of each instance): a restarted agent "
                    "answers a repeated step as it did before, and never "
                    "starts a vTPM copy older than a committed migration. "
                    "Holds no plaintext (the transport keys' private parts "
                    "are blobs only this host's TPM loads). Created with "
                    "mode 0700."),
    cfg.ListOpt("pcr_banks", default=["sha256"],
                item_type=cfg.types.String(choices=sorted(_BANKS)),
                help="PCR banks each new vTPM allocates (swtpm_setup "
                     "--pcr-banks)."),
    cfg.BoolOpt("create_certificates", default=True,
                help="Give each new vTPM an EK certificate and a platform "
                     "certificate made by the create_certs_tool of "
                     "swtpm_setup_config (swtpm's local CA by default)."),
    cfg.StrOpt("swtpm_setup_config", default="",
               help="swtpm_setup.conf to use (its create_certs_tool makes "
                    "the certificates). Empty: swtpm's default, "
                    "/etc/swtpm_setup.conf."),
    cfg.StrOpt("swtpm_path", default="swtpm",
               help="The swtpm binary (a name is looked up in PATH)."),
    cfg.StrOpt("swtpm_setup_path", default="swtpm_setup",
               help="The swtpm_setup binary (a name is looked up in PATH)."),
    cfg.IntOpt("swtpm_log_level", default=1, min=0, max=20,
               help="swtpm --log level (1: errors; 2: every command; 5 and "
                    "more: libtpms too). Logs go to <state_dir>/<uuid>/"
                    "swtpm.log."),
    cfg.StrOpt("host_tcti", default="",
               help="TCTI of the host TPM that holds the binding key. "
                    "Empty: [tpm] tcti."),
    cfg.StrOpt("binding_key_handle", default="0x81008002",
               help="Persistent handle (hex, owner range) of the host "
                    "binding key: a decrypt-only RSA key, created on first "
                    "use under the EK, to which every vTPM state key is "
                    "wrapped. Replacing it makes every vTPM state on this "
                    "host unreadable."),
    cfg.StrOpt("binding_key_pcrs", default="", mutable=False,
               help="PCR policy of a newly created binding key, as "
                    "bank:pcr,pcr (e.g. 'sha256:0,2,4,7'; several banks "
                    "separated by '+'). The key then decrypts vTPM state "
                    "keys only while those host PCRs hold the values they "
                    "had when it was made: a host that boots something else "
                    "cannot start its vTPMs. Empty: no PCR policy. Not "
                    "mutable at runtime: it decides which boots may open "
                    "the vTPM states."),
    cfg.FloatOpt("start_timeout", default=10.0, min=0.5, max=300.0,
                 help="Seconds to wait for a swtpm to answer on its control "
                      "channel after it was started."),
    cfg.FloatOpt("stop_timeout", default=10.0, min=0.5, max=300.0,
                 help="Seconds a graceful swtpm shutdown may take before "
                      "it is terminated (SIGTERM, then SIGKILL)."),
]


def parse_pcr_selection(text: str) -> dict[int, list[int]] | None:
    """'sha256:0,2,4+sha1:7' -> {0x000B: [0, 2, 4], 0x0004: [7]}; '' -> None.
    """
    text = (text or "").strip()
    if not text:
        return None
    selection: dict[int, list[int]] = {}
    for part in text.split("+"):
        bank, _, pcrs = part.strip().partition(":")
        if bank not in _BANKS or not pcrs:
            raise exception.ConfigInvalid(
                reason="[vtpm] binding_key_pcrs: %r is not bank:pcr,... with "
                "a bank among %s" % (part, ", ".join(sorted(_BANKS))))
        try:
            indices = sorted({int(p) for p in pcrs.split(",")})
        except ValueError:
            raise exception.ConfigInvalid(
                reason="[vtpm] binding_key_pcrs: %r has a PCR that is not "
                "a number" % part) from None
        if not all(0 <= i < 24 for i in indices):
            raise exception.ConfigInvalid(
                reason="[vtpm] binding_key_pcrs: PCRs are 0-23")
        selection[_BANKS[bank]] = indices
    return selection


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(group)
    conf.register_opts(opts, group=group)
