"""The BentoML service: `bentoml serve` from the repo root (bentofile.yaml names `SafetyVLM`).

Two services, two kinds of process:

* `SafetyVLM` (the API server, the one the port belongs to) owns HTTP: auth, body limits, decoding and
  refusing bad images, the dashboard, `/analyze` and `/v1/chat/completions`. It never imports torch, so
  a hostile upload is rejected before it costs the model anything.
* `VLMRunner` holds the model. Its `analyze` takes one request; the service's own adaptive batcher
  (`batcher.py`, not BentoML's) merges concurrent requests into one list, so they share a forward pass.

Config: `safetyvlm.serve.config` (env vars / `SAFETYVLM_SERVE_CONFIG`), read when this module is
imported, because the timeouts are decorator arguments.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

import bentoml
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from safetyvlm.kb import load_kb
from safetyvlm.serve.analyzer import Analyzer
from safetyvlm.serve.batcher import Batcher
from safetyvlm.serve.config import MULTIPART_SLACK, load_config
from safetyvlm.serve.images import BadInput, decode_image
from safetyvlm.serve.openai_compat import chat_completion, parse_chat_request
from safetyvlm.serve.openapi import spec
from safetyvlm.serve.uploads import (BodyTooLarge, BodyTooSlow, ClientGone, answer_and_close, expects_continue,
                                     has_body, receive_body, replay)

log = logging.getLogger("safetyvlm.serve")
CONFIG = load_config()
# `bentoml build` imports this module only to read the services: it needs neither a token nor the checks
BUILDING = sys.argv[1:2] in (["build"], ["containerize"])
# Fail closed, at import, so `bentoml serve` (and a pod) exits before it listens: no token while auth is
# on raises MissingToken; a KB without a matching hash manifest raises KBError (docs/serving.md). (A
# failure in a service's __init__ would only make BentoML restart that worker, the server never exiting.)
if not BUILDING:
    CONFIG.api_token()
    if CONFIG.ground or CONFIG.corpus_bound:
        load_kb(verify="require" if CONFIG.kb_verify else "skip")
if not CONFIG.auth:
    log.warning("authentication is OFF (SAFETYVLM_AUTH=off): every route is open; for local use only")
if not CONFIG.kb_verify:
    log.warning("knowledge-base integrity check is OFF (SAFETYVLM_KB_VERIFY=off): development only")

HEALTH_PATHS = frozenset({"/livez", "/readyz", "/healthz"})
CAP_EXEMPT = frozenset({"/metrics"})  # as BentoML's own cap had it: scraping never gets a 429
TOKEN_COOKIE = "safetyvlm_token"
DASHBOARD = Path(__file__).with_name("dashboard.html")

BATCH_SIZE = bentoml.metrics.Histogram(
    name="safetyvlm_batch_size", documentation="images per forward pass (the service's adaptive batcher)",
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64))
REJECTED = bentoml.metrics.Counter(
    name="safetyvlm_rejected_requests_total", documentation="requests refused before the model, by reason",
    labelnames=["reason"])


class Job(BaseModel):
    image: bytes                # already checked by the API server; decoded again here, same limits
    retrieval: bool | None = None
    max_tools: int | None = None


# The API server's BentoML client to this service renews its HTTP session every `runner_connection`
# max_requests calls (default 100) or max_age seconds (300) by closing the old one with its calls still in
# flight: at concurrency 32 about 30 were dropped at once, each resent (the model analysing it twice) or,
# when dropped while its answer was being read (a bare TimeoutError, not retried), answered 503. This
# service is one local process with nothing to rebalance, and the next call reopens a lost connection:
# never renew.
NEVER_RENEW = {"max_requests": 2**62, "max_age": 1e12}  # max_age must be a float (BentoML's schema)


# the model's own timeout is longer than the API server's, so a slow request ends as the API server's
# 504, never as a model-side error
@bentoml.service(name="safetyvlm-model", workers=1, traffic={"timeout": CONFIG.timeout_s + 30},
                 runner_connection=NEVER_RENEW)
class VLMRunner:
    def __init__(self) -> None:
        self.analyzer = Analyzer(CONFIG)
        self.active, self.last_end = 0, 0.0
        # max_batch_size 1 turns batching off: each request its own pass
        self.batcher = Batcher(self.analyze_batch, CONFIG.max_batch_size, CONFIG.batch_wait_ms / 1000)
        # stay up while the API server drains: exit once no batch has run for a second after drain_s
        self.drain = Drain(CONFIG.drain_s + 1, lambda: self.active > 0 or bool(self.batcher.queue)
                           or time.monotonic() - self.last_end < 1,
                           CONFIG.timeout_s + CONFIG.drain_s + 30)
        self.drain.install()

    def __is_ready__(self) -> bool:
        return getattr(self, "analyzer", None) is not None

    @bentoml.api
    async def analyze(self, job: Job) -> dict:
        return await self.batcher.submit(job)

    def analyze_batch(self, jobs: list[Job]) -> list[dict]:
        """One forward pass for the batch the batcher formed (in a worker thread)."""
        BATCH_SIZE.observe(len(jobs))
        self.active += 1
        try:
            return self._isolating(jobs)
        finally:
            self.active -= 1
            self.last_end = time.monotonic()

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
            return [self._fault(jobs[0], e)]

    def _fault(self, job: Job, e: Exception) -> dict:
        """A single image's failure: the input's fault (422) only when the model's processor rejects that
        image; anything else (out of memory, a bug) is the server's (500), logged as an error with an id."""
        rejected = None
        if not isinstance(e, MemoryError) and "OutOfMemory" not in type(e).__name__:
            try:
                image = decode_image(job.image, max_bytes=CONFIG.max_body_bytes, max_pixels=CONFIG.max_pixels)
                rejected = self.analyzer.input_rejected(image)
            except Exception as check:  # noqa: BLE001 - then the fault stays the server's
                log.error("could not re-check the image: %s: %s", type(check).__name__, check)
        if rejected is not None:
            log.warning("the model's processor rejected one image: %s: %s", type(rejected).__name__, rejected)
            return {"error": f"the model could not process this image ({type(rejected).__name__}: {rejected})",
                    "reason": "model_error"}
        error_id = uuid.uuid4().hex[:16]
        log.error("internal error %s in the model process: %s: %s", error_id, type(e).__name__, e, exc_info=e)
        return {"error": f"internal error {error_id}", "reason": "internal_error", "error_id": error_id}

    def _analyze(self, jobs: list[Job]) -> list[dict]:
        images = [decode_image(j.image, max_bytes=CONFIG.max_body_bytes, max_pixels=CONFIG.max_pixels)
                  for j in jobs]
        answers = self.analyzer.analyze(images, [j.retrieval for j in jobs], [j.max_tools for j in jobs])
        return [a.to_dict() for a in answers]

    @bentoml.api
    def info(self) -> dict:
        return self.analyzer.describe()


