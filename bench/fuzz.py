"""Fuzz every evidence parser, RPC entry point and REST route (outside CI).

    PYTHONPATH=. .venv/bin/python -m bench.fuzz --list
    PYTHONPATH=. .venv/bin/python -m bench.fuzz --target 'api.*' \
        --engine hypothesis --inputs 100000
    PYTHONPATH=. .venv/bin/python -m bench.fuzz --target tpm.eventlog \
        --inputs 100000 --seconds 1800
    PYTHONPATH=. .venv/bin/python -m bench.fuzz --target all
    PYTHONPATH=. .venv/bin/python -m bench.fuzz --target NAME \
        --reproduce fuzz-crashes/NAME-exception-0123abcd.bin

The targets are in :mod:`bench.fuzz_targets`; what each must never do is
written there. Two engines:

* ``atheris`` (default when it imports): libFuzzer, coverage guided, seeded
  with the targets' real examples; one process per target.
* ``hypothesis``: random bytes and mutated seeds, no example database, no
  shrinking (the failing input is saved as drawn). CI runs a small slice
  with it (tests/unit/test_fuzz_slice.py).

Any input that ends in something other than a typed
``trusted_pools.exception`` error or a result that is not verified or
trusted, or that runs past ``--per-input`` seconds, is saved in
``--crash-dir`` as ``<target>-<kind>-<sha1>.bin`` with a ``.txt`` beside it
holding the traceback and the command that reproduces it. The run goes on
after a failure and exits 1 if there was any.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import hashlib
import json
import logging
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from typing import Iterator, Sequence

from bench import fuzz_targets
from bench.fuzz_targets import TARGETS, Target, Violation
from trusted_pools import exception

DEFAULT_INPUTS = 100_000
DEFAULT_PER_INPUT = 5.0
DEFAULT_CRASH_DIR = "fuzz-crashes"


class Hang(BaseException):
    """An input ran past its time budget. A BaseException so that the
    targets' own ``except Exception`` (the conductor's worker has one)
    cannot swallow it."""


class StopFuzzing(BaseException):
    """The run's time budget is spent."""


@dataclass
class Failure:
    target: str
    kind: str            # "exception", "violation" or "hang"
    detail: str
    data: bytes
    path: str = ""

    @property
    def signature(self) -> str:
        """What tells two failures apart: kind and the last frames."""
        lines = [ln for ln in self.detail.splitlines() if ln.strip()]
        return "%s|%s" % (self.kind, "|".join(lines[-3:]))


