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

from compile.deploy.rpc import (
    Device,
    Tracker,
    bounded,
    local_device,
    parse_tracker,
    request_device,
    wait_for_devices,
)
from qatie.errors import QatieError, last_line

T = TypeVar("T")


@dataclass(frozen=True)
class Placement:
    """Where jobs run: this machine, or the devices under `key` at `tracker`."""

    tracker: Tracker | None
    key: str | None
    device_timeout_s: float = 60.0  # waiting for a free device
    session_timeout_s: float = 300.0  # one device's whole job: handshake, uploads, every run

    @property
    def where(self) -> str:
        return "local" if self.tracker is None else f"key '{self.key}' at {self.tracker}"


def placement_for(tracker: str | None, key: str | None, local: bool, device_timeout_s: float,
                  session_timeout_s: float, default_key: str | None, target_name: str) -> Placement:
    """--local, or --tracker HOST:PORT with --key (default: the artifact's rpc_key)."""
    if local == bool(tracker):
        raise QatieError("give either --local or --tracker HOST:PORT (with --key)")
    if local:
        return Placement(None, None)
    placement = Placement(parse_tracker(tracker), key or default_key or "", device_timeout_s, session_timeout_s)
    if not placement.key:
        raise QatieError(f"target {target_name} has no rpc_key; pass --key")
    return placement


def run_everywhere(placement: Placement, job: Callable[[Device], T], log: Callable[[str], None]) -> list[tuple[str, T]]:
    """[(device name, job result)] — one per live device under the key (or one local)."""
    if placement.tracker is None:
        return [("local", job(local_device()))]
    pending = wait_for_devices(placement.tracker, placement.key, placement.device_timeout_s)
    held: list[Device] = []
    results: list[tuple[str, T]] = []
    lost: str | None = None  # the device that failed (at most one may)
    lost_reason = ""
    label = ""  # marks the row that carries the failed device's retry
    while pending:
        try:
            allocation = request_device(placement.tracker, placement.key, placement.device_timeout_s)
        except QatieError as exc:
            if lost is None:
                raise
            raise QatieError(f"device {lost} failed during the job ({lost_reason}) and no other device could take "
                             f"the retry: {exc}") from None
        pending -= 1

        def connect_and_run(allocation=allocation) -> tuple[Device, T]:
            device = allocation.connect(placement.session_timeout_s)
            return device, job(device)

        try:
            device, result = bounded(connect_and_run, placement.session_timeout_s,
                                     f"device {allocation.name} (key '{placement.key}')")
        except QatieError:
            raise
        except Exception as exc:  # the device went away or hung mid-job: TVM raises errors of many kinds
            if lost is not None:
                raise QatieError(f"device {lost} failed and the retry on {allocation.name} failed too "
                                 f"({_failure(exc)})") from None
            lost, lost_reason = allocation.name, _failure(exc)
            log(f"device {lost} failed during the job ({lost_reason}); retrying once on another device")
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


def _failure(exc: Exception) -> str:
    """Why a device's job failed, in words."""
    if "code=kShutdown" in str(exc):
        return "the device's server process ended mid-session: it crashed (e.g. SIGILL) or was killed; see its log"
    return last_line(exc)
