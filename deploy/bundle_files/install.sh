#!/usr/bin/env bash
# Install this bundle's rdd-edge into a virtual environment beside it, for the machine it runs on,
# then run the acceptance check on the bundled export; when it passes with TensorRT, build the engines
# into export/ and check them. Never installs torch; keeps an onnxruntime-gpu that is already there.
#
#   bash install.sh [--venv DIR] [--no-check] [--dry-run] [--max-batch N] [--workspace GB]
#                   [--ort-wheel PATH|URL] [--onnx-only]
#
# --ort-wheel: an onnxruntime-gpu wheel to install (on a Jetson: NVIDIA's / Jetson AI Lab's wheel for
# this JetPack); --onnx-only: no TensorRT (e.g. JetPack 6.0, whose TensorRT 8.6 rdd-edge cannot use).
# Environment: PYTHON (the interpreter, default python3), RDD_PIP_ARGS (extra pip arguments, e.g.
# "--no-index" for a device without an index: put the dependency wheels into wheels/).
# --dry-run prints what it found and the plan, and changes nothing.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"  # Python puts the working directory first on sys.path: never run inside someone's source tree
VENV="$HERE/.venv"
CHECK=1
DRY=0
MAX_BATCH=4
WORKSPACE=1
ORT_WHEEL=""
ONNX_ONLY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --venv|--max-batch|--workspace)
      [ $# -ge 2 ] && [ -n "$2" ] || { echo "install.sh: $1 needs a value (see --help)" >&2; exit 2; } ;;
  esac
  case "$1" in
    --venv) VENV="$2"; shift 2 ;;
    --no-check) CHECK=0; shift ;;
    --dry-run) DRY=1; shift ;;
    --max-batch) MAX_BATCH="$2"; shift 2 ;;
    --workspace) WORKSPACE="$2"; shift 2 ;;
    --ort-wheel) ORT_WHEEL="$2"; shift 2 ;;
    --onnx-only) ONNX_ONLY=1; shift ;;
    -h|--help) sed -n '2,13p' "$HERE/$(basename "${BASH_SOURCE[0]}")" | sed 's/^# \{0,1\}//'; exit 0 ;;  # $0 is relative to the folder we left
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { echo "install.sh: $*"; }
die() { echo "install.sh: error: $*" >&2; exit 1; }

PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null 2>&1 || die "$PY not found; install Python 3.10+ (JetPack: sudo apt-get install python3-venv python3-pip)"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "$PY is older than Python 3.10 (JetPack 5 / Xavier is not supported: JetPack 6.1+ on Jetson Orin, or JetPack 7)"
"$PY" -c 'import venv, ensurepip' 2>/dev/null || die "$PY has no venv/ensurepip; sudo apt-get install python3-venv"
# inside an activated venv, python3 is that venv's: the new venv (and "the system site-packages") are its base's
PY="$("$PY" -c 'import sys; print(getattr(sys, "_base_executable", "") or sys.executable)')"

# Every file bundle.json lists must be here, inside this folder, with the sha256 it records; the wheel
# installed is exactly the one it names (never another rdd_edge-*.whl someone put into wheels/).
[ -f "$HERE/bundle.json" ] || die "no bundle.json in $HERE; is this a whole bundle?"
WHEEL="$("$PY" - "$HERE" <<'PYEOF'
import hashlib, json, pathlib, sys
here = pathlib.Path(sys.argv[1]).resolve()
def die(msg):
    sys.exit(f"install.sh: error: {msg}")
try:
    doc = json.loads((here / "bundle.json").read_text())
except (OSError, ValueError) as exc:
    die(f"{here / 'bundle.json'}: unreadable ({exc}); copy the bundle again")
files, wheel = (doc.get("files"), doc.get("wheel")) if isinstance(doc, dict) else (None, None)
if not isinstance(files, dict) or not files or not isinstance(wheel, str) or wheel not in files:
    die(f"{here / 'bundle.json'}: no files list naming the wheel; copy the bundle again")
