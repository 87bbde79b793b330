"""Cycles of aarch64 code blocks on a named core, from llvm-mca's scheduling models.

llvm-mca simulates a block of instructions as a loop on a core's out-of-order or in-order
pipeline model and reports its steady-state cycles per iteration. That is a block's cost when
caches hit: loads are L1 hits, branches predicted. Kernels that stream more data than the
caches hold run slower on a phone than estimated; compute-bound conv loops (our int8 kernels)
are where the estimate is meant to be read.

Not every core has its own model in the installed LLVM: Debian's LLVM 14 and 15 schedule
cortex-a76 with the Cortex-A57 model. Each estimate names the model that produced it.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from dataclasses import dataclass
from functools import cached_property
from typing import TypeVar

from compile.offline.block_profile import Block
from compile.offline.host_tools import cache_dir, llvm_tool, run_tool, tool_error
from qatie.atomic import write_text_atomic
from qatie.errors import QatieError

# What the disassembler and the simulator accept: a superset of every aarch64 target we build
# for. The core's model decides what each instruction costs.
MATTR = "+v8.2a,+dotprod,+fullfp16,+i8mm"
ITERATIONS = 100
INVALID = re.compile(r"<stdin>:(\d+):\d+: (?:warning|error): invalid instruction encoding")
UNSUPPORTED = re.compile(r"note: instruction:\s+(.*)")
CALLS = ("bl", "blr", "call", "callq")
K = TypeVar("K")


def _mnemonic(text: str) -> str:
    return text.split(None, 1)[0] if text.strip() else text


@dataclass(frozen=True)
class Core:
    """An ARM core as the estimate knows it: the CPU extensions it implements (a build using
    others cannot run on it), the clock its milliseconds are stated at, and the qemu CPU model
    with its extensions (qemu 7.2 has no Cortex-A55: the A76 has the same ones), under which a
    runtime that picks its kernels by the CPU's features (ONNX Runtime) takes this core's path."""

    name: str
    features: frozenset[str]
    clock_ghz: float
    qemu_cpu: str
    triple: str = "aarch64"
    mattr: str = MATTR


# Clocks: the core's common clock in phones of the last years (Cortex-A53 1.8 GHz in
# Snapdragon 450/625-class chips, Cortex-A55 1.8 GHz little cores, Cortex-A76 2.4 GHz big cores
# in Snapdragon 855-class chips): a stated assumption, overridable with --clock-ghz.
CORES = {core.name: core for core in (
    Core("cortex-a53", frozenset({"+neon"}), 1.8, "cortex-a53"),
    Core("cortex-a55", frozenset({"+neon", "+dotprod", "+fullfp16"}), 1.8, "cortex-a76"),
    Core("cortex-a76", frozenset({"+neon", "+dotprod", "+fullfp16"}), 2.4, "cortex-a76"),
)}


def _run(command: list[str], stdin: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, input=stdin, check=False, capture_output=True, text=True)


def code_key(insns: tuple[bytes, ...]) -> str:
    """A block's name in llvm-mca's input and in the cache: a hash of its instructions."""
    return hashlib.sha256(b"".join(len(insn).to_bytes(1, "little") + insn for insn in insns)).hexdigest()[:24]


@dataclass(frozen=True)
class CycleModel:
    """llvm-mca with one core's scheduling model, and a per-block cache of its answers."""

    core: Core

    @cached_property
    def tools(self) -> tuple[str, str]:
        return llvm_tool("llvm-mc"), llvm_tool("llvm-mca")

    @cached_property
    def version(self) -> str:
        match = re.search(r"LLVM version (\d+)", _run([self.tools[1], "--version"], "").stdout)
        return match.group(1) if match else "unknown"

    @cached_property
    def scheduling_model(self) -> str:
        """The name of the model llvm-mca uses for the core (its resource names carry it)."""
        result = _run([self.tools[1], f"-mtriple={self.core.triple}", f"-mcpu={self.core.name}", "-resource-pressure=true"],
                      "nop\n")
        match = re.search(r"\[\d+(?:\.\d+)?\]\s+- (\w+?)Unit", result.stdout)
        return match.group(1) if match else self.core.name

    @property
    def label(self) -> str:
        return (f"estimated (llvm-mca {self.version} -mcpu={self.core.name}, scheduling model "
                f"{self.scheduling_model}; qemu block counts)")

    def totals(self, groups: dict[K, list[Block]]) -> dict[K, float]:
        """Estimated cycles of all executions of each group's blocks (one simulation for all)."""
        per_execution = self.cycles([block.insns for blocks in groups.values() for block in blocks])
        return {group: sum(block.count * per_execution[code_key(block.insns)] for block in blocks)
                for group, blocks in groups.items()}

    def cycles(self, blocks: list[tuple[bytes, ...]]) -> dict[str, float]:
        """Cycles per execution of each block (by `code_key`), cached on disk per core."""
        cache_file = cache_dir() / f"mca-{self.version}-{self.core.name}.json"
        cached = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
        keyed = {code_key(insns): insns for insns in blocks}
        missing = [(key, insns) for key, insns in keyed.items() if key not in cached]
        if missing:
            cached.update(self._simulate(missing))
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(json.dumps(cached), cache_file)
        return {key: cached[key] for key in keyed}

    def _disassemble(self, insns: set[bytes]) -> dict[bytes, str]:
        """Assembly text of each instruction (one llvm-mc run, one instruction per line); `nop`
        for an encoding the disassembler does not know (qemu ran it, so it is rare: an
        extension newer than this LLVM)."""
        ordered = sorted(insns)
        text = "".join(" ".join(f"0x{b:02x}" for b in insn) + "\n" for insn in ordered)
        result = _run([self.tools[0], "--disassemble", f"-triple={self.core.triple}", f"-mattr={self.core.mattr}"], text)
        invalid = {int(line) - 1 for line in INVALID.findall(result.stderr)}
        decoded = iter(line.strip() for line in result.stdout.splitlines() if line.startswith("\t") and
                       not line.strip().startswith("."))
        return {insn: "nop" if index in invalid else next(decoded) for index, insn in enumerate(ordered)}

    def _simulate(self, blocks: list[tuple[str, tuple[bytes, ...]]]) -> dict[str, float]:
        """One llvm-mca run over all blocks, each its own code region."""
        text_of = self._disassemble({insn for _, insns in blocks for insn in insns})
        replaced = self._unschedulable(set(text_of.values()))
        source = "".join(f"# LLVM-MCA-BEGIN {key}\n" + "".join(
            ("nop" if _mnemonic(text_of[insn]) in replaced else text_of[insn]) + "\n" for insn in insns) +
            "# LLVM-MCA-END\n" for key, insns in blocks)
        report = run_tool(self._mca_command(ITERATIONS), f"llvm-mca -mcpu={self.core.name} failed", source).stdout
        return self._region_cycles(report, [key for key, _ in blocks])

    def _unschedulable(self, texts: set[str]) -> set[str]:
        """Mnemonics costed as one issue slot (`nop`): calls, for which llvm-mca assumes 100
        cycles of latency that an in-order model waits out every iteration, and instructions
        the core's model cannot schedule (LLVM 14's Cortex-A55 model lacks the LSE atomics libc
        uses). llvm-mca stops at the first of those, so they are found on the distinct
        instructions alone, one short run each, before the blocks are simulated."""
        replaced = set(CALLS)
        while True:
            rest = sorted(text for text in texts if _mnemonic(text) not in replaced)
            result = _run(self._mca_command(1), "".join(text + "\n" for text in rest))
            if result.returncode == 0:
                return replaced
            found = {_mnemonic(text) for text in UNSUPPORTED.findall(result.stderr)} - replaced
            if not found:
                raise tool_error(result, f"llvm-mca -mcpu={self.core.name} failed")
            replaced |= found

    def _mca_command(self, iterations: int) -> list[str]:
        return [self.tools[1], f"-mtriple={self.core.triple}", f"-mcpu={self.core.name}", f"-mattr={self.core.mattr}",
                f"-iterations={iterations}", "-instruction-info=false", "-resource-pressure=false"]

    @staticmethod
    def _region_cycles(report: str, keys: list[str]) -> dict[str, float]:
        regions = re.split(r"\n\[\d+\] Code Region - ", "\n" + report)[1:]
        cycles = {}
        for region in regions:
            key = region.split("\n", 1)[0].strip()
            iterations = int(re.search(r"Iterations:\s+(\d+)", region).group(1))
            total = int(re.search(r"Total Cycles:\s+(\d+)", region).group(1))
            cycles[key] = total / iterations
        if set(cycles) != set(keys):
            raise QatieError(f"llvm-mca reported {len(cycles)} of {len(keys)} code regions")
        return cycles
