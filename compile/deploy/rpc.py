"""Talking to a TVM RPC tracker and its devices, with every network wait bounded.

TVM's own client retries a dead tracker for 60 s and then raises a bare socket error, and it
waits forever on a tracker or a device that accepts the connection but never answers (a hung
process, a stopped one). Users need to hear within seconds which address did not answer and at
which step, and that nothing was changed. So the tracker's protocol (TVM's, through
`tvm.rpc.base`) runs here on sockets with timeouts, and a device session's handshake is bounded
by a watchdog (`bounded`): TVM's C++ client has no timeout of its own.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from qatie.errors import QatieError

CONNECT_TIMEOUT_S = 5.0
POLL_INTERVAL_S = 0.5
T = TypeVar("T")


class Unresponsive(RuntimeError):
    """A device stopped answering mid-job: the placement treats it as a lost device."""


@dataclass(frozen=True)
class Tracker:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_tracker(address: str) -> Tracker:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise QatieError(f"--tracker '{address}': expected HOST:PORT, e.g. 127.0.0.1:9190")
    return Tracker(host, int(port))


def bounded(call: Callable[[], T], seconds: float, what: str) -> T:
    """`call()` in a watchdog thread; `Unresponsive(what)` if it has not returned in `seconds`.

    TVM's RPC calls release the GIL while they wait on the socket, so the watchdog runs; a call
    that never returns is left in its daemon thread, which ends with the process."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed to the caller's thread as is
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise Unresponsive(f"{what} did not answer within {seconds:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class _TrackerConnection:
    """One conversation with a tracker: TVM's tracker protocol on a socket with a timeout."""

    def __init__(self, tracker: Tracker, timeout_s: float) -> None:
        from tvm.rpc import base

        self.tracker, self.base = tracker, base
        try:
            self.sock = socket.create_connection((tracker.host, tracker.port), timeout=CONNECT_TIMEOUT_S)
        except OSError as exc:
            raise QatieError(
                f"RPC tracker {tracker} is unreachable ({exc.strerror or exc}); start one with "
                f"`qatie-compile rpc tracker --port {tracker.port}`"
            ) from None
        self.sock.settimeout(timeout_s)
        try:
            self.sock.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
            magic = struct.unpack("<i", base.recvall(self.sock, 4))[0]
        except (OSError, RuntimeError) as exc:
            self.close()
            raise self._silent("the handshake", timeout_s, exc) from None
        if magic != base.RPC_TRACKER_MAGIC:
            self.close()
            raise QatieError(f"{tracker} answered, but it is not a TVM RPC tracker; check --tracker")

    def _silent(self, step: str, timeout_s: float, exc: Exception) -> QatieError:
        reason = f"no answer within {timeout_s:g} s" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
        return QatieError(f"RPC tracker {self.tracker} accepted the connection but failed {step} ({reason}); "
                          f"is it a hung or stopped tracker? restart it")

    def ask(self, message: list, step: str, timeout_s: float | None = None):
        if timeout_s is not None:
            self.sock.settimeout(timeout_s)
        try:
            self.base.sendjson(self.sock, message)
            return self.base.recvjson(self.sock)
        except (OSError, RuntimeError, ValueError) as exc:
            raise self._silent(step, self.sock.gettimeout(), exc) from None

    def close(self) -> None:
        self.sock.close()


def tracker_summary(tracker: Tracker, timeout_s: float = CONNECT_TIMEOUT_S) -> dict:
    """The tracker's summary dict (queue_info per key, server_info), or a one-line error."""
    connection = _TrackerConnection(tracker, timeout_s)
    try:
        code, summary = connection.ask([connection.base.TrackerCode.SUMMARY], "the summary request")
    finally:
        connection.close()
    if code != connection.base.TrackerCode.SUCCESS or not isinstance(summary, dict):
        raise QatieError(f"RPC tracker {tracker} answered the summary request with code {code}")
    return summary


def device_counts(summary: dict) -> dict[str, tuple[int, int]]:
    """key -> (registered servers, free servers)."""
    registered: dict[str, int] = {}
    for server in summary.get("server_info", []):
        key = str(server.get("key", "")).split(":", 1)[-1]
        registered[key] = registered.get(key, 0) + 1
    free = {key: int(info.get("free", 0)) for key, info in summary.get("queue_info", {}).items()}
    return {key: (registered.get(key, 0), free.get(key, 0)) for key in sorted(set(registered) | set(free))}


def wait_for_devices(tracker: Tracker, key: str, timeout_s: float) -> int:
    """How many devices are free under `key`, waiting up to `timeout_s` for at least one."""
    deadline = time.monotonic() + timeout_s
    while True:
        counts = device_counts(tracker_summary(tracker))
        if key not in counts:
            known = ", ".join(counts) or "none"
            raise QatieError(f"RPC tracker {tracker} has no device under key '{key}' (keys: {known}); "
                             f"start a server with --key {key} or pass --key")
        registered, free = counts[key]
        if free:
            return free
        if time.monotonic() >= deadline:
            raise QatieError(f"RPC tracker {tracker}: all {registered} device(s) under key '{key}' stayed busy "
                             f"for {timeout_s:.0f} s; retry later or raise --device-timeout")
        time.sleep(POLL_INTERVAL_S)


@dataclass
class Device:
    """An RPC session to one device, named by the server address the tracker handed out."""

    name: str
    session: object  # tvm.rpc.RPCSession

    def close(self) -> None:
        self.session = None  # TVM closes the connection when the last reference goes


def local_device() -> Device:
    """This machine, through TVM's in-process RPC session: the same upload/load/time path as a phone."""
    from tvm import rpc

    return Device("local", rpc.LocalSession())


@dataclass(frozen=True)
class Allocation:
    """A device the tracker handed out: its address and the key that matches its session."""

    host: str
    port: int
    matchkey: str

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"

    def connect(self, session_timeout_s: float) -> Device:
        """The RPC session (TVM's handshake has no timeout: call it under `bounded`). The server
        ends the session after `session_timeout_s`."""
        from tvm import rpc

        return Device(self.name, rpc.connect(self.host, self.port, self.matchkey, session_timeout=session_timeout_s))


def request_device(tracker: Tracker, key: str, timeout_s: float) -> Allocation:
    """A free device under `key`, held for us until its session ends.

    Same protocol as TVM's `TrackerSession.request`, which hides the server address it is given;
    we keep it so every result row names the device that produced it. The tracker may take up to
    `timeout_s` to find a free device."""
    connection = _TrackerConnection(tracker, CONNECT_TIMEOUT_S)
    try:
        try:
            code, (host, port, matchkey) = connection.ask(
                [connection.base.TrackerCode.REQUEST, key, "", 1], f"to hand out a device under '{key}'", timeout_s)
        except QatieError:
            raise QatieError(f"RPC tracker {tracker}: no device under key '{key}' became free within "
                             f"{timeout_s:.0f} s; retry later or raise --device-timeout") from None
    finally:
        connection.close()
    if code != connection.base.TrackerCode.SUCCESS:
        raise QatieError(f"RPC tracker {tracker} refused the request for key '{key}' (code {code})")
    return Allocation(host, int(port), matchkey)
