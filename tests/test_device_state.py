"""Device state with every figure (issue 27): faked sysfs trees, tool output and NVML in NVIDIA's documented
formats parsed into the report; missing tools, root-only files and no NVML give "unknown (<reason>)" and the
run goes on; power sampled over a timed window gives FPS/W checked against a computation by hand."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from rdd_edge.deploy import device_state as ds
from rdd_edge.deploy import power as pw
from rdd_edge.deploy.check import Candidate, evaluate_rows
from rdd_edge.deploy.check_report import to_markdown

# nvpmodel -q on an Orin Nano 8GB devkit (Jetson Linux Developer Guide, "Power Mode Controls")
NVPMODEL_Q = "NVPM WARN: fan mode is not set!\nNV Power Mode: 15W\n0\n"
# jetson_clocks --show (as root) after `sudo jetson_clocks`: minimum = maximum = current
JETSON_CLOCKS_SHOW = """SOC family:tegra234  Machine:NVIDIA Jetson Orin Nano Engineering Reference Developer Kit
Online CPUs: 0-5
cpu0: Online=1 Governor=schedutil MinFreq=1510400 MaxFreq=1510400 CurrentFreq=1510400 IdleStates: WFI=0 c7=0
cpu1: Online=1 Governor=schedutil MinFreq=1510400 MaxFreq=1510400 CurrentFreq=1510400 IdleStates: WFI=0 c7=0
GPU MinFreq=624750000 MaxFreq=624750000 CurrentFreq=624750000
EMC MinFreq=204000000 MaxFreq=2133000000 CurrentFreq=2133000000 FreqOverride=1
FAN Dynamic Speed control=active hwmon2_pwm=88
NV Power Mode: 15W
"""
# one tegrastats line on an Orin Nano (rails as <RAIL> <now>mW/<average>mW)
TEGRASTATS = ("12-06-2026 10:00:00 RAM 2112/7620MB (lfb 2x4MB) SWAP 0/3810MB (cached 0MB) "
              "CPU [12%@1510,3%@1510,0%@1510,0%@1510,1%@1510,0%@1510] EMC_FREQ 4%@2133 GR3D_FREQ 87%@[624] "
              "cpu@48.5C soc2@46.9C soc0@47.1C gpu@49.2C tj@49.2C soc1@46.5C "
              "VDD_IN 7184mW/6950mW VDD_CPU_GPU_CV 2403mW/2251mW VDD_SOC 1921mW/1880mW")


def write(root: Path, rel: str, text: str) -> Path:
    p = root / rel.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text + "\n")
    return p


def orin_nano_tree(root: Path, cpu_khz: tuple[int, ...] = (1510400, 1510400, 729600, 729600, 729600, 729600),
                   cpu_temp: int = 48500) -> Path:
    """The sysfs files an Orin Nano exposes, at the documented paths and units."""
    for i, khz in enumerate(cpu_khz):
        write(root, f"/sys/devices/system/cpu/cpu{i}/cpufreq/scaling_cur_freq", str(khz))  # kHz
    write(root, "/sys/class/devfreq/17000000.gpu/cur_freq", "624750000")  # Hz
    write(root, "/sys/class/devfreq/17000000.gpu/max_freq", "624750000")
    write(root, "/sys/class/devfreq/15340000.vic/cur_freq", "115200000")  # not the GPU
    for i, (kind, temp) in enumerate((("cpu-thermal", cpu_temp), ("gpu-thermal", 49200), ("tj-thermal", 49200))):
        z = f"/sys/class/thermal/thermal_zone{i}"
        write(root, f"{z}/type", kind)
        write(root, f"{z}/temp", str(temp))  # millidegrees C
        write(root, f"{z}/trip_point_0_type", "passive")
        write(root, f"{z}/trip_point_0_temp", "99000")
        write(root, f"{z}/trip_point_1_type", "critical")
        write(root, f"{z}/trip_point_1_temp", "104500")
    write(root, "/sys/class/thermal/thermal_zone7/type", "PMIC-Die")  # a zone without a reading
    hw = "/sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
    for n, (label, mv, ma) in enumerate((("VDD_IN", 5000, 1200), ("VDD_CPU_GPU_CV", 5000, 400),
                                         ("VDD_SOC", 5000, 380)), start=1):
        write(root, f"{hw}/in{n}_label", label)
        write(root, f"{hw}/in{n}_input", str(mv))  # mV
        write(root, f"{hw}/curr{n}_input", str(ma))  # mA
    write(root, f"{hw}/in7_label", "sum of shunt voltages")  # a voltage sum: no current, not a rail
    write(root, f"{hw}/in7_input", "4200")
    return root


def runner(answers: dict[str, object]):
    """A command runner: a tool's (exit code, output), or the exception running it raises (absent: not installed)."""
    calls = []

    def run(argv, timeout):
        calls.append(list(argv))
        got = answers.get(argv[0])
        if got is None:
            raise FileNotFoundError(argv[0])
        if isinstance(got, BaseException):
            raise got
        return got

    run.calls = calls  # type: ignore[attr-defined]
    return run


