"""Issue 11, item 1: signed webhooks however their bytes arrive, against a real worker.

One `retail-sync worker` process (header time 1.5 s, body time 2 s, the default 512 KiB body
limit) serves the real webhook; a raw socket client (retail_sync.raw_http) writes the bytes:
split across TCP writes with pauses, chunked in 1, 2 and many chunks, exactly at the limit, one
byte over it chunked, 20 MiB chunked, trickling one byte every 0.5 s, slow headers. Every
accepted order must reach the ERP exactly once, and the worker must stay healthy.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from retail_sync import raw_http
from retail_sync.chaos_fragmented import shopify_delivery
from retail_sync.simulators.erpnext.simulator import ErpSimConfig
from retail_sync.simulators.shopify.simulator import ShopifyOrderFactory
from retail_sync.stack import Stack, WorkerProcess
from tests.integration.helpers import GROUP_TIMINGS_ENV, SECRET, TEARDOWN_STOP_TIMEOUT_S, eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

HEADER_TIMEOUT_S = 1.5
BODY_TIMEOUT_S = 2.0
LIMIT = 512 * 1024  # RETAIL_SYNC_WEBHOOK_MAX_BODY_BYTES default
SMALL = 9000  # an ordinary order padded to this size (the simulator's orders are 4.3-6.9 kB)
PATH = "/webhooks/shopify/orders/create"


class World:
    def __init__(self, stack: Stack, worker: WorkerProcess) -> None:
        self.stack, self.worker = stack, worker
        self.port = worker.ingress_port  # the webhook's listener
        self.admin_port = worker.port
        self.factory = ShopifyOrderFactory()

    def delivery(self, size: int | None = None) -> tuple[str, bytes, dict[str, str]]:
        return shopify_delivery(self.factory, size, SECRET)

    async def send(self, plan: raw_http.Plan, **kw: float) -> raw_http.RawAnswer:
        return await raw_http.send("127.0.0.1", self.port, plan, **kw)

    async def send_admin(self, plan: raw_http.Plan, **kw: float) -> raw_http.RawAnswer:
        return await raw_http.send("127.0.0.1", self.admin_port, plan, **kw)

    async def in_erp_once(self, *keys: str) -> None:
        assert self.stack.erp is not None

        def counts() -> Counter[str]:
            return Counter(s.doc["po_no"] for s in self.stack.erp.orders.values())  # type: ignore[union-attr]
        await eventually(lambda: all(counts()[k] >= 1 for k in keys), timeout_s=60)
        assert all(counts()[k] == 1 for k in keys), {k: counts()[k] for k in keys}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(broker_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
                ) -> AsyncIterator[World]:
    import os

    env = {"RETAIL_SYNC_REDIS_URL": redis_url,
           "RETAIL_SYNC_WEB_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
           "RETAIL_SYNC_WEB_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S), **GROUP_TIMINGS_ENV}
    async with Stack(broker_url=broker_url, workdir=tmp_path_factory.mktemp("framing"),
                     erp_config=ErpSimConfig(), env=env, stop_timeout_s=TEARDOWN_STOP_TIMEOUT_S,
                     tansu=not os.environ.get("RETAIL_SYNC_TEST_BROKER_URL")) as stack:
        worker = await stack.start_worker()
        yield World(stack, worker)
        status, health = await worker.get_json("/health")
        assert worker.alive() and status == 200, health


async def test_a_body_in_two_writes_200_ms_apart_is_accepted_every_time(world: World) -> None:
    keys = []
    for _ in range(5):
        key, body, hdrs = world.delivery(SMALL)
        first, second = raw_http.split(body, 2)
        answer = await world.send([raw_http.head(PATH, hdrs, content_length=len(body)) + first,
                                   0.2, second])
        assert (answer.status, (answer.json() or {}).get("status")) == (200, "accepted"), answer
        keys.append(key)
    await world.in_erp_once(*keys)


@pytest.mark.parametrize("chunks", [1, 2, 64])
async def test_chunked_bodies_are_accepted(world: World, chunks: int) -> None:
    key, body, hdrs = world.delivery(SMALL)
    answer = await world.send([raw_http.head(PATH, hdrs, chunked=True),
                               *raw_http.chunked_body(raw_http.split(body, chunks),
                                                      0.2 if chunks < 5 else 0.0)])
    assert (answer.status, (answer.json() or {}).get("status")) == (200, "accepted"), answer
    await world.in_erp_once(key)


@pytest.mark.parametrize(("size", "chunked"), [(200_000, False), (LIMIT, False), (LIMIT, True)])
async def test_large_bodies_up_to_exactly_the_limit_are_accepted(world: World, size: int,
                                                                 chunked: bool) -> None:
    key, body, hdrs = world.delivery(size)
    if chunked:
        plan = [raw_http.head(PATH, hdrs, chunked=True),
                *raw_http.chunked_body(raw_http.split(body, 9), 0.05)]
    else:
        plan = [raw_http.head(PATH, hdrs, content_length=size),
                *(p for part in raw_http.split(body, 4) for p in (part, 0.05))]
    answer = await world.send(plan)
    assert (answer.status, (answer.json() or {}).get("status")) == (200, "accepted"), answer
    await world.in_erp_once(key)


async def test_one_byte_over_the_limit_chunked_is_413(world: World) -> None:
    _, body, hdrs = world.delivery(LIMIT + 1)
    answer = await world.send([raw_http.head(PATH, hdrs, chunked=True),
                               *raw_http.chunked_body(raw_http.split(body, 9), 0.05)])
    assert (answer.status, answer.json()["status"]) == (413, "too_large"), answer  # type: ignore[index]
    assert answer.closed


async def test_20_mib_chunked_is_413_before_its_end(world: World) -> None:
    _, _, hdrs = world.delivery(SMALL)
    piece = raw_http.chunk(b" " * 65536)

    def plan():
        yield raw_http.head(PATH, hdrs, chunked=True)
        for _ in range(20 * 16):
            yield piece
            yield 0.001
        yield raw_http.chunk(b"")

    answer = await world.send(plan())
    assert answer.status == 413, answer
    assert not answer.plan_done and answer.sent < 4 * 1024 * 1024, answer.sent
    assert answer.closed


async def test_a_trickling_body_is_dropped_after_the_body_time(world: World) -> None:
    _, body, hdrs = world.delivery(SMALL)
    plan: list[bytes | float] = [raw_http.head(PATH, hdrs, content_length=len(body))]
    for byte in body[:60]:  # one byte every 0.5 s: 30 s unless dropped
        plan += [bytes([byte]), 0.5]
    started = time.monotonic()
    answer = await world.send(plan)
    took = time.monotonic() - started
    assert answer.status in (408, None) and answer.closed and not answer.plan_done, answer
    assert BODY_TIMEOUT_S - 0.1 <= took < BODY_TIMEOUT_S + 4.0, took


async def test_slow_headers_are_dropped_after_the_header_time(world: World) -> None:
    _, body, hdrs = world.delivery(SMALL)
    plan: list[bytes | float] = []
    for byte in raw_http.head(PATH, hdrs, content_length=len(body))[:60]:
        plan += [bytes([byte]), 0.3]
    started = time.monotonic()
    answer = await world.send(plan)
    took = time.monotonic() - started
    assert answer.status in (408, None) and answer.closed and not answer.plan_done, answer
    assert HEADER_TIMEOUT_S - 0.1 <= took < HEADER_TIMEOUT_S + 4.0, took


async def test_admin_json_bodies_are_read_whole_too(world: World) -> None:
    """The cancel endpoint's JSON body (``_json_body``), chunked in two pieces 200 ms apart,
    is read whole; over its 64 KiB limit it is 413."""
    key, body, hdrs = world.delivery(SMALL)
    assert (await world.send([raw_http.head(PATH, hdrs, content_length=len(body)) + body])
            ).status == 200
    await world.in_erp_once(key)
    path = f"/orders/{key}/cancel"
    json_hdrs = {"Content-Type": "application/json", **world.stack.admin_headers("operator")}
    reason = b'{"reason": "' + b"r" * 2000 + b'"}'
    answer = await world.send_admin([raw_http.head(path, json_hdrs, chunked=True),
                               *raw_http.chunked_body(raw_http.split(reason, 2), 0.2)])
    assert answer.status == 202, answer
    big = b'{"reason": "' + b"r" * (64 * 1024) + b'"}'
    answer = await world.send_admin([raw_http.head(path, json_hdrs, chunked=True),
                               *raw_http.chunked_body(raw_http.split(big, 4), 0.05)])
    assert answer.status == 413 and answer.json()["outcome"] == "too_large", answer  # type: ignore[index]
    assert answer.closed
