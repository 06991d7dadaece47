"""Pure document logic of the ERP simulator: Sales Order validation, totals and list queries.

Mirrors what ERPNext's Sales Order controller checks before insert (required fields, positive
quantities, numeric rates, currency codes, delivery date not before the order date, the custom
field ``custom_backorder_qty`` between 0 and the quantity) and how it computes ``total``,
``net_total``, ``total_taxes_and_charges`` and ``grand_total``; and how Frappe's
``/api/resource`` list endpoint reads ``fields``, ``filters`` (=, !=, in, not in, >, >=, <, <=),
``order_by`` ("<field> asc|desc", comma-separated) and ``limit_*``.
No I/O here, so every rule is unit-testable.
"""

from __future__ import annotations

import json
import operator
import re
import uuid
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from retail_sync.simulators.erpnext.meta import Masters

JSON = dict[str, Any]
CENT = Decimal("0.01")
CURRENCY = re.compile(r"^[A-Z]{3}$")
NAMING_SERIES = "SAL-ORD-.YYYY.-"

# fields the server computes; a client cannot set them
_SERVER_FIELDS = {
    "name", "doctype", "docstatus", "idx", "owner", "creation", "modified", "modified_by",
    "naming_series", "status", "delivery_status", "billing_status", "per_delivered", "per_billed",
    "total_qty", "total", "net_total", "total_taxes_and_charges", "grand_total", "rounded_total",
    "customer_name", "plc_conversion_rate", "price_list_currency", "items", "taxes",
    "base_total", "base_net_total", "base_grand_total", "base_rounded_total",
    "base_total_taxes_and_charges", "base_discount_amount",
}  # fmt: skip


class DocValidationError(ValueError):
    """The document breaks a rule; the server answers 417 ValidationError with this reason."""

    exc_type = "ValidationError"
    status = 417


class LinkValidationError(DocValidationError):
    """A Link field names a record that does not exist (Frappe: 417, "Could not find ...")."""

    exc_type = "LinkValidationError"


class UniqueValidationError(DocValidationError):
    """A unique field's value is taken (Frappe: 417, raised on the database's unique index)."""

    exc_type = "UniqueValidationError"


class DuplicateEntryError(DocValidationError):
    """A record of that name exists (Frappe: 409 DuplicateEntryError, a primary key clash)."""

    exc_type = "DuplicateEntryError"
    status = 409


def server_messages(reason: str) -> str:
    """Frappe's ``_server_messages``: a JSON string holding a list of JSON-encoded messages."""
    message = {"message": reason, "title": "Message", "indicator": "red", "raise_exception": 1}
    return json.dumps([json.dumps(message)])


def frappe_timestamp(now: datetime) -> str:
    return now.strftime("%Y-%m-%d %H:%M:%S.%f")


# --- field parsers ----------------------------------------------------------------------------


