"""rdd_edge.cpuinfo: the INT8 instruction set read from /proc/cpuinfo texts of real CPU families."""

from __future__ import annotations

import pytest

from rdd_edge import cpuinfo
from rdd_edge.cpuinfo import (ARM_DOTPROD, ARM_NEON, AVX2, AVX512_VNNI, AVX_VNNI, UNKNOWN, CpuInfo, parse_cpuinfo,
                              parse_sysctl)

_X86_BLOCK = """processor\t: {i}
vendor_id\t: {vendor}
cpu family\t: {family}
model\t\t: {model_id}
model name\t: {name}
stepping\t: 6
microcode\t: 0xd0003a5
cpu MHz\t\t: 2000.000
cache size\t: 49152 KB
physical id\t: {socket}
siblings\t: {siblings}
core id\t\t: {core}
cpu cores\t: {cores}
apicid\t\t: {i}
initial apicid\t: {i}
fpu\t\t: yes
fpu_exception\t: yes
cpuid level\t: 27
wp\t\t: yes
flags\t\t: {flags}
bugs\t\t: spectre_v1 spectre_v2 spec_store_bypass swapgs
bogomips\t: 4000.00
clflush size\t: 64
cache_alignment\t: 64
address sizes\t: 46 bits physical, 57 bits virtual
power management:

"""

_BASE_FLAGS = ("fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts acpi mmx fxsr sse "
               "sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc art arch_perfmon pebs bts rep_good nopl "
               "xtopology nonstop_tsc cpuid aperfmperf pni pclmulqdq dtes64 monitor ds_cpl vmx smx est tm2 ssse3 sdbg "
               "fma cx16 xtpr pdcm pcid dca sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c "
               "rdrand lahf_lm abm 3dnowprefetch cpuid_fault epb fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms invpcid "
               "rdseed adx smap clflushopt clwb intel_pt sha_ni xsaveopt xsavec xgetbv1 xsaves")


