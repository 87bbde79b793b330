"""One table lookup kernel per vector lookup (`compile.backend.table_lookup`) with its exact
answer: every code of an int8 table and indices outside it (clipped, as `take` does), scheduled
as the default schedules do. Run on this host (`test_kernels.py`) and on the emulated ARM cores
(`test_emulate.py`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import te

from compile.backend.schedules import vectorize_exactly
from compile.backend.table_lookup import (
    ENTRIES,
    VECTOR_LOOKUP_BLOCK,
    TableLookup,
    vector_lookup_te,
)

ROW = 64  # the innermost axis: a multiple of every lookup's lanes


@dataclass(frozen=True)
class LookupCase:
    table: np.ndarray  # int8 [ENTRIES]
    index: np.ndarray  # int32 [rows, ROW]
    expected: np.ndarray  # int8, numpy's take with mode="clip"
    kernel: tvm.IRModule


def lookup_case(lookup: TableLookup, seed: int = 0) -> LookupCase:
    rng = np.random.default_rng(seed)
    table = rng.integers(-128, 128, ENTRIES).astype(np.int8)
    codes = np.concatenate([np.arange(ENTRIES), rng.integers(0, ENTRIES, 3 * ROW), [-1, -300, 256, 10**6] * 16])
    index = rng.permutation(codes).astype(np.int32).reshape(-1, ROW)
    table_t = te.placeholder((ENTRIES,), "int8", "table")
    index_t = te.placeholder(index.shape, "int32", "index")
    sch = tvm.s_tir.Schedule(te.create_prim_func([table_t, index_t, vector_lookup_te(table_t, index_t, lookup)]))
    vectorize_exactly(sch, [sch.get_sblock(VECTOR_LOOKUP_BLOCK)])
    return LookupCase(table, index, np.take(table, index, mode="clip"), sch.mod)