def test_a_jetson_state_is_read_from_sysfs_and_nvpmodel(tmp_path):
    m = ds.Machine(root=orin_nano_tree(tmp_path), run=runner({"nvpmodel": (0, NVPMODEL_Q)}), is_root=False, jetson=True)
    s = ds.collect(m)
    assert s["kind"] == "jetson"
    assert s["power_mode"] == "15W" and s["power_mode_id"] == 0  # the warning line before it is skipped
    assert s["cpu_clocks_mhz"] == {"cpu0": 1510.4, "cpu1": 1510.4, "cpu2": 729.6, "cpu3": 729.6, "cpu4": 729.6,
                                   "cpu5": 729.6}
    assert s["gpu_clock_mhz"] == pytest.approx(624.75) and s["gpu_max_clock_mhz"] == pytest.approx(624.75)
    assert s["temperatures_c"] == {"cpu-thermal": 48.5, "gpu-thermal": 49.2, "tj-thermal": 49.2}  # PMIC-Die: no reading
    assert s["throttle"].startswith("none seen")
    # not root: jetson_clocks is not run, EMC's debugfs rate is root only; both say so and how to get them
    assert ds.is_unknown(s["jetson_clocks"]) and "root" in s["jetson_clocks"] and "sudo" in s["jetson_clocks"]
    assert ds.is_unknown(s["emc_clock_mhz"]) and "/sys/kernel/debug/bpmp/debug/clk/emc/rate" in s["emc_clock_mhz"]
    assert ["jetson_clocks", "--show"] not in m.run.calls  # type: ignore[attr-defined]
    lines = "\n".join(ds.state_lines(s))
    assert "power mode: 15W (id 0)" in lines and "GPU 625 MHz of 625 MHz" in lines and "CPU 730-1510 MHz (6 CPUs)" in lines


def test_as_root_jetson_clocks_and_the_emc_rate_are_read(tmp_path):
    root = orin_nano_tree(tmp_path)
    run = runner({"nvpmodel": (0, NVPMODEL_Q), "jetson_clocks": (0, JETSON_CLOCKS_SHOW)})
    s = ds.collect(ds.Machine(root=root, run=run, is_root=True, jetson=True))
    assert s["jetson_clocks"]["gpu"] == {"MinFreq": 624750000, "MaxFreq": 624750000, "CurrentFreq": 624750000}
    assert s["jetson_clocks"]["cpus"]["cpu1"]["CurrentFreq"] == 1510400
    assert s["jetson_clocks"]["locked"] is False  # EMC min 204 MHz < max: not every clock is locked
    assert s["emc_clock_mhz"] == pytest.approx(2133.0)  # no debugfs file here: jetson_clocks' EMC line
    write(root, ds.EMC_RATE, "3199000000")
    s = ds.collect(ds.Machine(root=root, run=run, is_root=True, jetson=True))
    assert s["emc_clock_mhz"] == pytest.approx(3199.0)  # debugfs first


