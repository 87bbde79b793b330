"""Tables and files for bench and profile results. Every table starts with the command that
produced it, so no number travels without the way to reproduce it."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from qatie.atomic import atomic_path

PROFILE_COLUMNS = ("name", "calls", "total_ms", "mean_ms", "share", "macs", "bytes", "gmac_per_s", "gb_per_s", "tuned")
TOP_KERNELS_PLOTTED = 15


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def bench_table(report: dict) -> str:
    header = ["device", "arch", "median ms", "p90 ms", "min ms", "max ms", "std ms", "repeats"]
    references = list(report["devices"][0]["agreement"]) if report["devices"] else []
    for name in references:
        header += [f"vs {name}: max steps", f"vs {name}: within 1 step", f"vs {name}: PSNR dB"]
    rows = []
    for row in report["devices"]:
        lat = row["latency"]
        mark = " (emulated)" if row["emulated"] else ""
        cells = [row["device"], _arch_cell(row),
                 *(f"{lat[k]:.2f}{mark}" for k in ("median_ms", "p90_ms", "min_ms", "max_ms", "std_ms")),
                 str(lat["repeats"])]
        for name in references:
            agree = row["agreement"][name]
            cells += [f"{agree['max_steps']:.1f}", f"{100 * agree['within_one_step']:.3f} %", f"{agree['psnr_db']:.2f}"]
        rows.append(cells)
    return f"`{report['command']}`\n\n{report['caption']}\n\n{_markdown(header, rows)}\n{_emulation_note(report)}"


def _arch_cell(row: dict) -> str:
    return f"{row['arch']}, emulated: {row['emulated']}" if row["emulated"] else row["arch"]


def _emulation_note(report: dict) -> str:
    """Emulated devices compute what the device would; their timings say nothing about it."""
    if not any(row["emulated"] for row in report["devices"]):
        return ""
    return ("\nTimes marked (emulated) were measured under an emulator on the host: they check that the "
            "library runs, they are not device latencies and must not be reported as such.\n")


def write_bench(report: dict, out: Path) -> str:
    table = bench_table(report)
    _write_text(out / "bench.json", json.dumps(report, indent=2))
    _write_text(out / "bench.md", table)
    return table


def profile_table(report: dict, device: dict) -> str:
    rows = [[k["name"], str(k["calls"]), f"{k['total_ms']:.3f}", f"{k['mean_ms']:.3f}", f"{100 * k['share']:.1f} %",
             f"{k['macs'] * k['calls'] / 1e6:.1f}", f"{k['bytes'] * k['calls'] / 1e6:.2f}", f"{k['gmac_per_s']:.2f}",
             f"{k['gb_per_s']:.2f}", "yes" if k["tuned"] else "no"] for k in device["kernels"]]
    header = ["kernel", "calls", "total ms", "mean ms", "share", "MMAC", "MB", "GMAC/s", "GB/s", "tuned"]
    e2e = device["end_to_end"]["median_ms"]
    summary = (f"device {device['device']} ({_arch_cell(device)}): kernels sum to {device['kernel_sum_ms']:.2f} ms, "
               f"end-to-end median {e2e:.2f} ms; the VM's own work and cache effects account for the "
               f"{100 * device['difference']:+.1f} % difference")
    return (f"`{report['command']}`\n\n{report['caption']}\n\n{_markdown(header, rows)}\n\n{summary}\n"
            f"{_emulation_note({'devices': [device]})}")


def _chrome_trace(report: dict) -> dict:
    """Perfetto/chrome://tracing timeline: the calls in the model's order, each lasting its
    kernel's measured mean (synthesized from per-kernel timings, not a recorded run)."""
    events = []
    for pid, device in enumerate(report["devices"]):
        means = {k["name"]: k["mean_ms"] * 1e3 for k in device["kernels"]}
        events.append({"name": "process_name", "ph": "M", "pid": pid, "args": {"name": device["device"]}})
        start = 0.0
        for name in report["call_order"]:
            events.append({"name": name, "ph": "X", "pid": pid, "tid": 0, "ts": start, "dur": means[name], "cat": "kernel"})
            start += means[name]
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": {"command": report["command"]}}


def _bar_chart(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    device = report["devices"][0]
    top = device["kernels"][:TOP_KERNELS_PLOTTED][::-1]
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(top) + 1.5))
    ax.barh([k["name"][:60] for k in top], [k["total_ms"] for k in top],
            color=["tab:green" if k["tuned"] else "tab:gray" for k in top])
    ax.set_xlabel("ms per inference (green: tuned)")
    emulated = f" (emulated: {device['emulated']}; not device times)" if device["emulated"] else ""
    ax.set_title(f"{report['artifact']} on {device['device']}{emulated}: top {len(top)} kernels", fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write_profile(report: dict, out: Path) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["device", *PROFILE_COLUMNS])
    for device in report["devices"]:
        for kernel in device["kernels"]:
            writer.writerow([device["device"], *(kernel[c] for c in PROFILE_COLUMNS)])
    _write_text(out / "profile.csv", buffer.getvalue())
    _write_text(out / "profile.json", json.dumps(report, indent=2))
    _write_text(out / "profile.trace.json", json.dumps(_chrome_trace(report)))
    _bar_chart(report, out / "profile.png")
    tables = "\n".join(profile_table(report, device) for device in report["devices"])
    _write_text(out / "profile.md", tables)
    return tables
