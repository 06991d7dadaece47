"""Request bodies and slow clients at the HTTP front door (docs/ARCHITECTURE.md §5f.1).

Two parts, both independent of any one route so that every listener can use them:

- ``read_body(request, limit)``: the *whole* body, whatever its framing (``Content-Length`` or
  ``Transfer-Encoding: chunked``) and however the bytes are split across TCP segments, or a
  ``BodyRejected``: 413 before reading when ``Content-Length`` is over the limit and as soon as a
  chunked body's running total passes it; 408 when the body is not complete within the body time;
  400 when its framing is broken or the client went away mid-body. (aiohttp's
  ``request.content.read(n)`` answers with what has arrived *so far*, which is how a signed
  webhook split in two writes used to be checked over half its bytes.)
- ``GuardedAppRunner``: an aiohttp ``AppRunner`` whose connections enforce a header time (from
  the connection's first byte, or from the first byte of a later request on a kept-alive
  connection, until its headers are complete; aiohttp has no such timeout of its own), answering
  408 and closing; it also carries the body time ``read_body`` uses, and closes a connection
  right after a rejected body's answer (a FIN after the answer, then at most ``REJECT_LINGER_S``
  of discarding what the client still sends) instead of aiohttp's 10 s of lingering.
  ``guard_faust_web`` puts one in place of the runner Faust's aiohttp driver builds.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError
from aiohttp.web_protocol import RequestHandler, RequestPayloadError, _ErrInfo
from aiohttp.web_server import Server
from faust.web.exceptions import WebError

log = logging.getLogger(__name__)

#: Used by ``read_body`` when a request did not come through a ``GuardedAppRunner``.
DEFAULT_BODY_TIMEOUT_S = 15.0
#: After a rejected body's answer: how long what the client still sends is read and dropped
#: (so that closing does not reset the connection before the client has read the answer).
REJECT_LINGER_S = 2.0
#: Request key ``read_body`` sets when the connection must close after the answer.
CLOSE_AFTER_ANSWER: Any = (web.RequestKey("close_after_answer", bool)
                           if hasattr(web, "RequestKey") else "retail_sync.close_after_answer")


class BodyRejected(WebError):
    """The body cannot be used; ``code`` is the HTTP status to answer, ``outcome`` a short name.

    A Faust ``WebError``: a view that does not catch it answers ``{"error": detail, "outcome":
    outcome}`` with ``code``."""

    outcome = "bad_body"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, outcome=self.outcome)


class BodyTooLarge(BodyRejected):
    code = 413
    outcome = "too_large"


class BodyTimeout(BodyRejected):
    code = 408
    outcome = "body_timeout"


class BodyIncomplete(BodyRejected):
    code = 400
    outcome = "bad_framing"


def body_timeout_of(request: web.BaseRequest) -> float:
    """The body time of the listener the request came in on."""
    return float(getattr(request.protocol, "body_timeout_s", None) or DEFAULT_BODY_TIMEOUT_S)


async def read_body(request: web.BaseRequest, limit: int, timeout_s: float | None = None) -> bytes:
    """The whole raw body, at most ``limit`` bytes, within ``timeout_s`` (default: the
    listener's body time); raises a ``BodyRejected`` and marks the connection to be closed after
    the answer."""
    timeout = timeout_s if timeout_s is not None else body_timeout_of(request)
    if request.content_length is not None and request.content_length > limit:
        raise _rejected(request, BodyTooLarge(f"body exceeds the {limit}-byte limit "
                                              f"(Content-Length {request.content_length})"))
    body = bytearray()
    content = request.content
    try:
        async with asyncio.timeout(timeout):
            while chunk := await content.readany():
                body += chunk
                if len(body) > limit:
                    raise _rejected(request, BodyTooLarge(f"body exceeds the {limit}-byte limit"))
    except TimeoutError:
        raise _rejected(request, BodyTimeout(
            f"body not complete within {timeout:g} s ({len(body)} bytes received)")) from None
    except (HttpProcessingError, RequestPayloadError, ConnectionError) as exc:
        raise _rejected(request, BodyIncomplete(
            f"body incomplete or badly framed after {len(body)} bytes: {exc}")) from None
    return bytes(body)


def _rejected(request: web.BaseRequest, exc: BodyRejected) -> BodyRejected:
    request[CLOSE_AFTER_ANSWER] = True
    return exc


def _timeout_answer(timeout_s: float) -> bytes:
    body = orjson.dumps({"status": "header_timeout",
                         "message": f"request headers not complete within {timeout_s:g} s"})
    return (b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


class GuardedRequestHandler(RequestHandler):
    """aiohttp's connection protocol plus a header deadline and close-after-rejected-body."""

    def __init__(self, manager: Server, *, header_timeout_s: float, body_timeout_s: float,
                 **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.header_timeout_s = header_timeout_s
        self.body_timeout_s = body_timeout_s
        self._header_deadline: asyncio.TimerHandle | None = None
        self._last_payload: Any = None  # the body stream of the newest request whose headers came

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # The first byte after the previous request's body starts the next request's header time.
        if data and self._header_deadline is None and (
                self._last_payload is None or self._last_payload.is_eof()):
            self._arm()
        seen = self._request_count
        super().data_received(data)
        if self._request_count != seen:  # a request's headers are complete, or bytes were bad
            self._disarm()
            message, payload = self._messages[-1] if self._messages else (None, None)
            current = self._last_payload
            if isinstance(message, _ErrInfo) and current is not None and not current.is_eof():
                # aiohttp queues a body's framing error as a next "request" (its 400) and leaves
                # the body being read waiting; fail that read instead, so it answers 400 now
                exc = message.exc
                current.set_exception(exc if isinstance(exc, HttpProcessingError)
                                      else BadHttpMessage(message.message))
            elif payload is not None:
                self._last_payload = payload

    async def finish_response(self, request: web.BaseRequest, resp: web.StreamResponse,
                              start_time: float | None) -> tuple[web.StreamResponse, bool]:
        close = bool(request.get(CLOSE_AFTER_ANSWER))
        if close and not resp.prepared:
            resp.force_close()  # "Connection: close"
        result = await super().finish_response(request, resp, start_time)
        if close:
            self._lingering_time = min(self._lingering_time, REJECT_LINGER_S)
            transport = self.transport
            if transport is not None and not transport.is_closing() and transport.can_write_eof():
                transport.write_eof()  # the answer, then FIN; aiohttp closes after the linger
        return result

    def _arm(self) -> None:
        if self._header_deadline is None and self.header_timeout_s > 0:
            self._header_deadline = self._loop.call_later(self.header_timeout_s,
                                                          self._header_timeout)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _header_timeout(self) -> None:
        self._header_deadline = None
        transport = self.transport
        if transport is None or self._force_close:
            return
        if self._request_in_progress:  # pipelined: finish that answer, take nothing more
            self.close()
            return
        peer = transport.get_extra_info("peername")
        log.info("closing %s: request headers not complete within %g s", peer,
                 self.header_timeout_s)
        transport.write(_timeout_answer(self.header_timeout_s))
        self.force_close()  # transport.close() sends what is buffered first


class GuardedServer(Server):
    """aiohttp's protocol factory, making ``GuardedRequestHandler``s."""

    def __init__(self, handler: Any, *, header_timeout_s: float, body_timeout_s: float,
                 **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.header_timeout_s = header_timeout_s
        self.body_timeout_s = body_timeout_s

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(self, loop=self._loop, header_timeout_s=self.header_timeout_s,
                                     body_timeout_s=self.body_timeout_s, **self._kwargs)


class GuardedAppRunner(web.AppRunner):
    """``AppRunner`` whose server bounds header and body times (seconds; > 0)."""

    def __init__(self, app: web.Application, *, header_timeout_s: float, body_timeout_s: float,
                 **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.header_timeout_s = header_timeout_s
        self.body_timeout_s = body_timeout_s

    async def _make_server(self) -> Server:
        plain = await super()._make_server()  # runs the app's startup, freezes it
        return GuardedServer(plain.request_handler, request_factory=plain.request_factory,
                             handler_cancellation=plain.handler_cancellation, loop=plain._loop,
                             header_timeout_s=self.header_timeout_s,
                             body_timeout_s=self.body_timeout_s, **plain._kwargs)


#: How long an idle kept-alive connection stays open between requests (aiohttp's default is
#: 3630 s, which lets idle clients hold connections for an hour; nginx's default is 75 s).
IDLE_KEEPALIVE_S = 75.0


def guard_faust_web(app: Any, *, header_timeout_s: float, body_timeout_s: float) -> None:
    """Serve a Faust app's web views through a ``GuardedAppRunner``. Call before the worker
    starts: Faust's aiohttp driver builds ``AppRunner(web_app, access_log=None)`` in its
    constructor and uses it only when the server starts (``faust/web/drivers/aiohttp.py``)."""
    driver = app.web
    if not isinstance(getattr(driver, "_runner", None), web.AppRunner):
        raise RuntimeError(f"unexpected Faust web driver {type(driver).__name__}: "
                           "cannot bound header and body times")
    driver._runner = GuardedAppRunner(driver.web_app, access_log=None,
                                      header_timeout_s=header_timeout_s,
                                      body_timeout_s=body_timeout_s,
                                      keepalive_timeout=IDLE_KEEPALIVE_S)


__all__ = [
    "BodyIncomplete",
    "BodyRejected",
    "BodyTimeout",
    "BodyTooLarge",
    "GuardedAppRunner",
    "guard_faust_web",
    "read_body",
]
