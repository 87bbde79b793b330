"""A lookup in a 256-entry table of 8-bit codes as vector permutes, where the CPU has them.

Tanh, logistic and the requantize chains the TFLite import folds into tables
(`compile.frontend.rewrites.lookup_table`, `compile.frontend.tflite.code_tables`) are gathers:
TVM writes a vector gather as one scalar load per lane, each index moved out of a vector
register and each value moved back (`CodeGenLLVM::BufferAccessHelper`), so the schedules look
tables up lane by lane. A 256-entry table of bytes fits in vector registers, though, and both
CPU families have an instruction that indexes bytes held in registers:

- NEON `tbl`/`tbx` on four 16-byte registers (64 entries): a `tbl` and three `tbx` over the 16
  registers of the table, each on the code with its two top bits flipped to the quarter's;
- AVX-512 VBMI `vpermi2b` on two registers (2 x 64 entries on zmm): two permutes and a select
  on the code's top bit for 64 lanes (narrower registers: more permutes and selects).

The table is a tensor and the instruction wants it as registers, whose lane j holds entry
`k * lanes + j`. A TE compute is scalar, so each register is written as the load
`table[k * lanes + i % lanes]` at the element whose innermost index is i: once the innermost
loop is vectorized at exactly `lanes` from a multiple of `lanes`, lane j is the element
i = base + j and that load is the register. Keeping that is the schedules' part
(`compile.backend.schedules`: never inlined; computed per pixel where a pixel's vector has that
width, else a loop nest of its own split from 0, `vectorize_exactly`). At any other width the
instruction call does not type-check in LLVM (a scalar `tbl`, a vector of another width), so
such a schedule fails the build instead of computing a wrong lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import tvm
from tvm import te, tirx

from compile.backend.targets import cpu_has

VECTOR_LOOKUP_BLOCK = "vector_lookup"  # the block's name (schedules vectorize it at LANES_ATTR)
LANES_ATTR = "qatie.vector_lanes"
ENTRIES = 256
# MetaSchedule's AutoInline would inline the lookup into a consumer vectorized along another
# axis, where the table loads are no longer the registers
NO_INLINE = {"meta_schedule.inline_rule": "disable"}


@dataclass(frozen=True)
class TableLookup:
    """A 256-entry byte table lookup in vector registers."""

    name: str
    features: tuple[str, ...]  # LLVM CPU features the target must have
    lanes: int  # bytes per register: the loop must be vectorized at exactly this width
    # (the table's ENTRIES // lanes registers, the uint8 codes) -> the looked-up bytes
    compute: Callable[[Sequence[tirx.PrimExpr], tirx.PrimExpr], tirx.PrimExpr]


def _llvm(name: str, dtype: str, *args) -> tirx.PrimExpr:
    return tirx.call_llvm_pure_intrin(dtype, name, *args)


def _tbl(registers: Sequence[tirx.PrimExpr], code: tirx.PrimExpr) -> tirx.PrimExpr:
    """NEON: `tbl` on the first 64 entries; each `tbx` keeps a lane unless its code is in the
    next 64 (the code xor the quarter's top bits is then below 64, and at least 64 otherwise)."""
    dtype = registers[0].dtype
    found = _llvm("llvm.aarch64.neon.tbl4", dtype, *registers[:4], code)
    for quarter in range(1, 4):
        flipped = tirx.bitwise_xor(code, tirx.const(quarter << 6, "uint8"))
        found = _llvm("llvm.aarch64.neon.tbx4", dtype, found, *registers[4 * quarter:4 * quarter + 4], flipped)
    return found


def _vpermi2b(intrinsic: str) -> Callable[[Sequence[tirx.PrimExpr], tirx.PrimExpr], tirx.PrimExpr]:
    """AVX-512 VBMI: each register pair indexed by the code's low bits (the instruction ignores
    the rest), then the pairs' results selected by the code's higher bits."""

    def compute(registers: Sequence[tirx.PrimExpr], code: tirx.PrimExpr) -> tirx.PrimExpr:
        dtype = registers[0].dtype
        found = [_llvm(intrinsic, dtype, low, code, high) for low, high in zip(registers[::2], registers[1::2])]
        bit = ENTRIES // len(found)  # entries per pair: the lowest code bit above them
        while len(found) > 1:
            chosen = tirx.bitwise_and(code, tirx.const(bit, "uint8")) != tirx.const(0, "uint8")
            found = [tirx.Select(chosen, high, low) for low, high in zip(found[::2], found[1::2])]
            bit *= 2
        return found[0]

    return compute


# widest first: a lookup takes the first whose lanes divide its element count
TABLE_LOOKUPS = (
    TableLookup("vpermi2b-zmm", ("avx512vbmi",), 64, _vpermi2b("llvm.x86.avx512.vpermi2var.qi.512")),
    TableLookup("vpermi2b-ymm", ("avx512vbmi", "avx512vl"), 32, _vpermi2b("llvm.x86.avx512.vpermi2var.qi.256")),
    TableLookup("vpermi2b-xmm", ("avx512vbmi", "avx512vl"), 16, _vpermi2b("llvm.x86.avx512.vpermi2var.qi.128")),
    TableLookup("tbl", ("neon",), 16, _tbl),
)


def for_target(target: tvm.target.Target) -> list[TableLookup]:
    """The table lookups `target`'s CPU has, widest first (none: lookups stay gathers)."""
    return [t for t in TABLE_LOOKUPS if cpu_has(target, t.features)]


def fitting(lookups: Sequence[TableLookup], table: te.Tensor, index: te.Tensor) -> TableLookup | None:
    """The lookup for a 1-D table of ENTRIES bytes looked up at `index` (its innermost axis a
    multiple of the lanes: the vector is along it, where the loads of the input, the table and
    the output are contiguous), or None."""
    if len(table.shape) != 1 or int(table.shape[0]) != ENTRIES or table.dtype not in ("int8", "uint8"):
        return None
    return next((t for t in lookups if int(index.shape[-1]) % t.lanes == 0), None)


def vector_lookup_te(table: te.Tensor, index: te.Tensor, lookup: TableLookup) -> te.Tensor:
    """`table[clip(index, 0, 255)]` computed by `lookup` (see the module docstring for the
    loads that become its registers)."""
    def at(*i):
        lane = tirx.floormod(i[-1], lookup.lanes)
        registers = [table[k * lookup.lanes + lane] for k in range(ENTRIES // lookup.lanes)]
        clipped = tirx.max(tirx.min(index(*i), ENTRIES - 1), 0)
        return lookup.compute(registers, clipped.astype("uint8"))

    return te.compute(index.shape, at, name=VECTOR_LOOKUP_BLOCK, attrs={**NO_INLINE, LANES_ATTR: lookup.lanes})
