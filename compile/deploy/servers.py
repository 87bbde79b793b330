"""TVM's RPC tracker and server, run inside this process: bound to loopback unless told
otherwise, and gone, port included, when this process ends.

`python -m tvm.exec.rpc_tracker` (and `rpc_server`) listen in a `popen_worker` grandchild that
outlives its parent: after `kill -9` of the parent the worker kept the port and answered the
next run. TVM's server state classes bind the port and serve it in a thread of the process
that creates them, so we create them here: the port closes when this process dies, however it
dies. Sessions of the RPC server run in child processes (TVM's multiprocessing), which
SIGTERM/SIGINT stop with us; a SIGKILL leaves at most a session that its own timeout ends.
"""

from __future__ import annotations

import errno
import signal
import socket
import sys

import psutil

from qatie.errors import QatieError

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


def check_port_free(host: str, port: int) -> None:
    """A one-line error now for a port that is taken or an address that is not ours."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            hint = "pick another --port" if exc.errno == errno.EADDRINUSE else "check --host"
            raise QatieError(f"cannot listen on {host}:{port} ({exc.strerror}); {hint}") from None


def serve_tracker(host: str, port: int) -> None:
    """An RPC tracker on host:port, in this process, until it is stopped."""
    from tvm.rpc.tracker import PopenTrackerServerState

    check_port_free(host, port)
    stop_descendants_on_signal()
    state = PopenTrackerServerState(host, port, port + 1)
    state.thread.join()


def serve_rpc(tracker: str, key: str, host: str, port: int) -> None:
    """An RPC server for this machine on the first free port from `port`, registered with
    `tracker` under `key`, in this process, until it is stopped."""
    from tvm.rpc.server import PopenRPCServerState

    tracker_host, _, tracker_port = tracker.rpartition(":")
    stop_descendants_on_signal()
    try:
        state = PopenRPCServerState(host, port, port + 100, tracker_addr=(tracker_host, int(tracker_port)), key=key)
    except (OSError, ValueError) as exc:
        raise QatieError(f"cannot listen on {host}:{port}..{port + 99} ({exc}); pick another --port") from None
    state.thread.join()