def error(status: int, message: str, reason: str, headers: dict | None = None, **extra) -> JSONResponse:
    """Every refusal has this shape: {"error": what is wrong, "reason": a stable code} (+ `error_id` on a 500)."""
    REJECTED.labels(reason=reason).inc()
    return JSONResponse({"error": message, "reason": reason, **extra}, status_code=status, headers=headers)


def refusal(e: BadInput) -> JSONResponse:
    extra = {"error_id": e.error_id} if isinstance(e, ServerFault) else {}
    headers = {"Retry-After": "1"} if e.status == 503 else None  # a retryable answer says when
    return error(e.status, str(e), e.reason, headers=headers, **extra)


ACCEPTED_GRACE_S = 0.25  # after the listening socket is shut: time for connections already accepted


class Drain:
    """Graceful stop of one process (docs/serving.md). On SIGTERM the process does not stop accepting at
    once (BentoML's arbiter still holds the listening socket, so connections would queue and then be
    reset): for `drain_s` seconds, and until nothing of its own is in flight, it keeps accepting, answers
    new requests 503 + Retry-After (and /readyz 503), finishes what it had accepted, then hands the signal
    to uvicorn, which exits. In Kubernetes the preStop pause comes first, so the endpoint is gone by then."""

    def __init__(self, drain_s: float, busy, limit_s: float, close_listeners: bool = False):
        self.drain_s, self.busy, self.limit_s, self.close_listeners = drain_s, busy, limit_s, close_listeners
        self.since: float | None = None
        self.previous = None

    @property
    def draining(self) -> bool:
        return self.since is not None

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            log.warning("graceful drain not installed: not on the main thread")
            return
        self.previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._on_term)

    def _on_term(self, sig, frame) -> None:
        if self.draining:
            return
        self.since = time.monotonic()
        log.warning("SIGTERM: draining (pid %d): new requests get 503 + Retry-After; finishing the accepted ones",
                 os.getpid())
        threading.Thread(target=self._finish, args=(sig,), daemon=True).start()

    def _finish(self, sig) -> None:
        while True:
            waited = time.monotonic() - self.since
            if (waited >= self.drain_s and not self.busy()) or waited >= self.limit_s:
                break
            time.sleep(0.05)
        server = getattr(self.previous, "__self__", None)  # uvicorn's Server, whose handle_exit we wrapped
        if self.close_listeners and server is not None:
            # the listening socket is shared with BentoML's arbiter, which closes it only after every worker
            # has exited: connections queued meanwhile would be reset. Shutting it down here (it is one
            # socket in every process) makes a late client's connect fail at once instead (refused).
            for srv in getattr(server, "servers", []):
                for sock in srv.sockets:
                    try:
                        socket.socket(fileno=os.dup(sock.fileno())).shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
            # a connection accepted just before that still has its request to answer (503 draining): exiting
            # now would close it with the request unread, which the kernel turns into a reset
            time.sleep(ACCEPTED_GRACE_S)
            while self.busy() and time.monotonic() - self.since < self.limit_s:
                time.sleep(0.05)
        log.warning("drained after %.1f s (pid %d): stopping", time.monotonic() - self.since, os.getpid())
        if server is not None:
            server.handle_exit(sig, None)
            # nothing of ours is in flight any more: skip uvicorn's wait on idle keep-alive connections and
            # BentoML's client cleanup, which were seen to hold the API worker ~2 minutes after SIGTERM
            server.force_exit = True
        else:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)


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


