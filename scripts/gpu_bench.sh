#!/usr/bin/env bash
# GPU check of the deployment backends, as one short run (<= 8 minutes) on a CUDA machine.
#
# Usage (repo root, on the GPU machine):  bash scripts/gpu_bench.sh [OUT_DIR]
#
# 1. installs what it needs into the current python (tensorrt, onnx, onnxscript, onnxruntime-gpu
#    when missing; a CUDA torch must already be there);
# 2. runs the backend tests (equivalence within 1e-3 in fp32, fallbacks) on the GPU;
# 3. runs `fmdepth bench --backend all` at 640x192 (ResNet-18) and 1024x320 (ResNet-50),
#    FeatDepth decoder, with the node end-to-end and refinement rows, writing
#    OUT_DIR/bench_gpu.json (commit it as docs/bench_gpu.json) and OUT_DIR/bench_gpu.txt.
# Every step has its own time limit so the whole script stays within 8 minutes.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-${OUT:-$ROOT/gpu_bench_out}}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

"$PY" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' \
    || { echo "gpu_bench: no CUDA device visible to torch" >&2; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"

need=()
for spec in tensorrt:tensorrt onnx:onnx onnxscript:onnxscript onnxruntime:onnxruntime-gpu \
            tqdm:tqdm kornia:kornia yaml:pyyaml PIL:pillow scipy:scipy; do
    module="${spec%%:*}"; package="${spec#*:}"
    "$PY" -c "import $module" 2>/dev/null || need+=("$package")
done
if ((${#need[@]})); then
    echo "gpu_bench: installing ${need[*]}"
    timeout 180 "$PY" -m pip install -q "${need[@]}" || echo "gpu_bench: warning: install failed"
fi
"$PY" - <<'PYEOF' | tee -a "$OUT/gpu.txt"
import torch
for name in ('tensorrt', 'onnxruntime', 'openvino'):
    try:
        module = __import__(name)
        extra = getattr(module, 'get_available_providers', lambda: '')()
        print(name, module.__version__, extra)
    except ImportError as exc:
        print(name, 'missing', exc)
print('torch', torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))
PYEOF

timeout 120 "$PY" -m pytest -q -x test/test_backends.py -p no:cacheprovider 2>&1 \
    | tail -15 | tee "$OUT/tests.txt"

timeout 300 "$PY" -m fmdepth_ros.cli bench --device cuda --backend all \
    --sizes 640x192,1024x320 --encoders 18,50 --frames 200 --warmup 20 \
    --node-frames 100 --refine-frames 100 --json "$OUT/bench_gpu.json" 2>&1 \
    | tee "$OUT/bench_gpu.txt" | tail -60
echo "gpu_bench: results in $OUT (bench_gpu.json, bench_gpu.txt, tests.txt, gpu.txt)"
