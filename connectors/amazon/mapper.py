"""Amazon SP-API Orders v0 ``Order`` + its ``OrderItem`` list -> canonical Order.

Amazon specifics this mapper is careful about:

* ``ItemPrice`` is the line total (unit price x ``QuantityOrdered``), not a unit price; the unit
  price is derived, rounded to the canonical 4 decimal places.
* Money is ``{"CurrencyCode", "Amount": "<decimal string>"}``; the order currency is
  ``OrderTotal.CurrencyCode`` and every item amount must be in it.
* While an order is ``Pending`` / ``PendingAvailability`` Amazon withholds ``OrderTotal`` and all
  item prices: such orders raise ``PendingOrderError`` (a MappingError), which a poller can treat
  as "try again after the next update" rather than as a bad message.
* Items whose ``QuantityOrdered`` is 0 (Amazon zeroes quantities of cancelled items) carry no
  canonical line; an order with none left cannot become a canonical order.
* Canonical amounts, as for the other channels: ``subtotal`` = items after promotions,
  ``shipping`` = ShippingPrice - ShippingDiscount, ``tax_total`` = ItemTax + ShippingTax,
  ``discount_total`` = PromotionDiscount, ``total`` = OrderTotal. ``taxes_included`` is inferred:
  true when tax is non-zero and OrderTotal equals the tax-exclusive sum (VAT marketplaces).
* Buyer data is PII-restricted: usually only an anonymised ``BuyerEmail`` and a partial address.
* ``BuyerRequestedCancel`` (``IsBuyerRequestedCancel: "true"`` and ``BuyerCancelReason`` on an
  item of an order not yet cancelled) becomes ``Order.buyer_cancel_request`` (the items it names
  and the buyer's reason): the seller has to cancel such an order, with reason BuyerCanceled.
* Carried for the ERP and the warehouse (issue 12 item 2, ARCHITECTURE §5g): ``LatestShipDate`` /
  ``LatestDeliveryDate`` (the ship-by and deliver-by promise), ``ShipServiceLevel``,
  ``FulfillmentChannel`` (AFN: fulfilled by Amazon from its stock, ``fulfilled_by="marketplace"``:
  the ERP gets it, our warehouse and our stock never do), ``IsPrime``, ``OrderType``,
  ``IsReplacementOrder``/``ReplacedOrderId``, the items' ``IsGift``, ``ASIN`` and condition
  (``ConditionId``/``ConditionSubtypeId``), the address's ``Phone``/``CompanyName``.
* The order is then checked by ``streams.validation`` (ARCHITECTURE §5f.4): ``OrderTotal`` must
  be Σ ItemPrice − PromotionDiscount + ShippingPrice − ShippingDiscount (+ gift wrap, COD fee)
  plus ItemTax + ShippingTax (US: tax on top), or without them (VAT marketplaces: tax inside the
  prices), or with the discounts' own tax taken off too, within the tolerance. Line totals are
  Amazon's ``ItemPrice`` (exact, not the rounded unit price x quantity). ``QuantityOrdered`` is a
  JSON integer (``true``, ``2.0``, ``"2"`` are refused); ``PurchaseDate`` / ``LastUpdateDate``
  must be plausible (the sandbox's 1970 dates are not).
"""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from pydantic import ValidationError

from retail_sync.streams.errors import MappingError
from retail_sync.streams.models import Address, BuyerCancelRequest, Customer, Money, Order, OrderLine
from retail_sync.streams.validation import Expected, FieldNames, canonical_total, validate_order

CHANNEL = "amazon"
UNIT_PRICE_PLACES = Decimal("0.0001")

# Amazon OrderStatus -> canonical lifecycle word (data: walk it in tests, extend it in one place).
STATUS_TO_CANONICAL: dict[str, str] = {
    "PendingAvailability": "pending",
    "Pending": "pending",
    "Unshipped": "accepted",
    "PartiallyShipped": "partially_shipped",
    "Shipped": "shipped",
    "InvoiceUnconfirmed": "shipped",
    "Canceled": "cancelled",
    "Unfulfillable": "unfulfillable",
}
# Canonical lifecycle word -> the Amazon OrderStatus that expresses it (the other direction).
CANONICAL_TO_STATUS: dict[str, str] = {
    "pending": "Pending",
    "accepted": "Unshipped",
    "partially_shipped": "PartiallyShipped",
    "shipped": "Shipped",
    "cancelled": "Canceled",
    "unfulfillable": "Unfulfillable",
}
# Canonical lifecycle word -> financial status: Amazon authorises payment when an order leaves
# Pending and charges it as items ship.
FINANCIAL_STATUS: dict[str, str] = {
    "pending": "pending",
    "accepted": "authorized",
    "partially_shipped": "partially_paid",
    "shipped": "paid",
    "cancelled": "voided",
    "unfulfillable": "voided",
}
AWAITING_PAYMENT = frozenset(s for s, word in STATUS_TO_CANONICAL.items() if word == "pending")
#: Amazon's names of the fields the validation rules are about
FIELDS = FieldNames(total="OrderTotal", currency="OrderTotal.CurrencyCode", created_at="PurchaseDate",
                    updated_at="LastUpdateDate", lines="OrderItems", line_id="OrderItemId",
                    quantity="QuantityOrdered")


