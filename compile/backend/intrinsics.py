"""Register TVM's CPU tensor intrinsics (x86 VNNI/AVX-512, ARM sdot/udot/i8mm) and nothing else.

MetaSchedule imports `tvm.s_tir.tensor_intrin` when a tuning context is created and in every
builder worker (its pool restarts each batch). That package parses hundreds of TVMScript
intrinsics for CUDA, ROCm and Hexagon too: measured 88 s on this 2-core host (CUDA alone 64 s),
paid once per tuning batch. Our targets are CPUs (and OpenCL, which uses none), so we register
the package without running its `__init__` and import only its CPU modules (about 4 s).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

PACKAGE = "tvm.s_tir.tensor_intrin"
CPU_MODULES = ("x86", "arm_cpu")


def register_cpu_intrinsics() -> None:
    """Make `import tvm.s_tir.tensor_intrin` cheap and register the CPU intrinsics. Idempotent."""
    if PACKAGE not in sys.modules:
        spec = importlib.util.find_spec(PACKAGE)
        sys.modules[PACKAGE] = importlib.util.module_from_spec(spec)  # package body not executed
    for name in CPU_MODULES:
        importlib.import_module(f"{PACKAGE}.{name}")
