"""The plugin contract: what one external system hands the engine, as one object.

A marketplace is one ``ChannelPlugin`` exported as ``plugin`` from its package
(``connectors/<system>/__init__.py``): its mapper, its settings model, how orders come in (a
poll ``source`` or webhook ``inbound`` hooks), how the engine talks back (``outbound``), the rate
plans its clients are paced by, its status table and its reconciliation reader. The composition
root (``retail_sync/channels.py``) lists the built-in ones; an external one is named by the
setting ``RETAIL_SYNC_CHANNEL_PLUGINS`` (``module:attribute``) or by an entry point in the group
``retail_sync.channels``. Nothing in the engine names a marketplace.

``ConnectorSettings`` is the base of every connector's settings model: the few shared values
every connector reads (app id, Redis, rate-limit overrides, poll size). Each system's settings
(``connectors/<system>/settings.py``) extend it with the same field names the central Settings
has, so the central Settings (which inherits them all) is one of each.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from retail_sync.connectors.contracts import (
    ChannelOutbound,
    ErpConnector,
    ErpOrderFeed,
    OrderSource,
    StockFeed,
    WmsConnector,
)
from retail_sync.streams.models import Order

if TYPE_CHECKING:
    from retail_sync.connectors.ratelimit import Plan
    from retail_sync.connectors.reconcile_types import ChannelRead
    from retail_sync.streams.status import StatusTable


class ConnectorSettings(BaseModel):
    """Values every connector may read, whatever its system (a plain pydantic model: the central
    Settings, a BaseSettings, inherits it; an external plugin's model is built from the
    environment by the composition root)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    app_id: str = Field(
        "retail-sync",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$",
        description="Faust app id; also the consumer group and the prefix of every topic.",
    )
    poll_max_orders: int = Field(200, ge=1, le=10_000, description="Orders taken per poll at most.")
    rate_limits: dict[str, tuple[float, int]] = Field(
        default_factory=dict, description='Client-side budgets per "channel:operation" as '
        '[calls per second, burst], overriding the published plans of each connector, '
        'e.g. {"amazon:getOrderItems": [1, 30], "shopify:admin": [4, 78]}.')
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_max_connections: int = Field(
        64, ge=1, le=10_000, description="Connections each Redis client of a worker (webhook "
        "dedupe, each shared rate limit) may open; a call that finds them all busy waits for one.")
    redis_pool_timeout_s: float = Field(
        2.0, gt=0, le=30, description="How long a Redis call waits for a free pooled connection "
        "before it counts as a Redis failure (dedupe then falls back to this process, counted in "
        "retail_sync_dedupe_fallback_total).")
    redis_timeout_s: float = Field(
        0.5, gt=0, le=30, description="Connect and per-call timeout of Redis calls (no retries).")


#: parsed JSON of one delivery -> the canonical Order (raises streams.errors.MappingError)
Mapper = Callable[[Any], Order]


def _always(settings: Any) -> bool:
    return True


@dataclass(frozen=True)
class ReconcileReader:
    """A marketplace's reconciliation reader: ``read(settings, mapper, since)`` reads its orders
    created since ``since`` (connectors/reconcile_types.ChannelRead), through its public API
    only; ``configured(settings)`` says whether these settings let it (e.g. a base URL is set);
    ``status`` gives a mapped order's canonical status where the mapper keeps the channel's own
    words."""

    read: Callable[[Any, Mapper, datetime], Awaitable[ChannelRead]]
    configured: Callable[[Any], bool] = _always
    #: the canonical status of one of its mapped orders (None: the mapper's canonical word,
    #: ``reconcile_types.marketplace_status``)
    status: Callable[[Order], str] | None = None


@dataclass(frozen=True)
class WebhookDelivery:
    """What the channel's webhook headers say about one delivery (after its signature held)."""

    delivery_id: str | None  # stable across the sender's retries: the dedupe key
    event_id: str | None = None
    shop_domain: str | None = None
    api_version: str | None = None
    triggered_at: str | None = None


