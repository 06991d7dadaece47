"""The Shopify simulator's bodies have the real variety (issue 12 item 5) and match the Shopify
OpenAPI in ../shared/specs/shopify; the mapper reads what they say."""

from __future__ import annotations

import json
from decimal import Decimal
from functools import cache
from typing import Any

import yaml
from jsonschema import Draft7Validator

from retail_sync.connectors.shopify import mapper as shopify
from retail_sync.simulators.shopify.orders import ShopifyOrderFactory, add_refund, edit_quantity
from tests.specs import spec_path


@cache
def order_validator() -> Draft7Validator:
    """The spec's Order schema, with its two known defects fixed: ``payment_details`` is an object
    in Shopify's own fixture (the spec says string), and "float" is JSON's "number"."""
    spec = yaml.safe_load(spec_path("shopify", "ballerina", "shopify.admin.openapi.yml").read_text())
    schemas = spec["components"]["schemas"]
    schemas["Order"]["properties"]["payment_details"] = {"type": "object"}
    for schema in schemas.values():  # the community spec writes "float" for JSON's "number"
        for prop in (schema.get("properties") or {}).values():
            for choice in prop.get("oneOf", []):
                if choice.get("type") == "float":
                    choice["type"] = "number"
    return Draft7Validator({"$ref": "#/components/schemas/Order", "components": {"schemas": schemas}})


def without_nulls(value: Any) -> Any:
    """Shopify writes null for an absent value (its own fixtures do: ``"cancelled_at": null``);
    the community spec types those fields without ``nullable``, so nulls are left out."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def problems(body: dict[str, Any]) -> list[str]:
    errors = sorted(order_validator().iter_errors(without_nulls(body)), key=str)
    return [f"{list(e.absolute_path)}: {e.message}" for e in errors[:3]]


def test_shopifys_own_fixture_passes_the_same_check() -> None:
    fixture = json.loads(spec_path("shopify", "shopify_python_api", "order.json").read_text())
    assert problems(fixture["order"]) == []


def orders(n: int = 60, **kw: Any) -> list[dict[str, Any]]:
    factory = ShopifyOrderFactory(seed=11, presentment_rates={"CAD": "1.36", "EUR": "0.92"},
                                  custom_item_rate=0.3, **kw)
    return [factory.order() for _ in range(n)]


def test_generated_bodies_validate_against_the_shopify_openapi() -> None:
    for body in orders():
        assert problems(body) == []


def test_generated_bodies_have_the_real_variety_and_still_add_up() -> None:
    bodies = orders()
    lines = [li for body in bodies for li in body["line_items"]]
    assert all(li["total_discount"] == "0.00" for li in lines)
    discounted = [li for li in lines if li["discount_allocations"]]
    assert discounted and all("current_quantity" in li for li in lines)
    assert {b["presentment_currency"] for b in bodies} > {"USD"}
    assert any(li["sku"] is None and li["variant_id"] is None for li in lines)
    for body in bodies:
        order = shopify.map_order(body)  # validate_order inside: totals add up
        by_id = {ln.line_id: ln for ln in order.lines}
        for li in body["line_items"]:
            got = sum((Decimal(a["amount"]) for a in li["discount_allocations"]), Decimal(0))
            assert by_id[str(li["id"])].discount.amount == got
        if body["presentment_currency"] != "USD":
            shown = body["total_price_set"]["presentment_money"]
            assert shown["currency_code"] == body["presentment_currency"]


def test_an_edit_and_a_cancel_refund_show_in_current_quantity_and_the_mapper_follows() -> None:
    body = ShopifyOrderFactory(seed=5).order(lines=[("MUG-CLASSIC", 3), ("TSHIRT-M-BLU", 1)])
    first, second = (li["id"] for li in body["line_items"])
    edit_quantity(body, first, 1)
    assert body["line_items"][0]["quantity"] == 3 and body["line_items"][0]["current_quantity"] == 1
    assert Decimal(body["current_total_price"]) < Decimal(body["total_price"])
    assert problems(body) == []
    assert [(ln.line_id, ln.quantity) for ln in shopify.map_order(body).lines] == [
        (str(first), 1), (str(second), 1)]
    add_refund(body, [(second, 1, "cancel")], note=None, refund_id=900, location_id=1)
    assert body["line_items"][1]["current_quantity"] == 0
    assert [ln.line_id for ln in shopify.map_order(body).lines] == [str(first)]
