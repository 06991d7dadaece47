"""Amazon as a ChannelOutbound: listing quantities (Listings Items or JSON_LISTINGS_FEED), seller
cancellations (POST_ORDER_ACKNOWLEDGEMENT_DATA), shipment confirmations (Orders v0
confirmShipment) and refunds (POST_PAYMENT_ADJUSTMENT_DATA), over the Selling Partner API.

Inventory, by the size of the push (``feed_min_skus``, setting ``amazon_feed_min_skus``):

* fewer SKUs: one ``patchListingsItem`` per SKU (``replace /attributes/fulfillment_availability``
  with the ``DEFAULT`` channel's quantity), one at a time, within the operation's budget (the
  spec's usage plan, then the rate Amazon reports in ``x-amzn-RateLimit-Limit``; shared by every
  worker through Redis); a 429 stops every worker for ``1 / rate`` and the call tries again.
  ``INVALID`` answers go to ``failed`` with their issues. ``mechanism="listings-patch"``.
* otherwise one ``JSON_LISTINGS_FEED``: createFeedDocument, upload to its URL, createFeed, getFeed
  until ``DONE`` (bounded by ``feed_timeout_s``: RetryableError after that), getFeedDocument and
  the processing report, whose ERROR issues (by ``messageId``) go to ``failed``.
  ``mechanism="JSON_LISTINGS_FEED"``, ``reference`` = the feed id.

Cancellations: Amazon's Orders API has no cancel call; a seller cancels an MFN order with an order
acknowledgement feed: ``StatusCode`` ``Failure`` for the whole order, or items with a
``CancelReason`` and the ``Quantity`` cancelled in all. A buyer's cancellation request
(``BuyerRequestedCancel``) is answered with every item listed under ``CancelReason``
``BuyerCanceled``, which Amazon does not count against the seller's cancellation rate (our
canonical ``line_id`` for Amazon is the ``OrderItemId``, see connectors/amazon/mapper.py). Its XML
processing report's errors raise
PermanentError.

Shipments: one ``confirmShipment`` per shipment (paced like every call, by the reported usage
plan), ``orderItems`` = the shipment's lines (canonical ``line_id`` = ``OrderItemId``), the
carrier translated by ``AMAZON_CARRIERS`` (canonical -> Amazon ``carrierCode``; an unknown one goes
as ``Other`` with its name as ``carrierName``). ``packageReferenceId`` must be a positive number,
so it is ``package_reference_id(shipment_id)``: the id itself when numeric, else a stable number
derived from it; a repeat of the same shipment is the same package, which Amazon takes again
without change. Amazon answers 400 when the units are already shipped (e.g. the shipment was
confirmed under another package, or by hand in Seller Central): on a 400 the order's items are
read (getOrderItems) and the shipment counts as confirmed when every line shows at least its
quantity shipped; otherwise the 400 is a PermanentError.

Refunds: one ``POST_PAYMENT_ADJUSTMENT_DATA`` feed (XML ``OrderAdjustment``) per refund,
``MerchantAdjustmentID`` = ``refund_id`` (Amazon ignores an adjustment id it already has, so a
repeat refunds nothing more). Amazon adjusts per item: the refund amount is split over the
refund's lines in proportion to what the buyer paid for the units (``ItemPrice`` per unit, read
with getOrderItems; a refund without lines spreads over every item), as ``Principal``
components, the last line taking the rounding cents. ``AdjustmentReason``: an Amazon value passes,
else ``CustomerReturn`` when goods come back (``restock``), ``GeneralAdjustment`` otherwise.
The feed must end ``DONE`` without Error results, else PermanentError.

Errors, at the edge (connectors.amazon.error_for_status): 429 -> RateLimitedError (retry_after
= 1 / rate), 5xx / timeouts / connection -> RetryableError, other 4xx, FATAL feeds -> PermanentError.
Document URLs are presigned: they get no access token.

Long module: the Listings patch, the JSON_LISTINGS_FEED, order acknowledgement/cancel and shipment
confirmation share one client's pacing, error mapping and feed helpers behind one ChannelOutbound.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import time
import xml.etree.ElementTree as ET  # noqa: S405 - only builds XML and reads Amazon's own reports
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

import aiohttp

from retail_sync.connectors.amazon.client import USER_AGENT, error_for_status, observe
from retail_sync.connectors.amazon.plan import AMAZON_PLANS
from retail_sync.connectors.amazon.settings import AmazonSettings
from retail_sync.connectors.contracts import PushReport, QuantityUpdate, Refund, Shipment
from retail_sync.connectors.errors import DecodeError, PermanentError, RateLimitedError, RetryableError
from retail_sync.connectors.ratelimit import Budgets, budgets_for
from retail_sync.streams.models import LineUnits

JSON = dict[str, Any]
CHANNEL = "amazon"
QUANTITY_PATH = "/attributes/fulfillment_availability"
JSON_CONTENT = "application/json; charset=UTF-8"
XML_CONTENT = "text/xml; charset=UTF-8"
FEEDS, DOCUMENTS = "/feeds/2021-06-30/feeds", "/feeds/2021-06-30/documents"
FINISHED = ("DONE", "FATAL", "CANCELLED")
ORDERS_PATH = "/orders/v0/orders"
CENT = Decimal("0.01")
# canonical carrier (connectors.contracts.Shipment.carrier) -> Amazon carrierCode
AMAZON_CARRIERS: dict[str, str] = {"UPS": "UPS", "USPS": "USPS", "FEDEX": "FedEx", "DHL": "DHL",
                                   "OTHER": "Other"}  # fmt: skip
ADJUSTMENT_REASONS = ("NoInventory", "CustomerReturn", "GeneralAdjustment", "CouldNotShip",
                      "DifferentItem", "Abandoned", "CustomerCancel", "PriceError",
                      "ProductOutofStock", "CustomerAddressIncorrect", "Exchange", "Other",
                      "CarrierCreditDecision", "RiskAssessmentInformationNotValid",
                      "CarrierCoverageFailure", "TransactionRecord", "Undeliverable",
                      "RefusedDelivery")  # fmt: skip


def package_reference_id(shipment_id: str) -> str:
    """Amazon's packageReferenceId (a positive number) for ``shipment_id``: the id itself when it
    is one, else a stable 15-digit number derived from it (same shipment, same package)."""
    if shipment_id.isdigit() and int(shipment_id) > 0:
        return str(int(shipment_id))
    digest = int(hashlib.sha256(shipment_id.encode()).hexdigest(), 16)
    return str(10**14 + digest % (9 * 10**14))


def carrier_code(carrier: str) -> tuple[str, str | None]:
    """(carrierCode, carrierName) for a canonical carrier; unknown ones go as Other by name."""
    code = AMAZON_CARRIERS.get(carrier.strip().upper())
    if code is None:
        return "Other", carrier.strip() or "Other"
    return code, ("Other" if code == "Other" else None)


def confirm_shipment_request(marketplace_id: str, shipment: Shipment) -> JSON:
    """The ConfirmShipmentRequest for ``shipment`` (lines of one OrderItemId are added up)."""
    units: dict[str, int] = {}
    for line in shipment.lines:
        units[line.line_id] = units.get(line.line_id, 0) + line.quantity
    code, name = carrier_code(shipment.carrier)
    detail: JSON = {"packageReferenceId": package_reference_id(shipment.shipment_id),
                    "carrierCode": code, "trackingNumber": shipment.tracking_number,
                    "shipDate": shipment.shipped_at,
                    "orderItems": [{"orderItemId": i, "quantity": q} for i, q in units.items() if q > 0]}
    if name:
        detail["carrierName"] = name
    return {"marketplaceId": marketplace_id, "packageDetail": detail}


def adjustment_reason(reason: str, restock: bool) -> str:
    """Amazon's AdjustmentReason for a refund: an Amazon value passes, else CustomerReturn when
    goods come back, GeneralAdjustment otherwise."""
    if reason in ADJUSTMENT_REASONS:
        return reason
    return "CustomerReturn" if restock else "GeneralAdjustment"


def split_amount(amount: Decimal, weights: Sequence[Decimal]) -> list[Decimal]:
    """``amount`` over ``weights`` in cents (even split when they are all 0); the last share takes
    the rounding difference, so the shares add up to ``amount``."""
    total = sum(weights, Decimal(0))
    if total <= 0:
        weights, total = [Decimal(1)] * len(weights), Decimal(len(weights))
    shares = [(amount * w / total).quantize(CENT) for w in weights[:-1]]
    return [*shares, amount - sum(shares, Decimal(0))]


def adjustment_feed(seller_id: str, order_id: str, adjustment_id: str,
                    items: Sequence[tuple[str, Decimal]], currency: str, reason: str) -> bytes:
    """POST_PAYMENT_ADJUSTMENT_DATA: one OrderAdjustment refunding ``(OrderItemId, amount)``s as
    Principal."""
    root, message = _envelope(seller_id, "OrderAdjustment")
    body = ET.SubElement(message, "OrderAdjustment")
    ET.SubElement(body, "AmazonOrderID").text = order_id
    ET.SubElement(body, "MerchantAdjustmentID").text = adjustment_id
    for item_id, amount in items:
        item = ET.SubElement(body, "AdjustedItem")
        ET.SubElement(item, "AmazonOrderItemCode").text = item_id
        ET.SubElement(item, "AdjustmentReason").text = reason
        component = ET.SubElement(ET.SubElement(item, "ItemPriceAdjustments"), "Component")
        ET.SubElement(component, "Type").text = "Principal"
        ET.SubElement(component, "Amount", currency=currency).text = str(amount.quantize(CENT))
    xml: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return xml


def quantity_patch(quantity: int) -> list[JSON]:
    return [{"op": "replace", "path": QUANTITY_PATH,
             "value": [{"fulfillment_channel_code": "DEFAULT", "quantity": quantity}]}]  # fmt: skip


def listings_feed(seller_id: str, product_type: str, updates: Sequence[QuantityUpdate]) -> JSON:
    """A JSON_LISTINGS_FEED (listings-feed-schema-v2) patching each SKU's quantity; messageId =
    position + 1."""
    return {
        "header": {"sellerId": seller_id, "version": "2.0", "issueLocale": "en_US"},
        "messages": [{"messageId": n, "sku": u.sku, "operationType": "PATCH",
                      "productType": product_type, "patches": quantity_patch(u.quantity)}
                     for n, u in enumerate(updates, start=1)],
    }  # fmt: skip


def failures_from_report(report: JSON, updates: Sequence[QuantityUpdate]) -> dict[str, str]:
    """SKU -> reason for every ERROR issue of a listings processing report. Issues without a
    messageId concern the whole feed: every SKU fails with them."""
    by_message = {n: u.sku for n, u in enumerate(updates, start=1)}
    reasons: dict[str, list[str]] = {}
    feed_wide: list[str] = []
    for found in report.get("issues") or []:
        if not isinstance(found, dict) or found.get("severity") != "ERROR":
            continue
        text = f"{found.get('code', '?')}: {found.get('message', '')}".strip()
        message_id = found.get("messageId")
        sku = (by_message.get(message_id) if isinstance(message_id, int) else None) or found.get("sku")
        if found.get("messageId") is None and sku is None:
            feed_wide.append(text)
        elif sku in {u.sku for u in updates}:
            reasons.setdefault(str(sku), []).append(text)
    if feed_wide:
        for update in updates:
            reasons.setdefault(update.sku, []).extend(feed_wide)
    return {sku: "; ".join(texts) for sku, texts in reasons.items()}


def _envelope(seller_id: str, message_type: str) -> tuple[ET.Element, ET.Element]:
    """An XML feed's ``AmazonEnvelope`` with its header and one ``Message`` (returned to fill)."""
    root = ET.Element("AmazonEnvelope")
    header = ET.SubElement(root, "Header")
    ET.SubElement(header, "DocumentVersion").text = "1.01"
    ET.SubElement(header, "MerchantIdentifier").text = seller_id
    ET.SubElement(root, "MessageType").text = message_type
    message = ET.SubElement(root, "Message")
    ET.SubElement(message, "MessageID").text = "1"
    return root, message


