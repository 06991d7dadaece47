"""What the ERP, the warehouse and finance need is carried, not dropped (issue 12 item 2).

Per channel, real-shaped payloads (Shopify's own order fixture, the SP-API sandbox example, the
Walmart OpenAPI example) keep phones, addresses, taxes by name and rate, line discounts, discount
codes, shipping method, notes, line properties, the ship-by promise, AFN, Prime, gift, order type,
ASIN and condition, replacements; the ERP sales order carries them in ERPNext fields or declared
Custom Fields (and the simulator stores them, checked against the doctype files); the warehouse
release carries them too. An AFN order goes to the ERP only. A Shopify line discounted only in
``discount_allocations`` is in the ERP at the discounted rate and refunded at it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from retail_sync.connectors.amazon import mapper as amazon
from retail_sync.connectors.contracts import Refund
from retail_sync.connectors.erpnext.client import ErpNextConnector, sales_order_doc
from retail_sync.connectors.erpnext.fields import MARKETPLACE_WAREHOUSE
from retail_sync.connectors.shopify import mapper as shopify
from retail_sync.connectors.walmart import mapper as walmart
from retail_sync.connectors.wms.client import WmsClient
from retail_sync.simulators.erpnext.simulator import ErpSimConfig, ErpSimulator, run_erp_simulator
from retail_sync.simulators.wms.simulator import WmsSimConfig, WmsSimulator
from retail_sync.streams.commands import ErpCancelRequest, WmsCancel, WmsRelease
from retail_sync.streams.events import (
    CancelRequested,
    ErpOrderPosted,
    LineAllocation,
    OrderReceived,
    StockAnswered,
)
from retail_sync.streams.models import LineUnits, Order, OrderStatus
from retail_sync.streams.rules.lifecycle import apply
from retail_sync.streams.state import OrderState
from tests.fixture_orders import amazon_example, shopify_order
from tests.specs import spec_path
from tests.unit.test_erp_connector import shipment
from tests.unit.test_erp_exactly_once import check_document

JSON = dict[str, Any]
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
FIXTURES = __import__("pathlib").Path(__file__).parent.parent / "fixtures"


def shopify_body() -> JSON:
    """Shopify's own order fixture, with the 2024-04 fields the fixture predates: the order's
    phone and the buyer's PO number."""
    body = shopify_order()
    body.update(phone="+1-555-0100", po_number="PO-7781", note="Leave at the back door")
    body["shipping_address"]["phone"] = "555-625-1199"
    body["billing_address"]["phone"] = "555-000-2222"
    return body


def amazon_afn() -> tuple[JSON, list[JSON]]:
    """The SP-API sandbox order as Amazon fulfils it (AFN), Prime, a used gift item, a
    replacement; without the sandbox item's buyer cancellation request."""
    data = amazon_example()
    order, items = data["order"], data["order_items"]
    order.update(FulfillmentChannel="AFN", IsPrime=True, IsReplacementOrder=True,
                 ReplacedOrderId="902-0000000-0000001",
                 ShippingAddress={"Name": "Ann Buyer", "AddressLine1": "1 Main St",
                                  "City": "SEATTLE", "StateOrRegion": "WA",
                                  "PostalCode": "98121", "CountryCode": "US",
                                  "Phone": "+1 206-555-0142"})
    items[0].pop("BuyerRequestedCancel")
    items[0].update(IsGift="true", ConditionId="Used", ConditionSubtypeId="Good")
    return order, items


def walmart_example() -> JSON:
    return json.loads((FIXTURES / "walmart_order_example.json").read_text())


# --- the mappers ---------------------------------------------------------------------------------


