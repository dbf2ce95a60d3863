"""Timing and summary statistics shared by the benchmarks.

Kept free of JAX and TensorFlow imports, so that the Keras reference can
use it in a process that loads only TensorFlow.
"""

import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any


def time_calls(
    fn: Callable[[], Any], *, reps: int, warmup: int = 1
) -> dict[str, float]:
    """Seconds per call of ``fn``: the median and min of ``reps`` timed
    calls after ``warmup`` untimed ones (the first compiles).

    ``fn`` must return only once its work is done (block on asynchronous
    results inside it).
    """
    if reps < 1 or warmup < 0:
        raise ValueError(
            f"need reps >= 1 and warmup >= 0, got {reps}, {warmup}"
        )
    start = time.perf_counter()
    for _ in range(warmup):
        fn()
    warmup_seconds = time.perf_counter() - start
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "reps": reps,
        "warmup_s": warmup_seconds,
    }


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of sorted values, nearest rank."""
    if not sorted_values:
        return float("nan")
    rank = math.ceil(q / 100 * len(sorted_values))
    return sorted_values[min(max(rank, 1), len(sorted_values)) - 1]