bad = []
for rel, want in files.items():
    p = here / rel
    if not isinstance(rel, str) or rel.startswith("/") or ".." in rel.split("/") or not p.resolve().is_relative_to(here):
        die(f"{here / 'bundle.json'}: lists {rel!r}, which is not a file inside the bundle; refusing it")
    try:
        ok = p.is_file() and not p.is_symlink() and hashlib.sha256(p.read_bytes()).hexdigest() == want
    except OSError:
        ok = False
    if not ok:
        bad.append(rel)
if bad:
    die(f"{len(bad)} files differ from bundle.json's sha256 or are missing ({', '.join(bad[:5])}); "
        "the bundle was edited or damaged on the way: copy it again")
print(here / wheel)
PYEOF
)" || exit 1

# -- what machine is this. A test points these at a made-up machine.
TEGRA="${RDD_TEGRA_RELEASE:-/etc/nv_tegra_release}"
DEVICE_TREE="${RDD_DEVICE_TREE:-/proc/device-tree/compatible}"
KERNEL="${RDD_UNAME_R:-$(uname -r)}"
CUDA_JSON="${RDD_CUDA_VERSION_JSON:-/usr/local/cuda/version.json}"

# Jetson: /etc/nv_tegra_release, else (containers often lack it) the SoC in the device tree or a -tegra kernel
JETSON=""
[ -f "$TEGRA" ] && JETSON="$TEGRA"
if [ -z "$JETSON" ] && [ -r "$DEVICE_TREE" ] && tr '\0' '\n' < "$DEVICE_TREE" 2>/dev/null | grep -q '^nvidia,tegra'; then
  JETSON="$DEVICE_TREE (nvidia,tegra)"
fi
case "$KERNEL" in *-tegra) [ -n "$JETSON" ] || JETSON="kernel $KERNEL" ;; esac
BOARD_CUDA=""  # /usr/local/cuda/version.json: {"cuda": {"version": "12.6.68"}, ...}
[ -f "$CUDA_JSON" ] && BOARD_CUDA="$(tr -d '\n ' < "$CUDA_JSON" | sed -n 's/.*"cuda":{[^}]*"version":"\([0-9][0-9.]*\)".*/\1/p')"

