"""The demo's marketplaces: each drives one simulator and knows which orders it expects in the ERP.

A driver starts its simulator (``prepare``, returning the worker settings that point at it, for
orders in and for inventory and cancellations out), creates orders at its share of the offered
rate (``run``), and reports the order keys its marketplace accepted with the wall-clock time each
was created (for end-to-end latency), and the orders the seller cancelled there. Every simulator
sells from the one demo catalogue (``DEMO_SKUS``), so the channels compete for the same stock;
buyers are refused once a listing shows zero, as on a real marketplace.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from retail_sync.simulators.amazon.simulator import AmazonSimConfig, AmazonSimulator
from retail_sync.simulators.regional.simulator import RegionalSimConfig, RegionalSimulator
from retail_sync.simulators.shopify.simulator import ShopifySimConfig, ShopifySimulator
from retail_sync.simulators.walmart.simulator import WalmartSimConfig, WalmartSimulator

DEMO_SKUS = [f"DEMO-{n:03d}" for n in range(1, 25)]
BUYER_CANCEL_RATE = 0.03  # Amazon: share of orders whose buyer asks to cancel a moment later
EDIT_RATE = 0.03  # Shopify: share of orders the merchant edits a moment later (orders/updated)


class Driver(Protocol):
    channel: str
    created_at: dict[str, float]  # order key -> time.time() the marketplace created it
    sim: Any  # the simulator: ``listings`` and ``cancellations``

    async def prepare(self) -> dict[str, str]: ...
    async def run(self, worker_url: str, rate: float, duration: float | None,
                  stop: asyncio.Event) -> None: ...
    def expected(self) -> set[str]: ...
    def describe(self) -> str: ...
    async def close(self) -> None: ...


async def _paced(rate: float, duration: float | None, stop: asyncio.Event, make: Any) -> None:
    """Call ``make()`` ``rate`` times per second until ``duration`` or ``stop``."""
    start, n = time.monotonic(), 0
    while not stop.is_set() and (duration is None or time.monotonic() - start < duration):
        make()
        n += 1
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                pass


class ShopifyDriver:
    channel = "shopify"

    def __init__(self, secret: str, args: Any, worker_url: str) -> None:
        self.secret, self.args = secret, args
        self.shop = self.sim = ShopifySimulator(ShopifySimConfig(
            webhook_url=f"{worker_url}/webhooks/shopify/orders/create", secret=self.secret,
            duplicate_rate=self.args.duplicate_rate,
            malformed_rate=self.args.malformed_rate, unmappable_rate=self.args.unmappable_rate,
            max_attempts=8, skus=DEMO_SKUS, max_quantity=2, api_bucket_capacity=80,
            api_leak_per_s=40,  # Shopify Plus's bucket, leaking x10 as the demo runs sped up
            edit_rate=EDIT_RATE, edit_delay_s=1.0,  # the merchant edits a few orders (a unit less)
        ))
        self.url = ""
        self.created_at: dict[str, float] = {}

    async def prepare(self) -> dict[str, str]:
        self.url = await self.shop.start()
        return {"RETAIL_SYNC_SHOPIFY_ADMIN_BASE_URL": self.url,
                "RETAIL_SYNC_SHOPIFY_ACCESS_TOKEN": self.shop.config.access_token,
                # our budget for the sped-up bucket: 80 calls leaking 40/s, 2 kept free
                "RETAIL_SYNC_RATE_LIMITS": '{"shopify:admin": [40, 78]}'}

    async def run(self, worker_url: str, rate: float, duration: float | None,
                  stop: asyncio.Event) -> None:
        self.shop.set_config({"rate_per_s": rate})
        sending = asyncio.create_task(self.shop.send_orders(duration_s=duration))
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({sending, stopped}, return_when=asyncio.FIRST_COMPLETED)
        self.shop.stop_sending()
        stopped.cancel()
        await sending

    def expected(self) -> set[str]:
        for oid, sent in self.shop.first_sent_at.items():
            self.created_at.setdefault(f"shopify:{oid}", sent)
        return {f"shopify:{oid}" for oid in self.shop.accepted_order_ids()}

    def describe(self) -> str:
        return f"{self.url}  (webhooks; Admin REST: orders, inventory_levels/set, cancel)"

    async def close(self) -> None:
        await self.shop.stop()


class AmazonDriver:
    """SP-API simulator with its usage plans sped up 100× (``time_scale``): at the real
    getOrders plan (one call a minute) a demo would wait minutes between polls."""

    channel = "amazon"

    def __init__(self) -> None:
        # every order seller-fulfilled (MFN): Amazon-fulfilled orders ship from Amazon's stock;
        # a few buyers ask to cancel a moment after ordering (BUYER_CANCEL_RATE): before the
        # warehouse ships, the order is cancelled everywhere and answered BuyerCanceled
        self.sim = AmazonSimulator(AmazonSimConfig(
            time_scale=100, skus=DEMO_SKUS, max_quantity=2, mfn_rate=1.0,
            buyer_cancel_rate=BUYER_CANCEL_RATE, buyer_cancel_after_s=1.0))
        self.url = ""
        self.created_at: dict[str, float] = {}

    async def prepare(self) -> dict[str, str]:
        self.url = await self.sim.start()
        return {"RETAIL_SYNC_AMAZON_BASE_URL": self.url,
                "RETAIL_SYNC_AMAZON_ACCESS_TOKEN": self.sim.config.access_token}

    async def run(self, worker_url: str, rate: float, duration: float | None,
                  stop: asyncio.Event) -> None:
        def make() -> None:
            for order_id in self.sim.generate_orders(1):  # a refused buyer makes no order
                self.created_at[f"amazon:{order_id}"] = time.time()
        await _paced(rate, duration, stop, make)

    def expected(self) -> set[str]:
        return set(self.created_at)

    def describe(self) -> str:
        return f"{self.url}  (SP-API Orders v0 polled, Listings/Feeds; usage plans ×100)"

    def buyer_cancels(self) -> tuple[int, int, int]:
        """Buyer cancellation requests made, orders answered BuyerCanceled (cancelled everywhere),
        and requests the buyer could no longer make (the order had shipped)."""
        asked = {r["order_id"] for r in self.sim.buyer_cancel_requests}
        answered = {c["order_id"] for c in self.sim.cancellations if c["reason"] == "BuyerCanceled"}
        return len(asked), len(asked & answered), self.sim.counts["buyer_cancel_requests_too_late"]

    async def close(self) -> None:
        await self.sim.stop()


class WalmartDriver:
    channel = "walmart"

    def __init__(self) -> None:
        self.sim = WalmartSimulator(WalmartSimConfig(  # limits x100, as the demo runs sped up
            skus=DEMO_SKUS, max_quantity=2, inventory_rate_per_s=333, inventory_burst=200,
            feeds_rate_per_s=1000 / 3600, feeds_burst=10))
        self.url = ""
        self.created_at: dict[str, float] = {}

    async def prepare(self) -> dict[str, str]:
        self.url = await self.sim.start()
        return {"RETAIL_SYNC_WALMART_BASE_URL": self.url,
                "RETAIL_SYNC_WALMART_CLIENT_ID": self.sim.config.client_id,
                "RETAIL_SYNC_WALMART_CLIENT_SECRET": self.sim.config.client_secret,
                "RETAIL_SYNC_WALMART_INVENTORY_RATE_PER_S": "300",
                "RETAIL_SYNC_WALMART_INVENTORY_BURST": "100",
                "RETAIL_SYNC_WALMART_FEEDS_PER_HOUR": "900"}

    async def run(self, worker_url: str, rate: float, duration: float | None,
                  stop: asyncio.Event) -> None:
        def make() -> None:
            for order in self.sim.generate_orders(1):
                self.created_at[f"walmart:{order['purchaseOrderId']}"] = time.time()
        await _paced(rate, duration, stop, make)

    def expected(self) -> set[str]:
        return set(self.created_at)

    def describe(self) -> str:
        return f"{self.url}  (Orders v3 polled + acknowledge; inventory; limits ×100)"

    async def close(self) -> None:
        await self.sim.stop()


class RegionalDriver:
    """CSV batch files dropped into a folder, one file a second; 2 % of the orders carry an
    unknown status code, so the summary shows them as mapping exceptions, not as lost. The
    marketplace keeps taking orders past zero stock (its listings in ``allow`` mode), so under
    the demo's ``backorder`` policy for it some orders wait for goods and ship when they come."""

    channel = "regional"

    def __init__(self, drop_dir: Path) -> None:
        drop_dir.mkdir(parents=True, exist_ok=True)
        self.drop_dir = drop_dir
        self.outbox = drop_dir.parent / "regional-outbox"
        self.sim = RegionalSimulator(drop_dir, seed=int(time.time()), outbox_dir=self.outbox,
                                     config=RegionalSimConfig(skus=DEMO_SKUS, max_quantity=2,
                                                              statuses=["pending", "accepted"],
                                                              listing_mode="allow"))
        self.created_at: dict[str, float] = {}

    async def prepare(self) -> dict[str, str]:
        return {"RETAIL_SYNC_REGIONAL_DROP_DIR": str(self.drop_dir),
                "RETAIL_SYNC_REGIONAL_OUTBOX_DIR": str(self.outbox)}

    async def run(self, worker_url: str, rate: float, duration: float | None,
                  stop: asyncio.Event) -> None:
        owed = [0.0]

        def make() -> None:
            owed[0] += rate
            if owed[0] >= 1:
                before = len(self.sim.good_refs)
                # the partner's file is of now: the simulator's clock steps 15 minutes a batch
                # from a fixed day by default, which reconcile's look-back leaves behind
                self.sim.clock = max(self.sim.clock, datetime.now(UTC) - timedelta(minutes=15))
                self.sim.write_batch(int(owed[0]), unknown_rate=0.02)  # reads the outbox too
                owed[0] -= int(owed[0])
                for ref in self.sim.good_refs[before:]:
                    if self.sim.orders[ref].state() != "cancelled":  # not cancelled before we
                        self.created_at[f"regional:{ref}"] = time.time()  # could see it
        await _paced(1.0, duration, stop, make)

    def expected(self) -> set[str]:
        return set(self.created_at)

    def describe(self) -> str:
        return f"{self.drop_dir}  (CSV batch files, one a second, inconsistent status codes)"

    async def close(self) -> None:
        return None


def parse_mix(text: str) -> dict[str, float]:
    """``shopify=2,amazon=1`` -> shares of the offered rate, normalised to sum to 1."""
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition("=")
        if name not in DRIVERS:
            raise ValueError(f"unknown channel {name!r} in --mix (known: {', '.join(DRIVERS)})")
        weights[name] = float(weight or 1)
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("--mix needs at least one channel with a positive weight")
    return {name: w / total for name, w in weights.items() if w > 0}


DRIVERS = ("shopify", "amazon", "walmart", "regional")


def make_driver(channel: str, secret: str, args: Any, workdir: Path, worker_url: str) -> Driver:
    if channel == "shopify":
        return ShopifyDriver(secret, args, worker_url)
    if channel == "amazon":
        return AmazonDriver()
    if channel == "regional":
        return RegionalDriver(workdir / "regional-drop")
    return WalmartDriver()
