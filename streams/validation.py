"""Plausibility rules a canonical order passes before it leaves its mapper (ARCHITECTURE §5f.4).

The canonical model says what an order *looks* like; these rules say whether it can be *true*.
Every built-in mapper calls ``validate_order`` on the order it built, naming its own fields, so an
order that fails never reaches the ERP: it becomes a ``mapping`` exception whose reason names the
field and says why (``InvalidOrder``, a MappingError), and it can be replayed once fixed.

Rules:

* **currency** is an ISO 4217 code (``streams/iso4217.py``): current, or withdrawn in or after the
  month the order was placed (BGN until 2026-01). Codes without a minor unit (XAU, XTS, XXX) and
  anything else (``ZZZ``) are refused. Every amount of the order is in that currency.
* **line ids** are unique within the order.
* **quantities** are whole numbers > 0: a JSON ``true`` is not 1, ``2.0`` and ``"2"`` are not 2
  (channels whose contract sends text, Walmart's ``orderLineQuantity.amount`` and the regional CSV,
  parse their digits in the mapper; Shopify and Amazon send JSON integers, so anything else is
  refused). The canonical model itself is strict about it (``OrderLine.quantity``).
* **dates** (created, updated, cancelled) are timezone-aware (the model insists), not before
  2000-01-01 UTC and not more than one day ahead of this machine's clock.
* **total**: the marketplace's stated total equals lines + shipping + tax − discounts (tax left out
  when prices include it), within ``RETAIL_SYNC_ORDER_TOTAL_TOLERANCE_UNITS`` minor units of the
  currency per line plus one for the order (default 1: $0.04 for a 3-line USD order, ¥4 in JPY).
  Each mapper says what its marketplace states (``Expected``); a channel that states no order
  total (Walmart charges per line, the regional CSV has unit prices only) is not checked against
  one we would have to invent from the same numbers. Nor is a cancelled order's (``is_cancelled``):
  it never goes to the ERP as an order, and refusing it would lose the cancellation.

The rules in force come from ``use_rules`` (the ingest agent sets them from its settings per
record) or else from the environment (``active_rules``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import Any

from pydantic import ValidationError

from retail_sync.streams import iso4217
from retail_sync.streams.errors import MappingError
from retail_sync.streams.models import Order

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
MAX_FUTURE = timedelta(days=1)
DEFAULT_TOLERANCE_UNITS = Decimal(1)
TOLERANCE_SETTING = "RETAIL_SYNC_ORDER_TOTAL_TOLERANCE_UNITS"
WITHDRAWN_MINOR_UNITS = 2  # the CSV leaves withdrawn codes' minor unit empty


class InvalidOrder(MappingError):
    """The payload made an order, but not a plausible one: ``field`` (the channel's own name for
    it) is wrong for ``reason``."""

    def __init__(self, field: str, reason: str, *, order: str | None = None) -> None:
        self.field, self.reason, self.order = field, reason, order
        where = f"order {order} rejected: " if order else ""
        super().__init__(f"{where}{field}: {reason}")


@dataclass(frozen=True)
class OrderRules:
    total_tolerance_units: Decimal = DEFAULT_TOLERANCE_UNITS
    earliest: datetime = EARLIEST
    max_future: timedelta = MAX_FUTURE

    @classmethod
    def from_settings(cls, settings: Any) -> OrderRules:
        return _rules_for(float(settings.order_total_tolerance_units))


@cache
def _rules_for(units: float) -> OrderRules:
    return OrderRules(total_tolerance_units=Decimal(str(units)))


_ACTIVE: ContextVar[OrderRules | None] = ContextVar("retail_sync_order_rules", default=None)


@contextmanager
def use_rules(rules: OrderRules) -> Iterator[OrderRules]:
    """Validate with ``rules`` inside this block (this task/thread only)."""
    token = _ACTIVE.set(rules)
    try:
        yield rules
    finally:
        _ACTIVE.reset(token)


def active_rules() -> OrderRules:
    """The rules set by ``use_rules``, else those of the environment's settings."""
    return _ACTIVE.get() or _environment_rules()


@cache
def _environment_rules() -> OrderRules:
    """The tolerance in the environment (the settings field ``order_total_tolerance_units``, read
    here without the wiring's Settings: streams import no wiring module)."""
    raw = os.environ.get(TOLERANCE_SETTING)
    if raw is None:
        return OrderRules()
    try:
        units = float(raw)
    except ValueError:  # a broken environment is reported where settings are loaded
        return OrderRules()
    if not 0 <= units <= 1e9:  # the settings field's bounds
        return OrderRules()
    return _rules_for(units)