KIND=cpu
WHY=""
if [ -n "$JETSON" ]; then
  L4T=""; REV=""
  if [ -f "$TEGRA" ]; then
    L4T="$(sed -n 's/^# R\([0-9]*\) (release).*/\1/p' "$TEGRA" | head -n 1)"
    REV="$(sed -n 's/^# R[0-9]* (release), REVISION: *\([0-9.]*\).*/\1/p' "$TEGRA" | head -n 1)"
  fi
  CMAJ="${BOARD_CUDA%%.*}"; CMIN="$(echo "$BOARD_CUDA" | cut -d. -f2)"
  if [ -z "$L4T" ] && [ -n "$BOARD_CUDA" ]; then  # no release file: the board's CUDA tells the JetPack
    case "$CMAJ" in
      12) if [ "${CMIN:-0}" -ge 6 ]; then L4T=36; REV=4; else L4T=36; REV=3; fi ;;
      13) L4T=38 ;;
    esac
    WHY=" (release inferred from CUDA $BOARD_CUDA)"
  fi
  # NVIDIA's JetPack archive (https://developer.nvidia.com/embedded/jetpack-archive) and each JetPack's release notes: JetPack 6.0 = L4T R36.2/R36.3 with CUDA 12.2 and TensorRT 8.6.2;
  # 6.1 and 6.2 = R36.4 with CUDA 12.6 and TensorRT 10.3; JetPack 7 = R38 (CUDA 13); JetPack 5 = R35 (Python 3.8,
  # TensorRT 8.5, the last for Xavier); JetPack 4 = R32.
  case "$L4T" in
    36) if [ "${REV%%.*}" -ge 4 ] 2>/dev/null; then KIND=jetpack6; else KIND=jetpack60; fi ;;
    38) KIND=jetpack7 ;;
    35|32) JP=5; [ "$L4T" = 32 ] && JP=4
           die "Jetson Linux R$L4T${REV:+.$REV} (JetPack $JP): not supported (Python 3.8, TensorRT 8.5; Xavier ends at JetPack 5). rdd-edge runs on Jetson Orin with JetPack 6.1+ (R36.4+) or JetPack 7" ;;
    "") KIND=jetson-unknown ;;
    *) die "Jetson Linux R$L4T: rdd-edge supports JetPack 6.1+ (R36.4+, TensorRT 10.3) and JetPack 7 (R38)" ;;
  esac
  RELEASE="${L4T:+Jetson Linux R$L4T${REV:+.$REV}}$WHY"
  if [ "$ONNX_ONLY" = 1 ]; then
    KIND=jetson-onnx
  elif [ "$KIND" = jetpack60 ]; then
    die "$RELEASE is JetPack 6.0: TensorRT 8.6.2 and CUDA 12.2, and rdd-edge's engines need TensorRT 10 (JetPack 6.1+, R36.4+). Upgrade JetPack, or run: bash install.sh --onnx-only (ONNX Runtime; add --ort-wheel PATH|URL for NVIDIA's onnxruntime-gpu)"
  elif [ "$KIND" = jetson-unknown ]; then
    die "a Jetson ($JETSON) without /etc/nv_tegra_release or $CUDA_JSON: cannot tell its JetPack, so not the TensorRT path; run: bash install.sh --onnx-only"
  fi
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
  CUDA="$(nvidia-smi | sed -n 's/.*CUDA Version: *\([0-9]*\)\..*/\1/p' | head -n 1)"
  case "$CUDA" in
    12) KIND=cuda12 ;;
    13) KIND=cuda13 ;;
    *) say "driver reports CUDA ${CUDA:-?}; installing the CPU runtime only"; KIND=cpu ;;
  esac
  [ "$ONNX_ONLY" = 1 ] && KIND=cpu
fi

# What this machine installs: the extra for its GPU stack (pyproject.toml says what each holds).
case "$KIND" in
  jetpack6|jetson-onnx) EXTRAS="jetson" ;;
  jetpack7) EXTRAS="jetson-cuda13" ;;
  cuda12) EXTRAS="trt" ;;
  cuda13) EXTRAS="trt-cuda13" ;;
  *) EXTRAS="" ;;
esac
case "$KIND" in jetpack6|jetpack7|cuda12|cuda13) TRT_PATH=1 ;; *) TRT_PATH=0 ;; esac
join() { echo "$1,$2" | sed 's/^,//; s/,$//'; }

# ONNX Runtime: which build a python sees ("gpu", "cpu" or ""), and whether a venv holds its own copy
ort_kind() {
  "$1" -c 'import onnxruntime as o, sys; p = o.get_available_providers(); print("gpu" if {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(p) else "cpu")' 2>/dev/null || true
}
venv_own() {  # $1: a venv's python, then distributions: those installed inside the venv itself (not the system's)
  "$1" - "${@:2}" <<'PYCODE' 2>/dev/null || true
import importlib.metadata as m, sys
for d in sys.argv[1:]:
    try:
        f = m.distribution(d).locate_file("")
    except m.PackageNotFoundError:
        continue
    if str(f).startswith(sys.prefix):
        print(d)
PYCODE
}
SYS_ORT="$(ort_kind "$PY")"
ort_extra() {  # $1: a python; the ONNX Runtime extra to install ("" keeps or replaces it otherwise)
  if [ -n "$ORT_WHEEL" ] || [ "$SYS_ORT" = gpu ]; then echo ""; return; fi
  if [ -n "$(ort_kind "$1")" ]; then echo ""; elif [ "$KIND" = cuda12 ]; then echo gpu; else echo cpu; fi
}

