#!/usr/bin/env bash
# Download here (where PyPI is reachable) the wheel folders that benchmarks/gpu_env.sh installs on the device
# machine, whose image has torch, accelerate, pandas, pyarrow, xxhash... but not the project's pins:
#   .whl/common   the project's pure-Python needs the image lacks (datasets and its dill / multiprocess,
#                 json_repair, pydantic)
#   .whl/hf       transformers and peft at the project's pins, bitsandbytes (4-bit runs)
#   .whl/trl116   trl at the project's pin
#   .whl/gpu      what benchmarks/base_segment.sh needs (transformers, json_repair, pydantic)
#   .whl/serve    the service and its load test (bentoml, locust and what they need beyond the device image)
# Versions come from this machine's .venv, so the device runs what the tests ran (bitsandbytes, not in the
# CPU venv, comes at PyPI's newest). bitsandbytes ships a library for every CUDA and ROCm release (123 MiB
# unpacked, 41 MiB as a wheel); the wheel is repacked with the device's CUDA 13.0 library alone (~4 MiB), so
# it fits the 64 MiB carry beside the rest. NO_BNB=1 skips it (bf16 configs don't need it).
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
if [ "${NO_BNB:-0}" != 1 ]; then
  get .whl/hf bitsandbytes
  python3 - .whl/hf/bitsandbytes-*.whl <<'PY'
import re, sys, zipfile
path = sys.argv[1]  # keep the CPU and CUDA 13.0 libraries: the device's torch is 2.11+cu130
drop = re.compile(r"libbitsandbytes_(?!cuda130|cpu)\w+\.so$")
with zipfile.ZipFile(path) as z:
    items = [(i, z.read(i)) for i in z.infolist() if not drop.search(i.filename)]
with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
    for info, data in items:
        if info.filename.endswith(".dist-info/RECORD"):
            data = b"".join(l for l in data.splitlines(True) if not drop.search(l.split(b",")[0].decode()))
        z.writestr(info, data)
PY
fi
get .whl/trl116 trl==$(ver trl)
get .whl/gpu transformers==$(ver transformers) $pyd
# bentoml + locust less what the device image (KINDS.md's package list) and the folders above already hold
serve="a2wsgi aiohttp-asgi-connector aiosqlite asgiref bentoml bidict blinker brotli cattrs click-option-group
       configargparse flask-cors flask-login flask gevent geventhttpclient greenlet httpx-ws itsdangerous kantoku
       locust opentelemetry-api opentelemetry-instrumentation opentelemetry-instrumentation-aiohttp-client
       opentelemetry-instrumentation-asgi opentelemetry-sdk opentelemetry-semantic-conventions
       opentelemetry-util-http pip-requirements-parser python-engineio python-json-logger python-multipart
       python-socketio pyzmq rich-toolkit schema simple-di simple-websocket starlette tomli-w tornado uvicorn
       watchfiles websocket-client wsproto zope-event zope-interface"
get .whl/serve $(for n in $serve; do echo "$n==$(ver $n)"; done) tzdata
du -sh .whl/*
