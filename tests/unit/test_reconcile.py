"""Reconciliation, the pure part: statuses on both sides, the compatibility table, every cause,
and the report's JSON and table. No network."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from retail_sync.connectors.shopify import mapper as shopify
from retail_sync.reconcile import (
    CAUSES,
    COMPATIBLE,
    ErpOrder,
    MarketplaceOrder,
    Report,
    compare,
    compatible,
    erp_status,
    marketplace_status,
)
from retail_sync.streams.models import Money, Order, OrderLine
from retail_sync.streams.status import CANONICAL_STATUSES
from tests.fixture_orders import shopify_order

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
SINCE = NOW - timedelta(days=7)
ERP_STATUSES = ("accepted", "partially_shipped", "shipped", "cancelled")


def market(key: str, status: str = "accepted", total: str | None = "30.00", *,
           created: datetime = NOW, partial: bool = False) -> MarketplaceOrder:
    return MarketplaceOrder(key, key.partition(":")[0], status,
                            Decimal(total) if total is not None else None, "USD", created, partial)


def erp(key: str, status: str = "accepted", total: str = "30.00", *,
        credit_notes: int | None = None) -> ErpOrder:
    return ErpOrder(key, f"SAL-ORD-{key}", status, "To Deliver and Bill", 2 if status == "cancelled" else 1,
                    Decimal(total), Decimal(0), "USD", credit_notes)


def canonical(channel: str = "walmart", **changes: Any) -> Order:
    usd = lambda v: Money(amount=Decimal(v), currency="USD")  # noqa: E731
    line = OrderLine(line_id="1", sku="SKU-1", quantity=1, unit_price=usd("10"), tax=usd("0"),
                     discount=usd("0"))
    fields: dict[str, Any] = dict(
        channel=channel, marketplace_order_id="42", created_at=NOW, updated_at=NOW, currency="USD",
        lines=[line], subtotal=usd("10"), shipping=usd("0"), tax_total=usd("0"),
        discount_total=usd("0"), total=usd("10"))
    return Order(**{**fields, **changes})


# --- statuses ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("fulfillment", "financial", "expected"), [
    (None, "paid", "accepted"),
    ("partial", "paid", "partially_shipped"),
    ("fulfilled", "paid", "shipped"),
    ("restocked", "refunded", "cancelled"),
    ("fulfilled", "partially_refunded", "partially_refunded"),
    ("partial", "refunded", "refunded"),
    (None, "partially_refunded", "accepted"),  # money back before shipping: a partial cancel
])
def test_shopify_status_from_its_own_words(fulfillment: str | None, financial: str,
                                           expected: str) -> None:
    order = canonical("shopify", fulfillment_status=fulfillment, financial_status=financial)
    assert marketplace_status(order) == expected


def test_shopify_fixture_and_cancelled_at_wins() -> None:
    payload = shopify_order()
    order = shopify.map_order(payload)
    assert marketplace_status(order) in COMPATIBLE
    cancelled = order.model_copy(update={"cancelled_at": NOW})
    assert marketplace_status(cancelled) == "cancelled"


@pytest.mark.parametrize("status", ["pending", "accepted", "shipped", "partially_refunded",
                                    "cancelled", "unfulfillable"])
def test_other_channels_keep_the_mappers_canonical_word(status: str) -> None:
    assert marketplace_status(canonical("amazon", fulfillment_status=status)) == status
    assert marketplace_status(canonical("walmart", fulfillment_status=status,
                                        cancelled_at=NOW)) == "cancelled"


@pytest.mark.parametrize(("row", "expected"), [
    ({"docstatus": 1, "status": "To Deliver and Bill", "per_delivered": 0}, "accepted"),
    ({"docstatus": 1, "status": "To Deliver and Bill", "per_delivered": 50.0}, "partially_shipped"),
    ({"docstatus": 1, "status": "Completed", "per_delivered": 100.0}, "shipped"),
    ({"docstatus": 1, "status": "To Bill", "per_delivered": 100.0}, "shipped"),
    ({"docstatus": 2, "status": "Cancelled", "per_delivered": 0}, "cancelled"),
    ({"docstatus": 1, "status": "Closed", "per_delivered": 0}, "cancelled"),
    ({"docstatus": 1, "status": "Closed", "per_delivered": 40}, "shipped"),
    ({"docstatus": 0, "status": "Draft"}, "accepted"),
])
def test_erp_status(row: dict[str, Any], expected: str) -> None:
    assert erp_status(row) == expected
    assert ErpOrder.from_row({"po_no": "amazon:1", "name": "SO-1", "grand_total": 5, **row}).status \
        == expected


# --- the compatibility table ------------------------------------------------------------------


def test_compatibility_table_covers_every_canonical_status() -> None:
    assert set(COMPATIBLE) == set(CANONICAL_STATUSES)
    assert all(allowed <= set(ERP_STATUSES) for allowed in COMPATIBLE.values())


@pytest.mark.parametrize(("mine", "theirs", "ok"), [
    ("accepted", "accepted", True),
    ("pending", "accepted", True),
    ("shipped", "accepted", False),
    ("accepted", "shipped", False),
    ("partially_shipped", "partially_shipped", True),
    ("partially_shipped", "shipped", False),
    ("shipped", "shipped", True),
    ("delivered", "shipped", True),
    ("cancelled", "accepted", False),
    ("cancelled", "cancelled", True),
    ("accepted", "cancelled", False),
    ("shipped", "cancelled", False),
    ("partially_refunded", "shipped", True),
    ("refunded", "shipped", True),
    ("refunded", "partially_shipped", True),
    ("refunded", "accepted", False),
    ("unfulfillable", "cancelled", True),
    ("no-such-word", "accepted", False),
])
def test_compatibility(mine: str, theirs: str, ok: bool) -> None:
    assert compatible(mine, theirs) is ok


# --- every cause ------------------------------------------------------------------------------


def test_clean_channel_matches_everything() -> None:
    counts, found = compare("amazon", [market("amazon:1"), market("amazon:2", "shipped")],
                            [erp("amazon:1"), erp("amazon:2", "shipped", "30.004")], since=SINCE)
    assert found == []
    assert (counts.marketplace, counts.erp, counts.matched, counts.not_compared) == (2, 2, 2, 0)
    assert sum(counts.mismatches.values()) == 0


def test_missing_in_erp_but_not_for_cancelled_pending_or_old_orders() -> None:
    counts, found = compare("walmart", [
        market("walmart:1"),
        market("walmart:2", "cancelled"),
        market("walmart:3", "pending"),
        market("walmart:4", created=SINCE - timedelta(hours=1)),  # before the window
        market("walmart:5", "shipped"),
    ], [], since=SINCE)
    assert [(m.order_key, m.cause) for m in found] == [
        ("walmart:1", "missing_in_erp"), ("walmart:5", "missing_in_erp")]
    assert found[0].erp is None and found[0].marketplace is not None
    assert counts.skipped == 3 and counts.mismatches["missing_in_erp"] == 2


def test_missing_on_marketplace() -> None:
    counts, found = compare("shopify", [], [erp("shopify:9")], since=SINCE)
    assert [(m.order_key, m.cause) for m in found] == [("shopify:9", "missing_on_marketplace")]
    assert found[0].erp is not None and found[0].erp.name == "SAL-ORD-shopify:9"
    assert counts.erp == 1 and counts.matched == 0


@pytest.mark.parametrize(("mine", "theirs"), [
    ("shipped", "accepted"),  # the marketplace says shipped, the ERP delivered nothing
    ("cancelled", "accepted"),  # the buyer cancelled, the ERP still holds it
    ("accepted", "cancelled"),  # the ERP cancelled, the marketplace still sells it
    ("partially_shipped", "shipped"),
])
def test_status_differs(mine: str, theirs: str) -> None:
    counts, found = compare("amazon", [market("amazon:1", mine)], [erp("amazon:1", theirs)])
    assert [m.cause for m in found] == ["status_differs"]
    assert mine in found[0].detail and theirs in found[0].detail
    assert counts.matched == 0


def test_refund_needs_a_credit_note_when_they_were_read() -> None:
    _, none = compare("walmart", [market("walmart:1", "refunded")],
                      [erp("walmart:1", "shipped", credit_notes=0)])
    _, booked = compare("walmart", [market("walmart:1", "refunded")],
                        [erp("walmart:1", "shipped", credit_notes=1)])
    _, unread = compare("walmart", [market("walmart:1", "partially_refunded")],
                        [erp("walmart:1", "shipped")])
    assert [m.cause for m in none] == ["status_differs"] and "credit note" in none[0].detail
    assert booked == [] and unread == []


def test_amount_differs_beyond_a_cent() -> None:
    counts, found = compare("regional", [market("regional:A", total="30.00")],
                            [erp("regional:A", total="35.00")])
    assert [m.cause for m in found] == ["amount_differs"]
    assert "30.00" in found[0].detail and "35.00" in found[0].detail
    assert counts.mismatches["amount_differs"] == 1


def test_amounts_of_cancelled_orders_are_not_compared() -> None:
    _, found = compare("amazon", [market("amazon:1", "cancelled", "30.00")],
                       [erp("amazon:1", "cancelled", "99.00")])
    assert found == []


def test_partly_cancelled_orders_are_not_compared_on_amount() -> None:
    counts, found = compare("walmart", [market("walmart:1", total="30.00", partial=True)],
                            [erp("walmart:1", total="20.00")])
    assert found == [] and counts.not_compared == 1 and counts.matched == 1
    # the status is still compared
    _, found = compare("walmart", [market("walmart:1", "shipped", partial=True)], [erp("walmart:1")])
    assert [m.cause for m in found] == ["status_differs"]


def test_status_and_amount_both_reported() -> None:
    _, found = compare("amazon", [market("amazon:1", "shipped", "10.00")],
                       [erp("amazon:1", "accepted", "12.00")])
    assert sorted(m.cause for m in found) == ["amount_differs", "status_differs"]


# --- the report -------------------------------------------------------------------------------


def test_report_json_and_table() -> None:
    counts, found = compare("amazon", [market("amazon:1", "shipped"), market("amazon:2")],
                            [erp("amazon:1"), erp("amazon:3")], since=SINCE)
    report = Report(NOW, SINCE, {"amazon": counts}, found)
    assert not report.ok
    data = report.as_json()
    json.dumps(data)  # JSON-ready
    assert data["ok"] is False
    assert data["mismatches_by_cause"] == {"missing_in_erp": 1, "missing_on_marketplace": 1,
                                           "status_differs": 1, "amount_differs": 0}
    assert set(data["channels"]["amazon"]["mismatches"]) == set(CAUSES)
    assert data["mismatches"][0]["marketplace"]["total"] == "30.00"
    text = report.table(limit=2)
    assert "MISMATCHES" in text and "amazon" in text and "first 2" in text
    assert "status_differs" in text or "missing_in_erp" in text

    clean = Report(NOW, SINCE, {"amazon": compare("amazon", [], [])[0]}, [])
    assert clean.ok and "OK" in clean.table()


def test_a_channel_that_could_not_be_read_is_not_ok() -> None:
    counts = compare("walmart", [], [])[0]
    counts.error = "RetryableError: down"
    report = Report(NOW, SINCE, {"walmart": counts}, [])
    assert not report.ok and "could not be read" in report.table()


# --- the Shopify order list (read-only helper appended to connectors/shopify_outbound) ---------


async def test_shopify_list_orders_pages_through_every_order() -> None:
    from retail_sync.connectors.shopify.outbound import ShopifyOutbound, list_orders
    from retail_sync.simulators.shopify.simulator import ShopifySimConfig, ShopifySimulator

    simulator = ShopifySimulator(ShopifySimConfig(webhook_url="http://127.0.0.1:9/none", secret="s",
                                                         seed=7))
    url = await simulator.start()
    try:
        ids = {str(d.order_id) for d in (simulator.next_delivery([("SKU-1", 1)]) for _ in range(5)) if d}
        outbound = ShopifyOutbound(url, "shpat_demo", page_limit=2)  # three pages by since_id
        try:
            orders = await list_orders(outbound, created_at_min="2026-01-01T00:00:00+00:00")
        finally:
            await outbound.close()
    finally:
        await simulator.stop()
    assert len(ids) == 5 and [str(o["id"]) for o in orders] == sorted(ids, key=int)
    assert all(shopify.map_order(o).order_key.startswith("shopify:") for o in orders)
