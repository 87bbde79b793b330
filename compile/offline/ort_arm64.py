"""ONNX Runtime's aarch64 runtime under qemu: what the ARM estimate compares our builds with.

A user who does not use TVM ships ONNX Runtime's CPU runtime. Its aarch64 pip wheel (the
host's ONNX Runtime version) carries `libonnxruntime.so`, the C API library; our program
`native/ort_run.c` is cross-compiled against it and runs the same QDQ ONNX file under qemu with
the block-profile plugin, in the same two-run protocol as our builds (one inference = a process
running twice minus one running once). ONNX Runtime picks its kernels by the CPU's features at
run time, so it runs under the qemu CPU model of the core being estimated (sdot on the A55/A76,
NEON on the A53).

ONNX Runtime reads /proc/cpuinfo at load (its cpuinfo library), and qemu-user passes the x86
host's file through: with no ARM processor in it, the library crashes before main. qemu looks a
guest's absolute paths up under its `-L` prefix first, so each CPU model gets a prefix folder
holding the aarch64 sysroot's `lib` and a /proc/cpuinfo of that core.
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
from compile.offline.host_tools import build_once, cache_dir, run_tool
from qatie.errors import QatieError

SOURCE = Path(__file__).resolve().parent / "native" / "ort_run.c"
PROGRAM, LIBRARY = "qatie_ort_run", "libonnxruntime.so.1"  # the wheel's library under its SONAME
BLOCKS, OUTPUT = "blocks.json", "output.npy"  # a cached run (`ort_blocks`)
# The lines of Linux's /proc/cpuinfo that identify an arm64 core (part numbers from ARM's
# technical reference manuals) and its hwcaps, for each qemu CPU model we emulate.
CPUINFO = {
    "cortex-a53": ("0xd03", "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"),
    "cortex-a76": ("0xd0b", ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm "
                             "lrcpc dcpop asimddp")),
}


@dataclass(frozen=True)
class OrtArm64:
    """A folder with ONNX Runtime's aarch64 library, our program, and a qemu prefix per CPU."""

    folder: Path
    version: str

    @property
    def label(self) -> str:
        return f"ONNX Runtime {self.version} aarch64 (pip wheel; CPU provider, default optimizations, 1 thread)"

    def prefix(self, qemu_cpu: str) -> Path:
        if qemu_cpu not in CPUINFO:
            raise QatieError(f"no /proc/cpuinfo for qemu CPU {qemu_cpu}; ONNX Runtime runs under {', '.join(CPUINFO)}")
        return self.folder / f"root-{qemu_cpu}"


def ensure_ort(log) -> OrtArm64:
    """The cached aarch64 ONNX Runtime for the installed version, downloaded and built once."""
    _, cxx = require_tools()
    version = metadata.version("onnxruntime")
    digest = hashlib.sha256(SOURCE.read_bytes() + repr(sorted(CPUINFO.items())).encode()).hexdigest()[:12]
    folder = cache_dir() / f"ort-arm64-{version}-{digest}"

    def make(runtime: Path) -> None:
        log(f"preparing ONNX Runtime {version} for aarch64 in {folder} (once)")
        with tempfile.TemporaryDirectory() as wheels:
            download_wheels({"onnxruntime": version}, Path(wheels))
            (wheel,) = Path(wheels).glob("onnxruntime-*.whl")
            with zipfile.ZipFile(wheel) as archive:
                (runtime / LIBRARY).write_bytes(archive.read(f"onnxruntime/capi/libonnxruntime.so.{version}"))
        run_tool([cxx, "-x", "c", "-O2", "-o", str(runtime / PROGRAM), str(SOURCE), f"-L{runtime}", f"-l:{LIBRARY}",
                  "-Wl,-rpath,$ORIGIN"], f"{SOURCE}: {CROSS_CXX} failed")
        for qemu_cpu, (part, features) in CPUINFO.items():
            root = runtime / f"root-{qemu_cpu}"
            (root / "proc").mkdir(parents=True)
            (root / "lib").symlink_to(SYSROOT / "lib")
            (root / "proc" / "cpuinfo").write_text(
                f"processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
                f"CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {part}\nCPU revision\t: 0\n\n")

    build_once(folder, PROGRAM, make)
    return OrtArm64(folder, version)


