"""Service configuration: defaults < a YAML file (`SAFETYVLM_SERVE_CONFIG`) < `SAFETYVLM_*` env vars.

The bearer token is deliberately *not* a config field: it comes only from the env var named by
`auth_token_env` (default `SAFETYVLM_API_TOKEN`, a Kubernetes Secret), so it never lands in a file,
a ConfigMap or a log line that prints the config.

Fail closed (docs/serving.md): with `auth` on (the default) and no token the service refuses to start;
`SAFETYVLM_AUTH=off` is the explicit local switch (`make serve`). Likewise `kb_verify` (default on)
makes a knowledge base without a matching hash manifest stop the service; `SAFETYVLM_KB_VERIFY=off`
is the development switch for editing the KB before `safetyvlm kb rehash`.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import yaml

from safetyvlm.config import from_section
from safetyvlm.model.generate import check_cache

ENV_PREFIX = "SAFETYVLM_"
# multipart framing around the image: boundaries, part headers, the two option fields
MULTIPART_SLACK = 64 * 1024
CONFIG_FILE_ENV = "SAFETYVLM_SERVE_CONFIG"


class MissingToken(RuntimeError):
    """Auth is on but there is no token to check against."""


@dataclass
class ServeConfig:
    model: str = "safetyvlm:latest"   # a BentoML model tag (see package.py) or a model directory
    family: str | None = None          # None: read from the model's config.json
    device: str = "auto"               # auto | cpu | cuda | cuda:N
    dtype: str = "auto"
    rag: str | None = None             # an index dir; None: the index bundled with a packaged model, if any
    # used when a request does not say (and an index is loaded). Off: with passages in the prompt the
    # shipped tiny models answer worse on every measured column (metrics/results.md, "+ RAG" rows)
    retrieval_default: bool = False
    ground: bool = True                # safety fields and sources from the knowledge base, by tool name
    corpus_bound: bool = True          # only chunks of the hash-checked corpus may reach a prompt
    max_new_tokens: int = 400
    # the KV cache of generation: dynamic | static (preallocated, fixed shapes: on a GPU transformers
    # compiles the decoding step, 1.6-4x the tokens/s in docs/gpu.md; the same greedy answers)
    cache: str = "dynamic"
    max_tools: int = 20                # cap on tools per answer; a request may ask for fewer
    max_batch_size: int = 8            # adaptive batching: the most images in one forward pass
    # adaptive batching: when the model comes free, how long the next batch may wait for the clients whose
    # answers just went back (serve/batcher.py); never waited at one client or after an idle spell
    batch_wait_ms: int = 50
    torch_threads: int | None = None   # None: torch's default
    max_body_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000       # larger images are refused before decoding (decompression bombs)
    auth_token_env: str = "SAFETYVLM_API_TOKEN"
    auth: bool = True                  # False only by an explicit SAFETYVLM_AUTH=off (local use)
    kb_verify: bool = True             # False: a KB without a matching manifest is served (development)
    drain_s: int = 5                   # after SIGTERM: answer new requests 503 + Retry-After this long
    workers: int = 1                   # API-server processes (the model runs in its own process)
    timeout_s: int = 120              # a request still unanswered after this gets a 504 (BentoML traffic)
    max_concurrency: int | None = None  # requests in flight per API worker beyond this get a 429 at once
    body_timeout_s: int = 60           # a body not in full after this gets a 408 (a trickling sender)
    linger_s: int = 30                 # after a refusal: read and discard the unread body this long at most
    linger_bytes: int = 128 * 1024 * 1024  # ... and this many bytes at most (docs/reliability.md)

    def __post_init__(self):
        for name in ("max_new_tokens", "max_tools", "max_batch_size", "max_body_bytes", "max_pixels", "workers",
                     "timeout_s"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"serve config: {name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("drain_s", "linger_s", "linger_bytes", "batch_wait_ms"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"serve config: {name} must be >= 0, got {getattr(self, name)!r}")
        # the 504 (timeout_s) would otherwise cut a trickling upload first, with no 408 and no linger
        if not 1 <= int(self.body_timeout_s) < int(self.timeout_s):
            raise ValueError(f"serve config: body_timeout_s must be >= 1 and below timeout_s "
                             f"({self.timeout_s}), got {self.body_timeout_s!r}")
        check_cache(self.cache, "serve config: cache")
        if self.max_concurrency is not None and int(self.max_concurrency) < 1:
            raise ValueError(f"serve config: max_concurrency must be >= 1, got {self.max_concurrency!r}")

    @classmethod
    def from_dict(cls, d: dict | None) -> "ServeConfig":
        return from_section(cls, dict(d or {}), "serve")

    def api_token(self) -> str | None:
        """The bearer token, or None when auth is explicitly off. With auth on and no token this raises
        (the service must not start open because a Secret is missing)."""
        if not self.auth:
            return None
        token = os.environ.get(self.auth_token_env) or None
        if token is None:
            raise MissingToken(
                f"{self.auth_token_env} is unset or empty and authentication is on: refusing to serve every "
                f"route without a token. Set {self.auth_token_env} (in Kubernetes: the safetyvlm-auth Secret), "
                f"or for local use only turn authentication off explicitly with SAFETYVLM_AUTH=off")
        return token

    def request_body_limit(self) -> int:
        """The largest body any route takes: the chat route's base64 image (4/3 of max_body_bytes) and
        its JSON around it. A proxy in front must pass at least this much (docs/reliability.md)."""
        return int(self.max_body_bytes) * 4 // 3 + MULTIPART_SLACK

    def traffic(self) -> dict:
        """BentoML's `traffic` for the API server: the timeout (504). The concurrency cap (429) is the
        service's own Gate, which takes a slot only once the body is in, so a trickling upload holds none."""
        return {"timeout": self.timeout_s}

    def to_dict(self) -> dict:
        return asdict(self)


def _coerce(value: str, kind: str):
    """Env vars are strings; turn one into the field's declared type (`kind`, e.g. "int | None")."""
    v = value.strip().lower()
    if v in ("", "none", "null") and "None" in kind:
        return None
    if kind.startswith("bool"):
        if v not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ValueError(f"expected a boolean, got {value!r}")
        return v in ("1", "true", "yes", "on")
    if kind.startswith("int"):
        return int(value)
    return value


def load_config(path: str | os.PathLike | None = None, environ=None) -> ServeConfig:
    environ = os.environ if environ is None else environ
    values: dict = {}
    path = path or environ.get(CONFIG_FILE_ENV)
    if path:
        raw = yaml.safe_load(Path(path).read_text()) or {}
        values.update(raw.get("serve", raw))  # a params.yaml-style file with a `serve:` section, or bare
    for f in fields(ServeConfig):
        key = ENV_PREFIX + f.name.upper()
        if key in environ:
            try:
                values[f.name] = _coerce(environ[key], str(f.type))
            except ValueError as e:
                raise ValueError(f"{key}: {e}") from None
    return ServeConfig.from_dict(values)
