"""qatie-compile: QDQ ONNX -> TVM (Relax) int8 kernels, per mobile target."""

import importlib.abc
import importlib.machinery
import sys


class _WithoutTorch(importlib.abc.Loader):
    """A module's own loader, run with `import torch` failing (used only while torch is not
    imported: `_TvmWithoutTorch` checks)."""

    def __init__(self, loader) -> None:
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        sys.modules["torch"] = None  # a None entry makes `import torch` raise ImportError
        try:
            self._loader.exec_module(module)
        finally:
            del sys.modules["torch"]

    def __getattr__(self, name: str):
        return getattr(self._loader, name)  # get_source, is_package, ... as the real loader


class _TvmWithoutTorch(importlib.abc.MetaPathFinder):
    """Imports `tvm` / `tvm_ffi` (whichever comes first) without torch.

    TVM 0.27 imports torch whenever it is installed (tvm_ffi's workaround for a Windows symbol
    clash, its DLPack helpers, `relax.BasePyModule`), though nothing here passes torch tensors to
    TVM: 2.5-3 s of every `qatie-compile` command and build process. Without it TVM takes its
    torch-free paths, and torch still imports normally afterwards (`bench --ckpt` exports with
    it). Installed on import of this package, it imports nothing itself, so `compile.artifact`
    stays free of TVM."""

    def find_spec(self, name, path=None, target=None):
        if name not in ("tvm", "tvm_ffi") or "torch" in sys.modules:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _WithoutTorch(spec.loader)
        return spec


sys.meta_path.insert(0, _TvmWithoutTorch())