def test_shopify_carries_phones_addresses_taxes_codes_shipping_notes_properties_po() -> None:
    order = shopify.map_order(shopify_body())
    assert order.customer.phone == "+1-555-0100"
    assert order.shipping_address is not None and order.shipping_address.phone == "555-625-1199"
    assert order.billing_address is not None
    assert (order.billing_address.phone, order.billing_address.line1,
            order.billing_address.city) == ("555-000-2222", "Chestnut Street 92", "Louisville")
    assert [(t.title, t.rate, t.amount.amount) for t in order.tax_lines] == [
        ("State Tax", Decimal("0.06"), Decimal("11.94"))]
    assert [(d.code, d.amount.amount if d.amount else None) for d in order.discount_codes] == [
        ("TENOFF", Decimal("10.00"))]
    assert order.shipping_method == "Free Shipping"
    assert [(a.name, a.value) for a in order.note_attributes] == [
        ("custom engraving", "Happy Birthday"), ("colour", "green")]
    assert order.note == "Leave at the back door" and order.buyer_po_number == "PO-7781"
    assert [(p.name, p.value) for p in order.lines[0].properties] == [
        ("Custom Engraving", "Happy Birthday")]


def test_shopify_tax_lines_come_from_the_lines_when_the_order_has_none() -> None:
    body = shopify_body()
    body.pop("tax_lines")
    body["line_items"][0]["tax_lines"] = [{"title": "KY State Tax", "rate": 0.06, "price": "5.97"}]
    body["line_items"][1]["tax_lines"] = [{"title": "KY State Tax", "rate": 0.06, "price": "5.97"}]
    order = shopify.map_order(body)
    assert [(t.title, t.rate, t.amount.amount) for t in order.tax_lines] == [
        ("KY State Tax", Decimal("0.06"), Decimal("11.94"))]


def test_amazon_carries_the_promise_channel_prime_gift_type_asin_condition() -> None:
    order = amazon.map_order(*amazon_example_items_unchanged())
    assert order.ship_by == datetime(2026, 3, 2, 4, 5, 13, tzinfo=UTC)  # LatestShipDate
    assert order.deliver_by == datetime(2026, 3, 2, 4, 15, 17, tzinfo=UTC)  # LatestDeliveryDate
    assert order.shipping_method == "Std US D2D Dom"  # ShipServiceLevel
    assert order.fulfilled_by == "merchant" and order.order_type == "StandardOrder"
    assert (order.lines[0].marketplace_product_id, order.lines[0].condition) == (
        "B00551Q3CS", "New/New")
    afn = amazon.map_order(*amazon_afn())
    assert afn.fulfilled_by == "marketplace" and afn.fulfilled_by_marketplace
    assert afn.is_prime and afn.is_gift
    assert afn.original_order_id == "902-0000000-0000001"
    assert afn.lines[0].condition == "Used/Good"
    assert afn.shipping_address is not None and afn.shipping_address.phone == "+1 206-555-0142"


def amazon_example_items_unchanged() -> tuple[JSON, list[JSON]]:
    data = amazon_example()
    return data["order"], data["order_items"]


def test_the_spec_afn_example_is_fulfilled_by_the_marketplace() -> None:
    """ordersV0.json's own AFN order (getOrder example), with the sandbox items in its currency."""
    spec = json.loads(spec_path("amazon", "ordersV0.json").read_text())
    found = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("FulfillmentChannel") == "AFN" and "AmazonOrderId" in node:
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec)
    assert found, "ordersV0.json has no AFN order example"
    order = copy.deepcopy(found[0])
    items = amazon_example()["order_items"]
    items[0].pop("BuyerRequestedCancel")
    currency = order["OrderTotal"]["CurrencyCode"]
    for key in ("ItemPrice", "ItemTax", "PromotionDiscount"):
        items[0][key]["CurrencyCode"] = currency
    order["OrderTotal"]["Amount"] = "11.01"
    order.update(PurchaseDate="2026-03-02T03:58:30Z", LastUpdateDate="2026-03-02T03:58:32Z")
    mapped = amazon.map_order(order, items)
    assert mapped.fulfilled_by == "marketplace"
    assert mapped.shipping_method == order["ShipServiceLevel"]


