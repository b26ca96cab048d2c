"""The BentoML service: `bentoml serve` from the repo root (bentofile.yaml names `SafetyVLM`).

Two services, two kinds of process:

* `SafetyVLM` (the API server, the one the port belongs to) owns HTTP: auth, body limits, decoding and
  refusing bad images, the dashboard, `/analyze` and `/v1/chat/completions`. It never imports torch, so
  a hostile upload is rejected before it costs the model anything.
* `VLMRunner` holds the model. Its `analyze_batch` is `batchable`: BentoML's adaptive batcher merges
  the one-item lists that concurrent requests send into one list, so they share a forward pass.

Config: `safetyvlm.serve.config` (env vars / `SAFETYVLM_SERVE_CONFIG`), read when this module is
imported, because the batching limits are decorator arguments.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from pathlib import Path

import bentoml
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from safetyvlm.serve.config import load_config
from safetyvlm.serve.images import BadInput, decode_image
from safetyvlm.serve.openai_compat import chat_completion, parse_chat_request
from safetyvlm.serve.openapi import spec

log = logging.getLogger("safetyvlm.serve")
CONFIG = load_config()

HEALTH_PATHS = frozenset({"/livez", "/readyz", "/healthz"})
TOKEN_COOKIE = "safetyvlm_token"
DASHBOARD = Path(__file__).with_name("dashboard.html")
# multipart framing around the image: boundaries, part headers, the two option fields
MULTIPART_SLACK = 64 * 1024

BATCH_SIZE = bentoml.metrics.Histogram(
    name="safetyvlm_batch_size", documentation="images per forward pass (adaptive batching)",
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64))
REJECTED = bentoml.metrics.Counter(
    name="safetyvlm_rejected_requests_total", documentation="requests refused before the model, by reason",
    labelnames=["reason"])


class Job(BaseModel):
    image: bytes                # already checked by the API server; decoded again here, same limits
    retrieval: bool | None = None
    max_tools: int | None = None


# the model's own timeout is longer than the API server's, so a slow request ends as the API server's
# 504, never as a model-side error
@bentoml.service(name="safetyvlm-model", workers=1, traffic={"timeout": CONFIG.timeout_s + 30})
class VLMRunner:
    def __init__(self) -> None:
        from safetyvlm.serve.analyzer import Analyzer

        self.analyzer = Analyzer(CONFIG)

    def __is_ready__(self) -> bool:
        return getattr(self, "analyzer", None) is not None

    # max_batch_size 1 turns batching off (BentoML refuses a batchable API with batches of 1): the same
    # list-in, list-out method, called once per request
    @bentoml.api(**({"batchable": True, "max_batch_size": CONFIG.max_batch_size,
                     "max_latency_ms": CONFIG.max_latency_ms} if CONFIG.max_batch_size > 1 else {}))
    def analyze_batch(self, jobs: list[Job]) -> list[dict]:
        BATCH_SIZE.observe(len(jobs))
        return self._isolating(jobs)

    def _isolating(self, jobs: list[Job]) -> list[dict]:
        """The batch's answers; when an image makes the model raise (e.g. an aspect ratio its processor
        refuses), halve the batch and retry, so only that request gets an error and its batch-mates still
        get their reports (one bad image among n costs about log2(n) extra passes)."""
        try:
            return self._analyze(jobs)
        except Exception as e:
            if len(jobs) > 1:
                half = len(jobs) // 2
                return self._isolating(jobs[:half]) + self._isolating(jobs[half:])
            log.warning("the model failed on one image: %s: %s", type(e).__name__, e)
            return [{"error": f"the model could not process this image ({type(e).__name__}: {e})",
                     "reason": "model_error"}]

    def _analyze(self, jobs: list[Job]) -> list[dict]:
        images = [decode_image(j.image, max_bytes=CONFIG.max_body_bytes, max_pixels=CONFIG.max_pixels)
                  for j in jobs]
        answers = self.analyzer.analyze(images, [j.retrieval for j in jobs], [j.max_tools for j in jobs])
        return [a.to_dict() for a in answers]

    @bentoml.api
    def info(self) -> dict:
        return self.analyzer.describe()


def error(status: int, message: str, reason: str, headers: dict | None = None) -> JSONResponse:
    """Every refusal has this shape: {"error": what is wrong, "reason": a stable code}."""
    REJECTED.labels(reason=reason).inc()
    return JSONResponse({"error": message, "reason": reason}, status_code=status, headers=headers)


def gone() -> Response:
    """The answer to a client that disconnected mid-upload (nobody reads it; 499 as nginx logs it)."""
    REJECTED.labels(reason="client_disconnected").inc()
    return Response(status_code=499)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (413) as soon as it passes `limit`: chunked uploads have no Content-Length."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadInput(413, f"the request body is larger than {limit} bytes", "body_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def _flag(value: str | None, name: str) -> bool | None:
    if value is None or value == "":
        return None
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise BadInput(400, f"{name} must be true or false, got {value!r}", "bad_option")


def _positive_int(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        n = int(value)
    except ValueError:
        raise BadInput(400, f"{name} must be a positive integer, got {value!r}", "bad_option") from None
    if not 1 <= n <= 1000:
        raise BadInput(400, f"{name} must be between 1 and 1000, got {n}", "bad_option")
    return n


async def image_from_request(request: Request) -> tuple[bytes, dict]:
    """(image bytes, form fields) from a multipart upload (field `image` or `file`) or a raw image body."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        body = await read_body(request, CONFIG.max_body_bytes + MULTIPART_SLACK)

        async def replay():
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=1, max_fields=8, max_part_size=4096)
        except Exception as e:  # malformed multipart: starlette/python-multipart raise several kinds
            raise BadInput(400, f"malformed multipart body ({type(e).__name__})", "malformed_multipart") from None
        upload = form.get("image") or form.get("file")
        if upload is None or isinstance(upload, str):
            raise BadInput(400, "multipart body has no file field named `image` (or `file`)", "no_image")
        data = await upload.read()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        await form.close()
        return data, fields
    if ctype.startswith("image/") or ctype == "application/octet-stream":
        return await read_body(request, CONFIG.max_body_bytes), {}
    raise BadInput(415, f"unsupported content type {ctype or '(none)'!r}: send multipart/form-data with an "
                   f"`image` file, or the raw image bytes as image/* or application/octet-stream",
                   "wrong_content_type")


