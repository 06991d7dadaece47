"""A raw HTTP/1.1 client for framing tests: the bytes, the TCP writes and the pauses between them
are the caller's (split bodies, chunked bodies, trickles, slow headers), and the answer is read
while still sending, so an early 413 or a dropped connection is seen as it happens.

Used by tests/unit/test_http_body.py, tests/integration/test_webhook_framing.py and
`retail-sync chaos webhook-fragmented`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

#: A write plan: bytes are written (one ``write`` + drain each, so one TCP segment or more),
#: a float is a pause in seconds.
Plan = Iterable["bytes | float"]


@dataclass
class RawAnswer:
    status: int | None  # None: no (complete) answer before the connection ended or timed out
    headers: dict[str, str]
    body: bytes
    closed: bool  # the server closed (or reset) the connection
    sent: int  # bytes written before the answer came or the connection broke
    elapsed_s: float  # from connecting to the answer (or the close)
    plan_done: bool  # every write of the plan was made
    error: str | None = None

    def json(self) -> Any:  # the parsed JSON body
        import orjson

        return orjson.loads(self.body) if self.body else None


def head(path: str, headers: Mapping[str, str], *, content_length: int | None = None,
         chunked: bool = False, method: str = "POST", host: str = "127.0.0.1") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (``b""`` is the last chunk)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def split(data: bytes, parts: int) -> list[bytes]:
    """``data`` in ``parts`` pieces of (nearly) equal size, none empty."""
    parts = max(1, min(parts, len(data)))
    size, extra = divmod(len(data), parts)
    out, at = [], 0
    for i in range(parts):
        n = size + (1 if i < extra else 0)
        out.append(data[at:at + n])
        at += n
    return out


def chunked_body(pieces: Iterable[bytes], pause_s: float = 0.0) -> Iterator[bytes | float]:
    """A plan writing each piece as one chunk (pauses between), then the last chunk."""
    for i, piece in enumerate(pieces):
        if i and pause_s:
            yield pause_s
        yield chunk(piece)
    yield chunk(b"")


async def send(host: str, port: int, plan: Plan, *, answer_timeout_s: float = 30.0) -> RawAnswer:
    """Connect, follow ``plan``, stop writing as soon as an answer or a close arrives, and read
    the answer (status, headers, a ``Content-Length`` body) and whether the server then closes."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(host, port)
    answer_task = asyncio.ensure_future(_read_answer(reader))
    sent, plan_done, error = 0, False, None
    try:
        for step in plan:
            if answer_task.done():
                break
            if isinstance(step, int | float):
                await asyncio.wait({answer_task}, timeout=float(step))
                if answer_task.done():
                    break
                continue
            try:
                writer.write(step)
                await writer.drain()
            except (ConnectionError, OSError) as exc:
                error = f"write failed: {exc!r}"
                break
            sent += len(step)
        else:
            plan_done = True
        try:
            status, headers, body, closed = await asyncio.wait_for(answer_task, answer_timeout_s)
        except TimeoutError:
            status, headers, body, closed = None, {}, b"", False
            error = error or f"no answer within {answer_timeout_s:g} s after the plan"
        elapsed = time.monotonic() - started
        if status is not None and not closed:
            closed = await _closes(reader, 0.5)
        return RawAnswer(status, headers, body, closed, sent, elapsed, plan_done, error)
    finally:
        answer_task.cancel()
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _read_answer(reader: asyncio.StreamReader
                       ) -> tuple[int | None, dict[str, str], bytes, bool]:
    """(status, headers, body, closed); status None when the connection ended first."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError, OSError):
        return None, {}, b"", True
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    try:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
        partial = getattr(exc, "partial", b"")
        return status, headers, partial, True
    return status, headers, body, False


async def _closes(reader: asyncio.StreamReader, within_s: float) -> bool:
    """Whether the server closes the connection within ``within_s`` (EOF or reset)."""
    try:
        data = await asyncio.wait_for(reader.read(1), within_s)
    except TimeoutError:
        return False
    except (ConnectionError, OSError):
        return True
    return data == b""


__all__ = ["RawAnswer", "chunk", "chunked_body", "head", "send", "split"]