class PendingOrderError(MappingError):
    """The order awaits payment, so Amazon shows no amounts yet; map it again after an update."""


def canonical_status(order: dict[str, Any]) -> str:
    """The canonical lifecycle word for an order's ``OrderStatus`` (MappingError if unknown)."""
    status = order.get("OrderStatus")
    if not isinstance(status, str) or status not in STATUS_TO_CANONICAL:
        known = ", ".join(STATUS_TO_CANONICAL)
        raise MappingError(f"order {order.get('AmazonOrderId')!r} has unknown OrderStatus {status!r} "
                           f"(known: {known}); add it to STATUS_TO_CANONICAL")  # fmt: skip
    return STATUS_TO_CANONICAL[str(status)]


def map_order(order: Any, items: Any) -> Order:
    """Map an Amazon order and its items (getOrderItems) to the canonical model, or MappingError."""
    if not isinstance(order, dict):
        raise MappingError(f"expected a JSON object for an order, got {type(order).__name__}")
    order_id = order.get("AmazonOrderId")
    status = canonical_status(order)
    if status == "pending":
        raise PendingOrderError(f"order {order_id!r} is {order['OrderStatus']}: Amazon withholds "
                                "amounts until payment is authorised")  # fmt: skip
    total = _money(order.get("OrderTotal"), None, f"order {order_id!r} OrderTotal")
    lines = _lines(order_id, items, total.currency)
    try:
        canonical = _order(order, lines, total, status)
    except ValidationError as exc:
        raise MappingError(f"order {order_id!r} is not a valid order: {_brief(exc)}") from exc
    return validate_order(canonical, expected=stated_totals(canonical, [item for _, item in lines]),
                          names=FIELDS, line_names=[f"OrderItems[{i}]" for i, _ in _kept(items)])


