#!/usr/bin/env bash
# The first thing to run on a Jetson or an NVIDIA GPU machine when one is lent (issue 26): what the
# tests here can only fake. Each step prints its own header and goes on when a piece is missing.
#
#   bash benchmarks/device_check.sh [EXPORT_DIR] [OUT_DIR]
#
# EXPORT_DIR: an export with model.fp16.onnx and model.int8.onnx (default: a tiny one made here, no torch);
# OUT_DIR: where the logs go (default $OUT, else ./device-check). About 2-10 minutes (longer with DLA).
set -uo pipefail
PY="${PYTHON:-python3}"
OUTDIR="${2:-${OUT:-device-check}}"
mkdir -p "$OUTDIR"
step() { echo; echo "== $*"; }
have() { command -v "$1" >/dev/null 2>&1; }

step "1. runtime versions (the acceptance header: L4T/JetPack, driver, board CUDA, each CUDA runtime, TensorRT, ONNX Runtime)"
"$PY" -c 'from rdd_edge.deploy import versions; print("\n".join(versions.header_lines(versions.collect())))' | tee "$OUTDIR/versions.txt"
have nvidia-smi && nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv | tee -a "$OUTDIR/versions.txt"
[ -f /usr/local/cuda/version.json ] && cat /usr/local/cuda/version.json > "$OUTDIR/cuda-version.json"
have nvpmodel && nvpmodel -q 2>/dev/null | tee -a "$OUTDIR/versions.txt"

step "2. CUDA init: every buffer binding on its own (libcudart via ctypes, cuda-python, pycuda), a pinned round trip"
"$PY" - <<'PYCODE' 2>&1 | tee "$OUTDIR/cuda-init.txt"
import numpy as np
from rdd_edge.deploy.cuda_mem import binding_order, get_cuda_mem
from rdd_edge.deploy.engine_meta import runtime_identity
print("default order:", binding_order(), "| identity:", runtime_identity())
for name in ("libcudart", "cuda-python", "pycuda"):
    try:
        with get_cuda_mem(name) as mem:
            s = mem.stream()
            host = mem.pinned_empty(1 << 20, np.float32)
            host[:] = np.arange(host.size, dtype=np.float32)
            dev = mem.alloc(host.nbytes)
            back = mem.pinned_empty(host.size, np.float32)
            mem.htod(dev, host, s); mem.dtoh(back, dev, s); mem.synchronize(s)
            print(f"{name}: OK ({mem.name}), round trip equal: {bool((back == host).all())}")
    except Exception as exc:  # noqa: BLE001 - say it and go on
        print(f"{name}: {type(exc).__name__}: {exc}")
PYCODE

EXPORT="${1:-}"
if [ -z "$EXPORT" ]; then
  EXPORT="$OUTDIR/tiny-export"
  step "making a tiny export in $EXPORT (tests/trt_double.make_export: FP32, FP16, Q/DQ INT8, manifest)"
  rm -rf "$EXPORT"; mkdir -p "$EXPORT"
  "$PY" -c 'import sys; sys.path.insert(0, "tests"); from pathlib import Path; from trt_double import make_export; make_export(Path(sys.argv[1]), size=(64, 96))' "$EXPORT"
fi

step "3. trtexec --stronglyTyped on both files (precision from the file, as rdd-edge builds them)"
TRTEXEC="$(command -v trtexec || ls /usr/src/tensorrt/bin/trtexec 2>/dev/null || true)"
if [ -n "$TRTEXEC" ]; then
  for f in model.fp16.onnx model.int8.onnx; do
    "$TRTEXEC" --onnx="$EXPORT/$f" --stronglyTyped --saveEngine="$OUTDIR/${f%.onnx}.trtexec.engine" \
      --profilingVerbosity=detailed --dumpLayerInfo --exportLayerInfo="$OUTDIR/${f%.onnx}.layers.json" \
      > "$OUTDIR/trtexec-${f%.onnx}.txt" 2>&1
    echo "$f: exit $? ($(grep -m1 -E 'PASSED|FAILED' "$OUTDIR/trtexec-${f%.onnx}.txt"))"
  done
else
  echo "skipped: no trtexec (JetPack: /usr/src/tensorrt/bin/trtexec)"
fi

step "4. the acceptance check on check images of another size than the model's (resize path of every engine)"
ODD="$OUTDIR/odd-images"
rm -rf "$ODD"; mkdir -p "$ODD"
"$PY" -c 'import sys; from rdd_edge.data.synthetic import render_scene; from rdd_edge.data.base import write_image
for i in range(4): write_image(f"{sys.argv[1]}/scene{i}.png", render_scene(i, (75, 133))[0])' "$ODD"
"$PY" -m rdd_edge.deploy.trt_acceptance "$EXPORT" --images "$ODD" --max-batch 4 --latency-time 0.5 --timeout 900 \
  2>&1 | tee "$OUTDIR/acceptance-odd-size.txt" | tail -n 12

step "5. DLA (AGX Orin / Orin NX only): build on core 0, placement from the engine inspector vs the estimate"
NDLA="$("$PY" -c 'import tensorrt as trt; print(trt.Builder(trt.Logger()).num_DLA_cores)' 2>/dev/null || echo 0)"
if [ "${NDLA:-0}" -gt 0 ]; then
  "$PY" -m rdd_edge.deploy.trt_acceptance "$EXPORT" --dla-core 0 --max-batch 1 --latency-time 0.5 --timeout 1800 \
    2>&1 | tee "$OUTDIR/acceptance-dla.txt" | grep -E "DLA core|PASS|FAIL"
  # the raw inspector report of a DLA engine: does it name DLA layers with LayerType "DLA" (what rdd-edge reads)?
  "$PY" - "$EXPORT" "$OUTDIR" <<'PYCODE' 2>&1 | tail -n 5
import json, sys
from pathlib import Path
from rdd_edge.deploy.engine_build import build_engine
out = Path(sys.argv[2])
meta = build_engine(Path(sys.argv[1]) / "model.fp16.onnx", out / "dla.fp16.engine", max_batch=1, dla_core=0,
                    allow_gpu_fallback=True)
print("after the build:", meta.get("dla_layers"), "| estimate:", meta.get("dla_estimate"))
import tensorrt as trt
rt = trt.Runtime(trt.Logger()); rt.DLA_core = 0
eng = rt.deserialize_cuda_engine((out / "dla.fp16.engine").read_bytes())
info = eng.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)
(out / "dla-inspector.json").write_text(info)
print("layer types:", sorted({str(l.get("LayerType")) for l in json.loads(info)["Layers"] if isinstance(l, dict)}))
PYCODE
else
  echo "skipped: no DLA cores here (desktop GPU, Orin Nano, Thor)"
fi
echo; echo "logs in $OUTDIR"
