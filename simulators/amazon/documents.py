"""What the simulated Amazon seller side reads and writes, apart from HTTP.

Quantity patches (``ListingsItemPatchRequest`` on ``/attributes/fulfillment_availability``), the
feed documents (``JSON_LISTINGS_FEED``, ``POST_ORDER_ACKNOWLEDGEMENT_DATA``,
``POST_PAYMENT_ADJUSTMENT_DATA``) and their processing reports; see listings.py for the API that
serves them and the specs they follow.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET  # noqa: S405 - parses feeds our own engine wrote; DTDs refused
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from retail_sync.simulators.amazon.orders import OrderRecord

JSON = dict[str, Any]
ADJUSTMENT_REASONS = ("NoInventory", "CustomerReturn", "GeneralAdjustment", "CouldNotShip",
                      "DifferentItem", "Abandoned", "CustomerCancel", "PriceError",
                      "ProductOutofStock", "CustomerAddressIncorrect", "Exchange", "Other",
                      "CarrierCreditDecision", "RiskAssessmentInformationNotValid",
                      "CarrierCoverageFailure", "TransactionRecord", "Undeliverable",
                      "RefusedDelivery")  # fmt: skip
COMPONENT_TYPES = ("Principal", "Shipping", "Tax", "ShippingTax", "RestockingFee",
                   "RestockingFeeTax", "GiftWrap", "GiftWrapTax", "Surcharge", "ReturnShipping",
                   "Goodwill", "ExportCharge", "COD", "CODTax", "Other")  # fmt: skip
NOT_REFUNDABLE = ("Pending", "PendingAvailability", "Canceled")
QUANTITY_PATH = "/attributes/fulfillment_availability"
PATCH_OPS = ("add", "replace", "merge", "delete")
MAX_SKU = 40  # Amazon's SellerSKU limit


# --- validating a quantity patch ---------------------------------------------------------------


def issue(code: str, message: str, attribute: str | None = "fulfillment_availability") -> JSON:
    found: JSON = {"code": code, "message": message, "severity": "ERROR",
                   "categories": ["INVALID_ATTRIBUTE"]}
    if attribute:
        found["attributeNames"] = [attribute]
    return found


def sku_issues(sku: str) -> list[JSON]:
    if not sku or len(sku) > MAX_SKU or sku != sku.strip():
        return [issue("8560", f"SKU {sku!r} is not valid: 1 to {MAX_SKU} characters, no outer "
                              "spaces.", None)]  # fmt: skip
    return []


def availability_quantity(value: Any) -> tuple[int | None, list[JSON]]:
    """The DEFAULT (merchant-fulfilled) quantity in a ``fulfillment_availability`` value."""
    if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
        return None, [issue("4000001", "fulfillment_availability must be a non-empty list of objects.")]
    quantity: int | None = None
    for entry in value:
        if not isinstance(entry.get("fulfillment_channel_code"), str):
            return None, [issue("4000001", "fulfillment_channel_code is required.")]
        if entry["fulfillment_channel_code"] != "DEFAULT":
            continue  # Amazon's own networks (AMAZON_NA, ...): not the seller's quantity
        qty = entry.get("quantity")
        if isinstance(qty, bool) or not isinstance(qty, int) or qty < 0:
            return None, [issue("4000001", f"quantity must be an integer >= 0, got {qty!r}.")]
        quantity = qty
    return quantity, []


def patch_shape_error(patches: Any) -> str | None:
    """Why ``patches`` breaks the request schema (a 400), or None."""
    if not isinstance(patches, list) or not patches:
        return "patches must be a non-empty array of JSON Patch operations."
    for patch in patches:
        if not isinstance(patch, dict) or patch.get("op") not in PATCH_OPS:
            return f"each patch needs an op among {', '.join(PATCH_OPS)}."
        if not isinstance(patch.get("path"), str):
            return "each patch needs a path."
    return None


def patched_quantity(patches: list[JSON]) -> tuple[int | None, list[JSON]]:
    """The quantity the (schema-valid) ``patches`` set, or issues; None when they set none."""
    quantity: int | None = None
    for patch in patches:
        if patch["path"] != QUANTITY_PATH:
            continue  # other attributes are accepted and not modelled
        if patch["op"] == "delete":
            return None, [issue("4000002", "fulfillment_availability cannot be deleted; set 0.")]
        quantity, issues = availability_quantity(patch.get("value"))
        if issues:
            return None, issues
    return quantity, []


# --- documents and feeds -------------------------------------------------------------------


@dataclass
class Document:
    document_id: str
    content_type: str
    content: bytes | None = None


@dataclass
class Feed:
    feed_id: str
    feed_type: str
    marketplace_ids: list[str]
    input_document_id: str
    created: str
    status: str = "IN_QUEUE"
    started: str | None = None
    ended: str | None = None
    result_document_id: str | None = None

    def view(self) -> JSON:
        shown: JSON = {"feedId": self.feed_id, "feedType": self.feed_type,
                       "marketplaceIds": self.marketplace_ids, "createdTime": self.created,
                       "processingStatus": self.status}  # fmt: skip
        for key, value in (("processingStartTime", self.started), ("processingEndTime", self.ended),
                           ("resultFeedDocumentId", self.result_document_id)):
            if value:
                shown[key] = value
        return shown


@dataclass
class Outcome:
    """A processed feed: DONE or FATAL, and its report."""

    status: str
    report: bytes
    content_type: str


# --- JSON_LISTINGS_FEED --------------------------------------------------------------------


def listings_report(seller_id: str, feed_id: str, issues: list[JSON], processed: int,
                    invalid: int) -> bytes:  # fmt: skip
    report = {
        "header": {"sellerId": seller_id, "version": "2.0", "feedId": feed_id},
        "issues": issues,
        "summary": {"errors": sum(i["severity"] == "ERROR" for i in issues),
                    "warnings": sum(i["severity"] == "WARNING" for i in issues),
                    "messagesProcessed": processed, "messagesAccepted": processed - invalid,
                    "messagesInvalid": invalid},
    }  # fmt: skip
    return json.dumps(report).encode()


def message_issues(message: Any) -> tuple[int | None, list[JSON]]:
    """(quantity to set or None, issues) for one listings feed message."""
    if not isinstance(message, dict):
        return None, [issue("100", "message is not an object.", None)]
    sku, operation = message.get("sku"), message.get("operationType")
    if not isinstance(sku, str):
        return None, [issue("100", "sku is required.", None)]
    if problems := sku_issues(sku):
        return None, problems
    if operation not in ("PATCH", "PARTIAL_UPDATE"):
        return None, [issue("101", f"operationType {operation!r} is not supported here "
                                   "(PATCH, PARTIAL_UPDATE).", None)]  # fmt: skip
    if not isinstance(message.get("productType"), str) or not message["productType"]:
        return None, [issue("90220", "'productType' is required but not supplied.", None)]
    if operation == "PARTIAL_UPDATE":
        attributes = message.get("attributes")
        if not isinstance(attributes, dict) or not attributes:
            return None, [issue("90220", "'attributes' is required but not supplied.", None)]
        if "fulfillment_availability" not in attributes:
            return None, []
        return availability_quantity(attributes["fulfillment_availability"])
    if shape := patch_shape_error(message.get("patches")):
        return None, [issue("100", shape, None)]
    return patched_quantity(message["patches"])


def report_issue(problem: JSON, message: Any) -> JSON:
    """A Listings Items ``Issue`` as the processing report writes it, with its message's id / SKU."""
    found = {k: v for k, v in problem.items() if k not in ("attributeNames", "categories")}
    if problem.get("attributeNames"):
        found["attributeName"] = problem["attributeNames"][0]
    if isinstance(message, dict):
        message_id, sku = message.get("messageId"), message.get("sku")
        if isinstance(message_id, int) and not isinstance(message_id, bool) and message_id >= 1:
            found["messageId"] = message_id
        if isinstance(sku, str) and sku:
            found["sku"] = sku
    return found


