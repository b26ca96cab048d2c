#!/usr/bin/env bash
# One device call: continue the shipped tiny bases named in FAMILIES (default both, side by side on the same
# scenes; one alone gets all of the loader's scenes) on the GPU from models/shipped/{family}-tiny with
# params.yaml's base.train recipe for MINUTES (default 8) on the scene stream SEED (give each segment a
# new one), and leave the new bases and the log under $OUT. Carry .whl/gpu (transformers 5.24 and the few
# pure-Python needs the device image lacks). Each base comes back as one archive, $OUT/<family>-tiny.tgz (the
# device returns at most 8 files, 16 MiB each; a base is 9 files): unpack it over models/shipped/ to chain the
# next segment (init_from keeps each segment's record under continued_from).
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/gpu/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
FAMILIES=${FAMILIES:-qwen2_5_vl mllama}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -m safetyvlm.train.pretrain --families $FAMILIES --out $OUT/bases --no-live \
  --set minutes=${MINUTES:-8} seed=${SEED:?give each segment a new scene stream} \
        'init_from=models/shipped/{family}-tiny' "$@" 2>&1 | tee $OUT/segment.log
status=${PIPESTATUS[0]}
for f in $FAMILIES; do
  [ -d $OUT/bases/$f-tiny ] && tar czf $OUT/$f-tiny.tgz -C $OUT/bases $f-tiny
done
rm -rf $OUT/bases
ls -la $OUT
exit $status