def acknowledgement_feed(seller_id: str, order_id: str, lines: Sequence[LineUnits], *,
                         whole_order: bool, reason: str) -> bytes:  # fmt: skip
    """POST_ORDER_ACKNOWLEDGEMENT_DATA: ``Failure`` cancels the order; listed items are cancelled
    by ``Quantity`` units in all (a total: sending it again changes nothing). A whole-order
    cancellation lists its items only to give them a reason Amazon must see (BuyerCanceled)."""
    root, message = _envelope(seller_id, "OrderAcknowledgement")
    ack = ET.SubElement(message, "OrderAcknowledgement")
    ET.SubElement(ack, "AmazonOrderID").text = order_id
    ET.SubElement(ack, "StatusCode").text = "Failure"
    for line in [] if whole_order and reason != "BuyerCanceled" else lines:
        item = ET.SubElement(ack, "Item")
        ET.SubElement(item, "AmazonOrderItemCode").text = line.line_id
        ET.SubElement(item, "CancelReason").text = reason
        ET.SubElement(item, "Quantity").text = str(line.quantity)
    xml: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return xml


def acknowledgement_errors(report: bytes) -> list[str]:
    """The ResultDescription of every Error result of an XML ProcessingReport."""
    try:
        root = ET.fromstring(report)  # noqa: S314 - Amazon's own report
    except ET.ParseError as exc:
        raise DecodeError(f"Amazon order acknowledgement report is not XML: {exc}",
                          body=report[:4096].decode(errors="replace")) from exc
    return [(r.findtext("ResultDescription") or "").strip() or "error"
            for r in root.iter("Result") if r.findtext("ResultCode") == "Error"]  # fmt: skip


