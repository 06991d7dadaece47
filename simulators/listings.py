"""What a marketplace simulator knows about the seller's stock: the quantity it was last told.

Every marketplace simulator keeps one ``Listings``. The seller (our engine) sets absolute
quantities through the marketplace's own API; buyers' orders take units off them, as a real
marketplace decrements a listing on each sale. A SKU the seller never set is *untracked* and sells
without limit (the marketplace does not manage its stock), which keeps order-only scenarios free of
stock.

When a buyer orders more than the listing shows, ``mode`` decides:

- ``refuse`` (what a marketplace does for a buyer who sees "out of stock"): the sale does not
  happen and ``refused_units`` counts it;
- ``allow`` (checkout races, listings the marketplace has not refreshed yet, Shopify's
  ``inventory_policy: continue``): the sale happens, the listing stays at zero, and
  ``oversold_units`` counts the units sold beyond what the seller had told the marketplace.

``promised_elsewhere`` counts what the seller reported back: units of orders this marketplace
accepted that the seller then cancelled for lack of stock (stock that had been promised on
another channel).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

ListingMode = Literal["refuse", "allow"]


@dataclass
class Listing:
    quantity: int
    updated_at: str  # ISO time of the seller's last update
    updated_monotonic: float
    updates_received: int = 0
    sold_units: int = 0
    refused_units: int = 0
    oversold_units: int = 0
    seller_cancelled_units: int = 0


@dataclass
class Listings:
    mode: ListingMode = "refuse"
    items: dict[str, Listing] = field(default_factory=dict)

    def set(self, sku: str, quantity: int) -> Listing:
        """The seller sets the absolute quantity of ``sku``."""
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 0:
            raise ValueError(f"quantity of {sku} must be a whole number >= 0, got {quantity!r}")
        now = datetime.now(UTC).isoformat()
        listing = self.items.get(sku)
        if listing is None:
            listing = self.items[sku] = Listing(quantity, now, time.monotonic())
        listing.quantity = quantity
        listing.updated_at, listing.updated_monotonic = now, time.monotonic()
        listing.updates_received += 1
        return listing

    def quantity(self, sku: str) -> int | None:
        """What the listing shows now, or None for an untracked SKU."""
        listing = self.items.get(sku)
        return None if listing is None else listing.quantity

    def can_sell(self, lines: list[tuple[str, int]]) -> bool:
        """Whether every (sku, quantity) can be sold now under ``mode``."""
        if self.mode == "allow":
            return True
        needed: dict[str, int] = {}
        for sku, qty in lines:
            needed[sku] = needed.get(sku, 0) + qty
        return all(self.items[s].quantity >= q for s, q in needed.items() if s in self.items)

    def sell(self, lines: list[tuple[str, int]]) -> bool:
        """A buyer orders ``lines``; False (and nothing sold) when refused. All or nothing."""
        if not self.can_sell(lines):
            for sku, qty in lines:
                if sku in self.items:
                    self.items[sku].refused_units += qty
            return False
        for sku, qty in lines:
            listing = self.items.get(sku)
            if listing is None:
                continue
            listing.sold_units += qty
            beyond = max(0, qty - listing.quantity)
            listing.oversold_units += beyond
            listing.quantity = max(0, listing.quantity - qty)
        return True

    def seller_cancelled(self, sku: str, quantity: int) -> None:
        """The seller cancelled ``quantity`` units it had no stock for."""
        listing = self.items.get(sku)
        if listing is not None:
            listing.seller_cancelled_units += quantity

    def snapshot(self) -> dict[str, Any]:
        """``GET /_sim/inventory``: every tracked SKU and the totals."""
        items = {sku: asdict(listing) for sku, listing in sorted(self.items.items())}
        totals = {k: sum(i[k] for i in items.values()) for k in
                  ("sold_units", "refused_units", "oversold_units", "seller_cancelled_units")}
        return {"mode": self.mode, "items": items, "totals": totals}
