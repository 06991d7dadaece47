"""Walmart Marketplace Orders API v3 client (US): released orders, acknowledge, read one order.

Auth is Walmart's client-credentials flow: ``POST /v3/token`` with ``Authorization: Basic
base64(clientId:clientSecret)`` gives an access token valid ``expires_in`` seconds (900). The token
is cached until shortly before it expires and fetched again once if a call answers 401. Every call
sends ``WM_SEC.ACCESS_TOKEN``, a fresh ``WM_QOS.CORRELATION_ID``, ``WM_SVC.NAME`` and
``Accept: application/json``. Lists page with ``list.meta.nextCursor``, a query string appended
verbatim to the same path. Walmart answers a list with no match as 404
``CONTENT_NOT_FOUND.GMP_ORDER_API``; that is read as an empty page.

Every HTTP and network failure is converted here, at the edge, into the sync error hierarchy:

    429                              -> RateLimitedError (retry_after from x-next-replenish-time)
    5xx, timeouts, connection        -> RetryableError
    400, 401 after a refresh, 404    -> PermanentError ("CODE: description" from Walmart's body)
    2xx that is not the JSON promised -> DecodeError

Long module: the Orders v3 client (token, paging, error and rate-signal mapping) and the released-
orders poll source with its acknowledgement are read together.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import orjson
from yarl import URL

from retail_sync.connectors.contracts import PolledOrder, PollResult
from retail_sync.connectors.errors import (
    DecodeError,
    PermanentError,
    RateLimitedError,
    RetryableError,
    SyncError,
    parse_retry_after,
)
from retail_sync.connectors.ratelimit import Budgets, budgets_for
from retail_sync.connectors.walmart.plan import WALMART_PLANS
from retail_sync.connectors.walmart.settings import WalmartSettings

JSON = dict[str, Any]
MAX_ERROR_BODY = 4 * 1024
RELEASED_PATH = "/v3/orders/released"
ORDERS_PATH = "/v3/orders"
#: without it Walmart leaves out ``orderType`` (REGULAR / REPLACEMENT) and a replacement's
#: ``originalCustomerOrderID`` (us-mp-orders.openapi.json; ARCHITECTURE §5g)
REPLACEMENT_INFO = {"replacementInfo": "true"}
EMPTY_LIST_CODE = "CONTENT_NOT_FOUND.GMP_ORDER_API"
REPLENISH_HEADERS = ("x-next-replenish-time", "x-next-replenishment-time")  # MP / DSV spelling


# --- pure helpers -----------------------------------------------------------------------------


def walmart_date(value: datetime) -> str:
    """A timezone-aware instant as Walmart's ISO form, UTC with milliseconds (``...T10:30:15.000Z``)."""
    if value.tzinfo is None:
        raise ValueError("Walmart dates must be timezone-aware")
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def walmart_errors(body: str) -> list[JSON]:
    """The ``errors.error`` list of a Walmart gateway error body (empty if it is not one)."""
    try:
        errors = json.loads(body)["errors"]["error"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return []
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def _reason(body: str) -> str:
    errors = walmart_errors(body)
    if not errors:
        return body[:200]
    return "; ".join(
        f"{e.get('code', 'ERROR')}: {e.get('description') or e.get('info') or ''}" for e in errors
    )


def retry_after_from(headers: Mapping[str, str], now_s: float) -> float | None:
    """Seconds until ``x-next-replenish-time`` (epoch ms), else ``Retry-After``; None if neither."""
    for name in REPLENISH_HEADERS:
        raw = headers.get(name)
        if raw:
            try:
                return max(0.0, int(raw) / 1000 - now_s)
            except ValueError:
                continue
    return parse_retry_after(headers.get("Retry-After"))


def walmart_operation(method: str, url: str | URL) -> str | None:
    """The budget (connectors.ratelimit.WALMART_PLANS) a call draws on; None: not limited."""
    path = URL(str(url)).path.rstrip("/")
    if path.startswith(RELEASED_PATH):
        return "released"
    if path.startswith(ORDERS_PATH):
        for action in ("acknowledge", "cancel", "shipping", "refund"):
            if path.endswith(f"/{action}"):
                return action
        return "orders"
    if path.startswith("/v3/inventory"):
        return "inventory"
    if path.startswith("/v3/feeds"):
        return "feeds" if method.upper() == "POST" else "feed_status"
    return None  # the token call


def walmart_budgets(settings: WalmartSettings) -> Budgets:
    """Walmart's budgets: WALMART_PLANS with the walmart_* budget settings, then any
    ``rate_limits`` overrides; shared by the poller and the outbound connector."""
    plans = dict(WALMART_PLANS)
    plans["acknowledge"] = (settings.walmart_acknowledge_rate_per_s,
                            settings.walmart_acknowledge_burst)
    plans["inventory"] = (settings.walmart_inventory_rate_per_s, settings.walmart_inventory_burst)
    plans["feeds"] = (settings.walmart_feeds_per_hour / 3600,
                      max(1, int(settings.walmart_feeds_per_hour)))
    return budgets_for(settings, "walmart", plans)


def error_for_status(
    status: int, body: str, headers: Mapping[str, str], what: str, now_s: float
) -> SyncError:
    """The sync error an unsuccessful Walmart answer means."""
    clipped = body[:MAX_ERROR_BODY]
    message = f"Walmart {what}: HTTP {status} {_reason(clipped)}"
    if status == 429:
        retry_after = retry_after_from(headers, now_s)
        return RateLimitedError(message, status=status, body=clipped, retry_after=retry_after)
    if status >= 500:
        retry_after = parse_retry_after(headers.get("Retry-After"))
        return RetryableError(message, status=status, body=clipped, retry_after=retry_after)
    return PermanentError(message, status=status, body=clipped)


def is_empty_list(status: int, body: str) -> bool:
    return status == 404 and any(e.get("code") == EMPTY_LIST_CODE for e in walmart_errors(body))


@dataclass(frozen=True)
class OrdersPage:
    """One page of a list call; ``next_cursor`` is Walmart's query string for the next one."""

    orders: list[JSON]
    total_count: int | None
    next_cursor: str | None


def parse_page(payload: Any, what: str) -> OrdersPage:
    try:
        listing = payload["list"]
        orders = listing.get("elements", {}).get("order", [])
        meta = listing.get("meta", {})
    except (KeyError, TypeError, AttributeError):
        raise DecodeError(f"Walmart {what}: answer has no list") from None
    if not isinstance(orders, list) or not all(isinstance(o, dict) for o in orders):
        raise DecodeError(f"Walmart {what}: list.elements.order is not a list of orders")
    cursor = meta.get("nextCursor") or None
    return OrdersPage(orders, meta.get("totalCount"), cursor if isinstance(cursor, str) else None)


@dataclass
class _Token:
    value: str
    refresh_at: float  # monotonic


# --- the client -------------------------------------------------------------------------------


class WalmartOrdersClient:
    """Async Walmart Orders v3 client owning one lazily created aiohttp session."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        svc_name: str = "Walmart Marketplace",
        timeout_s: float = 10.0,
        channel_type: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        budgets: Budgets | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.budgets = budgets or Budgets("walmart", WALMART_PLANS)
        self.svc_name = svc_name
        self._basic = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        self._channel_type = channel_type
        self._clock = clock
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._token: _Token | None = None
        self.tokens_fetched = 0

    # --- plumbing ------------------------------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    def _headers(self) -> dict[str, str]:
        headers = {
            "WM_QOS.CORRELATION_ID": str(uuid.uuid4()),
            "WM_SVC.NAME": self.svc_name,
            "Accept": "application/json",
        }
        if self._channel_type:
            headers["WM_CONSUMER.CHANNEL.TYPE"] = self._channel_type
        return headers

    async def _request(
        self, method: str, url: str | URL, what: str, *, paid: bool = False, **kwargs: Any
    ) -> tuple[int, str, Mapping[str, str]]:
        """One HTTP exchange within its operation's budget (``paid``: the caller already took
        the slot); network failures become RetryableError here."""
        operation = walmart_operation(method, url)
        if operation is not None and not paid:
            await self.budgets.acquire(operation)
        try:
            async with self._client().request(method, url, **kwargs) as resp:
                status, text, headers = resp.status, await resp.text(errors="replace"), resp.headers
        except TimeoutError as exc:
            raise RetryableError(f"Walmart {what}: timed out ({exc!r})") from exc
        except aiohttp.ClientError as exc:
            raise RetryableError(f"Walmart {what}: {type(exc).__name__}: {exc}") from exc
        if operation is not None:
            await self._observe(operation, status, headers)
        return status, text, headers

    async def _observe(self, operation: str, status: int, headers: Mapping[str, str]) -> None:
        """A 429 pauses the operation until Walmart's replenish time (every worker); so does a
        success that left ``x-current-token-count`` at 0."""
        if status == 429:
            await self.budgets.throttled(operation, retry_after_from(headers, time.time()))
        elif headers.get("x-current-token-count", "").strip() == "0":
            wait = retry_after_from(headers, time.time())
            if wait:
                await self.budgets.pause(operation, wait)

    def _fail(self, status: int, body: str, headers: Mapping[str, str], what: str) -> SyncError:
        return error_for_status(status, body, headers, what, time.time())

    # --- token -----------------------------------------------------------------------------

    async def _fetch_token(self) -> _Token:
        what = "token"
        headers = {**self._headers(), "Authorization": f"Basic {self._basic}"}
        form = {"grant_type": "client_credentials"}
        status, body, resp_headers = await self._request(
            "POST", f"{self.base_url}/v3/token", what, data=form, headers=headers
        )
        if status != 200:
            raise self._fail(status, body, resp_headers, what)
        payload = _json(body, what)
        token, expires_in = payload.get("access_token"), payload.get("expires_in", 900)
        if not isinstance(token, str) or not token or not isinstance(expires_in, int | float):
            raise DecodeError(f"Walmart {what}: answer has no access_token/expires_in", body=body[:200])
        self.tokens_fetched += 1
        margin = min(60.0, expires_in / 10)  # refresh a minute early (less for short-lived tokens)
        return _Token(token, self._clock() + expires_in - margin)

    async def _access_token(self) -> str:
        if self._token is None or self._clock() >= self._token.refresh_at:
            self._token = await self._fetch_token()
        return self._token.value

    async def _send(self, method: str, url: str | URL, what: str) -> tuple[int, str, Mapping[str, str]]:
        headers = {**self._headers(), "WM_SEC.ACCESS_TOKEN": await self._access_token()}
        return await self._request(method, url, what, headers=headers)

    async def _call(self, method: str, url: str | URL, what: str) -> tuple[int, str, Mapping[str, str]]:
        """An authenticated call; a 401 drops the cached token and tries once more with a new one."""
        status, body, headers = await self._send(method, url, what)
        if status == 401:
            self._token = None
            status, body, headers = await self._send(method, url, what)
        return status, body, headers

    async def _json_call(self, method: str, url: str | URL, what: str) -> JSON:
        status, body, headers = await self._call(method, url, what)
        if status != 200:
            raise self._fail(status, body, headers, what)
        return _json(body, what)

    # --- orders ------------------------------------------------------------------------------

    async def list_page(
        self, path: str, what: str, *, params: Mapping[str, str] | None = None, cursor: str | None = None
    ) -> OrdersPage:
        """One page of ``path``: the first (``params``) or the one ``cursor`` points to."""
        query = cursor if cursor is not None else "?" + urlencode(dict(params or {}))
        url = URL(f"{self.base_url}{path}{query}", encoded=True)  # the cursor goes verbatim
        status, body, headers = await self._call("GET", url, what)
        if is_empty_list(status, body):
            return OrdersPage([], 0, None)
        if status != 200:
            raise self._fail(status, body, headers, what)
        return parse_page(_json(body, what), what)

    async def _iterate(self, path: str, what: str, params: Mapping[str, str]) -> AsyncIterator[JSON]:
        """Every order of every page, each purchase order once even if pages overlap."""
        seen: set[str] = set()
        page = await self.list_page(path, what, params=params)
        while True:
            for order in page.orders:
                po = str(order.get("purchaseOrderId"))
                if po not in seen:
                    seen.add(po)
                    yield order
            if not page.next_cursor:
                return
            page = await self.list_page(path, what, cursor=page.next_cursor)

    def released_orders(self, created_start: datetime, limit: int = 100) -> AsyncIterator[JSON]:
        """Released purchase orders (lines in Created) created at or after ``created_start``."""
        params = {"createdStartDate": walmart_date(created_start), "limit": str(limit),
                  **REPLACEMENT_INFO}
        return self._iterate(RELEASED_PATH, "released orders", params)

    def orders_modified_since(
        self, modified_start: datetime, *, created_start: datetime | None = None, limit: int = 100,
        status: str | None = None,
    ) -> AsyncIterator[JSON]:
        """All purchase orders modified at or after ``modified_start`` (status updates), or only
        those with a line in ``status`` (e.g. Cancelled).

        Walmart only searches orders created after ``createdStartDate``, which defaults to seven days
        ago; pass ``created_start`` to look further back (at most 180 days).
        """
        params = {"lastModifiedStartDate": walmart_date(modified_start), "limit": str(limit),
                  **REPLACEMENT_INFO}
        if created_start is not None:
            params["createdStartDate"] = walmart_date(created_start)
        if status is not None:
            params["status"] = status
        return self._iterate(ORDERS_PATH, "orders", params)

    async def acknowledge(self, purchase_order_id: str) -> JSON:
        """Acknowledge the purchase order; returns the order Walmart answers with."""
        what = f"acknowledge {purchase_order_id}"
        url = f"{self.base_url}{ORDERS_PATH}/{quote(purchase_order_id, safe='')}/acknowledge"
        return _order(await self._json_call("POST", url, what), what)

    async def get_order(self, purchase_order_id: str) -> JSON:
        what = f"get order {purchase_order_id}"
        url = f"{self.base_url}{ORDERS_PATH}/{quote(purchase_order_id, safe='')}"
        return _order(await self._json_call("GET", url, what), what)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _json(body: str, what: str) -> JSON:
    try:
        payload = json.loads(body)
    except json.JSONDecodeError:
        raise DecodeError(f"Walmart {what}: answer is not JSON", body=body[:MAX_ERROR_BODY]) from None
    if not isinstance(payload, dict):
        raise DecodeError(f"Walmart {what}: answer is not a JSON object", body=body[:MAX_ERROR_BODY])
    return payload


def _order(payload: JSON, what: str) -> JSON:
    order = payload.get("order")
    if not isinstance(order, dict):
        raise DecodeError(f"Walmart {what}: answer has no order object")
    return order


__all__ = [
    "OrdersPage",
    "WalmartOrdersClient",
    "error_for_status",
    "is_empty_list",
    "parse_page",
    "retry_after_from",
    "walmart_date",
    "walmart_errors",
]


class WalmartSource:
    """The Walmart channel as an OrderSource: released orders in, acknowledged once on Kafka;
    cancelled orders in as they change.

    Walmart keeps an order in the released list until it is acknowledged, so the list itself is
    the cursor: every poll reads released orders created in the last ``lookback`` and the poller
    acknowledges them only after they are on Kafka. A crash before the acknowledgement lists the
    same orders again (same order keys, deduplicated downstream); none is lost.

    Cancellations (the buyer's, Walmart's, and ours echoed back) reach us through
    ``GET /v3/orders?lastModifiedStartDate=<cursor>&status=Cancelled``: every purchase order with
    a Cancelled line modified since the cursor, delivered as it is now (the mapper makes a fully
    cancelled order ``cancelled``; a partly cancelled one keeps its other lines' status), with
    ``delivery_id`` ``<po>@cancelled@<latest statusDate>``. The cursor is that instant (Walmart's
    ISO form): the time the poll started, less ``modified_overlap`` for clock skew, so orders at
    the edge come twice rather than never; no cursor yet starts ``lookback`` ago. The modified
    list is read to its end (it is sorted by order date, not by modification, so a part of it
    could not move the cursor safely); the released list is still capped at ``max_per_poll``.
    The poller stores the cursor only after the orders are on Kafka, so a crash repeats them.
    """

    channel = "walmart"

    def __init__(self, client: WalmartOrdersClient, *, lookback: timedelta, max_per_poll: int,
                 modified_overlap: timedelta = timedelta(seconds=5), poll_cancelled: bool = True):
        self.client = client
        self.modified_overlap = modified_overlap
        self.poll_cancelled = poll_cancelled
        self.lookback = lookback
        self.max_per_poll = max_per_poll

    @classmethod
    def from_settings(cls, settings: WalmartSettings) -> WalmartSource | None:
        if settings.walmart_base_url is None:
            return None
        client = WalmartOrdersClient(
            str(settings.walmart_base_url), settings.walmart_client_id,
            settings.walmart_client_secret.get_secret_value(), svc_name=settings.walmart_svc_name,
            budgets=walmart_budgets(settings),
        )
        return cls(client, lookback=timedelta(days=settings.walmart_lookback_days),
                   max_per_poll=settings.poll_max_orders)

    async def poll(self, cursor: str | None) -> PollResult:
        started = datetime.now(UTC)
        created_start = started - self.lookback
        orders: list[PolledOrder] = []
        async for order in self.client.released_orders(created_start):
            po = str(order["purchaseOrderId"])
            orders.append(PolledOrder(marketplace_order_id=po, body=orjson.dumps(order).decode(),
                                      delivery_id=f"{po}@released"))
            if len(orders) >= self.max_per_poll:
                break
        if not self.poll_cancelled:
            return PollResult(orders=orders, cursor=None)
        since = _cursor_time(cursor) or created_start
        async for order in self.client.orders_modified_since(since, created_start=created_start,
                                                             status="Cancelled"):
            po = str(order["purchaseOrderId"])
            orders.append(PolledOrder(marketplace_order_id=po, body=orjson.dumps(order).decode(),
                                      delivery_id=f"{po}@cancelled@{_latest_status_date(order)}"))
        return PollResult(orders=orders, cursor=walmart_date(started - self.modified_overlap))

    async def after_persist(self, orders: Sequence[PolledOrder]) -> None:
        for order in (o for o in orders if o.delivery_id.endswith("@released")):
            await self.client.acknowledge(order.marketplace_order_id)

    async def close(self) -> None:
        await self.client.close()


def _cursor_time(cursor: str | None) -> datetime | None:
    """The instant a WalmartSource cursor names; None for no cursor (or an unreadable one)."""
    if not cursor:
        return None
    try:
        parsed = datetime.fromisoformat(cursor.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _latest_status_date(order: JSON) -> int:
    lines = (order.get("orderLines") or {}).get("orderLine") or []
    dates = [int(ln["statusDate"]) for ln in lines if isinstance(ln.get("statusDate"), int)]
    return max(dates, default=0)
