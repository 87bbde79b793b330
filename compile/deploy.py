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
    return text.splitlines()[-1] if text else type(exc).__name__


def check_architecture(device: Device, artifact: Artifact) -> str:
    """The device's CPU architecture; an error naming both when the library was built for another."""
    library_arch = artifact.architecture
    try:
        device_arch = triple_architecture(device.session.get_function(SYSTEM_TRIPLE)())
    except Exception:  # a runtime-only server (TVM's C++ RPC app) has no LLVM to ask
        return "unknown"
    if device_arch != library_arch:
        raise QatieError(f"{artifact.library} is built for {library_arch} ({artifact.target_name}) but device "
                         f"{device.name} is {device_arch}; build for a target matching the device")
    return device_arch


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
