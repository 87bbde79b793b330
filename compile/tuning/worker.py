"""Build and export functions that MetaSchedule's builder runs in its worker processes.

They are pickled into fresh processes, so this module imports as little as possible.
- `build_kernel` is TVM's default build minus its `import tvm.s_tir.tensor_intrin`, which costs
  88 s per builder batch on a 2-core host (see compile/backend/intrinsics.py); candidates arrive
  already tensorized, so the intrinsic registry is not needed to compile them.
- `export_kernel` links a shared library with the target's own compiler, so the file loads on
  the device as it is (TVM's default `.tar` export needs a C++ compiler on the phone).
"""

from __future__ import annotations

import os
import tempfile


def build_kernel(mod, target, _params):
    import tvm
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm.compile(mod, target=target)


def export_kernel(compiler: str, module) -> str:
    from tvm.support import cc

    path = os.path.join(tempfile.mkdtemp(prefix="qatie-tune-"), "kernel.so")
    module.export_library(path, fcompile=cc.cross_compiler(compiler))
    return path
