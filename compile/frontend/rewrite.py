"""The contract of one QDQ rewrite, and the log every rewrite reports into.

TVM's ONNX frontend imports a QDQ model as fake quantization: float ops between `dequantize`
and `quantize`. A rewrite matches one such pattern (a `tvm.relax.dpl` pattern) and replaces it
with integer arithmetic that computes the same int8 codes, or leaves it as it is and says why:
a model that stays partly float must tell its user which pattern did not fold, and for what
reason, in `inspect` and in the manifest.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from tvm import relax

INT8_TYPES = ("int8", "uint8")


@dataclass
class FoldLog:
    """Per rewrite: how many matches it rewrote, and the reasons it left the others float."""

    applied: Counter = field(default_factory=Counter)
    skipped: dict[str, list[str]] = field(default_factory=dict)

    def apply(self, rewrite: str) -> None:
        self.applied[rewrite] += 1

    def skip(self, rewrite: str, reason: str) -> None:
        self.skipped.setdefault(rewrite, []).append(reason)

    def reasons(self) -> dict[str, dict[str, int]]:
        """rewrite -> {reason: how many matches}, for reports."""
        return {name: dict(Counter(reasons)) for name, reasons in sorted(self.skipped.items())}


class Rewrite:
    """One pattern and its replacement. Subclasses set `name`, build their pattern parts in
    `__init__` ending with `self.root`, and implement `rewrite`, which returns the replacement
    or `call` itself after `log.skip(self.name, reason)`."""

    name: str
    root: relax.dpl.DFPattern

    def rewrite(self, call: relax.Call, match: dict, log: FoldLog) -> relax.Expr:
        raise NotImplementedError


def constant(expr: relax.Expr) -> np.ndarray:
    """The value of a matched `is_const()` expression."""
    return expr.value.numpy()
