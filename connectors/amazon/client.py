"""Amazon Selling Partner API, Orders v0: the client an Amazon order poller reads orders through.

Speaks ``GET /orders/v0/orders`` (``getOrders``) and ``GET /orders/v0/orders/{orderId}/orderItems``
(``getOrderItems``) against any SP-API endpoint, e.g. ``https://sellingpartnerapi-na.amazon.com``;
which endpoint (real or simulated) is only a setting.

Authentication: every request carries ``x-amz-access-token`` with a Login with Amazon (LWA) access
token, and nothing else. Older SP-API set-ups also signed each request with AWS Signature V4 (IAM
user or role); SP-API stopped requiring that in October 2023, so no SigV4 signing is done here.
Getting and refreshing the LWA token (``POST https://api.amazon.com/auth/o2/token`` with the
refresh token and the app's client id and secret; tokens live an hour) is out of scope: the token is
a setting, and whoever owns it replaces the client (or its token) when it expires.

HTTP and network failures become the sync error hierarchy here, at the edge:

    200 with a payload             -> OrdersPage / list of order items
    200 without one, or not JSON   -> DecodeError
    429 QuotaExceeded              -> RateLimitedError, retry_after = 1 / x-amzn-RateLimit-Limit
                                      (which the spec does not send on a 429), else Retry-After,
                                      else 1 / the rate the operation's last answer reported,
                                      else None (the budget then uses the published plan's)
    5xx, timeouts, connection      -> RetryableError (retry_after from Retry-After if sent)
    400, 403, 404 and other 4xx    -> PermanentError "code: message (details)" from the ErrorList

Every call first waits for its operation's slot in ``budgets`` (connectors.ratelimit.Budgets:
the usage plans of the spec, shared by every worker through Redis when configured). Every
answer's ``x-amzn-RateLimit-Limit`` (90 % of it, with one call less of burst) becomes that
operation's budget (and is kept in ``rate_limits``), and a 429 stops every worker calling that
operation for one plan interval (``1 / rate``, the rate Amazon last reported, else the published
plan's), after which one call goes out: a 429 costs at most one plan interval, and Amazon rarely
has to say 429 twice.

Long module: the SP-API Orders client (paging, error and rate-signal mapping) and the poll source
built on it are read together; the outbound side and the mapper have their own modules.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from retail_sync.connectors.amazon.mapper import AWAITING_PAYMENT
from retail_sync.connectors.amazon.plan import AMAZON_PLANS
from retail_sync.connectors.amazon.settings import AmazonSettings
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

JSON = dict[str, Any]
GET_ORDERS, GET_ORDER_ITEMS = "getOrders", "getOrderItems"
ORDERS_PATH = "/orders/v0/orders"
MAX_ERROR_BODY = 4 * 1024
REPORTED_RATE_SHARE = 0.9  # of x-amzn-RateLimit-Limit that our budget uses
USER_AGENT = "retail-sync/0.1 (Language=Python/3.11)"


@dataclass(frozen=True, slots=True)
class OrdersPage:
    """One getOrders page; ``last_updated_before`` is the upper bound Amazon applied (a cursor)."""

    orders: list[JSON]
    next_token: str | None
    last_updated_before: str | None
    created_before: str | None = None


# --- pure helpers -------------------------------------------------------------------------------


def amazon_time(value: datetime | str) -> str:
    """ISO 8601 in UTC as SP-API writes it (``2026-03-02T09:30:00Z``); strings pass unchanged."""
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: SP-API dates must be timezone-aware")
    text = value.astimezone(UTC).isoformat(timespec="seconds" if not value.microsecond else "milliseconds")
    return text.replace("+00:00", "Z")


def rate_limit(headers: Mapping[str, str]) -> float | None:
    """``x-amzn-RateLimit-Limit`` (requests per second) if present and positive."""
    try:
        rate = float(headers.get("x-amzn-RateLimit-Limit", ""))
    except ValueError:
        return None
    return rate if rate > 0 else None


def amazon_reason(body: str) -> str:
    """``code: message (details)`` of the first entry of an SP-API ErrorList, else the raw start."""
    try:
        first = json.loads(body)["errors"][0]
        reason = f"{first['code']}: {first['message']}"
    except (json.JSONDecodeError, KeyError, IndexError, TypeError):
        return body[:200]
    return f"{reason} ({first['details']})" if first.get("details") else reason


def error_for_status(status: int, body: str, headers: Mapping[str, str], what: str,
                     known_rate: float | None = None) -> SyncError:
    """The sync error an unsuccessful SP-API answer means; ``known_rate``: the operation's rate
    as its last answer reported (a 429 carries no rate header in the spec)."""
    clipped = body[:MAX_ERROR_BODY]
    request_id = headers.get("x-amzn-RequestId")
    message = f"Amazon {what}: HTTP {status} {amazon_reason(clipped)}"
    message += f" [x-amzn-RequestId {request_id}]" if request_id else ""
    if status == 429:
        retry_after = throttle_pause(headers, known_rate)
        return RateLimitedError(message, status=status, body=clipped, retry_after=retry_after)
    if status >= 500:
        retry_after = parse_retry_after(headers.get("Retry-After"))
        return RetryableError(message, status=status, body=clipped, retry_after=retry_after)
    return PermanentError(message, status=status, body=clipped)


def throttle_pause(headers: Mapping[str, str], known_rate: float | None = None) -> float | None:
    """How long a 429 stops the operation: one interval of the rate the answer names, else its
    Retry-After, else one interval of ``known_rate``, else None (unknown)."""
    rate = rate_limit(headers)
    if rate:
        return 1 / rate
    retry_after = parse_retry_after(headers.get("Retry-After"))
    if retry_after is not None and retry_after > 0:
        return retry_after
    return 1 / known_rate if known_rate else None


def payload_of(body: str, what: str) -> JSON:
    """The ``payload`` object of a successful answer, or DecodeError."""
    try:
        payload = json.loads(body)["payload"]
    except (json.JSONDecodeError, KeyError, TypeError):
        payload = None
    if not isinstance(payload, dict):
        raise DecodeError(f"Amazon {what}: HTTP 200 without a payload object", body=body[:MAX_ERROR_BODY])
    return payload


def _list(payload: JSON, key: str, what: str) -> list[JSON]:
    value = payload.get(key)
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise DecodeError(f"Amazon {what}: payload.{key} is not a list of objects")
    return value


def orders_query(
    marketplace_ids: Sequence[str],
    last_updated_after: datetime | str | None,
    created_after: datetime | str | None,
    next_token: str | None,
    max_results: int,
) -> dict[str, str]:
    """getOrders query parameters; exactly one of the two *After dates unless paging on."""
    if not marketplace_ids:
        raise ValueError("at least one marketplace id is required")
    if not 1 <= max_results <= 100:
        raise ValueError(f"max_results must be 1-100, got {max_results}")
    if next_token is None and (last_updated_after is None) == (created_after is None):
        raise ValueError("pass exactly one of last_updated_after or created_after")
    params = {"MarketplaceIds": ",".join(marketplace_ids), "MaxResultsPerPage": str(max_results)}
    if last_updated_after is not None:
        params["LastUpdatedAfter"] = amazon_time(last_updated_after)
    if created_after is not None:
        params["CreatedAfter"] = amazon_time(created_after)
    if next_token is not None:
        params["NextToken"] = next_token
    return params


# --- the client ---------------------------------------------------------------------------------


class AmazonOrdersClient:
    """getOrders / getOrderItems over one lazily created aiohttp session."""

    def __init__(self, base_url: str, access_token: str, *, timeout_s: float = 10.0,
                 budgets: Budgets | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.budgets = budgets or Budgets("amazon", AMAZON_PLANS)
        self._headers = {
            "x-amz-access-token": access_token,
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self.rate_limits: dict[str, float] = {}  # operation -> the rate Amazon last reported

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self._session

    async def _get(self, path: str, params: Mapping[str, str], operation: str, what: str) -> JSON:
        """One GET within the operation's budget; returns the payload or raises a SyncError."""
        await self.budgets.acquire(operation)
        try:
            async with self._client().get(f"{self.base_url}{path}", params=params) as resp:
                status, body, headers = resp.status, await resp.text(errors="replace"), resp.headers
        except TimeoutError as exc:  # asyncio.TimeoutError is TimeoutError on 3.11
            raise RetryableError(f"Amazon {what}: timed out ({exc!r})") from exc
        except aiohttp.ClientError as exc:
            raise RetryableError(f"Amazon {what}: {type(exc).__name__}: {exc}") from exc
        await observe(self.budgets, self.rate_limits, operation, status, headers)
        if status != 200:
            raise error_for_status(status, body, headers, what, self.rate_limits.get(operation))
        return payload_of(body, what)

    async def get_orders(
        self,
        *,
        marketplace_ids: Sequence[str],
        last_updated_after: datetime | str | None = None,
        created_after: datetime | str | None = None,
        next_token: str | None = None,
        max_results: int = 100,
    ) -> OrdersPage:
        """One page of orders (sorted by LastUpdateDate); follow ``next_token`` for the rest."""
        params = orders_query(marketplace_ids, last_updated_after, created_after, next_token, max_results)
        payload = await self._get(ORDERS_PATH, params, GET_ORDERS, GET_ORDERS)
        return OrdersPage(
            orders=_list(payload, "Orders", GET_ORDERS),
            next_token=payload.get("NextToken") or None,
            last_updated_before=payload.get("LastUpdatedBefore"),
            created_before=payload.get("CreatedBefore"),
        )

    async def iter_orders_since(
        self,
        *,
        marketplace_ids: Sequence[str],
        last_updated_after: datetime | str | None = None,
        created_after: datetime | str | None = None,
        max_results: int = 100,
    ) -> AsyncIterator[OrdersPage]:
        """Every page of one pass, first to last (the same filters go with each NextToken)."""
        token: str | None = None
        while True:
            page = await self.get_orders(
                marketplace_ids=marketplace_ids,
                last_updated_after=last_updated_after,
                created_after=created_after,
                next_token=token,
                max_results=max_results,
            )
            yield page
            if page.next_token is None:
                return
            token = page.next_token

    async def get_order_items(self, order_id: str) -> list[JSON]:
        """All items of ``order_id``, following NextToken (each page is one getOrderItems call)."""
        what = f"{GET_ORDER_ITEMS} {order_id}"
        path = f"{ORDERS_PATH}/{quote(order_id, safe='')}/orderItems"
        items: list[JSON] = []
        params: dict[str, str] = {}
        while True:
            payload = await self._get(path, params, GET_ORDER_ITEMS, what)
            items += _list(payload, "OrderItems", what)
            token = payload.get("NextToken")
            if not token:
                return items
            params = {"NextToken": token}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


