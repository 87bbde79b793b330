"""TVM's RPC tracker and server as processes of ours: bound to loopback unless told otherwise,
and stopped together with everything they started.

TVM's tracker and server listen in `popen_worker` children that outlive their parent when it is
killed: a stopped tracker kept its port and answered the next run. So SIGTERM/SIGINT end this
process and every process under it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable

import psutil

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def public_warning(host: str) -> str | None:
    """The warning a non-loopback listening address deserves (an RPC server runs any library)."""
    if host in LOOPBACK:
        return None
    return (f"warning: listening on {host}: anyone who reaches this port can run code on this machine; "
            f"use a private network, SSH tunnel or `adb reverse`")


def stop_descendants_on_signal() -> None:
    """SIGTERM/SIGINT end this process and every process under it."""

    def stop(signum: int, _frame) -> None:
        for process in psutil.Process().children(recursive=True):
            process.kill()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def run_tvm_module(module: str, args: list[str], host: str, warn: Callable[[str], None]) -> int:
    """`python -m module args` (TVM's tracker or server) until it ends; its exit code."""
    warning = public_warning(host)
    if warning:
        warn(warning)
    stop_descendants_on_signal()
    return subprocess.call([sys.executable, "-m", module, *args])


def tracker_command(host: str, port: int) -> tuple[str, list[str]]:
    return "tvm.exec.rpc_tracker", ["--host", host, "--port", str(port), "--port-end", str(port + 1)]


def server_command(tracker: str, key: str, host: str, port: int) -> tuple[str, list[str]]:
    return "tvm.exec.rpc_server", ["--host", host, "--port", str(port), "--port-end", str(port + 100),
                                   "--tracker", tracker, "--key", key]
