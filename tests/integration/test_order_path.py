"""The order path end to end: Shopify-style webhook -> Kafka -> Faust worker -> ERP simulator.

Real parts only: the embedded broker, a `retail-sync worker` process, the ERP simulator and the
Shopify simulator as HTTP servers/clients. Each test has its own app id and topics.
"""

from __future__ import annotations

import asyncio
import json

import orjson
import pytest

from retail_sync.simulators.shopify.simulator import ShopifyOrderFactory, ShopifySimConfig, ShopifySimulator
from retail_sync.stack import Stack
from tests.integration.helpers import SECRET, eventually, headers, order_body, post_webhook

pytestmark = pytest.mark.integration


def simulator(stack: Stack, worker_url: str, **config: object) -> ShopifySimulator:
    cfg = ShopifySimConfig(webhook_url=f"{worker_url}/webhooks/shopify/orders/create",
                           secret=SECRET, **config)  # type: ignore[arg-type]
    return ShopifySimulator(cfg)


def erp_po_numbers(stack: Stack) -> list[str]:
    assert stack.erp is not None
    return [stored.doc["po_no"] for stored in stack.erp.orders.values()]


async def exceptions(stack: Stack, kind: str | None = None) -> list[dict]:
    records = [orjson.loads(r.value) for r in await stack.read_topic("sync-exceptions")]
    return [r for r in records if kind is None or r["kind"] == kind]


async def test_n_webhooks_become_exactly_n_erp_orders(stack: Stack) -> None:
    worker = await stack.start_worker()
    shop = simulator(stack, worker.ingress_url, rate_per_s=100, seed=7)
    await shop.send_orders(count=60)
    assert shop.stats()["delivered_2xx"] == 60
    expected = {f"shopify:{oid}" for oid in shop.accepted_order_ids()}
    assert len(expected) == 60

    await eventually(lambda: set(erp_po_numbers(stack)) == expected, timeout_s=60)
    assert stack.erp is not None
    assert sorted(erp_po_numbers(stack)) == sorted(expected)  # no order twice
    assert stack.erp.stats()["orders_created"] == 60

    key = sorted(expected)[0]
    status, state = await worker.get_json(f"/orders/{key}")
    assert status == 200
    erp_name = state["correlation"]["erp_sales_order"]
    assert state["status"] == "erp_confirmed" and erp_name.startswith("SAL-ORD-")
    assert stack.erp.orders[erp_name].doc["po_no"] == key

    for any_id in (erp_name, key.split(":", 1)[1]):
        status, found = await worker.get_json(f"/orders/lookup?id={any_id}")
        assert status == 200
        assert [o["order_key"] for o in found["orders"]] == [key]
    assert (await worker.get_json("/orders/lookup?id=nope"))[0] == 404
    assert "retail_sync_order_to_erp_seconds_count" in await worker.metrics_text()


async def test_same_webhook_twice_makes_one_erp_order(stack: Stack) -> None:
    worker = await stack.start_worker()
    order, body = order_body(ShopifyOrderFactory(seed=11))
    first = headers(body)
    assert (await post_webhook(worker.ingress_url, body, first))[0] == 200
    status, answer = await post_webhook(worker.ingress_url, body, first)  # Shopify retry: same id
    assert status == 200 and answer["status"] == "duplicate"
    # the same order under a new delivery id (another subscription / event) is still one order
    assert (await post_webhook(worker.ingress_url, body, headers(body)))[0] == 200

    key = f"shopify:{order['id']}"
    await eventually(lambda: erp_po_numbers(stack) == [key], timeout_s=30)
    state = await eventually(lambda: _confirmed(worker, key), timeout_s=30)
    assert len(state["correlation"]["delivery_ids"]) == 2
    await asyncio.sleep(1.0)  # give a would-be second post time to show up
    assert erp_po_numbers(stack) == [key]


async def _confirmed(worker, key):
    status, state = await worker.get_json(f"/orders/{key}")
    return state if status == 200 and state["status"] == "erp_confirmed" else None


