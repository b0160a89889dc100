"""Run every benchmark: ``python -m bench`` (or ``python -m bench NAME``)."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import bench


def main(argv: list[str]) -> int:
    names = sorted(m.name for m in pkgutil.iter_modules(bench.__path__)
                   if m.name.startswith("bench_"))
    wanted = [n for n in names if not argv or n in argv
              or n.removeprefix("bench_") in argv]
    # Each benchmark runs on its defaults (some read sys.argv themselves;
    # run one as "python -m bench.NAME --help" to change them).
    sys.argv = sys.argv[:1]
    for name in wanted:
        print("\n## %s" % name, flush=True)
        importlib.import_module("bench." + name).main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
