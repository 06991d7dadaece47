"""Walmart purchase orders for the simulator, shaped like the Orders v3 spec examples.

One purchase order per call to ``WalmartOrderFactory.order``: ``purchaseOrderId`` (13 digits),
``customerOrderId``, a relay ``customerEmailId``, ``orderDate`` in epoch ms, ``shippingInfo`` with a
``postalAddress`` (country "USA"), and ``orderLines.orderLine`` whose ``charges`` carry a PRODUCT
charge (``ItemPrice``, the amount for the whole line: unit price x quantity) with its tax and, on
some lines, a SHIPPING charge. Amounts are JSON numbers in USD, as in the spec. Every line starts in
``Created`` for its full quantity. The same seed gives the same orders.

``OrderBook`` keeps the orders with their last-modified times and answers list calls:
``parse_list_query`` validates a query string (limit 1..200, Walmart date formats, status,
``createdStartDate`` defaulting to seven days ago) and ``OrderBook.page`` selects one page, oldest
first, after the cursor's ``poIndex`` (the last purchase order of the previous page).

Generated lines draw from ``CATALOG`` (or the factory's ``skus``) with Walmart's usual quantities
(mostly 1; or 1..``max_quantity``); ``order(at, lines=[(sku, qty)])`` builds one with exactly those
lines. ``OrderBook.cancel`` applies a seller cancellation the way the cancel endpoint answers it: the
cancelled units leave the line's Created/Acknowledged status quantity and join a ``Cancelled``
entry carrying the ``cancellationReason``, so a partly cancelled line has two status entries.
``OrderBook.ship`` does the same for a shipment: the units move to a ``Shipped`` entry carrying the
``trackingInfo`` (one entry per tracking number). ``OrderBook.refund`` records money back on a line
that has shipped units: the line's ``refund`` (spec ``RefundType``: ``refundId``,
``refundComments``, ``refundCharges.refundCharge[]``) accumulates every refund of the line (the
comments joined with " | ", ``refundId`` the latest), and once the line is fully refunded
(``isFullRefund``, or the refunded item price reaches its PRODUCT charge) its shipped units move to
``Refund`` (keeping their ``trackingInfo``). ``OrderBook.buyer_cancel`` cancels every open unit
with ``CUSTOMER_REQUESTED_SELLER_TO_CANCEL``. Each of these bumps the order's last-modified time.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

JSON = dict[str, Any]
CENT = Decimal("0.01")
DAY_MS = 24 * 3600 * 1000
FIRST_PO = 1_796_277_083_000
MAX_LIMIT = 200
SHIP_NODE_TYPES = ("SellerFulfilled", "WFSFulfilled", "3PLFulfilled")
LINE_STATUSES = ("Created", "Acknowledged", "Shipped", "Delivered", "Cancelled", "Refund")
CANCELLABLE = ("Created", "Acknowledged")
SHIPPED = ("Shipped", "Delivered")
BUYER_CANCEL_REASON = "CUSTOMER_REQUESTED_SELLER_TO_CANCEL"
METHOD_CODES = ("Standard", "Express", "OneDay", "Freight", "WhiteGlove", "Value")
#: ``CarrierNameType.carrier`` of the orders spec
CARRIERS = (
    "UPS", "USPS", "FedEx", "Airborne", "OnTrac", "DHL Ecommerce - US", "DHL", "LS", "UDS", "UPSMI",
    "FDX", "PILOT", "ESTES", "SAIA", "FDS Express", "Seko Worldwide", "HIT Delivery", "FEDEXSP",
    "RL Carriers", "Metropolitan Warehouse & Delivery", "China Post", "YunExpress",
    "Yellow Freight Sys", "AIT Worldwide Logistics", "Chukou1", "Sendle", "Landmark Global",
    "Sunyou", "Yanwen", "4PX", "GLS", "OSM Worldwide", "FIRST MILE", "AM Trucking", "CEVA",
    "India Post", "SF Express", "CNE", "TForce Freight", "AxleHire", "LSO", "Royal Mail",
    "ABF Freight System", "WanB", "Roadrunner Freight", "Meyer Distribution", "AAA Cooper",
    "Canada Post", "Southeastern Freight Lines", "Japan Post", "Correos de Mexico", "XPO Logistics",
    "JD Logistics", "YDH", "JCEX", "Flyt", "Deutsche Post",
)
#: ``RefundChargeType.refundReason`` of the orders spec
REFUND_REASONS = (
    "BillingError", "TaxExemptCustomer", "ItemNotAsAdvertised", "IncorrectItemReceived",
    "CancelledYetShipped", "ItemNotReceivedByCustomer", "IncorrectShippingPrice", "DamagedItem",
    "DefectiveItem", "CustomerChangedMind", "CustomerReceivedItemLate",
    "Missing Parts / Instructions", "Finance -> Goodwill", "Finance -> Rollback", "Buyer canceled",
    "Customer returned item", "General adjustment", "Merchandise not received",
    "Quality -> Missing Parts / Instructions", "Shipping & Delivery -> Damaged",
    "Shipping & Delivery -> Shipping Price Discrepancy", "Others",
)
CANCELLATION_REASONS = (
    "CUSTOMER_REQUESTED_SELLER_TO_CANCEL",
    "SELLER_CANCEL_PRICING_ERROR",
    "SELLER_CANCEL_OUT_OF_STOCK",
    "SELLER_CANCEL_FRAUD_STOP_SHIPMENT",
    "SELLER_CANCEL_ADDRESS_NOT_SERVICEABLE",
)

CATALOG = [
    ("WM-KETTLE-01", "Electric Kettle 1.7L Stainless", Decimal("34.99")),
    ("WM-TOWEL-SET", "Bath Towel Set, 6 Piece, Grey", Decimal("27.50")),
    ("WM-LEGO-CITY", "City Fire Station Building Kit", Decimal("89.99")),
    ("WM-USB-C-2M", "USB-C Charging Cable 2m", Decimal("9.97")),
    ("WM-MUG-4PK", "Stoneware Mug Set, 4 Pack", Decimal("19.88")),
]
ADDRESSES = [
    ("13227 City Square Dr", "Jacksonville", "FL", "32218", Decimal("0.075")),
    ("2200 Wheatsheaf Ln", "Philadelphia", "PA", "19124", Decimal("0.08")),
    ("444 Castro St", "Mountain View", "CA", "94041", Decimal("0.09125")),
    ("702 SW 8th St", "Bentonville", "AR", "72716", Decimal("0.095")),
    ("3258 Warners Rd", "Warners", "NY", "13164", Decimal("0.08")),
]
NAMES = ["Kathryn Cole", "Donald Ashley", "Maria Lopez", "Wei Chen", "Aisha Bello", "Tom Berg"]
METHODS = [("Standard", "STANDARD"), ("Express", "EXPEDITED"), ("Value", "VALUE")]


def now_ms() -> int:
    return int(time.time() * 1000)


def _number(amount: Decimal) -> float | int:
    """A JSON number the way Walmart writes it (99, 7.92)."""
    return int(amount) if amount == amount.to_integral_value() else float(amount)


def _money(amount: Decimal) -> JSON:
    return {"currency": "USD", "amount": _number(amount)}


def _cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


class WalmartOrderFactory:
    """Deterministic purchase orders (same seed, same orders); ``count`` orders made so far."""

    def __init__(
        self, seed: int | None = None, max_lines: int = 3, skus: list[str] | None = None,
        max_quantity: int | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.max_lines = max(1, max_lines)
        self.skus = skus  # None: CATALOG
        self.max_quantity = max_quantity  # None: Walmart's usual mix (mostly 1, up to 3)
        self.count = 0

    def order(self, order_date_ms: int, lines: list[tuple[str, int]] | None = None) -> JSON:
        """The next purchase order; ``lines`` ``[(sku, quantity)]`` fixes its lines."""
        self.count += 1
        street, city, state, postal, tax_rate = self.rng.choice(ADDRESSES)
        method, ship_method = self.rng.choice(METHODS)
        picks: list[tuple[str, int] | None] = (
            list(lines) if lines else [None] * self.rng.randint(1, self.max_lines)
        )
        order_lines = [
            self._line(n, order_date_ms, tax_rate, ship_method, pick)
            for n, pick in enumerate(picks, start=1)
        ]
        return {
            "purchaseOrderId": str(FIRST_PO + self.count),
            "customerOrderId": str(self.rng.randrange(10**12, 10**13)),
            "customerEmailId": f"{self.rng.getrandbits(128):032X}@relay.walmart.com",
            "orderDate": order_date_ms,
            "shippingInfo": {
                "phone": str(self.rng.randrange(2_000_000_000, 9_999_999_999)),
                "estimatedDeliveryDate": order_date_ms + 5 * DAY_MS,
                "estimatedShipDate": order_date_ms + 2 * DAY_MS,
                "methodCode": method,
                "postalAddress": {
                    "name": self.rng.choice(NAMES),
                    "address1": street,
                    "city": city,
                    "state": state,
                    "postalCode": postal,
                    "country": "USA",
                    "addressType": "RESIDENTIAL",
                },
            },
            "orderLines": {"orderLine": order_lines},
        }

    def _item(self) -> tuple[str, int]:
        sku = self.rng.choice(CATALOG)[0] if self.skus is None else self.rng.choice(self.skus)
        if self.max_quantity is None:
            return sku, self.rng.choice((1, 1, 1, 2, 3))
        return sku, self.rng.randint(1, max(1, self.max_quantity))

    def _line(
        self, number: int, order_date_ms: int, tax_rate: Decimal, ship_method: str,
        pick: tuple[str, int] | None = None,
    ) -> JSON:
        sku, quantity = pick or self._item()
        name, unit_price = next(
            ((n, p) for s, n, p in CATALOG if s == sku), (f"Item {sku}", Decimal("10.00"))
        )
        amount = unit_price * quantity
        charges = [self._charge("PRODUCT", "ItemPrice", amount, tax_rate)]
        if self.rng.random() < 0.5:
            charges.append(self._charge("SHIPPING", "Shipping", Decimal("5.99"), tax_rate))
        count = {"unitOfMeasurement": "EACH", "amount": str(quantity)}
        return {
            "lineNumber": str(number),
            "item": {"productName": name, "sku": sku},
            "charges": {"charge": charges},
            "orderLineQuantity": count,
            "statusDate": order_date_ms,
            "orderLineStatuses": {"orderLineStatus": [{"status": "Created", "statusQuantity": dict(count)}]},
            "fulfillment": {
                "fulfillmentOption": "S2H",
                "shipMethod": ship_method,
                "pickUpDateTime": order_date_ms + 3 * DAY_MS,
            },
        }

    def _charge(self, charge_type: str, name: str, amount: Decimal, tax_rate: Decimal) -> JSON:
        charge: JSON = {"chargeType": charge_type, "chargeName": name, "chargeAmount": _money(amount)}
        tax = _cents(amount * tax_rate)
        if tax:
            charge["tax"] = {"taxName": "Tax1", "taxAmount": _money(tax)}
        return charge


def parse_walmart_date(value: str) -> int:
    """``yyyy-MM-dd`` or ISO-8601 (``Z`` or an offset) as epoch ms; a naive time is UTC."""
    parsed = datetime.fromisoformat(value.strip())
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


@dataclass(frozen=True)
class ListQuery:
    """The filters and cursor position of one list call."""

    limit: int
    created_start: int
    created_end: int | None
    modified_start: int | None
    status: str | None
    sku: str | None
    purchase_order_id: str | None
    customer_order_id: str | None
    after_po: str | None
    extra: dict[str, str]  # filters echoed into nextCursor


_DATE_PARAMS = ("createdStartDate", "createdEndDate", "lastModifiedStartDate")


def _dates(query: Any) -> dict[str, int | None]:
    dates: dict[str, int | None] = {}
    for name in _DATE_PARAMS:
        raw = query.get(name)
        try:
            dates[name] = parse_walmart_date(raw) if raw else None
        except ValueError:
            raise ValueError(name, f"Invalid value for {name}: {raw!r}") from None
    return dates


def parse_list_query(query: Any, at_ms: int) -> ListQuery:
    """Validate the query string of a list call; ValueError(field, description) on bad input."""
    try:
        limit = int(query.get("limit", "100"))
    except ValueError:
        raise ValueError("limit", "limit must be a number") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError("limit", f"limit must be between 1 and {MAX_LIMIT}")
    if query.get("shipNodeType", "SellerFulfilled") not in SHIP_NODE_TYPES:
        raise ValueError("shipNodeType", f"shipNodeType must be one of {', '.join(SHIP_NODE_TYPES)}")
    status = query.get("status")
    if status is not None and status not in LINE_STATUSES:
        raise ValueError("status", f"Invalid value for status: {status!r}")
    dates = _dates(query)
    default_start = at_ms - int(timedelta(days=7).total_seconds() * 1000)
    echo = {k: query[k] for k in ("status", "sku", "replacementInfo", *_DATE_PARAMS)
            if k in query}
    return ListQuery(
        limit=limit,
        created_start=dates["createdStartDate"] or default_start,
        created_end=dates["createdEndDate"],
        modified_start=dates["lastModifiedStartDate"],
        status=status,
        sku=query.get("sku"),
        purchase_order_id=query.get("purchaseOrderId"),
        customer_order_id=query.get("customerOrderId"),
        after_po=query.get("poIndex"),
        extra=echo,
    )


def line_statuses(order: JSON) -> set[str]:
    return {
        status["status"]
        for line in order["orderLines"]["orderLine"]
        for status in line["orderLineStatuses"]["orderLineStatus"]
    }


class OrderBook:
    """The simulator's purchase orders, their last-modified times, and how list calls see them."""

    def __init__(self, factory: WalmartOrderFactory) -> None:
        self.factory = factory
        self.orders: dict[str, JSON] = {}  # purchaseOrderId -> order, in creation order
        self.modified_ms: dict[str, int] = {}

    def generate(
        self, n: int, base_time_ms: int | None, interval_ms: int,
        accept: Callable[[JSON], bool] | None = None, lines: list[tuple[str, int]] | None = None,
    ) -> list[JSON]:
        """Make ``n`` orders in Created status (deterministic for a seed) and keep those
        ``accept`` takes (a refused order is not stored; its purchase order id stays unused).
        Returns copies of the stored ones."""
        created = []
        for _ in range(n):
            at = self._next_order_date(base_time_ms, interval_ms)
            order = self.factory.order(at, lines)
            if accept is None or accept(order):
                created.append(self.add(order))
        return created

    def _next_order_date(self, base_time_ms: int | None, interval_ms: int) -> int:
        if base_time_ms is not None:
            return base_time_ms + self.factory.count * interval_ms
        latest = max((o["orderDate"] for o in self.orders.values()), default=0)
        return max(now_ms(), latest + 1)

    def add(self, order: JSON) -> JSON:
        """Store an order as given (replacing one with the same purchaseOrderId)."""
        po = str(order["purchaseOrderId"])
        self.orders[po] = copy.deepcopy(order)
        self.modified_ms[po] = now_ms()
        return copy.deepcopy(order)

    def set_line_status(self, po: str, line_number: str, status: str) -> JSON:
        """Move one whole line to ``status`` (any of the spec's six); returns the order."""
        if status not in LINE_STATUSES:
            raise ValueError(f"unknown line status {status!r}; Walmart has {LINE_STATUSES}")
        order = self.orders[po]
        lines = [ln for ln in order["orderLines"]["orderLine"] if ln["lineNumber"] == str(line_number)]
        if not lines:
            raise KeyError(f"order {po} has no line {line_number}")
        self._set_status(po, lines[0], status)
        return copy.deepcopy(order)

    def _set_status(self, po: str, line: JSON, status: str) -> None:
        now = now_ms()
        quantity = dict(line["orderLineQuantity"])
        line["orderLineStatuses"] = {"orderLineStatus": [{"status": status, "statusQuantity": quantity}]}
        line["statusDate"] = now
        self.modified_ms[po] = now

    def acknowledge(self, po: str) -> JSON:
        """Walmart's acknowledge: every Created line becomes Acknowledged (others unchanged)."""
        order = self.orders[po]
        for line in order["orderLines"]["orderLine"]:
            if {s["status"] for s in line["orderLineStatuses"]["orderLineStatus"]} == {"Created"}:
                self._set_status(po, line, "Acknowledged")
        return copy.deepcopy(order)

    def cancel(self, po: str, requests: list[tuple[str, int, str]]) -> list[tuple[JSON, int, str]]:
        """Cancel ``[(lineNumber, quantity, reason)]`` of ``po``: all or nothing, ValueError when a
        line is unknown or has fewer Created/Acknowledged units than asked. Returns
        ``[(line, quantity, reason)]`` as applied."""
        order = self.orders[po]
        by_number = {ln["lineNumber"]: ln for ln in order["orderLines"]["orderLine"]}
        asked: dict[str, int] = {}
        for number, qty, _ in requests:
            if number not in by_number:
                raise ValueError(f"lineNumber {number} is not a line of purchase order {po}")
            asked[number] = asked.get(number, 0) + qty
        for number, qty in asked.items():
            if qty > cancellable_units(by_number[number]):
                raise ValueError(
                    f"lineNumber {number}: cannot cancel {qty}, "
                    f"{cancellable_units(by_number[number])} unit(s) are cancellable"
                )
        for number, qty, reason in requests:
            self._cancel_units(po, by_number[number], qty, reason)
        return [(by_number[number], qty, reason) for number, qty, reason in requests]

    def _cancel_units(self, po: str, line: JSON, qty: int, reason: str) -> None:
        kept = self._take_open(line, qty)
        done = next((e for e in kept if e["status"] == "Cancelled"
                     and e.get("cancellationReason") == reason), None)
        if done is None:
            unit = line["orderLineQuantity"].get("unitOfMeasurement", "EACH")
            done = {"status": "Cancelled", "cancellationReason": reason,
                    "statusQuantity": {"unitOfMeasurement": unit, "amount": "0"}}
            kept.append(done)
        done["statusQuantity"]["amount"] = str(_units(done) + qty)
        line["orderLineStatuses"]["orderLineStatus"] = kept
        line["statusDate"] = self.modified_ms[po] = now_ms()

    def buyer_cancel(self, po: str) -> list[tuple[JSON, int, str]]:
        """The buyer cancels: every unit still Created/Acknowledged becomes Cancelled with
        ``CUSTOMER_REQUESTED_SELLER_TO_CANCEL``. ValueError when nothing is open any more."""
        lines = self.orders[po]["orderLines"]["orderLine"]
        requests = [(ln["lineNumber"], cancellable_units(ln), BUYER_CANCEL_REASON)
                    for ln in lines if cancellable_units(ln) > 0]
        if not requests:
            raise ValueError(f"purchase order {po} has nothing left to cancel")
        return self.cancel(po, requests)

    def ship(self, po: str, requests: list[tuple[str, int, JSON]]) -> None:
        """Ship ``[(lineNumber, quantity, trackingInfo)]`` of ``po``: all or nothing, ValueError
        when a line is unknown or has fewer Created/Acknowledged units than asked."""
        order = self.orders[po]
        by_number = {ln["lineNumber"]: ln for ln in order["orderLines"]["orderLine"]}
        asked: dict[str, int] = {}
        for number, qty, _ in requests:
            if number not in by_number:
                raise ValueError(f"lineNumber {number} is not a line of purchase order {po}")
            asked[number] = asked.get(number, 0) + qty
        for number, qty in asked.items():
            if qty > cancellable_units(by_number[number]):
                raise ValueError(f"lineNumber {number}: cannot ship {qty}, "
                                 f"{cancellable_units(by_number[number])} unit(s) are open")
        for number, qty, tracking in requests:
            self._ship_units(po, by_number[number], qty, tracking)

    def _take_open(self, line: JSON, qty: int) -> list[JSON]:
        """Take ``qty`` units off the line's Created/Acknowledged entries; the entries left."""
        entries = line["orderLineStatuses"]["orderLineStatus"]
        left = qty
        for entry in [e for e in entries if e["status"] in CANCELLABLE]:
            take = min(left, _units(entry))
            entry["statusQuantity"]["amount"] = str(_units(entry) - take)
            left -= take
        return [e for e in entries if e["status"] not in CANCELLABLE or _units(e) > 0]

    def _ship_units(self, po: str, line: JSON, qty: int, tracking: JSON) -> None:
        kept = self._take_open(line, qty)
        number = tracking.get("trackingNumber")
        done = next((e for e in kept if e["status"] == "Shipped"
                     and (e.get("trackingInfo") or {}).get("trackingNumber") == number), None)
        if done is None:
            unit = line["orderLineQuantity"].get("unitOfMeasurement", "EACH")
            done = {"status": "Shipped", "statusQuantity": {"unitOfMeasurement": unit, "amount": "0"},
                    "trackingInfo": copy.deepcopy(tracking)}
            kept.append(done)
        done["statusQuantity"]["amount"] = str(_units(done) + qty)
        line["orderLineStatuses"]["orderLineStatus"] = kept
        line["statusDate"] = self.modified_ms[po] = now_ms()

    def refund(self, po: str, requests: list[tuple[str, list[JSON], str | None, bool]],
               refund_id: str) -> None:
        """Refund ``[(lineNumber, refundCharges, refundComments, isFullRefund)]`` of ``po`` (charge
        amounts negative, as in the spec): all or nothing, ValueError when a line is unknown, has
        nothing shipped, or would be refunded more than its charges and taxes."""
        order = self.orders[po]
        by_number = {ln["lineNumber"]: ln for ln in order["orderLines"]["orderLine"]}
        asked: dict[str, Decimal] = {}
        for number, charges, _, _ in requests:
            line = by_number.get(number)
            if line is None:
                raise ValueError(f"lineNumber {number} is not a line of purchase order {po}")
            statuses = {e["status"] for e in line["orderLineStatuses"]["orderLineStatus"]}
            if not statuses & {*SHIPPED, "Refund"}:
                raise ValueError(f"lineNumber {number} has not been shipped; cancel it instead")
            amount = sum((_charge_total(c) for c in charges), Decimal(0))
            asked[number] = asked.get(number, Decimal(0)) + amount
        for number, amount in asked.items():
            room = _line_total(by_number[number]) - _refunded_total(by_number[number])
            if -amount > room:
                raise ValueError(f"lineNumber {number}: cannot refund {-amount}, {room} is left")
        for number, charges, comments, full in requests:
            self._refund_line(po, by_number[number], charges, comments, full, refund_id)

    def _refund_line(self, po: str, line: JSON, charges: list[JSON], comments: str | None,
                     full: bool, refund_id: str) -> None:
        refund = line.setdefault("refund", {"refundCharges": {"refundCharge": []}})
        refund["refundId"] = refund_id
        if comments:
            earlier = refund.get("refundComments")
            refund["refundComments"] = f"{earlier} | {comments}" if earlier else comments
        refund["refundCharges"]["refundCharge"].extend(copy.deepcopy(charges))
        product = sum((_amount(c["chargeAmount"]) for c in line["charges"]["charge"]
                       if c["chargeType"] == "PRODUCT"), Decimal(0))
        refunded_product = -sum((_amount(c["charge"]["chargeAmount"]) for c in
                                 refund["refundCharges"]["refundCharge"]
                                 if c["charge"].get("chargeType") == "PRODUCT"), Decimal(0))
        if full or refunded_product >= product:
            for entry in line["orderLineStatuses"]["orderLineStatus"]:
                if entry["status"] in SHIPPED:
                    entry["status"] = "Refund"
        line["statusDate"] = self.modified_ms[po] = now_ms()

    def _matches(self, order: JSON, q: ListQuery, released: bool) -> bool:
        statuses = line_statuses(order)
        po = order["purchaseOrderId"]
        checks = (
            order["orderDate"] >= q.created_start,
            q.created_end is None or order["orderDate"] <= q.created_end,
            q.modified_start is None or self.modified_ms[po] >= q.modified_start,
            not released or "Created" in statuses,
            q.status is None or q.status in statuses,
            q.purchase_order_id is None or po == q.purchase_order_id,
            q.customer_order_id is None or order["customerOrderId"] == q.customer_order_id,
            q.sku is None or any(ln["item"]["sku"] == q.sku for ln in order["orderLines"]["orderLine"]),
        )
        return all(checks)

    def page(self, q: ListQuery, released: bool) -> tuple[list[JSON], int, bool]:
        """Matching orders after the cursor, oldest first: (page, total matching, more after)."""
        hits = sorted(
            (o for o in self.orders.values() if self._matches(o, q, released)),
            key=lambda o: (o["orderDate"], o["purchaseOrderId"]),
        )
        start = 0
        if q.after_po is not None and q.after_po in self.orders:
            last = self.orders[q.after_po]
            key = (last["orderDate"], last["purchaseOrderId"])
            start = sum(1 for o in hits if (o["orderDate"], o["purchaseOrderId"]) <= key)
        page = hits[start : start + q.limit]
        return page, len(hits), start + q.limit < len(hits)