async def test_bad_signature_is_401_and_writes_nothing(stack: Stack) -> None:
    worker = await stack.start_worker()
    _, body = order_body(ShopifyOrderFactory(seed=12))
    wrong = headers(body, secret="not-the-secret")
    missing = {k: v for k, v in headers(body).items() if k != "X-Shopify-Hmac-Sha256"}
    tampered = headers(body)
    for hdrs, payload in ((wrong, body), (missing, body), (tampered, body + b" ")):
        status, answer = await post_webhook(worker.ingress_url, payload, hdrs)
        assert status == 401 and "X-Shopify-Hmac-Sha256" in answer["message"]
    assert await stack.read_topic("orders-raw") == []
    await asyncio.sleep(1.0)
    assert erp_po_numbers(stack) == []


async def test_bad_input_gets_clear_answers_and_exception_records(stack: Stack) -> None:
    worker = await stack.start_worker()
    factory = ShopifyOrderFactory(seed=13)

    garbage = b'{"id": 1, "line_items": ['
    status, answer = await post_webhook(worker.ingress_url, garbage, headers(garbage))
    assert status == 400 and "not valid JSON" in answer["message"]

    huge = json.dumps({"id": 2, "note": "x" * 600_000}).encode()
    status, answer = await post_webhook(worker.ingress_url, huge, headers(huge))
    assert status == 413 and "limit" in answer["message"]

    unmappable = {**factory.order(), "line_items": []}
    raw = json.dumps(unmappable).encode()
    status, _ = await post_webhook(worker.ingress_url, raw, headers(raw))
    assert status == 200  # received; the problem is ours to record, not the sender's to retry

    wrong_types = {**factory.order(), "currency": 978, "created_at": "yesterday"}
    raw2 = json.dumps(wrong_types).encode()
    assert (await post_webhook(worker.ingress_url, raw2, headers(raw2)))[0] == 200

    mapping = await eventually(lambda: _kinds(stack, "mapping", 2), timeout_s=30)
    reasons = " | ".join(r["reason"] for r in mapping)
    assert "no line_items" in reasons and "currency" in reasons
    # the whole raw message is kept (replayable), its body verbatim
    assert {json.loads(r["payload"])["body"] for r in mapping} == {raw.decode(), raw2.decode()}
    decode = await exceptions(stack, "decode")
    assert [r["payload"] for r in decode] == [garbage.decode()]

    good, body = order_body(factory)  # the worker is still alive and keeps working
    assert (await post_webhook(worker.ingress_url, body, headers(body)))[0] == 200
    await eventually(lambda: erp_po_numbers(stack) == [f"shopify:{good['id']}"], timeout_s=30)
    assert worker.alive()


async def _kinds(stack: Stack, kind: str, n: int):
    found = await exceptions(stack, kind)
    return found if len(found) >= n else None


@pytest.mark.parametrize("how", ["graceful", "sigkill"])
async def test_worker_restart_mid_stream_loses_and_duplicates_nothing(stack: Stack, how: str):
    worker = await stack.start_worker()
    shop = simulator(stack, worker.ingress_url, rate_per_s=40, seed=21, max_attempts=10,
                     retry_backoff_s=0.5, duplicate_rate=0.1)
    sending = asyncio.create_task(shop.send_orders(count=240))
    await eventually(lambda: len(erp_po_numbers(stack)) >= 60, timeout_s=60)
    if how == "sigkill":
        await worker.kill()
        worker.start()
        await worker.wait_ready()
    else:
        await stack.restart(worker)
    stats = await sending
    assert stats["failed_deliveries"] == 0, stats
    expected = {f"shopify:{oid}" for oid in shop.accepted_order_ids()}
    assert len(expected) == 240

    try:
        # generous: this claims nothing is lost, not a recovery time (that is in BENCHMARKS)
        await eventually(lambda: set(erp_po_numbers(stack)) == expected, timeout_s=180)
    except AssertionError:
        raise AssertionError(await _where_they_are(stack, worker, expected)) from None
    assert len(erp_po_numbers(stack)) == len(expected)  # none twice
    assert stack.erp is not None and stack.erp.stats()["orders_created"] == 240
    status, health = await worker.get_json("/health")  # every input partition is being read
    assert status == 200 and health["input_partitions"] > 0 and health["not_fetching"] == [], \
        health


