"""Power drawn during the timed runs: a background sampler and the average over each timed window.

FPS alone cannot be compared across power modes; FPS per watt (images per joule) can. A
:class:`PowerSampler` reads one power figure every ``interval`` seconds in a daemon thread (cheap
file reads, or one ``tegrastats`` process), and a :meth:`PowerSampler.window` around a timed run
averages the samples taken inside it (one is taken as the window opens and one as it closes, so even
a short window has two). The window includes the few warm-up calls the latency recipe makes before
its timed runs.

Sources, in the order they are tried (NVIDIA Jetson Linux Developer Guide, "Platform Power and
Performance", Jetson Orin series: the on-module power monitors; kernel documentation
``hwmon/ina3221``; NVML API reference):

- Jetson, INA3221 through hwmon: ``/sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*/in{N}_label`` (the
  rail: ``VDD_IN``, ``VDD_CPU_GPU_CV``, ``VDD_SOC`` on an Orin Nano), ``in{N}_input`` (bus voltage,
  mV) and ``curr{N}_input`` (current, mA); watts = mV x mA / 1e6. The module's input rail ``VDD_IN``
  is the figure (CPU, GPU, memory and all); without one, the sum of the rails, said so.
- Jetson, ``tegrastats --interval 100``: each line lists rails as ``<RAIL> <now>mW/<average>mW``
  (e.g. ``VDD_IN 5012mW/5012mW VDD_CPU_GPU_CV 1234mW/1234mW``; older releases omit ``mW``).
- Desktop GPU, NVML: ``nvmlDeviceGetPowerUsage`` (mW; the GPU board only, not the host).
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from rdd_edge.deploy.device_state import Machine, import_nvml, read_text, unknown

INPUT_RAILS = ("VDD_IN", "POM_5V_IN")  # the module's input: Orin / Xavier NX, Nano
INA3221_GLOB = "sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*"
GPU_BACKENDS = ("cuda", "tensorrt")


# ---------------------------------------------------------------- sources
@dataclass
class Rail:
    label: str
    volts_file: Path  # in{N}_input, mV
    amps_file: Path  # curr{N}_input, mA


def find_ina3221_rails(machine: Machine) -> list[Rail]:
    """Every labelled INA3221 channel with a voltage and a current file (sum-of-shunt channels have no current)."""
    rails = []
    for hw in sorted(machine.root.glob(INA3221_GLOB)):
        for label_file in sorted(hw.glob("in[0-9]*_label")):
            n = label_file.name[2:-6]
            label, _ = read_text(label_file)
            volts, amps = hw / f"in{n}_input", hw / f"curr{n}_input"
            if label and label.upper() != "NC" and volts.exists() and amps.exists():
                rails.append(Rail(label, volts, amps))
    return rails


def _int_file(path: Path) -> int:
    text, why = read_text(path)
    if text is None or not re.fullmatch(r"-?\d+", text):
        raise OSError(why or f"{path}: {text!r} is not a number")
    return int(text)


class Ina3221Source:
    """Module power from the INA3221 rails in sysfs (polled)."""

    scope = "module"  # VDD_IN feeds the whole module: CPU and GPU rows alike

    def __init__(self, rails: list[Rail]):
        self.rails = rails
        total = next((r for r in rails if r.label.upper() in INPUT_RAILS), None)
        self.used = [total] if total is not None else rails
        self.name = (f"INA3221 {total.label} (sysfs)" if total is not None else
                     f"INA3221 sum of {', '.join(r.label for r in rails)} (sysfs; no input rail)")

    def read(self) -> float:
        return sum(_int_file(r.volts_file) * _int_file(r.amps_file) for r in self.used) / 1e6


class NvmlSource:
    """GPU board power from NVML (polled); ``close`` shuts NVML down."""

    scope = "gpu"

    def __init__(self, nv: Any, index: int = 0):
        self.nv = nv
        nv.nvmlInit()
        try:
            self.handle = nv.nvmlDeviceGetHandleByIndex(index)
            name = nv.nvmlDeviceGetName(self.handle)
        except Exception:
            nv.nvmlShutdown()
            raise
        self.name = f"NVML power usage, GPU {index} ({name.decode() if isinstance(name, bytes) else name}; board only)"

    def read(self) -> float:
        return self.nv.nvmlDeviceGetPowerUsage(self.handle) / 1000.0

    def close(self) -> None:
        try:
            self.nv.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


RAIL_MW = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?=\s|$)")


def parse_tegrastats(line: str) -> dict[str, int]:
    """The rails of one tegrastats line, now-values in mW: ``"... VDD_IN 5012mW/4800mW ..."`` -> {"VDD_IN": 5012}.
    RAM / SWAP figures (``2112/7620MB``) are not rails: a unit other than mW follows them."""
    return {m.group(1): int(m.group(2)) for m in RAIL_MW.finditer(line)}


def tegrastats_watts(rails: dict[str, int]) -> float | None:
    """The input rail in W (else the sum of the rails), None for a line without rails."""
    if not rails:
        return None
    total = next((rails[k] for k in INPUT_RAILS if k in rails), None)
    return (total if total is not None else sum(rails.values())) / 1000.0


class TegrastatsSource:
    """Module power from a ``tegrastats`` process (streamed: it prints one line per interval)."""

    scope = "module"
    name = "tegrastats VDD_IN"

    def __init__(self, interval_ms: int = 100, popen: Callable[..., Any] = subprocess.Popen):
        self.interval_ms, self.popen = interval_ms, popen
        self.proc: Any = None
        self.thread: threading.Thread | None = None

    def start(self, add: Callable[[float], None]) -> None:
        self.proc = self.popen(["tegrastats", "--interval", str(self.interval_ms)], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)

        def pump() -> None:
            for line in self.proc.stdout:
                rails = parse_tegrastats(line)
                watts = tegrastats_watts(rails)
                if watts is not None:
                    if "VDD_IN" not in rails and "POM_5V_IN" not in rails:
                        self.name = "tegrastats, sum of " + ", ".join(rails)
                    add(watts)

        self.thread = threading.Thread(target=pump, name="rdd-tegrastats", daemon=True)
        self.thread.start()

    def close(self) -> None:
        if self.proc is not None:
            try:
                self.proc.terminate()  # the process this source started, by its handle
                self.proc.wait(timeout=2)
            except Exception:  # noqa: BLE001
                pass
        if self.thread is not None:
            self.thread.join(timeout=2)


# ---------------------------------------------------------------- the sampler and its windows
class PowerSampler:
    """Power samples (time, W) from one source in the background; windows average them.

    Without a source (``source=None``) every window's power is ``unknown(why)`` and nothing runs."""

    def __init__(self, source: Any = None, why: str = "", interval: float = 0.1,
                 clock: Callable[[], float] = time.monotonic):
        self.source, self.why, self.interval, self.clock = source, why, interval, clock
        self.samples: list[tuple[float, float]] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        return getattr(self.source, "name", "") if self.source is not None else unknown(self.why)

    @property
    def polled(self) -> bool:
        return self.source is not None and hasattr(self.source, "read")

    def covers(self, backend: str) -> bool:
        """Whether this source measures what a row with ``backend`` ran on (NVML: the GPU's rows only)."""
        if self.source is None:
            return False
        return getattr(self.source, "scope", "module") == "module" or any(g in backend.lower() for g in GPU_BACKENDS)

    def add(self, watts: float, t: float | None = None) -> None:
        with self._lock:
            self.samples.append((self.clock() if t is None else t, float(watts)))

    def sample_now(self) -> None:
        """One reading from a polled source (a streamed one samples on its own)."""
        if not self.polled:
            return
        try:
            self.add(self.source.read())
        except Exception as exc:  # noqa: BLE001 - a failed read is one lost sample, said in the result
            if len(self.errors) < 5:
                self.errors.append(str(exc) or type(exc).__name__)

    def start(self) -> "PowerSampler":
        if self.source is None or self._thread is not None:
            return self
        if self.polled:
            def loop() -> None:
                while not self._stop.wait(self.interval):
                    self.sample_now()

            self._thread = threading.Thread(target=loop, name="rdd-power", daemon=True)
            self._thread.start()
        else:
            try:
                self.source.start(self.add)
            except Exception as exc:  # noqa: BLE001 - e.g. tegrastats vanished since it was found
                self.source, self.why = None, f"could not start {getattr(self.source, 'name', 'the power source')}: {exc}"
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self.source is not None and hasattr(self.source, "close"):
            self.source.close()

    def __enter__(self) -> "PowerSampler":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def between(self, t0: float, t1: float) -> list[float]:
        with self._lock:
            return [w for t, w in self.samples if t0 <= t <= t1]

    def window(self) -> "Window":
        return Window(self)


