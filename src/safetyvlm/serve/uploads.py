"""The request body at the HTTP edge (`Gate` in service.py), as plain ASGI: read it within a size and a
time bound, and answer a refusal so that every client can read it.

Why a refusal lingers: a server that answers before it has read the body, then closes, leaves the unread
bytes in its socket; the kernel answers them with a reset, and the reset discards the answer that the
client (still writing) has not read yet: Python's urllib sees "Broken pipe" / "Connection reset" instead
of the 413 or 401. So, as nginx's "lingering close" and RFC 9112 section 9.6 have it, the refusal is sent
in full with `Connection: close`, the rest of the body is read and thrown away (bounded in bytes and
seconds; one receive buffer at a time, so memory stays flat), and only then is the response ended, which
makes uvicorn close the connection. A client that sent `Expect: 100-continue` has sent no body yet:
uvicorn sends "100 Continue" only on the app's first receive(), so a refusal before it is answered at
once and the connection closed without waiting for a body that will not come.
"""

from __future__ import annotations

import asyncio

CLOSE = (b"connection", b"close")


class BodyTooLarge(Exception):
    """More body arrived than the limit (a chunked upload has no Content-Length to refuse up front)."""


class BodyTooSlow(Exception):
    """The body did not arrive in full within its time bound (a trickling sender)."""


class ClientGone(Exception):
    """The client disconnected before its body arrived in full."""


def has_body(headers: dict) -> bool:
    """Whether the request announces a body (`headers`: lower-case names, as Gate builds them)."""
    length = headers.get("content-length", "")
    return "transfer-encoding" in headers or (length.isdigit() and int(length) > 0)


def expects_continue(headers: dict) -> bool:
    return headers.get("expect", "").strip().lower() == "100-continue"


async def receive_body(receive, limit: int, timeout_s: float) -> bytes:
    """The whole body, or BodyTooLarge past `limit` bytes, BodyTooSlow after `timeout_s` seconds in all,
    ClientGone on a disconnect."""
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone()
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge()
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
    except TimeoutError:
        raise BodyTooSlow() from None


def replay(body: bytes, receive):
    """A receive() that yields the already-read body once, then hands over to the real one (which from
    then on only reports the disconnect)."""
    pending = [body]

    async def again():
        if pending:
            return {"type": "http.request", "body": pending.pop(), "more_body": False}
        return await receive()

    return again


async def linger(receive, max_bytes: int, max_s: float) -> int:
    """Read and discard the rest of the body until it ends, the client leaves, or `max_bytes` / `max_s`
    are reached; the number of bytes discarded."""
    discarded = 0
    if max_s <= 0:
        return discarded
    try:
        async with asyncio.timeout(max_s):
            while discarded <= max_bytes:
                message = await receive()
                if message["type"] != "http.request":
                    break
                discarded += len(message.get("body", b""))
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        pass
    return discarded


async def answer_and_close(response, send, receive, *, unread_body: bool, linger_bytes: int,
                           linger_s: float) -> int:
    """Send a complete refusal (a starlette Response) with `Connection: close`; when part of the body is
    still unread, linger on it before ending the response; the number of bytes discarded."""
    headers = [h for h in response.raw_headers if h[0].lower() != b"connection"] + [CLOSE]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    # every byte of the answer goes out now (Content-Length frames it), so a client that reads while it
    # writes has it at once; the response ends, and the connection closes, after the linger
    await send({"type": "http.response.body", "body": response.body, "more_body": True})
    discarded = await linger(receive, linger_bytes, linger_s) if unread_body else 0
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    return discarded