# Jetson: TensorRT, NVIDIA's onnxruntime-gpu and JetPack's OpenCV live in the system Python: see them.
SYSTEM_SITE=""
case "$KIND" in jetpack6|jetpack7|jetson-onnx) SYSTEM_SITE="--system-site-packages" ;; esac
if [ -z "$SYSTEM_SITE" ] && [ -n "$SYS_ORT" ]; then
  SYSTEM_SITE="--system-site-packages"  # keep the ONNX Runtime this Python already has
fi
# JetPack's OpenCV is built with GStreamer (CSI cameras); pip's is not: keep the system's where it has it
SYS_CV_GST=0
if [ -n "$JETSON" ] && "$PY" -c 'import cv2, re, sys; sys.exit(not re.search(r"GStreamer:\s*YES", cv2.getBuildInformation()))' 2>/dev/null; then
  SYS_CV_GST=1
fi
# The wheel's own opencv-python-headless is removed again after the install; meanwhile it must not pull a
# numpy the system's OpenCV was not built for (opencv-python-headless 4.12+ requires numpy>=2; JetPack's
# OpenCV is built against Ubuntu's numpy 1.x): pin both below 2 / 4.12 where the system numpy is 1.x.
# Sources: opencv-python 4.12.0.88 declares numpy>=2 (https://github.com/opencv/opencv-python/issues/1211,
# https://github.com/opencv/opencv-python/issues/1122); a numpy-1.x build under numpy 2 fails to import
# (https://github.com/opencv/opencv-python/issues/1149); JetPack 6 is Ubuntu 22.04, whose python3-numpy is
# 1.21 (JetPack 6 release notes, https://developer.nvidia.com/embedded/jetpack-sdk-60).
CV_PINS=""
if [ "$SYS_CV_GST" = 1 ] && [ "$("$PY" -c 'import numpy; print(numpy.__version__.split(".")[0])' 2>/dev/null)" = 1 ]; then
  CV_PINS="numpy<2 opencv-python-headless<4.12"
fi

ENGINE_LINE="rdd-edge engine $HERE/export --trt all --max-batch $MAX_BATCH --workspace $WORKSPACE"
if [ "$DRY" = 1 ]; then
  say "machine: $KIND${JETSON:+ (Jetson: $JETSON; ${RELEASE:-release unknown})}${BOARD_CUDA:+; CUDA $BOARD_CUDA in $CUDA_JSON}"
  case "$KIND" in
    jetpack6) say "plan: TensorRT 10.3 from JetPack (python3-libnvinfer); engine buffers through JetPack's libcudart (no cuda-python)" ;;
    jetpack7) say "plan: TensorRT from JetPack; engine buffers through JetPack's libcudart (no cuda-python)" ;;
    jetson-onnx) say "plan: ONNX Runtime only (--onnx-only): no TensorRT engines" ;;
    cuda12|cuda13) say "plan: TensorRT and cuda-python from pip (the $EXTRAS extra)" ;;
    *) say "plan: ONNX Runtime on the CPU" ;;
  esac
  if [ -n "$ORT_WHEEL" ]; then
    say "would install the ONNX Runtime wheel $ORT_WHEEL (replacing a CPU onnxruntime inside the venv)"
  elif [ "$SYS_ORT" = gpu ]; then
    say "would keep the system's onnxruntime-gpu (never a CPU build in the venv over it)"
  fi
  [ "$SYS_CV_GST" = 1 ] && say "would keep JetPack's OpenCV (GStreamer) over pip's opencv-python-headless${CV_PINS:+ (pins for it: $CV_PINS)}"
  say "would create $VENV${SYSTEM_SITE:+ with the system site-packages} and install $(basename "$WHEEL")[$(join "$EXTRAS" "$(ort_extra "$PY")")]"
  if [ "$CHECK" = 1 ] && [ "$TRT_PATH" = 1 ]; then
    say "then: the acceptance check (python -m rdd_edge.deploy.trt_acceptance $HERE/export --max-batch $MAX_BATCH --workspace $WORKSPACE); when it passes: $ENGINE_LINE, then rdd-edge check $HERE/export --device cuda, then a demo line that runs the engine"
  elif [ "$CHECK" = 1 ]; then
    say "then: rdd-edge check $HERE/export --device cpu"
  fi
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv $SYSTEM_SITE "$VENV" || die "could not create $VENV"
  say "created $VENV ($KIND${SYSTEM_SITE:+, with the system site-packages})"
