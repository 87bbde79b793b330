"""`qatie-compile tune`: MetaSchedule tuning of the integer-folded model's kernels for one target.

Tasks are the fused kernels of the *folded* model (the ones the build compiles), found by the
same fusion passes the build runs, so the build's database lookup hits exactly these workloads.
Search is TVM's: evolutionary search with the XGBoost cost model under the gradient task
scheduler. Records go to `tuning_logs/<target>/`, TVM's JSON database; a rerun counts what the
database already holds for the model's tasks against the budget and tunes only the rest.

Measuring: host targets with TVM's local runner; device targets with its RPC runner through a
tracker, one worker per free device under the key, so every device measures in parallel.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import tvm
from tqdm import tqdm
from tvm import s_tir
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from compile.backend.intrinsics import register_cpu_intrinsics
from compile.backend.schedules import default_schedule, fuse_kernels, packed_conv_space, packed_space_size
from compile.backend.targets import TargetSpec
from compile.backend.tuning_db import DEFAULT_LOG_ROOT, check_targets, is_shipped_log, open_database
from compile.deploy.device import emulation_of
from compile.deploy.rpc import Tracker, tracker_summary, wait_for_devices
from compile.frontend import load_and_fold
from compile.tuning.builder import PooledBuilder
from qatie.errors import QatieError

UNMEASURED = 1e9  # MetaSchedule's run_secs for failed candidates are 1e10 s
FAILED_RUN_SECS = 1e10  # what we commit for a tile that failed, as MetaSchedule does


@dataclass
class TuneOptions:
    trials: int
    per_task: int | None = None
    trials_per_round: int = 16
    rounds: int = 3  # interleaved timing rounds of a packed conv's tiles (`_measure_tiles`)
    population: int = 128  # TVM's 512 spends ~15 s of search per round and task on 2 cores
    only: tuple[str, ...] = ()  # tune only kernels whose name contains one of these
    tracker: Tracker | None = None
    key: str | None = None
    device_timeout_s: float = 60.0
    builder_timeout_s: float = 600.0
    runner_timeout_s: float = 60.0
    seed: int = 0


def refuse_emulator_timings_in_shipped_logs(tracker: Tracker, key: str, device_timeout_s: float,
                                            folder: Path) -> str | None:
    """How the devices under `key` are emulated (None: real devices). Schedules picked by emulator
    timings may serve plumbing tests, never the logs builds ship with."""
    emulation = emulation_of(tracker, key, device_timeout_s)
    if emulation and is_shipped_log(folder):
        raise QatieError(f"devices under key '{key}' are emulated ({emulation}): their timings must not go into "
                         f"{DEFAULT_LOG_ROOT}; pass --log-dir outside it to test tuning over them")
    return emulation


@dataclass
class TaskRow:
    """One kernel in the final table: its workload, calls per inference, trials, best time."""

    name: str
    calls: int
    trials: int
    best_us: float | None
    default_us: float | None = None  # the kernel with our default schedule, measured the same way


@dataclass
class TuneReport:
    rows: list[TaskRow]
    trials_run: int
    seconds: float
    curve: list[dict] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    @property
    def total_us(self) -> float:
        return sum(r.calls * r.best_us for r in self.rows if r.best_us is not None)


def tuning_target(spec: TargetSpec) -> tvm.target.Target:
    """The build target plus `num-cores`, which MetaSchedule needs to size parallel loops."""
    target = spec.tvm_target()
    cores = spec.threads or psutil.cpu_count(logical=False) or os.cpu_count() or 1
    config = {**target.export(), "num-cores": cores}
    return tvm.target.Target(config, host=target.host)


def extract_tasks(mod: tvm.IRModule, target: tvm.target.Target) -> list:
    """The model's kernels as MetaSchedule tasks (one per distinct fused PrimFunc)."""
    with target:
        fused = tvm.transform.Sequential(fuse_kernels(target))(mod)
    return list(ms.relax_integration.extract_tasks(fused, target))


def _best_and_count(database, kernel: tvm.IRModule) -> tuple[float | None, int]:
    """Best time (us) and number of records the database holds for a kernel. Only kernels that
    get tuned are committed as workloads, so the log holds nothing for the others."""
    if not database.has_workload(kernel):
        return None, 0
    records = database.get_top_k(database.commit_workload(kernel), 1 << 30)
    valid = [t for t in (_run_us(r.run_secs) for r in records) if t is not None]
    return (min(valid) if valid else None), len(records)


