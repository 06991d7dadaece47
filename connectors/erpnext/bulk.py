"""Many Sales Orders in a few requests (issue 16): ``frappe.client.insert_many``.

Frappe's ``POST /api/method/frappe.client.insert_many`` takes ``{"docs": [...]}`` (at most 200)
and inserts them in one request, so in one database transaction: every one or none. It answers
``{"message": [names]}`` in the order of the docs. For ``posts`` (any number):

1. list requests find the orders the ERP already holds under their order key (the unique
   ``custom_marketplace_order_key``, filter ``in``): a retry, a replay, a restarted worker;
2. ``insert_many`` for the rest, 200 at a time (submitted, ``docstatus`` 1, as a single post);
3. list requests read the new orders' ``creation`` (the stock hand-over needs it).

A list request is a GET whose ``in`` filter is in its URL: each carries at most
``IN_FILTER_BYTES`` of values (``in_chunks``), so that its request line stays under the 8 KiB
servers accept (nginx's default header buffer in front of Frappe, aiohttp's 8,190 bytes in the
simulator). One request for all of them refused every batch of more than ~250 orders under a
backlog (HTTP 400), which then went one by one. About five requests for 200 orders instead of
two per order. Exactly once as ``create_sales_order``
is: a post that timed out after the ERP inserted its docs is found by step 1 on the retry. A
refusal of any doc (a duplicate that raced past step 1, a bad item) refuses the whole request:
PermanentError, and the caller posts those orders one by one, each with its own outcome.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus

from retail_sync.connectors.contracts import ErpPostResult, SalesOrderPost
from retail_sync.connectors.erpnext.documents import SALES_ORDER
from retail_sync.connectors.erpnext.fields import ORDER_KEY_FIELD
from retail_sync.connectors.erpnext.frappe import error_for_status, frappe_time
from retail_sync.connectors.errors import DecodeError

if TYPE_CHECKING:
    from retail_sync.connectors.erpnext.client import ErpNextConnector

INSERT_MANY_LIMIT = 200  # Frappe: "Only 200 inserts allowed in one request"
#: the values one list request's ``in`` filter carries at most, in bytes of its URL
IN_FILTER_BYTES = 6000


def in_chunks(values: Sequence[str], budget: int = IN_FILTER_BYTES) -> list[list[str]]:
    """``values`` in order, split so that each chunk's values take at most ``budget`` bytes of a
    URL (quoted, comma-separated, URL-encoded); a value longer than that is a chunk alone."""
    chunks: list[list[str]] = []
    chunk: list[str] = []
    size = 0
    for value in values:
        cost = len(quote_plus(json.dumps(value) + ", "))
        if chunk and size + cost > budget:
            chunks.append(chunk)
            chunk, size = [], 0
        chunk.append(value)
        size += cost
    if chunk:
        chunks.append(chunk)
    return chunks


async def _rows_in(erp: ErpNextConnector, field: str, values: Sequence[str],
                   fields: list[str]) -> list[Any]:
    """The Sales Orders whose ``field`` is one of ``values``, a list request per chunk."""
    rows: list[Any] = []
    for chunk in in_chunks(values):
        rows += await erp.list_rows(SALES_ORDER, [[field, "in", chunk]], fields)
    return rows


async def create_sales_orders(erp: ErpNextConnector,
                              posts: Sequence[SalesOrderPost]) -> list[ErpPostResult]:
    keys = list(dict.fromkeys(p.order_key for p in posts))
    results: dict[str, ErpPostResult] = {}
    if not keys:
        return []
    for row in await _rows_in(erp, ORDER_KEY_FIELD, keys, ["name", ORDER_KEY_FIELD, "creation"]):
        key = row.get(ORDER_KEY_FIELD)
        if isinstance(key, str) and key not in results:
            results[key] = ErpPostResult(erp_sales_order=str(row["name"]), created=False,
                                         created_at=frappe_time(row.get("creation")))
    new = list({p.order_key: p for p in posts if p.order_key not in results}.values())
    for start in range(0, len(new), INSERT_MANY_LIMIT):
        chunk = new[start:start + INSERT_MANY_LIMIT]
        names = await _insert_many(erp, [order_doc(erp, p) for p in chunk])
        created = {str(r["name"]): r.get("creation")
                   for r in await _rows_in(erp, "name", names, ["name", "creation"])}
        for post, name in zip(chunk, names, strict=True):
            results[post.order_key] = ErpPostResult(
                erp_sales_order=name, created=True, created_at=frappe_time(created.get(name)))
    return [results[p.order_key] for p in posts]


def order_doc(erp: ErpNextConnector, post: SalesOrderPost) -> dict[str, Any]:
    return {"doctype": SALES_ORDER, **erp.sales_order_doc(post.order_key, post.order,
                                                          post.backorders)}


async def _insert_many(erp: ErpNextConnector, docs: list[dict[str, Any]]) -> list[str]:
    what = f"insert {len(docs)} sales orders"
    url = f"{erp.base_url}/api/method/frappe.client.insert_many"
    status, body, headers = await erp.http.request("POST", url, what, json={"docs": docs})
    if status != 200:
        raise error_for_status(status, body, headers, what)
    try:
        names = json.loads(body)["message"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DecodeError(f"ERP {what}: answer without a message") from exc
    if not (isinstance(names, list) and len(names) == len(docs)
            and all(isinstance(n, str) and n for n in names)):
        raise DecodeError(f"ERP {what}: {len(docs)} docs, the answer names {names!r:.200}")
    return names
