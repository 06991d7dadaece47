"""What the codecs' own writing saves (docs/BENCHMARKS.md, issue 16, ninth step): the records the
order path writes most, encoded by pydantic's ``model_dump_json`` and by ``record_json`` (the
codecs' way: a model's ``wire_json`` where it has one), alternating, CPU time, medians of five
rounds. No broker, no worker: the figure does not move with what else this machine runs as
much as the pipeline bench does. Run from the repository root:
``.venv/bin/python docs/profiles/codec_probe.py``.

Per order, the pipeline writes its state ~3 times with the same order in it, and one ERP
request (in a batch of ~16); a SKU's record is written once per stock batch, and under the
bench's backlog it holds ~500 open lines (5 SKUs, ~2,500 lines between reservation and commit).
"""

import statistics
import sys
import time
from datetime import UTC, datetime, timedelta

import orjson

sys.path.insert(0, ".")  # run from the repository root
from retail_sync.connectors.shopify.mapper import map_order  # noqa: E402
from retail_sync.simulators.shopify.simulator import ShopifyOrderFactory  # noqa: E402
from retail_sync.streams.commands import ErpBatch, ErpPostRequest  # noqa: E402
from retail_sync.streams.events import OrderReceived  # noqa: E402
from retail_sync.streams.models import Order, OrderStatus, record_json  # noqa: E402
from retail_sync.streams.rules.lifecycle import apply  # noqa: E402
from retail_sync.streams.stock import OpenLine, Pending, StockState  # noqa: E402

ORDERS, ROUNDS, OPEN_LINES, PENDING = 200, 5, 500, 30
NOW = datetime(2026, 12, 5, 20, 0, tzinfo=UTC)
factory = ShopifyOrderFactory(seed=16)
payloads = [orjson.loads(orjson.dumps(factory.order())) for _ in range(ORDERS)]


def fresh_orders() -> list[Order]:
    """New order objects (the cache of ``order_json`` is per object)."""
    return [map_order(p) for p in payloads]


def states_of(orders: list[Order]) -> list:
    """Three states of each order, as the lifecycle writes them: the same order in each."""
    out = []
    for order in orders:
        first = apply(None, OrderReceived(order_key=order.order_key, order=order,
                                          delivery_id="probe", received_at=NOW), NOW).state
        assert first is not None
        out += [first, first.model_copy(update={"status": OrderStatus.ERP_PENDING}),
                first.model_copy(update={"status": OrderStatus.ERP_CONFIRMED})]
    return out


def batches_of(orders: list[Order]) -> list[ErpBatch]:
    posts = [ErpPostRequest(order_key=o.order_key, order=o, received_at=NOW, requested_at=NOW)
             for o in orders]
    return [ErpBatch(requests=posts[i:i + 16]) for i in range(0, len(posts), 16)]


def sku_record() -> StockState:
    return StockState(
        sku="TSHIRT-M-BLU", updated_at=NOW,
        open={f"TSHIRT-M-BLU|shopify:{i}#1": OpenLine(f"shopify:{i}", "shopify", "1", 1, 1, i,
                                                       NOW + timedelta(microseconds=i))
              for i in range(OPEN_LINES)},
        pending={f"TSHIRT-M-BLU|shopify:p{i}#1": Pending(quantity=1,
                                                         erp_created=NOW + timedelta(seconds=i))
                 for i in range(PENDING)})


def cpu(fn, items) -> float:
    t = time.process_time()
    for item in items:
        fn(item)
    return time.process_time() - t


def pydantic(model) -> bytes:
    return model.model_dump_json().encode()


results: dict[str, dict[str, list[float]]] = {}
for _ in range(ROUNDS):
    for way, fn in (("pydantic", pydantic), ("ours", record_json)):
        orders = fresh_orders()  # new objects every round and way: no order written before
        sku = sku_record()  # new line objects: the first write of the round writes them all
        cases = {
            "order states (3 per order), per order": (states_of(orders), ORDERS),
            "ERP batches of 16, per order": (batches_of(orders), ORDERS),
            f"SKU record, {OPEN_LINES} open lines, {PENDING} pending, per write": ([sku] * 20, 20),
        }
        for name, (items, per) in cases.items():
            results.setdefault(name, {}).setdefault(way, []).append(cpu(fn, items) / per)

print(f"{'record':58} {'pydantic us':>12} {'ours us':>9} {'ratio':>6}")
for name, ways in results.items():
    a, b = statistics.median(ways["pydantic"]) * 1e6, statistics.median(ways["ours"]) * 1e6
    print(f"{name:58} {a:12.1f} {b:9.1f} {a / b:6.2f}")
