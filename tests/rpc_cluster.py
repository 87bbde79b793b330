"""A real TVM RPC tracker and servers on 127.0.0.1, started with our own `qatie-compile rpc`
wrappers (and `qatie-compile emulate arm64` for emulated ARM devices), for the tune, deploy and
emulation tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from qatie.errors import QatieError
from tests.helpers import console_script

KEY = "qatie-test"
REGISTER_TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(args: list[str], log: Path) -> subprocess.Popen:
    """`qatie-compile ARGS` in its own process group, output to `log`."""
    with open(log, "w") as sink:  # the child keeps its own copy of the descriptor
        # Own process group: the Python RPC server serves each session in a child process,
        # and killing a server must kill that child too.
        return subprocess.Popen([console_script("qatie-compile"), *args], stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)


@dataclass
class Cluster:
    port: int
    server_logs: list[Path]
    servers: list[subprocess.Popen] = field(default_factory=list)
    tracker: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def free(self, key: str = KEY) -> int:
        from compile.deploy.rpc import Tracker, device_counts, tracker_summary

        try:
            return device_counts(tracker_summary(Tracker("127.0.0.1", self.port))).get(key, (0, 0))[1]
        except QatieError:  # the tracker is still starting
            return 0

    def tracker_up(self) -> bool:
        from compile.deploy.rpc import Tracker, tracker_summary

        try:
            tracker_summary(Tracker("127.0.0.1", self.port))
            return True
        except QatieError:
            return False

    def kill_server(self, index: int) -> None:
        os.killpg(self.servers[index].pid, signal.SIGKILL)
        self.servers[index].wait()

    def stop(self) -> None:
        for process in [*self.servers, self.tracker]:
            if process and process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def start_cluster(logs: Path, servers: int = 2, emulated: dict[str, str] | None = None) -> Cluster:
    """Tracker + `servers` RPC servers under KEY, plus one emulated arm64 device per
    {key: target name} in `emulated`; returns once all are registered and free."""
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cluster = Cluster(port, [logs / f"server{i}.log" for i in range(servers)])
    cluster.tracker = _spawn(["rpc", "tracker", "--port", str(port)], logs / "tracker.log")
    for log in cluster.server_logs:
        cluster.servers.append(_spawn(["rpc", "server", "--tracker", cluster.address, "--key", KEY,
                                       "--port", str(free_port())], log))
    expected = {KEY: servers} if servers else {}
    for key, target in (emulated or {}).items():
        _wait(cluster, {}, deadline=time.monotonic() + REGISTER_TIMEOUT_S)  # the emulator checks the tracker first
        cluster.server_logs.append(logs / f"{key}.log")
        cluster.servers.append(_spawn(["emulate", "arm64", "--tracker", cluster.address, "--target", target,
                                       "--key", key], cluster.server_logs[-1]))
        expected[key] = 1
    _wait(cluster, expected, deadline=time.monotonic() + REGISTER_TIMEOUT_S)
    return cluster


def _wait(cluster: Cluster, expected: dict[str, int], deadline: float) -> None:
    """Until the tracker answers and holds `expected` free devices per key."""
    while not cluster.tracker_up() or any(cluster.free(key) < count for key, count in expected.items()):
        if time.monotonic() > deadline:
            cluster.stop()
            raise AssertionError(f"RPC devices did not register with the tracker: {expected}")
        time.sleep(0.5)
