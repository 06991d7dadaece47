"""The real-shaped order fixtures (tests/fixtures), as plausible orders.

Two of the verbatim documentation samples are not plausible orders, and the mappers now say so
(streams/validation.py, ARCHITECTURE §5f.4); tests that need an order that maps use these copies,
each changed as little as possible (the verbatim files stay as they are, and
tests/unit/test_order_validation.py shows that the mappers reject them, naming the field):

* ``shopify_order.json`` (Shopify's own ``order.json``) has three line items of 199.00 but
  ``total_line_items_price`` / ``subtotal_price`` 398.00 and ``total_price`` 409.94: its totals
  leave out one of its lines, so the buyer paid 199.00 less than the lines say. The copy states
  the totals of its three lines: 597.00 + tax 11.94 = 608.94.
* ``amazon_order_example.json`` (the SP-API sandbox) was placed on 1970-01-19 (epoch seconds read
  as milliseconds); the copy moves its dates to 2026-03-02, keeping their spacing.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"

_SHOPIFY = json.loads((FIXTURES / "shopify_order.json").read_text())
_AMAZON = json.loads((FIXTURES / "amazon_order_example.json").read_text())
_AMAZON_DATES = {"PurchaseDate": "2026-03-02T03:58:30Z", "LastUpdateDate": "2026-03-02T03:58:32Z",
                 "EarliestShipDate": "2026-03-02T03:59:27Z", "LatestShipDate": "2026-03-02T04:05:13Z",
                 "EarliestDeliveryDate": "2026-03-02T04:06:39Z",
                 "LatestDeliveryDate": "2026-03-02T04:15:17Z"}


def shopify_order_verbatim() -> dict[str, Any]:
    return copy.deepcopy(_SHOPIFY)


def shopify_order() -> dict[str, Any]:
    """Shopify's sample order with totals that count all three of its line items."""
    order = copy.deepcopy(_SHOPIFY)
    order.update(total_line_items_price="597.00", subtotal_price="597.00", total_price="608.94",
                 total_price_usd="608.94")
    return order


def amazon_example_verbatim() -> dict[str, Any]:
    return copy.deepcopy(_AMAZON)


def amazon_example() -> dict[str, Any]:
    """The sandbox's order and items (``{"order", "order_items"}``) placed in 2026, not 1970."""
    data = copy.deepcopy(_AMAZON)
    data["order"].update(_AMAZON_DATES)
    return data
