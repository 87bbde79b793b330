"""Tables and files for bench and profile results. Every table starts with the command that
produced it, so no number travels without the way to reproduce it.

Each output format is one function `(report, folder) -> file name` in `BENCH_FORMATS` or
`PROFILE_FORMATS`; adding a format is adding an entry.
"""

from __future__ import annotations

import csv
import io
import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from qatie.atomic import atomic_path, write_text_atomic

PROFILE_COLUMNS = ("name", "calls", "total_ms", "mean_ms", "share", "macs", "bytes", "gmac_per_s", "gb_per_s", "tuned",
                   "dot_product")
TOP_KERNELS_PLOTTED = 15


def command_line() -> str:
    """The command as the user typed it, for the head of every table."""
    return "qatie-compile " + shlex.join(sys.argv[1:])


def caption(artifact, placement, timing, threads: int) -> str:
    """What was measured, where and how (the line under the command in every table)."""
    tuning = artifact.manifest.tuning
    threads_text = f"{threads} thread(s) requested" if threads else "the runtime's default threads"
    return (f"{artifact.folder} ({artifact.target_name}, {tuning.kernels_tuned} of {tuning.kernels} kernels tuned) "
            f"on {placement.where}; {timing.warmup} warm-up runs, {timing.repeats} timed runs "
            f"(each >= {timing.min_ms:g} ms); {threads_text}")


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def bench_table(report: dict) -> str:
    header = ["device", "arch", "threads", "median ms", "p90 ms", "min ms", "max ms", "std ms", "repeats"]
    references = list(report["devices"][0]["agreement"]) if report["devices"] else []
    for name in references:
        header += [f"vs {name}: max steps", f"vs {name}: within 1 step", f"vs {name}: PSNR dB"]
    rows = []
    for row in report["devices"]:
        lat = row["latency"]
        mark = " (emulated)" if row["emulated"] else ""
        cells = [row["device"], _arch_cell(row), str(row["threads"]),
                 *(f"{lat[k]:.2f}{mark}" for k in ("median_ms", "p90_ms", "min_ms", "max_ms", "std_ms")),
                 str(lat["repeats"])]
        for name in references:
            agree = row["agreement"][name]
            cells += [f"{agree['max_steps']:.1f}", f"{100 * agree['within_one_step']:.3f} %", f"{agree['psnr_db']:.2f}"]
        rows.append(cells)
    estimates = "\n" + estimate_table(report["estimates"], f"{report['artifact']}", top=0) + "\n" if report.get("estimates") else ""
    return f"`{report['command']}`\n\n{report['caption']}\n\n{_markdown(header, rows)}\n{_emulation_note(report)}{estimates}"


def _arch_cell(row: dict) -> str:
    return f"{row['arch']}, emulated: {row['emulated']}" if row["emulated"] else row["arch"]


def _emulation_note(report: dict) -> str:
    """Emulated devices compute what the device would; their timings say nothing about it."""
    if not any(row["emulated"] for row in report["devices"]):
        return ""
    return ("\nTimes marked (emulated) were measured under an emulator on the host: they check that the "
            "library runs, they are not device latencies and must not be reported as such.\n")


def _bench_json(report: dict, folder: Path) -> str:
    write_text_atomic(json.dumps(report, indent=2), folder / "bench.json")
    return "bench.json"


def _bench_markdown(report: dict, folder: Path) -> str:
    write_text_atomic(bench_table(report), folder / "bench.md")
    return "bench.md"


