"""Timing helpers: medians over repeats, so a noisy shared machine still
gives comparable ratios when baseline and subject run in the same process."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def median_seconds(fn: Callable[[], object], number: int = 100,
                   repeat: int = 7) -> float:
    """Median over ``repeat`` runs of the mean time of ``number`` calls."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - start) / number)
    return statistics.median(samples)


def report(name: str, subject: float, baseline: float | None = None,
           baseline_name: str = "baseline", unit: str = "s") -> None:
    """Print one result line, with the ratio against the baseline."""
    if baseline:
        print("%-52s %12.3f us  vs %s %10.3f us  ratio %.2f"
              % (name, subject * 1e6, baseline_name, baseline * 1e6,
                 subject / baseline))
    else:
        print("%-52s %12.3f %s" % (name, subject, unit))
