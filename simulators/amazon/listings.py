"""The simulated Amazon seller side: Listings Items 2021-08-01 and Feeds 2021-06-30.

What it mirrors (listingsItems_2021-08-01.json, feeds_2021-06-30.json, listings-feed-*-v2.json):

* ``PATCH /listings/2021-08-01/items/{sellerId}/{sku}?marketplaceIds=`` with a
  ``ListingsItemPatchRequest``; a ``replace`` (or ``add`` / ``merge``) of
  ``/attributes/fulfillment_availability`` with ``[{"fulfillment_channel_code": "DEFAULT",
  "quantity": N}]`` sets the listing's quantity. Answer: ``ListingsItemSubmissionResponse``
  (``ACCEPTED``, or ``INVALID`` with ``issues`` when a value is wrong). A request the schema
  forbids (no ``productType``, no ``patches``, unknown ``op``) is 400 ``InvalidInput``.
* ``GET`` of the same path: an ``Item`` with ``summaries`` (default) and, with
  ``includedData=fulfillmentAvailability``, ``fulfillmentAvailability: [{fulfillmentChannelCode,
  quantity}]``; 404 for a SKU the seller never listed.
* Feeds: ``createFeedDocument`` answers an upload URL on the simulator itself (``/_docs/{id}``,
  ``PUT`` the content, as to S3's presigned URL), ``createFeed`` (202 ``{feedId}``), ``getFeed``
  (``IN_QUEUE`` -> ``IN_PROGRESS`` -> ``DONE`` / ``FATAL`` over ``feed_processing_ms``, then a
  ``resultFeedDocumentId``), ``getFeedDocument`` (a download URL of the processing report).
* ``JSON_LISTINGS_FEED`` (listings-feed-schema-v2: header ``sellerId`` / ``version`` "2.0",
  messages with ``PATCH`` or ``PARTIAL_UPDATE``); the JSON processing report lists issues by
  ``messageId`` and a summary. A document that is not such a feed is ``FATAL`` with a report.
* ``POST_ORDER_ACKNOWLEDGEMENT_DATA`` (XML ``AmazonEnvelope`` of ``OrderAcknowledgement``
  messages): how a seller cancels an MFN order. ``StatusCode`` ``Failure`` without items cancels
  the order; items with a ``CancelReason`` (under either status code) cancel those items, all
  their units or ``Quantity`` units in all (a total, so a repeated acknowledgement changes
  nothing). The processing report is Amazon's XML ``ProcessingReport``; malformed XML is
  ``FATAL``. Amazon's Orders API has no cancel operation, so this feed is the documented way.
* ``POST_PAYMENT_ADJUSTMENT_DATA`` (XML ``AmazonEnvelope`` of ``OrderAdjustment`` messages:
  ``AmazonOrderID``, ``MerchantAdjustmentID``, ``AdjustedItem``s with ``AmazonOrderItemCode``,
  ``AdjustmentReason`` (``documents.ADJUSTMENT_REASONS``), ``ItemPriceAdjustments`` / ``Component`` (``Type``
  e.g. ``Principal``, ``Amount currency=``) and optionally ``QuantityCancelled``): how a seller
  refunds an MFN order. Each applied adjustment is one entry of the host's ``refunds``; a
  ``MerchantAdjustmentID`` the order already has is a repeat and changes nothing. An unknown
  order or item, an AFN / pending / cancelled order, another currency, or more principal than
  the item's ``ItemPrice`` less earlier refunds is an Error result of the ``ProcessingReport``.

Usage plans are the spec's (``USAGE_PLANS`` here); the simulator's gateway enforces them.
The documents themselves (quantity patches, feeds, processing reports) are read and written in
``documents``; this module is the HTTP side.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from aiohttp import web

from retail_sync.simulators.amazon.documents import (
    Acknowledgement,
    Adjustment,
    Document,
    Feed,
    Outcome,
    parse_acknowledgements,
    parse_adjustments,
    patch_shape_error,
    patched_quantity,
    process_listings_feed,
    processing_report_xml,
    refund_error,
    sku_issues,
)
from retail_sync.simulators.amazon.orders import OrderRecord, cancel_units, iso
from retail_sync.simulators.listings import Listings

JSON = dict[str, Any]
PATCH_LISTINGS_ITEM, GET_LISTINGS_ITEM = "patchListingsItem", "getListingsItem"
CREATE_FEED_DOCUMENT, CREATE_FEED = "createFeedDocument", "createFeed"
GET_FEED, GET_FEED_DOCUMENT = "getFeed", "getFeedDocument"
USAGE_PLANS: dict[str, tuple[float, int]] = {  # the spec's descriptions: rate per second, burst
    PATCH_LISTINGS_ITEM: (5.0, 5), GET_LISTINGS_ITEM: (5.0, 10),
    CREATE_FEED_DOCUMENT: (0.5, 15), CREATE_FEED: (0.0083, 15),
    GET_FEED: (2.0, 15), GET_FEED_DOCUMENT: (0.0222, 10),
}  # fmt: skip
LISTINGS_FEED, ACK_FEED = "JSON_LISTINGS_FEED", "POST_ORDER_ACKNOWLEDGEMENT_DATA"
PAYMENT_FEED = "POST_PAYMENT_ADJUSTMENT_DATA"
FEED_TYPES = (LISTINGS_FEED, ACK_FEED, PAYMENT_FEED)
ITEMS_PATH = "/listings/2021-08-01/items/{sellerId}/{sku}"
FEEDS, DOCUMENTS = "/feeds/2021-06-30/feeds", "/feeds/2021-06-30/documents"
DOC_URL = "/_docs/{documentId}"  # what S3's presigned URLs are to Amazon
INCLUDED_DATA = ("summaries", "attributes", "issues", "offers", "fulfillmentAvailability",
                 "procurement", "relationships", "productTypes")  # fmt: skip
SHIPPED = ("Shipped", "InvoiceUnconfirmed", "Unfulfillable")
_OPERATIONS = [
    ("PATCH", re.compile(r"^/listings/2021-08-01/items/[^/]+/[^/]+$"), PATCH_LISTINGS_ITEM),
    ("GET", re.compile(r"^/listings/2021-08-01/items/[^/]+/[^/]+$"), GET_LISTINGS_ITEM),
    ("POST", re.compile(r"^/feeds/2021-06-30/documents$"), CREATE_FEED_DOCUMENT),
    ("GET", re.compile(r"^/feeds/2021-06-30/documents/[^/]+$"), GET_FEED_DOCUMENT),
    ("POST", re.compile(r"^/feeds/2021-06-30/feeds$"), CREATE_FEED),
    ("GET", re.compile(r"^/feeds/2021-06-30/feeds/[^/]+$"), GET_FEED),
]


def operation_of(method: str, path: str) -> str | None:
    """The SP-API operation a Listings / Feeds request calls, or None."""
    return next((op for m, pattern, op in _OPERATIONS if m == method and pattern.match(path)), None)


class ApiError(Exception):
    """Answered with the spec's ErrorList and ``status`` by the simulator's gateway."""

    def __init__(self, status: int, details: str) -> None:
        super().__init__(details)
        self.status, self.details = status, details


class Host(Protocol):
    """What the listings side needs of the simulator (AmazonSimulator)."""

    listings: Listings
    records: dict[str, OrderRecord]
    cancellations: list[JSON]
    refunds: list[JSON]

    @property
    def seller_id(self) -> str: ...

    @property
    def marketplace_id(self) -> str: ...

    @property
    def feed_processing_s(self) -> float: ...

    def now(self) -> datetime: ...

    def touched(self) -> None: ...  # an order changed (cancellation)


# --- the HTTP side -------------------------------------------------------------------------


class ListingsApi:
    """Listings Items, Feeds and the document URLs of one simulator (``host``)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.product_types: dict[str, str] = {}
        self.created: dict[str, str] = {}
        self.documents: dict[str, Document] = {}
        self.feeds: dict[str, Feed] = {}
        self.feeds_by_type: dict[str, int] = {}
        self._timers: list[asyncio.TimerHandle] = []

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_patch(ITEMS_PATH, self._patch_item)
        router.add_get(ITEMS_PATH, self._get_item)
        router.add_post(DOCUMENTS, self._create_document)
        router.add_get(DOCUMENTS + "/{feedDocumentId}", self._get_document)
        router.add_post(FEEDS, self._create_feed)
        router.add_get(FEEDS + "/{feedId}", self._get_feed)
        router.add_put(DOC_URL, self._upload)
        router.add_get(DOC_URL, self._download)

    def cancel_timers(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    # --- listings -------------------------------------------------------------------------------

    def set_quantity(self, sku: str, quantity: int, product_type: str) -> None:
        self.host.listings.set(sku, quantity)
        self.product_types[sku] = product_type
        self.created.setdefault(sku, iso(self.host.now()))

    def _check_seller(self, request: web.Request) -> str:
        if request.match_info["sellerId"] != self.host.seller_id:
            raise ApiError(403, f"sellerId {request.match_info['sellerId']!r} is not this seller.")
        ids = [v for raw in request.query.getall("marketplaceIds", []) for v in raw.split(",") if v]
        if not ids:
            raise ApiError(400, "marketplaceIds is required.")
        if self.host.marketplace_id not in ids:
            raise ApiError(400, f"marketplaceIds {ids} does not include {self.host.marketplace_id}.")
        return request.match_info["sku"]

    async def _patch_item(self, request: web.Request) -> web.Response:
        sku = self._check_seller(request)
        body = await _json_body(request)
        if not isinstance(body.get("productType"), str) or not body["productType"]:
            raise ApiError(400, "productType is required.")
        if shape := patch_shape_error(body.get("patches")):
            raise ApiError(400, shape)
        quantity, issues = patched_quantity(body["patches"])
        issues = sku_issues(sku) + issues
        submission: JSON = {"sku": sku, "status": "INVALID" if issues else "ACCEPTED",
                            "submissionId": uuid.uuid4().hex, "issues": issues}  # fmt: skip
        if not issues and quantity is not None:
            self.set_quantity(sku, quantity, body["productType"])
        return web.json_response(submission)

    async def _get_item(self, request: web.Request) -> web.Response:
        sku = self._check_seller(request)
        included = [v for raw in request.query.getall("includedData", ["summaries"])
                    for v in raw.split(",") if v]  # fmt: skip
        unknown = set(included) - set(INCLUDED_DATA)
        if unknown:
            raise ApiError(400, f"includedData {sorted(unknown)} not among {', '.join(INCLUDED_DATA)}.")
        listing = self.host.listings.items.get(sku)
        if listing is None:
            raise ApiError(404, f"SKU {sku!r} is not listed for this seller.")
        item: JSON = {"sku": sku}
        if "summaries" in included:
            item["summaries"] = [{
                "marketplaceId": self.host.marketplace_id,
                "productType": self.product_types.get(sku, "PRODUCT"),
                "conditionType": "new_new", "itemName": sku,
                "status": ["BUYABLE", "DISCOVERABLE"] if listing.quantity else ["DISCOVERABLE"],
                "createdDate": self.created.get(sku, listing.updated_at),
                "lastUpdatedDate": listing.updated_at,
            }]  # fmt: skip
        if "fulfillmentAvailability" in included:
            item["fulfillmentAvailability"] = [
                {"fulfillmentChannelCode": "DEFAULT", "quantity": listing.quantity}]
        if "issues" in included:
            item["issues"] = []
        return web.json_response(item)

    # --- feeds ----------------------------------------------------------------------------------

    async def _create_document(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if not isinstance(body.get("contentType"), str) or not body["contentType"]:
            raise ApiError(400, "contentType is required.")
        doc = Document(f"amzn1.tortuga.4.na.{uuid.uuid4()}", body["contentType"])
        self.documents[doc.document_id] = doc
        return web.json_response({"feedDocumentId": doc.document_id, "url": self._url(request, doc)},
                                 status=201)

    @staticmethod
    def _url(request: web.Request, doc: Document) -> str:
        return f"{request.url.origin()}{DOC_URL.format(documentId=doc.document_id)}"

    async def _upload(self, request: web.Request) -> web.Response:
        doc = self.documents.get(request.match_info["documentId"])
        if doc is None or doc.content is not None:
            return web.Response(status=403, text="AccessDenied: no such upload URL (or used)")
        doc.content = await request.read()
        return web.Response(status=200)

    async def _download(self, request: web.Request) -> web.Response:
        doc = self.documents.get(request.match_info["documentId"])
        if doc is None or doc.content is None:
            return web.Response(status=404, text="NoSuchKey")
        return web.Response(body=doc.content, headers={"Content-Type": doc.content_type})

    async def _get_document(self, request: web.Request) -> web.Response:
        doc = self.documents.get(request.match_info["feedDocumentId"])
        if doc is None or doc.content is None:
            raise ApiError(404, f"No feed document {request.match_info['feedDocumentId']!r}.")
        return web.json_response({"feedDocumentId": doc.document_id, "url": self._url(request, doc)})

    async def _create_feed(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        feed_type, ids = body.get("feedType"), body.get("marketplaceIds")
        doc_id = body.get("inputFeedDocumentId")
        if feed_type not in FEED_TYPES:
            raise ApiError(400, f"feedType {feed_type!r} is not supported here ({', '.join(FEED_TYPES)}).")
        if not isinstance(ids, list) or not 1 <= len(ids) <= 25 or self.host.marketplace_id not in ids:
            raise ApiError(400, f"marketplaceIds must be 1-25 ids including {self.host.marketplace_id}.")
        if doc_id not in self.documents:
            raise ApiError(400, f"inputFeedDocumentId {doc_id!r} is not a feed document of this seller.")
        feed = Feed(str(50_000 + len(self.feeds) + 1), feed_type, ids, doc_id, iso(self.host.now()))
        self.feeds[feed.feed_id] = feed
        self.feeds_by_type[feed_type] = self.feeds_by_type.get(feed_type, 0) + 1
        self._schedule(feed)
        return web.json_response({"feedId": feed.feed_id}, status=202)

    async def _get_feed(self, request: web.Request) -> web.Response:
        feed = self.feeds.get(request.match_info["feedId"])
        if feed is None:
            raise ApiError(404, f"No feed {request.match_info['feedId']!r}.")
        return web.json_response(feed.view())

    def _schedule(self, feed: Feed) -> None:
        loop, delay = asyncio.get_running_loop(), self.host.feed_processing_s
        self._timers = [t for t in self._timers if t.when() > loop.time()]  # forget the ones run
        self._timers.append(loop.call_later(delay / 2, self._start, feed))
        self._timers.append(loop.call_later(delay, self.process, feed))

    def _start(self, feed: Feed) -> None:
        if feed.status == "IN_QUEUE":
            feed.status, feed.started = "IN_PROGRESS", iso(self.host.now())

    def process(self, feed: Feed) -> None:
        """Process ``feed`` now (its timer does this ``feed_processing_ms`` after createFeed)."""
        if feed.status not in ("IN_QUEUE", "IN_PROGRESS"):
            return
        self._start(feed)
        content = self.documents[feed.input_document_id].content
        if content is None:
            outcome = Outcome("FATAL", b"The input feed document was never uploaded.", "text/plain")
        elif feed.feed_type == LISTINGS_FEED:
            outcome = process_listings_feed(content, self.host.seller_id, feed.feed_id, self.set_quantity)
        elif feed.feed_type == PAYMENT_FEED:
            outcome = self._adjust(content, feed.feed_id)
        else:
            outcome = self._acknowledge(content, feed.feed_id)
        report = Document(f"amzn1.tortuga.4.na.{uuid.uuid4()}", outcome.content_type, outcome.report)
        self.documents[report.document_id] = report
        feed.status, feed.result_document_id = outcome.status, report.document_id
        feed.ended = iso(self.host.now())

    # --- order acknowledgements (seller cancellations) -------------------------------------------

    def _acknowledge(self, content: bytes, feed_id: str) -> Outcome:
        seller = self.host.seller_id
        try:
            acks = parse_acknowledgements(content)
        except ValueError as exc:
            report = processing_report_xml(seller, feed_id, 0, [("0", "", f"Fatal: {exc}")])
            return Outcome("FATAL", report, "text/xml; charset=UTF-8")
        errors = [(ack.message_id, ack.order_id, error) for ack in acks
                  if (error := self._apply(ack, feed_id))]  # fmt: skip
        return Outcome("DONE", processing_report_xml(seller, feed_id, len(acks), errors),
                       "text/xml; charset=UTF-8")

    def _apply(self, ack: Acknowledgement, feed_id: str) -> str | None:
        """Cancel what ``ack`` asks; the error description when it cannot."""
        record = self.host.records.get(ack.order_id)
        if record is None:
            return f"The order id {ack.order_id} was not found for this seller."
        cancels = [i for i in ack.items if ack.status_code == "Failure" or i.reason]
        if not cancels and ack.status_code == "Success":
            return None  # a plain acknowledgement
        status = record.order["OrderStatus"]
        if status == "Canceled":
            return None  # already cancelled: nothing to do
        if record.order["FulfillmentChannel"] != "MFN":
            return f"Order {ack.order_id} is fulfilled by Amazon (AFN); the seller cannot cancel it."
        if status in SHIPPED:
            return f"Order {ack.order_id} is {status}; it can no longer be cancelled."
        targets: list[tuple[str, int, str]] = []
        if not cancels:  # Failure without items: the whole order
            targets = [(i["OrderItemId"], i["QuantityOrdered"], "NoInventory") for i in record.as_ordered]
        for item in cancels:
            ordered = record.item(item.item_code)
            if ordered is None:
                return f"AmazonOrderItemCode {item.item_code} is not an item of order {ack.order_id}."
            units = item.quantity or ordered["QuantityOrdered"]
            targets.append((item.item_code, units, item.reason or "NoInventory"))
        self._cancel(record, targets, feed_id)
        return None

    def _cancel(self, record: OrderRecord, targets: list[tuple[str, int, str]], feed_id: str) -> None:
        changed = False
        for item_id, units, reason in targets:
            item = record.item(item_id)
            assert item is not None  # checked by the caller
            now = self.host.now()
            done = cancel_units(record, item_id, units, now)
            if not done:
                continue
            changed = True
            self.host.listings.seller_cancelled(item["SellerSKU"], done)
            self.host.cancellations.append({
                "order_id": record.order["AmazonOrderId"], "line_id": item_id, "sku": item["SellerSKU"],
                "quantity": done, "reason": reason, "at": iso(now), "feed_id": feed_id})  # fmt: skip
        if changed:
            self.host.touched()


    # --- payment adjustments (refunds) ---------------------------------------------------------

    def _adjust(self, content: bytes, feed_id: str) -> Outcome:
        seller = self.host.seller_id
        try:
            adjustments = parse_adjustments(content)
        except ValueError as exc:
            report = processing_report_xml(seller, feed_id, 0, [("0", "", f"Fatal: {exc}")])
            return Outcome("FATAL", report, "text/xml; charset=UTF-8")
        errors = [(a.message_id, a.order_id, error) for a in adjustments
                  if (error := self._refund(a, feed_id))]  # fmt: skip
        return Outcome("DONE", processing_report_xml(seller, feed_id, len(adjustments), errors),
                       "text/xml; charset=UTF-8")

    def _refund(self, adjustment: Adjustment, feed_id: str) -> str | None:
        """Record the refund ``adjustment`` asks for; the error description when it cannot."""
        order_id = adjustment.order_id
        record = self.host.records.get(order_id)
        if record is None:
            return f"The order id {order_id} was not found for this seller."
        if any(r["order_id"] == order_id and r["adjustment_id"] == adjustment.adjustment_id
               for r in self.host.refunds):  # fmt: skip
            return None  # a repeat: already refunded
        if problem := refund_error(record, adjustment, self.host.refunds):
            return problem
        items = [{"order_item_id": i.item_code, "sku": (record.item(i.item_code) or {}).get("SellerSKU"),
                  "reason": i.reason, "quantity": i.quantity,
                  "components": {k: str(v) for k, v in i.components.items()}}
                 for i in adjustment.items]  # fmt: skip
        total = sum((v for i in adjustment.items for v in i.components.values()), Decimal(0))
        self.host.refunds.append({
            "order_id": order_id, "adjustment_id": adjustment.adjustment_id, "items": items,
            "amount": str(total), "currency": record.order["OrderTotal"]["CurrencyCode"],
            "at": iso(self.host.now()), "feed_id": feed_id})  # fmt: skip
        return None


async def _json_body(request: web.Request) -> JSON:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "The request body is not JSON.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    return body


__all__ = [
    "ACK_FEED",
    "ApiError",
    "LISTINGS_FEED",
    "ListingsApi",
    "PAYMENT_FEED",
    "USAGE_PLANS",
    "operation_of",
    "parse_acknowledgements",
    "parse_adjustments",
    "process_listings_feed",
]
