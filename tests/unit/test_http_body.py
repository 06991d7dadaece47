"""retail_sync.http_body on a real aiohttp server (GuardedAppRunner on a TCP port), driven by a
raw socket client (retail_sync.raw_http): the whole body whatever its framing and TCP split,
413 as soon as the limit is passed, 408 for a trickling body, slow headers dropped.

The handler here verifies a Shopify HMAC over what read_body returns, as the webhook does; the
same cases against the real worker's webhook are in tests/integration/test_webhook_framing.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from retail_sync import raw_http
from retail_sync.broker import free_port
from retail_sync.connectors.shopify.inbound import verify_hmac
from retail_sync.http_body import BodyRejected, GuardedAppRunner, read_body
from retail_sync.simulators.shopify.simulator import ShopifyOrderFactory, sign

SECRET = "hush"
LIMIT = 4096
BODY_TIMEOUT_S = 1.5
HEADER_TIMEOUT_S = 1.0
PATH = "/hook"


async def hook(request: web.Request) -> web.Response:
    try:
        body = await read_body(request, int(request.query.get("limit", LIMIT)))
    except BodyRejected as exc:
        return web.json_response({"status": exc.outcome, "message": exc.detail}, status=exc.code)
    if not verify_hmac(body, request.headers.get("X-Shopify-Hmac-Sha256"), SECRET):
        return web.json_response({"status": "bad_signature", "length": len(body)}, status=401)
    return web.json_response({"status": "accepted", "length": len(body)})


@pytest.fixture
async def server() -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_post(PATH, hook)
    app.router.add_get("/ping", lambda request: web.Response(text="pong"))
    runner = GuardedAppRunner(app, access_log=None, header_timeout_s=HEADER_TIMEOUT_S,
                              body_timeout_s=BODY_TIMEOUT_S)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port
    finally:
        await runner.cleanup()


def signed(size: int) -> tuple[bytes, dict[str, str]]:
    """A signed Shopify order padded with a note to exactly ``size`` bytes of JSON."""
    order = ShopifyOrderFactory(seed=size).order()
    order["note"] = ""
    # the signature covers any bytes: drop the order's largest fields until it fits the size
    while len(json.dumps(order).encode()) > size and len(order) > 2:
        largest = max((k for k in order if k not in ("id", "note")),
                      key=lambda k: len(json.dumps(order[k])))
        del order[largest]
    bare = len(json.dumps(order).encode())
    assert size >= bare, size
    order["note"] = "x" * (size - bare)
    body = json.dumps(order).encode()
    assert len(body) == size
    return body, {"Content-Type": "application/json", "X-Shopify-Hmac-Sha256": sign(body, SECRET)}


async def post(port: int, plan: raw_http.Plan, **kw: float) -> raw_http.RawAnswer:
    return await raw_http.send("127.0.0.1", port, plan, **kw)


async def test_body_split_across_writes_with_pauses_is_read_whole(server: int) -> None:
    body, hdrs = signed(3500)
    first, second = raw_http.split(body, 2)
    answer = await post(server, [raw_http.head(PATH, hdrs, content_length=len(body)) + first,
                                 0.2, second])
    assert (answer.status, answer.json()) == (200, {"status": "accepted", "length": 3500})


async def test_headers_and_body_in_many_small_writes(server: int) -> None:
    body, hdrs = signed(3500)
    plan: list[bytes | float] = []
    for piece in raw_http.split(raw_http.head(PATH, hdrs, content_length=len(body)) + body, 40):
        plan += [piece, 0.005]
    assert (await post(server, plan)).status == 200


@pytest.mark.parametrize("chunks", [1, 2, 7, 300])
async def test_chunked_bodies_are_read_whole(server: int, chunks: int) -> None:
    body, hdrs = signed(3500)
    plan = [raw_http.head(PATH, hdrs, chunked=True),
            *raw_http.chunked_body(raw_http.split(body, chunks), pause_s=0.01 if chunks < 10 else 0)]
    answer = await post(server, plan)
    assert (answer.status, answer.json()) == (200, {"status": "accepted", "length": 3500})


@pytest.mark.parametrize("chunked", [False, True])
async def test_exactly_at_the_limit_is_accepted(server: int, chunked: bool) -> None:
    body, hdrs = signed(LIMIT)
    if chunked:
        plan = [raw_http.head(PATH, hdrs, chunked=True),
                *raw_http.chunked_body(raw_http.split(body, 3), 0.05)]
    else:
        plan = [raw_http.head(PATH, hdrs, content_length=LIMIT) + body]
    assert (await post(server, plan)).status == 200


async def test_one_byte_over_the_limit_chunked_is_413(server: int) -> None:
    body, hdrs = signed(LIMIT + 1)
    plan = [raw_http.head(PATH, hdrs, chunked=True),
            *raw_http.chunked_body(raw_http.split(body, 3), 0.05)]
    answer = await post(server, plan)
    assert answer.status == 413 and answer.json()["status"] == "too_large"
    assert answer.headers.get("connection") == "close" and answer.closed


async def test_content_length_over_the_limit_is_413_before_the_body(server: int) -> None:
    _, hdrs = signed(LIMIT)
    answer = await post(server, [raw_http.head(PATH, hdrs, content_length=LIMIT + 1), 5.0,
                                 b"x" * (LIMIT + 1)])
    assert answer.status == 413 and answer.sent < LIMIT and answer.elapsed_s < 4.0


async def test_20_mib_chunked_is_413_long_before_its_end(server: int) -> None:
    _, hdrs = signed(LIMIT)
    piece = raw_http.chunk(b"x" * 65536)

    def plan():
        yield raw_http.head(PATH, hdrs, chunked=True)
        for _ in range(20 * 16):  # 20 MiB in 64 KiB chunks, a short pause every 1 MiB
            yield piece
            yield 0.001
        yield raw_http.chunk(b"")

    answer = await post(server, plan())
    assert answer.status == 413, answer
    assert not answer.plan_done and answer.sent < 4 * 1024 * 1024, answer.sent
    assert answer.closed


@pytest.mark.parametrize("size", [200_000, 512 * 1024])
async def test_large_valid_bodies_are_accepted_when_the_limit_allows(server: int, size: int) -> None:
    body, hdrs = signed(size)
    path = f"{PATH}?limit={512 * 1024}"
    for plan in ([raw_http.head(path, hdrs, content_length=size)] +
                 [p for part in raw_http.split(body, 8) for p in (part, 0.02)],
                 [raw_http.head(path, hdrs, chunked=True),
                  *raw_http.chunked_body(raw_http.split(body, 50))]):
        answer = await post(server, plan)
        assert (answer.status, answer.json()) == (200, {"status": "accepted", "length": size})


async def test_broken_chunk_framing_is_400(server: int) -> None:
    body, hdrs = signed(3500)
    answer = await post(server, [raw_http.head(PATH, hdrs, chunked=True), raw_http.chunk(body[:100]),
                                 0.1, b"zz\r\n" + body[100:] + b"\r\n0\r\n\r\n"])
    assert answer.status == 400 and answer.closed, answer
    assert answer.json()["status"] == "bad_framing"  # type: ignore[index]


async def test_a_trickling_body_is_408_after_the_body_time(server: int) -> None:
    body, hdrs = signed(3500)
    plan: list[bytes | float] = [raw_http.head(PATH, hdrs, content_length=len(body))]
    for byte in body[:60]:  # 1 byte every 0.5 s: 30 s if nobody stopped it
        plan += [bytes([byte]), 0.5]
    started = time.monotonic()
    answer = await post(server, plan)
    took = time.monotonic() - started
    assert answer.status == 408 and answer.json()["status"] == "body_timeout"
    assert answer.closed and not answer.plan_done
    assert BODY_TIMEOUT_S - 0.1 <= took < BODY_TIMEOUT_S + 3.0, took


async def test_slow_headers_are_dropped_after_the_header_time(server: int) -> None:
    body, hdrs = signed(3500)
    plan: list[bytes | float] = []
    for byte in raw_http.head(PATH, hdrs, content_length=len(body))[:60]:
        plan += [bytes([byte]), 0.3]
    started = time.monotonic()
    answer = await post(server, plan)
    took = time.monotonic() - started
    assert answer.closed and not answer.plan_done
    assert answer.status in (408, None)
    assert HEADER_TIMEOUT_S - 0.1 <= took < HEADER_TIMEOUT_S + 3.0, took


async def test_an_idle_connection_is_dropped_after_the_header_time(server: int) -> None:
    answer = await post(server, [10.0])
    assert answer.closed and answer.status == 408 and answer.elapsed_s < HEADER_TIMEOUT_S + 3.0


async def test_kept_alive_connection_serves_requests_after_long_ones(server: int) -> None:
    """The header time is per request: a body that takes longer than it, then a second request
    on the same connection after a pause, are both answered."""
    body, hdrs = signed(3500)
    first, second = raw_http.split(body, 2)
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    try:
        writer.write(raw_http.head(PATH, hdrs, content_length=len(body)) + first)
        await asyncio.sleep(HEADER_TIMEOUT_S + 0.3)
        writer.write(second)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        await asyncio.sleep(HEADER_TIMEOUT_S / 2)
        writer.write(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
    finally:
        writer.close()


def test_faust_web_idle_keepalive_is_bounded() -> None:
    """aiohttp keeps an idle connection 3630 s by default; the worker's runner bounds it."""
    import faust

    from retail_sync.http_body import IDLE_KEEPALIVE_S, guard_faust_web

    app = faust.App("keepalive-test", broker="memory://", autodiscover=False)
    guard_faust_web(app, header_timeout_s=5, body_timeout_s=5)
    runner = app.web._runner
    assert isinstance(runner, GuardedAppRunner)
    assert runner._kwargs["keepalive_timeout"] == IDLE_KEEPALIVE_S < 3630