def test_a_permission_error_on_debugfs_is_unknown_with_the_reason(tmp_path, monkeypatch):
    root = orin_nano_tree(tmp_path)
    write(root, ds.EMC_RATE, "2133000000")
    real = Path.read_text

    def guarded(self, *a, **k):  # debugfs as a user sees it (these tests run as root, so chmod would not stop them)
        if "debug/bpmp" in str(self):
            raise PermissionError(13, "Permission denied")
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "read_text", guarded)
    s = ds.collect(ds.Machine(root=root, run=runner({}), is_root=False, jetson=True))
    assert s["emc_clock_mhz"] == f"unknown ({ds.EMC_RATE} is root only (debugfs): run with sudo)"
    assert s["power_mode"] == "unknown (no nvpmodel on PATH)" and s["power_mode_id"] == "unknown (no nvpmodel on PATH)"
    assert s["gpu_clock_mhz"] == pytest.approx(624.75)  # the rest is read as usual


def test_a_zone_at_its_passive_trip_point_is_throttling(tmp_path):
    s = ds.collect(ds.Machine(root=orin_nano_tree(tmp_path, cpu_temp=99500), run=runner({}), is_root=False, jetson=True))
    assert s["throttle"] == "throttling: cpu-thermal 99.5 C >= passive trip 99.0 C"


def test_missing_tools_and_an_empty_machine_give_unknown_and_never_raise(tmp_path):
    hung = subprocess.TimeoutExpired(["nvpmodel", "-q"], 5)
    for run in (runner({}), runner({"nvpmodel": hung}), runner({"nvpmodel": (255, "NVPM ERROR: failed to read\n")})):
        s = ds.collect(ds.Machine(root=tmp_path, run=run, is_root=True, jetson=True))
        assert s["kind"] == "jetson"
        for key in ("power_mode", "cpu_clocks_mhz", "gpu_clock_mhz", "emc_clock_mhz", "jetson_clocks", "temperatures_c",
                    "throttle"):
            assert ds.is_unknown(s[key]), (key, s[key])
    assert "gave no answer in 5 s" in ds.collect(ds.Machine(root=tmp_path, run=runner({"nvpmodel": hung}), jetson=True))["power_mode"]
    assert "exited 255: NVPM ERROR" in ds.collect(ds.Machine(root=tmp_path, run=runner(
        {"nvpmodel": (255, "NVPM ERROR: failed to read\n")}), jetson=True))["power_mode"]

    def broken(argv, timeout):
        raise RuntimeError("boom")

    s = ds.collect(ds.Machine(root=tmp_path, run=broken, jetson=True))  # anything else: one unknown, no exception
    assert ds.is_unknown(s["kind"]) and "boom" in s["kind"] and ds.state_lines(s)


class NVMLError(Exception):
    pass


def fake_pynvml(power_mw: int = 215_000, throttle: int = 0x24, persistence: int = 0, temp_fails: bool = False):
    """A stand-in for nvidia-ml-py's pynvml module: the calls and constants the NVML API reference names."""
    nv = types.ModuleType("pynvml")
    nv.calls = []
    nv.NVML_CLOCK_SM, nv.NVML_CLOCK_MEM, nv.NVML_TEMPERATURE_GPU, nv.NVML_FEATURE_ENABLED = 1, 2, 0, 1
    nv.NVMLError = NVMLError
    nv.nvmlInit = lambda: nv.calls.append("init")
    nv.nvmlShutdown = lambda: nv.calls.append("shutdown")
    nv.nvmlDeviceGetHandleByIndex = lambda i: ("handle", i)
    nv.nvmlDeviceGetName = lambda h: b"NVIDIA GeForce RTX 4090"
    nv.nvmlDeviceGetClockInfo = lambda h, kind: {1: 2520, 2: 10501}[kind]  # MHz
    nv.nvmlDeviceGetPowerUsage = lambda h: power_mw  # mW
    nv.nvmlDeviceGetEnforcedPowerLimit = lambda h: 450_000  # mW
    nv.nvmlDeviceGetPerformanceState = lambda h: 2

    def temperature(h, sensor):
        if temp_fails:
            raise NVMLError("Not Supported")
        return 61

    nv.nvmlDeviceGetTemperature = temperature
    nv.nvmlDeviceGetCurrentClocksThrottleReasons = lambda h: throttle
    nv.nvmlDeviceGetPersistenceMode = lambda h: persistence
    return nv


