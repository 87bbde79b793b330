"""An aarch64 device on this machine: TVM RPC sessions executed under qemu-aarch64.

`qatie-compile emulate arm64` registers with a tracker like any RPC server (TVM's own listen
loop: tracker registration, match keys, handshake), but serves each accepted session by running
`qatie_rpc_session` (TVM's aarch64 runtime, see arm64_runtime.py) under qemu-aarch64 with the
socket passed as a file descriptor. No binfmt_misc registration is needed, since nothing
re-executes an aarch64 interpreter.

qemu emulates the CPU model of the target file (`qemu_cpu`), not its default `max` model, which
implements every extension and would run a `+dotprod` library that a Cortex-A53 kills with
SIGILL. A session ended by a signal is logged with the likely cause.
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import tempfile

from compile.deploy.rpc import Tracker
from compile.offline.arm64_runtime import SYSROOT, Arm64Runtime, require_tools
from compile.tvm_private import serve_sessions
from qatie.errors import QatieError

logger = logging.getLogger("qatie.emulate")


def emulation_label(qemu_cpu: str) -> str:
    return f"qemu-aarch64 -cpu {qemu_cpu}"


def session_command(runtime: Arm64Runtime, qemu_cpu: str, fd: int, work_dir: str,
                    plugin: list[str] | None = None) -> list[str]:
    """The qemu command line of one session; `plugin` is a TCG plugin and its arguments."""
    qemu, _ = require_tools()
    plugin_options = ["-plugin", ",".join(plugin)] if plugin else []
    return [qemu, "-cpu", qemu_cpu, *plugin_options, "-L", str(SYSROOT), str(runtime.session_program), str(fd),
            work_dir, emulation_label(qemu_cpu)]


def describe_exit(returncode: int, qemu_cpu: str) -> str:
    """A session's exit status in words; SIGILL names the usual cause."""
    if returncode >= 0:
        return f"exit code {returncode}"
    name = signal.Signals(-returncode).name
    if -returncode == signal.SIGILL:
        return (f"{name} (illegal instruction): the library uses a CPU extension the emulated {qemu_cpu} "
                f"lacks (e.g. +dotprod or +i8mm); build for a target whose mattr this CPU has")
    return name


def run_session(runtime: Arm64Runtime, qemu_cpu: str, conn: socket.socket, timeout: float | None,
                plugin: list[str] | None = None) -> str:
    """Serve one accepted session under qemu until the client leaves; how it ended, in words."""
    with tempfile.TemporaryDirectory(prefix="qatie-emu-") as work_dir:
        fd = conn.fileno()
        try:
            # In the session's own folder, like TVM's server: uploads and any core file of a
            # crashed session go there and are removed with it.
            result = subprocess.run(session_command(runtime, qemu_cpu, fd, work_dir, plugin), check=False,
                                    pass_fds=(fd,), cwd=work_dir, timeout=timeout)
            outcome = describe_exit(result.returncode, qemu_cpu)
        except subprocess.TimeoutExpired:
            outcome = f"killed after the client's {timeout:.0f} s session timeout"
    conn.close()
    return outcome


def listen(host: str, port: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        raise QatieError(f"cannot listen on {host}:{port} ({exc.strerror}); pass --port 0 for any free port") from None
    listener.listen(1)
    return listener


def serve(runtime: Arm64Runtime, qemu_cpu: str, tracker: Tracker, key: str, host: str, port: int) -> None:
    """Serve sessions forever, registered with `tracker` under `key`; each under qemu."""
    def serve_one(conn: socket.socket, addr, opts: dict, _load_library) -> None:
        logger.info("session from %s on emulated %s", addr, qemu_cpu)
        outcome = run_session(runtime, qemu_cpu, conn, opts.get("timeout"))
        logger.info("session from %s ended: %s", addr, outcome)

    listener = listen(host, port)
    bound_port = listener.getsockname()[1]
    logger.info("emulated aarch64 device (%s) on %s:%d, key '%s' at tracker %s",
                emulation_label(qemu_cpu), host, bound_port, key, tracker)
    # TVM's listen loop is reused as is; only how a session is served differs (a process under qemu).
    serve_sessions(listener, bound_port, key, (tracker.host, tracker.port), serve_one)
