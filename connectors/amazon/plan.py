"""Amazon's rate plans per SP-API operation (requests per second, burst)."""

from __future__ import annotations

from retail_sync.connectors.ratelimit import Plan

#: The usage plans in the SP-API specs (../shared/specs/amazon, each operation's description).
AMAZON_PLANS: dict[str, Plan] = {
    "getOrders": (0.0167, 20), "getOrder": (0.5, 30), "getOrderItems": (0.5, 30),
    "confirmShipment": (2.0, 10), "updateShipmentStatus": (5.0, 15),
    "getListingsItem": (5.0, 10), "patchListingsItem": (5.0, 5), "putListingsItem": (5.0, 10),
    "createFeedDocument": (0.5, 15), "createFeed": (0.0083, 15), "getFeed": (2.0, 15),
    "getFeedDocument": (0.0222, 10), "cancelFeed": (2.0, 15),
}  # fmt: skip
