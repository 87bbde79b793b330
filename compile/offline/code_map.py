"""ELF addresses of a TVM library -> its kernels.

An address falls in the nearest function symbol at or below it. TVM names a kernel's functions
after the kernel: `__tvm_ffi_NAME` (the packed entry), `NAME_compute_` and the parallel bodies
after it, whose code follows the symbol.
"""

from __future__ import annotations

import bisect
import subprocess
from dataclasses import dataclass
from pathlib import Path

from compile.offline.cycle_model import llvm_tool
from qatie.errors import QatieError

ENTRY_PREFIX, BODY_MARK = "__tvm_ffi_", "_compute_"
TEXT_TYPES = set("tTwW")


@dataclass(frozen=True)
class CodeMap:
    """Function symbols of one library, sorted by address, and the kernels they belong to."""

    starts: list[int]
    owners: list[str | None]  # kernel name, or None for code that is no kernel's

    @classmethod
    def of(cls, library: Path, kernels: set[str]) -> CodeMap:
        result = subprocess.run([llvm_tool("llvm-nm"), "--defined-only", "--numeric-sort", str(library)],
                                check=False, capture_output=True, text=True)
        if result.returncode != 0:
            raise QatieError(f"{library}: llvm-nm failed: {(result.stderr.strip().splitlines() or ['?'])[-1]}")
        starts, owners = [], []
        for line in result.stdout.splitlines():
            fields = line.split()
            if len(fields) == 3 and fields[1] in TEXT_TYPES:
                starts.append(int(fields[0], 16))
                owners.append(_kernel_of(fields[2], kernels))
        return cls(starts, owners)

    def owner(self, address: int) -> str | None:
        index = bisect.bisect_right(self.starts, address) - 1
        return self.owners[index] if index >= 0 else None


def _kernel_of(symbol: str, kernels: set[str]) -> str | None:
    name = symbol.removeprefix(ENTRY_PREFIX)
    if BODY_MARK in name:
        name = name[:name.index(BODY_MARK)]
    return name if name in kernels else None