def _run_us(run_secs) -> float | None:
    """Mean measured time in us, or None for a failed candidate (no times, or TVM's 1e10 s)."""
    values = [float(v) for v in (run_secs or [])]
    seconds = sum(values) / len(values) if values else float("inf")
    return seconds * 1e6 if seconds < UNMEASURED else None


def _device_key(spec: TargetSpec, options: TuneOptions) -> str | None:
    return options.key or spec.rpc_key


def _free_devices(spec: TargetSpec, options: TuneOptions) -> int:
    """Devices to measure on (1: this host); checked before anything is written."""
    if options.tracker is None:
        if not spec.runs_on_host:
            raise QatieError(f"target {spec.name} runs on a device, not this host: pass --tracker HOST:PORT "
                             f"(and --key, default {spec.rpc_key})")
        return 1
    if not _device_key(spec, options):
        tracker_summary(options.tracker)  # an unreachable tracker is the first thing to hear about
        raise QatieError(f"target {spec.name} names no rpc_key: pass --key")
    return wait_for_devices(options.tracker, _device_key(spec, options), options.device_timeout_s)


def _make_runner(spec: TargetSpec, options: TuneOptions, devices: int):
    evaluator = ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=40, enable_cpu_cache_flush=False)
    if options.tracker is None:
        return ms.runner.LocalRunner(timeout_sec=options.runner_timeout_s, evaluator_config=evaluator)
    config = ms.runner.RPCConfig(tracker_host=options.tracker.host, tracker_port=options.tracker.port,
                                 tracker_key=_device_key(spec, options),
                                 session_timeout_sec=int(options.runner_timeout_s))
    return ms.runner.RPCRunner(rpc_config=config, evaluator_config=evaluator, max_workers=devices)


@derived_object
class _Progress(ms.measure_callback.PyMeasureCallback):
    """Live bar (trials / budget, best per task, estimated model latency) and the tuning curve.

    The estimate is the sum over kernels of calls x (best tuned time, else default-schedule
    time), so the curve starts at the untuned model and falls as tuning finds faster kernels.
    """

    def __init__(self, bar: tqdm, names: list[str], calls: list[int], best: list[float | None],
                 default: list[float | None], first_searched: int = 0) -> None:
        self.bar, self.names, self.calls, self.best, self.default = bar, names, calls, best, default
        self.first_searched = first_searched  # MetaSchedule's task id 0 is this slot
        self.started = time.monotonic()
        self.measured = 0
        self.curve: list[dict] = [self._point(0)]

    def estimate_us(self) -> float:
        current = [_faster(b, d) for b, d in zip(self.best, self.default)]
        return sum(c * t for c, t in zip(self.calls, current) if t is not None)

    def _point(self, trials: int) -> dict:
        return {"minutes": round((time.monotonic() - self.started) / 60, 3), "trials": trials,
                "estimated_ms": round(self.estimate_us() / 1e3, 4)}

    def built(self, count: int) -> None:
        self.bar.update(count)

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
        self.measured_batch(self.first_searched + task_id,
                            [_run_us(r.run_secs) for r in runner_results if r.error_msg is None],
                            count=len(measure_candidates))

    def measured_batch(self, slot: int, times: list[float | None], count: int | None = None) -> None:
        valid = [t for t in times if t is not None]
        if valid and (self.best[slot] is None or min(valid) < self.best[slot]):
            self.best[slot] = min(valid)
        self.measured += len(times) if count is None else count
        self.curve.append(self._point(self.measured))
        best = f"{self.best[slot]:.1f} us" if self.best[slot] is not None else "failed"
        self.bar.set_postfix_str(f"{self.names[slot][:40]} best {best} | {len(self.best)} kernels ~{self.estimate_us() / 1e3:.2f} ms")


def _faster(best: float | None, default: float | None) -> float | None:
    known = [t for t in (best, default) if t is not None]
    return min(known) if known else None