@dataclass
class Stats:
    target: str
    engine: str
    inputs: int = 0
    refused: int = 0     # typed errors
    accepted: int = 0    # returned a (non-verified) result
    seconds: float = 0.0
    failures: list[Failure] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.inputs / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        return ("%-30s %-10s %8d inputs %8.1f s %8.0f/s  typed errors %d, "
                "results %d, failures %d" % (
                    self.target, self.engine, self.inputs, self.seconds,
                    self.rate, self.refused, self.accepted,
                    len(self.failures)))


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Raise :class:`Hang` in this (main) thread after ``seconds``."""
    def expired(signum: int, frame: object) -> None:
        raise Hang("over the per-input budget of %.1f s" % seconds)
    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_one(target: Target, data: bytes, per_input: float
            ) -> tuple[str, Failure | None]:
    """Run one input: ("refused" | "accepted" | "failed", failure)."""
    try:
        with _deadline(per_input):
            target.run(data)
    except (exception.TrustedPoolsError, *target.allowed):
        return "refused", None
    except Hang as hang:
        return "failed", Failure(target.name, "hang", str(hang), data)
    except Violation:
        return "failed", Failure(target.name, "violation",
                                 traceback.format_exc(), data)
    except Exception:  # noqa: BLE001 - any other error is the finding
        return "failed", Failure(target.name, "exception",
                                 traceback.format_exc(), data)
    return "accepted", None


def reproduce_command(target: str, path: str) -> str:
    return ("PYTHONPATH=. .venv/bin/python -m bench.fuzz --target %s "
            "--reproduce %s" % (target, path))


def save(failure: Failure, crash_dir: str) -> str:
    os.makedirs(crash_dir, exist_ok=True)
    base = os.path.join(crash_dir, "%s-%s-%s" % (
        failure.target, failure.kind,
        hashlib.sha1(failure.data).hexdigest()[:12]))
    with open(base + ".bin", "wb") as f:
        f.write(failure.data)
    with open(base + ".txt", "w") as f:
        f.write("target: %s\nkind: %s\nreproduce: %s\n\n%s\n" % (
            failure.target, failure.kind,
            reproduce_command(failure.target, base + ".bin"),
            failure.detail))
    failure.path = base + ".bin"
    return failure.path


class _Recorder:
    """Counts outcomes and saves each distinct failure once."""

    def __init__(self, stats: Stats, crash_dir: str | None,
                 per_input: float, max_failures: int,
                 progress: int = 0) -> None:
        self.stats = stats
        self.crash_dir = crash_dir
        self.per_input = per_input
        self.max_failures = max_failures
        self.progress = progress
        self.started = time.monotonic()
        self.seen: set[str] = set()
        self.target = TARGETS[stats.target]

    def __call__(self, data: bytes) -> None:
        outcome, failure = run_one(self.target, bytes(data), self.per_input)
        self.stats.inputs += 1
        if self.progress and self.stats.inputs % self.progress == 0:
            # A long run that is stopped still says how far it got.
            print("progress %s: %d inputs in %.0f s, failures %d" % (
                self.stats.target, self.stats.inputs,
                time.monotonic() - self.started, len(self.stats.failures)),
                flush=True)
        if outcome == "refused":
            self.stats.refused += 1
        elif outcome == "accepted":
            self.stats.accepted += 1
        elif failure is not None and failure.signature not in self.seen:
            self.seen.add(failure.signature)
            if self.crash_dir:
                save(failure, self.crash_dir)
            self.stats.failures.append(failure)
            print("FAILURE %s (%s) %s\n%s" % (
                failure.target, failure.kind, failure.path,
                failure.detail.strip().splitlines()[-1]), flush=True)
            if len(self.stats.failures) >= self.max_failures:
                raise StopFuzzing()


def _warm_up(target: Target, per_input: float) -> None:
    """Build the target's shared material (keys, a database) within ten
    times the per-input budget; the measured run reports any failure."""
    for data in (target.seeds()[:1] or [b""]):
        try:
            with _deadline(10 * per_input):
                target.run(data)
        except (Exception, Hang):  # noqa: BLE001
            pass


# --- hypothesis --------------------------------------------------------------

def _mutate(seed: bytes, ops: list[tuple[int, int, bytes]]) -> bytes:
    out = bytearray(seed)
    for op, pos, blob in ops:
        pos %= len(out) + 1
        if op == 0:
            out[pos:pos + len(blob)] = blob
        elif op == 1:
            out[pos:pos] = blob
        elif op == 2:
            del out[pos:pos + len(blob) + 1]
        elif op == 3:
            del out[pos:]
        elif out:
            out[min(pos, len(out) - 1)] = (0x00, 0xff, 0x7f, 0x80)[
                len(blob) % 4]
    return bytes(out)


def run_hypothesis(name: str, inputs: int, seconds: float,
                   per_input: float, crash_dir: str | None,
                   derandomize: bool = False, max_failures: int = 10,
                   progress: int = 0) -> Stats:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    target = TARGETS[name]
    seeds = target.seeds()
    stats = Stats(name, "hypothesis")
    record = _Recorder(stats, crash_dir, per_input, max_failures, progress)
    raw = st.binary(max_size=4096)
    data = raw if not seeds else st.one_of(raw, st.builds(
        _mutate, st.sampled_from(seeds), st.lists(st.tuples(
            st.integers(0, 4), st.integers(0, 1 << 20),
            st.binary(max_size=8)), max_size=6)), st.sampled_from(seeds))
    stop_at = time.monotonic() + seconds

    @settings(max_examples=inputs, database=None, deadline=None,
              derandomize=derandomize, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(data)
    def fuzz(value: bytes) -> None:
        if time.monotonic() > stop_at:
            raise StopFuzzing()
        record(value)

    _warm_up(target, per_input)
    started = time.monotonic()
    with contextlib.suppress(StopFuzzing):
        for seed in seeds:
            record(seed)
        fuzz()
    stats.seconds = time.monotonic() - started
    return stats


# --- atheris -----------------------------------------------------------------

def run_atheris(name: str, inputs: int, seconds: float, per_input: float,
                crash_dir: str, max_failures: int = 10) -> None:
    """libFuzzer in this process; it exits the process when done, so the
    summary is printed (and written to <crash_dir>/<target>.stats.json)
    as it goes."""
    import atheris

    target = TARGETS[name]
    stats = Stats(name, "atheris")
    record = _Recorder(stats, crash_dir, per_input, max_failures)
    corpus = tempfile.mkdtemp(prefix="tp-fuzz-corpus-")
    for i, seed in enumerate(target.seeds()):
        pathlib.Path(corpus, "seed-%03d" % i).write_bytes(seed)
    _warm_up(target, per_input)
    # Set at the first input: instrumenting every module takes seconds.
    started = float("inf")
    report_path = os.path.join(crash_dir, "%s.stats.json" % name)
    os.makedirs(crash_dir, exist_ok=True)

    def write_stats() -> None:
        stats.seconds = time.monotonic() - started
        with open(report_path, "w") as f:
            json.dump({"target": name, "engine": "atheris",
                       "inputs": stats.inputs, "seconds": stats.seconds,
                       "typed_errors": stats.refused,
                       "results": stats.accepted,
                       "failures": [f.path for f in stats.failures]}, f)

    def test_one(data: bytes) -> None:
        nonlocal started
        started = min(started, time.monotonic())
        try:
            record(data)
        except StopFuzzing:
            write_stats()
            print(stats.line(), flush=True)
            os._exit(1)
        if stats.inputs % 1000 == 0 or stats.inputs >= inputs:
            write_stats()
        if stats.inputs >= inputs:
            print(stats.line(), flush=True)
            os._exit(1 if stats.failures else 0)

    atheris.instrument_all()
    atheris.Setup([sys.argv[0], "-runs=%d" % (inputs + 10),
                   "-max_total_time=%d" % max(1, int(seconds)),
                   "-timeout=0", "-rss_limit_mb=2048",
                   "-print_final_stats=1", corpus], test_one)
    atheris.Fuzz()


def quiet_logs() -> None:
    """The targets log every refusal; at thousands a second that output
    is the cost. Only the conductor target's own handler still sees them."""
    root = logging.getLogger("trusted_pools")
    root.propagate = False
    root.addHandler(logging.NullHandler())


