"""One device session: is the device able to run this artifact, upload and load a library, the
device handle its kernels run on, and the thread count they run with.

The architecture comes from the server's LLVM (TVM's Python server) or from our session program
(`qatie.device.*`, emulated ARM devices); a runtime-only server (TVM's C++ RPC app) answers
neither, and a wrong library then fails at load with the library's arch named. Our session
program also reports the CPU's extensions: a library built for one the CPU lacks (`+dotprod` on
a Cortex-A53) would die with SIGILL mid-run, so it is refused before upload.
"""

from __future__ import annotations

from compile.artifact import Artifact, triple_architecture
from compile.deploy.rpc import Device, Tracker, Unresponsive, bounded, request_device, wait_for_devices
from qatie.errors import QatieError, last_line

SYSTEM_TRIPLE = "target.llvm_get_system_triple"
CONFIG_THREADPOOL, NUM_THREADS = "runtime.config_threadpool", "runtime.NumThreads"
REMOTE_ARRAY = "ffi.Array"  # builds a list on the device: RPC cannot pass one
BIG_CORES = 1  # TVM's thread affinity mode: the fastest cores first
# Globals of our session program (compile/offline/native/rpc_session.cc).
DEVICE_ARCH = "qatie.device.arch"
DEVICE_CPU_FEATURES = "qatie.device.cpu_features"
DEVICE_EMULATION = "qatie.device.emulation"
QUERY_SESSION_S = 60.0  # a session that only asks the device what it is


def _remote_string(device: Device, name: str) -> str | None:
    """A global string function of the device's server, None when that server does not have it."""
    try:
        return str(device.session.get_function(name)())
    except Exception:  # TVM raises several error types for a missing remote function
        return None


def emulation_of(tracker: Tracker, key: str, timeout_s: float) -> str | None:
    """How the devices under `key` are emulated (our emulated devices say so), None for real ones."""
    wait_for_devices(tracker, key, timeout_s)  # an unknown key or busy devices: the usual one-line errors
    allocation = request_device(tracker, key, timeout_s)
    what = f"device {allocation.name} (key '{key}')"
    try:
        device = bounded(lambda: allocation.connect(QUERY_SESSION_S), QUERY_SESSION_S, what)
        return bounded(lambda: _remote_string(device, DEVICE_EMULATION), QUERY_SESSION_S, what) or None
    except Unresponsive as exc:
        raise QatieError(f"{exc}; restart it or pass another --key") from None


def check_device(device: Device, artifact: Artifact) -> dict:
    """{"arch", "emulated"} of a device that can run the library; otherwise an error saying why."""
    triple = _remote_string(device, SYSTEM_TRIPLE)
    device_arch = triple_architecture(triple) if triple else (_remote_string(device, DEVICE_ARCH) or "unknown")
    library_arch = artifact.architecture
    if device_arch not in ("unknown", library_arch):
        raise QatieError(f"{artifact.library} is built for {library_arch} ({artifact.target_name}) but device "
                         f"{device.name} is {device_arch}; build for a target matching the device")
    features = _remote_string(device, DEVICE_CPU_FEATURES)
    if features is not None:
        missing = sorted(artifact.manifest.target.cpu_features - set(features.split(",")))
        if missing:
            raise QatieError(f"{artifact.library} is built for a CPU with {', '.join(missing)} ({artifact.target_name}, "
                             f"mcpu {artifact.manifest.target.tvm.get('mcpu', 'generic')}) but the CPU of device "
                             f"{device.name} lacks {'them' if len(missing) > 1 else 'it'} (it has {features}): the "
                             f"library would stop with SIGILL (illegal instruction); build for a target without "
                             f"{', '.join(missing)}")
    return {"arch": device_arch, "emulated": _remote_string(device, DEVICE_EMULATION) or None}


def set_threads(device: Device, threads: int) -> int:
    """Run the device's kernels on `threads` threads (0: the runtime's default, all big cores);
    returns the count the runtime actually uses (it caps a request at its cores).

    Unless its maximum concurrency is set, TVM's runtime asks the OS for the CPU count at every
    parallel loop (glibc and bionic read /sys/devices/system/cpu/online each time): ~6 us a loop,
    1.2 ms of the paper's 100x100 model's 4.7 ms on one Zen 4 core, which a deployed app that sets
    it (or TVM_NUM_THREADS) does not pay. The CPU list given to `config_threadpool` sets it (only
    its length counts with big-core affinity), and at one thread the loops then run inline,
    without the pool. The pool is created first with TVM's own worker count (`NumThreads`), which
    a larger concurrency set before it exists would raise."""
    default = int(device.session.get_function(NUM_THREADS)())  # creates the pool
    count = threads or default
    cpus = device.session.get_function(REMOTE_ARRAY)(*(str(i) for i in range(count)))
    device.session.get_function(CONFIG_THREADPOOL)(BIG_CORES, count, cpus)
    return int(device.session.get_function(NUM_THREADS)())


def load_on_device(device: Device, artifact: Artifact, path) -> object:
    """Upload and load one library; a device that cannot load it gets an error naming the arch."""
    device.session.upload(str(path))
    try:
        return device.session.load_module(path.name)
    except Exception as exc:
        if "ELF" in str(exc) or "format" in str(exc):
            raise QatieError(f"device {device.name} cannot load {path} (built for {artifact.architecture}, "
                             f"{artifact.target_name}): {last_line(exc)}") from None
        raise


def device_of(device: Device, artifact: Artifact):
    return device.session.cl(0) if artifact.on_gpu else device.session.cpu(0)
