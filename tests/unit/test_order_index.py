"""Which ids the order agent (re)indexes: only new ones normally, all of them on a replay."""

from datetime import UTC, datetime
from decimal import Decimal

from retail_sync.agents.orders import external_ids, ids_to_index
from retail_sync.streams.models import Money, Order, OrderLine, OrderStatus
from retail_sync.streams.state import Correlation, OrderState

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _state(erp: str | None = None) -> OrderState:
    zero = Money(amount=Decimal("0"), currency="EUR")
    order = Order(
        channel="shopify", marketplace_order_id="1001", marketplace_order_name="#1001",
        created_at=NOW, updated_at=NOW, currency="EUR",
        lines=[OrderLine(line_id="1", sku="SKU", quantity=1, unit_price=zero, tax=zero,
                         discount=zero)],
        subtotal=zero, shipping=zero, tax_total=zero, discount_total=zero, total=zero,
    )
    return OrderState(
        order_key="shopify:1001", channel="shopify",
        status=OrderStatus.ERP_CONFIRMED if erp else OrderStatus.ERP_PENDING, order=order,
        correlation=Correlation(marketplace_order_id="1001", marketplace_order_name="#1001",
                                erp_sales_order=erp),
        timeline=[], received_at=NOW,
    )


def test_new_order_has_nothing_to_index_its_key_is_derived_from_the_marketplace_id() -> None:
    assert ids_to_index(None, _state(), recheck=False) == []


def test_erp_confirmation_indexes_only_the_sales_order() -> None:
    assert ids_to_index(_state(), _state("SAL-ORD-1"), recheck=False) == ["SAL-ORD-1"]


def test_replay_rechecks_every_id() -> None:
    confirmed = _state("SAL-ORD-1")
    assert ids_to_index(confirmed, confirmed, recheck=True) == external_ids(confirmed)
    assert external_ids(confirmed) == ["SAL-ORD-1"]


def test_lookup_candidates_derive_keys_from_marketplace_ids_and_add_indexed_ones() -> None:
    from retail_sync.web import lookup_candidates

    channels = ["shopify", "amazon"]
    assert lookup_candidates("1001", [], channels) == ["shopify:1001", "amazon:1001"]
    assert lookup_candidates("SAL-ORD-1", ["shopify:1001"], ["shopify"]) == [
        "shopify:SAL-ORD-1", "shopify:1001"]
    assert lookup_candidates("shopify:7", [], ["shopify"]) == ["shopify:7", "shopify:shopify:7"]