def test_walmart_replacement_phone_method_dates_and_tax_names() -> None:
    order = walmart.map_order(walmart_example())  # the OpenAPI example, verbatim
    assert (order.order_type, order.original_order_id) == ("REPLACEMENT", "1234567891234")
    assert order.shipping_address is not None and order.shipping_address.phone == "7992381678"
    assert order.shipping_method == "Express"
    assert order.ship_by == datetime.fromtimestamp(1572069600, UTC)  # estimatedShipDate
    assert order.deliver_by == datetime.fromtimestamp(1572375600, UTC)
    assert [(t.title, t.rate, t.amount.amount) for t in order.tax_lines] == [
        ("Tax1", None, Decimal("7.92"))]


def test_old_records_without_the_new_fields_still_decode() -> None:
    order = shopify.map_order(shopify_body())
    old = order.model_dump(mode="json", exclude={
        "billing_address", "tax_lines", "discount_codes", "shipping_method", "note",
        "note_attributes", "buyer_po_number", "ship_by", "deliver_by", "fulfilled_by",
        "is_prime", "is_gift", "order_type", "original_order_id"})
    for line in old["lines"]:
        for key in ("properties", "marketplace_product_id", "condition"):
            line.pop(key)
    old["customer"].pop("phone")
    for address in ("shipping_address",):
        old[address].pop("phone")
        old[address].pop("company")
    again = Order.model_validate(old)
    assert again.fulfilled_by == "merchant" and again.tax_lines == []


# --- the ERP sales order -------------------------------------------------------------------------


@pytest.fixture
async def sim() -> AsyncIterator[ErpSimulator]:
    simulator = await run_erp_simulator("127.0.0.1", 0, ErpSimConfig(seed=4, unknown_items="create"))
    yield simulator
    await simulator.stop()


@pytest.fixture
async def erp(sim: ErpSimulator) -> AsyncIterator[ErpNextConnector]:
    assert sim.base_url
    connector = ErpNextConnector(sim.base_url, "demo-key", "demo-secret", timeout_s=2.0)
    yield connector
    await connector.close()


def stored(sim: ErpSimulator, name: str) -> JSON:
    return sim.orders[name].doc


async def test_the_erp_sales_order_carries_what_shopify_sent(sim: ErpSimulator,
                                                             erp: ErpNextConnector) -> None:
    order = shopify.map_order(shopify_body())
    name = (await erp.create_sales_order(order.order_key, order)).erp_sales_order
    doc = stored(sim, name)  # as the ERP keeps it: undeclared fields would be gone
    assert doc["contact_phone"] == "+1-555-0100"
    assert "Chestnut Street 92" in doc["shipping_address"]
    assert "Phone: 555-625-1199" in doc["shipping_address"]
    assert "Phone: 555-000-2222" in doc["address_display"]
    assert [(t["description"], t["rate"], t["tax_amount"]) for t in doc["taxes"]] == [
        ("State Tax 6%", "6", 11.94)]
    assert doc["custom_discount_codes"] == "TENOFF (10.00)"
    assert doc["custom_shipping_method"] == "Free Shipping"
    assert doc["custom_note_attributes"] == "custom engraving: Happy Birthday\ncolour: green"
    assert doc["custom_buyer_note"] == "Leave at the back door"
    assert doc["custom_buyer_po_no"] == "PO-7781"
    assert doc["items"][0]["additional_notes"] == "Custom Engraving: Happy Birthday"
    problems: list[str] = []
    check_document("Sales Order", doc, problems)
    assert problems == []


