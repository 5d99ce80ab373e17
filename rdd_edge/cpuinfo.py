"""Which instructions INT8 inference can use on this CPU (no torch, no third-party packages).

INT8 on a CPU is only fast when the CPU has an instruction that multiplies 8-bit values and adds
them into 32-bit sums in one step: VNNI on x86 (AVX-512 VNNI on Xeons since Cascade Lake and
recent AMD, AVX-VNNI on Alder Lake and later client chips), and the dot-product instructions
(``asimddp``: SDOT/UDOT) on ARMv8.2+ cores such as Jetson Orin's Cortex-A78AE. Without them the
8-bit products go through 16-bit intermediates and INT8 gains much less over FP32.

:func:`parse_cpuinfo` reads the text of Linux's ``/proc/cpuinfo`` (pure, for tests);
:func:`parse_sysctl` reads macOS ``sysctl`` values; :func:`detect` picks whichever this machine has
and falls back to ``platform.machine()`` elsewhere.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

AVX512_VNNI = "AVX-512 VNNI"
AVX_VNNI = "AVX-VNNI"
AVX2 = "AVX2"
ARM_DOTPROD = "ARM dot-product (asimddp)"
ARM_NEON = "ARM NEON"
UNKNOWN = "unknown"

# INT8's ceiling vs FP32 per ISA, for compute-bound convolutions; memory-bound layers,
# quantize/dequantize nodes and pre/post-processing make the whole-model gain smaller.
_VNNI_NOTE = "INT8 can reach ~4x FP32: each VNNI instruction does 4x the multiply-adds of an FP32 FMA of the same width"
NOTES = {
    AVX512_VNNI: _VNNI_NOTE,
    AVX_VNNI: _VNNI_NOTE,
    AVX2: "INT8 reaches ~2x FP32 at most: without VNNI each 8-bit multiply-add takes three instructions (pmaddubsw, pmaddwd, paddd)",
    ARM_DOTPROD: "INT8 can reach ~4x FP32: each SDOT/UDOT does 4x the multiply-adds of an FP32 FMA of the same width",
    ARM_NEON: "INT8 reaches ~2x FP32 at most: without dot-product instructions 8-bit values are widened to 16 bits to multiply",
    UNKNOWN: "INT8's gain over FP32 is unknown here (no VNNI, AVX2 or dot-product flag found): measure before counting on it",
}

# ARM "CPU implementer" / "CPU part" ids of common cores (aarch64 /proc/cpuinfo has no model name)
_ARM_PARTS = {
    (0x41, 0xD03): "ARM Cortex-A53", (0x41, 0xD04): "ARM Cortex-A35", (0x41, 0xD05): "ARM Cortex-A55",
    (0x41, 0xD07): "ARM Cortex-A57", (0x41, 0xD08): "ARM Cortex-A72", (0x41, 0xD09): "ARM Cortex-A73",
    (0x41, 0xD0A): "ARM Cortex-A75", (0x41, 0xD0B): "ARM Cortex-A76", (0x41, 0xD0C): "ARM Neoverse-N1",
    (0x41, 0xD0D): "ARM Cortex-A77", (0x41, 0xD40): "ARM Neoverse-V1", (0x41, 0xD41): "ARM Cortex-A78",
    (0x41, 0xD42): "ARM Cortex-A78AE", (0x41, 0xD44): "ARM Cortex-X1", (0x41, 0xD46): "ARM Cortex-A510",
    (0x41, 0xD47): "ARM Cortex-A710", (0x41, 0xD49): "ARM Neoverse-N2", (0x41, 0xD4F): "ARM Neoverse-V2",
    (0x4E, 0x004): "NVIDIA Carmel",
}


@dataclass(frozen=True)
class CpuInfo:
    """What a person needs to judge a CPU latency figure."""

    model: str  # e.g. "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz"; "unknown" when not found
    cores: int | None  # logical CPUs (hardware threads) the OS lists
    isa: str  # one of AVX512_VNNI, AVX_VNNI, AVX2, ARM_DOTPROD, ARM_NEON, UNKNOWN
    note: str  # one line: INT8's ceiling vs FP32 with this ISA
    arch: str = ""  # platform.machine() style: x86_64, aarch64, arm64, ...
    physical_cores: int | None = None  # when the source says (x86 "cpu cores" x sockets)
    extras: tuple[str, ...] = field(default_factory=tuple)  # further INT8 units: "AMX-INT8", "I8MM"

    def line(self) -> str:
        """One line for reports: model, cores, INT8 instruction set and its ceiling."""
        cores = "? cores" if self.cores is None else f"{self.cores} logical CPUs"
        if self.physical_cores and self.physical_cores != self.cores:
            cores += f" ({self.physical_cores} cores)"
        isa = self.isa + (f" (+{', '.join(self.extras)})" if self.extras else "")
        return f"{self.model}, {cores}, {isa}. {self.note}"

    def as_dict(self) -> dict:
        d = asdict(self)
        d["extras"] = list(self.extras)
        d["line"] = self.line()
        return d


def _flags_isa(flags: set[str], arch: str) -> tuple[str, tuple[str, ...]]:
    """The best INT8 instruction set among ``flags`` (x86 ``flags`` or ARM ``Features`` words)."""
    extras: list[str] = []
    if "amx_int8" in flags:
        extras.append("AMX-INT8")
    if "i8mm" in flags:
        extras.append("I8MM")
    if "avx512_vnni" in flags or "avx512vnni" in flags:
        return AVX512_VNNI, tuple(extras)
    if "avx_vnni" in flags:
        return AVX_VNNI, tuple(extras)
    if "avx2" in flags:
        return AVX2, tuple(extras)
    if "asimddp" in flags:
        return ARM_DOTPROD, tuple(extras)
    if "asimd" in flags or "neon" in flags:
        return ARM_NEON, tuple(extras)
    if _is_arm64(arch):  # Advanced SIMD is mandatory on AArch64 even when the flags are missing
        return ARM_NEON, tuple(extras)
    return UNKNOWN, tuple(extras)


def _is_arm64(arch: str) -> bool:
    return arch.lower() in ("aarch64", "arm64", "armv8l", "armv8")


def _int(v: str) -> int | None:
    try:
        return int(v, 0)
    except ValueError:
        return None


def parse_cpuinfo(text: str, machine: str | None = None, board: str | None = None) -> CpuInfo:
    """A :class:`CpuInfo` from the text of ``/proc/cpuinfo``.

    ``machine`` is ``platform.machine()`` (guessed from the text when None); ``board`` a device
    model such as ``/proc/device-tree/model`` ("NVIDIA Jetson AGX Orin Developer Kit"), put in
    front of the core name on ARM boards.
    """
    blocks: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    for raw in text.splitlines():
        if not raw.strip():
            if cur:
                blocks.append(cur)
                cur = {}
            continue
        if ":" not in raw:
            continue
        k, v = raw.split(":", 1)
        cur.setdefault(k.strip().lower(), v.strip())
    if cur:
        blocks.append(cur)
    procs = [b for b in blocks if "processor" in b and _int(b["processor"]) is not None]
    first = procs[0] if procs else (blocks[0] if blocks else {})
    words = (first.get("flags") or first.get("features") or "").split()
    if machine is None:
        machine = "aarch64" if "asimd" in words or "cpu implementer" in first else ("x86_64" if "flags" in first else "")
    isa, extras = _flags_isa(set(words), machine)

    model = first.get("model name") or ""
    impl, part = _int(first.get("cpu implementer", "")), _int(first.get("cpu part", ""))
    core = _ARM_PARTS.get((impl, part)) if impl is not None and part is not None else None
    if core and (not model or model.lower().startswith("armv")):
        model = core  # "ARMv8 Processor rev 1 (v8l)" says less than the core's name
    if not model:  # some ARM kernels put the SoC in a trailing "Hardware" / "Model" line
        model = next((b[k] for b in blocks for k in ("model", "hardware") if b.get(k) and "processor" not in b), "")
    model = re.sub(r"\s+", " ", model).strip() or UNKNOWN
    if board and board.strip():
        model = f"{board.strip()} ({model})" if model != UNKNOWN else board.strip()

    cores = len(procs) or None
    sockets = {b.get("physical id") for b in procs if b.get("physical id") is not None}
    per_socket = _int(first.get("cpu cores", "")) if "cpu cores" in first else None
    physical = per_socket * max(1, len(sockets)) if per_socket else None
    return CpuInfo(model=model, cores=cores, isa=isa, note=NOTES[isa], arch=machine,
                   physical_cores=physical, extras=extras)


def parse_sysctl(values: Mapping[str, str], machine: str = "") -> CpuInfo:
    """A :class:`CpuInfo` from macOS ``sysctl -n`` values (missing keys are simply absent).

    Keys read: ``machdep.cpu.brand_string``, ``hw.logicalcpu``, ``hw.physicalcpu``,
    ``hw.optional.arm.FEAT_DotProd``, ``hw.optional.arm.FEAT_I8MM``, ``hw.optional.avx512vnni``,
    ``hw.optional.avx2_0``.
    """
    on = lambda k: str(values.get(k, "0")).strip() == "1"  # noqa: E731
    flags = set()
    if on("hw.optional.arm.FEAT_DotProd"):
        flags.add("asimddp")
    if on("hw.optional.arm.FEAT_I8MM"):
        flags.add("i8mm")
    if on("hw.optional.avx512vnni"):
        flags.add("avx512_vnni")
    if on("hw.optional.avx2_0"):
        flags.add("avx2")
    isa, extras = _flags_isa(flags, machine)
    model = str(values.get("machdep.cpu.brand_string", "")).strip() or UNKNOWN
    cores = _int(str(values.get("hw.logicalcpu", "")).strip())
    physical = _int(str(values.get("hw.physicalcpu", "")).strip())
    return CpuInfo(model=model, cores=cores, isa=isa, note=NOTES[isa], arch=machine,
                   physical_cores=physical, extras=extras)


_SYSCTL_KEYS = ("machdep.cpu.brand_string", "hw.logicalcpu", "hw.physicalcpu", "hw.optional.arm.FEAT_DotProd",
                "hw.optional.arm.FEAT_I8MM", "hw.optional.avx512vnni", "hw.optional.avx2_0")


def _sysctl(keys: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k in keys:  # one call per key: sysctl stops at the first unknown name
        try:
            r = subprocess.run(["sysctl", "-n", k], capture_output=True, text=True, timeout=2)
        except (OSError, subprocess.SubprocessError):
            return out
        if r.returncode == 0:
            out[k] = r.stdout.strip()
    return out


@functools.lru_cache(maxsize=1)
def detect() -> CpuInfo:
    """This machine's :class:`CpuInfo` (cached): ``/proc/cpuinfo`` on Linux, ``sysctl`` on macOS,
    else only the architecture (ISA ``unknown`` on x86, ``ARM NEON`` on 64-bit ARM)."""
    machine = platform.machine()
    proc = Path("/proc/cpuinfo")
    if sys.platform.startswith("linux") and proc.is_file():
        try:
            text = proc.read_text(errors="replace")
        except OSError:
            text = ""
        board = None
        dt = Path("/proc/device-tree/model")
        if dt.is_file():
            try:
                board = dt.read_bytes().rstrip(b"\x00").decode(errors="replace")
            except OSError:
                board = None
        if text:
            return parse_cpuinfo(text, machine, board)
    if sys.platform == "darwin":
        vals = _sysctl(_SYSCTL_KEYS)
        if vals:
            return parse_sysctl(vals, machine)
    isa, extras = _flags_isa(set(), machine)
    return CpuInfo(model=platform.processor() or UNKNOWN, cores=os.cpu_count(), isa=isa, note=NOTES[isa],
                   arch=machine, extras=extras)
