#!/usr/bin/env bash
# Install this bundle's rdd-edge into a virtual environment beside it, for the machine it runs on,
# then run the acceptance check on the bundled export. Never installs torch; keeps an ONNX Runtime
# (onnxruntime-gpu, NVIDIA's Jetson wheel) that is already there. Safe to run again.
#
#   bash install.sh [--venv DIR] [--no-check] [--dry-run] [--max-batch N] [--workspace GB]
#
# Environment: PYTHON (the interpreter, default python3), RDD_PIP_ARGS (extra pip arguments,
# e.g. "--no-index" for a device without an index: put the dependency wheels into wheels/).
# --dry-run prints what it found and would install, and changes nothing.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"  # Python puts the working directory first on sys.path: never run inside someone's source tree
VENV="$HERE/.venv"
CHECK=1
DRY=0
MAX_BATCH=4
WORKSPACE=1
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
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { echo "install.sh: $*"; }
die() { echo "install.sh: error: $*" >&2; exit 1; }

PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null 2>&1 || die "$PY not found; install Python 3.10+ (JetPack: sudo apt-get install python3-venv python3-pip)"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "$PY is older than Python 3.10"
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

# -- what machine is this: Jetson (JetPack 6 / 7), desktop NVIDIA GPU (CUDA 12 / 13) or CPU only
TEGRA="${RDD_TEGRA_RELEASE:-/etc/nv_tegra_release}"  # a test can point this elsewhere
KIND=cpu
if [ -f "$TEGRA" ]; then
  L4T="$(sed -n 's/^# R\([0-9]*\) (release).*/\1/p' "$TEGRA" | head -n 1)"
  case "$L4T" in
    36) KIND=jetpack6 ;;
    38) KIND=jetpack7 ;;
    *) die "Jetson Linux R$L4T: rdd-edge supports JetPack 6 (R36, TensorRT 10.3) and JetPack 7 (R38)" ;;
  esac
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
  CUDA="$(nvidia-smi | sed -n 's/.*CUDA Version: *\([0-9]*\)\..*/\1/p' | head -n 1)"
  case "$CUDA" in
    12) KIND=cuda12 ;;
    13) KIND=cuda13 ;;
    *) say "driver reports CUDA ${CUDA:-?}; installing the CPU runtime only"; KIND=cpu ;;
  esac
fi

# What this machine installs: the extra for its GPU stack, and ONNX Runtime only where none is importable.
case "$KIND" in
  jetpack6) EXTRAS="jetson" ;;
  jetpack7) EXTRAS="jetson-cuda13" ;;
  cuda12) EXTRAS="trt" ;;
  cuda13) EXTRAS="trt-cuda13" ;;
  *) EXTRAS="" ;;
esac
ort_extra() {  # $1: a python; prints the ONNX Runtime extra to install ("" keeps the one it has)
  if "$1" -c 'import onnxruntime' >/dev/null 2>&1; then echo ""; elif [ "$KIND" = cuda12 ]; then echo gpu; else echo cpu; fi
}
join() { echo "$1,$2" | sed 's/^,//; s/,$//'; }

# Jetson: TensorRT (and NVIDIA's onnxruntime-gpu, if installed) live in the system Python: see them.
SYSTEM_SITE=""
case "$KIND" in jetpack6|jetpack7) SYSTEM_SITE="--system-site-packages" ;; esac
if [ -z "$SYSTEM_SITE" ] && "$PY" -c 'import onnxruntime' >/dev/null 2>&1; then
  SYSTEM_SITE="--system-site-packages"  # keep the ONNX Runtime this Python already has
fi

if [ "$DRY" = 1 ]; then
  say "machine: $KIND"
  say "would create $VENV${SYSTEM_SITE:+ with the system site-packages} and install $(basename "$WHEEL")[$(join "$EXTRAS" "$(ort_extra "$PY")")]"
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv $SYSTEM_SITE "$VENV" || die "could not create $VENV"
  say "created $VENV ($KIND${SYSTEM_SITE:+, with the system site-packages})"
else
  say "using the existing $VENV"
fi
VPY="$VENV/bin/python"

ORT="$(ort_extra "$VPY")"
if [ -z "$ORT" ]; then
  say "keeping the installed ONNX Runtime ($("$VPY" -c 'import onnxruntime as o; print(o.__version__, ",".join(p.replace("ExecutionProvider", "") for p in o.get_available_providers()))'))"
elif [ "$KIND" = jetpack6 ] || [ "$KIND" = jetpack7 ]; then
  say "no onnxruntime-gpu found: installing the CPU build (for ONNX Runtime on the GPU install NVIDIA's Jetson wheel, then run this again)"
fi

STAMP="$VENV/.rdd-edge-bundle"
WANT="$(sha256sum "$WHEEL" | cut -d' ' -f1) [$EXTRAS]"
if [ -z "$ORT" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && "$VPY" -c 'import rdd_edge' >/dev/null 2>&1; then
  say "rdd-edge from this bundle is already installed in $VENV [${EXTRAS:-base}]: nothing to install"
else
  ALL="$(join "$EXTRAS" "$ORT")"
  # shellcheck disable=SC2086
  "$VPY" -m pip install -q --disable-pip-version-check --find-links "$HERE/wheels" ${RDD_PIP_ARGS:-} \
    "$WHEEL${ALL:+[$ALL]}" || die "pip could not install $(basename "$WHEEL")[${ALL}] (offline? put the dependency wheels into $HERE/wheels and set RDD_PIP_ARGS=--no-index)"
  echo "$WANT" > "$STAMP"
  say "installed $(basename "$WHEEL") [${ALL:-base}] into $VENV"
fi
if "$VPY" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("torch") is None)' 2>/dev/null; then
  say "note: torch is visible in $VENV (from the system site-packages); rdd-edge's runtime does not use it"
fi

[ "$CHECK" = 1 ] || { say "skipped the acceptance check (--no-check)"; exit 0; }
if "$VPY" -c 'import sys; from rdd_edge.deploy.engine_meta import tensorrt_module; sys.exit(tensorrt_module() is None)' 2>/dev/null; then
  REPORT="$HERE/acceptance.txt"
  say "TensorRT found: building and checking both engines (this takes minutes on a Jetson) ..."
  set +e
  "$VPY" -m rdd_edge.deploy.trt_acceptance "$HERE/export" --max-batch "$MAX_BATCH" --workspace "$WORKSPACE" > "$REPORT" 2>&1
  rc=$?
  set -e
  tail -n 3 "$REPORT"
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
  say "next: . $(printf '%q' "$VENV/bin/activate") && rdd-edge demo $(printf '%q' "$HERE/export") --source 0"
else
  [ -f "$REPORT" ] || REPORT="$HERE/check.txt"  # the check stopped before writing its report: its output says why
  say "acceptance check FAILED (exit $rc); report: $REPORT"
  say "next: read $(printf '%q' "$REPORT"), fix what it names, then run $(printf '%q' "$HERE/install.sh") again"
fi
exit "$rc"