def process_listings_feed(content: bytes, seller_id: str, feed_id: str,
                          apply: Callable[[str, int, str], None]) -> Outcome:  # fmt: skip
    """Validate and apply a JSON_LISTINGS_FEED; ``apply(sku, quantity, productType)`` per message."""
    def fatal(message: str) -> Outcome:
        report = listings_report(seller_id, feed_id, [issue("100001", message, None)], 0, 0)
        return Outcome("FATAL", report, "application/json")

    try:
        feed = json.loads(content)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return fatal(f"The feed is not valid JSON: {exc}")
    header = feed.get("header") if isinstance(feed, dict) else None
    if not isinstance(header, dict) or header.get("version") != "2.0":
        return fatal("The feed needs a header with version \"2.0\".")
    if header.get("sellerId") != seller_id:
        return fatal(f"header.sellerId {header.get('sellerId')!r} is not this seller.")
    messages = feed.get("messages")
    if not isinstance(messages, list) or not 1 <= len(messages) <= 25_000:
        return fatal("messages must be a list of 1 to 25000 messages.")
    issues, invalid, seen = [], 0, set()
    for message in messages:
        message_id = message.get("messageId") if isinstance(message, dict) else None
        if isinstance(message_id, bool) or not isinstance(message_id, int) or message_id < 1:
            quantity, found = None, [issue("100", "messageId must be an integer >= 1.", None)]
        elif message_id in seen:
            quantity, found = None, [issue("100", f"messageId {message_id} is repeated.", None)]
        else:
            seen.add(message_id)
            quantity, found = message_issues(message)
        issues += [report_issue(problem, message) for problem in found]
        if found:
            invalid += 1
        elif quantity is not None:
            apply(message["sku"], quantity, message["productType"])
    report = listings_report(seller_id, feed_id, issues, len(messages), invalid)
    return Outcome("DONE", report, "application/json")


