"""What the ERP simulator knows of ERPNext's doctypes and master data.

**Fields.** Frappe keeps only the fields a doctype defines: ``BaseDocument.get_valid_dict``
walks ``meta.get_valid_fields()`` and ``db_insert`` writes those columns, so a key a client sends
that the doctype does not define is silently dropped (not refused) and is absent when the
document is read back. The simulator does the same with the field lists in
``erpnext_doctypes.json`` (Sales Order, Delivery Note and their items, Bin and Stock Ledger Entry
from ../shared/specs/erpnext, ERPNext v15.109.0; Sales Invoice, its items and Sales Taxes and
Charges by name from frappe/erpnext's doctype JSON) plus the Custom Fields the integration
declares (``site.CUSTOM_FIELDS``). Stock Entry and Stock Reconciliation, which
the engine never posts, are not filtered.

**Links.** Frappe checks every Link field on insert and answers HTTP 417 ``LinkValidationError``
"Could not find Customer: X" (a child row: "Could not find Row #1: Item Code: X"). The simulator
checks Customer, Company, Warehouse and Item against ``Masters``, which knows the demo's master
data: the company, its warehouse, one Customer per channel and the default one, and the items of
every simulator's catalogue and the demo. Test helpers that give an item stock
(``ErpSimulator.set_stock``/``receive``) create the Item first, as a seller would;
``POST /api/resource/Item|Customer|Warehouse`` create them as in Frappe. With
``unknown_items="create"`` an unknown item is created on first sight instead (a convenience for
worker tests that invent SKUs without modelling the item master).

**Exchange rates.** The company's currency is USD; a document in another currency without a
``conversion_rate`` takes the rate of the ``Currency Exchange`` table (``Masters.exchange_rates``)
and one without any rate is refused, as ERPNext's "Exchange Rate is mandatory" does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

from retail_sync.simulators.erpnext.site import (
    CHANNEL_CUSTOMERS,
    COMPANY_CURRENCY,
    CUSTOM_FIELDS,
    DEFAULT_COMPANY,
    DEFAULT_CUSTOMER,
    DEFAULT_WAREHOUSE,
    MARKETPLACE_WAREHOUSE,
)

JSON = dict[str, Any]
META_FILE = Path(__file__).with_name("erpnext_doctypes.json")
#: Frappe's standard columns of every document (``frappe.model.default_fields``) and child rows
DEFAULT_FIELDS = frozenset({
    "doctype", "name", "owner", "creation", "modified", "modified_by", "docstatus", "idx",
    "parent", "parentfield", "parenttype",
})  # fmt: skip
CHILD_TABLES = {
    "Sales Order": {"items": "Sales Order Item", "taxes": "Sales Taxes and Charges"},
    "Delivery Note": {"items": "Delivery Note Item", "taxes": "Sales Taxes and Charges"},
    "Sales Invoice": {"items": "Sales Invoice Item", "taxes": "Sales Taxes and Charges"},
}


@cache
def doctype_fields() -> dict[str, dict[str, JSON]]:
    """doctype -> fieldname -> {fieldtype, options, reqd, unique} (standard fields only)."""
    data = json.loads(META_FILE.read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}


def valid_fields(doctype: str) -> frozenset[str] | None:
    """Every field a stored ``doctype`` document may hold, or None when the simulator has no
    definition of it (not filtered)."""
    standard = doctype_fields().get(doctype)
    if standard is None:
        return None
    return frozenset(standard) | frozenset(CUSTOM_FIELDS.get(doctype, {})) | DEFAULT_FIELDS


def keep_defined(doctype: str, doc: JSON) -> JSON:
    """``doc`` without the fields ``doctype`` does not define (child rows too), as Frappe
    stores it."""
    allowed = valid_fields(doctype)
    if allowed is None:
        return doc
    kept = {k: v for k, v in doc.items() if k in allowed}
    for table, child in CHILD_TABLES.get(doctype, {}).items():
        if isinstance(kept.get(table), list):
            kept[table] = [keep_defined(child, row) if isinstance(row, dict) else row
                           for row in kept[table]]  # fmt: skip
    return kept


# --- master data ------------------------------------------------------------------------------

DEMO_ITEMS = [f"DEMO-{n:03d}" for n in range(1, 25)]  # retail_sync.demo_channels.DEMO_SKUS
#: the non-stock item Shopify custom lines (no SKU) are booked as
#: (RETAIL_SYNC_SHOPIFY_CUSTOM_ITEM_CODE's default)
SERVICE_ITEMS = ["MARKETPLACE-CUSTOM-ITEM"]


def catalogue_items() -> set[str]:
    """The items every simulator's catalogue sells, and the demo's."""
    from retail_sync.simulators.amazon.orders import CATALOGUE
    from retail_sync.simulators.regional.simulator import SKUS
    from retail_sync.simulators.shopify.orders import DEFAULT_SKUS
    from retail_sync.simulators.walmart.orders import CATALOG

    return ({row[0] for row in CATALOGUE} | set(SKUS) | set(DEFAULT_SKUS)
            | {row[0] for row in CATALOG} | set(DEMO_ITEMS) | set(SERVICE_ITEMS))  # fmt: skip


@dataclass
class Masters:
    """Customers, companies, warehouses, items and exchange rates the simulated ERP holds."""

    customers: set[str] = field(
        default_factory=lambda: {DEFAULT_CUSTOMER, *CHANNEL_CUSTOMERS.values()})
    companies: dict[str, str] = field(
        default_factory=lambda: {DEFAULT_COMPANY: COMPANY_CURRENCY})  # company -> currency
    #: ours, and the one marketplace-fulfilled (Amazon AFN) orders are booked in
    warehouses: set[str] = field(
        default_factory=lambda: {DEFAULT_WAREHOUSE, MARKETPLACE_WAREHOUSE})
    items: set[str] = field(default_factory=catalogue_items)
    #: (from, to) -> rate, as ERPNext's Currency Exchange records
    exchange_rates: dict[tuple[str, str], Decimal] = field(default_factory=lambda: {
        ("EUR", "USD"): Decimal("1.08"), ("GBP", "USD"): Decimal("1.27"),
        ("CAD", "USD"): Decimal("0.73"), ("MXN", "USD"): Decimal("0.058"),
        ("JPY", "USD"): Decimal("0.0067"),
    })  # fmt: skip
    create_unknown_items: bool = False
    items_created_on_sight: int = 0

    def has_item(self, code: str) -> bool:
        if code in self.items:
            return True
        if self.create_unknown_items:
            self.items.add(code)
            self.items_created_on_sight += 1
            return True
        return False

    def rate(self, currency: str, company: str) -> Decimal | None:
        base = self.companies.get(company, COMPANY_CURRENCY)
        if currency == base:
            return Decimal(1)
        found = self.exchange_rates.get((currency, base))
        if found is not None:
            return found
        back = self.exchange_rates.get((base, currency))
        return (Decimal(1) / back) if back else None

    def create(self, doctype: str, body: JSON) -> JSON:
        """``POST /api/resource/Item|Customer|Warehouse``: the new record (named after
        ``item_code``, ``customer_name`` or ``warehouse_name``)."""
        key = {"Item": "item_code", "Customer": "customer_name",
               "Warehouse": "warehouse_name"}[doctype]  # fmt: skip
        name = body.get("name") or body.get(key)
        if not isinstance(name, str) or not name.strip():
            from retail_sync.simulators.erpnext.docs import DocValidationError

            raise DocValidationError(f"Error: Value missing for {doctype}: {key}")
        target = {"Item": self.items, "Customer": self.customers,
                  "Warehouse": self.warehouses}[doctype]  # fmt: skip
        if name in target:
            from retail_sync.simulators.erpnext.docs import DuplicateEntryError

            raise DuplicateEntryError(f"{doctype} {name} already exists")
        target.add(name)
        return {"doctype": doctype, "name": name, key: name}


MASTER_DOCTYPES = ("Item", "Customer", "Warehouse")
