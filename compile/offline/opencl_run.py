"""Execute a model's OpenCL kernels on this machine's OpenCL device (PoCL) and check their numbers.

TVM's pip wheel has no OpenCL runtime, so the Relax VM cannot launch kernels itself. The build
is therefore split where TVM splits it:

- the OpenCL C and, per host function, its kernel launches — kernel name, arguments (which
  host parameter's buffer, or a constant) and grid/block extents — are taken from the TIR module
  right after `tirx.SplitHostDevice`, where each launch is a `tirx.call_ffi_kernel` call;
- the VM is linked without its TIR library (`compile.tvm_private.link_vm_without_tir`), so it
  looks every PrimFunc up in the global function registry; a stand-in registered there under the same name
  copies the VM's tensors to OpenCL buffers, launches that function's kernels with pyopencl and
  copies the results back. Memory planning and call order stay the VM's own.

Every kernel call is also checked against the same fused function before GPU scheduling,
compiled for the host CPU, on the same inputs: the first kernel whose result differs is named.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import tvm
import tvm_ffi
from tvm import relax

from compile.backend import kernel_names
from compile.backend.pass_config import pass_config
from compile.offline.opencl_check import (
    OpenCLCheck,
    check_opencl,
    opencl_context,
    opencl_source,
    split_kernels,
)
from compile.tvm_private import link_vm_without_tir
from qatie.errors import QatieError
from qatie.references import Agreement

LAUNCH_OP = "tirx.call_ffi_kernel"
AXES = "xyz"
# A kernel's result "agrees" when integer outputs differ by at most one step (a rounding boundary
# reached through a different summation order) and float outputs by at most this (relative).
FLOAT_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Launch:
    """One kernel launch of a host function: arguments are host parameter indices (buffers)
    or typed constants."""

    kernel: str
    args: tuple[int | np.generic, ...]
    global_size: tuple[int, ...]
    local_size: tuple[int, ...]


@dataclass
class KernelCheck:
    name: str
    calls: int = 0
    max_int_diff: int = 0
    max_float_rel_diff: float = 0.0

    @property
    def agrees(self) -> bool:
        return self.max_int_diff <= 1 and self.max_float_rel_diff <= FLOAT_TOLERANCE


@dataclass
class OpenCLRun:
    compile_check: OpenCLCheck
    output: np.ndarray | None = None
    kernels: dict[str, KernelCheck] = field(default_factory=dict)
    call_order: list[str] = field(default_factory=list)

    @property
    def first_disagreeing(self) -> KernelCheck | None:
        return next((self.kernels[n] for n in self.call_order if not self.kernels[n].agrees), None)


@tvm.instrument.pass_instrument
class _CaptureSplit:
    """Keeps the unscheduled fused functions (copied: dlight schedules them in place) and the
    module after SplitHostDevice."""

    def __init__(self) -> None:
        self.fused: tvm.IRModule | None = None
        self.split: tvm.IRModule | None = None

    def run_after_pass(self, mod: tvm.IRModule, info) -> None:
        if info.name == kernel_names.PASS_NAME:  # fused, named, not yet scheduled
            self.fused = tvm.ir.load_json(tvm.ir.save_json(mod))
        elif info.name == "tirx.SplitHostDevice":
            self.split = mod


def _statements(stmt) -> list:
    if type(stmt).__name__ == "SeqStmt":
        return [s for part in stmt.seq for s in _statements(part)]
    return [stmt]


def _buffer_owners(params, declarations: list) -> list[tuple[object, int]]:
    """(buffer, host parameter index) for the parameters and for the flat views declared on
    their data (`T.decl_buffer(..., data=param.data)`), which is what kernel launches pass."""
    owners = [(param, i) for i, param in enumerate(params)]
    for decl in declarations:
        owner = decl.data.args[0] if isinstance(decl.data, tvm.ir.Call) and decl.data.args else None
        index = next((i for buffer, i in owners if owner is not None and buffer.same_as(owner)), None)
        if index is not None:
            owners.append((decl.buffer, index))
    return owners


def _launch(function_name: str, owners: list[tuple[object, int]], call, kernel_params) -> Launch:
    axes = [str(axis) for axis in call.attrs["launch_params"]]
    extents = [int(e) for e in call.args[len(call.args) - len(axes):]]
    values = call.args[1: len(call.args) - len(axes)]
    args: list[int | np.generic] = []
    for value, kernel_param in zip(values, kernel_params):
        index = next((i for buffer, i in owners if isinstance(value, tvm.ir.Call) and value.args
                      and value.args[0].same_as(buffer)), None)
        if index is not None:
            args.append(index)
        elif isinstance(value, (tvm.tirx.IntImm, tvm.tirx.FloatImm)):
            args.append(np.dtype(str(kernel_param.dtype)).type(value.value))
        else:
            raise QatieError(f"{function_name}: kernel argument {value} is neither a parameter's buffer nor a "
                             f"constant; the PoCL harness cannot pass it")
    extent = dict(zip(axes, extents))
    local = tuple(extent.get(f"threadIdx.{a}", 1) for a in AXES)
    blocks = tuple(extent.get(f"blockIdx.{a}", 1) for a in AXES)
    return Launch(str(call.args[0].value), tuple(args), tuple(b * t for b, t in zip(blocks, local)), local)


def host_launches(split: tvm.IRModule) -> dict[str, list[Launch]]:
    """Host function name -> its kernel launches in order."""
    launches: dict[str, list[Launch]] = {}
    for gv, func in split.functions.items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        body = _statements(func.body)
        declarations = [s for s in body if type(s).__name__ == "DeclBuffer"]
        calls = [s.value for s in body if type(s).__name__ == "Evaluate" and getattr(s.value, "op", None) is not None
                 and s.value.op.name == LAUNCH_OP]
        if not calls:
            continue  # a device kernel itself
        if len(calls) + len(declarations) != len(body):
            kinds = sorted({type(s).__name__ for s in body} - {"Evaluate", "DeclBuffer"})
            raise QatieError(f"{gv.name_hint}: host code besides kernel launches ({', '.join(kinds)}); "
                             f"the PoCL harness runs launch-only host functions")
        owners = _buffer_owners(func.params, declarations)
        launches[gv.name_hint] = [
            _launch(gv.name_hint, owners, call, split[str(call.args[0].value)].params) for call in calls]
    return launches


def _compare(got: list[np.ndarray], want: list[np.ndarray], check: KernelCheck) -> None:
    check.calls += 1
    for a, b in zip(got, want):
        if a.dtype.kind in "iu":
            check.max_int_diff = max(check.max_int_diff, int(np.abs(a.astype(np.int64) - b).max(initial=0)))
        else:
            scale = max(float(np.abs(b).max(initial=0)), 1e-12)
            check.max_float_rel_diff = max(check.max_float_rel_diff, float(np.abs(a - b).max(initial=0)) / scale)


def _stand_in(launches: list[Launch], cl, ctx, queue, program, reference: Callable, check: KernelCheck,
              order: list[str]) -> Callable:
    """The registry function the VM calls in place of one compiled host function: its kernels
    on the OpenCL device, then the CPU reference on the same inputs for comparison."""

    def run(*tensors) -> None:
        host = [t.numpy() for t in tensors]
        references = [tvm.runtime.tensor(h) for h in host]
        reference(*references)
        buffers: dict[int, object] = {}
        for launch in launches:
            args = []
            for arg in launch.args:
                if isinstance(arg, int):
                    if arg not in buffers:
                        data = host[arg] if host[arg].nbytes else np.zeros(1, host[arg].dtype)
                        buffers[arg] = cl.Buffer(ctx, cl.mem_flags.READ_WRITE | cl.mem_flags.COPY_HOST_PTR, hostbuf=data)
                    args.append(buffers[arg])
                else:
                    args.append(arg)
            kernel = cl.Kernel(program, launch.kernel)
            kernel.set_args(*args)
            cl.enqueue_nd_range_kernel(queue, kernel, launch.global_size, launch.local_size)
        for index, buffer in buffers.items():
            if host[index].nbytes:
                cl.enqueue_copy(queue, host[index], buffer)
        queue.finish()
        for tensor, data in zip(tensors, host):
            tensor.copyfrom(data)
        order.append(check.name)
        _compare(host, [r.numpy() for r in references], check)

    return run


class CpuKernels:
    """Fused functions as they were before GPU scheduling, compiled for this CPU (plain loops),
    each distinct function once: the OpenCL targets of one model share almost all of them, and
    compiling them is most of a `check-opencl --run`."""

    def __init__(self) -> None:
        self._compiled: dict[tvm_ffi.StructuralKey, Callable] = {}  # structurally equal functions: one entry

    def functions(self, fused: tvm.IRModule, names: set[str]) -> dict[str, Callable]:
        """Name -> compiled function for the fused functions called `names`."""
        keys = {gv.name_hint: tvm_ffi.StructuralKey(f) for gv, f in fused.functions.items() if gv.name_hint in names}
        new = {key: name for name, key in keys.items() if key not in self._compiled}  # one name per function
        if new:
            library = tvm.compile(tvm.IRModule({tvm.ir.GlobalVar(name): key.key.with_attr("global_symbol", name)
                                                for key, name in new.items()}), target="llvm")
            self._compiled.update({key: library[name] for key, name in new.items()})
        return {name: self._compiled[key] for name, key in keys.items()}


def run_on_opencl(mod: tvm.IRModule, target: tvm.target.Target, inputs: list[np.ndarray],
                  config: dict | None = None, cpu_kernels: CpuKernels | None = None) -> OpenCLRun:
    """Compile `mod` for the OpenCL target as `build` does (its pass config unless `config` is
    given), compile its kernels on the local OpenCL device, and run the model there; `output`
    is None when a kernel fails to compile."""
    capture = _CaptureSplit()
    with tvm.transform.PassContext(instruments=[capture], config=pass_config(target) if config is None else config):
        with target:
            relaxed = kernel_names.gpu_pipeline(target)(mod)
        link, library = link_vm_without_tir(relaxed, target)
    source = opencl_source(library)
    result = OpenCLRun(check_opencl(source))
    if result.compile_check.failed:
        return result
    launches = host_launches(capture.split)
    references = (cpu_kernels or CpuKernels()).functions(capture.fused, set(launches))
    cl, ctx, _ = opencl_context()
    queue = cl.CommandQueue(ctx)
    preamble, kernels = split_kernels(source)
    program = cl.Program(ctx, preamble + "\n".join(kernels.values())).build()
    for name, function_launches in launches.items():
        result.kernels[name] = KernelCheck(name)
        tvm_ffi.register_global_func(name, _stand_in(function_launches, cl, ctx, queue, program, references[name],
                                                 result.kernels[name], result.call_order), override=True)
    vm = relax.VirtualMachine(link(), tvm.cpu())
    result.output = vm["main"](*[tvm.runtime.tensor(x) for x in inputs]).numpy()
    return result


@dataclass
class ModelOnOpenCL:
    """What `check-opencl --run` reports for one target."""

    target: str
    run: OpenCLRun
    agreement: dict[str, Agreement] = field(default_factory=dict)  # reference name -> agreement

    @property
    def passed(self) -> bool:
        return (not self.run.compile_check.failed and self.run.first_disagreeing is None
                and all(a.passed for a in self.agreement.values()))


def check_model_on_opencl(onnx_path, specs: list, input_shapes: dict | None,
                          input_npy=None) -> list[ModelOnOpenCL]:
    """Run the model's OpenCL build for each target on the local OpenCL device (on `input_npy`,
    else a held-out photo) and compare its output with ONNX Runtime and with the CPU (llvm)
    build of the same model, in output quantization steps. The references and the CPU kernels
    are computed once for all targets."""
    from compile.backend.schedules import build_with_default_schedules
    from compile.deploy.bench import reference_output
    from compile.deploy.inputs import model_input
    from compile.frontend import load_and_fold

    imported = load_and_fold(onnx_path, input_shapes)
    mod, x = imported.mod, model_input(imported.inputs[0], input_npy)
    cpu_kernels = CpuKernels()
    runs = [ModelOnOpenCL(spec.name, run_on_opencl(mod, spec.tvm_target(), [x], cpu_kernels=cpu_kernels))
            for spec in specs]
    if any(result.run.output is not None for result in runs):
        cpu_mod = load_and_fold(onnx_path, input_shapes).mod  # a fresh module: builds schedule functions in place
        cpu_vm = relax.VirtualMachine(build_with_default_schedules(cpu_mod, tvm.target.Target("llvm")), tvm.cpu())
        references = dict([reference_output(onnx_path, x), ("cpu build", cpu_vm["main"](tvm.runtime.tensor(x)).numpy())])
        for result in runs:
            if result.run.output is not None:
                result.agreement = {name: imported.outputs[0].agreement(result.run.output, want)
                                    for name, want in references.items()}
    return runs