def _required_str(body: JSON, field: str, label: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value.strip():
        raise DocValidationError(f"Error: Value missing for {label}: {field}")
    return value


def _number(value: Any, what: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise DocValidationError(f"{what} must be a number, got {value!r}")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise DocValidationError(f"{what} must be a number, got {value!r}") from None
    if not number.is_finite():
        raise DocValidationError(f"{what} must be a finite number, got {value!r}")
    return number


def _backorder_qty(row: JSON, idx: int, qty: Decimal) -> int:
    """Custom field ``custom_backorder_qty``: units the seller accepted without stock."""
    value = _number(row.get("custom_backorder_qty", 0), f"Row #{idx}: Backorder Qty")
    if value != value.to_integral_value() or not 0 <= value <= qty:
        raise DocValidationError(
            f"Row #{idx}: Backorder Qty must be a whole number between 0 and {qty}, got {value}"
        )
    return int(value)


def parse_docstatus(body: JSON) -> int:
    """``docstatus`` a client may send on insert: 0 (draft, the default) or 1 (insert and submit)."""
    docstatus = body.get("docstatus", 0)
    if isinstance(docstatus, bool) or docstatus not in (0, 1):
        raise DocValidationError(f"docstatus must be 0 (draft) or 1 (submitted), got {docstatus!r}")
    return int(docstatus)


def _date(value: Any, what: str) -> date:
    if not isinstance(value, str):
        raise DocValidationError(f"{what} must be a date YYYY-MM-DD, got {value!r}")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise DocValidationError(f"{what} must be a date YYYY-MM-DD, got {value!r}") from None


def _currency(body: JSON) -> str:
    currency = body.get("currency", "USD")
    if not isinstance(currency, str) or not CURRENCY.match(currency):
        raise DocValidationError(f"Currency {currency!r} is not a valid ISO-4217 code")
    return currency


def _money(amount: Decimal) -> float:
    return float(amount.quantize(CENT))


# --- child rows -------------------------------------------------------------------------------


def _link(ok: bool, what: str) -> None:
    """Frappe's link check: 417 LinkValidationError "Could not find <label>: <value>"."""
    if not ok:
        raise LinkValidationError(f"Could not find {what}")


def _optional_number(row: JSON, key: str, what: str) -> Decimal | None:
    return None if row.get(key) in (None, "") else _number(row[key], what)


def _rate(row: JSON, idx: int) -> tuple[Decimal, JSON]:
    """A row's rate and the price-list fields it came from: ``price_list_rate`` less
    ``discount_percentage`` (or less ``discount_amount`` per unit) when a price list rate is
    given, as ERPNext's ``calculate_item_values`` sets it; else the row's ``rate``."""
    plr = _optional_number(row, "price_list_rate", f"Row #{idx}: Price List Rate")
    pct = _optional_number(row, "discount_percentage", f"Row #{idx}: Discount (%)")
    off = _optional_number(row, "discount_amount", f"Row #{idx}: Discount Amount")
    if pct is not None and not 0 <= pct <= 100:
        raise DocValidationError(f"Row #{idx}: Discount (%) must be between 0 and 100")
    if plr is not None and (pct or off):
        rate = plr * (1 - pct / 100) if pct else plr - (off or 0)
        off = plr - rate
        pct = (off / plr * 100) if plr else Decimal(0)
    else:
        rate = _number(row.get("rate", plr or 0), f"Row #{idx}: Rate")
        if plr is not None and plr >= rate:
            off, pct = plr - rate, ((plr - rate) / plr * 100) if plr else Decimal(0)
    if rate < 0:
        raise DocValidationError(f"Row #{idx}: Rate cannot be negative")
    fields = {"price_list_rate": float(plr if plr is not None else rate),
              "discount_percentage": float(round(pct or Decimal(0), 6)),
              "discount_amount": _money(off or Decimal(0))}  # fmt: skip
    return rate, fields


def _item(row: Any, idx: int, defaults: JSON, masters: Masters | None) -> JSON:
    """One Sales Order Item row with ``amount = qty * rate`` computed (``net_*`` and ``base_*``
    are set with the order's totals)."""
    if not isinstance(row, dict):
        raise DocValidationError(f"Row #{idx}: item must be an object")
    item_code = _required_str(row, "item_code", f"Row #{idx} Item Code")
    if masters is not None:
        _link(masters.has_item(item_code), f"Row #{idx}: Item Code: {item_code}")
    qty = _number(row.get("qty"), f"Row #{idx}: Quantity")
    if qty <= 0:
        raise DocValidationError(f"Row #{idx}: Quantity for Item {item_code} must be positive")
    rate, price_fields = _rate(row, idx)
    delivery = row.get("delivery_date", defaults["delivery_date"])
    _date(delivery, f"Row #{idx}: Delivery Date")
    warehouse = row.get("warehouse", defaults["set_warehouse"])
    if masters is not None and warehouse:
        _link(warehouse in masters.warehouses, f"Row #{idx}: Warehouse: {warehouse}")
    backorder = _backorder_qty(row, idx, qty)
    amount = qty * rate
    return {
        **{k: v for k, v in row.items() if k not in ("qty", "rate", "amount")},
        **price_fields,
        "name": uuid.uuid4().hex[:10],
        "doctype": "Sales Order Item",
        "parenttype": "Sales Order",
        "parentfield": "items",
        "idx": idx,
        "item_code": item_code,
        "item_name": row.get("item_name") or item_code,
        "qty": float(qty),
        "stock_qty": float(qty),
        "uom": row.get("uom", "Nos"),
        "stock_uom": "Nos",
        "conversion_factor": 1.0,
        "rate": float(rate),
        "amount": _money(amount),
        "delivery_date": delivery,
        "warehouse": warehouse,
        "delivered_qty": 0.0,
        "returned_qty": 0.0,
        "billed_amt": 0.0,
        "custom_backorder_qty": backorder,
    }


def _items(body: JSON, defaults: JSON, masters: Masters | None) -> list[JSON]:
    rows = body.get("items")
    if not isinstance(rows, list) or not rows:
        raise DocValidationError("Error: Value missing for Sales Order: Items")
    return [_item(row, idx, defaults, masters) for idx, row in enumerate(rows, start=1)]


def _tax(row: Any, idx: int, base: Decimal) -> JSON:
    """A Sales Taxes and Charges row: ``Actual`` (fixed amount) or ``On Net Total`` (rate %)."""
    if not isinstance(row, dict):
        raise DocValidationError(f"Taxes row #{idx} must be an object")
    account = _required_str(row, "account_head", f"Taxes row #{idx} Account Head")
    charge_type = row.get("charge_type")
    if charge_type == "Actual":
        amount = _number(row.get("tax_amount", 0), f"Taxes row #{idx}: Amount")
    elif charge_type == "On Net Total":
        amount = base * _number(row.get("rate", 0), f"Taxes row #{idx}: Rate") / 100
    else:
        raise DocValidationError(f"Taxes row #{idx}: unsupported Type {charge_type!r}")
    return {
        **row,
        "name": uuid.uuid4().hex[:10],
        "doctype": "Sales Taxes and Charges",
        "parenttype": "Sales Order",
        "parentfield": "taxes",
        "idx": idx,
        "description": row.get("description") or account,
        "tax_amount": _money(amount),
    }


# --- the document ----------------------------------------------------------------------------


def _header(body: JSON, now: datetime, masters: Masters | None) -> JSON:
    customer = _required_str(body, "customer", "Sales Order Customer")
    company = _required_str(body, "company", "Sales Order Company")
    po_no = _required_str(body, "po_no", "Sales Order Customer's Purchase Order")
    warehouse = body.get("set_warehouse")
    if masters is not None:
        _link(customer in masters.customers, f"Customer: {customer}")
        _link(company in masters.companies, f"Company: {company}")
        if warehouse:
            _link(warehouse in masters.warehouses, f"Set Source Warehouse: {warehouse}")
    transaction = body.get("transaction_date", now.date().isoformat())
    delivery = body.get("delivery_date", transaction)
    if _date(delivery, "Delivery Date") < _date(transaction, "Date"):
        raise DocValidationError("Expected Delivery Date should be after Sales Order Date")
    return {
        "customer": customer,
        "customer_name": customer,
        "company": company,
        "po_no": po_no,
        "transaction_date": transaction,
        "delivery_date": delivery,
        "currency": _currency(body),
        "set_warehouse": warehouse,
    }


def _conversion_rate(body: JSON, header: JSON, masters: Masters | None) -> Decimal:
    """The document's ``conversion_rate`` to the company currency: the body's, else the
    Currency Exchange rate; none is ERPNext's "Exchange Rate is mandatory" refusal."""
    given = _optional_number(body, "conversion_rate", "Exchange Rate")
    if given is not None and given > 0:
        return given
    if masters is None:
        return Decimal(1)
    rate = masters.rate(header["currency"], header["company"])
    if rate is None:
        base = masters.companies.get(header["company"], "USD")
        raise DocValidationError(
            f"Exchange Rate is mandatory. Maybe Currency Exchange record is not created for "
            f"{header['currency']} to {base}"
        )
    return rate


def _totals(items: list[JSON], body: JSON, conversion: Decimal) -> tuple[JSON, list[JSON]]:
    """ERPNext's ``taxes_and_totals`` for Actual and On Net Total charges: the additional
    discount (``discount_amount``, or ``additional_discount_percentage`` of the net total or,
    by default, of the grand total) comes off the items' net amounts in proportion; charges "On
    Net Total" apply to the discounted net total when ``apply_discount_on`` is "Net Total".
    Every amount also in the company currency (``base_*`` = amount * ``conversion_rate``)."""
    total = sum((Decimal(str(i["amount"])) for i in items), Decimal(0))
    apply_on = body.get("apply_discount_on") or "Grand Total"
    if apply_on not in ("Grand Total", "Net Total"):
        raise DocValidationError(f"Apply Additional Discount On {apply_on!r} is not valid")
    pct = _optional_number(body, "additional_discount_percentage", "Additional Discount %")
    discount = _optional_number(body, "discount_amount", "Additional Discount Amount")
    if apply_on == "Net Total":
        if pct:
            discount = total * pct / 100
        discount = (discount or Decimal(0)).quantize(CENT)
        net = total - discount
        taxes = [_tax(row, i, net) for i, row in enumerate(body.get("taxes") or [], start=1)]
        tax_total = sum((Decimal(str(t["tax_amount"])) for t in taxes), Decimal(0))
        grand = net + tax_total
    else:
        taxes = [_tax(row, i, total) for i, row in enumerate(body.get("taxes") or [], start=1)]
        tax_total = sum((Decimal(str(t["tax_amount"])) for t in taxes), Decimal(0))
        before = total + tax_total
        if pct:
            discount = before * pct / 100
        discount = (discount or Decimal(0)).quantize(CENT)
        grand = before - discount
        net = total - (discount * total / before if before else Decimal(0))
    if discount < 0 or discount > total + tax_total:
        raise DocValidationError("Additional Discount Amount cannot exceed the total")
    share = net / total if total else Decimal(1)
    for item in items:
        net_amount = Decimal(str(item["amount"])) * share
        item.update(net_amount=_money(net_amount), net_rate=_money(net_amount / Decimal(
            str(item["qty"]))), base_rate=_money(Decimal(str(item["rate"])) * conversion),
            base_amount=_money(Decimal(str(item["amount"])) * conversion),
            base_net_rate=_money(net_amount / Decimal(str(item["qty"])) * conversion),
            base_net_amount=_money(net_amount * conversion),
            base_price_list_rate=_money(Decimal(str(item["price_list_rate"])) * conversion))
    for tax in taxes:
        tax.update(base_tax_amount=_money(Decimal(str(tax["tax_amount"])) * conversion))
    return {
        "total_qty": sum(i["qty"] for i in items),
        "total": _money(total),
        "net_total": _money(net),
        "discount_amount": _money(discount),
        "additional_discount_percentage": float(pct or 0),
        "apply_discount_on": apply_on,
        "total_taxes_and_charges": _money(tax_total),
        "grand_total": _money(grand),
        "rounded_total": _money(grand),
        "disable_rounded_total": 1,
        "conversion_rate": float(conversion),
        "base_total": _money(total * conversion),
        "base_net_total": _money(net * conversion),
        "base_discount_amount": _money(discount * conversion),
        "base_total_taxes_and_charges": _money(tax_total * conversion),
        "base_grand_total": _money(grand * conversion),
        "base_rounded_total": _money(grand * conversion),
    }, taxes


def build_sales_order(body: Any, *, now: datetime, masters: Masters | None = None) -> JSON:
    """Validate a posted Sales Order and return the stored document (without ``name``): a draft,
    or submitted when the body says ``"docstatus": 1``. ``now`` stamps creation and modified.
    With ``masters``, links are checked (LinkValidationError) and foreign currencies take its
    exchange rates. Fields the doctype does not define are dropped, as Frappe does."""
    if not isinstance(body, dict):
        raise DocValidationError("Request body must be a JSON object")
    docstatus = parse_docstatus(body)
    header = _header(body, now, masters)
    items = _items(body, header, masters)
    conversion = _conversion_rate(body, header, masters)
    totals, taxes = _totals(items, body, conversion)
    custom = {k: v for k, v in body.items() if k not in _SERVER_FIELDS and k not in header}
    stamp = frappe_timestamp(now)
    from retail_sync.simulators.erpnext.meta import keep_defined

    return keep_defined("Sales Order", {
        **custom,
        **header,
        **totals,
        "doctype": "Sales Order",
        "owner": "Administrator",
        "creation": stamp,
        "modified": stamp,
        "modified_by": "Administrator",
        "docstatus": docstatus,
        "idx": 0,
        "naming_series": NAMING_SERIES,
        "order_type": body.get("order_type", "Sales"),
        "selling_price_list": body.get("selling_price_list", "Standard Selling"),
        "price_list_currency": header["currency"],
        "plc_conversion_rate": totals["conversion_rate"],
        "status": "To Deliver and Bill" if docstatus else "Draft",
        "delivery_status": "Not Delivered",
        "billing_status": "Not Billed",
        "per_delivered": 0.0,
        "per_billed": 0.0,
        "items": items,
        "taxes": taxes,
    })


# --- list queries ----------------------------------------------------------------------------


def _json_param(query: dict[str, str], key: str, default: Any) -> Any:
    raw = query.get(key)
    if raw in (None, ""):
        return default
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        raise DocValidationError(f"{key} must be JSON, got {raw!r}") from None


def conditions_of(filters: Any, doctype: str) -> list[tuple[str, str, Any]]:
    """Frappe filters: [[doctype, field, op, value]], [[field, op, value]] or {field: value}."""
    if isinstance(filters, dict):
        return [(f, *(v if isinstance(v, list) else ("=", v))) for f, v in filters.items()]
    if not isinstance(filters, list):
        raise DocValidationError("filters must be a list or an object")
    rows = [filters] if filters and isinstance(filters[0], str) else filters
    conditions = []
    for row in rows:
        if isinstance(row, list) and len(row) == 4 and row[0] == doctype:
            row = row[1:]
        if not (isinstance(row, list) and len(row) == 3 and isinstance(row[0], str)):
            raise DocValidationError(f"Unsupported filter {row!r}")
        conditions.append((row[0], row[1], row[2]))
    return conditions


_COMPARISONS = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
}  # fmt: skip
_ORDER_BY = re.compile(r"^\s*(?:`?tab[\w ]+`?\.)?`?(\w+)`?(?:\s+(asc|desc))?\s*$", re.IGNORECASE)


def _compare(actual: Any, op: str, value: Any) -> bool:
    """``>``/``>=``/``<``/``<=``: numbers numerically, anything else as strings (so Frappe
    timestamps, fixed-width, compare in time order); a missing value matches nothing."""
    if actual is None:
        return False
    if isinstance(actual, int | float) and not isinstance(actual, bool):
        try:
            return bool(_COMPARISONS[op](float(actual), float(value)))
        except (TypeError, ValueError):
            raise DocValidationError(f"Cannot compare a number with {value!r}") from None
    return bool(_COMPARISONS[op](str(actual), str(value)))


def _matches(doc: JSON, field: str, op: str, value: Any) -> bool:
    actual = doc.get(field)
    if op == "=":
        return actual == value or str(actual) == str(value)
    if op == "!=":
        return not _matches(doc, field, "=", value)
    if op in ("in", "not in") and isinstance(value, list):
        found = any(_matches(doc, field, "=", v) for v in value)
        return found if op == "in" else not found
    if op in _COMPARISONS:
        return _compare(actual, op, value)
    raise DocValidationError(f"Unsupported filter operator {op!r}")


def _sort_key(value: Any) -> tuple[int, Any]:
    """NULLs first (as MariaDB sorts them ascending), then numbers, then strings."""
    if value is None:
        return (0, 0)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (1, float(value))
    return (2, str(value))


def _ordered(docs: list[JSON], order_by: str | None) -> list[JSON]:
    """Frappe ``order_by``: "<field> [asc|desc]" clauses separated by commas (desc by default)."""
    if not order_by:
        return docs
    result = list(docs)
    for clause in reversed(order_by.split(",")):
        match = _ORDER_BY.match(clause)
        if match is None:
            raise DocValidationError(f"Unsupported order_by {order_by!r}")
        field, direction = match.group(1), (match.group(2) or "desc").lower()
        result.sort(key=lambda doc: _sort_key(doc.get(field)), reverse=direction == "desc")
    return result


def _project(doc: JSON, fields: list[str]) -> JSON:
    if "*" in fields:
        return {k: v for k, v in doc.items() if not isinstance(v, list)}
    return {f: doc.get(f) for f in fields}


def _int_param(query: dict[str, str], key: str, default: int) -> int:
    try:
        return max(0, int(query.get(key, default)))
    except ValueError:
        raise DocValidationError(f"{key} must be an integer") from None


def list_documents(docs: list[JSON], query: dict[str, str], *, doctype: str) -> list[JSON]:
    """Apply Frappe list parameters to ``docs`` (already in the list's default order, which
    ``order_by`` replaces)."""
    fields = _json_param(query, "fields", ["name"])
    if not (isinstance(fields, list) and all(isinstance(f, str) for f in fields)):
        raise DocValidationError("fields must be a JSON list of field names")
    conditions = conditions_of(_json_param(query, "filters", []), doctype)
    start = _int_param(query, "limit_start", 0)
    length = _int_param(query, "limit_page_length", _int_param(query, "limit", 20))
    hits = [d for d in docs if all(_matches(d, *c) for c in conditions)]
    hits = _ordered(hits, query.get("order_by"))
    page = hits[start : start + length] if length else hits[start:]
    return [_project(doc, fields) for doc in page]


# --- after the order: deliveries, returns, billing and status --------------------------------
#
# ERPNext's status updater, reduced to what the simulator needs: a Delivery Note row against a
# Sales Order Item raises its ``delivered_qty``; an invoice row raises its ``billed_amt``; a
# return row raises its ``returned_qty`` (``delivered_qty`` is left as shipped). The order's
# ``per_delivered`` counts quantities, ``per_billed`` amounts, and ``status`` follows ERPNext's
# status map: To Deliver and Bill -> To Deliver / To Bill -> Completed; Cancelled and Closed
# are final.


def order_item(order: JSON, row: JSON, idx: int) -> JSON:
    """The Sales Order Item a Delivery Note row ships: by ``so_detail``, else the first item of
    the same ``item_code`` with units left to deliver."""
    items = order["items"]
    so_detail = row.get("so_detail")
    if so_detail:
        found: JSON | None = next((i for i in items if i["name"] == so_detail), None)
        if found is None:
            raise DocValidationError(
                f"Row #{idx}: Sales Order Item {so_detail} is not in Sales Order {order['name']}"
            )
        return found
    same = [i for i in items if i["item_code"] == row.get("item_code")]
    if not same:
        raise DocValidationError(
            f"Row #{idx}: Item {row.get('item_code')} is not in Sales Order {order['name']}"
        )
    return next((i for i in same if i["delivered_qty"] < i["qty"]), same[0])


def check_delivery(order: JSON, rows: list[tuple[JSON, float]]) -> None:
    """Refuse a delivery that ships more of an order item than is left to deliver, or any of an
    order that is not open (draft, cancelled, closed)."""
    if order["docstatus"] != 1 or order["status"] in ("Closed", "Cancelled"):
        state = "cancelled" if order["docstatus"] == 2 else order["status"].lower()
        raise DocValidationError(f"Sales Order {order['name']} is {state}; nothing can ship")
    shipping: dict[str, float] = {}
    for item, qty in rows:
        shipping[item["name"]] = shipping.get(item["name"], 0.0) + qty
        over = item["delivered_qty"] + shipping[item["name"]] - item["qty"]
        if over > 0:
            raise DocValidationError(
                f"This document is over limit by Qty {over:g} for item {item['item_code']}. Are "
                "you making another Delivery Note against the same Sales Order Item?"
            )


def apply_delivery(order: JSON, rows: list[tuple[JSON, float]], stamp: str) -> None:
    for item, qty in rows:
        item["delivered_qty"] = item["delivered_qty"] + qty
    refresh_status(order, stamp)


def apply_return(order: JSON, rows: list[tuple[JSON, float]], stamp: str) -> None:
    for item, qty in rows:
        item["returned_qty"] = item.get("returned_qty", 0.0) + qty
    refresh_status(order, stamp)


def apply_billing(order: JSON, amounts: dict[str, Decimal], stamp: str) -> None:
    """Invoiced net amounts per Sales Order Item name."""
    for item in order["items"]:
        if item["name"] in amounts:
            item["billed_amt"] = _money(Decimal(str(item["billed_amt"])) + amounts[item["name"]])
    refresh_status(order, stamp)


def fully_delivered(order: JSON) -> bool:
    return all(item["delivered_qty"] >= item["qty"] for item in order["items"])


def _percent(part: float, whole: float) -> float:
    return round(min(100.0, 100.0 * part / whole), 2) if whole else 100.0


def _level(percent: float, none: str, partly: str, fully: str) -> str:
    return none if percent <= 0 else fully if percent >= 100 else partly


def refresh_status(order: JSON, stamp: str) -> None:
    """Recompute the progress fields and ``status``; every change bumps ``modified``."""
    items = order["items"]
    delivered = sum(min(i["delivered_qty"], i["qty"]) for i in items)
    order["per_delivered"] = _percent(delivered, sum(i["qty"] for i in items))
    order["per_billed"] = _percent(sum(i["billed_amt"] for i in items),
                                   sum(i["amount"] for i in items))  # fmt: skip
    order["delivery_status"] = _level(order["per_delivered"], "Not Delivered",
                                      "Partly Delivered", "Fully Delivered")  # fmt: skip
    order["billing_status"] = _level(order["per_billed"], "Not Billed", "Partly Billed",
                                     "Fully Billed")  # fmt: skip
    if order["docstatus"] == 1 and order["status"] not in ("Closed", "Draft"):
        to_deliver, to_bill = order["per_delivered"] < 100, order["per_billed"] < 100
        order["status"] = (
            "To Deliver and Bill" if to_deliver and to_bill
            else "To Deliver" if to_deliver
            else "To Bill" if to_bill
            else "Completed"
        )  # fmt: skip
    order["modified"] = stamp


def end_order(order: JSON, *, cancel: bool, reason: str | None, stamp: str) -> None:
    """Cancel (``docstatus`` 2, "Cancelled") or close ("Closed") a submitted order, keeping the
    reason in ``custom_cancel_reason``."""
    order["status"] = "Cancelled" if cancel else "Closed"
    if cancel:
        order["docstatus"] = 2
    if order["delivery_status"] == "Not Delivered" and not cancel:
        order["delivery_status"] = "Closed"
    if reason:
        order["custom_cancel_reason"] = reason
    order["modified"] = stamp
