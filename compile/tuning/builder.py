"""A MetaSchedule builder whose worker processes outlive a batch.

TVM's `LocalBuilder` starts a new process pool for every batch it builds (and one more to check
its build functions when it is made), and each worker imports TVM: about 6 s of CPU per process
here, two processes per batch on 2 cores. Tuning measures a packed conv's register tiles as one
batch per kernel, so a model's 35 convs paid ~70 imports, more CPU than building their
candidates. This builder keeps its pool and renews it after `renew_after` candidates (TVM
restarts its pool because long-lived workers leak memory), so a tuning run pays a few imports.
"""

from __future__ import annotations

from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

from compile.tuning.worker import build_and_export


@derived_object
class PooledBuilder(ms.builder.PyBuilder):
    """Builds candidates in `workers` processes kept between batches, linking each with `compiler`."""

    def __init__(self, compiler: str, workers: int, timeout_s: float, renew_after: int = 512) -> None:
        super().__init__()
        self.compiler, self.workers, self.timeout_s, self.renew_after = compiler, workers, timeout_s, renew_after
        self._pool: PopenPoolExecutor | None = None
        self._built = 0

    def build(self, build_inputs: list[ms.builder.BuilderInput]) -> list[ms.builder.BuilderResult]:
        if self._pool is None or self._built >= self.renew_after:
            self.close()
            self._pool = PopenPoolExecutor(max_workers=self.workers, timeout=self.timeout_s)
        self._built += len(build_inputs)
        jobs = [(self.compiler, i.mod, i.target) for i in build_inputs]
        outcomes = self._pool.map_with_error_catching(lambda job: build_and_export(*job), jobs)
        return [self._result(outcome) for outcome in outcomes]

    def _result(self, outcome) -> ms.builder.BuilderResult:
        if outcome.status == StatusKind.COMPLETE:
            return ms.builder.BuilderResult(outcome.value, None)
        if outcome.status == StatusKind.TIMEOUT:
            return ms.builder.BuilderResult(None, f"build killed after {self.timeout_s} s")
        return ms.builder.BuilderResult(None, f"build failed: {outcome.value}")

    def close(self) -> None:
        """Stop the worker processes (a later build starts new ones)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
