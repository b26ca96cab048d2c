#!/usr/bin/env bash
# One call on a machine of 2+ GPUs: install the carried wheels (benchmarks/gpu_env.sh), build the full-size
# random-init Qwen2.5-VL-7B once, then measure 1 -> N GPU scaling of the finetune step: DDP bf16, DDP 4-bit
# (QLoRA, gradient checkpointing) and FSDP bf16 (against DDP's 1-GPU run). Results and logs go to $OUT.
set -u
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1  # never NVLink multicast
BENCH=${BENCH:-.}
source $BENCH/benchmarks/gpu_env.sh || exit 1
OUT=${OUT:-/tmp/out}; GPUS=${GPUS:-1,2}; STEPS=${STEPS:-6}; CK=/dev/shm/ckpt-qwen7b
nvidia-smi topo -m | head -4
run() {  # name, timeout, args...
  local name=$1 cap=$2; shift 2
  timeout $cap python3 $BENCH/benchmarks/ddp_scaling.py --ckpt $CK --steps $STEPS --warmup 2 --out $OUT "$@" \
    > $OUT/log-$name.txt 2>&1; echo "$name exit $?"; grep -E '^\{|efficiency|Error' $OUT/log-$name.txt | cut -c1-600
}
run ddp_bf16 240 --build qwen2_5_vl --gpus $GPUS --mode ddp
run ddp_4bit 240 --gpus $GPUS --mode ddp --quant 4bit --grad-ckpt
base=$(ls $OUT/ddp_scaling_*_ddp_bf16.json | head -1)
run fsdp_bf16 180 --gpus ${GPUS#1,} --mode fsdp --baseline $base
