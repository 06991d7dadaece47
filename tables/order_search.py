"""Ids support searches by that the order index learns besides other systems' ids (issue 14):
the marketplace's order name (Shopify ``#1007``) and the customer's email, as a salted hash.

The email is never indexed in plain: the index key is ``email:<sha256 hex of salt + lower-cased,
trimmed email>``, the salt ``RETAIL_SYNC_ORDER_SEARCH_EMAIL_SALT`` (empty: the app id). A search
by email hashes the typed address the same way and looks the result up (exact match only). A
changed salt makes existing entries unreachable until the order's next event re-indexes it.
"""

from __future__ import annotations

import hashlib
from typing import Any

EMAIL_PREFIX = "email:"


def salt_of(settings: Any) -> str:
    salt: str = settings.order_search_email_salt.get_secret_value()
    return salt or settings.app_id


def email_index_id(email: str, salt: str) -> str:
    digest = hashlib.sha256((salt + email.strip().lower()).encode("utf-8")).hexdigest()
    return EMAIL_PREFIX + digest


def search_ids(state: Any, salt: str) -> list[str]:
    """The order's name and its customer's email hash, when it has them."""
    ids = []
    name = state.correlation.marketplace_order_name or state.order.marketplace_order_name
    if name:
        ids.append(name)
    email = state.order.customer.email
    if email and "@" in email:
        ids.append(email_index_id(email, salt))
    return ids


def external_ids(state: Any, email_salt: str | None = None) -> list[str]:
    """The ids an order is found by besides its key (the order-state table's secondary index,
    tables/rocks.py): other systems' ids (ERP sales order, WMS fulfilments, the first and each
    backorder release's, shipments, tracking numbers, delivery notes, invoices, refunds, credit
    notes) and, with ``email_salt``, what support searches by (the order name and the email's
    salted hash). The marketplace order id is not among them: the order key is derived from it
    (``channel:id``), so a lookup tries that directly."""
    ids = [state.correlation.erp_sales_order, state.correlation.wms_fulfilment_id,
           *(b.wms_fulfilment_id for b in state.backorders.values())]
    for s in state.shipments.values():
        ids += [s.shipment_id, s.tracking_number, s.delivery_note, s.sales_invoice]
    for r in state.refunds.values():
        ids += [r.refund_id, r.credit_note, r.return_delivery_note]
    if email_salt is not None:
        ids += search_ids(state, email_salt)
    return list(dict.fromkeys(i for i in ids if i))


def index_id_for_query(query: str, salt: str) -> str:
    """What a support search looks up in the index: an email becomes its hashed entry; any
    other text (marketplace id, order name, ERP sales order, tracking number, invoice, credit
    note, order key) is looked up as typed."""
    query = query.strip()
    if "@" in query and " " not in query:
        return email_index_id(query, salt)
    return query
