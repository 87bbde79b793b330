"""Which guest code ran, and how often: our qemu plugin (native/block_profile.c) and its output.

The plugin is compiled with the host's C compiler at first use into the cache folder, keyed by
its source hash, like the aarch64 session program (arm64_runtime.py). qemu ships no plugin
headers; the plugin declares the few API functions it calls.
"""

from __future__ import annotations

import hashlib
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from compile.offline.host_tools import build_once, cache_dir, run_tool
from qatie.errors import QatieError

PLUGIN_SOURCE = Path(__file__).resolve().parent / "native" / "block_profile.c"
PLUGIN, HOST_CC = "block_profile.so", "cc"


@dataclass(frozen=True)
class Block:
    """A block of guest code: where it is (the file it was loaded from, by name, and its offset
    from the file's load bias, i.e. its ELF address; "" and the address for code in no file),
    the times it ran and its instructions' bytes."""

    place: str
    offset: int
    count: int
    insns: tuple[bytes, ...]

    @property
    def instructions(self) -> int:
        return self.count * len(self.insns)


def load_biases(maps: str) -> dict[str, tuple[int, int, int]]:
    """File name -> (lowest address, highest address + 1, load bias) of every file mapped in a
    process, from its /proc/self/maps text; the bias is the start of the mapping at offset 0."""
    ranges: dict[str, list[tuple[int, int]]] = {}
    biases: dict[str, int] = {}
    for line in maps.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[5].startswith("/"):
            name = Path(fields[5]).name
            start, end = (int(part, 16) for part in fields[0].split("-"))
            ranges.setdefault(name, []).append((start, end))
            if int(fields[2], 16) == 0:
                biases.setdefault(name, start)
    return {name: (min(r[0] for r in spans), max(r[1] for r in spans), biases[name])
            for name, spans in ranges.items() if name in biases}


def ensure_plugin() -> Path:
    """The cached plugin library, compiled the first time."""
    cc = shutil.which(HOST_CC)
    if not cc:
        raise QatieError(f"profiling emulated code needs a host C compiler ({HOST_CC}) to build "
                         f"{PLUGIN_SOURCE.name}; install it with `apt-get install gcc`")
    folder = cache_dir() / f"qemu-plugin-{hashlib.sha256(PLUGIN_SOURCE.read_bytes()).hexdigest()[:12]}"
    build_once(folder, PLUGIN, lambda built: run_tool(
        [cc, "-shared", "-fPIC", "-O2", "-o", str(built / PLUGIN), str(PLUGIN_SOURCE)], f"{PLUGIN_SOURCE}: {HOST_CC} failed"))
    return folder / PLUGIN


def plugin_arguments(plugin: Path, out: Path) -> list[str]:
    """qemu's `-plugin` value for writing the blocks to `out`."""
    return [str(plugin), f"out={out}"]


def read_blocks(path: Path, maps: str) -> list[Block]:
    """The plugin's output, each block placed in the file it was loaded from (by `maps`, the
    process's memory map); blocks translated more than once (same place and instructions) merged."""
    files = load_biases(maps)
    counts: Counter[tuple[str, int, tuple[bytes, ...]]] = Counter()
    for line in path.read_text().splitlines():
        address_text, count, *insns = line.split()
        address = int(address_text, 16)
        place, offset = next(((name, address - bias) for name, (start, end, bias) in files.items()
                              if start <= address < end), ("", address))
        counts[place, offset, tuple(bytes.fromhex(insn) for insn in insns)] += int(count)
    return [Block(place, offset, count, insns) for (place, offset, insns), count in counts.items()]


def one_run(once: list[Block], twice: list[Block]) -> list[Block]:
    """The aarch64 basic blocks of one more run of the same work: a process that did it twice
    minus one that did it once. Start-up (loading, session creation, first-run allocation) cancels out.

    The difference is taken per instruction, whose execution count is exact, and the result is
    cut into basic blocks from the code alone (`_basic_blocks`): how qemu cuts code into
    translated blocks varies from run to run (a block is retranslated one instruction long
    after a write to its page, an atomic runs as a block of its own), and the cycles of a
    sequence depend on where it is cut."""
    counts: Counter[tuple[str, int]] = Counter()
    insns: dict[tuple[str, int], bytes] = {}
    for sign, blocks in ((1, twice), (-1, once)):
        for block in blocks:
            offset = block.offset
            for insn in block.insns:
                counts[block.place, offset] += sign * block.count
                insns[block.place, offset] = insn
                offset += len(insn)
    return _basic_blocks({address: (count, insns[address]) for address, count in counts.items() if count > 0})


def _is_branch(insn: bytes) -> bool:
    """An aarch64 branch (B, BL, B.cond, CBZ/CBNZ, TBZ/TBNZ, BR/BLR/RET): a basic block's end."""
    word = int.from_bytes(insn, "little")
    return ((word & 0x7C000000) == 0x14000000 or (word & 0xFF000010) == 0x54000000
            or (word & 0x7E000000) in (0x34000000, 0x36000000) or (word & 0xFE000000) == 0xD6000000)


def _basic_blocks(instructions: dict[tuple[str, int], tuple[int, bytes]]) -> list[Block]:
    """Runs of consecutive instructions that executed equally often, each ending at a branch."""
    runs: list[list[tuple[str, int, int, bytes]]] = []
    for (place, offset), (count, insn) in sorted(instructions.items()):
        last = runs[-1][-1] if runs else None
        if last is None or _is_branch(last[3]) or (last[0], last[1] + len(last[3]), last[2]) != (place, offset, count):
            runs.append([])
        runs[-1].append((place, offset, count, insn))
    return [Block(run[0][0], run[0][1], run[0][2], tuple(insn for *_, insn in run)) for run in runs]