# --- POST_ORDER_ACKNOWLEDGEMENT_DATA -----------------------------------------------------------


@dataclass
class AckItem:
    item_code: str
    reason: str | None
    quantity: int | None


@dataclass
class Acknowledgement:
    message_id: str
    order_id: str
    status_code: str
    items: list[AckItem] = field(default_factory=list)


def _text(element: ET.Element, tag: str, *, required: bool = True) -> str | None:
    found = element.find(tag)
    value = (found.text or "").strip() if found is not None else ""
    if required and not value:
        raise ValueError(f"<{element.tag}> lacks <{tag}>")
    return value or None


def parse_acknowledgements(content: bytes) -> list[Acknowledgement]:
    """The OrderAcknowledgement messages of an AmazonEnvelope; ValueError if it is not one."""
    if b"<!DOCTYPE" in content.upper() or b"<!ENTITY" in content.upper():
        raise ValueError("DTDs and entities are not accepted")
    try:
        root = ET.fromstring(content)  # noqa: S314 - no DTD (refused above)
    except ET.ParseError as exc:
        raise ValueError(f"not well-formed XML: {exc}") from None
    if root.tag != "AmazonEnvelope" or _text(root, "MessageType") != "OrderAcknowledgement":
        raise ValueError("expected an AmazonEnvelope with MessageType OrderAcknowledgement")
    acks = []
    for message in root.findall("Message"):
        body = message.find("OrderAcknowledgement")
        if body is None:
            raise ValueError("<Message> lacks <OrderAcknowledgement>")
        status = _text(body, "StatusCode")
        if status not in ("Success", "Failure"):
            raise ValueError(f"StatusCode must be Success or Failure, got {status!r}")
        items = []
        for item in body.findall("Item"):
            quantity = _text(item, "Quantity", required=False)
            if quantity is not None and (not quantity.isdigit() or int(quantity) < 1):
                raise ValueError(f"Quantity must be a positive integer, got {quantity!r}")
            items.append(AckItem(str(_text(item, "AmazonOrderItemCode")),
                                 _text(item, "CancelReason", required=False),
                                 int(quantity) if quantity else None))  # fmt: skip
        acks.append(Acknowledgement(str(_text(message, "MessageID")),
                                    str(_text(body, "AmazonOrderID")), str(status), items))
    if not acks:
        raise ValueError("the envelope has no <Message>")
    return acks


def processing_report_xml(seller_id: str, feed_id: str, processed: int,
                          errors: list[tuple[str, str, str]]) -> bytes:  # fmt: skip
    """Amazon's XML ProcessingReport; ``errors``: (MessageID, AmazonOrderID, description)."""
    root = ET.Element("AmazonEnvelope")
    header = ET.SubElement(root, "Header")
    ET.SubElement(header, "DocumentVersion").text = "1.02"
    ET.SubElement(header, "MerchantIdentifier").text = seller_id
    ET.SubElement(root, "MessageType").text = "ProcessingReport"
    message = ET.SubElement(root, "Message")
    ET.SubElement(message, "MessageID").text = "1"
    report = ET.SubElement(message, "ProcessingReport")
    ET.SubElement(report, "DocumentTransactionID").text = feed_id
    ET.SubElement(report, "StatusCode").text = "Complete"
    summary = ET.SubElement(report, "ProcessingSummary")
    failed = len({e[0] for e in errors})
    for tag, count in (("MessagesProcessed", processed), ("MessagesSuccessful", processed - failed),
                       ("MessagesWithError", failed), ("MessagesWithWarning", 0)):
        ET.SubElement(summary, tag).text = str(count)
    for message_id, order_id, description in errors:
        result = ET.SubElement(report, "Result")
        ET.SubElement(result, "MessageID").text = message_id
        ET.SubElement(result, "ResultCode").text = "Error"
        ET.SubElement(result, "ResultMessageCode").text = "18028"
        ET.SubElement(result, "ResultDescription").text = description
        if order_id:
            ET.SubElement(ET.SubElement(result, "AdditionalInfo"), "AmazonOrderID").text = order_id
    report_xml: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return report_xml


@dataclass
class AdjustedItem:
    item_code: str
    reason: str
    components: dict[str, Decimal]  # Type -> amount (>= 0, what goes back to the buyer)
    currency: str
    quantity: int | None = None


