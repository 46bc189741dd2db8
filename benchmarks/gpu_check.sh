#!/usr/bin/env bash
# The GPU check of issue 4: one generation of cifar10-edm at reduced counts on one GPU, printing
# each step's throughput, peak memory and model FLOP utilisation. Sized for < 8 minutes on one
# H100 (20 kimg of training, 5 kimg of the plain reference loop, 5,000 samples, 2 x 5,000
# Inception embeddings), plus the CUDA-only tests, the evaluation benchmark against clean-fid, the
# noise benchmark and the sampling benchmark (each family's sampler options vs a plain fp32 loop).
#
#   bash benchmarks/gpu_check.sh [extra gpu_check.py arguments]
#   CIFAR10=/data/cifar10 INCEPTION=/data/inception-2015-12-05.pt bash benchmarks/gpu_check.sh
#
# Without CIFAR10 the images are a random stand-in; without INCEPTION the evaluation uses a
# random-weight Inception-v3 (same cost; the metrics then mean nothing). Results: $OUT or ./gpu-check/.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
export MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi.csv"
"$PYTHON" -m pytest -q -n 0 -m gpu tests 2>&1 | tee "$OUT/pytest-gpu.txt"
"$PYTHON" benchmarks/gpu_check.py --config configs/cifar10-edm.yaml --train-kimg 20 --plain-kimg 5 --samples 5000 \
    ${CIFAR10:+--cifar10 "$CIFAR10"} ${INCEPTION:+--inception "$INCEPTION"} --json "$OUT/gpu_check.json" "$@" \
    | tee "$OUT/gpu_check.txt"
"$PYTHON" benchmarks/bench_eval.py --n 5000 --device cuda ${INCEPTION:+--weights "$INCEPTION"} \
    --json "$OUT/bench_eval.json" | tee "$OUT/bench_eval.txt"
"$PYTHON" benchmarks/bench_noise.py --json "$OUT/bench_noise.json" | tee "$OUT/bench_noise.txt"
# Sampling: auto (each family's reference), bf16, bf16 + compile, fp32, fp64 vs a plain fp32 loop.
for run in edm:edm ddpm:ddpm-ancestral otcfm:otcfm; do
    config=${run%%:*} family=${run#*:}
    "$PYTHON" benchmarks/bench_sampling.py --device cuda --config "configs/cifar10-$config.yaml" --families "$family" \
        --n 256 --batch-size 256 --repeat 3 --ancestral-steps 50 --json "$OUT/bench_sampling_$config.json" \
        | tee "$OUT/bench_sampling_$config.txt"
done