class ServerFault(BadInput):
    """A fault of the server, not of the input: 500 with the id its log line carries."""

    def __init__(self, error_id: str):
        super().__init__(500, f"internal error {error_id}: the server failed on this request, not because "
                              f"of its input; report the id", "internal_error")
        self.error_id = error_id


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
                answer = await cls.service.runner.to_async.analyze(job)
                break
            except Exception as e:  # the model process is down, restarting or overloaded: retryable
                if attempt + 1 < MODEL_CALL_ATTEMPTS and _dropped_connection(e):
                    # a pooled connection to the model process can be gone (it restarted, or closed an idle
                    # keep-alive just as it was reused); the analysis is idempotent, so send it again
                    log.warning("model call retried after %s", type(e).__name__)
                    await asyncio.sleep(0.05 * (attempt + 1))
                    continue
                log.error("model call failed: %s: %s", type(e).__name__, e)
                raise ModelUnavailable() from None
        if answer.get("reason") == "internal_error":  # a server fault: 500, its id in both logs
            log.error("internal error %s answered 500", answer["error_id"])
            raise ServerFault(answer["error_id"])
        if "error" in answer:  # the model's processor rejected this image alone (see VLMRunner._fault)
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
        return refusal(e)
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
        req = parse_chat_request(await read_body(request, CONFIG.request_body_limit()))
        answer = await Front.analyze(req["image"], req["retrieval"], req["max_tools"])
    except BadInput as e:
        return refusal(e)
    except ClientDisconnect:
        return gone()
    model = req["model"] or "safetyvlm"
    return JSONResponse(chat_completion(answer, model), headers=_answer_headers(answer, t0))


async def models_route(request: Request) -> Response:
    try:
        info = await Front.model_info()
    except BadInput as e:
        return refusal(e)
    return JSONResponse({"object": "list", "data": [
        {"id": "safetyvlm", "object": "model", "created": 0, "owned_by": "safetyvlm", "safetyvlm": info}]})