@dataclass
class Adjustment:
    message_id: str
    order_id: str
    adjustment_id: str
    items: list[AdjustedItem]


def _root(content: bytes, message_type: str) -> ET.Element:
    if b"<!DOCTYPE" in content.upper() or b"<!ENTITY" in content.upper():
        raise ValueError("DTDs and entities are not accepted")
    try:
        root = ET.fromstring(content)  # noqa: S314 - no DTD (refused above)
    except ET.ParseError as exc:
        raise ValueError(f"not well-formed XML: {exc}") from None
    if root.tag != "AmazonEnvelope" or _text(root, "MessageType") != message_type:
        raise ValueError(f"expected an AmazonEnvelope with MessageType {message_type}")
    return root


def _adjusted_item(item: ET.Element) -> AdjustedItem:
    reason = str(_text(item, "AdjustmentReason"))
    if reason not in ADJUSTMENT_REASONS:
        raise ValueError(f"AdjustmentReason {reason!r} is not one of {', '.join(ADJUSTMENT_REASONS)}")
    components: dict[str, Decimal] = {}
    currencies = set()
    for component in item.findall("ItemPriceAdjustments/Component"):
        kind, amount = _text(component, "Type"), component.find("Amount")
        if kind not in COMPONENT_TYPES:
            raise ValueError(f"Component Type {kind!r} is not one of {', '.join(COMPONENT_TYPES)}")
        try:
            value = Decimal((amount.text or "").strip()) if amount is not None else None
        except InvalidOperation:
            value = None
        if value is None or not value.is_finite() or value < 0 or amount is None:
            raise ValueError(f"Component {kind}: Amount must be a decimal >= 0")
        currencies.add(amount.get("currency", ""))
        components[str(kind)] = components.get(str(kind), Decimal(0)) + value
    if not components:
        raise ValueError("<AdjustedItem> lacks ItemPriceAdjustments/Component")
    if len(currencies) != 1 or not re.fullmatch(r"[A-Z]{3}", next(iter(currencies))):
        raise ValueError("every Amount needs the same currency attribute (ISO 4217)")
    quantity = _text(item, "QuantityCancelled", required=False)
    if quantity is not None and (not quantity.isdigit() or int(quantity) < 1):
        raise ValueError(f"QuantityCancelled must be a positive integer, got {quantity!r}")
    return AdjustedItem(str(_text(item, "AmazonOrderItemCode")), reason, components,
                        currencies.pop(), int(quantity) if quantity else None)  # fmt: skip


def parse_adjustments(content: bytes) -> list[Adjustment]:
    """The OrderAdjustment messages of an AmazonEnvelope; ValueError if it is not one."""
    root = _root(content, "OrderAdjustment")
    adjustments = []
    for message in root.findall("Message"):
        body = message.find("OrderAdjustment")
        if body is None:
            raise ValueError("<Message> lacks <OrderAdjustment>")
        items = [_adjusted_item(item) for item in body.findall("AdjustedItem")]
        if not items:
            raise ValueError("<OrderAdjustment> lacks <AdjustedItem>")
        adjustments.append(Adjustment(str(_text(message, "MessageID")), str(_text(body, "AmazonOrderID")),
                                      str(_text(body, "MerchantAdjustmentID")), items))  # fmt: skip
    if not adjustments:
        raise ValueError("the envelope has no <Message>")
    return adjustments


def refund_error(record: OrderRecord, adjustment: Adjustment, refunds: list[JSON]) -> str | None:
    """Why ``adjustment`` cannot be refunded on ``record``, or None."""
    order, order_id = record.order, adjustment.order_id
    if order["FulfillmentChannel"] != "MFN":
        return f"Order {order_id} is fulfilled by Amazon (AFN); refund it through Amazon."
    if order["OrderStatus"] in NOT_REFUNDABLE:
        return f"Order {order_id} is {order['OrderStatus']}; it has not been charged."
    currency = order["OrderTotal"]["CurrencyCode"]
    for item in adjustment.items:
        ordered = record.item(item.item_code)
        if ordered is None:
            return f"AmazonOrderItemCode {item.item_code} is not an item of order {order_id}."
        if item.currency != currency:
            return f"Order {order_id} is in {currency}, the adjustment in {item.currency}."
        earlier = sum((Decimal(i["components"].get("Principal", "0")) for r in refunds
                       if r["order_id"] == order_id for i in r["items"]
                       if i["order_item_id"] == item.item_code), Decimal(0))  # fmt: skip
        paid = Decimal(ordered["ItemPrice"]["Amount"])
        if earlier + item.components.get("Principal", Decimal(0)) > paid:
            return (f"AmazonOrderItemCode {item.item_code}: Principal refunds would exceed the item "
                    f"price {paid} ({earlier} refunded already).")
    return None
