#!/usr/bin/env bash
# One device call: install the carried wheels, then run benchmarks/gpu_real_path.py with the arguments
# given (FAMILY, TAG, CONFIGS from the environment). Used as: bash benchmarks/gpu_real_path.sh
# from a tree holding src/ and benchmarks/ (BENCH), wheels in WHL (and WHLU for unsloth).
set -u
BENCH=${BENCH:-.}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site ${WHL:-.whl2}/*.whl || exit 1
SITE=/tmp/site
if [ -n "${WHLU:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/siteu $WHLU/*.whl || exit 1
  SITE=/tmp/siteu:/tmp/site
fi
export PYTHONPATH=$SITE:${EXTRA_SITE:-}:$BENCH/src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
# a RAM-backed checkpoint dir when /dev/shm has room (writes and reloads of 16-21 GB are faster)
free_kb=$(df -k --output=avail /dev/shm 2>/dev/null | tail -1)
CK=/tmp; [ "${free_kb:-0}" -gt 50000000 ] && CK=/dev/shm
nvidia-smi --query-gpu=name,memory.total,clocks.sm,temperature.gpu --format=csv,noheader
df -h /tmp /dev/shm | tail -2
python3 $BENCH/benchmarks/gpu_real_path.py --family $FAMILY --out ${OUT:-/tmp/out} --tag $TAG --ckpt $CK/ckpt-$FAMILY "$@" --configs "$CONFIGS"
