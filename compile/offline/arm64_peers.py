"""The runtimes a user would ship instead of our build, on aarch64 under qemu: what the ARM
estimate compares our builds with, one per model format (`PEERS`, by the model's suffix).

- `.onnx`: ONNX Runtime's CPU runtime. Its aarch64 pip wheel (the host's ONNX Runtime version)
  carries `libonnxruntime.so`, the C API library; `native/ort_run.c` runs the same QDQ ONNX
  file through it (CPU execution provider, default graph optimizations, one thread).
- `.tflite`: LiteRT, which Android apps ship for TFLite models. Its aarch64 pip wheel
  (`ai-edge-litert`, the host's version) carries `libLiteRt.so`, LiteRT's C API library;
  `native/litert_run.c` runs the same TFLite file through its CompiledModel API on the CPU
  accelerator (XNNPACK), one thread.

Each program is cross-compiled against its library once into the cache folder and run under
qemu with the block-profile plugin, in the same two-run protocol as our builds (one inference =
a process running the model twice minus one running it once). Both runtimes pick their kernels
by the CPU's features at run time, so each runs under the qemu CPU model of the core being
estimated (sdot on the A55/A76, NEON on the A53), and XNNPACK also by the core itself (it has
microkernels scheduled for the in-order A53/A55).

Both read /proc/cpuinfo at load (the cpuinfo library), and qemu-user passes the x86 host's file
through: with no ARM processor in it, ONNX Runtime crashes before main and XNNPACK would pick
kernels for no known core. qemu looks a guest's absolute paths up under its `-L` prefix first,
so each estimated core gets a prefix folder holding the aarch64 sysroot's `lib` and a
/proc/cpuinfo naming that core (qemu 7.2 has no A55 model; the A55's runs under the A76's, which
has the same extensions, with the A55's part number in /proc/cpuinfo).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from compile.artifact import ModelInfo, sha256
from compile.offline.arm64_runtime import (
    CROSS_CXX,
    SYSROOT,
    download_wheels,
    require_tools,
)
from compile.offline.block_profile import (
    Block,
    ensure_plugin,
    one_run,
    plugin_arguments,
    read_blocks,
)
from compile.offline.cycle_model import Core
from compile.offline.host_tools import build_once, cache_dir, run_tool
from qatie.errors import QatieError

NATIVE = Path(__file__).resolve().parent / "native"
SHARED_HEADER = NATIVE / "peer_run.h"  # what the programs share (input file, memory map)
BLOCKS, OUTPUT = "blocks.json", "output.npy"  # a cached run (`Peer.blocks`)
# The lines of Linux's /proc/cpuinfo that identify an arm64 core (part numbers from ARM's
# technical reference manuals; the variant is the rN of its revision rNpM) and its hwcaps, for
# each core the estimate knows (`CORES`). The A55 is stated as r1p0: the cpuinfo library treats an
# A55 r0p0 as having no dot product (measured: XNNPACK then ran the paper's 100x100 model in
# 309.5 M instructions with no sdot, against 131.8 M with r1p0 or r2p0), and shipping phones'
# A55s are r1p0 or later.
ARMV8_0_HWCAPS = "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"
ARMV8_2_HWCAPS = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
CPUINFO = {"cortex-a53": ("0xd03", "0x0", ARMV8_0_HWCAPS), "cortex-a55": ("0xd05", "0x1", ARMV8_2_HWCAPS),
           "cortex-a76": ("0xd0b", "0x0", ARMV8_2_HWCAPS)}


@dataclass(frozen=True)
class PeerRuntime:
    """One runtime's aarch64 library (taken from its pip wheel), our C program linked against
    it, and how the program is called. Subclasses give the call."""

    name: str  # the runtime's name in reports
    distribution: str  # its pip distribution: the host's version of it is the one emulated
    member: str  # the library's path inside the wheel ({version}: the version)
    library: str  # the file the program links (the library's SONAME)
    source: str  # the program's C source, in native/
    settings: str  # how the program runs it, for the label

    def arguments(self, model: Path, info: ModelInfo, work: Path, runs: int, maps: Path) -> list[str]:
        """The program's arguments to run `model` `runs` times on work/x.bin into work/y.bin."""
        raise NotImplementedError

    def input_bytes(self, x: np.ndarray) -> bytes:
        return np.ascontiguousarray(x).tobytes()

    def output(self, data: bytes, info: ModelInfo) -> np.ndarray:
        tensor = info.outputs[0]
        return np.frombuffer(data, np.dtype(tensor.dtype)).reshape(tensor.shape)


