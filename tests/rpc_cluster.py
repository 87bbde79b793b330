"""A real TVM RPC tracker and servers on 127.0.0.1, started with our own `qatie-compile rpc`
wrappers, for the tune and deploy tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from qatie.errors import QatieError
from tests.conftest import console_script

KEY = "qatie-test"
REGISTER_TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as sink:  # the child keeps its own copy of the descriptor
        # Own process group: the Python RPC server serves each session in a child process,
        # and killing a server must kill that child too.
        return subprocess.Popen([console_script("qatie-compile"), "rpc", *args], stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)


@dataclass
class Cluster:
    port: int
    server_logs: list[Path]
    servers: list[subprocess.Popen] = field(default_factory=list)
    tracker: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def free(self) -> int:
        from compile.rpc_devices import Tracker, device_counts, tracker_summary

        try:
            return device_counts(tracker_summary(Tracker("127.0.0.1", self.port))).get(KEY, (0, 0))[1]
        except QatieError:  # the tracker is still starting
            return 0

    def kill_server(self, index: int) -> None:
        os.killpg(self.servers[index].pid, signal.SIGKILL)
        self.servers[index].wait()

    def stop(self) -> None:
        for process in [*self.servers, self.tracker]:
            if process and process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def start_cluster(logs: Path, servers: int = 2) -> Cluster:
    """Tracker + `servers` RPC servers under KEY; returns once all are registered and free."""
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cluster = Cluster(port, [logs / f"server{i}.log" for i in range(servers)])
    cluster.tracker = _spawn(["tracker", "--port", str(port)], logs / "tracker.log")
    for log in cluster.server_logs:
        cluster.servers.append(_spawn(["server", "--tracker", cluster.address, "--key", KEY,
                                       "--port", str(free_port())], log))
    deadline = time.monotonic() + REGISTER_TIMEOUT_S
    while cluster.free() < servers:
        if time.monotonic() > deadline:
            cluster.stop()
            raise AssertionError("RPC servers did not register with the tracker")
        time.sleep(0.5)
    return cluster
