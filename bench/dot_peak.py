"""Peak int8 MAC rate of each dot-product instruction sequence this CPU has, one core: the
yardstick for the per-kernel GMAC/s of `qatie-compile profile` and `bench/conv_kernels.py`.

Each sequence is what one tensorized step of our packed conv issues per output vector
(`compile/backend/dot_products.py`), in an assembly loop over independent accumulators
(registers only: no loads, so this is the arithmetic ceiling, not a memory one), compiled with
the host C compiler and timed. Writes `dot_peak.json` + `.md`.

    python bench/dot_peak.py
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import click

ITERATIONS = 50_000_000
REPEATS = 5


@dataclass(frozen=True)
class Sequence:
    """One step: `body` with {acc} the accumulator register, ymm/zmm13..15 scratch and inputs."""

    dot: str  # the DotProduct it models
    macs: int  # multiply-accumulates per step
    body: str


SEQUENCES = (
    Sequence("vnni", 64, "vpdpbusd %%zmm14, %%zmm15, %%zmm{acc}\\n"),
    Sequence("vnni-ymm", 32, "vpdpbusd %%ymm14, %%ymm15, %%ymm{acc}\\n"),
    Sequence("avx512bw-u8", 64, "vpmaddubsw %%zmm14, %%zmm15, %%zmm13\\n vpmaddwd %%zmm12, %%zmm13, %%zmm13\\n"
                                " vpaddd %%zmm13, %%zmm{acc}, %%zmm{acc}\\n"),
    Sequence("avx512bw-i16", 32, "vpmaddwd %%zmm14, %%zmm15, %%zmm13\\n vpaddd %%zmm13, %%zmm{acc}, %%zmm{acc}\\n"),
    Sequence("avx2-u8", 32, "vpmaddubsw %%ymm14, %%ymm15, %%ymm13\\n vpmaddwd %%ymm12, %%ymm13, %%ymm13\\n"
                            " vpaddd %%ymm13, %%ymm{acc}, %%ymm{acc}\\n"),
    Sequence("avx2-i16", 16, "vpmaddwd %%ymm14, %%ymm15, %%ymm13\\n vpaddd %%ymm13, %%ymm{acc}, %%ymm{acc}\\n"),
)
ACCUMULATORS = (8, 12)  # the register tiles of our AVX2 kernels hold 8; 12 shows the headroom

PROGRAM = """
#include <stdio.h>
#include <time.h>
int main(void) {{
  struct timespec a, b;
  long n = {iterations};
  clock_gettime(CLOCK_MONOTONIC, &a);
  __asm__ volatile("1:\\n" {steps} "dec %0\\n jnz 1b\\n" : "+r"(n) :: "memory");
  clock_gettime(CLOCK_MONOTONIC, &b);
  printf("%.9f\\n", (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9);
  return 0;
}}
"""


def _gmacs(sequence: Sequence, accumulators: int, folder: Path) -> float:
    steps = " ".join('"' + sequence.body.format(acc=k) + '"' for k in range(accumulators))
    source = folder / f"{sequence.dot}-{accumulators}.c"
    binary = source.with_suffix("")
    source.write_text(PROGRAM.format(iterations=ITERATIONS, steps=steps))
    subprocess.run([os.environ.get("CC", "cc"), "-O1", str(source), "-o", str(binary)], check=True)
    best = min(float(subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout)
               for _ in range(REPEATS))
    return ITERATIONS * accumulators * sequence.macs / best / 1e9


@click.command()
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("bench/results"))
def main(out: Path) -> None:
    """Measure each sequence this CPU can run; write dot_peak.json and .md."""
    from tvm.target import codegen

    from compile.backend.dot_products import candidates
    from compile.backend.targets import get_target

    target = get_target("x86-host").tvm_target()
    usable = {dot.name for dot in candidates(target)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for sequence in SEQUENCES:
            if sequence.dot not in usable:
                continue
            for accumulators in ACCUMULATORS:
                rows.append({"dot_product": sequence.dot, "accumulators": accumulators,
                             "gmac_per_s": round(_gmacs(sequence, accumulators, Path(tmp)), 1)})
    peaks = {dot: max(r["gmac_per_s"] for r in rows if r["dot_product"] == dot) for dot in {r["dot_product"] for r in rows}}
    cpu = codegen.llvm_get_system_cpu()
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    out.mkdir(parents=True, exist_ok=True)
    (out / "dot_peak.json").write_text(json.dumps({"command": command, "cpu": cpu, "rows": rows, "peaks": peaks},
                                                  indent=1) + "\n")
    lines = [(f"Measured with `{command}` on {cpu}, 1 core, best of {REPEATS} runs of {ITERATIONS} steps per "
              "accumulator (registers only: the arithmetic ceiling)."), "",
             "| dot product | accumulators | GMAC/s |", "|---|---|---|"]
    lines += [f"| {r['dot_product']} | {r['accumulators']} | {r['gmac_per_s']} |" for r in rows]
    (out / "dot_peak.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