async def test_the_erp_sales_order_carries_amazons_promise_and_afn(sim: ErpSimulator,
                                                                   erp: ErpNextConnector) -> None:
    mfn = amazon.map_order(*amazon_example_items_unchanged())
    doc = stored(sim, (await erp.create_sales_order(mfn.order_key, mfn)).erp_sales_order)
    assert doc["custom_ship_by"] == "2026-03-02 04:05:13"
    assert doc["delivery_date"] == "2026-03-02"  # LatestDeliveryDate's date
    assert doc["custom_shipping_method"] == "Std US D2D Dom"
    assert doc["custom_fulfilled_by"] == "merchant"
    assert doc["custom_marketplace_order_type"] == "StandardOrder"
    assert (doc["items"][0]["customer_item_code"], doc["items"][0]["custom_item_condition"]) == (
        "B00551Q3CS", "New/New")
    order, items = amazon_afn()
    order["AmazonOrderId"] = "902-1845936-0000002"
    afn = amazon.map_order(order, items)
    sim.set_stock(afn.lines[0].sku, 5)  # our stock of it: an AFN order must not reserve it
    doc = stored(sim, (await erp.create_sales_order(afn.order_key, afn)).erp_sales_order)
    assert doc["custom_fulfilled_by"] == "marketplace" and doc["skip_delivery_note"] == 1
    assert doc["set_warehouse"] == MARKETPLACE_WAREHOUSE
    assert {i["warehouse"] for i in doc["items"]} == {MARKETPLACE_WAREHOUSE}
    assert (doc["custom_is_prime"], doc["custom_is_gift"]) == (1, 1)
    assert doc["custom_original_order_id"] == "902-0000000-0000001"
    ours = next(b for b in sim.bins() if b["item_code"] == afn.lines[0].sku)
    assert ours["reserved_qty"] == 0  # nothing of our warehouse's stock is held for it
    problems: list[str] = []
    for name in sim.orders:
        check_document("Sales Order", stored(sim, name), problems)
    assert problems == []


async def test_the_erp_sales_order_carries_walmarts_replacement(sim: ErpSimulator,
                                                                erp: ErpNextConnector) -> None:
    order = walmart.map_order(walmart_example())
    doc = stored(sim, (await erp.create_sales_order(order.order_key, order)).erp_sales_order)
    assert doc["custom_marketplace_order_type"] == "REPLACEMENT"
    assert doc["custom_original_order_id"] == "1234567891234"
    assert doc["custom_shipping_method"] == "Express"
    assert "Phone: 7992381678" in doc["shipping_address"]
    assert [t["description"] for t in doc["taxes"]] == ["Tax1", "Shipping: Express"]
    assert doc["custom_ship_by"] == "2019-10-26 06:00:00"
    assert doc["delivery_date"] == "2019-10-29"
    problems: list[str] = []
    check_document("Sales Order", doc, problems)
    assert problems == []


def test_tax_rows_by_name_add_up_to_the_tax_of_a_reduced_order() -> None:
    """An order cut to fewer units (partial policy) keeps its tax names; the rows add up to its
    reduced tax total."""
    order = shopify.map_order(shopify_body())
    reduced = order.model_copy(update={"tax_total": order.tax_total.model_copy(
        update={"amount": Decimal("7.96")})})
    doc = sales_order_doc("shopify:1", reduced, company="C", customer="Cust", warehouse="W")
    assert [(t["description"], t["tax_amount"]) for t in doc["taxes"]] == [("State Tax 6%", "7.96")]


# --- discounts only in discount_allocations: the ERP rate and the refund --------------------------


def allocated_discount_body() -> JSON:
    """A 2024-04 style body: the first line's 3.34 discount only in ``discount_allocations``
    (``total_discount`` "0.00"), so Shopify refunds that unit at 195.66, not 199.00."""
    body = shopify_body()
    line = body["line_items"][0]
    line.update(total_discount="0.00", discount_allocations=[
        {"amount": "3.34", "discount_application_index": 0,
         "amount_set": {"shop_money": {"amount": "3.34", "currency_code": "USD"},
                        "presentment_money": {"amount": "3.34", "currency_code": "USD"}}}])
    body["discount_codes"] = [{"code": "SAVE3", "amount": "3.34", "type": "fixed_amount"}]
    body.update(total_discounts="3.34", subtotal_price="593.66", total_price="605.60")
    return body


