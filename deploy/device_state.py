"""The device's state next to every figure: power mode, clocks, temperatures, throttling (read, never set).

An Orin Nano's latency moves more than 2x between its power modes and with ``jetson_clocks``, a
desktop GPU's with its clocks, temperature and power cap: a latency without them cannot be compared
with another. :func:`collect` reads what this machine exposes, cheaply (files, one short command on a
Jetson, NVML on a desktop GPU) and never fails: every field is a value or ``"unknown (<reason>)"``
(a missing tool, a root-only file, no NVML), so the run it describes goes on. The power drawn
*during* the timed runs is :mod:`deploy.power`'s.

Where each reading comes from (NVIDIA Jetson Linux Developer Guide, "Platform Power and Performance",
Jetson Orin Nano / Orin NX / AGX Orin series, r35-r36; kernel documentation for the generic sysfs):

- power mode: ``nvpmodel -q`` prints ``NV Power Mode: <NAME>`` and then the mode id on its own line
  (e.g. ``NV Power Mode: MAXN`` / ``0``; ``15W`` / ``0`` on an Orin Nano 8GB);
- CPU clocks: cpufreq, ``/sys/devices/system/cpu/cpuN/cpufreq/scaling_cur_freq`` (kHz);
- GPU clock: the GPU's devfreq node, ``.../devfreq/<gpu>/cur_freq`` (Hz), e.g.
  ``/sys/class/devfreq/17000000.gpu`` (Orin, JetPack 6) or ``17000000.ga10b`` (JetPack 5);
- EMC (memory) clock: ``/sys/kernel/debug/bpmp/debug/clk/emc/rate`` (Hz): debugfs, root only;
  else the EMC line of ``jetson_clocks --show`` (root too);
- ``jetson_clocks --show`` (root): ``GPU MinFreq=.. MaxFreq=.. CurrentFreq=..`` and ``EMC ...`` lines;
  MinFreq == MaxFreq means jetson_clocks has locked the clock at its maximum;
- temperatures: the Linux thermal framework, ``/sys/class/thermal/thermal_zoneN/{type,temp}``
  (millidegrees Celsius), and throttling as a zone at or above one of its ``passive`` trip points
  (``trip_point_K_{type,temp}``: the software-throttling trip of Jetson's thermal zones);
- desktop GPU: NVML through ``nvidia-ml-py`` (module ``pynvml``, the ``gpu`` extra): clocks
  (``nvmlDeviceGetClockInfo``, MHz), power (``nvmlDeviceGetPowerUsage``, mW; averaged over 1 s on
  Ampere and newer), the enforced power limit, temperature, the clock-event (throttle) reasons bit
  mask (``nvmlClocksEventReason*`` / ``nvmlClocksThrottleReason*``: NVML API reference), the
  performance state and persistence mode.

NVML numbers GPUs in PCI bus order and CUDA, unless ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, fastest first (and
after ``CUDA_VISIBLE_DEVICES``): ``--device cuda:N`` reads NVML's GPU N, and the GPU's name is recorded so a
mismatch shows.

Every reader takes a :class:`Machine`: its ``root`` (a faked sysfs tree in tests), its command
runner, whether it runs as root, and the NVML module to use.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from rdd_edge.deploy import board

Runner = Callable[[Sequence[str], float], "tuple[int, str]"]  # (argv, timeout s) -> (exit code, stdout + stderr)
COMMAND_TIMEOUT = 5.0  # s: nvpmodel -q and jetson_clocks --show answer at once; a hung tool must not hold a check
NVML_HINT = "pip install nvidia-ml-py (the gpu extra: pip install 'rdd-edge[gpu]')"


def unknown(reason: str) -> str:
    """A field that could not be read, with why: ``"unknown (<reason>)"``."""
    return f"unknown ({reason})"


def is_unknown(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("unknown (")


def run_command(argv: Sequence[str], timeout: float = COMMAND_TIMEOUT) -> tuple[int, str]:
    """Run a tool found on PATH: (exit code, stdout + stderr). FileNotFoundError when it is not installed."""
    exe = shutil.which(argv[0])
    if exe is None:
        raise FileNotFoundError(f"no {argv[0]} on PATH")
    done = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=timeout)
    return done.returncode, (done.stdout or "") + (done.stderr or "")


def _euid_is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


@dataclass
class Machine:
    """Where the readers look: a file-system root, a command runner, root or not, an NVML module."""

    root: Path = Path("/")
    run: Runner = run_command
    is_root: bool = field(default_factory=_euid_is_root)
    jetson: bool | None = None  # None: deploy.board decides
    nvml: Any = None  # a pynvml-like module; None: imported lazily
    which: Callable[[str], "str | None"] = shutil.which  # where a tool is on PATH (None: not installed)

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    def is_jetson(self) -> bool:
        return board.is_jetson() if self.jetson is None else self.jetson


def read_text(path: Path) -> tuple[str | None, str]:
    """(the file's text, "") or (None, why it could not be read)."""
    try:
        return path.read_text(errors="replace").strip(), ""
    except PermissionError:
        return None, f"{path}: permission denied (root only)"
    except FileNotFoundError:
        return None, f"no {path}"
    except OSError as exc:
        return None, f"{path}: {exc.strerror or exc}"


def run_tool(machine: Machine, argv: Sequence[str]) -> tuple[str | None, str]:
    """(a tool's output, "") or (None, why it gave none): not installed, timed out, failed."""
    cmd = " ".join(argv)
    try:
        code, out = machine.run(list(argv), COMMAND_TIMEOUT)
    except FileNotFoundError:
        return None, f"no {argv[0]} on PATH"
    except subprocess.TimeoutExpired:
        return None, f"`{cmd}` gave no answer in {COMMAND_TIMEOUT:g} s"
    except OSError as exc:
        return None, f"`{cmd}`: {exc.strerror or exc}"
    if code != 0:
        first = next((ln.strip() for ln in out.splitlines() if ln.strip()), "")
        return None, f"`{cmd}` exited {code}" + (f": {first[:120]}" if first else "")
    return out, ""


# ---------------------------------------------------------------- Jetson
def parse_nvpmodel(text: str) -> tuple[str | None, int | None]:
    """``nvpmodel -q``'s output -> (mode name, mode id): ``"NV Power Mode: MAXN\\n0"`` -> ("MAXN", 0).
    Warnings it prints first (``NVPM WARN: ...``) are skipped."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        m = re.match(r"NV Power Mode:\s*(.+)$", line)
        if m:
            mode_id = next((int(x) for x in lines[i + 1:i + 2] if re.fullmatch(r"\d+", x)), None)
            return m.group(1).strip(), mode_id
    return None, None


def read_power_mode(machine: Machine) -> dict[str, Any]:
    """``power_mode`` (e.g. "MAXN", "15W") and ``power_mode_id`` from ``nvpmodel -q``."""
    out, why = run_tool(machine, ["nvpmodel", "-q"])
    if out is None:
        return {"power_mode": unknown(why), "power_mode_id": unknown(why)}
    name, mode_id = parse_nvpmodel(out)
    if name is None:
        why = "`nvpmodel -q` printed no 'NV Power Mode:' line"
        return {"power_mode": unknown(why), "power_mode_id": unknown(why)}
    return {"power_mode": name, "power_mode_id": mode_id if mode_id is not None else unknown("no mode id line")}


def read_cpu_clocks(machine: Machine) -> dict[str, float] | str:
    """MHz per online CPU from cpufreq's ``scaling_cur_freq`` (kHz)."""
    base = machine.path("/sys/devices/system/cpu")
    found: dict[str, float] = {}
    reasons = []
    for f in sorted(base.glob("cpu[0-9]*/cpufreq/scaling_cur_freq"), key=lambda p: int(p.parent.parent.name[3:])):
        text, why = read_text(f)
        if text is not None and text.isdigit():
            found[f.parent.parent.name] = int(text) / 1000.0
        elif why:
            reasons.append(why)
    if found:
        return found
    return unknown(reasons[0] if reasons else f"no cpufreq under {base} (a VM or container without it)")


GPU_DEVFREQ = re.compile(r"gpu|ga10b|gv11b|gp10b|gm20b|gb10b", re.IGNORECASE)
_DEVFREQ_GLOBS = ("sys/class/devfreq/*", "sys/devices/platform/*/devfreq/*", "sys/devices/platform/*/*/devfreq/*",
                  "sys/devices/*/devfreq/*")


def gpu_devfreq(machine: Machine) -> Path | None:
    """The Jetson GPU's devfreq folder (``cur_freq``, ``max_freq`` in Hz), or None."""
    for pattern in _DEVFREQ_GLOBS:
        for d in sorted(machine.root.glob(pattern)):
            if GPU_DEVFREQ.search(d.name) and (d / "cur_freq").exists():
                return d
    return None


def read_gpu_clock(machine: Machine) -> dict[str, Any]:
    """``gpu_clock_mhz`` (and ``gpu_max_clock_mhz``) from the GPU's devfreq node."""
    d = gpu_devfreq(machine)
    if d is None:
        return {"gpu_clock_mhz": unknown("no GPU devfreq node under /sys/class/devfreq")}
    out: dict[str, Any] = {}
    for key, name in (("gpu_clock_mhz", "cur_freq"), ("gpu_max_clock_mhz", "max_freq")):
        text, why = read_text(d / name)
        out[key] = int(text) / 1e6 if text is not None and text.isdigit() else unknown(why or f"{d / name}: {text!r}")
    return out


def parse_jetson_clocks(text: str) -> dict[str, Any]:
    """``jetson_clocks --show`` -> {"gpu": {min,max,current Hz}, "emc": {...}, "cpus": {name: {...}}, "locked": ...}."""
    out: dict[str, Any] = {}
    cpus: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        pairs = {k: int(v) for k, v in re.findall(r"(MinFreq|MaxFreq|CurrentFreq)=(\d+)", line)}
        if not pairs:
            continue
        head = line.split()[0].rstrip(":")
        if head in ("GPU", "EMC"):
            out[head.lower()] = pairs
        elif re.fullmatch(r"cpu\d+", head):
            cpus[head] = pairs
    if cpus:
        out["cpus"] = cpus
    locked = [all(p.get("MinFreq") == p.get("MaxFreq") for p in group)
              for group in ([out["gpu"]] if "gpu" in out else [], [out["emc"]] if "emc" in out else [], list(cpus.values()))
              if group]
    if locked:
        out["locked"] = all(locked)
    return out


def read_jetson_clocks(machine: Machine) -> dict[str, Any] | str:
    """What ``jetson_clocks --show`` says (it needs root: else unknown, with how to get it)."""
    if not machine.is_root:
        return unknown("jetson_clocks --show needs root: run the check with sudo, or see `sudo jetson_clocks --show`")
    out, why = run_tool(machine, ["jetson_clocks", "--show"])
    if out is None:
        return unknown(why)
    parsed = parse_jetson_clocks(out)
    return parsed or unknown("`jetson_clocks --show` printed no MinFreq/MaxFreq/CurrentFreq lines")


EMC_RATE = "/sys/kernel/debug/bpmp/debug/clk/emc/rate"


def read_emc_clock(machine: Machine, shown: dict[str, Any] | str) -> float | str:
    """EMC clock in MHz: BPMP's debugfs rate (root), else ``jetson_clocks --show``'s EMC CurrentFreq."""
    text, why = read_text(machine.path(EMC_RATE))
    if text is not None and text.isdigit():
        return int(text) / 1e6
    if isinstance(shown, dict) and "CurrentFreq" in (shown.get("emc") or {}):
        return shown["emc"]["CurrentFreq"] / 1e6
    if not machine.is_root:
        why = f"{EMC_RATE} is root only (debugfs): run with sudo"
    return unknown(why)


# ---------------------------------------------------------------- any Linux: thermal zones
def read_thermal(machine: Machine) -> dict[str, Any]:
    """``temperatures_c`` per thermal zone type and ``throttle``: the zones at or above a passive trip point."""
    base = machine.path("/sys/class/thermal")
    temps: dict[str, float] = {}
    hot: list[str] = []
    for zone in sorted(base.glob("thermal_zone*"), key=lambda p: int(p.name[12:] or 0) if p.name[12:].isdigit() else 0):
        kind, _ = read_text(zone / "type")
        raw, _ = read_text(zone / "temp")
        if kind is None or raw is None or not re.fullmatch(r"-?\d+", raw):
            continue  # some Jetson zones give no reading (offline sensors): left out
        name = kind if kind not in temps else f"{kind}.{zone.name[12:]}"
        temps[name] = int(raw) / 1000.0
        for tt in sorted(zone.glob("trip_point_*_type")):
            trip_kind, _ = read_text(tt)
            trip_raw, _ = read_text(tt.with_name(tt.name.replace("_type", "_temp")))
            if trip_kind == "passive" and trip_raw is not None and re.fullmatch(r"-?\d+", trip_raw) \
                    and int(raw) >= int(trip_raw):
                hot.append(f"{name} {int(raw) / 1000:.1f} C >= passive trip {int(trip_raw) / 1000:.1f} C")
                break
    if not temps:
        why = f"no readable thermal zone under {base}"
        return {"temperatures_c": unknown(why), "throttle": unknown(why)}
    throttle = ("throttling: " + "; ".join(hot)) if hot else "none seen (no thermal zone at a passive trip point)"
    return {"temperatures_c": temps, "throttle": throttle}


# ---------------------------------------------------------------- desktop GPU: NVML
THROTTLE_BITS = {  # nvmlClocksEventReason* / nvmlClocksThrottleReason* (NVML API reference)
    0x1: "gpu idle", 0x2: "applications clocks setting", 0x4: "sw power cap", 0x8: "hw slowdown",
    0x10: "sync boost", 0x20: "sw thermal slowdown", 0x40: "hw thermal slowdown", 0x80: "hw power brake slowdown",
    0x100: "display clock setting",
}


def throttle_names(mask: int) -> str:
    """An NVML clock-event bit mask in words ("none" for 0)."""
    names = [name for bit, name in THROTTLE_BITS.items() if mask & bit]
    rest = mask & ~sum(THROTTLE_BITS)
    if rest:
        names.append(f"other 0x{rest:x}")
    return ", ".join(names) or "none"


def import_nvml() -> tuple[Any, str]:
    """(the pynvml module, "") or (None, why not)."""
    try:
        import pynvml  # lazy: optional dependency (nvidia-ml-py, the gpu extra)
    except ImportError:
        return None, f"no NVML bindings: {NVML_HINT}"
    return pynvml, ""


def _nvml_field(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except Exception as exc:  # noqa: BLE001 - NVMLError_NotSupported, _NoPermission ...: that field is unknown
        return unknown(f"NVML: {str(exc) or type(exc).__name__}")


def read_nvml(nv: Any, index: int = 0) -> dict[str, Any]:
    """One GPU's state through NVML (``nvmlInit`` ... ``nvmlShutdown``); unknown fields where NVML refuses."""
    try:
        nv.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - no driver, no GPU: NVMLError_LibraryNotFound, _DriverNotLoaded
        return {"gpu": unknown(f"NVML could not start: {str(exc) or type(exc).__name__}")}
    try:
        try:
            h = nv.nvmlDeviceGetHandleByIndex(index)
        except Exception as exc:  # noqa: BLE001
            return {"gpu": unknown(f"NVML has no GPU {index}: {exc}")}
        reasons = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None) or nv.nvmlDeviceGetCurrentClocksThrottleReasons
        name = _nvml_field(lambda: nv.nvmlDeviceGetName(h))
        return {
            "gpu": name.decode() if isinstance(name, bytes) else name,
            "nvml_index": index,
            "sm_clock_mhz": _nvml_field(lambda: int(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM))),
            "memory_clock_mhz": _nvml_field(lambda: int(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM))),
            "power_draw_w": _nvml_field(lambda: nv.nvmlDeviceGetPowerUsage(h) / 1000.0),
            "power_limit_w": _nvml_field(lambda: nv.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0),
            "gpu_temperature_c": _nvml_field(lambda: int(nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU))),
            "performance_state": _nvml_field(lambda: f"P{int(nv.nvmlDeviceGetPerformanceState(h))}"),
            "gpu_throttle": _nvml_field(lambda: throttle_names(int(reasons(h)))),
            "persistence_mode": _nvml_field(
                lambda: "on" if nv.nvmlDeviceGetPersistenceMode(h) == nv.NVML_FEATURE_ENABLED else
                "off (sudo nvidia-smi -pm 1 keeps the driver loaded between runs)"),
        }
    finally:
        try:
            nv.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