__all__ = [
    "AmazonOrdersClient",
    "OrdersPage",
    "amazon_reason",
    "amazon_time",
    "error_for_status",
    "orders_query",
    "rate_limit",
]


@dataclass
class PollMark:
    """Where the next Amazon pass starts: ``LastUpdatedAfter`` and the orders already read that
    carry exactly that ``LastUpdateDate``. Many orders share one timestamp; without ``done`` a pass
    cut short by throttling would restart at the same orders and never get past them."""

    after: str
    done: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, cursor: str | None) -> PollMark | None:
        if not cursor:
            return None
        if not cursor.startswith("{"):  # a bare time, as stored by earlier versions
            return cls(cursor)
        data = json.loads(cursor)
        return cls(data["after"], list(data.get("done", [])))

    def dump(self) -> str:
        return json.dumps({"after": self.after, "done": self.done})

    def covers(self, order: JSON) -> bool:
        return order.get("LastUpdateDate") == self.after and order.get("AmazonOrderId") in self.done

    def advance(self, order: JSON) -> None:
        updated, order_id = order.get("LastUpdateDate"), order.get("AmazonOrderId")
        if not updated or not order_id:
            return
        if updated != self.after:
            self.after, self.done = updated, []
        self.done.append(order_id)


async def observe(budgets: Budgets, rate_limits: dict[str, float], operation: str, status: int,
                  headers: Mapping[str, str]) -> None:
    """Follow what an answer said about ``operation``'s budget: the usage plan in
    ``x-amzn-RateLimit-Limit`` (kept in ``rate_limits`` too) and, on a 429, a pause of one plan
    interval for every worker (``throttle_pause``)."""
    rate = rate_limit(headers)
    if rate is not None:
        rate_limits[operation] = rate
        # 90 % of it and one call less of burst: Amazon's figures are the limit itself, and
        # calls leave (and arrive) a little later than their slot was granted, bunched up
        plan = budgets.plans.get(operation)
        burst = max(1, plan[1] - 1) if plan else None
        await budgets.reported_rate(operation, rate * REPORTED_RATE_SHARE, burst)
    if status == 429:
        await budgets.throttled(operation, throttle_pause(headers, rate_limits.get(operation)))


