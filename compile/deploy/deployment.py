"""What bench and profile share: a checked artifact, where its jobs run, how they are timed,
and with how many threads; one report row per device, and the report's head."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from compile.artifact import Artifact, load_artifact
from compile.deploy.placement import Placement, placement_for, run_everywhere
from compile.deploy.reports import caption, command_line
from compile.deploy.rpc import Device
from compile.deploy.timing import Timing


@dataclass(frozen=True)
class Deployment:
    artifact: Artifact
    placement: Placement
    timing: Timing
    threads: int  # requested on every device; 0: the runtime's default

    @classmethod
    def from_options(cls, folder: Path, tracker: str | None, key: str | None, local: bool, device_timeout_s: float,
                     session_timeout_s: float, timing: Timing, threads: int | None) -> Deployment:
        """From the command line's options; threads default to the target file's `threads`."""
        artifact = load_artifact(folder)
        target = artifact.manifest.target
        placement = placement_for(tracker, key, local, device_timeout_s, session_timeout_s, target.rpc_key,
                                  target.name)
        return cls(artifact, placement, timing, target.threads if threads is None else threads)

    def run(self, job: Callable[[Device], dict], log: Callable[[str], None]) -> list[dict]:
        """`job(device)` on every device of the placement: one report row per device."""
        return [{"device": name, **row} for name, row in run_everywhere(self.placement, job, log)]

    def report(self, devices: list[dict], **extra) -> dict:
        return {"command": command_line(),
                "caption": caption(self.artifact, self.placement, self.timing, self.threads),
                "artifact": str(self.artifact.folder), **extra, "devices": devices}