def profile_table(report: dict, device: dict) -> str:
    rows = [[k["name"], str(k["calls"]), f"{k['total_ms']:.3f}", f"{k['mean_ms']:.3f}", f"{100 * k['share']:.1f} %",
             f"{k['macs'] * k['calls'] / 1e6:.1f}", f"{k['bytes'] * k['calls'] / 1e6:.2f}", f"{k['gmac_per_s']:.2f}",
             f"{k['gb_per_s']:.2f}", "yes" if k["tuned"] else "no", k["dot_product"] or ""] for k in device["kernels"]]
    header = ["kernel", "calls", "total ms", "mean ms", "share", "MMAC", "MB", "GMAC/s", "GB/s", "tuned", "dot product"]
    e2e = device["end_to_end"]["median_ms"]
    summary = (f"device {device['device']} ({_arch_cell(device)}, {device['threads']} thread(s)): kernels sum to {device['kernel_sum_ms']:.2f} ms, "
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


def _profile_png(report: dict, folder: Path) -> str:
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
    with atomic_path(folder / "profile.png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return "profile.png"


def _profile_csv(report: dict, folder: Path) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["device", *PROFILE_COLUMNS])
    for device in report["devices"]:
        for kernel in device["kernels"]:
            writer.writerow([device["device"], *(kernel[c] for c in PROFILE_COLUMNS)])
    write_text_atomic(buffer.getvalue(), folder / "profile.csv")
    return "profile.csv"


def _profile_json(report: dict, folder: Path) -> str:
    write_text_atomic(json.dumps(report, indent=2), folder / "profile.json")
    return "profile.json"


def _profile_trace(report: dict, folder: Path) -> str:
    write_text_atomic(json.dumps(_chrome_trace(report)), folder / "profile.trace.json")
    return "profile.trace.json"


def profile_tables(report: dict) -> str:
    tables = [profile_table(report, device) for device in report["devices"]]
    if report.get("estimates"):
        tables.append(estimate_table(report["estimates"], f"{report['artifact']} on an emulated device"))
    return "\n".join(tables)


# How far the estimate can be trusted, from checking the method against measured kernel times on
# an x86 host (bench/estimate_validation.py; its figures are in docs/offline-checks.md).
ESTIMATE_QUALITY = ("How far to trust it: checked against measured kernel times on an x86 host, 'conv' estimates "
                    "rank and scale with the kernels' time; 'other' kernels (packing, lookups, elementwise: "
                    "memory-bound, which llvm-mca models as cache hits) can be off several-fold either way "
                    "(docs/offline-checks.md, bench/estimate_validation.py).")


def _peers_cell(estimate: dict) -> str:
    lines = []
    for peer in estimate.get("peers", []):
        agree = peer["agreement"]
        lines.append(f"\n  - {peer['runtime']} on {peer['model']}, as {peer['as_core']} (qemu -cpu {peer['qemu_cpu']}): "
                     f"{peer['cycles'] / 1e6:.2f} M cycles = {peer['ms']:.2f} ms; ours {peer['speedup']:.2f}x as fast "
                     f"(its output within one step of {peer['reference']} on {100 * agree['within_one_step']:.2f} %, "
                     f"max {agree['max_steps']:.0f} steps)")
    if len(lines) > 1:
        fastest = estimate["fastest_peer"]
        lines.append(f"\n  - fastest: {fastest['runtime']} on {fastest['model']}; ours {fastest['speedup']:.2f}x as fast")
    return "".join(lines)


def estimate_table(estimates: list[dict], subject: str, top: int = 15) -> str:
    """Markdown of `qatie-compile estimate`'s figures (compile/offline/estimate.py): the totals
    per core, then the `top` costliest kernels with each core's cycles and MACs per cycle."""
    lines = [f"Estimated cycles of one inference of {subject}, 1 thread:", ""]
    lines += [f"- {e['core']} at {e['clock_ghz']:g} GHz: {e['cycles'] / 1e6:.2f} M cycles = {e['ms']:.2f} ms, {e['label']}"
              + _peers_cell(e) for e in estimates]
    if not top:
        return "\n".join(lines)
    header = ["kernel", "kind", "calls", "M instructions"]
    for e in estimates:
        header += [f"{e['core']} Mcycles", f"{e['core']} MAC/cycle"]
    per_core = [{k["name"]: k for k in e["kernels"]} for e in estimates]
    rows = []
    for kernel in estimates[0]["kernels"][:top]:  # each core's kernels come costliest first
        cells = [kernel["name"], kernel["kind"], str(kernel["calls"]), f"{kernel['instructions'] / 1e6:.3f}"]
        for kernels in per_core:
            same = kernels[kernel["name"]]
            cells += [f"{same['cycles'] / 1e6:.3f}", f"{same['macs_per_cycle']:.2f}"]
        rows.append(cells)
    more = len(estimates[0]["kernels"]) - top
    return ("\n".join(lines) + "\n\n" + _markdown(header, rows) + (f"\n\n({more} more kernels in the JSON report)" if more > 0 else "")
            + "\n\n" + ESTIMATE_QUALITY)


def _profile_markdown(report: dict, folder: Path) -> str:
    write_text_atomic(profile_tables(report), folder / "profile.md")
    return "profile.md"


Writer = Callable[[dict, Path], str]
BENCH_FORMATS: dict[str, Writer] = {"json": _bench_json, "md": _bench_markdown}
PROFILE_FORMATS: dict[str, Writer] = {"csv": _profile_csv, "json": _profile_json, "trace.json": _profile_trace,
                                      "png": _profile_png, "md": _profile_markdown}


def write_report(report: dict, folder: Path, formats: dict[str, Writer]) -> list[str]:
    """Every format of `report` into `folder`; the file names written."""
    return [write(report, folder) for write in formats.values()]