class AmazonOutbound:
    """Listings quantities, order acknowledgements, shipment confirmations and payment adjustments
    over one lazily created aiohttp session."""

    channel = CHANNEL

    def __init__(self, base_url: str, access_token: str, *, seller_id: str,
                 marketplace_ids: Sequence[str], feed_min_skus: int = 20,
                 product_type: str = "PRODUCT", timeout_s: float = 10.0,
                 feed_timeout_s: float = 300.0, max_poll_s: float = 10.0,
                 max_retries: int = 5, budgets: Budgets | None = None) -> None:  # fmt: skip
        self.base_url = base_url.rstrip("/")
        self.seller_id, self.marketplace_ids = seller_id, list(marketplace_ids)
        self.feed_min_skus, self.product_type = feed_min_skus, product_type
        self.feed_timeout_s, self.max_poll_s, self.max_retries = feed_timeout_s, max_poll_s, max_retries
        self._auth = {"x-amz-access-token": access_token, "Accept": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self.rate_limits: dict[str, float] = {}  # operation -> the rate Amazon last reported
        self.budgets = budgets or Budgets(CHANNEL, AMAZON_PLANS)
        self.throttled = 0  # 429s met (and waited out)

    @classmethod
    def from_settings(cls, settings: AmazonSettings) -> AmazonOutbound | None:
        if settings.amazon_base_url is None:
            return None
        return cls(str(settings.amazon_base_url), settings.amazon_access_token.get_secret_value(),
                   seller_id=settings.amazon_seller_id,
                   marketplace_ids=settings.amazon_marketplace_ids.split(","),
                   feed_min_skus=settings.amazon_feed_min_skus,
                   budgets=budgets_for(settings, CHANNEL, AMAZON_PLANS))  # fmt: skip

    # --- ChannelOutbound ------------------------------------------------------------------------

    async def push_inventory(self, updates: Sequence[QuantityUpdate]) -> PushReport:
        if not updates:
            return PushReport(applied=[], mechanism="none")
        if len(updates) < self.feed_min_skus:
            return await self._patch_each(updates)
        feed = listings_feed(self.seller_id, self.product_type, updates)
        feed_id, status, report = await self._run_feed("JSON_LISTINGS_FEED", JSON_CONTENT,
                                                       json.dumps(feed).encode())  # fmt: skip
        if status != "DONE":
            raise PermanentError(f"Amazon JSON_LISTINGS_FEED {feed_id} is {status}: "
                                 f"{report[:500].decode(errors='replace') or 'no report'}",
                                 body=report[:4096].decode(errors="replace"))  # fmt: skip
        parsed = _json(report, f"JSON_LISTINGS_FEED {feed_id} report")
        failed = failures_from_report(parsed, updates)
        return PushReport(applied=[u.sku for u in updates if u.sku not in failed], failed=failed,
                          mechanism="JSON_LISTINGS_FEED", reference=feed_id)

    async def cancel_lines(self, marketplace_order_id: str, lines: Sequence[LineUnits], *,
                           whole_order: bool, reason: str) -> None:  # fmt: skip
        if not whole_order and not lines:
            return
        content = acknowledgement_feed(self.seller_id, marketplace_order_id, lines,
                                       whole_order=whole_order, reason=amazon_cancel_reason(reason))
        feed_id, status, report = await self._run_feed("POST_ORDER_ACKNOWLEDGEMENT_DATA", XML_CONTENT,
                                                       content)  # fmt: skip
        errors = acknowledgement_errors(report) if report else []
        if status != "DONE" or errors:
            raise PermanentError(f"Amazon cancellation of {marketplace_order_id} (feed {feed_id}, "
                                 f"{status}): {'; '.join(errors) or 'no report'}",
                                 body=report[:4096].decode(errors="replace"))  # fmt: skip

    async def confirm_shipment(self, marketplace_order_id: str, shipment: Shipment) -> None:
        body = confirm_shipment_request(self.marketplace_ids[0], shipment)
        if not body["packageDetail"]["orderItems"]:
            return
        path = f"{ORDERS_PATH}/{quote(marketplace_order_id, safe='')}/shipmentConfirmation"
        try:
            await self._call("POST", path, "confirmShipment", json_body=body, expect=204)
        except PermanentError as exc:
            if exc.status != 400 or not await self._already_shipped(marketplace_order_id, shipment):
                raise

    async def refund(self, marketplace_order_id: str, refund: Refund) -> None:
        try:
            amount = Decimal(refund.amount)
        except InvalidOperation:
            raise PermanentError(f"refund {refund.refund_id}: amount {refund.amount!r} is not a "
                                 "number") from None  # fmt: skip
        if not amount.is_finite() or amount <= 0:
            raise PermanentError(f"refund {refund.refund_id}: amount must be > 0, got {refund.amount}")
        items = await self._refund_items(marketplace_order_id, refund, amount)
        content = adjustment_feed(self.seller_id, marketplace_order_id, refund.refund_id, items,
                                  refund.currency, adjustment_reason(refund.reason, refund.restock))
        feed_id, status, report = await self._run_feed("POST_PAYMENT_ADJUSTMENT_DATA", XML_CONTENT,
                                                       content)  # fmt: skip
        errors = acknowledgement_errors(report) if report else []
        if status != "DONE" or errors:
            raise PermanentError(f"Amazon refund {refund.refund_id} of {marketplace_order_id} (feed "
                                 f"{feed_id}, {status}): {'; '.join(errors) or 'no report'}",
                                 body=report[:4096].decode(errors="replace"))  # fmt: skip

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- shipments and refunds: the order's items -----------------------------------------------

    async def order_items(self, order_id: str) -> list[JSON]:
        """Every OrderItem of ``order_id`` (getOrderItems, following NextToken)."""
        path = f"{ORDERS_PATH}/{quote(order_id, safe='')}/orderItems"
        items: list[JSON] = []
        params: dict[str, str] | None = None
        while True:
            answer = await self._call("GET", path, "getOrderItems", params=params)
            payload = answer.get("payload")
            if not isinstance(payload, dict) or not isinstance(payload.get("OrderItems"), list):
                raise DecodeError(f"Amazon getOrderItems {order_id}: no payload.OrderItems")
            items += [i for i in payload["OrderItems"] if isinstance(i, dict)]
            if not payload.get("NextToken"):
                return items
            params = {"NextToken": str(payload["NextToken"])}

    async def _already_shipped(self, order_id: str, shipment: Shipment) -> bool:
        """Whether Amazon shows every line of ``shipment`` shipped (a 400 then means "already")."""
        shipped = {str(i.get("OrderItemId")): int(i.get("QuantityShipped") or 0)
                   for i in await self.order_items(order_id)}  # fmt: skip
        wanted: dict[str, int] = {}
        for line in shipment.lines:
            wanted[line.line_id] = wanted.get(line.line_id, 0) + line.quantity
        return all(shipped.get(item, 0) >= quantity for item, quantity in wanted.items())

    async def _refund_items(self, order_id: str, refund: Refund,
                            amount: Decimal) -> list[tuple[str, Decimal]]:  # fmt: skip
        """(OrderItemId, amount) per refunded item, ``amount`` split by what the units cost."""
        unit_price: dict[str, Decimal] = {}
        paid: dict[str, Decimal] = {}
        for item in await self.order_items(order_id):
            price, ordered = item.get("ItemPrice") or {}, int(item.get("QuantityOrdered") or 0)
            item_id = str(item.get("OrderItemId"))
            paid[item_id] = Decimal(str(price.get("Amount", "0"))) if isinstance(price, dict) else Decimal(0)
            unit_price[item_id] = paid[item_id] / ordered if ordered else paid[item_id]
        units: dict[str, int] = {}
        for line in refund.lines:
            if line.line_id not in unit_price:
                raise PermanentError(f"refund {refund.refund_id}: line {line.line_id} is not an item "
                                     f"of Amazon order {order_id}")  # fmt: skip
            units[line.line_id] = units.get(line.line_id, 0) + max(line.quantity, 0)
        if not units:  # money only: spread over the whole order
            weights = paid
        else:
            weights = {i: unit_price[i] * max(q, 1) for i, q in units.items()}
        if not weights:
            raise PermanentError(f"refund {refund.refund_id}: Amazon order {order_id} has no items")
        shares = split_amount(amount, list(weights.values()))
        return list(zip(weights, shares, strict=True))

    # --- listings patches -----------------------------------------------------------------------

    async def _patch_each(self, updates: Sequence[QuantityUpdate]) -> PushReport:
        applied: list[str] = []
        failed: dict[str, str] = {}
        for update in updates:
            path = f"/listings/2021-08-01/items/{quote(self.seller_id, safe='')}/{quote(update.sku, safe='')}"
            body = {"productType": self.product_type, "patches": quantity_patch(update.quantity)}
            answer = await self._call("PATCH", path, "patchListingsItem", json_body=body,
                                      params={"marketplaceIds": ",".join(self.marketplace_ids)})
            if answer.get("status") == "ACCEPTED":
                applied.append(update.sku)
            else:
                issues = answer.get("issues") or []
                failed[update.sku] = "; ".join(f"{i.get('code', '?')}: {i.get('message', '')}"
                                               for i in issues if isinstance(i, dict)) or str(answer)
        return PushReport(applied=applied, failed=failed, mechanism="listings-patch")

    # --- feeds ----------------------------------------------------------------------------------

    async def _run_feed(self, feed_type: str, content_type: str, content: bytes) -> tuple[str, str, bytes]:
        """Upload, create and wait for one feed: (feed id, final status, processing report)."""
        doc = await self._call("POST", DOCUMENTS, "createFeedDocument",
                               json_body={"contentType": content_type}, expect=201)
        await self._document("PUT", doc["url"], content, content_type)
        created = await self._call("POST", FEEDS, "createFeed", expect=202, json_body={
            "feedType": feed_type, "marketplaceIds": self.marketplace_ids,
            "inputFeedDocumentId": doc["feedDocumentId"]})  # fmt: skip
        feed_id = str(created["feedId"])
        feed = await self._wait(feed_id)
        if feed["processingStatus"] == "CANCELLED":
            raise RetryableError(f"Amazon {feed_type} {feed_id} was cancelled before processing")
        result_id = feed.get("resultFeedDocumentId")
        if not result_id:
            return feed_id, feed["processingStatus"], b""
        where = await self._call("GET", f"{DOCUMENTS}/{quote(str(result_id), safe='')}", "getFeedDocument")
        report = await self._document("GET", where["url"])
        if where.get("compressionAlgorithm") == "GZIP":
            report = gzip.decompress(report)
        return feed_id, feed["processingStatus"], report

    async def _wait(self, feed_id: str) -> JSON:
        """getFeed until the feed is finished; RetryableError after ``feed_timeout_s``."""
        deadline, pause = time.monotonic() + self.feed_timeout_s, 0.05
        while True:
            feed = await self._call("GET", f"{FEEDS}/{quote(feed_id, safe='')}", "getFeed")
            if feed.get("processingStatus") in FINISHED:
                return feed
            if time.monotonic() + pause > deadline:
                raise RetryableError(f"Amazon feed {feed_id} still {feed.get('processingStatus')} "
                                     f"after {self.feed_timeout_s:g} s", retry_after=self.max_poll_s)
            await asyncio.sleep(pause)
            pause = min(self.max_poll_s, pause * 2)

    # --- HTTP -------------------------------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT}, timeout=self._timeout)
        return self._session

    async def _call(self, method: str, path: str, operation: str, *, json_body: JSON | None = None,
                    params: dict[str, str] | None = None, expect: int = 200) -> JSON:  # fmt: skip
        """One SP-API call within the operation's budget; a 429 pauses the budget (see
        connectors.amazon.observe) and the call waits its turn again, ``max_retries`` times."""
        for attempt in range(self.max_retries + 1):
            await self.budgets.acquire(operation)
            try:
                return await self._send(method, path, operation, json_body, params, expect)
            except RateLimitedError:
                self.throttled += 1
                if attempt == self.max_retries:
                    raise
        raise AssertionError("unreachable")

    async def _send(self, method: str, path: str, operation: str, json_body: JSON | None,
                    params: dict[str, str] | None, expect: int) -> JSON:  # fmt: skip
        what = f"{operation} {path.rsplit('/', 1)[-1]}"
        try:
            async with self._client().request(method, f"{self.base_url}{path}", json=json_body,
                                              params=params, headers=self._auth) as resp:
                status, body, headers = resp.status, await resp.text(errors="replace"), resp.headers
        except TimeoutError as exc:
            raise RetryableError(f"Amazon {what}: timed out ({exc!r})") from exc
        except aiohttp.ClientError as exc:
            raise RetryableError(f"Amazon {what}: {type(exc).__name__}: {exc}") from exc
        await observe(self.budgets, self.rate_limits, operation, status, headers)
        if status not in (expect, 200):
            raise error_for_status(status, body, headers, what, self.rate_limits.get(operation))
        if status == 204:
            return {}
        return _json(body.encode(), f"Amazon {what}")

    async def _document(self, method: str, url: str, content: bytes | None = None,
                        content_type: str | None = None) -> bytes:  # fmt: skip
        """Upload to / download from a presigned document URL (no SP-API headers)."""
        headers = {"Content-Type": content_type} if content_type else {}
        try:
            async with self._client().request(method, url, data=content, headers=headers) as resp:
                status, body = resp.status, await resp.read()
        except TimeoutError as exc:
            raise RetryableError(f"Amazon feed document {method}: timed out ({exc!r})") from exc
        except aiohttp.ClientError as exc:
            raise RetryableError(f"Amazon feed document {method}: {type(exc).__name__}: {exc}") from exc
        if status >= 500 or status == 429:
            raise RetryableError(f"Amazon feed document {method}: HTTP {status}", status=status)
        if status >= 300:
            raise PermanentError(f"Amazon feed document {method}: HTTP {status} "
                                 f"{body[:200].decode(errors='replace')}", status=status)  # fmt: skip
        return body


def amazon_cancel_reason(reason: str) -> str:
    """Amazon's CancelReason for ours: an OrderAcknowledgement value passes, anything else (our
    "out of stock" wording) is ``NoInventory``."""
    known = ("NoInventory", "ShippingAddressUndeliverable", "CustomerExchange", "BuyerCanceled",
             "GeneralAdjustment", "CarrierCreditDecision", "RiskAssessmentInformationNotValid",
             "CarrierCoverageFailure", "CustomerReturn", "MerchandiseNotReceived")  # fmt: skip
    return reason if reason in known else "NoInventory"


def _json(body: bytes, what: str) -> JSON:
    try:
        parsed = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        parsed = None
    if not isinstance(parsed, dict):
        raise DecodeError(f"{what}: not a JSON object", body=body[:4096].decode(errors="replace"))
    return parsed


__all__ = [
    "AMAZON_CARRIERS",
    "AmazonOutbound",
    "acknowledgement_errors",
    "acknowledgement_feed",
    "adjustment_feed",
    "adjustment_reason",
    "amazon_cancel_reason",
    "carrier_code",
    "confirm_shipment_request",
    "failures_from_report",
    "listings_feed",
    "package_reference_id",
    "split_amount",
]
