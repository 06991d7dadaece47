"""Small helpers shared by the integration tests."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from retail_sync.simulators.erpnext.simulator import ErpSimConfig
from retail_sync.simulators.shopify.simulator import ShopifyOrderFactory, sign
from retail_sync.stack import Stack

SECRET = "shpss_demo_secret"  # the worker's default RETAIL_SYNC_SHOPIFY_WEBHOOK_SECRET

#: The consumer-group timings of the tests' workers. Tansu holds every JoinGroup for the group's
#: whole rebalance timeout, even a lone worker's (the default 6 s; 2 s is its floor), so each
#: worker start, restart and stop cost a 6 s rebalance; a SIGKILLed worker's partitions go to the
#: others once its session times out (default 10 s). Same rebalances, same take-overs, sooner.
GROUP_TIMINGS_ENV = {
    "RETAIL_SYNC_BROKER_REBALANCE_TIMEOUT_S": "2",
    "RETAIL_SYNC_BROKER_SESSION_TIMEOUT_S": "6",
    "RETAIL_SYNC_BROKER_HEARTBEAT_INTERVAL_S": "0.5",
}
#: How long a test's teardown waits for its workers to stop (SIGTERM) before it kills them: not
#: at all. A teardown checks nothing, and a graceful stop took ~1.7 s a test (30 s when the worker
#: waited on an unreachable broker or marketplace); graceful stops are tested where they matter
#: (test_stop_mid_load, test_order_path's graceful restart, test_cli_sigterm).
TEARDOWN_STOP_TIMEOUT_S = 0.0


async def eventually(check: Callable[[], Any], timeout_s: float = 30.0, every: float = 0.2) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy; fail with its last value."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"condition not met within {timeout_s}s (last value: {last!r})")


def headers(body: bytes, *, webhook_id: str | None = None, secret: str = SECRET,
            topic: str = "orders/create") -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Hmac-Sha256": sign(body, secret),
        "X-Shopify-Shop-Domain": "test-shop.myshopify.com",
        "X-Shopify-API-Version": "2024-04",
        "X-Shopify-Webhook-Id": webhook_id or str(uuid.uuid4()),
    }


async def post_webhook(url: str, body: bytes, hdrs: dict[str, str],
                       path: str = "/webhooks/shopify/orders/create") -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, \
            session.post(url + path, data=body, headers=hdrs) as resp:
        return resp.status, await resp.json(content_type=None)


def order_body(factory: ShopifyOrderFactory, **changes: Any) -> tuple[dict[str, Any], bytes]:
    order = {**factory.order(), **changes}
    return order, json.dumps(order).encode()


def stock_from_erp(erp: Any, sku: str, *, safety: int = 0) -> dict[str, int]:
    """What the stock table must show for ``sku`` once nothing is in flight, recomputed from the
    ERP's bins alone (every warehouse sellable, the worker's default): on hand is the ERP's
    ``actual_qty``, nothing is held by open or not-yet-covered committed reservations (the ERP's
    ``reserved_qty`` holds every confirmed sales order), and free is what the ERP has unreserved."""
    bins = [b for b in erp.bins() if b["item_code"] == sku]
    actual = sum(int(b["actual_qty"]) for b in bins)
    reserved = sum(int(b["reserved_qty"]) for b in bins)
    return {"on_hand": actual, "erp_reserved": reserved, "erp_available": actual - reserved,
            "reserved_open": 0, "reserved_committed_pending_erp": 0,
            "free": max(0, actual - reserved - safety)}


async def stock_agrees_with_erp(worker: Any, erp: Any, skus: list[str],
                                timeout_s: float = 60.0) -> dict[str, dict[str, Any]]:
    """Wait until the worker's ``/inventory/{sku}`` of every SKU equals ``stock_from_erp``;
    answers the views. Fails with each SKU's differences (worker, recomputed from the ERP)."""
    deadline = time.monotonic() + timeout_s
    while True:
        views: dict[str, dict[str, Any]] = {}
        diffs: dict[str, Any] = {}
        for sku in skus:
            status, view = await worker.get_json(f"/inventory/{sku}")
            expected = stock_from_erp(erp, sku)
            if status != 200:
                diffs[sku] = {"status": (status, 200)}
                continue
            views[sku] = view
            wrong = {k: (view.get(k), v) for k, v in expected.items() if view.get(k) != v}
            if wrong:
                diffs[sku] = wrong
        if not diffs:
            return views
        if time.monotonic() >= deadline:
            raise AssertionError(f"stock table disagrees with the ERP after {timeout_s:.0f}s "
                                 f"(field: (worker, recomputed from the ERP)): {diffs}")
        await asyncio.sleep(0.5)


async def all_assigned(*workers: Any) -> bool:
    """Every worker is up and holds partitions (the group has settled)."""
    for worker in workers:
        status, health = await worker.get_json("/health")
        if status != 200 or health["assigned_partitions"] == 0:
            return False
    return True