def _units(entry: JSON) -> int:
    return int(Decimal(str(entry["statusQuantity"]["amount"])))


def cancellable_units(line: JSON) -> int:
    """Units of ``line`` still Created or Acknowledged (what a seller can cancel)."""
    return sum(_units(e) for e in line["orderLineStatuses"]["orderLineStatus"] if e["status"] in CANCELLABLE)


def shipped_units(line: JSON) -> int:
    """Units of ``line`` Shipped or Delivered (refunded ones not counted)."""
    return sum(_units(e) for e in line["orderLineStatuses"]["orderLineStatus"] if e["status"] in SHIPPED)


def _amount(money: Any) -> Decimal:
    return Decimal(str(money["amount"]))


def _charge_total(refund_charge: JSON) -> Decimal:
    """A refund charge's amount with its tax (negative)."""
    charge = refund_charge["charge"]
    tax = charge.get("tax") or {}
    return _amount(charge["chargeAmount"]) + (_amount(tax["taxAmount"]) if tax.get("taxAmount") else 0)


def _line_total(line: JSON) -> Decimal:
    """What the buyer paid for a line: its charges and their taxes."""
    return sum((_amount(c["chargeAmount"]) + (_amount(c["tax"]["taxAmount"]) if c.get("tax") else 0)
                for c in line["charges"]["charge"]), Decimal(0))


def _refunded_total(line: JSON) -> Decimal:
    charges = ((line.get("refund") or {}).get("refundCharges") or {}).get("refundCharge") or []
    return -sum((_charge_total(c) for c in charges), Decimal(0))


def cancelled_units(line: JSON) -> int:
    return sum(_units(e) for e in line["orderLineStatuses"]["orderLineStatus"] if e["status"] == "Cancelled")


__all__ = [
    "BUYER_CANCEL_REASON",
    "CANCELLATION_REASONS",
    "CARRIERS",
    "CATALOG",
    "METHOD_CODES",
    "REFUND_REASONS",
    "LINE_STATUSES",
    "ListQuery",
    "OrderBook",
    "WalmartOrderFactory",
    "cancellable_units",
    "cancelled_units",
    "line_statuses",
    "now_ms",
    "parse_list_query",
    "parse_walmart_date",
    "shipped_units",
]