async def _where_they_are(stack: Stack, worker, expected: set[str]) -> str:
    """Why the ERP does not hold exactly ``expected``: what is missing and where those orders
    are in the engine, what is extra, the worker's health and its consumer lag."""
    have = set(erp_po_numbers(stack))
    missing, extra = sorted(expected - have), sorted(have - expected)
    states = {}
    for key in missing[:10]:
        status, body = await worker.get_json(f"/orders/{key}")
        states[key] = body.get("status") if status == 200 else status
    health = await worker.get_json("/health")
    lag = [ln for ln in (await worker.metrics_text()).splitlines()
           if ln.startswith("retail_sync_consumer_lag") and not ln.endswith(" 0.0")]
    raw_records = await stack.read_topic("orders-raw")
    where = {r.key.decode(): (r.partition, r.offset) for r in raw_records
             if r.key and r.key.decode() in set(missing[:10])}
    exceptions = [r.value.decode(errors="replace")[:300]
                  for r in await stack.read_topic("sync-exceptions")
                  if r.key and r.key.decode() in set(missing[:10])]
    committed = await _committed(stack, "orders-raw")
    return (f"ERP has {len(have)} of {len(expected)}: missing {len(missing)} "
            f"(their states: {states}; (partition, offset) in orders-raw: {where}; their "
            f"exception records: {exceptions}), extra {extra[:10]}; orders-raw holds "
            f"{len(raw_records)} records; the group's committed offsets and the ends of "
            f"orders-raw: {committed}; health {health}; lag {lag[:20]}; worker log:\n"
            f"{worker.log_tail()}")


async def _committed(stack: Stack, name: str) -> dict[int, tuple[int | None, int]]:
    """partition -> (the worker group's committed offset, the end offset) of topic ``name``."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from retail_sync.tansu_compat import true_end_offsets

    topic = stack.topic(name)
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.bootstrap, group_id=stack.app_id,
                                enable_auto_commit=False)
    try:
        await consumer.start()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic)
                                                         or await _partitions(consumer, topic))]
        ends = await true_end_offsets(stack.bootstrap, await consumer.end_offsets(tps))
        return {tp.partition: (await consumer.committed(tp), ends[tp]) for tp in tps}
    finally:
        await consumer.stop()


async def _partitions(consumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka has no public call
    return consumer.partitions_for_topic(topic) or set()


async def test_order_state_recovers_from_the_changelog_onto_an_empty_disk(stack: Stack) -> None:
    worker = await stack.start_worker()
    shop = simulator(stack, worker.ingress_url, rate_per_s=100, seed=31)
    await shop.send_orders(count=40)
    keys = sorted(f"shopify:{oid}" for oid in shop.accepted_order_ids())
    await eventually(lambda: set(erp_po_numbers(stack)) == set(keys), timeout_s=60)
    await eventually(lambda: _all_confirmed(worker, keys), timeout_s=30)
    before = {key: (await worker.get_json(f"/orders/{key}"))[1] for key in keys}

    await worker.stop()
    import shutil

    shutil.rmtree(worker.env["RETAIL_SYNC_DATADIR"])  # lose the local RocksDB entirely
    worker.start()
    await worker.wait_ready()
    after = {key: (await worker.get_json(f"/orders/{key}"))[1] for key in keys}
    assert after == before
    assert len(stack.erp.orders) == 40  # recovery re-posted nothing


async def _all_confirmed(worker, keys):
    for key in keys:
        if not await _confirmed(worker, key):
            return False
    return True
