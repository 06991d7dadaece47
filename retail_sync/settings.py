"""Typed settings: every endpoint, secret and tuning knob, read from the environment.

All variables share the prefix ``RETAIL_SYNC_`` (e.g. ``RETAIL_SYNC_ERP_BASE_URL``).
The README lists them; ``retail-sync settings`` prints the effective values (secrets masked).

Long module: the worker's own settings (the connectors' are in their packages) and the checks
that tie several of them together; one class, so ``retail-sync settings`` and the README list
them in one place.
"""

from __future__ import annotations

from functools import cache, cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from retail_sync.connectors.amazon.settings import AmazonSettings
from retail_sync.connectors.erpnext.settings import ErpNextSettings
from retail_sync.connectors.regional.settings import RegionalSettings
from retail_sync.connectors.shopify.settings import ShopifySettings
from retail_sync.connectors.walmart.settings import WalmartSettings
from retail_sync.connectors.wms.settings import WmsSettings
from retail_sync.streams.rules.policies import (
    DEFAULT_INLINE_LINES,
    ChannelAllocation,
    EditPolicy,
    StockPolicy,
)

ENV_PREFIX = "RETAIL_SYNC_"


class Settings(ShopifySettings, AmazonSettings, WalmartSettings, RegionalSettings,
               ErpNextSettings, WmsSettings, BaseSettings):
    """Everything the worker, the simulators and the CLI need, in one frozen object."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    # app_id, poll_max_orders, rate_limits and the redis_* fields are ConnectorSettings'
    # (connectors/plugin.py), inherited through every connector's settings model

    # --- identity and Kafka -------------------------------------------------------------
    broker_url: str | None = Field(
        None,
        description="Kafka bootstrap URL, e.g. kafka://kafka:9092. Unset: `retail-sync worker` "
        "refuses to start unless the embedded broker is asked for (embedded_broker).",
    )
    embedded_broker: bool = Field(
        False,
        description="Let `retail-sync worker` without broker_url start an embedded in-memory "
        "broker (same as --embedded-broker): everything on it is lost when the worker stops. "
        "For trying things out only; demo, bench, chaos and the tests start their own.",
    )
    partitions: int = Field(4, ge=1, le=256, description="Partitions of every topic we create.")
    batch_max: int = Field(
        500, ge=1, le=1000, description="The order and stock agents take their input in batches "
        "of at most this many records (issue 16): sends are grouped per partition and go out at "
        "the end of a batch, before it is acknowledged.")
    intake_max_awaiting_stock: int = Field(
        500, ge=0, le=1_000_000, description="Orders a worker takes from orders-raw and waits "
        "for the stock answers of at most, counting the raw records it fetched and has not yet "
        "handled (agents/intake.py): at this many it fetches no more "
        "orders-raw until answers come, so a backlog is worked through a bounded number at a "
        "time (their states stay decoded in the table cache) instead of read in whole first. "
        "0: no limit.")
    consumer_max_poll_records: int = Field(
        500, ge=1, le=100_000, description="Records one fetch hands to the agents at most "
        "(Faust's broker_max_poll_records; its default has no limit: one fetch handed over up to "
        "1 MB per partition). The intake's hold (intake_max_awaiting_stock) is looked at before "
        "each fetch, so the orders taken past its limit are at most this many.")
    intake_expiry_s: float = Field(
        10.0, gt=0, le=3600, description="An order waiting longer than this for its stock "
        "answer no longer counts against intake_max_awaiting_stock (its answer may come to "
        "another worker): the intake slows, it never stops.")
    batch_within_s: float = Field(
        0.005, gt=0, le=1, description="How long a batch of the order and stock agents waits "
        "to fill before it is handled with what it has, while their input is a trickle (a "
        "record then waits at most this long per batched hop).")
    batch_within_max_s: float = Field(
        0.05, gt=0, le=1, description="The longest a batch waits to fill, while the worker is "
        "busy (agents/take.py): below 60 % of a core a batch waits batch_within_s, from 90 % "
        "this, in between in proportion. Larger batches cost fewer records and less CPU per "
        "order (issue 16; at 300 webhooks/s the worker's CPU per order fell ~7 %); 0.1 held "
        "a backlog's batches long enough to leave the worker idle (bench --only pipeline).")
    replication_factor: int = Field(1, ge=1, le=5)
    table_standby_replicas: int = Field(
        1, ge=0, le=5, description="Standby copies of each table partition that other workers "
        "keep up to date from the changelog, so a take-over after a crash starts warm.")
    broker_session_timeout_s: float = Field(10.0, gt=0)
    broker_rebalance_timeout_s: float = Field(6.0, gt=0)
    broker_heartbeat_interval_s: float = Field(1.0, gt=0)
    # Issue 16, measured (bench --only pipeline/latency, 1 worker, same session): 0.02 and
    # 0.05 save ~0.5-1 ms of the worker's ~9.5 ms CPU per order (within this machine's noise),
    # but a linger is waited at every hop when the rate is below a full batch: at 30 orders/s
    # p50 webhook -> ERP 68 ms (0.005), 146 ms (0.02), 235 ms (0.05); the budget is
    # p99 <= 250 ms. Kept at 5 ms: fewer produce requests must come from batching at the
    # source (one record per batch), not from waiting.
    producer_linger_s: float = Field(0.005, ge=0, le=1)
    loopback_bytes: int = Field(
        4 * 1024 * 1024, ge=0, le=1024 * 1024 * 1024, description="Bytes of the records "
        "a worker wrote on stock-events, order-events, erp-requests and wms-requests kept per "
        "topic kind with the object they encode, so that reading them back on this worker "
        "takes the object instead of decoding it again (streams/codecs.py Loopback; issue 16). "
        "Oldest dropped first, a record over half of it not kept (an ERP batch under a backlog is "
        "up to ~1 MB). Objects take ~8x their bytes; the ERP and warehouse requests are read by "
        "the worker that wrote them, stock commands and answers may be read by another, so a "
        "worker holds up to ~2 x 8 x this of records nobody takes. 0: off.")
    broker_commit_interval_s: float = Field(
        1.0, gt=0, le=60, description="How often the worker commits the offsets it has processed "
        "(Faust's broker_commit_interval; its default is 2.8 s). A commit is one producer flush "
        "and one OffsetCommit request. Shorter: less work repeated after a crash and a consumer "
        "lag (the broker's committed offsets, what the lag alerts read) that trails the work by "
        "at most this long.")
    producer_request_timeout_s: float = Field(
        1200.0, ge=10, description="How long the worker's producer keeps a record it could not "
        "deliver (broker unreachable) before failing it: the longest broker outage the "
        "pipeline's in-flight records ride out. The webhook does not wait this long (see "
        "webhook_persist_timeout_s).")
    producer_max_request_bytes: int = Field(
        1_000_000, ge=64 * 1024, le=100 * 1024 * 1024, description="The largest record the "
        "worker sends (aiokafka's max_request_size; Faust's default). The broker's "
        "message.max.bytes must allow it. A batch record that would be larger is sent as "
        "smaller ones (agents/outbox.py). At least webhook_max_body_bytes + 64 KiB: a raw "
        "delivery is one record.")
    broker_probe_interval_s: float = Field(
        1.0, gt=0, le=60, description="How often the worker asks the broker for its API "
        "versions to know it is reachable (/health readiness, the webhook's fast 503).")
    broker_probe_timeout_s: float = Field(
        3.0, gt=0, le=60, description="A probe not answered within this marks the broker "
        "unreachable until the next answer.")
    webhook_persist_timeout_s: float = Field(
        3.0, gt=0, le=30, description="The longest a webhook waits for the broker to "
        "acknowledge its record; past it the answer is 503 and the sender retries. Keep it "
        "well under the sender's own timeout (Shopify: 5 s).")
    tansu_compat: bool | None = Field(
        None,
        description="Correct the embedded Tansu broker's end offsets (see retail_sync/tansu_compat)."
        " Unset: on when the embedded broker is started here, off with RETAIL_SYNC_BROKER_URL.",
    )

    # --- worker state and web -----------------------------------------------------------
    datadir: Path = Field(Path("var/data"), description="Per-worker RocksDB directory.")
    rocksdb_block_cache_bytes: int = Field(
        16 * 1024 * 1024, ge=1024 * 1024, description="RocksDB block cache shared by every table "
        "partition of the worker (tables/rocks.py).")
    rocksdb_write_buffer_bytes: int = Field(
        16 * 1024 * 1024, ge=1024 * 1024, description="RocksDB memtables of every table partition "
        "of the worker together: past it the largest is flushed to disk (tables/rocks.py).")
    table_cache_entries: int = Field(
        2048, ge=0, le=1_000_000, description="Decoded values the stock table keeps per worker "
        "(LRU; tables/rocks.py): a read in the agent that owns the key returns the cached value "
        "instead of decoding the stored JSON. 0 = no cache. A SKU's record holds its open lines "
        "(ARCHITECTURE §4: ~480 bytes decoded per open line).")
    order_cache_entries: int = Field(
        4096, ge=0, le=1_000_000, description="Decoded order states the order-state table keeps "
        "per worker (LRU; tables/rocks.py). 0 = no cache. An order state is ~3 KB of JSON read "
        "~4 times per order; an order is read back when its ERP answer comes, seconds after its "
        "stock answers, while hundreds of new orders a second are read in. Issue 16, session 27 "
        "(bench --only pipeline --orders 10000): 2,048 missed ~0.7 reads per order (~150 us of "
        "worker CPU each), 4,096 none. The cost is memory: the soak's worker (bench --only soak "
        "--soak-rate 50 --soak-orders 2500) held 334 MiB at 10,000 orders with 4,096 against "
        "263 MiB with 2,048. Earlier: the worker's CPU per order 11.4/10.7 ms without a cache, "
        "9.8/9.2 ms with.")
    malloc_trim_interval_s: float = Field(
        60.0, ge=0, description="Every this many seconds the worker hands the free pages of its "
        "C heap back to the system (glibc malloc_trim; retail_sync/heap.py); 0 = never.")
    gc_thresholds: str = Field(
        "50000,20,20", pattern=r"^(default|\d+,\d+,\d+)$", description="The worker's Python "
        "garbage collector thresholds (gen0 allocations, gen1 and gen2 collections; "
        "retail_sync/heap.py), or 'default' for Python's 700,10,10. Issue 16: with Python's "
        "defaults the worker spent ~15 % of its CPU in the collector (full collections over the "
        "table cache's decoded states), 2.3 s of 15 s in bench --only pipeline --orders 4000.")
    order_retention_days: float = Field(
        30.0, gt=0, description="A closed order (shipped, refunded or cancelled, nothing "
        "pending) leaves the hot tables this long after its last change; it stays readable from "
        "the order archive topic. Keep it longer than any marketplace redelivers an order "
        "(ARCHITECTURE 5f.5).")
    order_retention_sweep_interval_s: float = Field(
        60.0, gt=0, description="How often each worker sweeps its order-state partitions for "
        "closed orders past the retention age.")
    audit_retention_days: float = Field(
        365.0, gt=0, le=36_500, description="How long admin-action audit records are kept: the "
        "retention.ms of the <app>.admin-audit topic, set when the worker creates it (an existing "
        "topic keeps its own setting). Apache Kafka deletes by it; the embedded Tansu stores it "
        "but keeps records in memory until it stops (ARCHITECTURE §10).")
    audit_write_timeout_s: float = Field(
        5.0, gt=0, le=60, description="The longest an admin action waits for the broker to "
        "acknowledge its audit record; past it (or with the broker away) the action answers 503 "
        "and nothing is done.")
    audit_view_scan: int = Field(
        10_000, ge=1, le=1_000_000, description="GET /audit reads at most this many of the "
        "newest records of each audit-topic partition (its answer says when older ones exist).")
    reconciliation_jobs_kept: int = Field(
        20, ge=1, le=1000, description="Finished reconciliation jobs (with their reports) a "
        "worker keeps in memory for GET /reconciliation/jobs; older ones are dropped, and all of "
        "them on a restart (the CLI `retail-sync reconcile` keeps nothing).")
    order_retention_sweep_batch: int = Field(
        500, ge=1, description="Order-state records one sweep of a partition reads at most; the "
        "next sweep continues from where it stopped.")
    web_host: str = Field(
        "127.0.0.1", description="Admin listener (views, actions, /metrics, /health, table "
        "routing between workers): the address it binds, and its host in the default "
        "canonical_url. Keep it on loopback or a private network; every view but /health needs "
        "a token (admin_tokens).")
    web_port: int = Field(6066, ge=1, le=65535, description="Admin listener's port.")
    ingress_host: str = Field(
        "0.0.0.0",  # noqa: S104 - the public listener; the admin one stays on loopback
        description="Ingress listener (only POST /webhooks/shopify/...: signed, "
        "public by design): the address it binds. All interfaces by default so marketplaces "
        "(through your load balancer) reach it; 127.0.0.1 when a proxy on this host fronts it.")
    ingress_port: int = Field(6065, ge=1, le=65535, description="Ingress listener's port.")
    worker_ingress: bool = Field(
        True, description="Whether a worker serves its own ingress listener. False: a worker "
        "behind ingress processes (retail-sync ingress, which read ingress_host/_port) opens no "
        "public port; the webhooks reach the ingress processes only.")
    admin_tokens: str = Field(
        "", description='Admin API tokens, JSON {"name": {"token_sha256": "<hex>", "scopes": '
        '["viewer", "operator", "pii", "metrics"]}}: only hashes, never tokens (`retail-sync '
        'admin-token create NAME --scopes ...` makes one). Same on every worker.')
    admin_tokens_file: Path | None = Field(
        None, description="A file (Docker/Kubernetes secret) with more tokens in the same JSON; "
        "re-read when it changes, so tokens are added, rotated and revoked without a restart.")
    web_header_timeout_s: float = Field(
        10.0, gt=0, le=300, description="A request's headers must be complete this long after "
        "its first byte (or after the connection opened); else 408 and the connection is closed "
        "(slow-header clients). Real senders need milliseconds.")
    web_body_timeout_s: float = Field(
        15.0, gt=0, le=600, description="A request body (Content-Length or chunked) must be "
        "complete this long after its headers; else 408 and the connection is closed (trickling "
        "clients). 512 KiB at 64 KB/s takes 8 s; Shopify itself gives up after 5 s.")
    canonical_url: str | None = Field(
        None, description="URL other workers use to reach this one (default http://host:port)."
    )
    log_level: Literal["debug", "info", "warning", "error"] = "warning"
    #: the worker's event loop: asyncio's own, or uvloop (issue 16: measured in BENCHMARKS.md)
    event_loop: Literal["asyncio", "uvloop"] = "asyncio"
    log_repeat_window_s: float = Field(
        30.0, ge=0, description="Repeats of the same aiokafka/Faust warning or error (e.g. "
        "'Unable connect to node' while the broker is away) are logged once, then at most once "
        "per this many seconds with a count of those dropped. 0 logs every one.")

    # --- channels -------------------------------------------------------------------------
    channel_plugins: str = Field(
        "", description="Extra channels: comma-separated 'module:attribute' of ChannelPlugin objects.",
    )
    poll_interval_s: float = Field(5.0, gt=0, description="How often polled channels are asked.")

    # --- dashboard and order search (issue 14; retail_sync/dashboard.py) -------------------
    order_search_email_salt: SecretStr = Field(
        SecretStr(""), description="Salt of the order index's email entries (sha256 of salt + "
        "lower-cased email; no plain email is indexed). Empty: the app id (set a secret one).")
    dashboard_sample_s: float = Field(
        5.0, gt=0, le=3600, description="How often each worker samples its latency histograms "
        "for the dashboard's p50/p99 over time.")
    dashboard_samples_kept: int = Field(
        120, ge=2, le=10_000, description="Samples kept per worker (ring): 120 x 5 s = 10 min.")

    # --- Order validation (streams/validation.py, ARCHITECTURE §5f.4) -----------------------
    order_total_tolerance_units: float = Field(
        1.0, ge=0, le=1e9, description="How far a marketplace's stated order total may be from lines "
        "+ shipping + tax - discounts: this many minor units of the order currency (cents for USD) "
        "per line, plus one allowance for the order. Raise it (and replay) to let such orders in.")

    # --- webhooks (the Shopify fields are in connectors/shopify/settings.py) ----------------
    webhook_max_body_bytes: int = Field(512 * 1024, ge=1024)
    webhook_dedupe_ttl_s: float = Field(3600.0, gt=0)
    webhook_dedupe_max_entries: int = Field(200_000, ge=100)
    webhook_pending_ttl_s: float = Field(
        10.0, gt=0, description="A delivery claimed but never confirmed (the worker died before "
        "Kafka acked it) is accepted again from a retry after this long.")

    # --- ERP: the engine's side (the ERPNext connection: connectors/erpnext/settings.py) ---
    erp_plugin: str = Field(
        "", description="The ERP orders are posted to: 'module:attribute' of an ErpPlugin "
        "(connectors/plugin.py), or the name of a built-in one or of an entry point in the group "
        "retail_sync.erps; empty: the built-in ERPNext (connectors/erpnext).")
    erp_max_attempts: int = Field(8, ge=1, le=100)
    erp_backoff_base_s: float = Field(0.2, gt=0)
    erp_backoff_max_s: float = Field(10.0, gt=0)
    erp_concurrency: int = Field(16, ge=1, le=256, description="ERP posts in flight per worker.")

    # --- ERP stock feed ------------------------------------------------------------------
    erp_stock_poll_interval_s: float = Field(
        1.0, gt=0, description="How often the ERP's stock change feed (Bin by modified) is read.")

    # --- stock: reservations, available-to-sell and allocation ----------------------------
    stock_default_policy: StockPolicy = Field(
        "cancel", description="What happens to an order whose lines cannot all be reserved.")
    stock_policy: dict[str, StockPolicy] = Field(
        default_factory=dict,
        description='Policy per channel, JSON, e.g. {"walmart":"partial","regional":"backorder"}.')
    order_edit_default_policy: EditPolicy = Field(
        "apply", description="What a marketplace's edit of an order's lines does: 'apply' takes "
        "a reduction before the ERP has the order (releasing what was removed) and records an "
        "exception for a human once it has; 'exception' always records one. Never dropped.")
    order_edit_policy: dict[str, EditPolicy] = Field(
        default_factory=dict, description='Edit policy per channel, JSON, e.g. {"shopify":"exception"}.')
    stock_safety_stock: int = Field(0, ge=0, description="Units per SKU never offered anywhere.")
    stock_safety_by_sku: dict[str, int] = Field(
        default_factory=dict, description='Safety stock per SKU, JSON, e.g. {"SKU-1": 5}.')
    stock_allocation: dict[str, ChannelAllocation] = Field(
        default_factory=dict,
        description='Per-channel allocation, JSON, e.g. {"amazon":{"share":0.5,"cap":100,"buffer":2}}.')
    stock_inline_lines: int = Field(
        DEFAULT_INLINE_LINES, ge=0, le=10_000, description="Open order lines kept inside their SKU's stock "
        "record (one changelog record per line instead of two); past that a line has a record "
        "of its own, so a slow ERP cannot grow the SKU record past ~110 bytes a line times "
        "this. Lowered to producer_max_request_bytes / 500 when that is less (a SKU's record "
        "must fit in a request with room to spare).")
    inventory_push_batch: int = Field(
        500, ge=1, le=10_000, description="Inventory updates coalesced into one push at most.")
    inventory_push_window_s: float = Field(
        0.25, gt=0, le=60, description="How long updates are gathered before a push.")

    # --- marketplace outbound (inventory and cancellations) -------------------------------
    marketplace_command_concurrency: int = Field(
        1, ge=1, le=16, description="Actors per channel's marketplace-command agent (cancel, "
        "ship, refund). 1 keeps each order's commands in order; more run a channel's commands "
        "in parallel but may reorder two commands of one order (Faust's actors share a stream).")

    # --- warehouse (WMS) and the ERP's own order changes (issue 5) ---------------------------
    # (where the WMS is: connectors/wms/settings.py)
    wms_poll_interval_s: float = Field(1.0, gt=0, description="How often WMS events are read.")
    erp_order_poll_interval_s: float = Field(
        2.0, gt=0, description="How often sales orders the ERP changed itself are read.")

    # --- resilience ----------------------------------------------------------------------
    marketplace_max_attempts: int = Field(
        4, ge=1, le=100, description="Attempts of one marketplace call (push, cancel, ship, "
        "refund) on transient errors (timeouts, resets, 5xx, 429) before it counts as failed: a "
        "command becomes an outbound exception, a push is held and its circuit counts a failure.")
    marketplace_backoff_base_s: float = Field(0.2, gt=0)
    marketplace_backoff_max_s: float = Field(5.0, gt=0)
    breaker_failures: int = Field(
        5, ge=1, description="Consecutive failed calls to one system that open its circuit.")
    breaker_cool_down_s: float = Field(
        5.0, gt=0, description="How long calls wait once a circuit opened (doubles on a failed probe).")
    breaker_max_cool_down_s: float = Field(120.0, gt=0)

    @field_validator("canonical_url")
    @classmethod
    def _canonical_url_is_http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("canonical_url must start with http:// or https://")
        return value

    @field_validator("admin_tokens")
    @classmethod
    def _admin_tokens_valid(cls, value: str) -> str:
        from retail_sync.admin_auth import parse_tokens

        parse_tokens(value)  # ValueError names the bad entry
        return value

    @field_validator("rate_limits")
    @classmethod
    def _rate_limits_valid(cls, value: dict[str, tuple[float, int]]) -> dict[str, tuple[float, int]]:
        for name, (rate, burst) in value.items():
            channel, _, operation = name.partition(":")
            if not channel or not operation:
                raise ValueError(f'rate_limits key {name!r} must look like "channel:operation"')
            if rate <= 0 or burst < 1:
                raise ValueError(f"rate_limits {name}: rate must be > 0 and burst >= 1")
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_url_scheme(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("kafka://", "aiokafka://")):
            raise ValueError("broker_url must look like kafka://host:9092 (comma-separate hosts)")
        return value

    @model_validator(mode="after")
    def _timeouts_consistent(self) -> Settings:
        if self.broker_heartbeat_interval_s >= self.broker_session_timeout_s:
            raise ValueError("broker_heartbeat_interval_s must be below broker_session_timeout_s")
        if self.erp_backoff_base_s > self.erp_backoff_max_s:
            raise ValueError("erp_backoff_base_s must not exceed erp_backoff_max_s")
        if self.ingress_port == self.web_port:
            raise ValueError(f"ingress_port and web_port are both {self.web_port}: the ingress "
                             "(webhooks) and admin listeners need their own ports")
        if self.marketplace_backoff_base_s > self.marketplace_backoff_max_s:
            raise ValueError("marketplace_backoff_base_s must not exceed marketplace_backoff_max_s")
        if self.producer_max_request_bytes < self.webhook_max_body_bytes + 64 * 1024:
            raise ValueError("producer_max_request_bytes must be at least webhook_max_body_bytes "
                             "+ 64 KiB: a raw delivery is sent as one record")
        return self

    def policy_for(self, channel: str) -> StockPolicy:
        return self.stock_policy.get(channel, self.stock_default_policy)

    def edit_policy_for(self, channel: str) -> EditPolicy:
        return self.order_edit_policy.get(channel, self.order_edit_default_policy)

    def allocation_for(self, channel: str) -> ChannelAllocation:
        return self.stock_allocation.get(channel) or ChannelAllocation()

    def safety_for(self, sku: str) -> int:
        return self.stock_safety_by_sku.get(sku, self.stock_safety_stock)

    @cached_property
    def web_url(self) -> str:
        return self.canonical_url or f"http://{self.web_host}:{self.web_port}"

    def topic(self, name: str) -> str:
        """Full topic name: every topic is prefixed with the app id, so runs never mix."""
        return f"{self.app_id}.{name}"

    def masked(self) -> dict[str, object]:
        """Settings as a dict with secrets masked, for `retail-sync settings` and logs: secret
        values are ``***`` and every URL's credentials ``user:***@`` (retail_sync.redact)."""
        from retail_sync.redact import mask_value

        return {k: ("***" if isinstance(v, SecretStr) else mask_value(v))
                for k, v in self.__dict__.items() if k in type(self).model_fields}


def plugin_settings(model: type[BaseModel], settings: BaseModel) -> BaseModel:
    """The settings a plugin's factories take (channel or ERP plugin, ``model`` its
    ``settings_model``): the central Settings when it already is one of ``model`` (the built-in
    plugins), else ``model`` read from the environment (``RETAIL_SYNC_`` + field name) over the
    shared values of ``settings``."""
    if isinstance(settings, model):
        return settings
    shared = {name: getattr(settings, name) for name in model.model_fields
              if name in type(settings).model_fields}
    built: BaseModel = _from_env(model)(**shared)
    return built


@cache
def _from_env(model: type[BaseModel]) -> type[BaseModel]:
    """``model`` read from the environment (``RETAIL_SYNC_`` + field name); one class per model,
    so two reads of the same plugin's settings are instances of one class (and compare equal)."""
    return type(f"{model.__name__}FromEnv", (model, BaseSettings), {
        "model_config": SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")})