@derived_object
class _CommittingBuilder(ms.builder.PyBuilder):
    """TVM's builder, but first joins every batch already sent to the runner.

    The gradient scheduler collects a batch's results (and commits its records to the
    database) only when it next picks that task, so a run killed during its first round over
    35 tasks would lose all of it. Joining before each new build commits every measured batch
    at once: a kill loses at most the batch in flight. It also keeps builds from running while
    candidates are timed, which on a 2-core host disturbs the measurements.
    """

    def __init__(self, inner, progress: _Progress, scheduler) -> None:
        super().__init__()
        self.inner, self.progress, self.scheduler = inner, progress, scheduler

    def build(self, build_inputs):
        for task_id, task in enumerate(self.scheduler.tasks_):
            if task.builder_results is not None and not task.is_terminated:
                self.scheduler.join_running_task(task_id)
        results = self.inner.build(build_inputs)
        self.progress.built(len(build_inputs))
        return results


def tune(model: Path, input_shapes: dict, spec: TargetSpec, log_dir: Path, options: TuneOptions) -> TuneReport:
    """Tune the integer-folded `model` for `spec`, appending records to `log_dir`.

    Everything that can refuse (target, compiler, devices, the log) is checked before the
    model is imported: a mistake costs seconds, not an import."""
    if not spec.tunable:
        raise QatieError(f"target {spec.name}: tuning supports CPU targets; {spec.kind} is not yet")
    spec.check_buildable()
    compiler = spec.compiler()
    devices = _free_devices(spec, options)
    target = tuning_target(spec)
    database, check = open_database(log_dir, create=True)
    check_targets(log_dir, check, target)  # another architecture's records: refused
    mod = load_and_fold(model, input_shapes).mod
    register_cpu_intrinsics()
    tasks = extract_tasks(mod, target)

    known = [_best_and_count(database, t.dispatched[0]) for t in tasks]
    done = sum(count for _, count in known)
    per_task = options.per_task or options.trials
    # a packed conv is done once each of its register tiles is measured
    space_sizes = [packed_space_size(t.dispatched[0]) for t in tasks]
    caps = [min(per_task, size or per_task) for size in space_sizes]
    pending = [i for i, (_, count) in enumerate(known)
               if count < caps[i] and (not options.only or any(o in tasks[i].task_name for o in options.only))]
    budget = options.trials - done

    started = time.monotonic()
    progress, default_us = None, {}
    if budget > 0 and pending:
        packed = [i for i in pending if space_sizes[i] is not None]
        progress, default_us = _search(tasks, pending, packed, known, target, database, spec, options, devices,
                                       compiler, budget)

    rows = []
    for i, task in enumerate(tasks):
        best, count = _best_and_count(database, task.dispatched[0])
        rows.append(TaskRow(task.task_name, int(task.weight), count, best, default_us.get(i)))
    return TuneReport(rows=rows, trials_run=sum(r.trials for r in rows) - done,
                      seconds=time.monotonic() - started,
                      curve=progress.curve if progress else [], repaired=check.repaired)


def _build_and_run(kernels: list[tvm.IRModule], target, builder, runner, device_type: str, rounds: int = 1) -> list:
    """Each scheduled kernel built once and timed by the tuning runner in `rounds` interleaved
    rounds (every kernel once per round, so a shared host's drift hits all of them alike): its
    fastest round in us per kernel (None where it failed to build or run)."""
    args = [ms.arg_info.ArgInfo.from_prim_func(mod["main"]) for mod in kernels]
    built = builder.build([ms.builder.BuilderInput(mod, target) for mod in kernels])
    inputs = [ms.runner.RunnerInput(b.artifact_path, device_type, a) for b, a in zip(built, args) if b.error_msg is None]
    times: list[list[float] | None] = [[] if b.error_msg is None else None for b in built]
    for _ in range(rounds):
        futures = iter(runner.run(inputs))
        for i, b in enumerate(built):
            if b.error_msg is None:
                result = next(futures).result()
                us = _run_us(result.run_secs) if result.error_msg is None else None
                times[i] = None if us is None or times[i] is None else [*times[i], us]
    for b in built:
        if b.artifact_path:
            shutil.rmtree(os.path.dirname(b.artifact_path), ignore_errors=True)
    return [None if t is None else min(t) for t in times]


def _measure_default_schedules(tasks: list, target, builder, runner, device_type: str) -> list[float | None]:
    """Each task's kernel with our default (untuned) schedule, built and timed by the same
    builder and runner as the candidates: the starting point of the tuning curve."""
    with target:
        kernels = [default_schedule(task.dispatched[0], target) for task in tasks]
    return _build_and_run(kernels, target, builder, runner, device_type)