@dataclass(frozen=True)
class OnnxRuntimePeer(PeerRuntime):
    def arguments(self, model: Path, info: ModelInfo, work: Path, runs: int, maps: Path) -> list[str]:
        source, target = info.inputs[0], info.outputs[0]
        return [str(model), source.name, str(work / "x.bin"), "x".join(map(str, source.shape)), target.name,
                str(work / "y.bin"), str(int(np.prod(target.shape))), str(runs), str(maps)]

    def input_bytes(self, x: np.ndarray) -> bytes:
        return np.ascontiguousarray(x, dtype=np.float32).tobytes()  # the program feeds float32

    def output(self, data: bytes, info: ModelInfo) -> np.ndarray:
        return np.frombuffer(data, np.float32).reshape(info.outputs[0].shape)


@dataclass(frozen=True)
class LiteRtPeer(PeerRuntime):
    def arguments(self, model: Path, info: ModelInfo, work: Path, runs: int, maps: Path) -> list[str]:
        return [str(model), str(work / "x.bin"), str(work / "y.bin"), str(runs), str(maps)]


PEERS = {
    ".onnx": OnnxRuntimePeer("ONNX Runtime", "onnxruntime", "onnxruntime/capi/libonnxruntime.so.{version}",
                             "libonnxruntime.so.1", "ort_run.c", "CPU provider, default optimizations, 1 thread"),
    ".tflite": LiteRtPeer("LiteRT", "ai-edge-litert", "ai_edge_litert/libLiteRt.so", "libLiteRt.so",
                          "litert_run.c", "CompiledModel API, CPU accelerator (XNNPACK), 1 thread"),
}


def peer_for(model: Path) -> PeerRuntime:
    """The runtime a user ships `model`'s format with; a one-line error for other formats."""
    peer = PEERS.get(model.suffix.lower())
    if peer is None:
        raise QatieError(f"{model}: no aarch64 runtime to estimate for a {model.suffix or 'suffix-less'} file; "
                         f"peers run {', '.join(PEERS)} models")
    return peer


@dataclass(frozen=True)
class PreparedPeer:
    """A folder with a peer's aarch64 library, our program, and a qemu prefix per CPU."""

    runtime: PeerRuntime
    folder: Path
    version: str

    @property
    def program(self) -> Path:
        return self.folder / Path(self.runtime.source).stem

    @property
    def label(self) -> str:
        return f"{self.runtime.name} {self.version} aarch64 (pip wheel; {self.runtime.settings})"

    def prefix(self, core: Core) -> Path:
        if core.name not in CPUINFO:
            raise QatieError(f"no /proc/cpuinfo for {core.name}; {self.runtime.name} runs as {', '.join(CPUINFO)}")
        return self.folder / f"root-{core.name}"


def prepare(runtime: PeerRuntime, log) -> PreparedPeer:
    """The cached aarch64 build of `runtime` for the installed version, downloaded and built once."""
    _, cxx = require_tools()
    try:
        version = metadata.version(runtime.distribution)
    except metadata.PackageNotFoundError:
        raise QatieError(f"estimating {runtime.name} needs its host package to choose the version: "
                         f"pip install {runtime.distribution} (or `pip install -e .[peers]`)") from None
    source = NATIVE / runtime.source
    digest = hashlib.sha256(source.read_bytes() + SHARED_HEADER.read_bytes()
                            + repr(sorted(CPUINFO.items())).encode()).hexdigest()[:12]
    prepared = PreparedPeer(runtime, cache_dir() / f"{runtime.distribution}-arm64-{version}-{digest}", version)

    def make(folder: Path) -> None:
        log(f"preparing {runtime.name} {version} for aarch64 in {prepared.folder} (once)")
        with tempfile.TemporaryDirectory() as wheels:
            download_wheels({runtime.distribution: version}, Path(wheels))
            (wheel,) = Path(wheels).glob(runtime.distribution.replace("-", "_") + "-*.whl")
            with zipfile.ZipFile(wheel) as archive:
                (folder / runtime.library).write_bytes(archive.read(runtime.member.format(version=version)))
        run_tool([cxx, "-x", "c", "-O2", f"-I{NATIVE}", "-o", str(folder / prepared.program.name), str(source), f"-L{folder}",
                  f"-l:{runtime.library}", "-Wl,-rpath,$ORIGIN"], f"{source}: {CROSS_CXX} failed")
        for core, (part, variant, features) in CPUINFO.items():
            root = folder / f"root-{core}"
            (root / "proc").mkdir(parents=True)
            (root / "lib").symlink_to(SYSROOT / "lib")
            (root / "proc" / "cpuinfo").write_text(
                f"processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
                f"CPU architecture: 8\nCPU variant\t: {variant}\nCPU part\t: {part}\nCPU revision\t: 0\n\n")

    build_once(prepared.folder, prepared.program.name, make)
    return prepared