else
  say "using the existing $VENV"
fi
VPY="$VENV/bin/python"
PIP=("$VPY" -m pip --disable-pip-version-check)

# a CPU onnxruntime inside the venv would shadow the system's onnxruntime-gpu (or clobber the wheel asked
# for: onnxruntime and onnxruntime-gpu install one import package): remove the venv's own copy first
OWN="$(venv_own "$VPY" onnxruntime onnxruntime-gpu | tr '\n' ' ')"
if [ -n "$OWN" ] && { [ -n "$ORT_WHEEL" ] || { [ "$SYS_ORT" = gpu ] && [ "$(ort_kind "$VPY")" != gpu ]; }; }; then
  # shellcheck disable=SC2086
  "${PIP[@]}" uninstall -y -q $OWN || die "could not remove $OWN from $VENV"
  say "removed $OWN from $VENV (it shadowed the onnxruntime-gpu this machine has or gets)"
fi
if [ -n "$ORT_WHEEL" ]; then
  # shellcheck disable=SC2086
  "${PIP[@]}" install -q ${RDD_PIP_ARGS:-} "$ORT_WHEEL" || die "pip could not install --ort-wheel $ORT_WHEEL"
  say "installed $ORT_WHEEL"
fi

ORT="$(ort_extra "$VPY")"
if [ -z "$ORT" ]; then
  say "keeping the installed ONNX Runtime ($("$VPY" -c 'import onnxruntime as o; print(o.__version__, ",".join(p.replace("ExecutionProvider", "") for p in o.get_available_providers()))'))"
elif [ -n "$JETSON" ]; then
  say "no onnxruntime-gpu found: installing the CPU build (for ONNX Runtime on the GPU: bash install.sh --ort-wheel PATH|URL with NVIDIA's onnxruntime-gpu wheel for this JetPack)"
fi

STAMP="$VENV/.rdd-edge-bundle"
WANT="$(sha256sum "$WHEEL" | cut -d' ' -f1) [$EXTRAS]"
if [ -z "$ORT" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && "$VPY" -c 'import rdd_edge' >/dev/null 2>&1; then
  say "rdd-edge from this bundle is already installed in $VENV [${EXTRAS:-base}]: nothing to install"
else
  ALL="$(join "$EXTRAS" "$ORT")"
  PINS=()
  if [ -n "$CV_PINS" ]; then
    tr ' ' '\n' <<< "$CV_PINS" > "$VENV/.rdd-edge-constraints.txt"
    PINS=(-c "$VENV/.rdd-edge-constraints.txt")
  fi
  # shellcheck disable=SC2086
  "${PIP[@]}" install -q --find-links "$HERE/wheels" ${RDD_PIP_ARGS:-} ${PINS[@]+"${PINS[@]}"} \
    "$WHEEL${ALL:+[$ALL]}" || die "pip could not install $(basename "$WHEEL")[${ALL}] (offline? put the dependency wheels into $HERE/wheels and set RDD_PIP_ARGS=--no-index)"
  echo "$WANT" > "$STAMP"
  say "installed $(basename "$WHEEL") [${ALL:-base}] into $VENV"
fi
if [ "$SYS_CV_GST" = 1 ] && [ -n "$(venv_own "$VPY" opencv-python-headless)" ]; then
  "${PIP[@]}" uninstall -y -q opencv-python-headless >/dev/null 2>&1 || true
  if "$VPY" -c 'import cv2, re, sys; sys.exit(not re.search(r"GStreamer:\s*YES", cv2.getBuildInformation()))' 2>/dev/null; then
    say "using JetPack's OpenCV (with GStreamer: csi:N and gst: sources) from the system, not pip's opencv-python-headless"
  else  # e.g. a numpy in the venv it was not built for: back to pip's, and say what is lost
    # shellcheck disable=SC2086
    "${PIP[@]}" install -q --find-links "$HERE/wheels" ${RDD_PIP_ARGS:-} ${PINS[@]+"${PINS[@]}"} "opencv-python-headless>=4.8" \
      || die "pip could not reinstall opencv-python-headless"
    say "JetPack's OpenCV does not import in $VENV ($("$VPY" -c 'import numpy; print("numpy", numpy.__version__)' 2>/dev/null)); kept pip's opencv-python-headless: no GStreamer, so no csi:N or gst: sources"
  fi
fi
if "$VPY" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("torch") is None)' 2>/dev/null; then
  say "note: torch is visible in $VENV (from the system site-packages); rdd-edge's runtime does not use it"