# ---------------------------------------------------------------- the whole state
def collect(machine: Machine | None = None, device: str = "auto", gpu_index: int = 0) -> dict[str, Any]:
    """The device's state now, as data: every field a value or ``"unknown (<reason>)"``; never raises."""
    machine = machine or Machine()
    try:
        return _collect(machine, device, gpu_index)
    except Exception as exc:  # noqa: BLE001 - a reading must never stop the run it describes
        return {"kind": unknown(f"reading the device state failed: {type(exc).__name__}: {exc}")}


def _collect(machine: Machine, device: str, gpu_index: int) -> dict[str, Any]:
    state: dict[str, Any] = {}
    if machine.is_jetson():
        state["kind"] = "jetson"
        state.update(read_power_mode(machine))
        state["cpu_clocks_mhz"] = read_cpu_clocks(machine)
        state.update(read_gpu_clock(machine))
        shown = read_jetson_clocks(machine)
        state["emc_clock_mhz"] = read_emc_clock(machine, shown)
        state["jetson_clocks"] = shown
        state.update(read_thermal(machine))
        return state
    nv, why = (machine.nvml, "") if machine.nvml is not None else import_nvml()
    gpu = read_nvml(nv, gpu_index) if nv is not None else {"gpu": unknown(why)}
    state["kind"] = "nvidia-gpu" if not is_unknown(gpu.get("gpu")) else "cpu"
    state["cpu_clocks_mhz"] = read_cpu_clocks(machine)
    state.update(read_thermal(machine))
    state.update(gpu)
    return state