def _x86(name: str, extra_flags: str, n: int, cores: int, sockets: int = 1, vendor: str = "GenuineIntel",
         family: int = 6, model_id: int = 106, drop: tuple[str, ...] = ()) -> str:
    flags = " ".join(f for f in (_BASE_FLAGS + " " + extra_flags).split() if f not in drop)
    per = n // sockets
    return "".join(_X86_BLOCK.format(i=i, vendor=vendor, family=family, model_id=model_id, name=name,
                                     socket=i // per, siblings=per, core=(i % per) % cores, cores=cores, flags=flags)
                   for i in range(n))


# Ice Lake-SP, 2 sockets x 4 cores x 2 threads: AVX-512 VNNI, no AVX-VNNI (that came with Alder Lake / SPR)
XEON_ICX = _x86("Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz",
                "avx512f avx512dq avx512ifma avx512cd avx512bw avx512vl avx512vbmi umip pku ospke avx512_vbmi2 gfni "
                "vaes vpclmulqdq avx512_vnni avx512_bitalg avx512_vpopcntdq la57 rdpid md_clear pconfig flush_l1d "
                "arch_capabilities", n=16, cores=4, sockets=2)
# Sapphire Rapids VM (as on this project's CI machine): both VNNI flavours and AMX
XEON_SPR = _x86("Intel(R) Xeon(R) Platinum 8480+",
                "avx512f avx512dq avx512bw avx512vl avx_vnni avx512_bf16 avx512_vnni amx_bf16 avx512_fp16 amx_tile "
                "amx_int8", n=2, cores=2, model_id=143)
# Coffee Lake desktop: AVX2 and FMA, no AVX-512, no VNNI
I7_8700 = _x86("Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz", "hwp hwp_notify hwp_act_window hwp_epp md_clear flush_l1d",
               n=12, cores=6, model_id=158, drop=("clwb", "sha_ni"))
# AMD Zen 2 server: AVX2, no VNNI
EPYC_7742 = _x86("AMD EPYC 7742 64-Core Processor", "sse4a misalignsse topoext perfctr_core clzero wbnoinvd",
                 n=8, cores=4, vendor="AuthenticAMD", family=23, model_id=49)
# Alder Lake laptop: AVX-VNNI (256-bit), AVX-512 fused off, 6 P-cores (2 threads) + 8 E-cores = 14 cores, 20 threads
I7_12700H = _x86("12th Gen Intel(R) Core(TM) i7-12700H",
                 "avx_vnni gfni vaes vpclmulqdq rdpid movdiri movdir64b fsrm md_clear serialize arch_lbr ibt flush_l1d "
                 "arch_capabilities", n=20, cores=14, model_id=154)
# An old Sandy Bridge: AVX but no AVX2
OLD_X86 = _x86("Intel(R) Xeon(R) CPU E5-2670 0 @ 2.60GHz", "", n=2, cores=2, model_id=45,
               drop=("avx2", "fma", "bmi1", "bmi2", "movbe", "adx", "rdseed", "smap", "clflushopt", "clwb", "sha_ni",
                     "xsavec", "xsaves", "invpcid", "erms", "fsgsbase", "abm", "f16c", "rdrand"))

_ORIN_BLOCK = """processor\t: {i}
model name\t: ARMv8 Processor rev 1 (v8l)
BogoMIPS\t: 62.50
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp uscat ilrcpc flagm paca pacg
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd42
CPU revision\t: 1

"""
JETSON_ORIN = "".join(_ORIN_BLOCK.format(i=i) for i in range(12))  # AGX Orin: 12 Cortex-A78AE cores

_PI4_BLOCK = """processor\t: {i}
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3

"""
RPI4 = "".join(_PI4_BLOCK.format(i=i) for i in range(4)) + """Hardware\t: BCM2835
Revision\t: c03114
Serial\t\t: 10000000abcdef01
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""


@pytest.mark.parametrize("text, isa, model, cores, physical, extras", [
    (XEON_ICX, AVX512_VNNI, "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz", 16, 8, ()),
    (XEON_SPR, AVX512_VNNI, "Intel(R) Xeon(R) Platinum 8480+", 2, 2, ("AMX-INT8",)),
    (I7_8700, AVX2, "Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz", 12, 6, ()),
    (EPYC_7742, AVX2, "AMD EPYC 7742 64-Core Processor", 8, 4, ()),
    (I7_12700H, AVX_VNNI, "12th Gen Intel(R) Core(TM) i7-12700H", 20, 14, ()),
    (OLD_X86, UNKNOWN, "Intel(R) Xeon(R) CPU E5-2670 0 @ 2.60GHz", 2, 2, ()),
])
def test_x86_samples(text, isa, model, cores, physical, extras):
    info = parse_cpuinfo(text, "x86_64")
    assert (info.isa, info.model, info.cores, info.physical_cores, info.extras) == (isa, model, cores, physical, extras)
    assert info.note == cpuinfo.NOTES[isa] and info.arch == "x86_64"


def test_notes_state_the_int8_ceiling():
    assert "4x" in cpuinfo.NOTES[AVX512_VNNI] and "4x" in cpuinfo.NOTES[AVX_VNNI] and "4x" in cpuinfo.NOTES[ARM_DOTPROD]
    assert "2x" in cpuinfo.NOTES[AVX2] and "2x" in cpuinfo.NOTES[ARM_NEON]
    assert "unknown" in cpuinfo.NOTES[UNKNOWN]
    assert all("\n" not in n for n in cpuinfo.NOTES.values())


def test_jetson_orin_names_the_board_and_core():
    info = parse_cpuinfo(JETSON_ORIN, "aarch64", board="NVIDIA Jetson AGX Orin Developer Kit\x00".rstrip("\x00"))
    assert info.isa == ARM_DOTPROD and info.cores == 12 and info.physical_cores is None
    assert info.model == "NVIDIA Jetson AGX Orin Developer Kit (ARM Cortex-A78AE)"
    # without the machine argument the architecture is guessed from the text
    assert parse_cpuinfo(JETSON_ORIN).arch == "aarch64" and parse_cpuinfo(JETSON_ORIN).model == "ARM Cortex-A78AE"


def test_raspberry_pi_4_is_plain_neon():
    info = parse_cpuinfo(RPI4, "aarch64")
    assert info.isa == ARM_NEON and info.cores == 4 and info.model == "ARM Cortex-A72"
    assert "2x" in info.note


def test_armv7_neon_flag_and_unknown_core():
    text = "processor\t: 0\nmodel name\t: ARMv7 Processor rev 4 (v7l)\nFeatures\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm crc32\nCPU implementer\t: 0x41\nCPU part\t: 0xc07\n"
    info = parse_cpuinfo(text, "armv7l")
    assert info.isa == ARM_NEON and info.model == "ARMv7 Processor rev 4 (v7l)" and info.cores == 1


def test_empty_or_garbled_text_is_unknown():
    info = parse_cpuinfo("", "x86_64")
    assert info.isa == UNKNOWN and info.model == UNKNOWN and info.cores is None
    assert parse_cpuinfo("nonsense without colons\n\n", "").isa == UNKNOWN
    assert parse_cpuinfo("", "aarch64").isa == ARM_NEON  # AArch64 always has Advanced SIMD


def test_macos_sysctl_values():
    m2 = parse_sysctl({"machdep.cpu.brand_string": "Apple M2", "hw.logicalcpu": "8", "hw.physicalcpu": "8",
                       "hw.optional.arm.FEAT_DotProd": "1", "hw.optional.arm.FEAT_I8MM": "1"}, "arm64")
    assert (m2.model, m2.cores, m2.isa, m2.extras) == ("Apple M2", 8, ARM_DOTPROD, ("I8MM",))
    intel = parse_sysctl({"machdep.cpu.brand_string": "Intel(R) Core(TM) i9-9880H CPU @ 2.30GHz", "hw.logicalcpu": "16",
                          "hw.physicalcpu": "8", "hw.optional.avx2_0": "1", "hw.optional.avx512vnni": "0"}, "x86_64")
    assert (intel.isa, intel.cores, intel.physical_cores) == (AVX2, 16, 8)
    assert parse_sysctl({}, "x86_64").isa == UNKNOWN


def test_line_and_dict_for_reports():
    info = parse_cpuinfo(I7_12700H, "x86_64")
    line = info.line()
    assert line.startswith("12th Gen Intel(R) Core(TM) i7-12700H, 20 logical CPUs (14 cores), AVX-VNNI. ")
    assert line.endswith(cpuinfo.NOTES[AVX_VNNI]) and "\n" not in line
    d = info.as_dict()
    assert d["isa"] == AVX_VNNI and d["cores"] == 20 and d["line"] == line and d["extras"] == []
    spr = parse_cpuinfo(XEON_SPR, "x86_64").line()
    assert "2 logical CPUs, AVX-512 VNNI (+AMX-INT8)." in spr and "(2 cores)" not in spr


def test_detect_on_this_machine():
    cpuinfo.detect.cache_clear()
    info = cpuinfo.detect()
    assert isinstance(info, CpuInfo) and info.isa in cpuinfo.NOTES and info.note == cpuinfo.NOTES[info.isa]
    assert info.model and (info.cores is None or info.cores >= 1)
    assert cpuinfo.detect() is info  # cached


def test_no_torch_import():
    import subprocess
    import sys

    code = "import sys, rdd_edge.cpuinfo as c; c.detect(); assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_deploy_latency_benchmark_prints_and_records_the_cpu(tmp_path, capsys):
    import json

    from test_deploy_latency_bench import _bench, _export_folder

    _export_folder(tmp_path, {"model.onnx": 0})
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    assert _bench().main([str(tmp_path / "student"), "--threads", "1", "--min-time", "0.01", "--no-miou",
                          "--json", str(out), "--markdown", str(md)]) == 0
    line = cpuinfo.detect().line()
    assert f"CPU: {line}" in capsys.readouterr().out.splitlines()
    assert json.loads(out.read_text())["cpu"]["isa"] == cpuinfo.detect().isa
    assert f"CPU: {line}" in md.read_text()


def test_distill_speed_benchmark_records_the_cpu(tmp_path, capsys, monkeypatch):
    """The CPU line is whole in the JSON and on the terminal, whatever the CPU's name and the console's width.

    A long model name (an Intel Xeon's is ~40 characters, plus the ISA note) once wrapped inside a rich
    table caption, so the test passed on one machine and failed on another; the stand-in name here is
    longer than any real one, so the check is the same on every machine."""
    import importlib.util
    import json
    from pathlib import Path

    pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location("distill_speed_bench", Path(__file__).resolve().parents[1] / "benchmarks" / "distill_speed.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    monkeypatch.setattr(mod, "VARIANTS", [("KD", True, "kd", None)])  # one variant keeps it quick
    here = cpuinfo.CpuInfo(model="Intel(R) Xeon(R) Platinum 8480+ Processor @ 2.80GHz " + "x" * 120, cores=2,
                           isa="AVX512_VNNI", note="a stand-in CPU with a name longer than any terminal", arch="x86_64")
    monkeypatch.setattr(cpuinfo, "detect", lambda: here)
    out = tmp_path / "s.json"
    mod.main(["--device", "cpu", "--size", "16x16", "--batch", "2", "--iters", "1", "--warmup", "0", "--student", "mbv2",
              "--teacher", "r18", "--head-channels", "8", "--classes", "3", "--matmul-n", "32", "--json", str(out)])
    meta = json.loads(out.read_text())["meta"]
    assert meta["cpu"]["isa"] == here.isa and meta["cpu"]["model"] == here.model and meta["cpu"]["line"] == here.line()
    printed = capsys.readouterr().out
    assert f"CPU: {here.line()}" in printed.splitlines()
