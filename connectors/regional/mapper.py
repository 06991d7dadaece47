"""Regional marketplace batch-file order -> canonical Order.

The connector hands over ``{"file": name, "rows": [row, ...]}``: the CSV rows of one order
(columns ``order_ref, order_date, status, sku, qty, unit_price, currency, buyer_email, line_no``)
each with ``_row``, its 1-based data row number in the file.

* Status codes translate through ``STATUS_CODES`` (data: code -> canonical status), compared
  case-insensitively after stripping. The marketplace invents spellings, so the table is extended
  from settings (``RETAIL_SYNC_REGIONAL_STATUS_CODES``) via ``make_mapper``; an unknown code raises
  MappingError telling the operator which setting to extend. The canonical status goes to
  ``Order.fulfillment_status``.
* ``order_date`` is ISO with an offset (``2026-11-27 10:15:00+01:00``) or day-first without one
  (``27/11/2026 10:15``); times without an offset are Europe/Berlin local time. All become UTC.
* ``unit_price`` is per unit, a decimal with either a point or a decimal comma (``12,50``).

Anything that cannot become a valid order raises MappingError naming the file, row and field.
The order is then checked by ``streams.validation`` (ARCHITECTURE §5f.4): ISO 4217 currency,
unique ``line_no`` within the order, plausible ``order_date``; ``qty`` is text of whole digits > 0.
The file states no order total (unit prices only), so there is none to compare with.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from retail_sync.streams.errors import MappingError
from retail_sync.streams.models import Customer, Money, Order, OrderLine
from retail_sync.streams.validation import NO_STATED_TOTAL, FieldNames, validate_order

CHANNEL = "regional"
LOCAL_TZ = ZoneInfo("Europe/Berlin")
CANONICAL_STATUSES = ("pending", "accepted", "shipped", "cancelled")
STATUS_CODES: dict[str, str] = {
    "NEW": "pending",
    "N": "pending",
    "OPEN": "pending",
    "PAID": "accepted",
    "P": "accepted",
    "SHIPPED": "shipped",
    "SHP": "shipped",
    "CXL": "cancelled",
    "CANCELLED": "cancelled",
}
LOCAL_FORMATS = ("%d/%m/%Y %H:%M", "%d/%m/%Y %H:%M:%S", "%d.%m.%Y %H:%M")
SETTING = "RETAIL_SYNC_REGIONAL_STATUS_CODES"
#: the file's names of the fields the validation rules are about
FIELDS = FieldNames(currency="currency", created_at="order_date", updated_at="order_date",
                    lines="rows", line_id="line_no", quantity="qty")


def status_table(extra_codes: Mapping[str, str]) -> dict[str, str]:
    """The built-in table plus ``extra_codes`` (which win), keys normalised; ValueError if invalid."""
    table = {code.strip().upper(): status for code, status in STATUS_CODES.items()}
    for code, status in extra_codes.items():
        canonical = str(status).strip().lower()
        if canonical not in CANONICAL_STATUSES:
            raise ValueError(f"{SETTING}: code {code!r} maps to {status!r}; "
                             f"expected one of {', '.join(CANONICAL_STATUSES)}")
        table[str(code).strip().upper()] = canonical
    return table


def make_mapper(extra_codes: Mapping[str, str]) -> Callable[[Any], Order]:
    """A mapper whose status table is ``STATUS_CODES`` extended by ``extra_codes``."""
    table = status_table(extra_codes)

    def map_order(payload: Any) -> Order:
        return _map(payload, table)

    map_order.__doc__ = "Map a regional batch-file order to the canonical model, or raise MappingError."
    return map_order


def _map(payload: Any, table: Mapping[str, str]) -> Order:
    if not isinstance(payload, dict) or not isinstance(payload.get("rows"), list) or not payload["rows"]:
        raise MappingError("regional delivery must be {'file': ..., 'rows': [...]} with rows")
    file = str(payload.get("file") or "?")
    rows = payload["rows"]
    if not all(isinstance(r, dict) for r in rows):
        raise MappingError(f"regional delivery from {file} has a row that is not an object")
    first = rows[0]
    ref = _field(first, "order_ref", file).strip()
    statuses, dates, currencies, lines = set(), [], set(), []
    for row in rows:
        where = _where(file, row)
        if _field(row, "order_ref", file).strip() != ref:
            raise MappingError(f"{where}: order_ref differs from {ref!r}")
        code = _field(row, "status", file)
        canonical = table.get(code.strip().upper())
        if canonical is None:
            raise MappingError(f"unknown status code {code!r} in {where}; add it to {SETTING}")
        statuses.add(canonical)
        dates.append(_instant(_field(row, "order_date", file), where))
        currency = _field(row, "currency", file).strip().upper()
        if len(currency) != 3 or not currency.isalpha():
            raise MappingError(f"{where}: field currency is not an ISO-4217 code: {currency!r}")
        currencies.add(currency)
        lines.append((row, where, currency))
    if len(statuses) != 1:
        raise MappingError(f"order {ref} in {file}: rows disagree on status ({sorted(statuses)})")
    if len(currencies) != 1:
        raise MappingError(f"order {ref} in {file}: rows disagree on currency ({sorted(currencies)})")
    currency = currencies.pop()
    zero = Money(amount=Decimal(0), currency=currency)
    try:
        order_lines = [_line(row, where, currency, zero) for row, where, currency in lines]
        subtotal = sum((ln.unit_price.amount * ln.quantity for ln in order_lines), Decimal(0))
        email = _optional(first.get("buyer_email"))
        order = Order(
            channel=CHANNEL,
            marketplace_order_id=ref,
            created_at=min(dates),
            updated_at=max(dates),
            currency=currency,
            lines=order_lines,
            subtotal=Money(amount=subtotal, currency=currency),
            shipping=zero,
            tax_total=zero,
            discount_total=zero,
            total=Money(amount=subtotal, currency=currency),
            taxes_included=True,
            fulfillment_status=statuses.pop(),
            customer=Customer(email=email),
        )
    except ValidationError as exc:
        brief = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        raise MappingError(f"order {ref} in {file} is not a valid order: {brief}") from exc
    return validate_order(order, expected=NO_STATED_TOTAL, names=FIELDS,
                          line_names=[where for _, where, _ in lines])


def _where(file: str, row: dict[str, Any]) -> str:
    return f"{file} row {row.get('_row', '?')}"


def _field(row: dict[str, Any], name: str, file: str) -> str:
    value = row.get(name)
    if not isinstance(value, str) or not value.strip():
        raise MappingError(f"{_where(file, row)}: field {name} is missing (got {value!r})")
    return value


def _optional(value: Any) -> str | None:
    """An optional text cell, stripped; None if empty or not text."""
    return value.strip() or None if isinstance(value, str) else None


def _instant(text: str, where: str) -> datetime:
    """ISO with or without offset, or day-first local time; naive times are Europe/Berlin."""
    text = text.strip()
    parsed: datetime | None = None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        for fmt in LOCAL_FORMATS:
            try:
                parsed = datetime.strptime(text, fmt).replace(tzinfo=LOCAL_TZ)
                break
            except ValueError:
                continue
    if parsed is None:
        raise MappingError(f"{where}: field order_date is not a date: {text!r}")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=LOCAL_TZ)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise MappingError(f"{where}: field order_date is out of range: {text!r}") from None


def parse_decimal(text: str) -> Decimal:
    """``12.50``, ``12,50`` or ``1.234,50`` as a Decimal; InvalidOperation if not a number."""
    text = text.strip().replace(" ", "")
    if "," in text:
        text = text.replace(".", "").replace(",", ".")
    value = Decimal(text)
    if not value.is_finite():
        raise InvalidOperation(text)
    return value


def _line(row: dict[str, Any], where: str, currency: str, zero: Money) -> OrderLine:
    raw_qty = row.get("qty")
    qty_text = raw_qty.strip() if isinstance(raw_qty, str) else ""
    if not qty_text.isdecimal() or int(qty_text) <= 0:
        raise MappingError(f"{where}: field qty is not a positive whole number: {raw_qty!r}")
    raw_price = _field(row, "unit_price", where.split(" row ")[0])
    try:
        price = parse_decimal(raw_price)
    except InvalidOperation:
        raise MappingError(f"{where}: field unit_price is not a number: {raw_price!r}") from None
    if price < 0:
        raise MappingError(f"{where}: field unit_price is negative: {raw_price!r}")
    sku = _field(row, "sku", where.split(" row ")[0]).strip()
    line_id = _optional(row.get("line_no")) or str(row.get("_row", "1"))
    return OrderLine(line_id=line_id, sku=sku, quantity=int(qty_text),
                     unit_price=Money(amount=price, currency=currency), tax=zero, discount=zero)


map_order = make_mapper({})

__all__ = ["CANONICAL_STATUSES", "CHANNEL", "STATUS_CODES", "MappingError", "make_mapper",
           "map_order", "parse_decimal", "status_table"]
