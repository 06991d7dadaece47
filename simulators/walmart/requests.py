"""What the Walmart Marketplace API accepts in a request body: the simulator's parsing and checks.

Each ``*_requests`` function returns what a valid body asks for or raises ValueError with the
message the simulator answers (HTTP 400, ``walmart_error``); ``inventory_problem`` names why an
inventory body is not one, ``feed_items`` reads an inventory feed (spec 1.4 and 1.5 shapes).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from aiohttp import web

from retail_sync.simulators.walmart.orders import CANCELLATION_REASONS, CARRIERS, METHOD_CODES, REFUND_REASONS

JSON = dict[str, Any]


def inventory_problem(body: Any, sku: str) -> str | None:
    """Why ``body`` is not a valid ``{"sku", "quantity": {"unit": "EACH", "amount"}}`` for sku."""
    if not isinstance(body, dict) or not isinstance(body.get("quantity"), dict):
        return "body must be {sku, quantity: {unit, amount}}"
    if str(body.get("sku")) != sku:
        return f"sku in the body ({body.get('sku')!r}) differs from the sku parameter ({sku!r})"
    quantity = body["quantity"]
    amount = quantity.get("amount")
    if quantity.get("unit") != "EACH":
        return "quantity.unit must be EACH"
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        return f"quantity.amount must be a whole number >= 0, got {amount!r}"
    return None


async def feed_file(request: web.Request) -> bytes | None:
    """The uploaded feed: the multipart ``file`` part, or the body itself."""
    if not request.content_type.startswith("multipart/"):
        return await request.read()
    form = await request.post()
    part = form.get("file")
    if part is None:
        return None
    if isinstance(part, str):
        return part.encode()
    if isinstance(part, bytes | bytearray):
        return bytes(part)
    return bytes(part.file.read())


def feed_items(raw: bytes) -> list[Any] | None:
    """The items of an inventory feed (spec 1.4 ``Inventory``; 1.5 ``inventory[].shipNodes``
    read as the first node's quantity), or None when it is not one."""
    try:
        feed = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(feed, dict):
        return None
    if isinstance(feed.get("Inventory"), list):
        return list(feed["Inventory"])
    if isinstance(feed.get("inventory"), list):
        return [_multi_node(item) for item in feed["inventory"]]
    return None


def _multi_node(item: Any) -> Any:
    nodes = item.get("shipNodes") if isinstance(item, dict) else None
    if not nodes or not isinstance(nodes[0], dict):
        return item
    return {"sku": item.get("sku"), "quantity": nodes[0].get("quantity")}


def cancel_requests(body: Any) -> list[tuple[str, int, str]]:
    """``[(lineNumber, quantity, cancellationReason)]`` of an ``orderCancellation`` body."""
    try:
        lines = body["orderCancellation"]["orderLines"]["orderLine"]
        if not isinstance(lines, list) or not lines:
            raise ValueError
        found = [
            (str(line["lineNumber"]), status)
            for line in lines for status in line["orderLineStatuses"]["orderLineStatus"]
        ]
    except (KeyError, TypeError, ValueError):
        raise ValueError("orderCancellation.orderLines.orderLine[] with lineNumber and "
                         "orderLineStatuses.orderLineStatus[] is required") from None
    requests = []
    for number, status in found:
        reason = status.get("cancellationReason")
        if status.get("status") != "Cancelled" or reason not in CANCELLATION_REASONS:
            raise ValueError(f"lineNumber {number}: status must be Cancelled and cancellationReason "
                             f"one of {', '.join(CANCELLATION_REASONS)}")
        try:
            quantity = int(str(status["statusQuantity"]["amount"]))
        except (KeyError, TypeError, ValueError):
            quantity = 0
        if quantity < 1:
            raise ValueError(f"lineNumber {number}: statusQuantity.amount must be a whole number >= 1")
        requests.append((number, quantity, str(reason)))
    return requests


def _status_lines(body: Any, root: str) -> list[tuple[JSON, JSON]]:
    """``[(orderLine, orderLineStatus)]`` of a ``{root: {"orderLines": {"orderLine": [...]}}}`` body."""
    try:
        lines = body[root]["orderLines"]["orderLine"]
        if not isinstance(lines, list) or not lines:
            raise ValueError
        return [(line, status) for line in lines
                for status in line["orderLineStatuses"]["orderLineStatus"]]
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{root}.orderLines.orderLine[] with lineNumber and "
                         "orderLineStatuses.orderLineStatus[] is required") from None


