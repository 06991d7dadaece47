"""Walmart Marketplace purchase order (Orders API v3) -> canonical Order.

A purchase order has ``orderLines.orderLine``; each line carries its ``charges.charge`` list:
a PRODUCT charge (``chargeName`` ItemPrice) whose ``chargeAmount`` is for the whole line, optional
SHIPPING charges, each with an optional ``tax``. Negative PRODUCT charges (e.g. SubscriptionDiscount)
are discounts. The spec's examples all have quantity 1, so they do not say whether ``chargeAmount``
is per unit or per line; like the spec's "charge for the orderLine" we read it per line, and the
unit price is ``chargeAmount / quantity`` (rounded to 4 places when it does not divide evenly; the
line and order totals stay exact). Amounts are JSON numbers and become Decimal via their text.
``orderDate`` / ``statusDate`` are epoch milliseconds (UTC).

Line statuses translate through ``LINE_STATUS_TO_CANONICAL`` (data, both directions), and
``order_status`` derives one order status from the line statuses. Anything that cannot become a
valid order raises ``MappingError`` with a reason a person can act on.

The order is then checked by ``streams.validation`` (ARCHITECTURE §5f.4): ISO 4217 currency,
unique ``lineNumber``, plausible ``orderDate`` / ``statusDate``. ``orderLineQuantity.amount`` is
text in Walmart's contract: whole digits (or a JSON integer) > 0, nothing else (``true``, ``"1.5"``).
Walmart states no order total (only per-line charges, from which the total is built), so there
is no stated total to compare with.

Carried for the ERP and the warehouse (issue 12 item 2, ARCHITECTURE §5g): ``orderType``
(REGULAR / REPLACEMENT, sent when the request asks ``replacementInfo=true``) with
``originalCustomerOrderID``, ``shippingInfo.phone`` (on the shipping address),
``shippingInfo.methodCode``, ``estimatedShipDate`` / ``estimatedDeliveryDate`` (the ship-by and
deliver-by promise) and the charges' ``tax.taxName`` (taxes by name; Walmart states no rate).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import ValidationError

from retail_sync.streams.errors import MappingError
from retail_sync.streams.models import Address, Customer, Money, Order, OrderLine, TaxLine
from retail_sync.streams.validation import NO_STATED_TOTAL, FieldNames, validate_order

CHANNEL = "walmart"
JSON = dict[str, Any]
PRICE_PLACES = Decimal("0.0001")

LINE_STATUS_TO_CANONICAL: dict[str, str] = {
    "Created": "pending",  # released to the seller, waiting for acknowledgement
    "Acknowledged": "accepted",
    "Shipped": "shipped",
    "Delivered": "delivered",
    "Cancelled": "cancelled",
    "Refund": "refunded",
}
CANONICAL_TO_LINE_STATUS: dict[str, str] = {v: k for k, v in LINE_STATUS_TO_CANONICAL.items()}
ORDER_STATUSES = (
    *LINE_STATUS_TO_CANONICAL.values(),
    "partially_shipped",
    "partially_refunded",
)
COUNTRY_CODES = {"USA": "US", "US": "US", "PRI": "PR", "CAN": "CA", "MEX": "MX"}
#: Walmart's names of the fields the validation rules are about
FIELDS = FieldNames(currency="charges.charge[].chargeAmount.currency", created_at="orderDate",
                    updated_at="orderLines.orderLine[].statusDate", lines="orderLines.orderLine",
                    line_id="lineNumber", quantity="orderLineQuantity.amount")


# --- statuses ---------------------------------------------------------------------------------


def order_status(line_statuses: Iterable[str]) -> str:
    """One order status from canonical line statuses.

    All lines alike -> that status. Cancelled lines do not hold back the others. Otherwise:
    any refunded -> partially_refunded; all shipped or delivered -> shipped; some shipped or
    delivered -> partially_shipped; a mix of pending and accepted -> pending (still to acknowledge).
    A line's own status may already be partial (some of its units shipped or refunded, see
    ``line_status``) and counts as such.
    """
    statuses = set(line_statuses)
    unknown = statuses - set(ORDER_STATUSES)
    if not statuses or unknown:
        raise MappingError(f"cannot derive an order status from line statuses {sorted(statuses)}")
    live = statuses - {"cancelled"} or statuses
    if len(live) == 1:
        return next(iter(live))
    if live & {"refunded", "partially_refunded"}:
        return "partially_refunded"
    if live <= {"shipped", "delivered"}:
        return "shipped"
    if live & {"shipped", "delivered", "partially_shipped"}:
        return "partially_shipped"
    return "pending"


def line_status(line: JSON) -> str:
    """The canonical status of one order line (its quantities may sit in several statuses)."""
    entries = _dig(line, "orderLineStatuses", "orderLineStatus")
    if not isinstance(entries, list) or not entries:
        raise MappingError(f"line {line.get('lineNumber')!r} has no orderLineStatuses.orderLineStatus")
    canonical = []
    for entry in entries:
        status = entry.get("status") if isinstance(entry, dict) else None
        if not isinstance(status, str) or status not in LINE_STATUS_TO_CANONICAL:
            known = ", ".join(LINE_STATUS_TO_CANONICAL)
            raise MappingError(
                f"line {line.get('lineNumber')!r} has unknown status {status!r} (known: {known})"
            )
        canonical.append(LINE_STATUS_TO_CANONICAL[status])
    return order_status(canonical)


# --- the order --------------------------------------------------------------------------------


def map_order(order: Any) -> Order:
    """Map a Walmart purchase order (bare or ``{"order": ...}``) to the canonical model."""
    if not isinstance(order, dict):
        raise MappingError(f"expected a JSON object for a purchase order, got {type(order).__name__}")
    if isinstance(order.get("order"), dict):
        order = order["order"]
    po = _text(order, "purchaseOrderId", "purchase order")
    try:
        canonical = _build(order, po)
    except MappingError as exc:
        raise MappingError(f"purchase order {po}: {exc}") from exc
    except ValidationError as exc:
        raise MappingError(f"purchase order {po} is not a valid order: {_brief(exc)}") from exc
    return validate_order(canonical, expected=NO_STATED_TOTAL, names=FIELDS)


def _build(order: JSON, po: str) -> Order:
    raw_lines = _lines(order)
    currency = _currency(raw_lines)
    lines = [_line(raw, currency) for raw in raw_lines]
    sums = _totals(raw_lines)
    created = _instant(order.get("orderDate"), "orderDate")
    status_dates = [_instant(raw["statusDate"], "statusDate") for raw in raw_lines if raw.get("statusDate")]
    total = sums["product"] - sums["discount"] + sums["shipping"] + sums["tax"]
    return Order(
        channel=CHANNEL,
        marketplace_order_id=po,
        marketplace_order_name=_optional_text(order.get("customerOrderId")),
        created_at=created,
        updated_at=max([created, *status_dates]),
        currency=currency,
        lines=lines,
        subtotal=Money(amount=sums["product"], currency=currency),
        shipping=Money(amount=sums["shipping"], currency=currency),
        tax_total=Money(amount=sums["tax"], currency=currency),
        discount_total=Money(amount=sums["discount"], currency=currency),
        total=Money(amount=total, currency=currency),
        taxes_included=False,
        fulfillment_status=order_status(line_status(raw) for raw in raw_lines),
        customer=_customer(order),
        shipping_address=_address(_dig(order, "shippingInfo", "postalAddress"),
                                  phone=_optional_text(_dig(order, "shippingInfo", "phone"))),
        tax_lines=_tax_lines(raw_lines, currency),
        shipping_method=_optional_text(_dig(order, "shippingInfo", "methodCode")),
        ship_by=_optional_instant(_dig(order, "shippingInfo", "estimatedShipDate"),
                                  "shippingInfo.estimatedShipDate"),
        deliver_by=_optional_instant(_dig(order, "shippingInfo", "estimatedDeliveryDate"),
                                     "shippingInfo.estimatedDeliveryDate"),
        order_type=_optional_text(order.get("orderType")),
        original_order_id=_optional_text(order.get("originalCustomerOrderID")),
    )


def _optional_instant(value: Any, field: str) -> datetime | None:
    return None if value in (None, "") else _instant(value, field)


def _tax_lines(lines: list[JSON], currency: str) -> list[TaxLine]:
    """The charges' taxes summed by ``taxName`` (Walmart gives no rate)."""
    sums: dict[str, Decimal] = {}
    for line in lines:
        for charge in _charges(line):
            if charge.get("tax") is not None:
                name = _optional_text(_dig(charge, "tax", "taxName")) or "Tax"
                amount = _amount(_dig(charge, "tax", "taxAmount"), "tax.taxAmount")[0]
                sums[name] = sums.get(name, Decimal(0)) + amount
    return [TaxLine(title=name, amount=Money(amount=amount, currency=currency))
            for name, amount in sums.items() if amount]