def test_a_desktop_gpu_is_read_through_nvml(tmp_path, monkeypatch):
    nv = fake_pynvml(temp_fails=True)
    monkeypatch.setitem(sys.modules, "pynvml", nv)  # imported lazily, as on a machine with nvidia-ml-py
    s = ds.collect(ds.Machine(root=tmp_path, run=runner({}), jetson=False), device="cuda:1", gpu_index=1)
    assert s["kind"] == "nvidia-gpu" and s["gpu"] == "NVIDIA GeForce RTX 4090" and s["nvml_index"] == 1
    assert s["sm_clock_mhz"] == 2520 and s["memory_clock_mhz"] == 10501
    assert s["power_draw_w"] == pytest.approx(215.0) and s["power_limit_w"] == pytest.approx(450.0)
    assert s["gpu_throttle"] == "sw power cap, sw thermal slowdown"  # 0x4 | 0x20
    assert s["performance_state"] == "P2" and s["persistence_mode"].startswith("off")
    assert s["gpu_temperature_c"] == "unknown (NVML: Not Supported)"  # one field refused, the others read
    assert nv.calls == ["init", "shutdown"]
    lines = "\n".join(ds.state_lines(s))
    assert "SM 2520 MHz, memory 10501 MHz" in lines and "GPU power now: 215.0 W (limit 450 W)" in lines


def test_without_nvml_or_jetson_the_state_says_why_and_the_check_goes_on(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails: nvidia-ml-py not installed
    s = ds.collect(ds.Machine(root=tmp_path, run=runner({}), jetson=False))
    assert s["kind"] == "cpu" and s["gpu"] == f"unknown (no NVML bindings: {ds.NVML_HINT})"
    sampler = pw.open_sampler(ds.Machine(root=tmp_path, run=runner({}), jetson=False), device="cuda")
    assert sampler.source is None and "nvidia-ml-py" in sampler.name
    with sampler:
        lat = pw.timed(sampler, "CUDAExecutionProvider", lambda: _Lat(fps=50.0))
    assert lat["fps"] == 50.0 and lat["power_w"] == lat["fps_per_w"] == sampler.name


# ---------------------------------------------------------------- power during the timed window
class _Lat:
    def __init__(self, fps: float):
        self.fps = fps

    def as_dict(self) -> dict:
        return {"batch": 1, "fps": self.fps}


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class ScriptedSource:
    """A polled source that returns the given watts in turn (the clock advances 0.5 s per read)."""

    scope = "module"
    name = "scripted"

    def __init__(self, watts: list[float], clock: Clock):
        self.watts, self.clock = list(watts), clock

    def read(self) -> float:
        self.clock.t += 0.5
        return self.watts.pop(0)


def test_fps_per_watt_is_the_fps_over_the_mean_power_of_the_window():
    clock = Clock()
    sampler = pw.PowerSampler(ScriptedSource([6.0, 8.0, 11.0, 30.0], clock), clock=clock)
    sampler.add(99.0, t=-1.0)  # before the window: left out
    with sampler.window() as win:  # opening: 6.0 W
        sampler.sample_now()  # 8.0 W (what the sampler thread does every interval)
    # closing: 11.0 W
    sampler.add(30.0, t=clock.t + 5)  # after the window: left out
    got = win.annotate({"batch": 1, "fps": 40.0})
    mean = (6.0 + 8.0 + 11.0) / 3  # by hand
    assert got["power_w"] == pytest.approx(mean) and got["power_samples"] == 3
    assert got["fps_per_w"] == pytest.approx(40.0 / mean) and got["power_source"] == "scripted"
    assert pw.power_text(got) == f"{mean:.2f} W avg (3 samples), {40.0 / mean:.2f} FPS/W"


def test_a_window_without_samples_and_a_failing_source_say_why():
    clock = Clock()

    class Failing:
        scope, name = "module", "INA3221 VDD_IN (sysfs)"

        def read(self):
            raise OSError("curr1_input: Permission denied")

    win_sampler = pw.PowerSampler(Failing(), clock=clock)
    with win_sampler.window() as win:
        pass
    got = win.annotate({"fps": 10.0})
    assert got["power_w"].startswith("unknown (no INA3221 VDD_IN (sysfs) sample in the 0.00 s window")
    assert "Permission denied" in got["power_w"] and ds.is_unknown(got["fps_per_w"])


def test_ina3221_rails_give_the_input_rail_in_watts(tmp_path):
    m = ds.Machine(root=orin_nano_tree(tmp_path), run=runner({}), jetson=True)
    rails = pw.find_ina3221_rails(m)
    assert [r.label for r in rails] == ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]  # in7, the shunt sum, is no rail
    sampler = pw.open_sampler(m)
    assert sampler.name == "INA3221 VDD_IN (sysfs)"
    assert sampler.source.read() == pytest.approx(5000 * 1200 / 1e6)  # mV x mA -> 6.0 W
    assert sampler.covers("CPUExecutionProvider")  # the module's input: CPU rows too
    (rails[0].volts_file.parent / "in1_label").write_text("VDD_GPU\n")  # no input rail (AGX Xavier style)
    src = pw.open_sampler(m).source
    assert "sum of VDD_GPU, VDD_CPU_GPU_CV, VDD_SOC" in src.name and src.read() == pytest.approx(5 * (1200 + 400 + 380) / 1e3)


