"""PassContext settings that every compilation for a target uses — `build`, `check-opencl` and
the PoCL harness alike, so what is checked is what ships — each with the reason it exists.

OpenCL: TVM 0.27's C-family code generator prints a vector load of 8-bit lanes from
non-contiguous addresses (a gather, e.g. eight output channels' int8 weights) by packing the
bytes into one integer with shifts (CUDA's char4-stored-as-int convention) and assigns that
integer to a `char8`, which broadcasts its low byte to every lane. The Mali/Adreno int8 convs
compiled cleanly but computed wrong results (up to 255 steps) when run on PoCL; the same
generated pattern is reported in mlc-ai/mlc-llm#2345. Until TVM is fixed, GPU kernels are built
without vectorized loops: scalar OpenCL C, which the device compiler may still vectorize.
"""

from __future__ import annotations

import tvm

from compile.backend.targets import target_kind

CONFIG_BY_KIND = {"opencl": {"tirx.disable_vectorize": True}, "cpu": {}}


def pass_config(target: tvm.target.Target) -> dict:
    return CONFIG_BY_KIND[target_kind(target)]
