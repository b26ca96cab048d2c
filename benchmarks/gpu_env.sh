# Sourced on the GPU machine (no registry there): install the carried wheel folders named in WHEELS
# into $SITE (default /tmp/site) with the machine's own torch, and set the environment the benchmarks run in.
BENCH=${BENCH:-.}
WHEELS=${WHEELS:-.whl/common .whl/hf .whl/trl116}
SITE=${SITE:-/tmp/site}
whls=$(for d in $WHEELS; do ls $BENCH/$d/*.whl; done)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $SITE $whls || return 1
export PYTHONPATH=$SITE:$BENCH/src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.sm,temperature.gpu --format=csv,noheader
python3 -c "import torch, transformers, peft, trl; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'trl', trl.__version__)"