def child_pids(pid: int) -> list[int]:
    """The direct children of ``pid`` (Linux /proc), across its threads."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def pid_alive(pid: int) -> bool:
    """``pid`` runs (a zombie is dead, waiting for its parent to collect it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def where_orders_stopped(stack: Any, worker: Any, keys: set[str] | list[str],
                               raw: list[Any] | None = None) -> str:
    """Where orders that did not finish stopped, for a failure message: their orders-raw records
    (``raw``: already read, else read now), the group's committed offsets against the topics'
    true ends, each hop's records that name them (stock-events is keyed by SKU: its batches are
    searched by value), their order-state changelog records, and their states with timelines.
    A diagnosis only: a failure to read is written down, never raised."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from retail_sync.stack import read_topic
    from retail_sync.tansu_compat import true_end_offsets

    wanted = set(keys)
    lines = []
    try:
        if raw is None:
            raw = await stack.read_topic("orders-raw", timeout_s=30)
        where = [(r.key.decode(), r.partition, r.offset) for r in raw
                 if r.key is not None and r.key.decode() in wanted]
        lines.append(f"on orders-raw at {sorted(where)[:10]}")
    except Exception as exc:  # noqa: BLE001 - a diagnosis, never the failure itself
        lines.append(f"orders-raw unreadable: {exc!r}")
    topics = ["orders-raw", "order-events", "stock-events", "erp-requests"]
    # the group's committed offsets (OffsetFetch: this consumer never joins the group)
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.bootstrap, group_id=stack.app_id,
                                enable_auto_commit=False)
    try:
        await consumer.start()
        tps = [TopicPartition(stack.topic(t), p) for t in topics for p in range(stack.partitions)]
        ends = await true_end_offsets(stack.bootstrap, await consumer.end_offsets(tps))
        begins = await consumer.beginning_offsets(tps)  # the broker's earliest (a reset's)
        for tp in tps:
            lines.append(f"{tp.topic.split('.', 1)[1]}[{tp.partition}] committed "
                         f"{await consumer.committed(tp)} begins {begins.get(tp)} "
                         f"end {ends.get(tp)}")
    except Exception as exc:  # noqa: BLE001
        lines.append(f"offsets unreadable: {exc!r}")
    finally:
        await consumer.stop()
    dump = Path(stack.workdir) / "topics-dump.jsonl"  # every hop's records, for a post-mortem
    with dump.open("w") as out:
        for name in topics:
            try:  # orders-raw was read above
                records = raw if name == "orders-raw" and raw is not None else \
                    await stack.read_topic(name, timeout_s=30)
            except Exception as exc:  # noqa: BLE001
                lines.append(f"{name} unreadable: {exc!r}")
                continue
            for r in records:
                out.write(json.dumps({
                    "topic": name, "partition": r.partition, "offset": r.offset,
                    "timestamp": r.timestamp, "key": (r.key or b"").decode(errors="replace"),
                    "value": (r.value or b"").decode(errors="replace")[:2000]}) + "\n")
            if name == "orders-raw":
                continue
            hits = [(r.partition, r.offset, r.value[:160]) for r in records
                    if any(k.encode() in r.value for k in wanted)]
            lines.append(f"{name}: {len(records)} records, {len(hits)} for them {hits[:8]}")
    lines.append(f"every hop's records: {dump}")
    try:
        changelog = await read_topic(stack.bootstrap, f"{stack.app_id}-order-state-changelog", 30)
        writes = [(r.key.decode(), r.partition, r.offset) for r in changelog
                  if r.key is not None and r.key.decode() in wanted]
        lines.append(f"order-state changelog: {len(changelog)} records, for them "
                     f"{sorted(writes)[:12]}")
    except Exception as exc:  # noqa: BLE001
        lines.append(f"order-state changelog unreadable: {exc!r}")
    try:
        lines.append(f"health {await worker.get_json('/health')}")
        for key in sorted(wanted)[:3]:
            status, state = await worker.get_json(f"/orders/{key}")
            timeline = [(t.get("event"), t.get("at")) for t in state.get("timeline", [])] \
                if isinstance(state, dict) else None
            lines.append(f"{key}: {status} {str(state)[:400]} timeline {timeline}")
    except Exception as exc:  # noqa: BLE001
        lines.append(f"worker unreadable: {exc!r}")
    return "\n".join(lines)


@asynccontextmanager
async def stack_on(broker_url: str, redis_url: str, workdir: Path,
                   **env: str) -> AsyncIterator[Stack]:
    """A stack on a broker of the test's own (one it kills or cuts off: Tansu), with the test
    Redis, the tests' group timings and ``env`` (RETAIL_SYNC_* settings) for its processes."""
    async with Stack(broker_url=broker_url, workdir=workdir, erp_config=ErpSimConfig(),
                     tansu=True, env={"RETAIL_SYNC_REDIS_URL": redis_url, **env,
                                      **GROUP_TIMINGS_ENV},
                     stop_timeout_s=TEARDOWN_STOP_TIMEOUT_S) as stack:
        yield stack