def _kept(items: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """(index in getOrderItems, item) of the items that make canonical lines."""
    return [(i, item) for i, item in enumerate(items) if item.get("QuantityOrdered") != 0]


def stated_totals(order: Order, items: list[dict[str, Any]]) -> list[Expected]:
    """The readings of ``OrderTotal`` the items allow (see the module docstring)."""
    currency = order.currency

    def total(field: str) -> Decimal:
        return sum((_amount(item, field, currency) for item in items), Decimal(0))

    extra = total("CODFee") - total("CODFeeDiscount")
    for item in items:
        buyer = item.get("BuyerInfo")
        if isinstance(buyer, dict):
            extra += sum((_amount(buyer, f, currency) for f in ("GiftWrapPrice", "GiftWrapTax")), Decimal(0))
    lines, extra_name = total("ItemPrice"), "gift wrap and COD fee"
    discount_tax = total("PromotionDiscountTax") + total("ShippingDiscountTax")
    readings = [canonical_total(order, lines=lines, tax_included=False, extra=extra, extra_name=extra_name),
                canonical_total(order, lines=lines, tax_included=True, extra=extra, extra_name=extra_name)]
    if discount_tax:
        readings.append(canonical_total(order, lines=lines, tax=order.tax_total.amount - discount_tax,
                                        tax_included=False, extra=extra, extra_name=extra_name))
    return readings


def _order(order: dict[str, Any], lines: list[tuple[OrderLine, dict[str, Any]]], total: Money,
           status: str) -> Order:  # fmt: skip
    currency = total.currency
    sums = {
        name: sum((_amount(item, name, currency) for _, item in lines), Decimal(0))
        for name in ("ItemPrice", "PromotionDiscount", "ShippingPrice", "ShippingDiscount",
                     "ItemTax", "ShippingTax")
    }  # fmt: skip
    subtotal = sums["ItemPrice"] - sums["PromotionDiscount"]
    shipping = sums["ShippingPrice"] - sums["ShippingDiscount"]
    tax = sums["ItemTax"] + sums["ShippingTax"]
    return Order(
        channel=CHANNEL,
        marketplace_order_id=_required(order, "AmazonOrderId"),
        marketplace_order_name=order.get("SellerOrderId"),
        created_at=_timestamp(order, "PurchaseDate"),
        updated_at=_timestamp(order, "LastUpdateDate" if order.get("LastUpdateDate") else "PurchaseDate"),
        currency=currency,
        lines=[line for line, _ in lines],
        subtotal=Money(amount=subtotal, currency=currency),
        shipping=Money(amount=shipping, currency=currency),
        tax_total=Money(amount=tax, currency=currency),
        discount_total=Money(amount=sums["PromotionDiscount"], currency=currency),
        total=total,
        taxes_included=bool(tax) and total.amount == subtotal + shipping,
        financial_status=FINANCIAL_STATUS[status],
        fulfillment_status=status,
        customer=_customer(order),
        shipping_address=_address(order.get("ShippingAddress")),
        buyer_cancel_request=None if status == "cancelled" else buyer_cancel_request(
            [item for _, item in lines]),
        ship_by=_optional_timestamp(order, "LatestShipDate"),
        deliver_by=_optional_timestamp(order, "LatestDeliveryDate"),
        shipping_method=_text(order.get("ShipServiceLevel")),
        fulfilled_by="marketplace" if order.get("FulfillmentChannel") == "AFN" else "merchant",
        is_prime=_flag(order.get("IsPrime")),
        is_gift=any(_flag(item.get("IsGift")) for _, item in lines),
        order_type=_text(order.get("OrderType")),
        original_order_id=_text(order.get("ReplacedOrderId")) if _flag(
            order.get("IsReplacementOrder")) else None,
    )


def _flag(value: Any) -> bool:
    """An SP-API boolean: JSON true, or the text "true" (OrderItem ``IsGift`` is text)."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _optional_timestamp(order: dict[str, Any], field: str) -> datetime | None:
    return _timestamp(order, field) if order.get(field) else None


def buyer_cancel_request(items: list[dict[str, Any]]) -> BuyerCancelRequest | None:
    """The buyer's cancellation request the items show (``BuyerRequestedCancel``), or None."""
    named, reasons = [], []
    for item in items:
        request = item.get("BuyerRequestedCancel")
        if isinstance(request, dict) and str(request.get("IsBuyerRequestedCancel")).lower() == "true":
            named.append(str(item.get("OrderItemId") or ""))
            reason = request.get("BuyerCancelReason")
            if isinstance(reason, str) and reason.strip() and reason.strip() not in reasons:
                reasons.append(reason.strip())
    if not named:
        return None
    return BuyerCancelRequest(reason="; ".join(reasons)[:500] or None, line_ids=named)


def _brief(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])


def _decimal(value: Any, what: str) -> Decimal:
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise MappingError(f"{what} is not a decimal string: {value!r}")
    try:
        amount = Decimal(value)
    except InvalidOperation as exc:
        raise MappingError(f"{what} is not a number: {value!r}") from exc
    if not amount.is_finite():
        raise MappingError(f"{what} is not a finite number: {value!r}")
    return amount


def _required(payload: dict[str, Any], field: str) -> str:
    value = payload.get(field)
    if not isinstance(value, str) or not value:
        raise MappingError(f"order {payload.get('AmazonOrderId')!r} has no {field}")
    return value


def _timestamp(order: dict[str, Any], field: str) -> datetime:
    """An ISO 8601 timestamp with its offset (SP-API writes UTC, ``...Z``)."""
    text, where = _required(order, field), f"order {order.get('AmazonOrderId')!r} {field}"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise MappingError(f"{where} is not ISO 8601: {text!r}") from None
    if moment.tzinfo is None:
        raise MappingError(f"{where} has no UTC offset: {text!r}")
    return moment


def _money(value: Any, currency: str | None, what: str) -> Money:
    """An SP-API Money object; ``currency`` (if given) must match it."""
    if not isinstance(value, dict):
        raise MappingError(f"{what} is missing (Amazon sends no amounts for unpaid orders)")
    code = value.get("CurrencyCode")
    if not isinstance(code, str) or len(code) != 3 or not code.isalpha():
        raise MappingError(f"{what} has no valid ISO-4217 CurrencyCode: {code!r}")
    if currency is not None and code.upper() != currency:
        raise MappingError(f"{what} is in {code}, but the order is in {currency}")
    amount = _decimal(value.get("Amount"), f"{what}.Amount")
    try:
        return Money(amount=amount, currency=code.upper())
    except ValidationError as exc:
        raise MappingError(f"{what} is not a valid amount: {_brief(exc)}") from exc


