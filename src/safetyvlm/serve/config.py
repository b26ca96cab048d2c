"""Service configuration: defaults < a YAML file (`SAFETYVLM_SERVE_CONFIG`) < `SAFETYVLM_*` env vars.

The bearer token is deliberately *not* a config field: it comes only from the env var named by
`auth_token_env` (default `SAFETYVLM_API_TOKEN`, a Kubernetes Secret), so it never lands in a file,
a ConfigMap or a log line that prints the config.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import yaml

from safetyvlm.config import from_section

ENV_PREFIX = "SAFETYVLM_"
CONFIG_FILE_ENV = "SAFETYVLM_SERVE_CONFIG"


@dataclass
class ServeConfig:
    model: str = "safetyvlm:latest"   # a BentoML model tag (see package.py) or a model directory
    family: str | None = None          # None: read from the model's config.json
    device: str = "auto"               # auto | cpu | cuda | cuda:N
    dtype: str = "auto"
    rag: str | None = None             # an index dir; None: the index bundled with a packaged model, if any
    retrieval_default: bool = True     # used when a request does not say (and an index is loaded)
    ground: bool = True                # safety fields and sources from the knowledge base, by tool name
    corpus_bound: bool = True          # only chunks of the hash-checked corpus may reach a prompt
    max_new_tokens: int = 400
    max_tools: int = 20                # cap on tools per answer; a request may ask for fewer
    max_batch_size: int = 8            # adaptive batching: the most images in one forward pass
    max_latency_ms: int = 60000        # adaptive batching: a request's latency budget, queueing included
    torch_threads: int | None = None   # None: torch's default
    max_body_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000       # larger images are refused before decoding (decompression bombs)
    auth_token_env: str = "SAFETYVLM_API_TOKEN"
    workers: int = 1                   # API-server processes (the model runs in its own process)
    timeout_s: int = 120              # a request still unanswered after this gets a 504 (BentoML traffic)
    max_concurrency: int | None = None  # requests in flight per service beyond this get a 429 at once

    def __post_init__(self):
        for name in ("max_new_tokens", "max_tools", "max_batch_size", "max_latency_ms", "max_body_bytes",
                     "max_pixels", "workers", "timeout_s"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"serve config: {name} must be >= 1, got {getattr(self, name)!r}")
        if self.max_concurrency is not None and int(self.max_concurrency) < 1:
            raise ValueError(f"serve config: max_concurrency must be >= 1, got {self.max_concurrency!r}")

    def api_token(self) -> str | None:
        """The bearer token, or None when auth is off (env var unset or empty)."""
        return os.environ.get(self.auth_token_env) or None

    def traffic(self) -> dict:
        """BentoML's `traffic` for the API server: the timeout (504) and the concurrency cap (429)."""
        out = {"timeout": self.timeout_s}
        if self.max_concurrency:
            out["max_concurrency"] = self.max_concurrency
        return out

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
    return from_section(ServeConfig, values, "serve")
