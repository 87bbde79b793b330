"""Run a job (bench, profile) on every device under a key, or on this machine.

Devices are taken one at a time from the tracker and held until all are done, so each job
lands on a different device. A device that fails mid-job (server killed, connection lost) is
dropped and its job retried once on another device of the same key; a second failure is an
error naming both devices.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from compile.artifact import Artifact, triple_architecture
from compile.rpc_devices import (
    Device,
    Tracker,
    local_device,
    request_device,
    wait_for_devices,
)
from qatie.errors import QatieError

T = TypeVar("T")
SYSTEM_TRIPLE = "target.llvm_get_system_triple"
# Globals of our session program (compile/native/rpc_session.cc).
DEVICE_ARCH = "qatie.device.arch"
DEVICE_CPU_FEATURES = "qatie.device.cpu_features"
DEVICE_EMULATION = "qatie.device.emulation"


@dataclass(frozen=True)
class Placement:
    """Where jobs run: this machine, or the devices under `key` at `tracker`."""

    tracker: Tracker | None
    key: str | None
    device_timeout_s: float = 60.0

    @property
    def where(self) -> str:
        return "local" if self.tracker is None else f"key '{self.key}' at {self.tracker}"


def run_everywhere(placement: Placement, job: Callable[[Device], T], log: Callable[[str], None]) -> list[tuple[str, T]]:
    """[(device name, job result)] — one per live device under the key (or one local)."""
    if placement.tracker is None:
        return [("local", job(local_device()))]
    pending = wait_for_devices(placement.tracker, placement.key, placement.device_timeout_s)
    held: list[Device] = []
    results: list[tuple[str, T]] = []
    lost: str | None = None  # the device that failed (at most one may)
    label = ""  # marks the row that carries the failed device's retry
    while pending:
        try:
            device = request_device(placement.tracker, placement.key, placement.device_timeout_s)
        except QatieError as exc:
            if lost is None:
                raise
            raise QatieError(f"device {lost} failed during the job and no other device could take the retry: {exc}") from None
        pending -= 1
        try:
            result = job(device)
        except QatieError:
            raise
        except Exception as exc:  # the device went away mid-job: TVM raises RPC/OS errors of many kinds
            if lost is not None:
                raise QatieError(f"device {lost} failed and the retry on {device.name} failed too "
                                 f"({_last_line(exc)})") from None
            lost = device.name
            log(f"device {lost} failed during the job ({_last_line(exc)}); retrying once on another device")
            label = f" (retry of {lost})"
            if not pending:  # every other device is held by us, already measured: free one for the retry
                for other in held:
                    other.close()
                held.clear()
                pending = 1
            continue
        results.append((device.name + label, result))
        label = ""
        held.append(device)
    for device in held:
        device.close()
    return results


def _last_line(exc: Exception) -> str:
    text = str(exc).strip()
    if "code=kShutdown" in text:
        return "the device's server process ended mid-session: it crashed (e.g. SIGILL) or was killed; see its log"
    return text.splitlines()[-1] if text else type(exc).__name__


def _remote_string(device: Device, name: str) -> str | None:
    """A global string function of the device's server, None when that server does not have it."""
    try:
        return str(device.session.get_function(name)())
    except Exception:  # TVM raises several error types for a missing remote function
        return None


def emulation_of(tracker: Tracker, key: str, timeout_s: float) -> str | None:
    """How the devices under `key` are emulated (our emulated devices say so), None for real ones."""
    wait_for_devices(tracker, key, timeout_s)  # an unknown key or busy devices: the usual one-line errors
    device = request_device(tracker, key, timeout_s)
    try:
        return _remote_string(device, DEVICE_EMULATION) or None
    finally:
        device.close()


def check_device(device: Device, artifact: Artifact) -> dict:
    """{"arch", "emulated"} of a device that can run the library; otherwise an error saying why.

    The architecture comes from the server's LLVM (TVM's Python server) or from our session
    program (`qatie.device.*`, emulated ARM devices); a runtime-only server (TVM's C++ RPC app)
    answers neither, and a wrong library then fails at load with the library's arch named.
    Our session program also reports the CPU's extensions: a library built for one the CPU lacks
    (`+dotprod` on a Cortex-A53) would die with SIGILL mid-run, so it is refused before upload.
    """
    triple = _remote_string(device, SYSTEM_TRIPLE)
    device_arch = triple_architecture(triple) if triple else (_remote_string(device, DEVICE_ARCH) or "unknown")
    library_arch = artifact.architecture
    if device_arch not in ("unknown", library_arch):
        raise QatieError(f"{artifact.library} is built for {library_arch} ({artifact.target_name}) but device "
                         f"{device.name} is {device_arch}; build for a target matching the device")
    features = _remote_string(device, DEVICE_CPU_FEATURES)
    if features is not None:
        missing = sorted(artifact.cpu_features - set(features.split(",")))
        if missing:
            raise QatieError(f"{artifact.library} is built for a CPU with {', '.join(missing)} ({artifact.target_name}, "
                             f"mcpu {artifact.manifest['target']['tvm'].get('mcpu', 'generic')}) but the CPU of device "
                             f"{device.name} lacks {'them' if len(missing) > 1 else 'it'} (it has {features}): the library would stop with SIGILL "
                             f"(illegal instruction); build for a target without {', '.join(missing)}")
    return {"arch": device_arch, "emulated": _remote_string(device, DEVICE_EMULATION) or None}


def load_on_device(device: Device, artifact: Artifact, path) -> object:
    """Upload and load one library; a device that cannot load it gets an error naming the arch."""
    device.session.upload(str(path))
    try:
        return device.session.load_module(path.name)
    except Exception as exc:
        if "ELF" in str(exc) or "format" in str(exc):
            raise QatieError(f"device {device.name} cannot load {path} (built for {artifact.architecture}, "
                             f"{artifact.target_name}): {str(exc).strip().splitlines()[-1]}") from None
        raise


def device_of(device: Device, artifact: Artifact):
    return device.session.cl(0) if artifact.on_gpu else device.session.cpu(0)


def latency_stats(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1e3
    return {"repeats": int(ms.size), "median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)),
            "min_ms": float(ms.min()), "max_ms": float(ms.max()), "std_ms": float(ms.std())}
