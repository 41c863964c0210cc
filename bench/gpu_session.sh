#!/usr/bin/env bash
# Everything a session with a lent GPU runs, in steps that each fit one device call (10 minutes):
#   bash bench/gpu_session.sh build       # nvcc build for this GPU's architecture, modules into pyruntime/
#   bash bench/gpu_session.sh test        # tests/cuda on the GPU (the simulator variants are skipped here)
#   bash bench/gpu_session.sh attention   # bench/cuda_attention.py (kernels vs PyTorch SDPA)
#   bash bench/gpu_session.sh e2e         # bench/cuda_e2e.py (device="cuda" vs transformers, batched decode)
# Results go to $OUT (the device tool's output folder) or bench/results/cuda-<gpu>/ here, with the
# device name, driver, torch version and commit in device.txt. Needs nvcc, a CUDA build of torch and
# transformers on the machine (the peers); nothing is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
step=${1:?"usage: bash bench/gpu_session.sh build|test|attention|e2e"}
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
slug=$(echo "$gpu" | tr 'A-Z ' 'a-z-' | tr -cd 'a-z0-9-')
out=${OUT:-bench/results/cuda-$slug}
mkdir -p "$out"
{
  echo "device: $gpu, driver $(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)"
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  python -c "import torch; print('torch:', torch.__version__)" 2>/dev/null || echo "torch: not installed"
} > "$out/device.txt"

case "$step" in
  build)
    cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '.')
    gen=()
    if command -v ninja >/dev/null; then gen=(-G Ninja); fi
    cmake -S . -B build/gpu "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DPYRT_CUDA=ON -DPYRT_WERROR=ON \
      -DCMAKE_CUDA_ARCHITECTURES="$cap" -Dpybind11_DIR="$(python -c 'import pybind11; print(pybind11.get_cmake_dir())')"
    cmake --build build/gpu -j"$(nproc)"
    cp build/gpu/_core.cpython-*.so build/gpu/_cuda.cpython-*.so build/gpu/_cuda_sim.cpython-*.so build/gpu/libpyrt.so pyruntime/
    python -c "from pyruntime import _cuda; print(_cuda.device_count(), 'GPU:', _cuda.device_name())"
    ;;
  test)
    python -m pytest -q tests/cuda -k "not sim" 2>&1 | tee "$out/cuda_tests.log"
    ;;
  attention)
    python bench/cuda_attention.py --out "$out" 2>&1 | tee "$out/cuda_attention.log"
    ;;
  e2e)
    python bench/cuda_e2e.py --out "$out" 2>&1 | tee "$out/cuda_e2e.log"
    ;;
  *)
    echo "unknown step '$step' (build, test, attention or e2e)" >&2
    exit 2
    ;;
esac
