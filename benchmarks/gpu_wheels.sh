#!/usr/bin/env bash
# Download here (where PyPI is reachable) the wheel folders that benchmarks/gpu_env.sh installs on the device
# machine, whose image has torch, accelerate, pandas, pyarrow, xxhash... but not the project's pins:
#   .whl/common   the project's pure-Python needs the image lacks (datasets and its dill / multiprocess,
#                 json_repair, pydantic)
#   .whl/hf       transformers and peft at the project's pins, bitsandbytes (4-bit runs)
#   .whl/trl116   trl at the project's pin
#   .whl/gpu      what benchmarks/base_segment.sh needs (transformers, json_repair, pydantic)
# Versions come from this machine's .venv, so the device runs what the tests ran (bitsandbytes, not in the
# CPU venv, comes at PyPI's newest). NO_BNB=1 skips bitsandbytes
# (about 60 MiB: the 64 MiB carry limit leaves no room for it beside the rest; bf16 configs don't need it).
set -euo pipefail
ver() { .venv/bin/python -c "import importlib.metadata as m; print(m.version('$1'))"; }
get() {  # folder, then NAME==VERSION...
  local dir=$1; shift
  mkdir -p "$dir"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d "$dir" "$@"
}
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
pyd="json_repair==$(ver json_repair) pydantic==$(ver pydantic) pydantic_core==$(ver pydantic_core)
     annotated_types==$(ver annotated_types) typing_inspection==$(ver typing_inspection)"
get .whl/common datasets==$(ver datasets) dill==$(ver dill) multiprocess==$(ver multiprocess) $pyd
get .whl/hf transformers==$(ver transformers) peft==$(ver peft)
[ "${NO_BNB:-0}" = 1 ] || get .whl/hf bitsandbytes
get .whl/trl116 trl==$(ver trl)
get .whl/gpu transformers==$(ver transformers) $pyd
du -sh .whl/*