def _trace_key(trace) -> str:
    return str(trace)  # the trace as the Python it replays: same tile, same text


def _measure_tiles(tasks: list, packed: list[int], target, builder, runner, database, progress: _Progress,
                   budget: int, rounds: int) -> int:
    """Packed convs: every register tile not yet in the database, measured and committed (their
    space is a handful of schedules: an exhaustive pass, where an evolutionary search would keep
    asking an exhausted space for candidates). Tiles differ by a few percent, the host's speed
    by tens of percent from minute to minute, so each is timed in `rounds` interleaved rounds
    and keeps its fastest. Returns the trials used."""
    used = 0
    for slot, task_id in enumerate(packed):
        kernel = tasks[task_id].dispatched[0]
        workload = database.commit_workload(kernel)
        seen = {_trace_key(r.trace) for r in database.get_top_k(workload, 1 << 30)}
        spaces = [sch for sch in packed_conv_space(s_tir.Schedule(kernel)) if _trace_key(sch.trace) not in seen]
        spaces = spaces[:budget - used]
        if not spaces:
            continue
        progress.built(len(spaces))
        times_us = _build_and_run([sch.mod for sch in spaces], target, builder, runner, "cpu", rounds)
        args = ms.arg_info.ArgInfo.from_prim_func(kernel["main"])
        for sch, us in zip(spaces, times_us):
            database.commit_tuning_record(ms.database.TuningRecord(
                sch.trace, workload, [us / 1e6] if us is not None else [FAILED_RUN_SECS], target, args))
        progress.measured_batch(slot, times_us)
        used += len(spaces)
    return used


def _search(tasks: list, pending: list[int], packed: list[int], known: list, target, database, spec: TargetSpec,
            options: TuneOptions, devices: int, compiler: str, budget: int) -> tuple[_Progress, dict[int, float | None]]:
    """Measure the pending tasks' default schedules; then every register tile of the `packed`
    convs among them and MetaSchedule on the other kernels, within `budget` trials."""
    runner = _make_runner(spec, options, devices)
    with contextlib.closing(PooledBuilder(compiler, workers=os.cpu_count() or 1,
                                          timeout_s=options.builder_timeout_s)) as builder:
        measured = _measure_default_schedules([tasks[i] for i in pending], target, builder, runner, device_type="cpu")
        default_us = dict(zip(pending, measured))
        searched = [i for i in pending if i not in packed]
        order = packed + searched  # progress slots: packed convs first, then MetaSchedule's task ids
        key = _device_key(spec, options)
        where = f"{devices} device(s) under '{key}' at {options.tracker}" if options.tracker else "this host"
        bar = tqdm(total=budget, unit="trial", desc=f"tuning {spec.name} on {where}", dynamic_ncols=True)
        progress = _Progress(bar, [tasks[i].task_name for i in order], [int(tasks[i].weight) for i in order],
                             [known[i][0] for i in order], [default_us[i] for i in order], first_searched=len(packed))
        budget -= _measure_tiles(tasks, packed, target, builder, runner, database, progress, budget, options.rounds)
        if budget > 0 and searched:
            contexts = [
                ms.TuneContext(mod=tasks[i].dispatched[0], target=target, space_generator="post-order-apply",
                               search_strategy=ms.search_strategy.EvolutionarySearch(
                                   population_size=options.population, genetic_num_iters=2),
                               task_name=tasks[i].task_name, rand_state=options.seed + i,
                               num_threads=os.cpu_count() or 1).clone()
                for i in searched
            ]
            scheduler = ms.task_scheduler.TaskScheduler.create("gradient")
            with tempfile.TemporaryDirectory(prefix="qatie-ms-") as work_dir, _quiet_meta_schedule():
                ms.tune_tasks(
                    tasks=contexts, task_weights=[float(tasks[i].weight) for i in searched], work_dir=work_dir,
                    max_trials_global=budget, max_trials_per_task=options.per_task or options.trials,
                    num_trials_per_iter=options.trials_per_round,
                    builder=_CommittingBuilder(builder, progress, scheduler), runner=runner,
                    database=database, cost_model="xgb", task_scheduler=scheduler,
                    measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), progress],
                )
        bar.close()
        return progress, default_us


@contextlib.contextmanager
def _quiet_meta_schedule():
    """MetaSchedule logs every batch to stdout at INFO; keep the console to our bar and warnings."""
    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
