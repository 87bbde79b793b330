"""What bench and profile share: a checked artifact, where its jobs run, how they are timed,
with how many threads, on what input; one report row per device, the report's head, and the
folder the report goes to."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compile.artifact import Artifact, load_artifact
from compile.deploy.inputs import model_input
from compile.deploy.placement import Placement, placement_for, run_everywhere
from compile.deploy.reports import Writer, caption, command_line, write_report
from compile.deploy.rpc import Device
from compile.deploy.timing import Timing
from qatie.atomic import check_writable_folder


@dataclass(frozen=True)
class Deployment:
    artifact: Artifact
    placement: Placement
    timing: Timing
    threads: int  # requested on every device; 0: the runtime's default
    reports: Path  # where the report files go

    @classmethod
    def from_options(cls, folder: Path, tracker: str | None, key: str | None, local: bool, device_timeout_s: float,
                     session_timeout_s: float, timing: Timing, threads: int | None,
                     reports: Path | None) -> Deployment:
        """From the command line's options; threads default to the target file's `threads`, the
        reports to ARTIFACT/reports (checked writable before anything runs)."""
        reports = reports or folder / "reports"
        check_writable_folder(reports)
        artifact = load_artifact(folder)
        target = artifact.manifest.target
        placement = placement_for(tracker, key, local, device_timeout_s, session_timeout_s, target.rpc_key,
                                  target.name)
        return cls(artifact, placement, timing, target.threads if threads is None else threads, reports)

    def model_input(self, npy: Path | None) -> np.ndarray:
        """The model's input: the user's .npy, or the reference photo at the model's size."""
        return model_input(self.artifact.manifest.model.inputs[0], npy)

    def run(self, job: Callable[[Device], dict], log: Callable[[str], None]) -> list[dict]:
        """`job(device)` on every device of the placement: one report row per device."""
        return [{"device": name, **row} for name, row in run_everywhere(self.placement, job, log)]

    def report(self, devices: list[dict], **extra) -> dict:
        return {"command": command_line(),
                "caption": caption(self.artifact, self.placement, self.timing, self.threads),
                "artifact": str(self.artifact.folder), **extra, "devices": devices}

    def write(self, report: dict, formats: dict[str, Writer]) -> list[Path]:
        """Every format of `report` into the reports folder; the paths written."""
        return [self.reports / name for name in write_report(report, self.reports, formats)]
