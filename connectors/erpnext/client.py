"""ERPNext (Frappe REST) implementation of the ErpConnector contract.

Speaks ``/api/resource/Sales Order`` with ``Authorization: token key:secret``. The canonical
order becomes a Sales Order inserted and submitted (``"docstatus": 1``, so the ERP reserves its
stock) under the channel's Customer (``RETAIL_SYNC_ERP_CHANNEL_CUSTOMERS``: one Customer per
marketplace, the buyer in ``contact_email``/``custom_buyer_*``), whose ``po_no`` and unique Custom
Field ``custom_marketplace_order_key`` are our ``order_key``. Units the engine accepted without
stock travel per item in the Custom Field ``custom_backorder_qty``. Every field it writes is an
ERPNext field or one of ``connectors.erpnext.fields.CUSTOM_FIELDS`` (the documents are built in
``connectors.erpnext.documents`` and ``connectors.erpnext.notes``).

Exactly once, on the ERP as it is (ERPNext has no idempotent insert): every create first looks
the document up by its unique reference (Sales Order ``custom_marketplace_order_key``, Delivery
Note ``custom_shipment_id``, return note and credit note ``custom_return_id``) and answers the
one found (``created=False``), so a retry after a post that timed out once the ERP had created
it finds it. Two posts racing past the lookup are settled by the field's unique index: Frappe
refuses the second with 417 (``UniqueValidationError``; 409 ``DuplicateEntryError`` is also
accepted), and a refused create that the lookup then finds is that document, not an error.

Every HTTP and network failure is converted here, at the edge, into the sync error hierarchy
(``connectors.erpnext.frappe``: ``FrappeSession`` and ``error_for_status``, shared with the feeds):

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

``rows_modified_since`` (``connectors.erpnext.frappe``) is the shared "poll a doctype by
``modified``" paging, used by the stock feed and the order feed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from retail_sync.connectors.contracts import (
    ErpPostResult,
    ErpReturnResult,
    ErpShipmentResult,
    Refund,
    SalesOrderPost,
    Shipment,
)
from retail_sync.connectors.erpnext.documents import (
    DELIVERY_NOTE,
    SALES_INVOICE,
    SALES_ORDER,
    sales_order_doc,
)
from retail_sync.connectors.erpnext.fields import (
    CHANNEL_CUSTOMERS,
    DEFAULT_COMPANY,
    DEFAULT_CUSTOMER,
    DEFAULT_WAREHOUSE,
    MARKETPLACE_WAREHOUSE,
    ORDER_KEY_FIELD,
    RETURN_FIELD,
    SHIPMENT_FIELD,
    parse_channel_customers,
)
from retail_sync.connectors.erpnext.frappe import (
    FrappeSession,
    created_doc,
    data_of,
    error_for_status,
    existing_result,
    may_be_duplicate,
    modified_query,
    post_result,
    rows_modified_since,
)
from retail_sync.connectors.erpnext.notes import (
    credit_note_doc,
    delivery_note_doc,
    invoice_to_credit,
    order_item,
    refund_amount,
    return_note_doc,
    return_rows,
)
from retail_sync.connectors.erpnext.settings import ErpNextSettings
from retail_sync.connectors.errors import DecodeError, PermanentError
from retail_sync.streams.models import Order

JSON = dict[str, Any]


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
    def from_settings(cls, settings: ErpNextSettings) -> ErpNextConnector:
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
        doc = self.sales_order_doc(order_key, order, backorders)
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

    def sales_order_doc(self, order_key: str, order: Order,
                        backorders: Mapping[str, int] | None = None) -> JSON:
        """The order as this site's Sales Order document (its company, customer, warehouses)."""
        return sales_order_doc(order_key, order, company=self.company,
                               customer=self.customer_for(order.channel),
                               warehouse=self.warehouse, backorders=backorders,
                               marketplace_warehouse=self.marketplace_warehouse)

    async def create_sales_orders(self, posts: Sequence[SalesOrderPost]) -> list[ErpPostResult]:
        """Many Sales Orders in about five requests per 200 (``connectors.erpnext.bulk``)."""
        from retail_sync.connectors.erpnext.bulk import create_sales_orders

        return await create_sales_orders(self, posts)

    @property
    def http(self) -> FrappeSession:
        return self._http

    async def list_rows(self, doctype: str, filters: list[list[Any]],
                        fields: list[str]) -> list[JSON]:
        """Every row of ``doctype`` that ``filters`` match (oldest first), with ``fields``."""
        return await self._list(doctype, filters, fields)

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