def test_tegrastats_lines_are_parsed_and_streamed():
    rails = pw.parse_tegrastats(TEGRASTATS)
    assert rails == {"VDD_IN": 7184, "VDD_CPU_GPU_CV": 2403, "VDD_SOC": 1921}  # RAM 2112/7620MB is no rail
    assert pw.tegrastats_watts(rails) == pytest.approx(7.184)
    assert pw.parse_tegrastats("RAM 1904/3964MB (lfb 1x2MB) POM_5V_IN 2542/2542 POM_5V_GPU 0/0") == \
        {"POM_5V_IN": 2542, "POM_5V_GPU": 0}  # Jetson Nano (JetPack 4): no unit

    class Proc:
        def __init__(self, argv, **kw):
            self.argv, self.stdout, self.terminated = argv, iter([TEGRASTATS + "\n", "no rails here\n"]), False

        def terminate(self):
            self.terminated = True

        def wait(self, timeout=None):
            return 0

    made = []
    src = pw.TegrastatsSource(100, popen=lambda argv, **kw: made.append(Proc(argv)) or made[-1])
    sampler = pw.PowerSampler(src).start()
    src.thread.join(timeout=5)
    sampler.stop()
    assert made[0].argv == ["tegrastats", "--interval", "100"] and made[0].terminated
    assert [w for _, w in sampler.samples] == [pytest.approx(7.184)]


def test_a_jetson_without_ina3221_uses_tegrastats_else_says_why(tmp_path):
    m = ds.Machine(root=tmp_path, run=runner({}), jetson=True, which=lambda name: f"/usr/bin/{name}")
    assert isinstance(pw.open_sampler(m).source, pw.TegrastatsSource)
    none = pw.open_sampler(ds.Machine(root=tmp_path, run=runner({}), jetson=True, which=lambda name: None))
    assert none.source is None and "no INA3221 rails" in none.name and "no tegrastats" in none.name