MODEL_CALL_ATTEMPTS = 3


def _dropped_connection(e: BaseException) -> bool:
    """A transport failure between the two processes (not an answer of the model)."""
    return isinstance(e, ConnectionError) or any(
        k in type(e).__name__ for k in ("Disconnected", "ConnectionError", "ClientOSError", "RemoteProtocol",
                                        "ReadError", "WriteError", "ConnectError"))


class ModelUnavailable(BadInput):
    """Not the client's fault, but still a clean JSON answer (503, retry) instead of a stack trace."""

    def __init__(self):
        super().__init__(503, "the model is unavailable right now; retry shortly", "model_unavailable")


class Front:
    """Holds the API server's service instance for the Starlette routes (they are plain functions)."""

    service: SafetyVLM | None = None
    info: dict | None = None

    @classmethod
    async def model_info(cls) -> dict:
        if cls.info is None:
            try:
                cls.info = await cls.service.runner.to_async.info()
            except Exception as e:
                log.error("model info failed: %s: %s", type(e).__name__, e)
                raise ModelUnavailable() from None
        return cls.info

    @classmethod
    async def analyze(cls, image: bytes, retrieval: bool | None, max_tools: int | None) -> dict:
        if retrieval and not (await cls.model_info())["retrieval_index"]:
            raise BadInput(400, "retrieval was requested but this deployment has no retrieval index",
                           "no_retrieval_index")
        # check here so a bad image never reaches the model process; in a thread, since decoding a large
        # photo would otherwise stall every other request on this event loop
        await asyncio.to_thread(decode_image, image, max_bytes=CONFIG.max_body_bytes, max_pixels=CONFIG.max_pixels)
        job = Job(image=image, retrieval=retrieval, max_tools=max_tools)
        for attempt in range(MODEL_CALL_ATTEMPTS):
            try:
                [answer] = await cls.service.runner.to_async.analyze_batch([job])
                break
            except Exception as e:  # the model process is down, restarting or overloaded: retryable
                if attempt + 1 < MODEL_CALL_ATTEMPTS and _dropped_connection(e):
                    # under load the pooled connection to the model process is at times closed under a
                    # request (aiohttp ServerDisconnectedError); the analysis is idempotent, so send it again
                    log.warning("model call retried after %s", type(e).__name__)
                    await asyncio.sleep(0.05 * (attempt + 1))
                    continue
                log.error("model call failed: %s: %s", type(e).__name__, e)
                raise ModelUnavailable() from None
        if "error" in answer:  # the model raised on this image alone (see VLMRunner.analyze_batch)
            raise BadInput(422, answer["error"], answer["reason"])
        return answer


def _answer_headers(answer: dict, t0: float) -> dict:
    return {"X-SafetyVLM-Valid": str(answer["valid"]).lower(),
            "X-SafetyVLM-Batch-Size": str(answer["batch_size"]),
            "X-SafetyVLM-Retrieval": str(answer["retrieval"]).lower(),
            "X-SafetyVLM-Latency-Ms": f"{(time.perf_counter() - t0) * 1000:.1f}"}