@dataclass(frozen=True)
class FieldNames:
    """What the channel calls the fields a rule is about (used in the reasons)."""

    total: str = "total"
    currency: str = "currency"
    created_at: str = "created_at"
    updated_at: str = "updated_at"
    cancelled_at: str = "cancelled_at"
    lines: str = "lines"  # rendered as ``{lines}[{index}].{line_id}``
    line_id: str = "line_id"
    quantity: str = "quantity"


CANONICAL = FieldNames()


@dataclass(frozen=True)
class Expected:
    """One reading of what the marketplace's stated total should be: ``amount``, and ``how``
    it was computed (shown in the reason when the total does not match)."""

    amount: Decimal
    how: str


# --- the rules ---------------------------------------------------------------------------------


def minor_units(currency: str) -> int:
    """Decimals of ``currency`` (2 when unknown, so the tolerance stays defined)."""
    return iso4217.CURRENT_MINOR_UNITS.get(currency, WITHDRAWN_MINOR_UNITS)


def currency_problem(code: str, at: datetime | None = None) -> str | None:
    """Why ``code`` is not a currency an order placed at ``at`` can be in, or None."""
    if code in iso4217.CURRENT_MINOR_UNITS:
        return None
    if code in iso4217.NO_MINOR_UNIT:
        return (f"{code!r} is an ISO 4217 code without a minor unit (a fund, metal or testing "
                "code), not a currency an order is paid in")
    gone = iso4217.WITHDRAWN.get(code)
    if gone is not None:
        year, month = int(gone[:4]), int(gone[5:7])
        after = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
        if at is not None and at < after:
            return None
        return f"{code!r} was withdrawn from ISO 4217 in {gone}"
    return f"{code!r} is not an ISO 4217 currency code"


def tolerance(currency: str, lines: int, rules: OrderRules) -> Decimal:
    """The largest accepted difference between a stated and a computed total."""
    unit = Decimal(1).scaleb(-minor_units(currency))
    return rules.total_tolerance_units * unit * (lines + 1)


def lines_amount(order: Order) -> Decimal:
    """Sum of unit price x quantity over the order's lines (before line discounts)."""
    return sum((ln.unit_price.amount * ln.quantity for ln in order.lines), Decimal(0))


def canonical_total(order: Order, *, lines: Decimal | None = None, shipping: Decimal | None = None,
                    tax: Decimal | None = None, tax_included: bool | None = None,
                    extra: Decimal = Decimal(0), extra_name: str = "") -> Expected:
    """lines + shipping + tax − discounts (+ ``extra``) from the canonical amounts; tax is left
    out when prices include it (``tax_included``, default ``order.taxes_included``). ``lines``
    replaces the lines' sum where the channel states line totals (its rounding is then exact);
    ``shipping`` and ``tax`` replace the order's where the channel has another reading of them."""
    included = order.taxes_included if tax_included is None else tax_included
    items = lines_amount(order) if lines is None else lines
    ship = order.shipping.amount if shipping is None else shipping
    taxed = order.tax_total.amount if tax is None else tax
    amount = items + ship + (Decimal(0) if included else taxed) - order.discount_total.amount + extra
    parts = [f"lines {items}", f"+ shipping {ship}",
             f"+ tax {taxed}" if not included else "(tax included in prices)",
             f"- discounts {order.discount_total.amount}"]
    if extra:
        parts.append(f"+ {extra_name or 'other charges'} {extra}")
    return Expected(amount, " ".join(parts) + f" = {amount}")


#: pass as ``expected`` when the channel states no order total of its own
NO_STATED_TOTAL: Sequence[Expected] = ()
#: builds the InvalidOrder for (the channel's field name, why)
_Fail = Callable[[str, str], InvalidOrder]


def validate_order(order: Order, *, expected: Iterable[Expected] | None = None,
                   names: FieldNames = CANONICAL, line_names: Sequence[str] | None = None,
                   rules: OrderRules | None = None, now: datetime | None = None) -> Order:
    """``order`` if it passes every rule, else InvalidOrder naming the first field that fails.

    ``expected``: the readings of the stated total (``order.total``) that the channel allows, one
    of which must match within the tolerance; None: the canonical reading (``canonical_total``);
    ``NO_STATED_TOTAL``: the channel states none, nothing to compare. ``line_names``: the
    channel's name of each line (default ``{names.lines}[index]``)."""
    rules = rules or active_rules()
    key = order.order_key

    def line_name(i: int) -> str:
        return line_names[i] if line_names is not None and i < len(line_names) else f"{names.lines}[{i}]"

    def fail(field: str, reason: str) -> InvalidOrder:
        return InvalidOrder(field, reason, order=key)

    _check_currency(order, names, fail)
    _check_dates(order, names, rules, now or datetime.now(UTC), fail)
    _check_lines(order, names, line_name, fail)
    readings = [canonical_total(order)] if expected is None else list(expected)
    if readings and not is_cancelled(order):
        _check_total(order, readings, names, rules, fail)
    return order