def check_interface(onnx: Path, model: ModelInfo) -> None:
    """`onnx` is a readable model (the build's checks) that takes and gives what the artifact's
    model does (names, shapes), as another export of the same network must; a one-line error
    otherwise."""
    from compile.frontend.onnx_loader import load_onnx

    graph = load_onnx(onnx).proto.graph
    theirs = [(v.name, [d.dim_value for d in v.type.tensor_type.shape.dim]) for v in (graph.input[0], graph.output[0])]
    ours = [(t.name, t.shape) for t in (model.inputs[0], model.outputs[0])]
    if theirs != ours:
        raise QatieError(f"{onnx}: takes and gives {theirs}, the artifact's model {ours}; pass an export of the "
                         f"same network at the same size (e.g. `qatie export --fp32`)")


def ort_blocks(ort: OrtArm64, onnx: Path, model: ModelInfo, x: np.ndarray, qemu_cpu: str) -> tuple[list[Block], np.ndarray]:
    """(the blocks of one inference of `onnx` in ONNX Runtime under qemu, its output).

    The same file, input, runtime and CPU run the same instructions, and running them under
    qemu is most of an estimate's time (bench and profile over an emulated device each add
    ONNX Runtime's estimate): the result is kept in the cache folder, keyed by all four and the
    plugin, as JSON and .npy (nothing in the cache executes)."""
    plugin = ensure_plugin()
    x = np.ascontiguousarray(x, dtype=np.float32)
    parts = [sha256(onnx), hashlib.sha256(x.tobytes()).hexdigest(), repr(x.shape), qemu_cpu, ort.folder.name,
             plugin.parent.name]
    key = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]
    folder = cache_dir() / "ort-runs" / key
    build_once(folder, OUTPUT, lambda run: _profile(ort, onnx, model, x, qemu_cpu, plugin, run))
    records = json.loads((folder / BLOCKS).read_text())
    blocks = [Block(place, offset, count, tuple(bytes.fromhex(i) for i in insns)) for place, offset, count, insns in records]
    return blocks, np.load(folder / OUTPUT, allow_pickle=False)


def _profile(ort: OrtArm64, onnx: Path, model: ModelInfo, x: np.ndarray, qemu_cpu: str, plugin: Path,
             out: Path) -> None:
    """Run `onnx` once and twice under qemu with the plugin; one inference's blocks and the
    output written into `out`."""
    qemu, _ = require_tools()
    source, target = model.inputs[0], model.outputs[0]
    with tempfile.TemporaryDirectory(prefix="qatie-ort-") as work:
        work = Path(work)
        x.tofile(work / "x.bin")

        def run(runs: int) -> list[Block]:
            blocks, maps = work / f"blocks{runs}.txt", work / f"maps{runs}.txt"
            command = [qemu, "-cpu", qemu_cpu, "-plugin", ",".join(plugin_arguments(plugin, blocks)),
                       "-L", str(ort.prefix(qemu_cpu)), str(ort.folder / PROGRAM), str(onnx.resolve()), source.name,
                       str(work / "x.bin"), "x".join(map(str, source.shape)), target.name, str(work / "y.bin"),
                       str(int(np.prod(target.shape))), str(runs), str(maps)]
            run_tool(command, f"{onnx}: {ort.label} under qemu -cpu {qemu_cpu} failed")
            return read_blocks(blocks, maps.read_text())

        blocks = one_run(run(1), run(2))
        (out / BLOCKS).write_text(json.dumps([[b.place, b.offset, b.count, [i.hex() for i in b.insns]] for b in blocks]))
        np.save(out / OUTPUT, np.fromfile(work / "y.bin", np.float32).reshape(target.shape), allow_pickle=False)