def _have_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def select(patterns: Sequence[str]) -> list[str]:
    """Target names matching ``patterns`` (names, shell patterns such as
    ``api.*``, or ``all``), in order, each once."""
    if "all" in patterns:
        return fuzz_targets.names()
    out: list[str] = []
    for pattern in patterns:
        for name in fuzz_targets.names() if any(
                c in pattern for c in "*?[") else [pattern]:
            if fnmatch.fnmatchcase(name, pattern) and name not in out:
                out.append(name)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true",
                        help="list the targets and exit")
    parser.add_argument("--target", action="append", default=[],
                        help="target name or shell pattern such as 'api.*' "
                             "(repeat, or 'all')")
    parser.add_argument("--inputs", type=int, default=DEFAULT_INPUTS,
                        help="generated inputs per target")
    parser.add_argument("--seconds", type=float, default=3600.0,
                        help="time budget per target, seconds")
    parser.add_argument("--per-input", type=float, default=DEFAULT_PER_INPUT,
                        help="time budget of one input before it counts "
                             "as a hang, seconds")
    parser.add_argument("--engine", choices=("atheris", "hypothesis"),
                        default="atheris" if _have_atheris()
                        else "hypothesis")
    parser.add_argument("--crash-dir", default=DEFAULT_CRASH_DIR)
    parser.add_argument("--progress", type=int, default=10_000,
                        metavar="N",
                        help="print a progress line every N inputs "
                             "(hypothesis engine; 0: never)")
    parser.add_argument("--reproduce", metavar="FILE",
                        help="run the target once on FILE and show the "
                             "outcome")
    args = parser.parse_args(argv)
    quiet_logs()

    if args.list or not args.target:
        for name in fuzz_targets.names():
            print("%-30s %s" % (name, TARGETS[name].doc))
        return 0
    names = select(args.target)
    unknown = [n for n in args.target if n != "all" and not any(
        fnmatch.fnmatchcase(t, n) for t in TARGETS)]
    if unknown:
        parser.error("unknown target(s) %s; --list shows them"
                     % ", ".join(unknown))

    if args.reproduce:
        data = pathlib.Path(args.reproduce).read_bytes()
        outcome, failure = run_one(TARGETS[names[0]], data, args.per_input)
        print("%s: %s" % (names[0], outcome))
        if failure is not None:
            print(failure.detail)
        return 1 if failure else 0

    if args.engine == "atheris":
        if len(names) == 1:
            run_atheris(names[0], args.inputs, args.seconds,
                        args.per_input, args.crash_dir)
            return 0  # not reached: libFuzzer exits
        # libFuzzer owns its process: one child per target, in turn.
        status = 0
        for name in names:
            command = [sys.executable, "-m", "bench.fuzz", "--target", name,
                       "--inputs", str(args.inputs), "--seconds",
                       str(args.seconds), "--per-input", str(args.per_input),
                       "--engine", "atheris", "--crash-dir", args.crash_dir]
            status |= subprocess.call(command)
        return 1 if status else 0

    failed = False
    for name in names:
        stats = run_hypothesis(name, args.inputs, args.seconds,
                               args.per_input, args.crash_dir,
                               progress=args.progress)
        print(stats.line(), flush=True)
        failed |= bool(stats.failures)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