async def info_route(request: Request) -> Response:
    cfg = {k: v for k, v in CONFIG.to_dict().items() if k != "auth_token_env"}
    try:
        info = await Front.model_info()
    except BadInput as e:
        return refusal(e)
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
    checks, the dashboard at `/` (BentoML claims `/` for its own index page, which a middleware can still
    answer first), and the body: an early 413 on a declared Content-Length beyond the limit, the body read
    in full within `body_timeout_s` (408) before the request takes one of `max_concurrency` slots (429), so
    a trickling upload holds none. A refusal made before the body is read lingers on the rest (uploads.py),
    so that every client reads it instead of a connection reset."""

    def __init__(self, app, config=CONFIG):
        self.app, self.config = app, config
        self.token = None if BUILDING else config.api_token()
        self.inflight = 0
        self.drain = Drain(config.drain_s, lambda: self.inflight > 0, config.timeout_s + config.drain_s,
                           close_listeners=True)
        self.drain.install()
        self.max_declared = config.request_body_limit()
        self.slots = asyncio.Semaphore(config.max_concurrency) if config.max_concurrency else None

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

    async def _refuse(self, resp, headers: dict, receive, send, started_body: bool = False) -> None:
        """Answer `resp` and close; linger on the body when some of it may still be on its way (not when
        the client awaits a 100 Continue it will now never get, so sends none)."""
        unread = has_body(headers) and (started_body or not expects_continue(headers))
        await answer_and_close(resp, send, receive, unread_body=unread, linger_bytes=self.config.linger_bytes,
                               linger_s=self.config.linger_s)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.drain.draining and scope["path"] != "/livez":
            # stopping: refuse new work cleanly (and fail /readyz) while the accepted requests finish
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            resp = error(503, "the service is restarting; retry shortly", "draining", headers={"Retry-After": "1"})
            return await self._refuse(resp, headers, receive, send)
        if scope["path"] in HEALTH_PATHS:
            return await self.app(scope, receive, send)
        self.inflight += 1
        try:
            return await self._gated(scope, receive, send)
        finally:
            self.inflight -= 1

    async def _gated(self, scope, receive, send):
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        is_page = scope["path"] in ("/", "/index.html") and scope["method"] in ("GET", "HEAD")
        if not self._authorized(headers):
            if is_page:  # a browser: the same page asks for the token and keeps it in a SameSite cookie
                resp = HTMLResponse(DASHBOARD.read_text(), status_code=401)
            else:
                resp = error(401, "missing or invalid bearer token (Authorization: Bearer <token>)",
                             "unauthorized", headers={"WWW-Authenticate": "Bearer"})
            return await self._refuse(resp, headers, receive, send)
        if is_page:
            return await HTMLResponse(DASHBOARD.read_text())(scope, receive, send)
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_declared:
            resp = error(413, f"the request body is {length} bytes; the limit is {self.max_declared}",
                         "body_too_large")
            return await self._refuse(resp, headers, receive, send)
        slots = self.slots if scope["path"] not in CAP_EXEMPT else None
        if slots is not None and slots.locked():  # full now: say so before the client sends its body
            return await self._refuse(self._busy(), headers, receive, send)
        if has_body(headers):
            try:
                body = await receive_body(receive, self.max_declared, self.config.body_timeout_s)
            except BodyTooLarge:  # a chunked upload, or one longer than it declared
                resp = error(413, f"the request body is larger than {self.max_declared} bytes", "body_too_large")
                return await self._refuse(resp, headers, receive, send, started_body=True)
            except BodyTooSlow:
                resp = error(408, f"the request body did not arrive in full within {self.config.body_timeout_s} s",
                             "body_timeout")
                return await self._refuse(resp, headers, receive, send, started_body=True)
            except ClientGone:  # nobody to answer; nothing was started
                return await gone()(scope, receive, send)
            receive = replay(body, receive)
            del body
        if slots is None:
            return await self.app(scope, receive, send)
        if slots.locked():  # filled up while this body arrived; it is read, so no linger is needed
            return await self._busy()(scope, receive, send)
        async with slots:
            return await self.app(scope, receive, send)

    def _busy(self) -> JSONResponse:
        return error(429, f"too many requests in flight (limit {self.config.max_concurrency}); retry shortly",
                     "too_many_requests", headers={"Retry-After": "1"})


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
