"""AmazonOutbound against the real Amazon simulator over HTTP: listings patches, the JSON listings
feed, pacing, error mapping and seller cancellations through order acknowledgement feeds."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from retail_sync.connectors.amazon.client import AmazonOrdersClient
from retail_sync.connectors.amazon.outbound import (
    AMAZON_CARRIERS,
    AmazonOutbound,
    acknowledgement_feed,
    adjustment_reason,
    carrier_code,
    confirm_shipment_request,
    failures_from_report,
    listings_feed,
    package_reference_id,
    split_amount,
)
from retail_sync.connectors.amazon.plan import AMAZON_PLANS
from retail_sync.connectors.contracts import QuantityUpdate, Refund, Shipment
from retail_sync.connectors.errors import PermanentError, RetryableError
from retail_sync.connectors.ratelimit import Budgets
from retail_sync.simulators.amazon.orders import CARRIER_CODES
from retail_sync.simulators.amazon.simulator import AmazonSimConfig, AmazonSimulator
from retail_sync.streams.models import LineUnits
from tests.specs import needs_spec, spec_path

TOKEN = "Atza|outbound-test"  # noqa: S105
SELLER = "A2SIMSELLER01"
MARKET = "ATVPDKIKX0DER"


@pytest.fixture
async def make_sim() -> AsyncIterator[Callable[..., Any]]:
    started: list[AmazonSimulator] = []

    async def make(**config: Any) -> AmazonSimulator:
        config.setdefault("time_scale", 1000)
        config.setdefault("feed_processing_ms", 30)
        sim = AmazonSimulator(AmazonSimConfig(access_token=TOKEN, seed=5, mfn_rate=1.0, **config))
        await sim.start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        await sim.stop()


@pytest.fixture
async def outbound_for() -> AsyncIterator[Callable[..., AmazonOutbound]]:
    made: list[AmazonOutbound] = []

    def make(sim: AmazonSimulator, **kwargs: Any) -> AmazonOutbound:
        kwargs.setdefault("feed_min_skus", 20)
        client = AmazonOutbound(str(sim.base_url), kwargs.pop("token", TOKEN), seller_id=SELLER,
                                marketplace_ids=[MARKET], **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


def updates(n: int, quantity: int = 4) -> list[QuantityUpdate]:
    return [QuantityUpdate(f"SKU-{i:03d}", quantity + i) for i in range(n)]


async def test_a_small_push_patches_each_listing(make_sim, outbound_for) -> None:
    sim = await make_sim()
    report = await outbound_for(sim).push_inventory(updates(3))
    assert report.mechanism == "listings-patch" and report.failed == {} and report.reference is None
    assert list(report.applied) == ["SKU-000", "SKU-001", "SKU-002"]
    assert [sim.listings.quantity(f"SKU-{i:03d}") for i in range(3)] == [4, 5, 6]
    assert sim.stats()["200 patchListingsItem"] == 3


async def test_invalid_patches_are_failed_with_the_issues(make_sim, outbound_for) -> None:
    sim = await make_sim()
    report = await outbound_for(sim).push_inventory(
        [QuantityUpdate("OK", 1), QuantityUpdate("X" * 41, 1), QuantityUpdate("NEG", -2)])
    assert list(report.applied) == ["OK"] and set(report.failed) == {"X" * 41, "NEG"}
    assert "integer >= 0" in report.failed["NEG"] and "SKU" in report.failed["X" * 41]


async def test_25_skus_go_through_one_json_listings_feed(make_sim, outbound_for) -> None:
    sim = await make_sim()
    report = await outbound_for(sim).push_inventory(updates(25))
    assert report.mechanism == "JSON_LISTINGS_FEED" and report.reference in sim.seller.feeds
    assert len(report.applied) == 25 and report.failed == {}
    assert sim.seller.feeds_by_type == {"JSON_LISTINGS_FEED": 1}
    assert "200 patchListingsItem" not in sim.stats()
    assert {sku: item["quantity"] for sku, item in sim.listings.snapshot()["items"].items()} == {
        u.sku: u.quantity for u in updates(25)}


async def test_bad_skus_and_quantities_in_a_feed_are_failed(make_sim, outbound_for) -> None:
    sim = await make_sim()
    push = [*updates(20), QuantityUpdate("Y" * 41, 3), QuantityUpdate("NEG", -1)]
    report = await outbound_for(sim).push_inventory(push)
    assert set(report.failed) == {"Y" * 41, "NEG"} and len(report.applied) == 20
    assert "4000001" in report.failed["NEG"] and sim.listings.quantity("NEG") is None


async def test_pacing_avoids_429s_on_a_30_sku_patch_push(make_sim, outbound_for) -> None:
    sim = await make_sim(time_scale=20)  # patchListingsItem: 100/s, burst 5
    client = outbound_for(sim, feed_min_skus=100)
    report = await client.push_inventory(updates(30))
    assert len(report.applied) == 30 and report.mechanism == "listings-patch"
    assert sim.stats()["throttled"] == 0 and client.throttled == 0
    assert client.rate_limits["patchListingsItem"] == 100


async def test_a_429_is_waited_out_and_retried(make_sim, outbound_for) -> None:
    sim = await make_sim(time_scale=2, rate_overrides={"patchListingsItem": {"burst": 1}})  # 10/s
    while sim.buckets["patchListingsItem"].take():  # someone else just spent the budget
        pass
    client = outbound_for(sim)
    report = await client.push_inventory(updates(3))
    assert len(report.applied) == 3 and client.throttled >= 1 and sim.stats()["throttled"] >= 1


async def test_errors_are_mapped_at_the_edge(make_sim, outbound_for) -> None:
    sim = await make_sim()
    with pytest.raises(PermanentError, match="403"):
        await outbound_for(sim, token="Atza|wrong").push_inventory(updates(1))  # noqa: S106
    sim.configure({"fail_next": 1, "fail_status": 503})
    with pytest.raises(RetryableError, match="503"):
        await outbound_for(sim).push_inventory(updates(1))
    with pytest.raises(RetryableError):
        await AmazonOutbound("http://127.0.0.1:9", TOKEN, seller_id=SELLER,
                             marketplace_ids=[MARKET]).push_inventory(updates(1))


async def test_a_feed_not_done_in_time_is_retryable(make_sim, outbound_for) -> None:
    sim = await make_sim(feed_processing_ms=5000)
    with pytest.raises(RetryableError, match="still IN_"):
        await outbound_for(sim, feed_timeout_s=0.2).push_inventory(updates(20))


def test_from_settings(monkeypatch) -> None:
    from retail_sync.settings import Settings

    monkeypatch.delenv("RETAIL_SYNC_AMAZON_BASE_URL", raising=False)
    assert AmazonOutbound.from_settings(Settings()) is None
    monkeypatch.setenv("RETAIL_SYNC_AMAZON_BASE_URL", "http://127.0.0.1:1234")
    monkeypatch.setenv("RETAIL_SYNC_AMAZON_FEED_MIN_SKUS", "7")
    client = AmazonOutbound.from_settings(Settings())
    assert client is not None and client.feed_min_skus == 7 and client.seller_id == SELLER
    assert client.channel == "amazon"


@needs_spec("amazon")
def test_the_feed_we_write_validates_against_the_listings_feed_schema() -> None:
    from jsonschema import Draft7Validator

    schema = json.loads(spec_path("amazon", "listings-feed-schema-v2.json").read_text())
    errors = list(Draft7Validator(schema).iter_errors(listings_feed(SELLER, "PRODUCT", updates(3))))
    assert not errors, [e.message for e in errors[:3]]


def test_report_issues_map_to_skus() -> None:
    report = {"issues": [{"messageId": 2, "sku": "SKU-001", "code": "1", "severity": "ERROR", "message": "m"},
                         {"messageId": 1, "code": "2", "severity": "WARNING", "message": "w"}]}
    assert failures_from_report(report, updates(3)) == {"SKU-001": "1: m"}
    feed_wide = {"issues": [{"code": "9", "severity": "ERROR", "message": "bad feed"}]}
    assert set(failures_from_report(feed_wide, updates(2))) == {"SKU-000", "SKU-001"}


# --- cancellations ---------------------------------------------------------------------------


async def placed(sim: AmazonSimulator) -> tuple[str, list[tuple[str, str]]]:
    order_id = sim.add_order(lines=[{"sku": "A", "quantity": 2, "unit_price": "10.00"},
                                    {"sku": "B", "quantity": 1, "unit_price": "4.00"}])
    return order_id, [(i["OrderItemId"], i["SellerSKU"]) for i in sim.records[order_id].items]


async def statuses(sim: AmazonSimulator, order_id: str) -> tuple[str, dict[str, int]]:
    client = AmazonOrdersClient(str(sim.base_url), TOKEN)
    try:
        page = await client.get_orders(marketplace_ids=[MARKET], created_after="2020-01-01T00:00:00Z")
        items = await client.get_order_items(order_id)
    finally:
        await client.close()
    [order] = [o for o in page.orders if o["AmazonOrderId"] == order_id]
    return order["OrderStatus"], {i["SellerSKU"]: i["QuantityOrdered"] for i in items}


async def test_partial_cancellation_is_visible_to_pollers_and_idempotent(make_sim, outbound_for) -> None:
    sim = await make_sim()
    order_id, [(item_a, _), _] = await placed(sim)
    client = outbound_for(sim)
    for _ in range(2):
        await client.cancel_lines(order_id, [LineUnits(line_id=item_a, sku="A", quantity=1)],
                                  whole_order=False,
                                  reason="out of stock")
    assert await statuses(sim, order_id) == ("Unshipped", {"A": 1, "B": 1})
    assert [(c["sku"], c["quantity"], c["reason"]) for c in sim.cancellations] == [("A", 1, "NoInventory")]
    assert sim.seller.feeds_by_type == {"POST_ORDER_ACKNOWLEDGEMENT_DATA": 2}


async def test_whole_order_cancellation(make_sim, outbound_for) -> None:
    sim = await make_sim()
    sim.listings.set("A", 5)
    order_id, lines = await placed(sim)
    client = outbound_for(sim)
    cancel = [LineUnits(line_id=item, sku=sku, quantity=1) for item, sku in lines]
    await client.cancel_lines(order_id, cancel, whole_order=True, reason="NoInventory")
    await client.cancel_lines(order_id, cancel, whole_order=True, reason="NoInventory")  # harmless
    assert (await statuses(sim, order_id))[0] == "Canceled"
    assert sorted((c["sku"], c["quantity"]) for c in sim.cancellations) == [("A", 2), ("B", 1)]
    assert sim.listings.items["A"].seller_cancelled_units == 2


async def test_a_cancellation_amazon_refuses_is_permanent(make_sim, outbound_for) -> None:
    sim = await make_sim()
    with pytest.raises(PermanentError, match="not found"):
        await outbound_for(sim).cancel_lines("111-0000000-0000000", [], whole_order=True, reason="x")


def test_acknowledgement_feed_shape() -> None:
    xml = acknowledgement_feed(SELLER, "111-1", [LineUnits(line_id="42", sku="A", quantity=2)],
                               whole_order=False,
                               reason="NoInventory").decode()
    assert "<StatusCode>Failure</StatusCode>" in xml
    assert "<AmazonOrderItemCode>42</AmazonOrderItemCode>" in xml
    assert "<Quantity>2</Quantity>" in xml and "<MessageType>OrderAcknowledgement</MessageType>" in xml
    whole = acknowledgement_feed(SELLER, "111-1", [LineUnits(line_id="42", sku="A", quantity=2)],
                                 whole_order=True, reason="x")
    assert b"<Item>" not in whole


# --- shipments -------------------------------------------------------------------------------

CANONICAL_CARRIERS = ("UPS", "USPS", "FEDEX", "DHL", "OTHER")


def shipment(shipment_id: str, *lines: tuple[str, str, int], carrier: str = "UPS") -> Shipment:
    return Shipment(shipment_id=shipment_id, order_key="amazon:x",
                    lines=[LineUnits(line_id=i, sku=sku, quantity=q) for i, sku, q in lines], carrier=carrier,
                    tracking_number="1Z999", shipped_at="2026-03-02T10:00:00Z")


def test_every_canonical_carrier_has_an_amazon_code_the_marketplace_knows() -> None:
    assert set(AMAZON_CARRIERS) == set(CANONICAL_CARRIERS)
    assert all(code in CARRIER_CODES for code in AMAZON_CARRIERS.values())
    assert carrier_code("FEDEX") == ("FedEx", None) and carrier_code("fedex") == ("FedEx", None)
    assert carrier_code("OTHER") == ("Other", "Other")
    assert carrier_code("Hermes Germany") == ("Other", "Hermes Germany")


def test_package_reference_ids_are_stable_positive_numbers() -> None:
    assert package_reference_id("42") == "42" and package_reference_id("007") == "7"
    derived = package_reference_id("WMS-SHP-000123")
    assert derived.isdigit() and int(derived) > 0 and derived == package_reference_id("WMS-SHP-000123")
    assert derived != package_reference_id("WMS-SHP-000124") and package_reference_id("0") != "0"


@needs_spec("amazon")
def test_the_confirmation_we_send_validates_against_the_spec() -> None:
    from jsonschema import Draft4Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    spec = json.loads(spec_path("amazon", "ordersV0.json").read_text())
    registry = Registry().with_resource("urn:o", Resource.from_contents(spec, default_specification=DRAFT4))
    validator = Draft4Validator({"$ref": "urn:o#/definitions/ConfirmShipmentRequest"}, registry=registry)
    for carrier in CANONICAL_CARRIERS:
        body = confirm_shipment_request(MARKET, shipment("S-1", ("1", "A", 1), ("1", "A", 2),
                                                         carrier=carrier))
        assert not list(validator.iter_errors(body)), carrier
        assert body["packageDetail"]["orderItems"] == [{"orderItemId": "1", "quantity": 3}]


async def test_partial_then_full_shipment_and_repeats_are_harmless(make_sim, outbound_for) -> None:
    sim = await make_sim()
    order_id, [(item_a, _), (item_b, _)] = await placed(sim)
    client = outbound_for(sim)
    first = shipment("WMS-1", (item_a, "A", 1), carrier="FEDEX")
    await client.confirm_shipment(order_id, first)
    await client.confirm_shipment(order_id, first)  # the same package again
    status, _ = await statuses(sim, order_id)
    assert status == "PartiallyShipped" and len(sim.shipments) == 1
    assert sim.shipments[0]["carrier_code"] == "FedEx"
    assert sim.shipments[0]["package_reference_id"] == package_reference_id("WMS-1")
    rest = shipment("WMS-2", (item_a, "A", 1), (item_b, "B", 1), carrier="OTHER")
    await client.confirm_shipment(order_id, rest)
    assert (await statuses(sim, order_id))[0] == "Shipped"
    await client.confirm_shipment(order_id, shipment("WMS-2-replay", (item_b, "B", 1)))  # 400: shipped
    assert len(sim.shipments) == 2 and sim.stats()["400 confirmShipment"] == 1
    assert client.rate_limits["confirmShipment"] == 2000  # time_scale 1000


async def test_a_confirmation_amazon_refuses_is_permanent(make_sim, outbound_for) -> None:
    sim = await make_sim()
    order_id, [(item_a, _), _] = await placed(sim)
    client = outbound_for(sim)
    with pytest.raises(PermanentError, match="not yet shipped"):
        await client.confirm_shipment(order_id, shipment("W", (item_a, "A", 5)))
    with pytest.raises(PermanentError, match="404"):
        await client.confirm_shipment("111-0000000-0000000", shipment("W", ("1", "A", 1)))
    assert sim.shipments == []


async def test_confirmations_are_paced_by_the_usage_plan(make_sim, outbound_for) -> None:
    """A seller's plan below the published burst is a setting (rate_limits); with it, Amazon's
    reported rate and that burst keep every call inside the plan."""
    sim = await make_sim(time_scale=20, rate_overrides={"confirmShipment": {"burst": 2}})  # 40/s
    ids = [(await placed(sim))[0] for _ in range(6)]
    client = outbound_for(sim, budgets=Budgets("amazon", {**AMAZON_PLANS, "confirmShipment": (2.0, 2)}))
    for order_id in ids:
        [item_a, item_b] = [i["OrderItemId"] for i in sim.records[order_id].items]
        await client.confirm_shipment(order_id, shipment("1", (item_a, "A", 2), (item_b, "B", 1)))
    assert client.throttled == 0 and sim.stats()["throttled"] == 0
    assert {sim.records[i].order["OrderStatus"] for i in ids} == {"Shipped"}
    # 90 % of the reported rate, one call less of burst
    assert client.budgets.limiter("confirmShipment").budget() == (36.0, 1)


async def test_a_throttle_pauses_the_budget_and_the_call_goes_through(make_sim, outbound_for) -> None:
    """Without that setting our burst (the published 10) is above the seller's 2: Amazon says
    429, the budget pauses 1 / rate and every confirmation still goes through, once."""
    sim = await make_sim(time_scale=20, rate_overrides={"confirmShipment": {"burst": 2}})
    ids = [(await placed(sim))[0] for _ in range(6)]
    client = outbound_for(sim)
    for order_id in ids:
        [item_a, item_b] = [i["OrderItemId"] for i in sim.records[order_id].items]
        await client.confirm_shipment(order_id, shipment("1", (item_a, "A", 2), (item_b, "B", 1)))
    assert {sim.records[i].order["OrderStatus"] for i in ids} == {"Shipped"}
    assert client.throttled == sim.stats()["throttled"] >= 1
    assert client.budgets.stats()["confirmShipment"]["throttled"] == client.throttled
    assert len(sim.shipments) == 6


# --- refunds ---------------------------------------------------------------------------------


def refund(refund_id: str, amount: str, *lines: tuple[str, str, int], reason: str = "damaged",
           restock: bool = True) -> Refund:
    # model_construct: a line of 0 units (which LineUnits refuses) must still be skipped here
    return Refund(refund_id=refund_id, amount=amount, currency="USD", reason=reason, restock=restock,
                  lines=[LineUnits.model_construct(line_id=i, sku=sku, quantity=q) for i, sku, q in lines])


def test_amounts_split_to_the_cent_and_reasons_map() -> None:
    from decimal import Decimal

    assert split_amount(Decimal("10.00"), [Decimal(1)] * 3) == [Decimal("3.33"), Decimal("3.33"),
                                                                Decimal("3.34")]
    assert split_amount(Decimal("6"), [Decimal(0), Decimal(0)]) == [Decimal("3.00"), Decimal("3.00")]
    assert adjustment_reason("CustomerReturn", False) == "CustomerReturn"
    assert adjustment_reason("damaged", True) == "CustomerReturn"
    assert adjustment_reason("goodwill", False) == "GeneralAdjustment"


async def test_refund_is_a_payment_adjustment_feed_and_idempotent(make_sim, outbound_for) -> None:
    sim = await make_sim()
    order_id, [(item_a, _), (item_b, _)] = await placed(sim)  # A: 2 x 10.00, B: 1 x 4.00
    sim.update_order(order_id, status="Shipped")
    client = outbound_for(sim)
    money_back = refund("RMA-1", "14.00", (item_a, "A", 1), (item_b, "B", 1), (item_a, "A", 0))
    await client.refund(order_id, money_back)
    await client.refund(order_id, money_back)
    [recorded] = sim.refunds
    assert (recorded["adjustment_id"], recorded["amount"], recorded["currency"]) == ("RMA-1", "14.00", "USD")
    assert {i["order_item_id"]: (i["reason"], i["components"]["Principal"]) for i in recorded["items"]} == {
        item_a: ("CustomerReturn", "10.00"), item_b: ("CustomerReturn", "4.00")}
    assert sim.seller.feeds_by_type == {"POST_PAYMENT_ADJUSTMENT_DATA": 2}
    other, _ = await placed(sim)
    sim.update_order(other, status="Shipped")
    await client.refund(other, refund("GOODWILL-1", "2.40", restock=False, reason="late"))
    assert [(i["reason"], i["components"]["Principal"]) for i in sim.refunds[1]["items"]] == [
        ("GeneralAdjustment", "2.00"), ("GeneralAdjustment", "0.40")]


async def test_a_refund_amazon_refuses_is_permanent(make_sim, outbound_for) -> None:
    sim = await make_sim()
    order_id, [(item_a, _), _] = await placed(sim)
    sim.update_order(order_id, status="Shipped")
    client = outbound_for(sim)
    with pytest.raises(PermanentError, match="exceed"):
        await client.refund(order_id, refund("R-9", "25.00", (item_a, "A", 2)))
    with pytest.raises(PermanentError, match="not an item"):
        await client.refund(order_id, refund("R-9", "1.00", ("999", "Z", 1)))
    with pytest.raises(PermanentError, match="> 0"):
        await client.refund(order_id, refund("R-9", "0", (item_a, "A", 1)))
    assert sim.refunds == []
