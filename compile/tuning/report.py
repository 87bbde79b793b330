"""The end of a tuning run: a table per kernel, and the tuning curve as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import click

from compile.tuning.tune import TuneReport
from qatie.atomic import write_text_atomic


def print_report(report: TuneReport, folder: Path, emulated: str | None = None) -> None:
    """The per-kernel table; times from an emulated device are labelled as emulator times."""
    if emulated:
        click.echo(f"timings below were measured under an emulator ({emulated}): they test the tuning "
                   f"plumbing, they are not device figures and this log must not ship")
    for line in report.repaired:
        click.echo(f"tuning log: {line}")
    total = report.total_us
    rows = sorted((r for r in report.rows if r.trials or r.default_us is not None),
                  key=lambda r: -(r.calls * r.best_us if r.best_us is not None else 0))
    click.echo(f"{'kernel':60s} {'calls':>5s} {'trials':>6s} {'default us':>10s} {'best us':>10s} {'speedup':>7s} {'share':>6s}")
    for row in rows:
        best = f"{row.best_us:10.1f}" if row.best_us is not None else f"{'untuned':>10s}"
        default = f"{row.default_us:10.1f}" if row.default_us is not None else f"{'-':>10s}"
        speedup = f"{row.default_us / row.best_us:6.2f}x" if row.best_us and row.default_us else f"{'-':>7s}"
        share = f"{100 * row.calls * row.best_us / total:5.1f}%" if row.best_us is not None and total else f"{'-':>6s}"
        click.echo(f"{row.name[:60]:60s} {row.calls:5d} {row.trials:6d} {default} {best} {speedup} {share}")
    if len(rows) < len(report.rows):
        click.echo(f"{len(report.rows) - len(rows)} other kernels: no records, default schedule")
    tuned = sum(r.best_us is not None for r in report.rows)
    click.echo(f"{tuned}/{len(report.rows)} kernels have a measured record; their sum {total / 1e3:.3f} ms per "
               f"inference; {report.trials_run} trials this run in {report.seconds / 60:.1f} min; log {folder}")


def write_curve(report: TuneReport, path: Path, model: Path, target: str, emulated: str | None = None) -> None:
    payload = {"model": str(model), "target": target, "emulated": emulated, "trials_run": report.trials_run,
               "seconds": round(report.seconds, 1), "curve": report.curve}
    write_text_atomic(json.dumps(payload, indent=2), path)