@dataclass
class _HeldPass:
    """The rest of a pass cut short (a 429 on getOrderItems, ``max_per_poll``): the orders listed
    but not read yet and where the listing goes on, kept for the poll that starts at ``cursor``
    (the cursor the short pass handed back). getOrders allows one call a minute, so listing the
    same orders again would cost a plan interval per throttle."""

    cursor: str
    orders: deque[JSON]
    end: str | None
    token: str | None


class AmazonSource:
    """The Amazon channel as an OrderSource: orders updated since the cursor, with their items.

    The cursor is a ``LastUpdatedAfter`` time. A complete pass stores the response's
    ``LastUpdatedBefore`` (Amazon's recommended next start); a pass cut short (``max_per_poll``
    reached, or throttled on getOrderItems) keeps the orders it read (they are returned and go
    to Kafka), stores the newest ``LastUpdateDate`` it fully read and holds the rest of its
    listing in memory: the next poll from that cursor goes on with getOrderItems for the orders
    not read yet, without a new getOrders call and without reading any order twice.
    Both bounds are inclusive, so an overlap may bring an order twice; it has the same order key.
    Pending orders are skipped: Amazon withholds their amounts and they come back when updated.
    """

    channel = "amazon"

    def __init__(self, client: AmazonOrdersClient, *, marketplace_ids: Sequence[str],
                 lookback: timedelta, max_per_poll: int) -> None:
        self.client = client
        self.marketplace_ids = list(marketplace_ids)
        self.lookback = lookback
        self.max_per_poll = max_per_poll
        self._held: _HeldPass | None = None

    @classmethod
    def from_settings(cls, settings: AmazonSettings) -> AmazonSource | None:
        if settings.amazon_base_url is None:
            return None
        client = AmazonOrdersClient(str(settings.amazon_base_url),
                                    settings.amazon_access_token.get_secret_value(),
                                    budgets=budgets_for(settings, "amazon", AMAZON_PLANS))
        return cls(client, marketplace_ids=settings.amazon_marketplace_ids.split(","),
                   lookback=timedelta(hours=settings.amazon_lookback_hours),
                   max_per_poll=settings.poll_max_orders)

    async def poll(self, cursor: str | None) -> PollResult:
        mark = PollMark.load(cursor) or PollMark(amazon_time(datetime.now(UTC) - self.lookback))
        polled: list[PolledOrder] = []
        read = PollMark(mark.after, list(mark.done))
        held, self._held = self._held, None
        if held is not None and held.cursor == cursor:
            queue, end, token, more = held.orders, held.end, held.token, held.token is not None
        else:
            queue, end, token, more = deque(), None, None, True
        try:
            while queue or more:
                if not queue:
                    page = await self._list(mark.after, token)
                    queue.extend(page.orders)
                    end, token = page.last_updated_before or end, page.next_token
                    more = token is not None
                    continue
                order = queue[0]
                if len(polled) >= self.max_per_poll:
                    self._held = _HeldPass(read.dump(), queue, end, token)
                    return PollResult(orders=polled, cursor=read.dump())
                if not mark.covers(order) and order.get("OrderStatus") not in AWAITING_PAYMENT:
                    polled.append(await self._with_items(order))
                if not mark.covers(order):
                    read.advance(order)  # read in an earlier, cut-short pass otherwise
                queue.popleft()
        except RateLimitedError as exc:
            if not polled and not queue and token is None:
                raise  # getOrders itself said no before anything was listed
            self._held = _HeldPass(read.dump(), queue, end, token)
            return PollResult(orders=polled, cursor=read.dump(), pause_s=exc.retry_after)
        if not end:
            return PollResult(orders=polled, cursor=read.dump())
        # Amazon's bounds are inclusive and its times whole seconds: the orders read at the new
        # cursor's second are remembered, so the next poll does not spend getOrderItems on them
        done = read.done if read.after == end else []
        return PollResult(orders=polled, cursor=PollMark(end, list(done)).dump())

    async def _list(self, after: str, token: str | None) -> OrdersPage:
        """One getOrders page; a NextToken kept from an earlier poll that Amazon no longer takes
        (400) starts the listing again from ``after``."""
        try:
            return await self.client.get_orders(
                marketplace_ids=self.marketplace_ids, last_updated_after=after, next_token=token)
        except PermanentError:
            if token is None:
                raise
            return await self.client.get_orders(
                marketplace_ids=self.marketplace_ids, last_updated_after=after)

    async def _with_items(self, order: JSON) -> PolledOrder:
        order_id = str(order["AmazonOrderId"])
        items = await self.client.get_order_items(order_id)
        body = orjson.dumps({"order": order, "items": items}).decode()
        return PolledOrder(marketplace_order_id=order_id, body=body,
                           delivery_id=f"{order_id}@{order.get('LastUpdateDate')}")

    async def after_persist(self, orders: Sequence[PolledOrder]) -> None:
        return None

    async def close(self) -> None:
        await self.client.close()
