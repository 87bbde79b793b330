"""`qatie-compile estimate`: estimated cycles per kernel of an aarch64 build on named ARM cores.

There is no phone here, and qemu's wall time says nothing about one. What qemu does say exactly
is which instructions a model runs: the model runs in our aarch64 session program under qemu
with the block-profile plugin, so every translated block comes back with its execution count.
Two sessions, one running the model once and one twice, differ by exactly one inference: the
upload, library loading and VM set-up cancel out. Each block costs what llvm-mca's model of the
core says per execution; the sum over a kernel's blocks is its estimated cycles, and the blocks
outside the kernels (the VM, TVM's runtime, libc) are the inference's remaining cost. The
counts are exact and deterministic; the cycles are a model (L1 hits, no memory stalls) and are
labelled so wherever they appear.
"""

from __future__ import annotations

import tempfile
import threading
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compile.artifact import Artifact
from compile.backend.targets import get_target
from compile.deploy.device import check_device, load_on_device, set_threads
from compile.deploy.rpc import Allocation
from compile.offline.arm64_runtime import ensure_runtime
from compile.offline.block_profile import (
    Block,
    ensure_plugin,
    one_run,
    plugin_arguments,
    read_blocks,
)
from compile.offline.code_map import CodeMap
from compile.offline.cycle_model import CORES, Core, CycleModel
from compile.offline.emulator import listen, run_session
from compile.tvm_private import serve_one_session
from qatie.errors import QatieError

DEVICE_MAPS = "qatie.device.maps"  # a global of our session program (native/rpc_session.cc)
SESSION_KEY = "qatie-estimate"
SESSION_S = 1800.0


@dataclass(frozen=True)
class KernelEstimate:
    name: str
    calls: int
    macs: int  # per call
    instructions: int  # executed in one inference, all calls
    cycles: float  # estimated, one inference, all calls

    def ms(self, clock_ghz: float) -> float:
        return self.cycles / (clock_ghz * 1e6)

    @property
    def macs_per_cycle(self) -> float:
        return self.macs * self.calls / self.cycles if self.cycles else 0.0


@dataclass(frozen=True)
class Estimate:
    """One core's estimate of one inference, kernel by kernel, and the rest of the inference."""

    core: Core
    label: str
    clock_ghz: float
    kernels: list[KernelEstimate]
    outside_instructions: int  # the VM, TVM's runtime, libc: outside the library's kernels
    outside_cycles: float

    @property
    def cycles(self) -> float:
        return sum(k.cycles for k in self.kernels) + self.outside_cycles

    def as_dict(self) -> dict:
        return {"core": self.core.name, "label": self.label, "clock_ghz": self.clock_ghz,
                "cycles": self.cycles, "ms": self.cycles / (self.clock_ghz * 1e6),
                "instructions": sum(k.instructions for k in self.kernels) + self.outside_instructions,
                "outside_kernels": {"instructions": self.outside_instructions, "cycles": self.outside_cycles},
                "kernels": [{"name": k.name, "kind": "conv" if k.macs else "other", "calls": k.calls,
                             "instructions": k.instructions, "cycles": k.cycles, "ms": k.ms(self.clock_ghz),
                             "macs_per_cycle": k.macs_per_cycle}
                            for k in sorted(self.kernels, key=lambda k: k.cycles, reverse=True)]}


def cores_for(artifact: Artifact, names: tuple[str, ...]) -> list[Core]:
    """The named cores (default: every core the build can run on); a core lacking an extension
    the build uses is refused, as the device would refuse the library."""
    needed = artifact.manifest.target.cpu_features
    if not names:
        return [core for core in CORES.values() if needed <= core.features]
    cores = []
    for name in names:
        if name not in CORES:
            raise QatieError(f"--core {name}: no such core; choose one of {', '.join(CORES)}")
        missing = sorted(needed - CORES[name].features)
        if missing:
            raise QatieError(f"--core {name}: {artifact.library} uses {', '.join(missing)} ({artifact.target_name}), "
                             f"which {name} lacks; estimate it on {' or '.join(c for c in CORES if needed <= CORES[c].features)}, "
                             f"or build for a target without {', '.join(missing)}")
        cores.append(CORES[name])
    return cores


def profile_blocks(artifact: Artifact, x: np.ndarray, log) -> list[Block]:
    """The blocks of one inference of the model under qemu, 1 thread."""
    if artifact.architecture != "aarch64":
        raise QatieError(f"{artifact.library} is built for {artifact.architecture} ({artifact.target_name}); "
                         f"estimates are for aarch64 builds: build for arm64-linux or arm64-linux-dotprod")
    qemu_cpu = get_target(artifact.target_name).qemu_cpu
    if not qemu_cpu:
        raise QatieError(f"target {artifact.target_name} names no qemu_cpu to run {artifact.library} under; "
                         f"add one to its target file (e.g. cortex-a53)")
    runtime, plugin = ensure_runtime(log), ensure_plugin()

    def session(runs: int, out: Path) -> list[Block]:
        listener, outcome = listen("127.0.0.1", 0), []

        def serve_one(conn, _addr, opts: dict, _load_library) -> None:
            outcome.append(run_session(runtime, qemu_cpu, conn, opts.get("timeout"), plugin_arguments(plugin, out)))

        port = listener.getsockname()[1]
        server = threading.Thread(target=serve_one_session, args=(listener, port, SESSION_KEY, serve_one), daemon=True)
        server.start()
        maps = _run(Allocation("127.0.0.1", port, SESSION_KEY), artifact, x, runs)
        server.join(SESSION_S)
        listener.close()
        if not out.is_file():
            raise QatieError(f"the emulated session ({qemu_cpu}) ended without a block profile: "
                             f"{outcome[0] if outcome else 'it did not end'}")
        return read_blocks(out, maps)

    with tempfile.TemporaryDirectory(prefix="qatie-estimate-") as work:
        return one_run(session(1, Path(work) / "once.txt"), session(2, Path(work) / "twice.txt"))