def test_nvml_power_covers_gpu_rows_only(monkeypatch, tmp_path):
    nv = fake_pynvml(power_mw=120_000)
    sampler = pw.open_sampler(ds.Machine(root=tmp_path, run=runner({}), jetson=False, nvml=nv), device="cuda")
    with sampler:
        gpu = pw.timed(sampler, "TensorRT", lambda: _Lat(fps=600.0))
        cpu = pw.timed(sampler, "CPUExecutionProvider", lambda: _Lat(fps=30.0))
    assert gpu["power_w"] == pytest.approx(120.0) and gpu["fps_per_w"] == pytest.approx(5.0)
    assert ds.is_unknown(cpu["power_w"]) and "does not measure a run on CPUExecutionProvider" in cpu["power_w"]
    assert nv.calls[-1] == "shutdown"
    cpu_only = pw.open_sampler(ds.Machine(root=tmp_path, run=runner({}), jetson=False, nvml=nv), device="cpu")
    assert cpu_only.source is None and "NVML measures the GPU only" in cpu_only.name


# ---------------------------------------------------------------- wired into the check's rows and report
class _Seg:
    """A segmenter stand-in: fixed labels, a constant-time run."""

    provider = "TensorrtExecutionProvider"
    info = types.SimpleNamespace(input_size=(8, 8))

    def predict_batch(self, images):
        return [np.zeros(im.shape[:2], np.uint8) for im in images]

    def preprocess(self, image):
        return np.zeros((1, 3, 8, 8), np.float32)

    def run(self, x):
        return x


def test_check_rows_carry_power_and_fps_per_watt_and_the_report_shows_them(tmp_path):
    images = [np.zeros((8, 8, 3), np.uint8)] * 2
    labels = [np.zeros((8, 8), np.uint8)] * 2
    cand = Candidate(name="onnx", load=_Seg, needs_sha=False)
    clock_src = type("Src", (), {"scope": "module", "name": "INA3221 VDD_IN (sysfs)", "read": lambda self: 8.0})()
    with pw.PowerSampler(clock_src, interval=0.01) as sampler:
        rows = evaluate_rows([cand], images, labels, 2, batch=2, latency_kw={"min_time": 0.01, "min_runs": 3},
                             power=sampler)
    b1 = rows[0].latency["b1"]
    assert b1["power_w"] == pytest.approx(8.0) and b1["fps_per_w"] == pytest.approx(b1["fps"] / 8.0)
    assert rows[0].latency["b2"]["fps_per_w"] == pytest.approx(rows[0].latency["b2"]["fps"] / 8.0)
    state = ds.collect(ds.Machine(root=orin_nano_tree(tmp_path), run=runner({"nvpmodel": (0, NVPMODEL_Q)}),
                                  is_root=False, jetson=True))
    meta = {"images": 2, "dataset": "synthetic", "split": "val", "input_size": [8, 8], "max_drop": 1.0,
            "gate_failed": False, "device_state": {**state, "power_source": sampler.name}}
    md = to_markdown(rows, meta)
    assert "| b1 W | b1 FPS/W |" in md and f"| {b1['power_w']:.2f} | {b1['fps_per_w']:.2f} |" in md
    assert "- power mode: 15W (id 0)" in md and "- power during the timed runs: INA3221 VDD_IN (sysfs)" in md
    rows_cpu = evaluate_rows([cand], images, labels, 2, batch=1, latency_kw={"min_time": 0.01, "min_runs": 3},
                             power=pw.PowerSampler(why="no NVML bindings"))
    assert rows_cpu[0].latency["b1"]["power_w"] == "unknown (no NVML bindings)"
    assert "b1 FPS/W" not in to_markdown(rows_cpu, meta)  # no power column without a figure