class Window:
    """``with sampler.window() as w: <timed runs>``; then ``w.average_w`` and ``w.annotate(latency)``."""

    def __init__(self, sampler: PowerSampler):
        self.sampler = sampler
        self.t0 = self.t1 = 0.0

    def __enter__(self) -> "Window":
        self.sampler.sample_now()
        self.t0 = self.sampler.clock()
        return self

    def __exit__(self, *exc: object) -> None:
        self.t1 = self.sampler.clock()
        self.sampler.sample_now()
        self.t1 = max(self.t1, self.sampler.clock())

    @property
    def watts(self) -> list[float]:
        return self.sampler.between(self.t0, self.t1)

    def average_w(self) -> float | str:
        """Mean power over the window, W, or unknown (why)."""
        s = self.sampler
        if s.source is None:
            return unknown(s.why)
        w = self.watts
        if not w:
            err = f"; reads failed: {s.errors[0]}" if s.errors else ""
            return unknown(f"no {s.name} sample in the {self.t1 - self.t0:.2f} s window{err}")
        return sum(w) / len(w)

    def annotate(self, figures: dict[str, Any], fps_key: str = "fps") -> dict[str, Any]:
        """``figures`` (a latency dict with ``fps``) plus ``power_w``, ``fps_per_w``, ``power_samples``, ``power_source``."""
        avg = self.average_w()
        fps = figures.get(fps_key)
        out = {**figures, "power_w": avg, "power_samples": len(self.watts), "power_source": self.sampler.name}
        if isinstance(avg, float) and avg > 0 and isinstance(fps, (int, float)):
            out["fps_per_w"] = float(fps) / avg
        else:
            out["fps_per_w"] = avg if isinstance(avg, str) else unknown("no power figure")
        return out


