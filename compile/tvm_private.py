"""Every use of a TVM private API (a name with a leading underscore), in one place.

TVM 0.27 has public APIs for almost all we do; for the three things below it has none, and
each is used for a reason named here. A TVM upgrade that renames or reshapes any of them breaks only
this file: check each function against the new release.

- `onnx_converters`: the ONNX frontend's op table, to list every unsupported op of a model with
  node names before import (the frontend stops at the first one, with a traceback).
- `link_vm_without_tir`: the Relax VM's build steps taken apart, so the PoCL harness can link
  the VM without its compiled TIR library and serve each kernel call from Python.
- `serve_sessions`, `serve_one_session`: TVM's RPC listen loop (tracker registration, match
  keys, handshake), with only the serving of one accepted session replaced (the emulated device
  runs it under qemu); the estimate needs one session and no tracker.
"""

from __future__ import annotations

from collections.abc import Callable


def onnx_converters() -> dict:
    """ONNX op type -> converter of TVM's Relax ONNX frontend."""
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    return _get_convert_map()


def link_vm_without_tir(relaxed, target):
    """(VM executable linked with no TIR library, the compiled TIR library).

    `relaxed` is a module that has been through the Relax pipeline. The executable looks every
    PrimFunc up in the global function registry at run time, so a caller can register its own
    implementation under each kernel's name; the library is what the normal link would embed.
    """
    from tvm import relax, tirx
    from tvm.relax.vm_build import _auto_attach_system_lib_prefix, _filter_tir, _vmcodegen, _vmlink

    attrs = dict(relaxed.attrs) if relaxed.attrs else {}
    builder = relax.ExecBuilder()
    tir_mod = _filter_tir(_vmcodegen(builder, relaxed, "bytecode"))
    library = tirx.build(_auto_attach_system_lib_prefix(tir_mod, target, None), target=target)

    def link():
        return _vmlink(builder, target, None, ext_libs=attrs.get("external_mods", []),
                       params=dict(attrs.get("const_name_to_constant", {})))

    return link, library


def serve_sessions(listener, port: int, key: str, tracker: tuple[str, int] | None, serve_one: Callable) -> None:
    """Register with `tracker` under `key` (None: accept clients that connect directly with
    `key`) and hand each accepted session to `serve_one(conn, addr, opts, load_library)`; runs
    until the process ends."""
    from tvm.rpc import server as tvm_server

    tvm_server._serving = serve_one
    tvm_server._listen_loop(listener, port, key, tracker, None, None)


class _Served(Exception):
    """Ends TVM's listen loop, which has no way out, after its one session."""


def serve_one_session(listener, port: int, key: str, serve_one: Callable) -> None:
    """Accept one client connecting directly with `key`, hand it to `serve_one` as
    `serve_sessions` does, and return when that session has been served."""
    def serve_then_stop(*args) -> None:
        serve_one(*args)
        raise _Served

    try:
        serve_sessions(listener, port, key, None, serve_then_stop)
    except _Served:
        return
