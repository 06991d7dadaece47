"""Reconciliation: each marketplace's view of its orders against the ERP's sales orders.

Read only, and only through each system's public API with the credentials in Settings (never a
simulator's ``/_sim`` endpoints), as an operator would:

* Shopify: ``GET /admin/api/{v}/orders.json?status=any&created_at_min=`` (every page, paced by
  the call-limit bucket; ``connectors.shopify_outbound.list_orders``);
* Amazon: ``getOrders`` with ``CreatedAfter`` (every NextToken page) and ``getOrderItems`` per
  order, paced by the rate Amazon reports; orders awaiting payment have no amounts and are skipped;
* Walmart: ``GET /v3/orders?createdStartDate=`` (every ``nextCursor`` page);
* regional: the CSV batch files in the drop directory, every file (ingested or not), the latest
  file's rows per order; seller cancellations are known from our own ``cancellations_*.csv`` in
  the outbox (the marketplace does not echo them);
* ERP: ``GET /api/resource/Sales Order`` (``transaction_date`` in the window, paged) and, for
  orders a marketplace shows refunded, their credit notes (``Sales Invoice``, ``is_return`` 1).

Every marketplace order is mapped by its channel's mapper (``retail_sync.channels``) and given a
canonical status (``marketplace_status``); every sales order too (``erp_status``). ``compare`` then
reports, per order key (``channel:marketplace id`` = the sales order's ``po_no``):

``missing_in_erp``
    the marketplace has it, not cancelled, not pending (awaiting payment / acknowledgement), created
    in the window, and no sales order carries that po_no;
``missing_on_marketplace``
    a sales order of the window for a checked channel whose key the marketplace does not list;
``status_differs``
    both have it and the statuses are not compatible (``COMPATIBLE``); also: the marketplace shows
    a refund and the ERP has no credit note for the order;
``amount_differs``
    neither side cancelled and |marketplace total - ERP grand_total| > 0.01. Not compared (counted
    as ``not_compared``) when the seller cancelled part of the order on the marketplace: the ERP
    holds only what was reserved, and the marketplace's total may or may not have shrunk.

The window: the ERP's sales orders with ``transaction_date`` (the order's creation day, UTC) on
or after ``now - lookback``; the marketplaces are read from one day earlier so that every sales
order of the window can be found there. A marketplace order created before ``now - lookback``
that the ERP does not have is outside the window (skipped), not missing.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from retail_sync.agents.retry import RetryPolicy, retry
from retail_sync.connectors.amazon import AmazonOrdersClient, amazon_time
from retail_sync.connectors.erp import SALES_INVOICE, SALES_ORDER, FrappeSession
from retail_sync.connectors.errors import DecodeError, SyncError
from retail_sync.connectors.ratelimit import AMAZON_PLANS, budgets_for
from retail_sync.connectors.regional import group_orders, read_rows
from retail_sync.connectors.shopify_outbound import ShopifyOutbound, list_orders
from retail_sync.connectors.walmart import ORDERS_PATH, WalmartOrdersClient, walmart_budgets, walmart_date
from retail_sync.settings import Settings
from retail_sync.streams.mappers.amazon import AWAITING_PAYMENT
from retail_sync.streams.mappers.shopify import FULFILLMENT_STATUS_TO_CANONICAL, UNFULFILLED
from retail_sync.streams.models import Order, order_key

JSON = dict[str, Any]
CAUSES = ("missing_in_erp", "missing_on_marketplace", "status_differs", "amount_differs")
TOLERANCE = Decimal("0.01")
DEFAULT_LOOKBACK = timedelta(days=7)
MARGIN = timedelta(days=1)  # marketplaces are read this much further back than the ERP
PAGE_SIZE = 500

# --- statuses ---------------------------------------------------------------------------------

#: marketplace canonical status -> the ERP statuses that agree with it. Anything else differs.
#: The ERP speaks only accepted / partially_shipped / shipped / cancelled (see ``erp_status``).
COMPATIBLE: dict[str, frozenset[str]] = {
    "pending": frozenset({"accepted"}),  # awaiting payment/acknowledgement; posted already
    "accepted": frozenset({"accepted"}),
    "partially_shipped": frozenset({"partially_shipped"}),
    "shipped": frozenset({"shipped"}),
    "delivered": frozenset({"shipped"}),
    # money back after shipping: the ERP keeps the delivery and books credit notes
    "partially_refunded": frozenset({"shipped", "partially_shipped"}),
    "refunded": frozenset({"shipped", "partially_shipped"}),
    "cancelled": frozenset({"cancelled"}),
    "unfulfillable": frozenset({"cancelled"}),
}
REFUNDED = frozenset({"partially_refunded", "refunded"})
CANCELLED = frozenset({"cancelled", "unfulfillable"})
NOT_EXPECTED_IN_ERP = CANCELLED | {"pending"}


def compatible(marketplace: str, erp: str) -> bool:
    """Whether a marketplace status and an ERP status (both canonical) agree."""
    return erp in COMPATIBLE.get(marketplace, frozenset())


def marketplace_status(order: Order) -> str:
    """The marketplace's canonical status of a mapped order.

    Cancelled when ``cancelled_at`` is set or the status says so. Shopify's mapper copies
    Shopify's own words: ``fulfilled`` -> shipped, ``partial`` -> partially_shipped,
    ``restocked`` -> cancelled, else accepted; once something shipped, a ``financial_status``
    of refunded / partially_refunded wins. The other mappers write canonical words, kept as they
    are."""
    if order.cancelled_at is not None:
        return "cancelled"
    status = order.fulfillment_status
    if order.channel == "shopify":
        word = FULFILLMENT_STATUS_TO_CANONICAL.get(status or UNFULFILLED, "accepted")
        if word in ("shipped", "partially_shipped") and order.financial_status in REFUNDED:
            return str(order.financial_status)
        return word
    return status or "accepted"


def erp_status(row: JSON) -> str:
    """The ERP's canonical status of a Sales Order row: docstatus 2 -> cancelled; Closed with
    nothing delivered -> cancelled (the ERP ended it); per_delivered >= 100 (or Closed after a
    delivery) -> shipped; > 0 -> partially_shipped; else accepted (drafts too)."""
    if _int(row.get("docstatus")) == 2 or row.get("status") == "Cancelled":
        return "cancelled"
    delivered = _decimal(row.get("per_delivered")) or Decimal(0)
    if row.get("status") == "Closed":
        return "shipped" if delivered > 0 else "cancelled"
    if delivered >= 100:
        return "shipped"
    return "partially_shipped" if delivered > 0 else "accepted"


# --- the two sides and the outcome ---------------------------------------------------------------


@dataclass(frozen=True)
class MarketplaceOrder:
    """One order as its marketplace shows it, reduced to what is compared."""

    order_key: str
    channel: str
    status: str  # canonical (marketplace_status)
    total: Decimal | None
    currency: str | None = None
    created_at: datetime | None = None
    partially_cancelled: bool = False  # the seller cancelled some units (amounts not compared)
    raw_status: str | None = None

    @classmethod
    def from_order(cls, order: Order, *, partially_cancelled: bool = False) -> MarketplaceOrder:
        return cls(order.order_key, order.channel, marketplace_status(order), order.total.amount,
                   order.currency, order.created_at, partially_cancelled,
                   order.fulfillment_status)  # fmt: skip

    def as_dict(self) -> JSON:
        return {"status": self.status, "total": _text(self.total), "currency": self.currency,
                "raw_status": self.raw_status, "partially_cancelled": self.partially_cancelled,
                "created_at": self.created_at.isoformat() if self.created_at else None}  # fmt: skip


@dataclass(frozen=True)
class ErpOrder:
    """One Sales Order, reduced to what is compared. ``credit_notes``: None when not read."""

    order_key: str  # po_no
    name: str
    status: str  # canonical (erp_status)
    erp_status: str | None
    docstatus: int
    grand_total: Decimal | None
    per_delivered: Decimal | None
    currency: str | None = None
    credit_notes: int | None = None

    @classmethod
    def from_row(cls, row: JSON, credit_notes: int | None = None) -> ErpOrder:
        return cls(str(row.get("po_no") or ""), str(row.get("name") or ""), erp_status(row),
                   row.get("status"), _int(row.get("docstatus")), _decimal(row.get("grand_total")),
                   _decimal(row.get("per_delivered")), row.get("currency"), credit_notes)  # fmt: skip

    @property
    def channel(self) -> str:
        return self.order_key.partition(":")[0]

    def as_dict(self) -> JSON:
        return {"name": self.name, "status": self.status, "erp_status": self.erp_status,
                "docstatus": self.docstatus, "grand_total": _text(self.grand_total),
                "per_delivered": _text(self.per_delivered), "currency": self.currency,
                "credit_notes": self.credit_notes}  # fmt: skip


@dataclass(frozen=True)
class Mismatch:
    order_key: str
    channel: str
    cause: str  # one of CAUSES
    marketplace: MarketplaceOrder | None
    erp: ErpOrder | None
    detail: str

    def as_dict(self) -> JSON:
        return {"order_key": self.order_key, "channel": self.channel, "cause": self.cause,
                "marketplace": self.marketplace.as_dict() if self.marketplace else None,
                "erp": self.erp.as_dict() if self.erp else None, "detail": self.detail}  # fmt: skip


@dataclass
class ChannelCounts:
    """One channel's numbers. ``matched``: on both sides with nothing found to differ (includes
    ``not_compared``: statuses agree, amounts not compared after a partial seller cancellation);
    ``skipped``: on the marketplace only, and rightly so (pending / awaiting payment, cancelled,
    or created before the window); ``unmapped``: orders its mapper refused."""

    channel: str
    marketplace: int = 0
    erp: int = 0
    matched: int = 0
    not_compared: int = 0
    skipped: int = 0
    unmapped: int = 0
    mismatches: Counter[str] = field(default_factory=Counter)
    error: str | None = None

    def as_dict(self) -> JSON:
        return {"channel": self.channel, "marketplace": self.marketplace, "erp": self.erp,
                "matched": self.matched, "not_compared": self.not_compared,
                "skipped": self.skipped, "unmapped": self.unmapped,
                "mismatches": {cause: self.mismatches.get(cause, 0) for cause in CAUSES},
                "error": self.error}  # fmt: skip


@dataclass
class Report:
    generated_at: datetime
    since: datetime | None
    channels: dict[str, ChannelCounts]
    mismatches: list[Mismatch]
    unmapped: list[JSON] = field(default_factory=list)  # {"channel", "order_id", "reason"}

    @property
    def ok(self) -> bool:
        """No mismatch and every channel (and the ERP) could be read."""
        return not self.mismatches and not any(c.error for c in self.channels.values())

    def by_cause(self) -> Counter[str]:
        return Counter(m.cause for m in self.mismatches)

    def as_json(self) -> JSON:
        """The report as JSON-ready data (strings, numbers, lists, dicts)."""
        return {
            "ok": self.ok,
            "generated_at": self.generated_at.isoformat(),
            "since": self.since.isoformat() if self.since else None,
            "channels": {name: c.as_dict() for name, c in self.channels.items()},
            "mismatches_by_cause": {cause: self.by_cause().get(cause, 0) for cause in CAUSES},
            "mismatches": [m.as_dict() for m in self.mismatches],
            "unmapped": self.unmapped,
        }

    def table(self, limit: int = 20) -> str:
        """A readable summary: one row per channel, then the first ``limit`` mismatches."""
        since = self.since.isoformat(timespec="seconds") if self.since else "-"
        lines = [f"reconciliation at {self.generated_at.isoformat(timespec='seconds')} "
                 f"(orders since {since}): {'OK' if self.ok else 'MISMATCHES'}", ""]  # fmt: skip
        heads = ("channel", "market", "erp", "matched", "miss_erp", "miss_mkt", "status", "amount",
                 "not_cmp", "skipped", "unmapped")  # fmt: skip
        rows: list[tuple[str, ...]] = [heads]
        for c in self.channels.values():
            n = c.mismatches
            rows.append((c.channel, *map(str, (c.marketplace, c.erp, c.matched,
                                               n["missing_in_erp"], n["missing_on_marketplace"],
                                               n["status_differs"], n["amount_differs"],
                                               c.not_compared, c.skipped, c.unmapped))))  # fmt: skip
        widths = [max(len(r[i]) for r in rows) for i in range(len(heads))]
        for row in rows:
            lines.append("  ".join(v.ljust(w) if i == 0 else v.rjust(w)
                                   for i, (v, w) in enumerate(zip(row, widths, strict=True))))
        for c in self.channels.values():
            if c.error:
                lines.append(f"  {c.channel}: could not be read: {c.error}")
        if self.mismatches:
            shown = self.mismatches[:limit]
            lines += ["", f"{len(self.mismatches)} mismatch(es)"
                      + (f", first {len(shown)}:" if len(shown) < len(self.mismatches) else ":")]
            for m in shown:
                market = (f"{m.marketplace.status} {_text(m.marketplace.total) or '?'}"
                          if m.marketplace else "-")  # fmt: skip
                erp = (f"{m.erp.name} {m.erp.status} {_text(m.erp.grand_total) or '?'}"
                       if m.erp else "-")  # fmt: skip
                lines.append(f"  {m.cause:<22} {m.order_key}  marketplace: {market}  "
                             f"erp: {erp}  ({m.detail})")  # fmt: skip
        if self.unmapped:
            lines += ["", f"{len(self.unmapped)} marketplace order(s) could not be mapped:"]
            lines += [f"  {u['channel']}:{u['order_id']}: {u['reason']}" for u in self.unmapped[:limit]]
        return "\n".join(lines)


# --- the comparison (pure) ------------------------------------------------------------------------


def compare(channel: str, marketplace: Iterable[MarketplaceOrder], erp: Iterable[ErpOrder], *,
            since: datetime | None = None) -> tuple[ChannelCounts, list[Mismatch]]:
    """Compare one channel's marketplace orders with the ERP's sales orders of that channel.

    ``since``: marketplace orders created before it that the ERP does not have are outside the
    window (skipped). ERP orders are taken as given (already limited to the window)."""
    market = {o.order_key: o for o in marketplace}
    books = {o.order_key: o for o in erp}
    counts = ChannelCounts(channel, marketplace=len(market), erp=len(books))
    found: list[Mismatch] = []
    for key in sorted(market.keys() | books.keys()):
        mine, theirs = market.get(key), books.get(key)
        if theirs is None:
            assert mine is not None
            if mine.status in NOT_EXPECTED_IN_ERP or (
                    since is not None and mine.created_at is not None and mine.created_at < since):
                counts.skipped += 1
                continue
            found.append(Mismatch(key, channel, "missing_in_erp", mine, None,
                                  f"{mine.status} on the marketplace, no sales order with this po_no"))
            continue
        if mine is None:
            found.append(Mismatch(key, channel, "missing_on_marketplace", None, theirs,
                                  f"sales order {theirs.name} ({theirs.status}); the marketplace "
                                  "does not list this order"))  # fmt: skip
            continue
        problems = _differences(mine, theirs)
        if problems is None:
            counts.not_compared += 1
            problems = []
        found += problems
        if not problems:
            counts.matched += 1
    for mismatch in found:
        counts.mismatches[mismatch.cause] += 1
    return counts, found


def _differences(mine: MarketplaceOrder, theirs: ErpOrder) -> list[Mismatch] | None:
    """The mismatches of one order both sides have; None when the amounts were not compared
    (and the statuses agree)."""
    key, channel, found = mine.order_key, mine.channel, []
    if not compatible(mine.status, theirs.status):
        found.append(Mismatch(key, channel, "status_differs", mine, theirs,
                              f"marketplace {mine.status}, ERP {theirs.status}"
                              f" ({theirs.erp_status})"))  # fmt: skip
    elif mine.status in REFUNDED and theirs.credit_notes == 0:
        found.append(Mismatch(key, channel, "status_differs", mine, theirs,
                              f"marketplace {mine.status}, ERP has no credit note"))
    if mine.status in CANCELLED or theirs.status == "cancelled":
        return found
    if mine.partially_cancelled or mine.total is None or theirs.grand_total is None:
        return found or None
    if abs(mine.total - theirs.grand_total) > TOLERANCE:
        found.append(Mismatch(key, channel, "amount_differs", mine, theirs,
                              f"marketplace total {mine.total} {mine.currency or '?'}, ERP grand_total "
                              f"{theirs.grand_total} {theirs.currency or '?'}"))
    return found


# --- reading the marketplaces ------------------------------------------------------------------------


@dataclass
class ChannelRead:
    orders: list[MarketplaceOrder] = field(default_factory=list)
    unmapped: list[JSON] = field(default_factory=list)
    pending: int = 0  # awaiting payment, no amounts shown (Amazon): not read further


Mapper = Callable[[Any], Order]
Reader = Callable[[Settings, Mapper, datetime], Awaitable[ChannelRead]]


def _map(read: ChannelRead, channel: str, order_id: str, payload: Any, mapper: Mapper,
         partially_cancelled: bool = False) -> Order | None:
    """Map one marketplace order into ``read`` (or note why it cannot be). ``partially_cancelled``
    only matters for an order not cancelled as a whole (cancelled ones have no amount compared)."""
    try:
        order = mapper(payload)
    except (DecodeError, ValueError) as exc:
        read.unmapped.append({"channel": channel, "order_id": order_id, "reason": str(exc)})
        return None
    read.orders.append(MarketplaceOrder.from_order(order, partially_cancelled=partially_cancelled))
    return order


#: reading a marketplace for reconciliation: a throttle or a transient failure is waited out
RETRIES = RetryPolicy(attempts=6, base_s=0.5, max_s=30.0)


async def _retrying(call: Callable[[], Awaitable[Any]]) -> Any:
    return await retry(call, RETRIES)


async def read_shopify(settings: Settings, mapper: Mapper, since: datetime) -> ChannelRead:
    outbound = ShopifyOutbound.from_settings(settings)
    assert outbound is not None
    read = ChannelRead()
    try:
        raw = await list_orders(outbound, created_at_min=since.isoformat(timespec="seconds"))
    finally:
        await outbound.close()
    for order in raw:
        _map(read, "shopify", str(order.get("id")), order, mapper, _shopify_partly_cancelled(order))
    read.orders = [o for o in read.orders if o.created_at is None or o.created_at >= since]
    return read


def _shopify_partly_cancelled(order: JSON) -> bool:
    """Units refunded with ``restock_type: cancel`` while the order itself is not cancelled."""
    if order.get("cancelled_at"):
        return False
    return any(isinstance(item, dict) and item.get("restock_type") == "cancel"
               for refund in order.get("refunds") or [] if isinstance(refund, dict)
               for item in refund.get("refund_line_items") or [])  # fmt: skip


async def read_amazon(settings: Settings, mapper: Mapper, since: datetime) -> ChannelRead:
    assert settings.amazon_base_url is not None
    client = AmazonOrdersClient(str(settings.amazon_base_url),
                                settings.amazon_access_token.get_secret_value(),
                                budgets=budgets_for(settings, "amazon", AMAZON_PLANS))
    ids = [m for m in settings.amazon_marketplace_ids.split(",") if m]
    read, token = ChannelRead(), None
    try:
        while True:
            page = await _retrying(partial(
                client.get_orders, marketplace_ids=ids,
                created_after=None if token else amazon_time(since), next_token=token))
            for order in page.orders:
                order_id = str(order.get("AmazonOrderId"))
                if order.get("OrderStatus") in AWAITING_PAYMENT:
                    read.pending += 1
                    continue
                items = await _retrying(partial(client.get_order_items, order_id))
                before = len(read.unmapped)
                zeroed = any(i.get("QuantityOrdered") == 0 for i in items)  # cancelled items
                _map(read, "amazon", order_id, {"order": order, "items": items}, mapper, zeroed)
                if len(read.unmapped) > before and order.get("OrderStatus") == "Canceled":
                    read.unmapped.pop()  # every item zeroed: Amazon's cancelled order
                    read.orders.append(MarketplaceOrder(order_key("amazon", order_id), "amazon",
                                                        "cancelled", None, raw_status="Canceled"))
            token = page.next_token
            if not token:
                return read
    finally:
        await client.close()


async def read_walmart(settings: Settings, mapper: Mapper, since: datetime) -> ChannelRead:
    assert settings.walmart_base_url is not None
    client = WalmartOrdersClient(str(settings.walmart_base_url), settings.walmart_client_id,
                                 settings.walmart_client_secret.get_secret_value(),
                                 svc_name=settings.walmart_svc_name,
                                 budgets=walmart_budgets(settings))  # fmt: skip
    params = {"createdStartDate": walmart_date(since), "limit": "100"}
    read, seen = ChannelRead(), set()
    cursor: str | None = None
    try:
        while True:
            page = await _retrying(partial(client.list_page, ORDERS_PATH, "orders",
                                           params=params if cursor is None else None, cursor=cursor))
            for order in page.orders:
                po = str(order.get("purchaseOrderId"))
                if po in seen:
                    continue
                seen.add(po)
                _map(read, "walmart", po, order, mapper, _walmart_cancelled_lines(order))
            cursor = page.next_cursor
            if not cursor:
                return read
    finally:
        await client.close()


def _walmart_cancelled_lines(order: JSON) -> bool:
    """Some units of some line are Cancelled."""
    lines = (order.get("orderLines") or {}).get("orderLine") or []
    return any(isinstance(s, dict) and s.get("status") == "Cancelled"
               for line in lines if isinstance(line, dict)
               for s in (line.get("orderLineStatuses") or {}).get("orderLineStatus") or [])  # fmt: skip


async def read_regional(settings: Settings, mapper: Mapper, since: datetime) -> ChannelRead:
    assert settings.regional_drop_dir is not None
    return await asyncio.to_thread(_read_regional, Path(settings.regional_drop_dir),
                                   settings.regional_outbox_dir, mapper, since)


def _read_regional(drop: Path, outbox: Path | None, mapper: Mapper, since: datetime) -> ChannelRead:
    latest: dict[str, Any] = {}
    files = sorted((p for p in drop.glob("*.csv") if p.is_file()), key=lambda p: p.name) \
        if drop.is_dir() else []
    read = ChannelRead()
    for path in files:
        try:
            rows = read_rows(path)
        except SyncError as exc:
            read.unmapped.append({"channel": "regional", "order_id": path.name, "reason": str(exc)})
            continue
        for polled in group_orders(path.name, rows):  # a later file restates the order
            latest[polled.marketplace_order_id] = polled
    cancelled = _regional_seller_cancellations(outbox)
    shipped, refunded = _regional_outbox_units(outbox, "shipments"), \
        _regional_outbox_units(outbox, "refunds")
    for ref, polled in latest.items():
        order = _map(read, "regional", ref, orjson.loads(polled.body), mapper, ref in cancelled)
        if order is None or read.orders[-1].status == "cancelled":
            continue
        # the marketplace never restates an order after our shipment and refund files: its view
        # is its order file plus what we told it (as for seller cancellations)
        ordered = sum(line.quantity for line in order.lines)
        status = read.orders[-1].status
        if refunded.get(ref):
            status = "partially_refunded"
        elif shipped.get(ref, 0) >= ordered:
            status = "shipped"
        elif shipped.get(ref):
            status = "partially_shipped"
        read.orders[-1] = dataclasses.replace(read.orders[-1], status=status)
    read.orders = [o for o in read.orders if o.created_at is None or o.created_at >= since]
    return read


def _regional_outbox_units(outbox: Path | None, kind: str) -> dict[str, int]:
    """Order ref -> units named in our ``<kind>_*.csv`` files to the regional marketplace
    (pending and processed); each shipment or refund id counted once."""
    units: dict[str, int] = {}
    seen: set[tuple[str, str, str]] = set()
    if outbox is None:
        return units
    id_column = "shipment_id" if kind == "shipments" else "refund_id"
    for folder in (Path(outbox), Path(outbox) / "processed"):
        for path in sorted(folder.glob(f"{kind}_*.csv")) if folder.is_dir() else ():
            try:
                with path.open(encoding="utf-8-sig", newline="") as handle:
                    for row in csv.DictReader(handle):
                        key = (row.get(id_column, ""), row.get("order_id", ""),
                               row.get("line_id", ""))
                        if key in seen or not row.get("order_id"):
                            continue
                        seen.add(key)
                        qty = int(row.get("quantity") or 0)
                        units[row["order_id"]] = units.get(row["order_id"], 0) + max(qty, 1)
            except (OSError, csv.Error, KeyError, ValueError):
                continue
    return units


def _regional_seller_cancellations(outbox: Path | None) -> set[str]:
    """Order refs named in the cancellation files we gave the regional marketplace (pending and
    processed): it applies them but never restates the order."""
    refs: set[str] = set()
    if outbox is None:
        return refs
    for folder in (Path(outbox), Path(outbox) / "processed"):
        for path in folder.glob("cancellations_*.csv") if folder.is_dir() else ():
            try:
                with path.open(encoding="utf-8-sig", newline="") as handle:
                    refs.update(r["order_id"] for r in csv.DictReader(handle) if r.get("order_id"))
            except (OSError, csv.Error, KeyError):
                continue
    return refs


#: channel -> (is it configured, its reader)
READERS: dict[str, tuple[Callable[[Settings], bool], Reader]] = {
    "shopify": (lambda s: s.shopify_admin_base_url is not None, read_shopify),
    "amazon": (lambda s: s.amazon_base_url is not None, read_amazon),
    "walmart": (lambda s: s.walmart_base_url is not None, read_walmart),
    "regional": (lambda s: s.regional_drop_dir is not None, read_regional),
}


# --- reading the ERP ---------------------------------------------------------------------------------


def _erp_session(settings: Settings) -> FrappeSession:
    return FrappeSession(str(settings.erp_base_url), settings.erp_api_key.get_secret_value(),
                         settings.erp_api_secret.get_secret_value(), timeout_s=settings.erp_timeout_s)


async def _erp_pages(http: FrappeSession, doctype: str, filters: list[list[Any]],
                     fields: list[str]) -> list[JSON]:
    """Every row of ``doctype`` matching ``filters``, page by page (oldest first)."""
    rows: list[JSON] = []
    while True:
        query = {"fields": json.dumps(fields), "filters": json.dumps([[doctype, *f] for f in filters]),
                 "order_by": "creation asc, name asc", "limit_start": str(len(rows)),
                 "limit_page_length": str(PAGE_SIZE)}  # fmt: skip
        page = await _retrying(partial(http.get_data, http.url(doctype), f"list {doctype}",
                                       params=query))
        if not isinstance(page, list) or not all(isinstance(r, dict) for r in page):
            raise DecodeError(f"ERP list {doctype}: data is not a list of rows")
        rows += page
        if len(page) < PAGE_SIZE:
            return rows


SO_FIELDS = ["name", "po_no", "status", "docstatus", "grand_total", "per_delivered", "currency",
             "transaction_date"]


async def read_erp(settings: Settings, since: datetime) -> list[JSON]:
    """The Sales Orders of the window (``transaction_date`` >= the window's first day)."""
    http = _erp_session(settings)
    try:
        return await _erp_pages(http, SALES_ORDER, [["transaction_date", ">=", since.date().isoformat()]],
                                SO_FIELDS)
    finally:
        await http.close()


async def read_credit_notes(settings: Settings, keys: Sequence[str]) -> Counter[str]:
    """Submitted credit notes (return Sales Invoices) per po_no, for ``keys`` only."""
    found: Counter[str] = Counter()
    if not keys:
        return found
    http = _erp_session(settings)
    try:
        for start in range(0, len(keys), 100):
            chunk = list(keys[start:start + 100])
            rows = await _erp_pages(http, SALES_INVOICE, [["is_return", "=", 1], ["docstatus", "=", 1],
                                                          ["po_no", "in", chunk]], ["name", "po_no"])
            found.update(str(r.get("po_no")) for r in rows)
    finally:
        await http.close()
    return found


# --- the whole run ----------------------------------------------------------------------------------


async def reconcile(settings: Settings, channels: Sequence[str] | None = None, *,
                    lookback: timedelta = DEFAULT_LOOKBACK, now: datetime | None = None) -> Report:
    """Read every configured channel (or ``channels``) and the ERP, compare, report."""
    from retail_sync.channels import channels as registry  # the engine's mappers (and plugins)

    now = now or datetime.now(UTC)
    since = now - lookback
    plugins = registry(settings)
    names = list(channels) if channels is not None else [
        name for name, (configured, _) in READERS.items() if configured(settings) and name in plugins]
    counts: dict[str, ChannelCounts] = {}
    reads: dict[str, ChannelRead] = {}

    async def one(name: str) -> None:
        entry = READERS.get(name)
        if entry is None or name not in plugins:
            counts[name] = ChannelCounts(name, error="no reader for this channel")
        elif not entry[0](settings):
            counts[name] = ChannelCounts(name, error="not configured")
        else:
            try:
                reads[name] = await entry[1](settings, plugins[name].mapper, since - MARGIN)
            except (SyncError, OSError) as exc:
                counts[name] = ChannelCounts(name, error=f"{type(exc).__name__}: {exc}")

    erp_task = asyncio.ensure_future(read_erp(settings, since))
    await asyncio.gather(*(one(name) for name in names))
    try:
        erp_rows = await erp_task
    except (SyncError, OSError) as exc:
        error = f"ERP: {type(exc).__name__}: {exc}"
        for name in names:
            counts.setdefault(name, ChannelCounts(name, error=error))
        return Report(now, since, {n: counts[n] for n in names}, [])

    refunded = {o.order_key for r in reads.values() for o in r.orders if o.status in REFUNDED}
    try:
        credits: Counter[str] | None = await read_credit_notes(settings, sorted(refunded))
    except (SyncError, OSError):
        credits = None  # refunds then count as compatible with a shipped order
    by_channel: dict[str, list[ErpOrder]] = {}
    for row in erp_rows:
        key = str(row.get("po_no") or "")
        credit = credits.get(key, 0) if credits is not None and key in refunded else None
        by_channel.setdefault(key.partition(":")[0], []).append(ErpOrder.from_row(row, credit))

    mismatches: list[Mismatch] = []
    unmapped: list[JSON] = []
    for name in names:
        if name not in reads:
            continue
        read = reads[name]
        counts[name], found = compare(name, read.orders, by_channel.get(name, []), since=since)
        counts[name].skipped += read.pending
        counts[name].unmapped = len(read.unmapped)
        mismatches += found
        unmapped += read.unmapped
    return Report(now, since, {n: counts[n] for n in names}, mismatches, unmapped)


# --- small helpers ------------------------------------------------------------------------------------


def _decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return None
    return amount if amount.is_finite() else None


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _text(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


__all__ = [
    "CAUSES",
    "COMPATIBLE",
    "ChannelCounts",
    "ErpOrder",
    "MarketplaceOrder",
    "Mismatch",
    "Report",
    "compare",
    "compatible",
    "erp_status",
    "marketplace_status",
    "reconcile",
]