def _run(allocation: Allocation, artifact: Artifact, x: np.ndarray, runs: int) -> str:
    """The model run `runs` times in a fresh session, which ends when this returns (its objects
    with it); the session's memory map."""
    import tvm
    from tvm import relax

    device = allocation.connect(SESSION_S)
    check_device(device, artifact)
    set_threads(device, 1)
    library = load_on_device(device, artifact, artifact.library)
    maps = str(device.session.get_function(DEVICE_MAPS)())
    dev = device.session.cpu(0)
    vm = relax.VirtualMachine(library, dev)
    inputs = tvm.runtime.tensor(x, dev)
    for _ in range(runs):
        vm["main"](inputs)
    return maps


def estimate(artifact: Artifact, blocks: list[Block], cores: list[Core], clock_ghz: float | None) -> list[Estimate]:
    """Each core's estimate from the blocks of one inference."""
    table = artifact.manifest.kernels.kernels
    code = CodeMap.of(artifact.library, {k.name for k in table})
    by_kernel: dict[str | None, list[Block]] = defaultdict(list)
    for block in blocks:
        by_kernel[code.kernel_of(block)].append(block)
    estimates = []
    for core in cores:
        model = CycleModel(core)
        cycles = model.totals(by_kernel)
        kernels = [KernelEstimate(k.name, k.calls, k.macs, sum(b.instructions for b in by_kernel[k.name]),
                                  cycles.get(k.name, 0.0)) for k in table]
        estimates.append(Estimate(core, model.label, clock_ghz or core.clock_ghz, kernels,
                                  sum(b.instructions for b in by_kernel[None]), cycles.get(None, 0.0)))
    return estimates


def whole_run(blocks: list[Block], core: Core, clock_ghz: float | None) -> dict:
    """One core's estimate of all `blocks` together (a runtime whose code has no kernel symbols)."""
    model = CycleModel(core)
    cycles = model.totals({"all": blocks})["all"]
    return {"label": model.label, "instructions": sum(b.instructions for b in blocks), "cycles": cycles,
            "ms": cycles / ((clock_ghz or core.clock_ghz) * 1e6)}


def peers_beside(estimates: list[dict], artifact: Artifact, models: list[Path], x: np.ndarray, cores: list[Core],
                 clock_ghz: float | None, log) -> None:
    """Add the aarch64 estimate of the runtime each model's format ships with (ONNX Runtime for
    .onnx, LiteRT for .tflite: `arm64_peers.PEERS`) to each core's estimate: the artifact's own
    model file first, then other exports of the same network a user might ship instead (float,
    uint8 activations). Each entry ("peers", a list) has the ratio of its cycles to ours and its
    output's agreement with the reference of its format (ONNX Runtime's spec semantics, LiteRT's
    reference kernels: `deploy.bench.SOURCE_REFERENCES`) on the host; "fastest_peer" names the
    fastest and how many times faster ours is."""
    from compile.deploy.bench import reference_output
    from compile.offline.arm64_peers import peer_blocks, peer_for, prepare

    info = artifact.manifest.model
    output = info.outputs[0]
    peers = {model: prepare(peer_for(model), log) for model in models}
    runs = {(model, core.name): peer_blocks(peers[model], model, info, x, core) for model in models for core in cores}
    references = {model: reference_output(model, x) for model in models}
    for core, ours in zip(cores, estimates, strict=True):
        entries = []
        for model in models:
            blocks, got = runs[model, core.name]
            theirs = whole_run(blocks, core, clock_ghz)
            reference, want = references[model]
            entries.append({"model": model.name, "runtime": peers[model].label, "qemu_cpu": core.qemu_cpu,
                            "as_core": core.name, **theirs,
                            "speedup": theirs["cycles"] / ours["cycles"], "reference": reference,
                            "agreement": output.agreement(got, want).as_dict()})
        fastest = min(entries, key=lambda entry: entry["cycles"])
        ours["peers"] = entries
        ours["fastest_peer"] = {"model": fastest["model"], "runtime": fastest["runtime"], "speedup": fastest["speedup"]}


def estimate_here(artifact: Artifact, x: np.ndarray, cores: list[Core], clock_ghz: float | None, log,
                  peer_models: list[Path] = ()) -> list[dict]:
    """One inference profiled under qemu on this host, estimated on each core (report dicts);
    the aarch64 estimate of each of `peer_models` in the runtime its format ships with beside each."""
    estimates = [e.as_dict() for e in estimate(artifact, profile_blocks(artifact, x, log), cores, clock_ghz)]
    if peer_models:
        peers_beside(estimates, artifact, list(peer_models), x, cores, clock_ghz, log)
    return estimates
