"""The latency protocol every measurement here follows, and its statistics.

Warm-up runs first (caches, lazy allocation, the thread pool's first wake-up), then TVM's time
evaluator on the device itself, so no network round trip is inside a measurement.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Timing:
    """`warmup` untimed runs, then `repeats` timed runs of at least `min_ms` each (TVM's time
    evaluator repeats the call inside one measurement until `min_ms` is reached)."""

    warmup: int = 2
    repeats: int = 10
    min_ms: int = 0


def time_calls(module, name: str, dev, timing: Timing, *args) -> list[float]:
    """Seconds per timed run of `module[name](*args)` on `dev`, after the warm-up runs."""
    function = module[name]
    for _ in range(timing.warmup):
        function(*args)
    timer = module.time_evaluator(name, dev, number=1, repeat=timing.repeats, min_repeat_ms=timing.min_ms)
    return list(timer(*args).results)


def time_model(vm, dev, timing: Timing, inputs) -> list[float]:
    """Seconds per timed run of the model's `main` on `inputs` (set once, then invoked
    statefully, so input copies are not timed)."""
    vm.set_input("main", inputs)
    return time_calls(vm, "invoke_stateful", dev, timing, "main")


def warm_model(vm, dev, timing: Timing, inputs) -> Callable[[], float]:
    """The model of `time_model` after its warm-up runs, as a function returning the seconds of
    one timed run (of at least `timing.min_ms`): for callers that time it between other work.
    (Each call costs one more untimed run: TVM's time evaluator calls once before it times.)"""
    vm.set_input("main", inputs)
    for _ in range(timing.warmup):
        vm.invoke_stateful("main")
    timer = vm.time_evaluator("invoke_stateful", dev, number=1, repeat=1, min_repeat_ms=timing.min_ms)
    return lambda: timer("main").results[0]


def latency_stats(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1e3
    return {"repeats": int(ms.size), "median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)),
            "min_ms": float(ms.min()), "max_ms": float(ms.max()), "std_ms": float(ms.std())}
