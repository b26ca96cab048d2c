# Sourced on the GPU machine (no registry there): install the carried wheel folders named in WHEELS
# into $SITE (default /tmp/site) with the machine's own torch, and set the environment the benchmarks run in.
BENCH=${BENCH:-.}
WHEELS=${WHEELS:-.whl/common .whl/hf .whl/trl116}
SITE=${SITE:-/tmp/site}
whls=$(for d in $WHEELS; do ls $BENCH/$d/*.whl; done)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $SITE $whls || return 1
export PYTHONPATH=$SITE:$BENCH/src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.sm,temperature.gpu --format=csv,noheader
# versions of what is there (a service call carries no trl): a missing one prints as such, never fails the source
python3 -c "
import importlib
for name in ('torch', 'transformers', 'peft', 'trl', 'bentoml'):
    try:
        print(name, importlib.import_module(name).__version__, end='; ')
    except ImportError:
        print(name, 'missing', end='; ')
print()"
