"""Compile a build's OpenCL kernels with a real OpenCL compiler (PoCL here, through pyopencl).

Without a phone, this is the check that the Mali/Adreno kernels TVM generated are valid OpenCL
C. It does not run them. Kernels that fail are reported by name with the compiler's first error.
TVM's OpenCL module returns its source once per PrimFunc (the same kernels repeated), so the
kernels are split and de-duplicated by name first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from compile.backend.build import imported_modules
from qatie.errors import QatieError

_KERNEL = re.compile(r"^__kernel void (\w+)\(", re.MULTILINE)


@dataclass
class OpenCLCheck:
    device: str
    kernels: list[str]
    failed: dict[str, str] = field(default_factory=dict)


def opencl_source(module) -> str:
    """The OpenCL C of every OpenCL module imported by a runtime module (an executable's `.mod`)."""
    return "\n".join(m.inspect_source("cl") for m in imported_modules(module) if m.kind == "opencl")


def split_kernels(source: str) -> tuple[str, dict[str, str]]:
    """(shared preamble, kernel name -> its definition), first definition of each name kept.

    TVM declares every kernel at the top of the file (`__kernel void f(...);`); those
    prototypes stay in the preamble and are not mistaken for the kernels themselves."""
    starts = [m.start() for m in _KERNEL.finditer(source) if _is_definition(source, m.end())]
    if not starts:
        return source, {}
    preamble = source[: starts[0]]
    kernels: dict[str, str] = {}
    for begin, end in zip(starts, starts[1:] + [len(source)]):
        text = source[begin:end]
        name = _KERNEL.match(text).group(1)
        kernels.setdefault(name, text)
    return preamble, kernels


def _is_definition(source: str, after: int) -> bool:
    body, end = source.find("{", after), source.find(";", after)
    return body != -1 and (end == -1 or body < end)


def opencl_context():
    try:
        import pyopencl as cl
    except ImportError:
        raise QatieError("pyopencl is not installed; pip install pyopencl (and apt-get install pocl-opencl-icd)") from None
    devices = [d for p in cl.get_platforms() for d in p.get_devices()] if _has_platforms(cl) else []
    if not devices:
        raise QatieError("no OpenCL device found; install an ICD such as PoCL (apt-get install pocl-opencl-icd)")
    return cl, cl.Context(devices=[devices[0]]), devices[0]


def _has_platforms(cl) -> bool:
    try:
        return bool(cl.get_platforms())
    except cl.LogicError:  # "no platforms found" when no ICD is installed
        return False


def check_opencl(source: str) -> OpenCLCheck:
    """Build the whole program; if that fails, build each kernel alone to name the failures."""
    cl, ctx, device = opencl_context()
    preamble, kernels = split_kernels(source)
    result = OpenCLCheck(device=f"{device.platform.name}: {device.name}", kernels=sorted(kernels))
    program = preamble + "\n".join(kernels.values())
    try:
        cl.Program(ctx, program).build()
        return result
    except cl.RuntimeError:
        pass
    for name, text in kernels.items():
        try:
            cl.Program(ctx, preamble + text).build()
        except cl.RuntimeError as exc:
            errors = [line for line in str(exc).splitlines() if "error" in line.lower()]
            result.failed[name] = (errors or [str(exc).splitlines()[0]])[0].strip()
    return result
