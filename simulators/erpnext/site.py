"""The demo ERPNext site's set-up: the Custom Fields installed on it and its master data.

A real site has what its administrator created: the integration documents the Custom Fields it
needs (docs/ARCHITECTURE.md §6, ``connectors/erpnext`` holds the integration's own list) and the
administrator adds them in Customize Form. The simulator is that outside world, so it keeps its own
copy here rather than importing the connector's: a site whose fields drift from what the worker
expects is then visible (the worker's start-up check, ``connectors/erpnext/fields_check.py``, names
every field missing or not unique) instead of being hidden by a shared constant.

``unique`` fields answer a second insert with the same value with HTTP 417
``UniqueValidationError``, as Frappe's unique database index does.
"""

from __future__ import annotations

from typing import Any

#: doctype -> fieldname -> Custom Field definition (fieldtype, label, unique, options)
CUSTOM_FIELDS: dict[str, dict[str, dict[str, Any]]] = {
    "Sales Order": {
        "custom_marketplace_order_key": {
            "fieldtype": "Data", "label": "Marketplace Order Key", "unique": 1, "no_copy": 1,
            "description": "The engine's order key (channel:marketplace order id); one order each",
        },
        "custom_marketplace": {"fieldtype": "Data", "label": "Marketplace"},
        "custom_marketplace_order_id": {"fieldtype": "Data", "label": "Marketplace Order ID"},
        "custom_marketplace_order_name": {"fieldtype": "Data", "label": "Marketplace Order Name"},
        "custom_buyer_name": {"fieldtype": "Data", "label": "Buyer Name"},
        "custom_buyer_id": {"fieldtype": "Data", "label": "Buyer ID (marketplace)"},
        "custom_cancel_reason": {"fieldtype": "Small Text", "label": "Cancel Reason",
                                 "allow_on_submit": 1},
        # what the warehouse and finance need that ERPNext has no field for (issue 12 item 2;
        # the fields ERPNext has are used: shipping_address, address_display, contact_phone,
        # delivery_date, taxes by name and rate, item price_list_rate/discount_amount/rate,
        # additional_notes, customer_item_code; docs/ARCHITECTURE.md §5g)
        "custom_ship_by": {"fieldtype": "Datetime", "label": "Ship By (UTC)",
                           "description": "The latest ship date the marketplace promised"},
        "custom_shipping_method": {"fieldtype": "Data", "label": "Shipping Method"},
        "custom_fulfilled_by": {"fieldtype": "Select", "options": "merchant\nmarketplace",
                                "label": "Fulfilled By",
                                "description": "marketplace: shipped by the marketplace from "
                                               "its own stock (Amazon AFN)"},
        "custom_is_prime": {"fieldtype": "Check", "label": "Prime"},
        "custom_is_gift": {"fieldtype": "Check", "label": "Gift"},
        "custom_marketplace_order_type": {"fieldtype": "Data", "label": "Marketplace Order Type"},
        "custom_original_order_id": {"fieldtype": "Data", "label": "Replaces Marketplace Order"},
        "custom_discount_codes": {"fieldtype": "Small Text", "label": "Discount Codes"},
        "custom_buyer_note": {"fieldtype": "Small Text", "label": "Buyer Note"},
        "custom_note_attributes": {"fieldtype": "Small Text", "label": "Note Attributes"},
        "custom_buyer_po_no": {"fieldtype": "Data", "label": "Buyer's PO Number",
                               "description": "The buyer's own PO number (po_no is the "
                                              "marketplace order key)"},
    },
    "Sales Order Item": {
        "custom_marketplace_line_id": {"fieldtype": "Data", "label": "Marketplace Line ID"},
        "custom_backorder_qty": {"fieldtype": "Int", "label": "Backorder Qty"},
        "custom_item_condition": {"fieldtype": "Data", "label": "Item Condition",
                                  "description": "e.g. Used/Good (Amazon ConditionId/"
                                                 "ConditionSubtypeId)"},
    },
    "Delivery Note": {
        "custom_shipment_id": {"fieldtype": "Data", "label": "Shipment ID", "unique": 1,
                               "no_copy": 1},
        "custom_carrier": {"fieldtype": "Data", "label": "Carrier"},
        "custom_tracking_number": {"fieldtype": "Data", "label": "Tracking Number"},
        "custom_shipped_at": {"fieldtype": "Data", "label": "Shipped At (ISO 8601)"},
        "custom_sales_invoice": {"fieldtype": "Link", "options": "Sales Invoice",
                                 "label": "Sales Invoice", "allow_on_submit": 1},
        "custom_return_id": {"fieldtype": "Data", "label": "Return ID", "unique": 1,
                             "no_copy": 1},
        "custom_return_reason": {"fieldtype": "Small Text", "label": "Return Reason"},
    },
    "Delivery Note Item": {
        "custom_marketplace_line_id": {"fieldtype": "Data", "label": "Marketplace Line ID"},
    },
    "Sales Invoice": {
        "custom_return_id": {"fieldtype": "Data", "label": "Return ID", "unique": 1,
                             "no_copy": 1},
        "custom_refund_reason": {"fieldtype": "Small Text", "label": "Refund Reason"},
    },
    "Sales Invoice Item": {
        "custom_marketplace_line_id": {"fieldtype": "Data", "label": "Marketplace Line ID"},
    },
}  # fmt: skip

#: master data the demo configuration links to (the ERP simulator knows these)
DEFAULT_COMPANY = "Retail Sync Demo Ltd"
COMPANY_CURRENCY = "USD"
DEFAULT_WAREHOUSE = "Stores - RSD"
#: where orders the marketplace fulfils from its own stock (Amazon AFN) are booked: not ours, so
#: they reserve none of our stock (RETAIL_SYNC_ERP_MARKETPLACE_WAREHOUSE's default)
MARKETPLACE_WAREHOUSE = "Marketplace Fulfilled - RSD"
DEFAULT_CUSTOMER = "Marketplace Customer"
#: one Customer per channel (RETAIL_SYNC_ERP_CHANNEL_CUSTOMERS' default)
CHANNEL_CUSTOMERS = {
    "shopify": "Shopify Customer",
    "amazon": "Amazon Customer",
    "walmart": "Walmart Customer",
    "regional": "Regional Customer",
}


def unique_fields(doctype: str) -> list[str]:
    return [name for name, df in CUSTOM_FIELDS.get(doctype, {}).items() if df.get("unique")]


__all__ = [
    "CHANNEL_CUSTOMERS",
    "COMPANY_CURRENCY",
    "CUSTOM_FIELDS",
    "DEFAULT_COMPANY",
    "DEFAULT_CUSTOMER",
    "DEFAULT_WAREHOUSE",
    "MARKETPLACE_WAREHOUSE",
    "unique_fields",
]