async def test_line_discounts_in_allocations_give_discounted_erp_rates_and_refund(
    sim: ErpSimulator, erp: ErpNextConnector
) -> None:
    order = shopify.map_order(allocated_discount_body())
    line = order.lines[0]
    for ln in order.lines:
        sim.set_stock(ln.sku, 5)
    name = (await erp.create_sales_order(order.order_key, order)).erp_sales_order
    doc = stored(sim, name)
    item = doc["items"][0]
    assert (item["price_list_rate"], item["discount_amount"], item["rate"], item["amount"]) == (
        199.0, 3.34, 195.66, 195.66)
    assert doc["discount_amount"] == 0  # the discount is in the line's rate, not taken twice
    assert doc["grand_total"] == 605.60  # what the buyer paid
    await erp.post_shipment(order.order_key, name, shipment(
        "WMS-1", *((ln.line_id, ln.sku, ln.quantity) for ln in order.lines)))
    # Shopify's refunds/create for that unit: 195.66 back, the unit returned
    key, record = shopify.map_refund({
        "id": 929361465, "order_id": int(order.marketplace_order_id), "note": "damaged",
        "refund_line_items": [{"line_item_id": int(line.line_id), "quantity": 1,
                               "restock_type": "return"}],
        "transactions": [{"kind": "refund", "amount": "195.66", "status": "success"}]}, T0)
    assert key == order.order_key and record.amount == Decimal("195.66")
    result = await erp.post_return(key, name, Refund(
        refund_id=record.refund_id, lines=[LineUnits(line_id=line.line_id, sku=line.sku, quantity=1)],
        amount=format(record.amount, "f"), currency="USD", reason=record.reason,
        restock=record.restock))
    note = sim.finance.invoices[result.credit_note]
    assert [(i["qty"], i["rate"]) for i in note["items"]] == [(-1.0, 195.66)]
    assert note["taxes"] == []  # no "Refunds and Adjustments" difference: the rate is right
    assert note["grand_total"] == -195.66


def test_operator_return_is_priced_at_the_discounted_rate() -> None:
    """A return authorised without an amount is refunded at what the buyer paid per unit (its
    discounted price and its tax), as the marketplace refunds it."""
    from retail_sync.streams.rules.aftersale import refund_value

    order = shopify.map_order(allocated_discount_body())
    state = OrderState(order_key=order.order_key, channel="shopify", status=OrderStatus.SHIPPED,
                       order=order, correlation={"marketplace_order_id": order.marketplace_order_id},
                       timeline=[], received_at=T0)
    assert refund_value(state, {order.lines[0].line_id: 1}) == Decimal("195.66")


# --- the warehouse release -----------------------------------------------------------------------


def afn_received() -> OrderReceived:
    order = amazon.map_order(*amazon_afn())
    return OrderReceived(order_key=order.order_key, order=order, delivery_id="poll-1",
                         received_at=T0)


def test_afn_order_goes_to_the_erp_only_no_reservation_no_warehouse() -> None:
    out = apply(None, afn_received(), T0)
    state = out.state
    assert state is not None and state.status is OrderStatus.ERP_PENDING
    assert out.stock_commands == []  # nothing of our stock reserved
    assert [r.order_key for r in out.erp_requests] == [state.order_key]
    assert any(t.event == "fulfilled_by_marketplace" for t in state.timeline)
    again = apply(state, afn_received(), T0)  # a redelivery re-asks the ERP, reserves nothing
    assert again.stock_commands == [] and len(again.erp_requests) == 1
    posted = apply(state, ErpOrderPosted(order_key=state.order_key, erp_sales_order="SO-1",
                                         created=True, posted_at=T0, attempts=1), T0)
    assert posted.state is not None and posted.state.status is OrderStatus.ERP_CONFIRMED
    assert posted.wms_commands == [] and posted.stock_commands == []
    replay = apply(posted.state, ErpOrderPosted(order_key=state.order_key, erp_sales_order="SO-1",
                                                created=False, posted_at=T0, attempts=1), T0)
    assert replay.wms_commands == [] and replay.stock_commands == []
    cancel = apply(posted.state, CancelRequested(order_key=state.order_key, by="amazon",
                                                 reason="cancelled on Amazon", at=T0), T0)
    assert not any(isinstance(c, WmsCancel) for c in cancel.wms_commands)
    assert [type(r) for r in cancel.erp_requests] == [ErpCancelRequest]


