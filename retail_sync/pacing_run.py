"""Amazon polling at the real pacing (time scale 1): ``python -m retail_sync.pacing_run``.

The real parts (embedded broker, ERP simulator, one worker process, Redis-shared budgets when
RETAIL_SYNC_REDIS_URL is set), an Amazon simulator at its published plans (getOrders: 0.0167/s,
burst 20) and a Walmart simulator. An Amazon order is placed every ``--order-every`` seconds and a
Walmart order every 10 s; once the worker has spent its getOrders burst, someone else empties
Amazon's bucket so the next call earns a 429. Prints every getOrders call (time, status), each
Amazon order's placement-to-ERP delay and the worst Walmart delay, for ``--minutes`` minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from retail_sync.simulators.amazon.simulator import AmazonSimConfig, AmazonSimulator
from retail_sync.simulators.walmart.simulator import WalmartSimConfig, WalmartSimulator
from retail_sync.stack import Stack


class _RecordingAmazon(AmazonSimulator):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[float, str, int]] = []

    async def _guarded(self, request: Any, handler: Any, operation: str) -> Any:
        response = await super()._guarded(request, handler, operation)
        self.calls.append((time.monotonic(), operation, response.status))
        return response


def _erp_po(stack: Stack) -> set[str]:
    assert stack.erp is not None
    return {o.doc["po_no"] for o in stack.erp.orders.values()}


async def run(minutes: float, order_every_s: float, redis_url: str) -> None:
    amazon = _RecordingAmazon(AmazonSimConfig(time_scale=1, seed=31))
    walmart = WalmartSimulator(WalmartSimConfig(seed=32))
    async with Stack(env={"RETAIL_SYNC_REDIS_URL": redis_url}) as stack:
        stack.env.update({"RETAIL_SYNC_AMAZON_BASE_URL": await amazon.start(),
                          "RETAIL_SYNC_WALMART_BASE_URL": await walmart.start()})
        try:
            await stack.start_worker()
            t0 = time.monotonic()
            placed: dict[str, float] = {}
            walmart_placed: dict[str, float] = {}
            arrived: dict[str, float] = {}
            emptied = False
            next_amazon = next_walmart = t0
            while time.monotonic() - t0 < minutes * 60:
                now = time.monotonic()
                if now >= next_amazon:
                    placed.update({f"amazon:{i}": now for i in amazon.generate_orders(1)})
                    next_amazon += order_every_s
                if now >= next_walmart:
                    walmart_placed.update({f"walmart:{o['purchaseOrderId']}": now
                                           for o in walmart.generate_orders(1)})
                    next_walmart += 10
                gets = [c for c in amazon.calls if c[1] == "getOrders"]
                if not emptied and len(gets) >= 20:  # the burst is spent: now empty Amazon's
                    bucket = amazon.buckets["getOrders"]
                    bucket.tokens, bucket._at = 0.0, bucket.clock()
                    emptied = True
                    print(f"{now - t0:7.1f} s  Amazon's getOrders bucket emptied by someone else")
                for po in _erp_po(stack) - set(arrived):
                    arrived[po] = time.monotonic()
                await asyncio.sleep(0.2)
            print("getOrders calls (s since start, status):")
            print("  " + ", ".join(f"{t - t0:.1f} {s}" for t, op, s in amazon.calls if op == "getOrders"))
            delays = sorted((placed[po] - t0, arrived[po] - placed[po]) for po in placed if po in arrived)
            print("Amazon orders (placed at s, reached the ERP after s):")
            print("  " + ", ".join(f"{p:.0f}:{d:.1f}" for p, d in delays))
            missing = [po for po in placed if po not in arrived]
            print(f"Amazon orders not yet in the ERP at the end: {len(missing)} (placed in the last "
                  f"{max((time.monotonic() - placed[po] for po in missing), default=0):.0f} s)")
            lags = [arrived[po] - t for po, t in walmart_placed.items() if po in arrived]
            print(f"Walmart: {len(lags)}/{len(walmart_placed)} orders in the ERP, worst delay "
                  f"{max(lags, default=0):.1f} s")
            throttled = sum(1 for _, op, s in amazon.calls if op == "getOrders" and s == 429)
            print(f"429s on getOrders: {throttled}")
        finally:
            await amazon.stop()
            await walmart.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=6.0)
    parser.add_argument("--order-every", type=float, default=20.0, help="seconds between Amazon orders")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    asyncio.run(run(args.minutes, args.order_every, args.redis_url))


if __name__ == "__main__":
    main()