@dataclass(frozen=True)
class InboundHooks:
    """The channel-specific parts of receiving a push (webhook) channel's deliveries.

    The engine's webhook route ``/webhooks/<channel>/{resource}/{event}`` reads the body, then asks
    these: ``verify`` the signature (``bad_signature`` 401 with ``signature_error`` otherwise),
    ``delivery`` for the ids in the headers (``bad_request`` 400 with ``delivery_id_error`` when
    there is no delivery id), whether the topic is in ``topics`` (404 otherwise); after dedupe
    and decoding it keys the raw record by ``order_key(payload, delivery_id)``. In the ingest
    agent a delivery whose topic is in ``topic_events`` is turned into its event by that
    function (payload, received_at) instead of the channel's order mapper."""

    verify: Callable[[bytes, Mapping[str, str], Any], bool]
    delivery: Callable[[Mapping[str, str]], WebhookDelivery]
    order_key: Callable[[Any, str], str]
    topics: frozenset[str] = frozenset()
    signature_error: str = "missing or invalid signature"
    delivery_id_error: str = "missing delivery id"
    topic_events: Mapping[str, Callable[[Any, datetime], Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class ChannelPlugin:
    """Everything the engine needs to know about one marketplace.

    ``mapper`` turns the parsed JSON of a delivery into a canonical Order (raising MappingError);
    ``source`` builds the poller's OrderSource from settings (None: not configured), or is None
    for push-only channels (webhooks, see ``inbound``); ``outbound`` builds its ChannelOutbound
    (None: not configured); ``plans`` are the published rate plans by operation (overridable by
    the ``rate_limits`` setting, "channel:operation"); ``status`` its status table (None: its
    mapper has none to show); ``reconcile`` its reconciliation reader; ``settings_model`` the
    pydantic model its factories read (a ConnectorSettings). A new marketplace is one package
    under connectors/ exporting one of these, and one registration.
    """

    channel: str
    mapper: Mapper
    source: Callable[[Any], OrderSource | None] | None = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    outbound: Callable[[Any], ChannelOutbound | None] | None = None
    settings_model: type[BaseModel] = ConnectorSettings
    plans: Mapping[str, Plan] = field(default_factory=dict)
    status: StatusTable | None = None
    reconcile: ReconcileReader | None = None
    inbound: InboundHooks | None = None
    #: a mapper built from the settings (e.g. a status table extended by a setting); None: ``mapper``
    configure: Callable[[Any], Mapper] | None = None


#: reads the ERP's sales orders of the reconciliation window (transaction date >= ``since``'s
#: day) as rows: ``name``, ``po_no`` (our order key), ``status``, ``docstatus`` (0 draft,
#: 1 submitted, 2 cancelled), ``grand_total``, ``per_delivered`` (0-100), ``currency``
ErpSalesOrderReader = Callable[[Any, datetime], Awaitable[list[dict[str, Any]]]]
#: counts the submitted credit notes per order key, for the given order keys only
ErpCreditNoteReader = Callable[[Any, Sequence[str]], Awaitable[Counter[str]]]


@dataclass(frozen=True)
class ErpPlugin:
    """Everything the engine needs to know about the ERP (one is configured at a time).

    Every factory takes the settings (an instance of ``settings_model``, or the central Settings
    which inherits the built-in ones): ``connector`` builds the ErpConnector the dispatcher posts
    through (it has ``close()``); ``stock_feed`` the StockFeed of the ERP's stock positions (None:
    no stock feed); ``order_feed`` the ErpOrderFeed of sales orders the ERP ended on its own
    (None: none); ``read_sales_orders`` and ``read_credit_notes`` are its reconciliation readers.
    ``startup_check`` (optional) is run once before the worker starts: it answers (level, line)
    pairs to log and whether to refuse to start. A second ERP is one package under connectors/
    exporting one of these, and one registration (``RETAIL_SYNC_ERP_PLUGIN=module:attribute`` or
    an entry point in the group ``retail_sync.erps``).
    """

    name: str
    connector: Callable[[Any], ErpConnector]
    stock_feed: Callable[[Any], StockFeed | None] | None = None
    order_feed: Callable[[Any], ErpOrderFeed | None] | None = None
    read_sales_orders: ErpSalesOrderReader | None = None
    read_credit_notes: ErpCreditNoteReader | None = None
    settings_model: type[BaseModel] = ConnectorSettings
    startup_check: Callable[[Any], tuple[list[tuple[str, str]], bool]] | None = None
    description: str = ""


@dataclass(frozen=True)
class WmsPlugin:
    """The warehouse: ``connector`` builds its WmsConnector from the settings (None: no warehouse
    configured, no fulfilment)."""

    name: str
    connector: Callable[[Any], WmsConnector | None]
    settings_model: type[BaseModel] = ConnectorSettings
    description: str = ""