def test_merchant_order_release_carries_shipping_instructions_and_line_details() -> None:
    order = shopify.map_order(shopify_body())
    event = OrderReceived(order_key=order.order_key, order=order, delivery_id="d1", received_at=T0)
    state = apply(None, event, T0).state
    for line in order.lines:
        state = apply(state, StockAnswered(order_key=order.order_key, sku=line.sku, tracked=True,
                                           at=T0, lines=[LineAllocation(
                                               line_id=line.line_id, requested=line.quantity,
                                               reserved=line.quantity)]), T0).state
    out = apply(state, ErpOrderPosted(order_key=order.order_key, erp_sales_order="SO-2",
                                      created=True, posted_at=T0, attempts=1), T0)
    [release] = out.wms_commands
    assert isinstance(release, WmsRelease)
    assert release.ship_to is not None and release.ship_to["phone"] == "555-625-1199"
    assert release.shipping is not None and release.shipping.method == "Free Shipping"
    assert release.shipping.note == "Leave at the back door"
    first = order.lines[0].line_id
    assert [(p.name, p.value) for p in release.line_details[first].properties] == [
        ("Custom Engraving", "Happy Birthday")]


async def test_the_wms_gets_and_keeps_shipping_instructions_and_line_details() -> None:
    order = amazon.map_order(*amazon_example_items_unchanged())
    order = order.model_copy(update={"is_prime": True, "lines": [order.lines[0].model_copy(
        update={"condition": "Used/Good"})]})
    state = OrderState(order_key=order.order_key, channel="amazon",
                       status=OrderStatus.ERP_CONFIRMED, order=order, stock_decision="accepted",
                       correlation={"marketplace_order_id": order.marketplace_order_id,
                                    "erp_sales_order": "SO-3"},
                       timeline=[], received_at=T0)
    from retail_sync.streams.rules.aftersale import release_command

    command = release_command(state)
    sim = WmsSimulator(WmsSimConfig(hold=True))
    base = await sim.start()
    client = WmsClient(base, "demo-wms-key", timeout_s=2.0)
    try:
        await client.create_fulfilment_order(
            command.order_key, command.erp_sales_order,
            [LineUnits(line_id=ln.line_id, sku=ln.sku, quantity=ln.quantity) for ln in command.lines],
            command.ship_to, shipping=command.shipping.model_dump(mode="json")
            if command.shipping else None,
            line_details={i: d.model_dump(mode="json") for i, d in command.line_details.items()})
        [kept] = [o for o in sim.orders if o["reference"] == order.order_key]
    finally:
        await client.close()
        await sim.stop()
    assert kept["shipping"]["method"] == "Std US D2D Dom"
    assert kept["shipping"]["ship_by"] == "2026-03-02T04:05:13Z"
    assert kept["shipping"]["priority"] is True
    assert kept["lines"][0]["condition"] == "Used/Good"
    assert kept["lines"][0]["title"] == order.lines[0].title


def test_cancelled_afn_before_the_erp_answers_never_touches_the_warehouse() -> None:
    state = apply(None, afn_received(), T0).state
    assert state is not None
    out = apply(state, CancelRequested(order_key=state.order_key, by="operator", reason="no",
                                       at=T0), T0)
    assert out.state is not None and out.state.status is OrderStatus.CANCEL_PENDING
    out = apply(out.state, ErpOrderPosted(order_key=state.order_key, erp_sales_order="SO-9",
                                          created=True, posted_at=T0 + timedelta(seconds=1),
                                          attempts=1), T0)
    assert out.wms_commands == [] and [type(r) for r in out.erp_requests] == [ErpCancelRequest]
