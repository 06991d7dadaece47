"""A toy second ERP, as a plugin from outside the engine: one module, one ErpPlugin, registered
only by the setting ``RETAIL_SYNC_ERP_PLUGIN=tests.unit.toy_erp:plugin`` (test_erp_plugin.py).

It keeps sales orders in memory; its settings model adds one field of its own
(``RETAIL_SYNC_TOY_ERP_BOOK``) to the shared ones."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from retail_sync.connectors.contracts import (
    ErpPostResult,
    ErpReturnResult,
    ErpShipmentResult,
    Refund,
    Shipment,
    StockFeedResult,
)
from retail_sync.connectors.plugin import ConnectorSettings, ErpPlugin
from retail_sync.streams.models import Order


class ToyErpSettings(ConnectorSettings):
    toy_erp_book: str = "toy-book"


class ToyErp:
    """An ErpConnector that books sales orders in a dict."""

    def __init__(self, settings: ToyErpSettings) -> None:
        self.settings = settings
        self.orders: dict[str, Order] = {}
        self.closed = False

    async def create_sales_order(self, order_key: str, order: Order, *,
                                 backorders: Mapping[str, int] | None = None) -> ErpPostResult:
        created = order_key not in self.orders
        self.orders.setdefault(order_key, order)
        return ErpPostResult(f"TOY-{order_key}", created=created)

    async def post_shipment(self, order_key: str, erp_sales_order: str,
                            shipment: Shipment) -> ErpShipmentResult:
        return ErpShipmentResult(f"TOY-DN-{shipment.shipment_id}", None, created=True)

    async def cancel_sales_order(self, erp_sales_order: str, reason: str) -> None:
        return None

    async def post_return(self, order_key: str, erp_sales_order: str,
                          refund: Refund) -> ErpReturnResult:
        return ErpReturnResult(None, f"TOY-CN-{refund.refund_id}", created=True)

    async def close(self) -> None:
        self.closed = True


class ToyStockFeed:
    def __init__(self, settings: ToyErpSettings) -> None:
        self.settings = settings

    async def poll(self, cursor: str | None) -> StockFeedResult:
        return StockFeedResult(levels=[], cursor=cursor)

    async def close(self) -> None:
        return None


#: what the readers were asked, so a test can see reconciliation went through them
READS: list[tuple[str, Any]] = []
#: the sales orders the reconciliation reader answers
SALES_ORDERS: list[dict[str, Any]] = []


async def read_sales_orders(settings: ToyErpSettings, since: datetime) -> list[dict[str, Any]]:
    READS.append(("sales_orders", (settings, since)))
    return list(SALES_ORDERS)


async def read_credit_notes(settings: ToyErpSettings, keys: Sequence[str]) -> Counter[str]:
    READS.append(("credit_notes", (settings, list(keys))))
    return Counter()


plugin = ErpPlugin(
    name="toy",
    description="an in-memory ERP (tests)",
    settings_model=ToyErpSettings,
    connector=ToyErp,
    stock_feed=ToyStockFeed,
    order_feed=None,
    read_sales_orders=read_sales_orders,
    read_credit_notes=read_credit_notes,
)
