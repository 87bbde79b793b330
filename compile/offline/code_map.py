"""ELF addresses of a TVM library -> its kernels.

An address falls in the nearest function symbol at or below it. TVM names a kernel's functions
after the kernel: `__tvm_ffi_NAME` (the packed entry), `NAME_compute_` and the parallel bodies
after it, whose code follows the symbol.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path

from compile.offline.block_profile import Block
from compile.offline.host_tools import llvm_tool, run_tool

ENTRY_PREFIX, BODY_MARK = "__tvm_ffi_", "_compute_"
TEXT_TYPES = set("tTwW")


@dataclass(frozen=True)
class CodeMap:
    """Function symbols of one library, sorted by address, and the kernels they belong to."""

    file: str  # the library's file name, as blocks name the file they were loaded from
    starts: list[int]
    owners: list[str | None]  # kernel name, or None for code that is no kernel's

    @classmethod
    def of(cls, library: Path, kernels: set[str]) -> CodeMap:
        listing = run_tool([llvm_tool("llvm-nm"), "--defined-only", "--numeric-sort", str(library)],
                           f"{library}: llvm-nm failed").stdout
        starts, owners = [], []
        for line in listing.splitlines():
            fields = line.split()
            if len(fields) == 3 and fields[1] in TEXT_TYPES:
                starts.append(int(fields[0], 16))
                owners.append(_kernel_of(fields[2], kernels))
        return cls(library.name, starts, owners)

    def kernel_of(self, block: Block) -> str | None:
        """The kernel whose code `block` is, None for code of no kernel (or of another file)."""
        if block.place != self.file:
            return None
        index = bisect.bisect_right(self.starts, block.offset) - 1
        return self.owners[index] if index >= 0 else None


def _kernel_of(symbol: str, kernels: set[str]) -> str | None:
    name = symbol.removeprefix(ENTRY_PREFIX)
    if BODY_MARK in name:
        name = name[:name.index(BODY_MARK)]
    return name if name in kernels else None