def _brief(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])


def _dig(payload: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(payload, dict):
            return None
        payload = payload.get(key)
    return payload


def _text(payload: JSON, field: str, what: str) -> str:
    value = payload.get(field)
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise MappingError(f"{what} has no {field} (got {value!r})")
    return str(value)


def _optional_text(value: Any) -> str | None:
    return (
        str(value) if isinstance(value, str | int) and not isinstance(value, bool) and value != "" else None
    )


def _instant(value: Any, field: str) -> datetime:
    """Epoch milliseconds (number or digits) or an ISO-8601 string with an offset, as UTC."""
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(value / 1000, UTC)
        if isinstance(value, str) and value.isdecimal():
            return datetime.fromtimestamp(int(value) / 1000, UTC)
    except (ValueError, OverflowError, OSError):  # NaN, inf, beyond year 9999 / time_t
        raise MappingError(f"{field} is out of range: {value!r}") from None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            try:
                return parsed.astimezone(UTC)
            except OverflowError:
                raise MappingError(f"{field} is out of range in UTC: {value!r}") from None
    raise MappingError(f"{field} is not epoch milliseconds or an ISO time with offset: {value!r}")


def _lines(order: JSON) -> list[JSON]:
    lines = _dig(order, "orderLines", "orderLine")
    if not isinstance(lines, list) or not lines:
        raise MappingError("has no orderLines.orderLine")
    if not all(isinstance(line, dict) for line in lines):
        raise MappingError("has an order line that is not an object")
    return lines


def _charges(line: JSON) -> list[JSON]:
    charges = _dig(line, "charges", "charge")
    if not isinstance(charges, list) or not all(isinstance(c, dict) for c in charges):
        raise MappingError(f"line {line.get('lineNumber')!r} has no charges.charge list")
    for charge in charges:
        if charge.get("chargeType") not in ("PRODUCT", "SHIPPING"):
            raise MappingError(
                f"line {line.get('lineNumber')!r} has charge type {charge.get('chargeType')!r}; "
                "expected PRODUCT or SHIPPING"
            )
    return charges


def _amount(money: Any, what: str) -> tuple[Decimal, str]:
    """(amount, currency) of a Walmart MoneyTypeV2 ``{"currency", "amount"}``."""
    if not isinstance(money, dict):
        raise MappingError(f"{what} is missing")
    raw, currency = money.get("amount"), money.get("currency")
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise MappingError(f"{what}.amount is not a number: {raw!r}")
    try:
        amount = Decimal(str(raw))
    except InvalidOperation:
        raise MappingError(f"{what}.amount is not a number: {raw!r}") from None
    if not amount.is_finite():
        raise MappingError(f"{what}.amount is not finite: {raw!r}")
    if not isinstance(currency, str) or len(currency) != 3 or not currency.isalpha():
        raise MappingError(f"{what}.currency is not an ISO-4217 code: {currency!r}")
    return amount, currency.upper()


def _currency(lines: list[JSON]) -> str:
    found = set()
    for line in lines:
        for charge in _charges(line):
            found.add(_amount(charge.get("chargeAmount"), "chargeAmount")[1])
            if charge.get("tax") is not None:
                found.add(_amount(_dig(charge, "tax", "taxAmount"), "tax.taxAmount")[1])
    if len(found) != 1:
        raise MappingError(f"charges must share one currency, found {sorted(found) or 'none'}")
    return found.pop()


def _line_sums(line: JSON) -> dict[str, Decimal]:
    """product (positive PRODUCT charges), discount (negative ones, as positive), shipping, tax."""
    sums = dict.fromkeys(("product", "discount", "shipping", "tax"), Decimal(0))
    for charge in _charges(line):
        amount, _ = _amount(charge.get("chargeAmount"), "chargeAmount")
        if charge["chargeType"] == "SHIPPING":
            sums["shipping"] += amount
        elif amount < 0:
            sums["discount"] -= amount
        else:
            sums["product"] += amount
        if charge.get("tax") is not None:
            sums["tax"] += _amount(_dig(charge, "tax", "taxAmount"), "tax.taxAmount")[0]
    return sums


def _totals(lines: list[JSON]) -> dict[str, Decimal]:
    totals = dict.fromkeys(("product", "discount", "shipping", "tax"), Decimal(0))
    for line in lines:
        for key, value in _line_sums(line).items():
            totals[key] += value
    return totals


def _quantity(line: JSON) -> int:
    raw = _dig(line, "orderLineQuantity", "amount")
    text = str(raw).strip() if isinstance(raw, str | int) and not isinstance(raw, bool) else ""
    if not text.isdecimal() or int(text) <= 0:
        raise MappingError(
            f"line {line.get('lineNumber')!r} has no positive whole orderLineQuantity.amount: {raw!r}"
        )
    return int(text)


def _unit_price(line_amount: Decimal, quantity: int) -> Decimal:
    """The line amount per unit, rounded to 4 places only when it does not divide evenly."""
    price = line_amount / quantity
    exponent = price.as_tuple().exponent
    return price.quantize(PRICE_PLACES) if isinstance(exponent, int) and exponent < -4 else price


def _line(line: JSON, currency: str) -> OrderLine:
    number = _text(line, "lineNumber", "an order line")
    sku = _dig(line, "item", "sku")
    if not isinstance(sku, str) or not sku:
        raise MappingError(f"line {number!r} has no item.sku")
    quantity = _quantity(line)
    sums = _line_sums(line)
    return OrderLine(
        line_id=number,
        sku=sku,
        title=str(_dig(line, "item", "productName") or ""),
        quantity=quantity,
        unit_price=Money(amount=_unit_price(sums["product"], quantity), currency=currency),
        tax=Money(amount=sums["tax"], currency=currency),
        discount=Money(amount=sums["discount"], currency=currency),
    )


def _customer(order: JSON) -> Customer:
    return Customer(
        email=_optional_text(order.get("customerEmailId")),
        name=_optional_text(_dig(order, "shippingInfo", "postalAddress", "name")),
        marketplace_customer_id=_optional_text(order.get("buyerId")),
    )


def _address(address: Any, phone: str | None = None) -> Address | None:
    if not isinstance(address, dict):
        return None
    country = address.get("country")
    code = COUNTRY_CODES.get(country.upper()) if isinstance(country, str) else None
    return Address(
        name=_optional_text(address.get("name")),
        line1=_optional_text(address.get("address1")),
        line2=_optional_text(address.get("address2")),
        city=_optional_text(address.get("city")),
        region=_optional_text(address.get("state")),
        postal_code=_optional_text(address.get("postalCode")),
        country_code=code,
        phone=phone,
    )


__all__ = [
    "CANONICAL_TO_LINE_STATUS",
    "CHANNEL",
    "LINE_STATUS_TO_CANONICAL",
    "ORDER_STATUSES",
    "MappingError",
    "line_status",
    "map_order",
    "order_status",
]