async def analyze_route(request: Request) -> Response:
    t0 = time.perf_counter()
    try:
        image, fields = await image_from_request(request)
        q = {**fields, **request.query_params}
        retrieval = _flag(q.get("retrieval"), "retrieval")
        max_tools = _positive_int(q.get("max_tools"), "max_tools")
        detail = _flag(q.get("detail"), "detail")
        answer = await Front.analyze(image, retrieval, max_tools)
    except BadInput as e:
        return error(e.status, str(e), e.reason)
    except ClientDisconnect:  # the client left mid-upload: nothing to answer, nothing left running
        return gone()
    body = answer if detail else answer["report"]
    return JSONResponse(body, headers=_answer_headers(answer, t0))


async def chat_route(request: Request) -> Response:
    t0 = time.perf_counter()
    try:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise BadInput(415, f"send application/json, not {ctype or '(none)'!r}", "wrong_content_type")
        # base64 inflates the image by 4/3
        req = parse_chat_request(await read_body(request, CONFIG.max_body_bytes * 4 // 3 + MULTIPART_SLACK))
        answer = await Front.analyze(req["image"], req["retrieval"], req["max_tools"])
    except BadInput as e:
        return error(e.status, str(e), e.reason)
    except ClientDisconnect:
        return gone()
    model = req["model"] or "safetyvlm"
    return JSONResponse(chat_completion(answer, model), headers=_answer_headers(answer, t0))


async def models_route(request: Request) -> Response:
    try:
        info = await Front.model_info()
    except BadInput as e:
        return error(e.status, str(e), e.reason)
    return JSONResponse({"object": "list", "data": [
        {"id": "safetyvlm", "object": "model", "created": 0, "owned_by": "safetyvlm", "safetyvlm": info}]})


async def info_route(request: Request) -> Response:
    cfg = {k: v for k, v in CONFIG.to_dict().items() if k != "auth_token_env"}
    try:
        info = await Front.model_info()
    except BadInput as e:
        return error(e.status, str(e), e.reason)
    return JSONResponse({"model": info, "config": cfg,
                         "auth": CONFIG.api_token() is not None})


async def openapi_route(request: Request) -> Response:
    return JSONResponse(spec())


api = Starlette(routes=[
    Route("/openapi.json", openapi_route, methods=["GET"]),
    Route("/analyze", analyze_route, methods=["POST"]),
    Route("/v1/chat/completions", chat_route, methods=["POST"]),
    Route("/v1/models", models_route, methods=["GET"]),
    Route("/info", info_route, methods=["GET"]),
])


class Gate:
    """ASGI middleware in front of every route (BentoML's own included): bearer auth except on the health
    checks, an early 413 on a declared Content-Length beyond the limit, and the dashboard at `/` (BentoML
    claims `/` for its own index page, which a middleware can still answer first)."""

    def __init__(self, app, config=CONFIG):
        self.app, self.config = app, config
        self.token = config.api_token()
        self.max_declared = config.max_body_bytes * 4 // 3 + MULTIPART_SLACK

    def _authorized(self, headers: dict) -> bool:
        if self.token is None:
            return True
        supplied = None
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            supplied = auth[7:].strip()
        else:
            for part in headers.get("cookie", "").split(";"):
                name, _, value = part.strip().partition("=")
                if name == TOKEN_COOKIE:
                    supplied = value
        return supplied is not None and hmac.compare_digest(supplied.encode(), self.token.encode())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in HEALTH_PATHS:
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        is_page = scope["path"] in ("/", "/index.html") and scope["method"] in ("GET", "HEAD")
        if not self._authorized(headers):
            if is_page:  # a browser: the same page asks for the token and keeps it in a SameSite cookie
                resp = HTMLResponse(DASHBOARD.read_text(), status_code=401)
            else:
                resp = error(401, "missing or invalid bearer token (Authorization: Bearer <token>)",
                             "unauthorized", headers={"WWW-Authenticate": "Bearer"})
            return await resp(scope, receive, send)
        if is_page:
            return await HTMLResponse(DASHBOARD.read_text())(scope, receive, send)
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_declared:
            resp = error(413, f"the request body is {length} bytes; the limit is {self.max_declared}",
                         "body_too_large")
            return await resp(scope, receive, send)
        return await self.app(scope, receive, send)


@bentoml.service(name="safetyvlm", workers=CONFIG.workers, traffic=CONFIG.traffic(),
                 labels={"project": "safetyvlm"})
@bentoml.asgi_app(api, path="/")
class SafetyVLM:
    runner = bentoml.depends(VLMRunner)

    def __init__(self) -> None:
        Front.service = self
        log.info("API server up: auth %s, body limit %d bytes, pixel limit %d",
                 "on" if CONFIG.api_token() else "off", CONFIG.max_body_bytes, CONFIG.max_pixels)


SafetyVLM.add_asgi_middleware(Gate)
