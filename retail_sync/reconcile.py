"""Reconciliation: each marketplace's view of its orders against the ERP's sales orders.

Read only, and only through each system's public API with the credentials in Settings (never a
simulator's ``/_sim`` endpoints), as an operator would:

* Shopify: ``GET /admin/api/{v}/orders.json?status=any&created_at_min=`` (every page, paced by
  the call-limit bucket; ``connectors.shopify.outbound.list_orders``; ``connectors/shopify/reconcile.py``);
* Amazon: ``getOrders`` with ``CreatedAfter`` (every NextToken page) and ``getOrderItems`` per
  order, paced by the rate Amazon reports; orders awaiting payment have no amounts and are skipped;
* Walmart: ``GET /v3/orders?createdStartDate=`` (every ``nextCursor`` page);
* regional: the CSV batch files in the drop directory, every file (ingested or not), the latest
  file's rows per order; seller cancellations are known from our own ``cancellations_*.csv`` in
  the outbox (the marketplace does not echo them);
* ERP: through the configured ERP plugin's readers (``retail_sync.erps``; ERPNext's are in
  ``connectors/erpnext/reconcile.py``): the sales orders of the window and, for orders a
  marketplace shows refunded, their credit notes.

Every marketplace order is read by its channel plugin's reconciliation reader
(``connectors/<system>/reconcile.py``), mapped by its channel's mapper and given a
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

Long module: the comparison rules (statuses, amounts, the window) and the whole run make one
report; each marketplace's reader is in its connector's reconcile.py, the ERP's in its plugin.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from retail_sync.connectors.errors import SyncError
from retail_sync.connectors.plugin import ReconcileReader
from retail_sync.connectors.reconcile_types import ChannelRead, MarketplaceOrder
from retail_sync.connectors.reconcile_types import marketplace_status as canonical_status
from retail_sync.erps import erp_plugin, settings_for
from retail_sync.settings import Settings
from retail_sync.streams.models import Order

JSON = dict[str, Any]
CAUSES = ("missing_in_erp", "missing_on_marketplace", "status_differs", "amount_differs")
TOLERANCE = Decimal("0.01")
DEFAULT_LOOKBACK = timedelta(days=7)
MARGIN = timedelta(days=1)  # marketplaces are read this much further back than the ERP

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
    """The marketplace's canonical status of a mapped order: its channel's own rule where its
    reader has one (``ReconcileReader.status``: Shopify's mapper copies Shopify's words), else the
    mapper's canonical word (``reconcile_types.marketplace_status``)."""
    from retail_sync.channels import BUILTIN

    for plugin in BUILTIN:
        if plugin.channel == order.channel and plugin.reconcile and plugin.reconcile.status:
            return plugin.reconcile.status(order)
    return canonical_status(order)


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


def readers(settings: Any) -> dict[str, ReconcileReader]:
    """Every channel that has a reconciliation reader (its plugin's ``reconcile``), by name."""
    from retail_sync.channels import channels as registry

    return {name: plugin.reconcile for name, plugin in registry(settings).items()
            if plugin.reconcile is not None}


# --- reading the ERP ---------------------------------------------------------------------------------


async def read_erp(settings: Settings, since: datetime) -> list[JSON]:
    """The configured ERP's sales orders of the window (its plugin's ``read_sales_orders``)."""
    plugin = erp_plugin(settings)
    if plugin.read_sales_orders is None:
        raise SyncError(f"ERP {plugin.name} has no reconciliation reader")
    return await plugin.read_sales_orders(settings_for(plugin, settings), since)


async def read_credit_notes(settings: Settings, keys: Sequence[str]) -> Counter[str] | None:
    """Submitted credit notes per order key, for ``keys`` only (the ERP plugin's
    ``read_credit_notes``); None when it has no such reader (refunds are then compared as
    statuses only)."""
    plugin = erp_plugin(settings)
    if plugin.read_credit_notes is None:
        return None
    if not keys:
        return Counter()
    return await plugin.read_credit_notes(settings_for(plugin, settings), keys)


# --- the whole run ----------------------------------------------------------------------------------


async def reconcile(settings: Settings, channels: Sequence[str] | None = None, *,
                    lookback: timedelta = DEFAULT_LOOKBACK, now: datetime | None = None) -> Report:
    """Read every configured channel (or ``channels``) and the ERP, compare, report."""
    from retail_sync.channels import channels as registry  # the engine's mappers (and plugins)
    from retail_sync.channels import plugin_settings

    now = now or datetime.now(UTC)
    since = now - lookback
    plugins = registry(settings)
    found = {name: p.reconcile for name, p in plugins.items() if p.reconcile is not None}
    names = list(channels) if channels is not None else [
        name for name, reader in found.items() if reader.configured(plugin_settings(plugins[name], settings))]
    counts: dict[str, ChannelCounts] = {}
    reads: dict[str, ChannelRead] = {}

    async def one(name: str) -> None:
        reader = found.get(name)
        values = plugin_settings(plugins[name], settings) if reader is not None else None
        if reader is None:
            counts[name] = ChannelCounts(name, error="no reader for this channel")
        elif not reader.configured(values):
            counts[name] = ChannelCounts(name, error="not configured")
        else:
            try:
                reads[name] = await reader.read(values, plugins[name].mapper, since - MARGIN)
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
        counts[name], differ = compare(name, read.orders, by_channel.get(name, []), since=since)
        counts[name].skipped += read.pending
        counts[name].unmapped = len(read.unmapped)
        mismatches += differ
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
