"""What MetaSchedule's candidates are built with, in the builder's worker processes.

`build_and_export` runs in a fresh process (`compile.tuning.builder`), so this module imports as
little as possible:
- the build is TVM's default one minus its `import tvm.s_tir.tensor_intrin`, which costs 88 s
  per process on a 2-core host (see compile/backend/intrinsics.py); candidates arrive already
  tensorized, so the intrinsic registry is not needed to compile them;
- the shared library is linked with the target's own compiler, so the file loads on the device
  as it is (TVM's default `.tar` export needs a C++ compiler on the phone).
"""

from __future__ import annotations

import os
import tempfile


def build_and_export(compiler: str, mod, target) -> str:
    """Compile one scheduled kernel and link it with `compiler`; the library's path."""
    import tvm
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock
    from tvm.support import cc

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    library = tvm.compile(mod, target=target)
    path = os.path.join(tempfile.mkdtemp(prefix="qatie-tune-"), "kernel.so")
    library.export_library(path, fcompile=cc.cross_compiler(compiler))
    return path