def not_measured(figures: dict[str, Any], why: str) -> dict[str, Any]:
    """``figures`` with power and FPS/W unknown for ``why`` (a row the source does not measure)."""
    return {**figures, "power_w": unknown(why), "fps_per_w": unknown(why)}


def open_sampler(machine: Machine | None = None, device: str = "auto", gpu_index: int = 0,
                 interval: float = 0.1) -> PowerSampler:
    """The power sampler this machine allows (not started): INA3221 or tegrastats on a Jetson, NVML on
    a desktop GPU, else one that says why there is no power figure. Never raises."""
    machine = machine or Machine()
    try:
        if machine.is_jetson():
            rails = find_ina3221_rails(machine)
            if rails:
                return PowerSampler(Ina3221Source(rails), interval=interval)
            if machine.which("tegrastats") is None:
                return PowerSampler(why="no INA3221 rails under /sys/bus/i2c/drivers/ina3221 and no tegrastats on PATH",
                                    interval=interval)
            return PowerSampler(TegrastatsSource(max(10, int(interval * 1000))), interval=interval)
        if device == "cpu":
            return PowerSampler(why="a CPU run off a Jetson: NVML measures the GPU only", interval=interval)
        nv, why = (machine.nvml, "") if machine.nvml is not None else import_nvml()
        if nv is None:
            return PowerSampler(why=why, interval=interval)
        return PowerSampler(NvmlSource(nv, gpu_index), interval=interval)
    except Exception as exc:  # noqa: BLE001 - NVML without a driver, an unreadable tree: no power figure, no failure
        return PowerSampler(why=f"no power source: {str(exc) or type(exc).__name__}", interval=interval)


def power_text(figures: dict[str, Any]) -> str:
    """"7.85 W, 15.7 FPS/W" from an annotated latency dict ('' when it has no power fields)."""
    w = figures.get("power_w")
    if w is None:
        return ""
    if not isinstance(w, float):
        return f"power {w}"
    per = figures.get("fps_per_w")
    return f"{w:.2f} W avg ({figures.get('power_samples')} samples), " + (
        f"{per:.2f} FPS/W" if isinstance(per, float) else f"FPS/W {per}")


@contextmanager
def measuring(power: PowerSampler | None, backend: str) -> Iterator[Callable[[dict[str, Any]], dict[str, Any]]]:
    """``with measuring(power, backend) as finish: <timed runs>``, then ``finish(figures)`` (after the block):
    the figures (a dict with ``fps``) plus the power drawn during the block and FPS/W, or unknown with why
    (no source; a row the source does not measure: a CPU row under NVML). No sampler: the figures as they are."""
    if power is None:
        yield lambda figures: figures
        return
    if not power.covers(backend):
        why = power.why if power.source is None else f"{power.name} does not measure a run on {backend or 'the CPU'}"
        yield lambda figures: not_measured(figures, why)
        return
    with power.window() as win:
        yield win.annotate


def timed(power: PowerSampler | None, backend: str, measure: Callable[[], Any]) -> dict[str, Any]:
    """``measure()`` (a Latency) as a dict, with the power drawn while it ran and FPS/W (:func:`measuring`)."""
    with measuring(power, backend) as finish:
        figures = measure().as_dict()
    return finish(figures)
