"""Contracts between the engine and the systems it talks to. One module per system implements them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from streams.models import Order


@dataclass(frozen=True, slots=True)
class ErpPostResult:
    """What the ERP said about a sales-order post."""

    erp_sales_order: str  # the ERP's document number, e.g. SAL-ORD-2026-00001
    created: bool  # False when the ERP answered with an order it already had (idempotent repeat)


class ErpConnector(Protocol):
    """An ERP that accepts sales orders, idempotently on the marketplace order reference."""

    async def create_sales_order(self, order_key: str, order: Order) -> ErpPostResult:
        """Create (or find) the sales order for ``order_key``.

        Raises RetryableError / RateLimitedError for transient failures and PermanentError when
        the ERP refuses the document.
        """
        ...

    async def close(self) -> None: ...