def test_the_acceptance_report_records_the_state_and_each_batch_size_power(monkeypatch, trt_export_src, tmp_path, capsys):
    from trt_double import copied_export, install

    from rdd_edge.deploy import trt_acceptance

    export_dir = copied_export(trt_export_src, tmp_path / "export")
    install(monkeypatch, "10.3.0.26")
    machine = ds.Machine(root=orin_nano_tree(tmp_path / "orin"), run=runner({"nvpmodel": (0, NVPMODEL_Q)}),
                         is_root=False, jetson=True)
    collect = ds.collect
    monkeypatch.setattr(trt_acceptance.device_state, "collect", lambda device: collect(machine, device))
    monkeypatch.setattr(trt_acceptance, "open_sampler", lambda device: pw.open_sampler(machine, device, interval=0.005))
    assert trt_acceptance.main([str(export_dir), "--max-batch", "2", "--latency-time", "0.02", "--num-images", "2"]) == 0
    out = capsys.readouterr().out
    assert "device: power mode: 15W (id 0)" in out and "device: temperatures: gpu-thermal 49.2 C" in out
    watts = 5000 * 1200 / 1e6  # the faked VDD_IN rail: 6.0 W
    for line in [ln for ln in out.splitlines() if "latency batch" in ln]:
        fps = float(line.split(" ms, ")[-1].split(" images/s")[0])
        per = float(line.split(" samples), ")[-1].split(" FPS/W")[0])
        assert f"; {watts:.2f} W avg (" in line and per == pytest.approx(fps / watts, rel=1e-3), line


def _tiny_video(path: Path, n: int = 3) -> Path:
    import cv2

    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (48, 32))
    for i in range(n):
        vw.write(np.full((32, 48, 3), 40 * i, np.uint8))
    vw.release()
    return path


def test_demo_out_writes_a_summary_with_the_state_and_fps_per_watt(synthetic_export_src, tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    import rdd_edge.cli  # noqa: F401 - registers the commands
    from rdd_edge.cli.app import app
    from rdd_edge.deploy import demo_summary
    from rdd_edge.deploy.demo import DemoSpec, demo

    model, video = synthetic_export_src / "model.onnx", _tiny_video(tmp_path / "in.avi")
    # a plain CPU machine: the summary says unknown, with why, and the demo goes on
    res = CliRunner().invoke(app, ["demo", str(model), "--source", str(video), "--out", str(tmp_path / "plain.mp4"),
                                   "--device", "cpu"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "plain.json").read_text())
    assert doc["frames"] == 3 and doc["device_state"]["kind"] in ("cpu", "nvidia-gpu", "jetson")
    assert ds.is_unknown(doc["end_to_end"]["power_w"]) and "NVML measures the GPU only" in doc["end_to_end"]["power_w"]
    assert f"wrote {tmp_path / 'plain.json'}" in res.output.replace("\n", "")
    # a faked Orin Nano: power mode in the state, VDD_IN over the loop, FPS/W = FPS / W
    machine = ds.Machine(root=orin_nano_tree(tmp_path / "orin"), run=runner({"nvpmodel": (0, NVPMODEL_Q)}),
                         is_root=False, jetson=True)
    collect = ds.collect
    monkeypatch.setattr(demo_summary.device_state, "collect", lambda device, gpu_index: collect(machine, device))
    monkeypatch.setattr(demo_summary, "open_sampler", lambda device, gpu_index: pw.open_sampler(machine, device, interval=0.001))
    # 1 ms between readings: two or more samples on any machine, however fast the 3-frame loop is
    got = demo(DemoSpec(source=str(video), artifact=model, out=tmp_path / "frames", device="cpu"))
    doc = json.loads((tmp_path / "frames" / "demo.json").read_text())
    assert got.summary == tmp_path / "frames" / "demo.json" and len(list((tmp_path / "frames").glob("*.png"))) == 3
    assert doc["device_state"]["power_mode"] == "15W" and doc["device_state"]["power_source"] == "INA3221 VDD_IN (sysfs)"
    e2e = doc["end_to_end"]
    assert e2e["fps"] == pytest.approx(got.fps) and e2e["power_w"] == pytest.approx(6.0)  # 5000 mV x 1200 mA
    assert e2e["fps_per_w"] == pytest.approx(got.fps / 6.0) and e2e["power_samples"] >= 2