def _amount(item: dict[str, Any], field: str, currency: str) -> Decimal:
    """An optional item Money field as a Decimal (absent = 0)."""
    if item.get(field) is None:
        return Decimal(0)
    return _money(item[field], currency, f"item {item.get('OrderItemId')!r} {field}").amount


def _lines(order_id: Any, items: Any, currency: str) -> list[tuple[OrderLine, dict[str, Any]]]:
    """Canonical lines (with their source items), skipping items Amazon zeroed on cancellation."""
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise MappingError(f"order {order_id!r}: order items must be a list of objects")
    lines = [(_line(item, currency), item) for _, item in _kept(items)]
    if not lines:
        raise MappingError(f"order {order_id!r} has no items with a quantity "
                           "(getOrderItems returned none, or all were cancelled)")  # fmt: skip
    return lines


def _line(item: dict[str, Any], currency: str) -> OrderLine:
    item_id = item.get("OrderItemId")
    quantity = item.get("QuantityOrdered")
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
        raise MappingError(f"item {item_id!r} has no positive QuantityOrdered: {quantity!r}")
    sku = item.get("SellerSKU") or (f"asin-{item['ASIN']}" if item.get("ASIN") else None)
    if not sku:
        raise MappingError(f"item {item_id!r} has neither SellerSKU nor ASIN")
    if item.get("ItemPrice") is None:
        raise MappingError(f"item {item_id!r} has no ItemPrice (Amazon withholds it until payment)")
    line_total = _amount(item, "ItemPrice", currency)
    try:
        return OrderLine(
            line_id=str(item_id or ""),
            sku=str(sku),
            title=str(item.get("Title") or ""),
            quantity=quantity,
            unit_price=Money(amount=_unit_price(line_total, quantity), currency=currency),
            tax=Money(amount=_amount(item, "ItemTax", currency), currency=currency),
            discount=Money(amount=_amount(item, "PromotionDiscount", currency), currency=currency),
            marketplace_product_id=_text(item.get("ASIN")),
            condition="/".join(c for c in (_text(item.get("ConditionId")),
                                           _text(item.get("ConditionSubtypeId"))) if c) or None,
        )
    except ValidationError as exc:
        raise MappingError(f"item {item_id!r} is not a valid order line: {_brief(exc)}") from exc


def _unit_price(line_total: Decimal, quantity: int) -> Decimal:
    """ItemPrice / QuantityOrdered, rounded to the canonical 4 decimal places only if needed."""
    unit = line_total / quantity
    exponent = unit.as_tuple().exponent
    if isinstance(exponent, int) and exponent >= -4:
        return unit
    return unit.quantize(UNIT_PRICE_PLACES, rounding=ROUND_HALF_EVEN)


def _customer(order: dict[str, Any]) -> Customer:
    buyer = order.get("BuyerInfo")
    if not isinstance(buyer, dict):
        return Customer()
    return Customer(email=buyer.get("BuyerEmail") or None, name=buyer.get("BuyerName") or None)


def _address(address: Any) -> Address | None:
    if not isinstance(address, dict):
        return None
    country = address.get("CountryCode")
    return Address(
        name=address.get("Name"),
        line1=address.get("AddressLine1"),
        line2=address.get("AddressLine2"),
        city=address.get("City"),
        region=address.get("StateOrRegion"),
        postal_code=address.get("PostalCode"),
        country_code=country.upper() if isinstance(country, str) and len(country) == 2 else None,
        phone=_text(address.get("Phone")),
        company=_text(address.get("CompanyName")),
    )


__all__ = [
    "AWAITING_PAYMENT",
    "CANONICAL_TO_STATUS",
    "CHANNEL",
    "FINANCIAL_STATUS",
    "MappingError",
    "PendingOrderError",
    "STATUS_TO_CANONICAL",
    "canonical_status",
    "map_order",
]


def map_delivery(payload: Any) -> Order:
    """Polled Amazon deliveries carry the order and its items: {"order": ..., "items": [...]}."""
    if not isinstance(payload, dict) or "order" not in payload:
        raise MappingError("Amazon delivery must be {'order': ..., 'items': [...]}")
    return map_order(payload["order"], payload.get("items"))
