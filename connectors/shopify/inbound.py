"""Shopify inbound side: webhook signature verification, the delivery's headers, and the
webhook hooks the engine's webhook route asks (``HOOKS``, the plugin's ``inbound``); the delivery
dedupe every webhook shares is connectors/dedupe.py.

Shopify signs every webhook with ``base64(HMAC-SHA256(app client secret, raw body))`` in
``X-Shopify-Hmac-Sha256`` and gives each delivery an ``X-Shopify-Webhook-Id`` that stays the same
across its retries. Header names are case-insensitive; the newer prefix-less forms
(``Shopify-Hmac-Sha256``) are accepted too, as Shopify's own libraries do.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from retail_sync.connectors.plugin import InboundHooks, WebhookDelivery
from retail_sync.connectors.shopify.mapper import CHANNEL, map_refund
from retail_sync.streams.events import ReturnRequested
from retail_sync.streams.models import order_key

HMAC_HEADER = "X-Shopify-Hmac-Sha256"
WEBHOOK_ID_HEADER = "X-Shopify-Webhook-Id"
TOPIC_HEADER = "X-Shopify-Topic"
SHOP_HEADER = "X-Shopify-Shop-Domain"
API_VERSION_HEADER = "X-Shopify-API-Version"
TRIGGERED_AT_HEADER = "X-Shopify-Triggered-At"
EVENT_ID_HEADER = "X-Shopify-Event-Id"


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Read a Shopify header in either its ``X-Shopify-*`` or prefix-less ``Shopify-*`` form."""
    value = headers.get(name)
    if value is None and name.startswith("X-"):
        value = headers.get(name[2:])
    return value


def compute_hmac(body: bytes, secret: str) -> str:
    """The value Shopify puts in X-Shopify-Hmac-Sha256 for this raw body."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify_hmac(body: bytes, received: str | None, secret: str) -> bool:
    """Constant-time check of the received signature against the raw body."""
    if not received:
        return False
    expected = compute_hmac(body, secret)
    return hmac.compare_digest(expected.encode(), received.strip().encode())


# --- the webhook hooks (the plugin's ``inbound``) ---------------------------------------------

#: the webhook topics the engine receives (``/webhooks/shopify/{resource}/{event}``)
TOPICS = frozenset({"orders/create", "orders/updated", "orders/cancelled", "refunds/create"})


def verify(body: bytes, headers: Mapping[str, str], settings: Any) -> bool:
    """The body is signed with the app's client secret (``shopify_webhook_secret``)."""
    secret = settings.shopify_webhook_secret.get_secret_value()
    return verify_hmac(body, header(headers, HMAC_HEADER), secret)


def delivery(headers: Mapping[str, str]) -> WebhookDelivery:
    """The delivery's ids from its headers (the webhook id is stable across Shopify's retries)."""
    return WebhookDelivery(
        delivery_id=header(headers, WEBHOOK_ID_HEADER),
        event_id=header(headers, EVENT_ID_HEADER),
        shop_domain=header(headers, SHOP_HEADER),
        api_version=header(headers, API_VERSION_HEADER),
        triggered_at=header(headers, TRIGGERED_AT_HEADER),
    )


def raw_key(payload: Any, delivery_id: str) -> str:
    """The raw record's key: the order's (a refund names its order in ``order_id``), else one of
    the delivery's own (a body that names no order still reaches the mapper, which says why)."""
    if isinstance(payload, dict) and isinstance(payload.get("order_id"), int | str):  # a refund
        return order_key(CHANNEL, str(payload["order_id"]))
    if isinstance(payload, dict) and isinstance(payload.get("id"), int | str):
        return order_key(CHANNEL, str(payload["id"]))
    return order_key(CHANNEL, f"delivery:{delivery_id}")


def refund_event(payload: Any, received_at: datetime) -> ReturnRequested:
    """A ``refunds/create`` delivery: a refund made on Shopify (raises MappingError)."""
    key, refund = map_refund(payload, received_at)
    return ReturnRequested(order_key=key, refund=refund)


HOOKS = InboundHooks(
    verify=verify, delivery=delivery, order_key=raw_key, topics=TOPICS,
    signature_error=f"missing or invalid {HMAC_HEADER}",
    delivery_id_error=f"missing {WEBHOOK_ID_HEADER}",
    topic_events={"refunds/create": refund_event},
)