def peer_blocks(peer: PreparedPeer, model: Path, info: ModelInfo, x: np.ndarray,
                core: Core) -> tuple[list[Block], np.ndarray]:
    """(the blocks of one inference of `model` in `peer` under qemu as `core`, its output).

    The same file, input, runtime and core run the same instructions, and running them under
    qemu is most of an estimate's time (bench and profile over an emulated device each add the
    peer's estimate): the result is kept in the cache folder, keyed by all four and the plugin,
    as JSON and .npy (nothing in the cache executes)."""
    plugin = ensure_plugin()
    data = peer.runtime.input_bytes(x)
    parts = [sha256(model), hashlib.sha256(data).hexdigest(), repr(x.shape), core.name, peer.folder.name,
             plugin.parent.name]
    key = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]
    folder = cache_dir() / "peer-runs" / key
    build_once(folder, OUTPUT, lambda out: _profile(peer, model, info, data, core, plugin, out))
    records = json.loads((folder / BLOCKS).read_text())
    blocks = [Block(place, offset, count, tuple(bytes.fromhex(i) for i in insns)) for place, offset, count, insns in records]
    return blocks, np.load(folder / OUTPUT, allow_pickle=False)


def _profile(peer: PreparedPeer, model: Path, info: ModelInfo, data: bytes, core: Core, plugin: Path,
             out: Path) -> None:
    """Run `model` once and twice under qemu with the plugin; one inference's blocks and the
    output written into `out`."""
    qemu, _ = require_tools()
    with tempfile.TemporaryDirectory(prefix="qatie-peer-") as work:
        work = Path(work)
        (work / "x.bin").write_bytes(data)

        def run(runs: int) -> list[Block]:
            blocks, maps = work / f"blocks{runs}.txt", work / f"maps{runs}.txt"
            command = [qemu, "-cpu", core.qemu_cpu, "-plugin", ",".join(plugin_arguments(plugin, blocks)),
                       "-L", str(peer.prefix(core)), str(peer.program),
                       *peer.runtime.arguments(model.resolve(), info, work, runs, maps)]
            run_tool(command, f"{model}: {peer.label} as {core.name} (qemu -cpu {core.qemu_cpu}) failed")
            return read_blocks(blocks, maps.read_text())

        blocks = one_run(run(1), run(2))
        (out / BLOCKS).write_text(json.dumps([[b.place, b.offset, b.count, [i.hex() for i in b.insns]] for b in blocks]))
        np.save(out / OUTPUT, peer.runtime.output((work / "y.bin").read_bytes(), info), allow_pickle=False)


def check_interface(model: Path, info: ModelInfo) -> None:
    """`model` is a readable ONNX file (the build's checks) that takes and gives what the
    artifact's model does (names, shapes), as another export of the same network must; a
    one-line error otherwise."""
    from compile.frontend.onnx_loader import load_onnx

    graph = load_onnx(model).proto.graph
    theirs = [(v.name, [d.dim_value for d in v.type.tensor_type.shape.dim]) for v in (graph.input[0], graph.output[0])]
    ours = [(t.name, t.shape) for t in (info.inputs[0], info.outputs[0])]
    if theirs != ours:
        raise QatieError(f"{model}: takes and gives {theirs}, the artifact's model {ours}; pass an export of the "
                         f"same network at the same size (e.g. `qatie export --fp32`)")