fi

[ "$CHECK" = 1 ] || { say "skipped the acceptance check (--no-check)"; exit 0; }
DEMO="rdd-edge demo $(printf '%q' "$HERE/export") --source 0"
if [ "$TRT_PATH" = 1 ] && "$VPY" -c 'import sys; from rdd_edge.deploy.engine_meta import tensorrt_module; sys.exit(tensorrt_module() is None)' 2>/dev/null; then
  REPORT="$HERE/acceptance.txt"
  say "TensorRT found: building and checking both engines (this takes minutes on a Jetson) ..."
  set +e
  "$VPY" -m rdd_edge.deploy.trt_acceptance "$HERE/export" --max-batch "$MAX_BATCH" --workspace "$WORKSPACE" > "$REPORT" 2>&1
  rc=$?
  set -e
  tail -n 3 "$REPORT"
  if [ "$rc" = 0 ]; then  # the engines into the export, checked there: the demo then runs one
    say "acceptance check passed: $ENGINE_LINE ..."
    set +e
    "$VENV/bin/rdd-edge" engine "$HERE/export" --trt all --max-batch "$MAX_BATCH" --workspace "$WORKSPACE" > "$HERE/engine.txt" 2>&1
    erc=$?
    crc=0
    if [ "$erc" = 0 ]; then
      "$VENV/bin/rdd-edge" check "$HERE/export" --device cuda --no-torch > "$HERE/check.txt" 2>&1
      crc=$?
    fi
    set -e
    if [ "$erc" != 0 ]; then
      say "rdd-edge engine FAILED (exit $erc); see $HERE/engine.txt"; rc=$erc
    elif [ "$crc" != 0 ]; then
      say "rdd-edge check FAILED (exit $crc); see $HERE/check.txt and $HERE/export/check.md"; rc=$crc
    else
      CHOSEN="$("$VPY" -c 'import sys; from rdd_edge.deploy.choose import choose_artifact; print(choose_artifact(sys.argv[1])[0].name)' "$HERE/export" 2>/dev/null || true)"
      say "engines built and checked (export/check.md)"
      DEMO="$DEMO   # runs ${CHOSEN:-the fastest artifact that passed check}"
    fi
  fi
else
  REPORT="$HERE/export/check.md"
  rm -f "$REPORT" "$HERE/export/check.json"  # a report left by an earlier check never stands for this one
  say "no TensorRT here: checking the ONNX artifacts on this CPU ..."
  set +e
  "$VENV/bin/rdd-edge" check "$HERE/export" --device cpu > "$HERE/check.txt" 2>&1
  rc=$?
  set -e
  tail -n 2 "$HERE/check.txt"
fi
if [ "$rc" = 0 ]; then
  say "acceptance check passed; report: $REPORT"
  say "next: . $(printf '%q' "$VENV/bin/activate") && $DEMO"
else
  [ -f "$REPORT" ] || REPORT="$HERE/check.txt"  # the check stopped before writing its report: its output says why
  say "acceptance check FAILED (exit $rc); report: $REPORT"
  say "next: read $(printf '%q' "$REPORT"), fix what it names, then run $(printf '%q' "$HERE/install.sh") again"
fi
exit "$rc"
