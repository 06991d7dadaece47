"""ERPNext (Frappe REST) implementation of the ErpConnector contract.

Speaks ``/api/resource/Sales Order`` with ``Authorization: token key:secret``. The canonical
order becomes a Sales Order inserted and submitted (``"docstatus": 1``, so the ERP reserves its
stock) under the channel's Customer (``RETAIL_SYNC_ERP_CHANNEL_CUSTOMERS``: one Customer per
marketplace, the buyer in ``contact_email``/``custom_buyer_*``), whose ``po_no`` and unique Custom
Field ``custom_marketplace_order_key`` are our ``order_key``. Units the engine accepted without
stock travel per item in the Custom Field ``custom_backorder_qty``. Every field it writes is an
ERPNext field or one of ``connectors.erp_fields.CUSTOM_FIELDS``.

Exactly once, on the ERP as it is (ERPNext has no idempotent insert): every create first looks
the document up by its unique reference (Sales Order ``custom_marketplace_order_key``, Delivery
Note ``custom_shipment_id``, return note and credit note ``custom_return_id``) and answers the
one found (``created=False``), so a retry after a post that timed out once the ERP had created
it finds it. Two posts racing past the lookup are settled by the field's unique index: Frappe
refuses the second with 417 (``UniqueValidationError``; 409 ``DuplicateEntryError`` is also
accepted), and a refused create that the lookup then finds is that document, not an error.

Every HTTP and network failure is converted here, at the edge, into the sync error hierarchy
(``FrappeSession`` and ``error_for_status``, shared with the stock feed in ``connectors.erp_stock``):

    200/201 with data.name        -> ErpPostResult (created_at = the order's ``creation``)
    409/417 and the lookup finds  -> the existing document (created=False)
    429                           -> RateLimitedError (retry_after from Retry-After)
    5xx, timeouts, connection     -> RetryableError
    other 4xx, 2xx without a name -> PermanentError (status, body truncated to 4 KiB)

After the order (issue 5), every call reads the Sales Order first and maps our ``line_id`` to its
item through ``marketplace_line_id`` (``so_detail`` = that item's ``name``, its rate, warehouse):

* ``post_shipment``: a submitted ``Delivery Note`` (``po_no`` our order key, header
  ``custom_shipment_id``/``custom_carrier``/``custom_tracking_number``/``custom_shipped_at``,
  rows ``against_sales_order``/``so_detail``), looked up by ``custom_shipment_id`` first;
  the invoice the ERP raises for it is read from the note's ``custom_sales_invoice``.
* ``cancel_sales_order``: ``POST /api/method/frappe.client.cancel`` with ``reason`` (kept in
  ``custom_cancel_reason``); a 417 on an order that is already cancelled counts as done, any
  other refusal (e.g. something was delivered) is a PermanentError with Frappe's message.
* ``post_return``: looked up first by ``custom_return_id`` = ``refund.refund_id`` (so a retry
  never re-allocates): with ``restock``, a return ``Delivery Note`` (negative quantities, rows
  ``dn_detail`` of the shipped rows, oldest shipment first, ``return_against`` when they all come
  from one note); then a Credit Note (``Sales Invoice``, ``is_return`` 1) for exactly
  ``refund.amount``: the refunded lines at the order's rates, the rest (tax, shipping, partial
  refunds, or the whole amount when no line is named: one zero-quantity row) as one ``Actual``
  charge "Refunds and Adjustments". ``return_against`` is the oldest invoice of the order with
  enough left to credit; when no single invoice has, the credit note goes against the order
  (``sales_order``) alone, as ERPNext allows.

``rows_modified_since`` is the shared "poll a doctype by ``modified``" paging (see
``connectors.erp_stock`` for why it pages on the last row's ``modified``), used by the order
feed in ``connectors.erp_orders``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any
from urllib.parse import quote

import aiohttp

from retail_sync.connectors.base import ErpPostResult, ErpReturnResult, ErpShipmentResult, Refund, Shipment
from retail_sync.connectors.erp_fields import (
    CHANNEL_CUSTOMERS,
    DEFAULT_COMPANY,
    DEFAULT_CUSTOMER,
    DEFAULT_WAREHOUSE,
    LINE_FIELD,
    MARKETPLACE_WAREHOUSE,
    ORDER_KEY_FIELD,
    RETURN_FIELD,
    SHIPMENT_FIELD,
    parse_channel_customers,
)
from retail_sync.connectors.errors import (
    DecodeError,
    PermanentError,
    RateLimitedError,
    RetryableError,
    SyncError,
    parse_retry_after,
)
from retail_sync.settings import Settings
from retail_sync.streams.models import Address, NameValue, Order, OrderLine

SALES_ORDER = "Sales Order"
DELIVERY_NOTE, SALES_INVOICE = "Delivery Note", "Sales Invoice"
ADJUSTMENT_ACCOUNT = "Refunds and Adjustments"
MAX_ERROR_BODY = 4 * 1024
JSON = dict[str, Any]
CENT, RATE_PLACES = Decimal("0.01"), Decimal("0.0001")
TAX_ACCOUNT, SHIPPING_ACCOUNT = "Sales Tax", "Freight and Forwarding Charges"


# --- pure mapping -----------------------------------------------------------------------------


def _amount(value: Decimal) -> str:
    """Decimal as a plain string, so no precision is lost in JSON."""
    return format(value, "f")


def discounted_rate(line: OrderLine) -> Decimal:
    """The unit price the buyer paid: the line's price less its discount spread over its units
    (Shopify ``discount_allocations``, Amazon ``PromotionDiscount``, Walmart negative PRODUCT
    charges), to 4 places when it does not divide (as unit prices are, streams.models)."""
    rate = line.unit_price.amount - line.discount.amount / line.quantity
    exponent = rate.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -4:
        rate = rate.quantize(RATE_PLACES, ROUND_HALF_EVEN)
    return max(rate, Decimal(0))


def _pairs(pairs: list[NameValue]) -> str | None:
    return "\n".join(f"{p.name}: {p.value}" for p in pairs) or None


def _items(
    order: Order, delivery_date: str, warehouse: str, backorders: Mapping[str, int]
) -> list[JSON]:
    """One item per line at the discounted rate: ``price_list_rate`` the marketplace's unit
    price, ``discount_amount`` the discount per unit, ``rate`` what the buyer paid per unit."""
    unknown = set(backorders) - {line.line_id for line in order.lines}
    if unknown:
        raise ValueError(f"backorders name lines the order does not have: {sorted(unknown)}")
    items = []
    for line in order.lines:
        rate = discounted_rate(line)
        item: JSON = {
            "item_code": line.sku,
            "item_name": line.title or line.sku,
            "qty": line.quantity,
            "rate": _amount(rate),
            "uom": "Nos",
            "delivery_date": delivery_date,
            "warehouse": warehouse,
            LINE_FIELD: line.line_id,
        }
        if rate != line.unit_price.amount:
            item["price_list_rate"] = _amount(line.unit_price.amount)
            item["discount_amount"] = _amount(line.unit_price.amount - rate)
        if line.properties:  # e.g. the engraving text the warehouse must apply
            item["additional_notes"] = _pairs(line.properties)
        if line.marketplace_product_id:  # the marketplace's own code of the item (ASIN)
            item["customer_item_code"] = line.marketplace_product_id
        if line.condition:
            item["custom_item_condition"] = line.condition
        if backorders.get(line.line_id):
            item["custom_backorder_qty"] = backorders[line.line_id]
        items.append(item)
    return items


def line_discounts(order: Order) -> Decimal:
    """What the items' discounted rates take off, in the order's currency (to the cent)."""
    return sum(((ln.unit_price.amount - discounted_rate(ln)) * ln.quantity
                for ln in order.lines), Decimal(0)).quantize(CENT)


def _actual_charge(account_head: str, description: str, amount: Decimal) -> JSON:
    return {
        "charge_type": "Actual",
        "account_head": account_head,
        "description": description,
        "tax_amount": _amount(amount),
    }


def _tax_rows(order: Order) -> list[JSON]:
    """One ``Actual`` row per tax of the order by name and rate (``description`` "State Tax
    6.25%", ``rate`` the percentage), their amounts summing to ``tax_total`` (spread in proportion
    when the order was cut to fewer units); one "Marketplace sales tax" row when the channel
    names no tax (Amazon). Rows are fixed amounts: the marketplace computed the tax, the ERP must
    not compute it again."""
    total = order.tax_total.amount
    named = [t for t in order.tax_lines if t.amount.amount]
    stated = sum((t.amount.amount for t in named), Decimal(0))
    if not named or not stated:
        return [_actual_charge(TAX_ACCOUNT, "Marketplace sales tax", total)]
    rows, left = [], total
    for i, tax in enumerate(named):
        amount = left if i == len(named) - 1 else (tax.amount.amount * total / stated).quantize(CENT)
        left -= amount
        percent = None if tax.rate is None else (tax.rate * 100).normalize()
        row = _actual_charge(TAX_ACCOUNT, tax.title if percent is None else
                             f"{tax.title} {format(percent, 'f')}%", amount)
        if percent is not None:
            row["rate"] = _amount(percent)
        rows.append(row)
    return rows


def _taxes(order: Order) -> list[JSON]:
    """Tax (unless already inside the prices) and shipping as fixed-amount rows."""
    rows = []
    if order.tax_total.amount and not order.taxes_included:
        rows.extend(_tax_rows(order))
    if order.shipping.amount:
        method = f"Shipping: {order.shipping_method}" if order.shipping_method else "Shipping"
        rows.append(_actual_charge(SHIPPING_ACCOUNT, method, order.shipping.amount))
    return rows


def address_text(address: Address | None) -> str | None:
    """An address as ERPNext displays one (its address template: lines, city, region and postal
    code, country, phone), for the read-only display fields."""
    if address is None:
        return None
    place = " ".join(p for p in (address.city, address.region, address.postal_code) if p)
    rows = [address.name, address.company, address.line1, address.line2, place,
            address.country_code, f"Phone: {address.phone}" if address.phone else None]
    return "\n".join(r for r in rows if r) or None


def _date_not_before(moment: Any, floor: str) -> str:
    return max(moment.date().isoformat(), floor) if moment is not None else floor


def _customer_fields(order: Order) -> JSON:
    """The buyer: email in ERPNext's ``contact_email``, name and marketplace id in Custom
    Fields (``customer``/``customer_name`` are the channel's Customer)."""
    billing, shipping = order.billing_address, order.shipping_address
    phone = order.customer.phone or (billing and billing.phone) or (shipping and shipping.phone)
    more = {"contact_phone": phone or None, "address_display": address_text(billing),
            "shipping_address": address_text(shipping)}
    return {
        "contact_email": order.customer.email,
        "custom_buyer_name": order.customer.name,
        "custom_buyer_id": order.customer.marketplace_customer_id,
        **{k: v for k, v in more.items() if v is not None},
    }


def _carried_fields(order: Order) -> JSON:
    """The rest of what finance and the warehouse need, in Custom Fields (erp_fields; absent
    when the order has nothing to say)."""
    codes = ", ".join(d.code if d.amount is None else f"{d.code} ({d.amount.amount})"
                      for d in order.discount_codes)
    fields: JSON = {
        "custom_ship_by": order.ship_by.strftime("%Y-%m-%d %H:%M:%S") if order.ship_by else None,
        "custom_shipping_method": order.shipping_method,
        "custom_fulfilled_by": order.fulfilled_by,
        "custom_is_prime": 1 if order.is_prime else None,
        "custom_is_gift": 1 if order.is_gift else None,
        "custom_marketplace_order_type": order.order_type,
        "custom_original_order_id": order.original_order_id,
        "custom_discount_codes": codes or None,
        "custom_buyer_note": order.note,
        "custom_note_attributes": _pairs(order.note_attributes),
        "custom_buyer_po_no": order.buyer_po_number,
    }
    return {k: v for k, v in fields.items() if v is not None}


def sales_order_doc(
    order_key: str,
    order: Order,
    *,
    company: str,
    customer: str,
    warehouse: str,
    backorders: Mapping[str, int] | None = None,
    marketplace_warehouse: str = MARKETPLACE_WAREHOUSE,
) -> JSON:
    """The ERPNext Sales Order document for a canonical order: submitted on insert (so the ERP
    reserves stock), ``po_no`` and the unique ``custom_marketplace_order_key`` our order key.
    ``backorders`` maps a line_id to the units of that line accepted without stock
    (``custom_backorder_qty``); a line_id not in the order is a ValueError. Items are at the
    discounted rate; ``delivery_date`` is the promised delivery date when the channel states one.
    An order the marketplace fulfils from its own stock (Amazon AFN) is booked in
    ``marketplace_warehouse`` (so it reserves none of ours) with ``skip_delivery_note``: our
    warehouse never ships it (docs/ARCHITECTURE.md §5g).
    """
    transaction_date = order.created_at.date().isoformat()  # created_at is UTC
    delivery_date = _date_not_before(order.deliver_by, transaction_date)
    if order.fulfilled_by_marketplace:
        warehouse = marketplace_warehouse
    doc: JSON = {
        "docstatus": 1,
        "customer": customer,
        "company": company,
        "order_type": "Sales",
        "po_no": order_key,
        ORDER_KEY_FIELD: order_key,
        "po_date": transaction_date,
        "transaction_date": transaction_date,
        "delivery_date": delivery_date,
        "currency": order.currency,
        "set_warehouse": warehouse,
        "custom_marketplace": order.channel,
        "custom_marketplace_order_id": order.marketplace_order_id,
        "custom_marketplace_order_name": order.marketplace_order_name,
        **_customer_fields(order),
        **_carried_fields(order),
        "items": _items(order, delivery_date, warehouse, backorders or {}),
        "taxes": _taxes(order),
    }
    if order.fulfilled_by_marketplace:
        doc["skip_delivery_note"] = 1
    # what the items' rates do not already take off (an order-level or shipping discount)
    rest = order.discount_total.amount - line_discounts(order)
    if rest > 0:
        doc["apply_discount_on"] = "Net Total"
        doc["discount_amount"] = _amount(rest)
    return doc


# --- after the order: pure document mapping ---------------------------------------------------


def _dec(value: Any) -> Decimal:
    return Decimal(str(value or 0))


def order_item(so: JSON, line_id: str, sku: str) -> JSON:
    """The Sales Order item of our line ``line_id`` (by ``custom_marketplace_line_id``; an order
    typed into the ERP by hand: the first item of ``sku``); PermanentError when there is none."""
    items = so.get("items") or []
    found = next((i for i in items if i.get(LINE_FIELD) == line_id), None)
    found = found or next((i for i in items if i.get("item_code") == sku), None)
    if found is None:
        raise PermanentError(f"ERP sales order {so.get('name')} has no line {line_id} ({sku})")
    return dict(found)


def _header(order_key: str, so: JSON) -> JSON:
    return {
        "docstatus": 1,
        "customer": so.get("customer"),
        "company": so.get("company"),
        "currency": so.get("currency"),
        "po_no": order_key,
        "set_warehouse": so.get("set_warehouse"),
    }


def delivery_note_doc(order_key: str, so: JSON, shipment: Shipment) -> JSON:
    """The submitted Delivery Note for a warehouse shipment against Sales Order ``so``."""
    items = []
    for line in shipment.lines:
        item = order_item(so, line.line_id, line.sku)
        items.append({
            "item_code": item["item_code"], "qty": line.quantity, "rate": item.get("rate"),
            "warehouse": item.get("warehouse") or so.get("set_warehouse"),
            "against_sales_order": so["name"], "so_detail": item["name"],
            LINE_FIELD: line.line_id,
        })  # fmt: skip
    return {
        **_header(order_key, so),
        "posting_date": shipment.shipped_at[:10],
        SHIPMENT_FIELD: shipment.shipment_id,
        "custom_carrier": shipment.carrier,
        "custom_tracking_number": shipment.tracking_number,
        "custom_shipped_at": shipment.shipped_at,
        "items": items,
    }


def return_rows(so: JSON, notes: list[JSON], refund: Refund) -> list[tuple[str, JSON, int]]:
    """(Delivery Note, its row, units) sending ``refund.lines`` back: the oldest shipped rows
    first, each up to what it shipped less what already came back."""
    rows = []
    for line in refund.lines:
        item, need = order_item(so, line.line_id, line.sku), line.quantity
        for note in notes:
            for row in note.get("items") or []:
                if need <= 0 or row.get("so_detail") != item["name"]:
                    continue
                take = min(need, int(_dec(row.get("qty")) - _dec(row.get("returned_qty"))))
                if take > 0:
                    rows.append((note["name"], row, take))
                    need -= take
        if need > 0:
            raise PermanentError(
                f"ERP return {refund.refund_id}: {need} units of line {line.line_id} were not "
                f"delivered (or already returned) on sales order {so.get('name')}"
            )
    return rows


def return_note_doc(order_key: str, so: JSON, refund: Refund,
                    rows: list[tuple[str, JSON, int]]) -> JSON:
    """The submitted return Delivery Note (negative quantities) for ``rows``."""
    sources = {name for name, _, _ in rows}
    return {
        **_header(order_key, so),
        "is_return": 1,
        "return_against": sources.pop() if len(sources) == 1 else None,
        RETURN_FIELD: refund.refund_id,
        "custom_return_reason": refund.reason,
        "items": [{"item_code": row["item_code"], "qty": -qty, "rate": row.get("rate"),
                   "warehouse": row.get("warehouse"), "against_sales_order": so["name"],
                   "so_detail": row.get("so_detail"), "dn_detail": row["name"],
                   LINE_FIELD: row.get(LINE_FIELD)}
                  for _, row, qty in rows],
    }  # fmt: skip


def refund_amount(refund: Refund) -> Decimal:
    try:
        amount = Decimal(refund.amount)
    except (ArithmeticError, ValueError):
        raise PermanentError(f"refund {refund.refund_id}: bad amount {refund.amount!r}") from None
    if not amount.is_finite() or amount <= 0:
        raise PermanentError(f"refund {refund.refund_id}: amount must be positive, got {amount}")
    return amount


def credit_note_doc(order_key: str, so: JSON, refund: Refund, return_against: str | None) -> JSON:
    """The Credit Note for exactly ``refund.amount``: the refunded lines at the order's rates and
    the difference as one Actual charge (see the module doc)."""
    amount, items = refund_amount(refund), []
    for line in refund.lines:
        item = order_item(so, line.line_id, line.sku)
        items.append({"item_code": item["item_code"], "qty": -line.quantity,
                      "rate": item.get("rate"), "sales_order": so["name"],
                      "so_detail": item["name"], LINE_FIELD: line.line_id})  # fmt: skip
    if not items:
        first = (so.get("items") or [{}])[0]
        items.append({"item_code": first.get("item_code"), "qty": 0, "rate": 0,
                      "sales_order": so["name"],
                      "description": f"Refund {refund.refund_id}"})  # fmt: skip
    lines_total = sum((_dec(i["qty"]) * _dec(i["rate"]) for i in items), Decimal(0))
    adjustment = (-lines_total - amount).quantize(Decimal("0.01")) if items else -amount
    taxes = [] if not adjustment else [{
        "charge_type": "Actual", "account_head": ADJUSTMENT_ACCOUNT,
        "description": f"Refund {refund.refund_id}: {refund.reason}",
        "tax_amount": _amount(adjustment)}]  # fmt: skip
    return {**_header(order_key, so), "is_return": 1, "return_against": return_against,
            RETURN_FIELD: refund.refund_id, "custom_refund_reason": refund.reason,
            "items": items, "taxes": taxes}  # fmt: skip


def invoice_to_credit(invoices: list[JSON], amount: Decimal) -> str | None:
    """The oldest invoice with at least ``amount`` left to credit (its grand total plus the
    negative totals of the credit notes against it), or None."""
    credited: dict[str, Decimal] = {}
    for doc in invoices:
        if doc.get("is_return") and doc.get("return_against"):
            key = doc["return_against"]
            credited[key] = credited.get(key, Decimal(0)) + _dec(doc.get("grand_total"))
    for doc in invoices:
        if not doc.get("is_return") and _dec(doc.get("grand_total")) + credited.get(
            doc["name"], Decimal(0)
        ) >= amount:
            return str(doc["name"])
    return None


# --- pure response mapping --------------------------------------------------------------------


def _frappe_reason(body: str) -> str:
    """``exc_type: exception`` from a Frappe error body, or the start of the raw body."""
    try:
        payload = json.loads(body)
    except json.JSONDecodeError:
        return body[:200]
    if not isinstance(payload, dict):
        return body[:200]
    exc_type, exception = payload.get("exc_type"), payload.get("exception")
    if exc_type or exception:
        return f"{exc_type or 'Error'}: {exception or ''}".strip()
    return str(payload.get("message") or payload.get("errors") or body[:200])


def error_for_status(status: int, body: str, headers: Mapping[str, str], what: str) -> SyncError:
    """The sync error an unsuccessful HTTP status means."""
    clipped = body[:MAX_ERROR_BODY]
    message = f"ERP {what}: HTTP {status} {_frappe_reason(clipped)}"
    if status == 429:
        retry_after = parse_retry_after(headers.get("Retry-After"))
        return RateLimitedError(message, status=status, body=clipped, retry_after=retry_after)
    if status >= 500:
        retry_after = parse_retry_after(headers.get("Retry-After"))
        return RetryableError(message, status=status, body=clipped, retry_after=retry_after)
    return PermanentError(message, status=status, body=clipped)


def created_doc(status: int, body: str, headers: Mapping[str, str], what: str) -> JSON:
    """A successful create's document (any other status raises its sync error)."""
    if status not in (200, 201):
        raise error_for_status(status, body, headers, what)
    doc = data_of(status, body, what)
    if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
        raise PermanentError(f"ERP {what}: HTTP {status} without data.name", status=status,
                             body=body[:MAX_ERROR_BODY])  # fmt: skip
    return doc


def may_be_duplicate(status: int) -> bool:
    """A refused create that may mean "it exists already": Frappe's 417 (ValidationError:
    UniqueValidationError on a unique field, or ``validate_po``'s refusal of a second order for
    the same po_no) or 409 (DuplicateEntryError)."""
    return status in (409, 417)


def post_result(status: int, body: str, headers: Mapping[str, str]) -> ErpPostResult:
    """Read a successful create: the document name and its ``creation`` timestamp."""
    try:
        data = json.loads(body)["data"]
        name, creation = data["name"], data.get("creation")
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
        name = creation = None
    if not isinstance(name, str) or not name:
        raise PermanentError(
            f"ERP create sales order: HTTP {status} without data.name",
            status=status,
            body=body[:MAX_ERROR_BODY],
        )
    created_at = creation if isinstance(creation, str) and creation else None
    return ErpPostResult(erp_sales_order=name, created=True, created_at=created_at)


def existing_result(doc: JSON) -> ErpPostResult:
    """A Sales Order found by its order key: the order was created before (``created=False``)."""
    creation = doc.get("creation")
    return ErpPostResult(erp_sales_order=str(doc["name"]), created=False,
                         created_at=creation if isinstance(creation, str) and creation else None)


# --- the connector ----------------------------------------------------------------------------


class FrappeSession:
    """One lazily created aiohttp session to a Frappe site, with token auth; network failures
    become RetryableError here."""

    def __init__(self, base_url: str, api_key: str, api_secret: str, *, timeout_s: float) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {
            "Authorization": f"token {api_key}:{api_secret}",
            "Accept": "application/json",
            "Content-Type": "application/json",
        }
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def url(self, doctype: str, name: str | None = None) -> str:
        url = f"{self.base_url}/api/resource/{quote(doctype)}"
        return f"{url}/{quote(name, safe='')}" if name else url

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self._session

    async def request(
        self, method: str, url: str, what: str, **kwargs: Any
    ) -> tuple[int, str, Mapping[str, str]]:
        """One HTTP exchange: status, body text and headers."""
        try:
            async with self._client().request(method, url, **kwargs) as resp:
                return resp.status, await resp.text(errors="replace"), resp.headers
        except TimeoutError as exc:  # asyncio.TimeoutError is TimeoutError on 3.11
            raise RetryableError(f"ERP {what}: timed out ({exc!r})") from exc
        except aiohttp.ClientError as exc:
            raise RetryableError(f"ERP {what}: {type(exc).__name__}: {exc}") from exc

    async def get_data(self, url: str, what: str, **kwargs: Any) -> Any:
        """GET ``url`` and answer its ``data``; any other status than 200 raises its sync error."""
        status, body, headers = await self.request("GET", url, what, **kwargs)
        if status != 200:
            raise error_for_status(status, body, headers, what)
        return data_of(status, body, what)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def modified_query(doctype: str, since: str | None, fields: list[str],
                   filters: list[list[Any]], *, start: int, page_size: int) -> dict[str, str]:
    """Query parameters of one page of ``doctype`` changed at or after ``since``, oldest first."""
    conditions = [[doctype, "modified", ">=", since]] if since is not None else []
    return {
        "fields": json.dumps(fields),
        "filters": json.dumps(conditions + [[doctype, *f] for f in filters]),
        "order_by": "modified asc, name asc",
        "limit_start": str(start),
        "limit_page_length": str(page_size),
    }


async def rows_modified_since(
    http: FrappeSession, doctype: str, since: str | None, *, fields: list[str],
    filters: list[list[Any]] | None = None, page_size: int = 500,
) -> list[JSON]:
    """Every row of ``doctype`` changed at or after ``since`` (``>=``: the cursor's instant is
    read again, never skipped), oldest first, each (name, modified) once. Pages restart at the
    last row's ``modified`` (``limit_start`` 0), so rows changing between two reads shift
    nothing; only a full page at one instant is stepped over by ``limit_start``. ``fields`` must
    hold ``name`` and ``modified``."""
    found: list[JSON] = []
    seen: set[tuple[Any, str]] = set()
    at, start = since, 0
    what = f"list {doctype} modified since {since}"
    while True:
        query = modified_query(doctype, at, fields, filters or [], start=start, page_size=page_size)
        rows = await http.get_data(http.url(doctype), what, params=query)
        if not isinstance(rows, list) or not all(
            isinstance(r, dict) and isinstance(r.get("modified"), str) for r in rows
        ):
            raise DecodeError(f"ERP {what}: not a list of rows with modified")
        for row in rows:
            if (row.get("name"), row["modified"]) not in seen:
                seen.add((row.get("name"), row["modified"]))
                found.append(row)
        if len(rows) < page_size:
            return found
        last = rows[-1]["modified"]
        at, start = (at, start + len(rows)) if last == at else (last, 0)


class ErpNextConnector:
    """ErpConnector over ERPNext's REST API; owns one lazily created aiohttp session."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        api_secret: str,
        *,
        timeout_s: float = 10.0,
        company: str = DEFAULT_COMPANY,
        customer: str = DEFAULT_CUSTOMER,
        warehouse: str = DEFAULT_WAREHOUSE,
        channel_customers: Mapping[str, str] | None = None,
        marketplace_warehouse: str = MARKETPLACE_WAREHOUSE,
    ) -> None:
        self._http = FrappeSession(base_url, api_key, api_secret, timeout_s=timeout_s)
        self.base_url = self._http.base_url
        self.company, self.customer, self.warehouse = company, customer, warehouse
        self.marketplace_warehouse = marketplace_warehouse
        self.channel_customers = dict(CHANNEL_CUSTOMERS if channel_customers is None
                                      else channel_customers)  # fmt: skip

    def customer_for(self, channel: str) -> str:
        """The ERP Customer a channel's orders are posted under (the default one when the
        channel has none configured)."""
        return self.channel_customers.get(channel, self.customer)

    @classmethod
    def from_settings(cls, settings: Settings) -> ErpNextConnector:
        return cls(
            str(settings.erp_base_url),
            settings.erp_api_key.get_secret_value(),
            settings.erp_api_secret.get_secret_value(),
            timeout_s=settings.erp_timeout_s,
            company=settings.erp_company,
            customer=settings.erp_default_customer,
            warehouse=settings.erp_warehouse,
            channel_customers=parse_channel_customers(settings.erp_channel_customers),
            marketplace_warehouse=settings.erp_marketplace_warehouse,
        )

    def _url(self, name: str | None = None) -> str:
        return self._http.url(SALES_ORDER, name)

    async def create_sales_order(
        self, order_key: str, order: Order, *, backorders: Mapping[str, int] | None = None
    ) -> ErpPostResult:
        """The order's Sales Order: the one the ERP holds under ``order_key`` if any (a retry,
        a replay, a restarted worker), else a new one; exactly one either way (module doc)."""
        doc = sales_order_doc(
            order_key,
            order,
            company=self.company,
            customer=self.customer_for(order.channel),
            warehouse=self.warehouse,
            backorders=backorders,
            marketplace_warehouse=self.marketplace_warehouse,
        )
        known = await self.find_sales_order(order_key)
        if known is not None:
            return existing_result(known)
        what = f"create sales order {order_key}"
        status, body, headers = await self._http.request("POST", self._url(), what, json=doc)
        if status in (200, 201):
            return post_result(status, body, headers)
        error = error_for_status(status, body, headers, what)
        if may_be_duplicate(status):
            known = await self.find_sales_order(order_key)
            if known is not None:
                return existing_result(known)
        raise error

    async def get_sales_order(self, name: str) -> JSON:
        """The full Sales Order document ``name`` (PermanentError 404 if it does not exist)."""
        doc: JSON = await self._http.get_data(self._url(name), f"get sales order {name}")
        return doc

    async def find_sales_order(self, order_key: str) -> JSON | None:
        """The Sales Order of ``order_key`` (by the unique ``custom_marketplace_order_key``),
        cancelled ones included, or None."""
        name = await self._find(SALES_ORDER, [[ORDER_KEY_FIELD, "=", order_key]])
        return await self.get_sales_order(name) if name else None

    async def find_by_po_no(self, po_no: str, customer: str | None = None) -> JSON | None:
        """The oldest Sales Order with ``po_no`` (of ``customer`` when given), or None. ``po_no``
        is not unique in ERPNext: exactly-once uses ``find_sales_order``."""
        filters: list[list[Any]] = [["po_no", "=", po_no]]
        if customer:
            filters.append(["customer", "=", customer])
        name = await self._find(SALES_ORDER, filters)
        return await self.get_sales_order(name) if name else None

    # --- after the order ------------------------------------------------------------------

    async def post_shipment(
        self, order_key: str, erp_sales_order: str, shipment: Shipment
    ) -> ErpShipmentResult:
        unique = [[SHIPMENT_FIELD, "=", shipment.shipment_id]]
        note = await self._find_doc(DELIVERY_NOTE, unique)
        created = note is None
        if note is None:
            so = await self.get_sales_order(erp_sales_order)
            doc = delivery_note_doc(order_key, so, shipment)
            what = f"post shipment {shipment.shipment_id} of {erp_sales_order}"
            note, created = await self._create(DELIVERY_NOTE, doc, what, unique)
        invoice = note.get("custom_sales_invoice")
        return ErpShipmentResult(
            delivery_note=note["name"],
            sales_invoice=invoice if isinstance(invoice, str) and invoice else None,
            created=created,
        )

    async def cancel_sales_order(self, erp_sales_order: str, reason: str) -> None:
        what = f"cancel sales order {erp_sales_order}"
        url = f"{self.base_url}/api/method/frappe.client.cancel"
        body = {"doctype": SALES_ORDER, "name": erp_sales_order, "reason": reason}
        status, text, headers = await self._http.request("POST", url, what, json=body)
        if status == 200:
            return
        error = error_for_status(status, text, headers, what)
        if status == 417 and (await self.get_sales_order(erp_sales_order)).get("docstatus") == 2:
            return  # Frappe refuses to cancel a cancelled document: already done
        raise error

    async def post_return(
        self, order_key: str, erp_sales_order: str, refund: Refund
    ) -> ErpReturnResult:
        so = await self.get_sales_order(erp_sales_order)
        if so.get("currency") and refund.currency != so["currency"]:
            raise PermanentError(f"refund {refund.refund_id} is in {refund.currency}, sales "
                                 f"order {erp_sales_order} in {so['currency']}")  # fmt: skip
        note, note_created = None, False
        if refund.restock and refund.lines:
            note, note_created = await self._return_note(order_key, so, refund)
        credit, credit_created = await self._credit_note(order_key, so, refund)
        return ErpReturnResult(return_delivery_note=note, credit_note=credit,
                               created=note_created or credit_created)  # fmt: skip

    async def _return_note(self, order_key: str, so: JSON, refund: Refund) -> tuple[str, bool]:
        unique = [[RETURN_FIELD, "=", refund.refund_id]]
        known = await self._find(DELIVERY_NOTE, unique)
        if known is not None:
            return known, False
        shipped = await self._list(DELIVERY_NOTE, [["po_no", "=", order_key], ["is_return", "=", 0],
                                                   ["docstatus", "=", 1]], ["name"])
        notes = [await self._get(DELIVERY_NOTE, row["name"]) for row in shipped]
        notes = [n for n in notes if any(r.get("against_sales_order") == so["name"]
                                         for r in n.get("items") or [])]  # fmt: skip
        doc = return_note_doc(order_key, so, refund, return_rows(so, notes, refund))
        note, created = await self._create(DELIVERY_NOTE, doc, f"post return {refund.refund_id}",
                                           unique)
        return note["name"], created

    async def _credit_note(self, order_key: str, so: JSON, refund: Refund) -> tuple[str, bool]:
        unique = [[RETURN_FIELD, "=", refund.refund_id]]
        known = await self._find(SALES_INVOICE, unique)
        if known is not None:
            return known, False
        fields = ["name", "is_return", "return_against", "grand_total"]
        invoices = await self._list(SALES_INVOICE, [["po_no", "=", order_key],
                                                    ["customer", "=", so.get("customer")],
                                                    ["docstatus", "=", 1]], fields)
        against = invoice_to_credit(invoices, refund_amount(refund))
        doc = credit_note_doc(order_key, so, refund, against)
        note, created = await self._create(SALES_INVOICE, doc,
                                           f"post credit note {refund.refund_id}", unique)
        return note["name"], created

    async def _create(self, doctype: str, doc: JSON, what: str,
                      unique: list[list[Any]]) -> tuple[JSON, bool]:
        """Insert ``doc``: (the new document, True); refused as a duplicate of the document
        ``unique`` finds: (that document, False)."""
        url = self._http.url(doctype)
        status, body, headers = await self._http.request("POST", url, what, json=doc)
        if status in (200, 201) or not may_be_duplicate(status):
            return created_doc(status, body, headers, what), True
        error = error_for_status(status, body, headers, what)
        known = await self._find_doc(doctype, unique)
        if known is None:
            raise error
        return known, False

    async def _find_doc(self, doctype: str, filters: list[list[Any]]) -> JSON | None:
        name = await self._find(doctype, filters)
        return await self._get(doctype, name) if name else None

    async def _get(self, doctype: str, name: str) -> JSON:
        doc: JSON = await self._http.get_data(self._http.url(doctype, name), f"get {doctype} {name}")
        return doc

    async def _list(self, doctype: str, filters: list[list[Any]], fields: list[str]) -> list[JSON]:
        what = f"list {doctype} {filters}"
        params = {"filters": json.dumps([[doctype, *f] for f in filters]),
                  "fields": json.dumps(fields), "order_by": "creation asc",
                  "limit_page_length": "0"}  # fmt: skip
        rows = await self._http.get_data(self._http.url(doctype), what, params=params)
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise DecodeError(f"ERP {what}: data is not a list of rows")
        return rows

    async def _find(self, doctype: str, filters: list[list[Any]]) -> str | None:
        rows = await self._list(doctype, filters, ["name"])
        return str(rows[0]["name"]) if rows else None

    async def close(self) -> None:
        await self._http.close()


def data_of(status: int, body: str, what: str) -> Any:
    """The ``data`` of a Frappe answer (PermanentError when there is none)."""
    try:
        return json.loads(body)["data"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise PermanentError(
            f"ERP {what}: HTTP {status} without data", status=status, body=body[:MAX_ERROR_BODY]
        ) from None


__all__ = [
    "ErpNextConnector",
    "FrappeSession",
    "created_doc",
    "credit_note_doc",
    "data_of",
    "delivery_note_doc",
    "error_for_status",
    "existing_result",
    "may_be_duplicate",
    "invoice_to_credit",
    "modified_query",
    "order_item",
    "post_result",
    "return_note_doc",
    "return_rows",
    "rows_modified_since",
    "sales_order_doc",
]