def _mhz(v: Any) -> str:
    return f"{v:.0f} MHz" if isinstance(v, (int, float)) else str(v)


def cpu_clock_text(v: Any) -> str:
    """"729-1510 MHz (6 CPUs)" from the per-CPU clocks."""
    if not isinstance(v, dict) or not v:
        return str(v)
    lo, hi = min(v.values()), max(v.values())
    return (f"{lo:.0f} MHz" if lo == hi else f"{lo:.0f}-{hi:.0f} MHz") + f" ({len(v)} CPUs)"


def state_lines(state: dict[str, Any]) -> list[str]:
    """The state in words, one fact a line, for check.md, the acceptance report and the demo summary."""
    s = dict(state)
    lines = []
    if s.get("kind") == "jetson":
        mode = s.get("power_mode")
        mode_id = s.get("power_mode_id")
        lines.append(f"power mode: {mode}" + (f" (id {mode_id})" if isinstance(mode_id, int) else ""))
        shown = s.get("jetson_clocks")
        locked = shown.get("locked") if isinstance(shown, dict) else None
        lines.append(f"clocks: GPU {_mhz(s.get('gpu_clock_mhz'))}"
                     + (f" of {_mhz(s['gpu_max_clock_mhz'])}" if isinstance(s.get("gpu_max_clock_mhz"), float) else "")
                     + f"; EMC {_mhz(s.get('emc_clock_mhz'))}; CPU {cpu_clock_text(s.get('cpu_clocks_mhz'))}")
        lines.append("jetson_clocks: " + (str(shown) if not isinstance(shown, dict) else
                                          "on (clocks locked at their maximum)" if locked else
                                          "off (clocks scale with load)" if locked is False else "read"))
    elif s.get("kind") == "nvidia-gpu":
        lines.append(f"GPU: {s.get('gpu')} (NVML {s.get('nvml_index')}), {s.get('performance_state')}, "
                     f"persistence mode {s.get('persistence_mode')}")
        power = s.get("power_draw_w")
        limit = s.get("power_limit_w")
        lines.append(f"clocks: SM {_mhz(s.get('sm_clock_mhz'))}, memory {_mhz(s.get('memory_clock_mhz'))}; "
                     f"CPU {cpu_clock_text(s.get('cpu_clocks_mhz'))}")
        lines.append(f"GPU power now: {power:.1f} W" if isinstance(power, float) else f"GPU power now: {power}")
        if isinstance(limit, float):
            lines[-1] += f" (limit {limit:.0f} W)"
        temp = s.get("gpu_temperature_c")
        lines.append(f"GPU temperature: {temp} C; clock events: {s.get('gpu_throttle')}")
    else:
        if "gpu" in s:
            lines.append(f"GPU: {s.get('gpu')}")
        if "cpu_clocks_mhz" in s:
            lines.append(f"clocks: CPU {cpu_clock_text(s.get('cpu_clocks_mhz'))}")
        if "kind" in s and is_unknown(s["kind"]):
            lines.append(f"device state: {s['kind']}")
    temps = s.get("temperatures_c")
    if temps is not None:
        hottest = (", ".join(f"{k} {v:.1f} C" for k, v in sorted(temps.items(), key=lambda kv: -kv[1])[:4])
                   if isinstance(temps, dict) else str(temps))
        throttle = s.get("throttle")
        lines.append(f"temperatures: {hottest}" + ("" if throttle == temps else f"; throttling: {throttle}"))
    return lines
