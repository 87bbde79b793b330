"""Talking to a TVM RPC tracker: parse its address, check it answers, count a key's devices.

TVM's own client retries a dead tracker for 60 s and then raises a bare socket error; users
need to hear within seconds which address did not answer, which keys the tracker does hold,
and that nothing was changed.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

from qatie.errors import QatieError

CONNECT_TIMEOUT_S = 5.0
POLL_INTERVAL_S = 0.5


@dataclass(frozen=True)
class Tracker:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_tracker(address: str) -> Tracker:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise QatieError(f"--tracker '{address}': expected HOST:PORT, e.g. 127.0.0.1:9190")
    return Tracker(host, int(port))


def tracker_summary(tracker: Tracker) -> dict:
    """The tracker's summary dict (queue_info per key, server_info), or a one-line error."""
    from tvm import rpc

    try:
        socket.create_connection((tracker.host, tracker.port), timeout=CONNECT_TIMEOUT_S).close()
        return rpc.connect_tracker(tracker.host, tracker.port).summary()
    except (OSError, RuntimeError) as exc:
        raise QatieError(
            f"RPC tracker {tracker} is unreachable ({exc}); start one with "
            f"`python -m tvm.exec.rpc_tracker --host 127.0.0.1 --port {tracker.port}`"
        ) from None


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


def request_device(tracker: Tracker, key: str, timeout_s: float, session_timeout_s: float = 0) -> Device:
    """A free device under `key`, held until the returned Device is dropped.

    Same protocol as TVM's `TrackerSession.request`, which hides the server address it is
    given; we keep it so every result row names the device that produced it.
    """
    from tvm import rpc
    from tvm.rpc import base

    from compile.tvm_private import tracker_socket

    tracker_summary(tracker)  # a dead tracker is a one-line error, not TVM's 60 s of retries
    client = rpc.connect_tracker(tracker.host, tracker.port)
    sock = tracker_socket(client)
    sock.settimeout(timeout_s)
    try:
        base.sendjson(sock, [base.TrackerCode.REQUEST, key, "", 1])
        code, (host, port, matchkey) = base.recvjson(sock)
    except TimeoutError:
        raise QatieError(f"RPC tracker {tracker}: no device under key '{key}' became free within "
                         f"{timeout_s:.0f} s; retry later or raise --device-timeout") from None
    finally:
        client.close()
    if code != base.TrackerCode.SUCCESS:
        raise QatieError(f"RPC tracker {tracker} refused the request for key '{key}' (code {code})")
    return Device(f"{host}:{port}", rpc.connect(host, port, matchkey, session_timeout_s))