def _quantity(status: JSON, number: str) -> int:
    try:
        quantity = int(str(status["statusQuantity"]["amount"]))
    except (KeyError, TypeError, ValueError):
        quantity = 0
    if quantity < 1:
        raise ValueError(f"lineNumber {number}: statusQuantity.amount must be a whole number >= 1")
    return quantity


def _tracking_problem(tracking: Any) -> str | None:
    """Why ``trackingInfo`` is not one the spec's TrackingInfoType allows, or None."""
    if not isinstance(tracking, dict):
        return "trackingInfo is required"
    carrier = tracking.get("carrierName")
    if not isinstance(carrier, dict):
        return "trackingInfo.carrierName is required"
    if carrier.get("otherCarrier"):
        if not tracking.get("trackingURL"):
            return "trackingInfo.trackingURL is required with carrierName.otherCarrier"
    elif carrier.get("carrier") not in CARRIERS:
        return f"carrierName.carrier {carrier.get('carrier')!r} is not a valid carrier"
    if tracking.get("methodCode") not in METHOD_CODES:
        return f"trackingInfo.methodCode must be one of {', '.join(METHOD_CODES)}"
    if not tracking.get("trackingNumber"):
        return "trackingInfo.trackingNumber is required"
    ship_time = tracking.get("shipDateTime")
    if isinstance(ship_time, bool) or not isinstance(ship_time, int):
        return "trackingInfo.shipDateTime must be epoch milliseconds"
    return None


def ship_requests(body: Any) -> list[tuple[str, int, JSON]]:
    """``[(lineNumber, quantity, trackingInfo)]`` of an ``orderShipment`` body."""
    requests = []
    for line, status in _status_lines(body, "orderShipment"):
        number = str(line.get("lineNumber"))
        if not line.get("sellerOrderId"):
            raise ValueError(f"lineNumber {number}: sellerOrderId is required")
        if status.get("status") != "Shipped":
            raise ValueError(f"lineNumber {number}: status must be Shipped")
        problem = _tracking_problem(status.get("trackingInfo"))
        if problem is not None:
            raise ValueError(f"lineNumber {number}: {problem}")
        requests.append((number, _quantity(status, number), status["trackingInfo"]))
    return requests


def charge_amount(refund_charge: JSON) -> Decimal:
    charge = refund_charge["charge"]
    tax = (charge.get("tax") or {}).get("taxAmount")
    return Decimal(str(charge["chargeAmount"]["amount"])) + (Decimal(str(tax["amount"])) if tax else 0)


def _refund_charges(refund: Any, number: str) -> list[JSON]:
    charges = refund["refundCharges"]["refundCharge"]
    if not isinstance(charges, list) or not charges:
        raise ValueError(f"lineNumber {number}: refundCharges.refundCharge[] is required")
    for item in charges:
        if item.get("refundReason") not in REFUND_REASONS:
            raise ValueError(f"lineNumber {number}: refundReason {item.get('refundReason')!r} "
                             "is not one of the spec's reasons")
        charge = item["charge"]
        if charge.get("chargeType") not in ("PRODUCT", "SHIPPING") or not charge.get("chargeName"):
            raise ValueError(f"lineNumber {number}: charge needs chargeType PRODUCT or SHIPPING "
                             "and a chargeName")
        if charge_amount(item) >= 0 or Decimal(str(charge["chargeAmount"]["amount"])) > 0:
            raise ValueError(f"lineNumber {number}: refund amounts are negative numbers")
    return charges


def refund_requests(body: Any, po: str) -> list[tuple[str, list[JSON], str | None, bool]]:
    """``[(lineNumber, refundCharges, refundComments, isFullRefund)]`` of an ``orderRefund`` body."""
    try:
        refund = body["orderRefund"]
        lines = refund["orderLines"]["orderLine"]
        if str(refund.get("purchaseOrderId", po)) != po or not isinstance(lines, list) or not lines:
            raise ValueError
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"orderRefund with purchaseOrderId {po} and orderLines.orderLine[] "
                         "is required") from None
    requests = []
    for line in lines:
        number = str(line.get("lineNumber"))
        try:
            for item in line["refunds"]["refund"]:
                charges = _refund_charges(item, number)
                requests.append((number, charges, item.get("refundComments"), bool(line.get("isFullRefund"))))
        except (KeyError, TypeError, ArithmeticError):
            raise ValueError(f"lineNumber {number}: refunds.refund[] with refundCharges "
                             "is required") from None
    return requests


__all__ = [
    "cancel_requests",
    "charge_amount",
    "feed_file",
    "feed_items",
    "inventory_problem",
    "refund_requests",
    "ship_requests",
]
