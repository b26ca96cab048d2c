#!/usr/bin/env bash
# One device call: install the carried wheels, then run benchmarks/gpu_real_path.py with the arguments
# given (FAMILY, TAG, CONFIGS and optionally CKSUFFIX, a second checkpoint copy's name, from the environment). Used as: bash benchmarks/gpu_real_path.sh
# from a tree holding src/ and benchmarks/. WHEELS: wheel folders to install (default .whl/common
# .whl/hf .whl/trl116: peft, trl 1.16, transformers 5.24, bitsandbytes...; for unsloth: .whl/common .whl/unsloth,
# which keeps the machine's transformers 5.17 and brings trl 1.15, as unsloth pins).
set -u
BENCH=${BENCH:-.}
source $BENCH/benchmarks/gpu_env.sh || exit 1
free_kb=$(df -k --output=avail /dev/shm 2>/dev/null | tail -1)
CK=/tmp; [ "${free_kb:-0}" -gt 50000000 ] && CK=/dev/shm  # writes and reloads of 16-21 GB are faster in RAM
python3 $BENCH/benchmarks/gpu_real_path.py --family $FAMILY --out ${OUT:-/tmp/out} --tag $TAG --ckpt $CK/ckpt-$FAMILY${CKSUFFIX:-} "$@" --configs "$CONFIGS"
