"""The registry of QDQ rewrites, in the order they run.

Order matters: the exact int8 ops first (a concat or max-pool folded to int8 exposes the
`DQ(x_q)` a conv pattern needs on its input), then sums and products, lookup tables, then the convs and Gemm /
MatMul (as 1x1 convs), then the statistics (InstanceNorm's) of tensors that stay dequantized. To add a rewrite, subclass
`compile.frontend.rewrite.Rewrite` in a module here and list an instance of it.
"""

from __future__ import annotations

from compile.frontend.rewrites.exact_int8 import ExactInt8
from compile.frontend.rewrites.exact_statistics import ExactStatistics
from compile.frontend.rewrites.integer_arithmetic import IntegerArithmetic
from compile.frontend.rewrites.integer_conv import IntegerConv, IntegerGemm
from compile.frontend.rewrites.lookup_table import LookupTable

REWRITES = (ExactInt8(), IntegerArithmetic(), LookupTable(), IntegerConv(), IntegerGemm(), ExactStatistics())