def _check_currency(order: Order, names: FieldNames, fail: _Fail) -> None:
    problem = currency_problem(order.currency, order.created_at)
    if problem:
        raise fail(names.currency, problem)
    for field, money in _amounts(order):
        if money.currency != order.currency:
            raise fail(field, f"is in {money.currency}, the order is in {order.currency}")


def _check_dates(order: Order, names: FieldNames, rules: OrderRules, now: datetime,
                 fail: _Fail) -> None:
    latest = now + rules.max_future
    for field, name in (("created_at", names.created_at), ("updated_at", names.updated_at),
                        ("cancelled_at", names.cancelled_at)):
        moment = getattr(order, field)
        if moment is None:
            continue
        if moment.tzinfo is None:  # the model makes them aware; a plugin may build it raw
            raise fail(name, f"{moment.isoformat()} has no timezone")
        if moment < rules.earliest:
            raise fail(name, f"{moment.isoformat()} is before {rules.earliest.date().isoformat()}: "
                             "not a plausible order date")
        if moment > latest:
            raise fail(name, f"{moment.isoformat()} is more than {_span(rules.max_future)} in the "
                             "future: not a plausible order date")


def _check_lines(order: Order, names: FieldNames, line_name: Callable[[int], str],
                 fail: _Fail) -> None:
    seen: dict[str, int] = {}
    for i, line in enumerate(order.lines):
        quantity = line.quantity
        if type(quantity) is not int or quantity <= 0:  # bool is an int subclass: not accepted
            raise fail(f"{line_name(i)}.{names.quantity}",
                       f"must be a whole number > 0, got {quantity!r}")
        if line.line_id in seen:
            raise fail(f"{line_name(i)}.{names.line_id}",
                       f"{line.line_id!r} is also the id of {line_name(seen[line.line_id])}: "
                       "line ids must be unique")
        seen[line.line_id] = i


def is_cancelled(order: Order) -> bool:
    """The marketplace says the whole order is cancelled: it is never posted to the ERP as an
    order, and its amounts are whatever the marketplace left (Amazon lists a cancelled order's
    items as ordered next to an OrderTotal of what was left before the last cancellation), so
    its total is not checked: refusing it would lose the cancellation itself."""
    return order.cancelled_at is not None or order.fulfillment_status == "cancelled"


def _amounts(order: Order) -> Iterator[tuple[str, Any]]:
    for name in ("subtotal", "shipping", "tax_total", "discount_total", "total"):
        yield name, getattr(order, name)
    for i, line in enumerate(order.lines):
        for name in ("unit_price", "tax", "discount"):
            yield f"lines[{i}].{name}", getattr(line, name)


def _check_total(order: Order, readings: list[Expected], names: FieldNames, rules: OrderRules,
                 fail: Any) -> None:
    stated = order.total.amount
    allowed = tolerance(order.currency, len(order.lines), rules)
    nearest = min(readings, key=lambda e: abs(stated - e.amount))
    off = abs(stated - nearest.amount)
    if off <= allowed:
        return
    raise fail(names.total, (
        f"{stated} {order.currency} does not add up: {nearest.how} {order.currency}, off by {off}, "
        f"more than the tolerance {_plain(allowed)} ({_plain(rules.total_tolerance_units)} minor unit(s) x "
        f"({len(order.lines)} lines + 1), {TOLERANCE_SETTING})"))


def _plain(value: Decimal) -> str:
    return f"{value.normalize():f}"


def _span(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:g} h" if hours < 48 else f"{hours / 24:g} days"


# --- building and validating in one step (canonical data, e.g. a plugin's) ---------------------


def canonical_order(data: Mapping[str, Any], *, expected: Iterable[Expected] | None = None,
                    names: FieldNames = CANONICAL, rules: OrderRules | None = None,
                    now: datetime | None = None) -> Order:
    """Build an Order from canonical ``data`` and validate it; every failure is an InvalidOrder
    naming the field (a model error names its location, e.g. ``lines[0].quantity``)."""
    try:
        order = Order.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"]).lstrip(".")
        raise InvalidOrder(field or "order", f"{first['msg']} (got {first.get('input')!r})"[:300],
                           order=_key_of(data)) from exc
    return validate_order(order, expected=expected, names=names, rules=rules, now=now)


def _key_of(data: Mapping[str, Any]) -> str | None:
    channel, oid = data.get("channel"), data.get("marketplace_order_id")
    return f"{channel}:{oid}" if channel and oid else None
