"""Property-based fuzzing of every inbound path with hostile input (hypothesis).

Each path gets real-shaped seeds (tests/fixtures/*) mutated field by field: wrong types, huge and
non-finite numbers, zero/negative quantities, 100 KB strings, control characters, missing and
extra fields, deep nesting; CSV files get truncated rows, wrong delimiters, BOMs and binary junk.

The property: a path either returns a valid canonical object (whose invariants are checked) or
raises its documented error with a non-empty message (MappingError for the mappers and the ingest
step, PermanentError for an unreadable CSV, DecodeError for the WMS / ERP stock feeds, pydantic
ValidationError for the Faust codecs). Any other exception type fails the test.
"""

from __future__ import annotations

import copy
import json
import string
import tempfile
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from faust.serializers import codecs as faust_codecs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from retail_sync.agents.ingest import to_event, topic_events
from retail_sync.channels import BUILTIN
from retail_sync.connectors.amazon.mapper import map_delivery as _amazon
from retail_sync.connectors.erpnext import stock_feed as erp_stock
from retail_sync.connectors.errors import DecodeError, PermanentError
from retail_sync.connectors.regional import inbound as regional
from retail_sync.connectors.regional import mapper as regional_mapper
from retail_sync.connectors.shopify import mapper as shopify
from retail_sync.connectors.shopify.inbound import compute_hmac, verify_hmac
from retail_sync.connectors.shopify.mapper import MappingError
from retail_sync.connectors.walmart import mapper as walmart
from retail_sync.connectors.wms import client as wms
from retail_sync.streams import codecs as rs_codecs
from retail_sync.streams.events import OrderReceived, ReturnRequested
from retail_sync.streams.models import Order, RawOrderMessage, RefundRecord
from tests.fixture_orders import amazon_example, shopify_order

FIXTURES = Path(__file__).parent.parent / "fixtures"
SHOPIFY_ORDER = shopify_order()  # the fixtures as plausible orders (tests/fixture_orders.py)
_AMAZON = amazon_example()
AMAZON_DELIVERY = {"order": _AMAZON["order"], "items": _AMAZON["order_items"]}
WALMART_ORDER = json.loads((FIXTURES / "walmart_order_example.json").read_text())
SHOPIFY_REFUND = {
    "id": 509562969, "order_id": 450789469, "note": "wrong size",
    "refund_line_items": [{"id": 104689539, "line_item_id": 466157049, "quantity": 1,
                           "restock_type": "return"}],
    "transactions": [{"kind": "refund", "amount": "41.94", "currency": "USD"}],
}
REGIONAL_COLUMNS = ("order_ref", "order_date", "status", "sku", "qty", "unit_price", "currency",
                    "buyer_email", "line_no")
REGIONAL_ROWS = [
    {"order_ref": "R1", "order_date": "2026-11-27 10:15:00+01:00", "status": "NEW", "sku": "SKU-1",
     "qty": "2", "unit_price": "12,50", "currency": "EUR", "buyer_email": "a@example.com",
     "line_no": "1", "_row": 1},
    {"order_ref": "R1", "order_date": "27/11/2026 10:15", "status": "new", "sku": "SKU-2",
     "qty": "1", "unit_price": "3.99", "currency": "eur", "buyer_email": "", "line_no": "2",
     "_row": 2},
]
WMS_SHIPMENT = {"kind": "shipment", "data": {
    "id": "SHP-1", "reference": "shopify:1001", "carrier": "Fed Ex", "tracking_number": "1Z999",
    "shipped_at": "2026-01-02T03:04:05Z",
    "lines": [{"line_id": "L1", "sku": "SKU-1", "quantity": 2}]}}
WMS_RETURN = {"kind": "return_received", "data": {
    "return_id": "RET-1", "reference": "amazon:902-1", "received_at": "2026-01-02T03:04:05Z",
    "lines": [{"line_id": "L1", "sku": "SKU-1", "quantity": 1}]}}
ERP_BIN = {"name": "BIN-1", "item_code": "SKU-1", "warehouse": "Stores - RS", "actual_qty": 12.0,
           "reserved_qty": 2.5, "modified": "2026-01-02 03:04:05.000000"}

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])
LIGHT = settings(FUZZ, max_examples=60)

# --- hostile values -----------------------------------------------------------------------------

HUGE = "x" * 100_000
WEIRD_STRINGS = [
    "", " ", "NaN", "nan", "-NaN", "sNaN", "Infinity", "-Infinity", "inf", "1e999999", "9E+999999",
    "-9E+999999", "1e-999999", "-1", "0", "-0", "0.00001", "1e-30", "12,50", "1.234,50", "1,2,3",
    " 12 ", "１２", "²", "٣", "0x10", "1_000", "\x00", "\u202e", "\ufeff", "\ud7ff", "\U0001f4a9",
    "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0001-01-01 00:00", "01/01/0001 00:00",
    "2026-13-45T99:99:99Z", "2026-01-01T00:00:00", "USD", "usd", "US", "EURO", "None", "null",
    "True", HUGE, "9" * 5000, "\r\n", "\"", "'", ",", ";", "%s%n", "{{}}", "<script>",
]


def nested(depth: int) -> Any:
    doc: Any = "deep"
    for i in range(depth):
        doc = [doc] if i % 2 else {"a": doc}
    return doc


def json_values(max_leaves: int = 4) -> st.SearchStrategy[Any]:
    leaves = st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=20),
    )
    return st.recursive(
        leaves,
        lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3),
        max_leaves=max_leaves,
    )


HOSTILE: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=1),
    st.integers(min_value=10**15, max_value=10**40) | st.integers(max_value=-(10**15)),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e308, -0.0, 0.5, 1e-9]),
    st.sampled_from(WEIRD_STRINGS),
    st.text(max_size=30),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x1F), max_size=10),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.sampled_from([[], {}, [{}], [None], [[]]]),
    st.sampled_from([5, 50, 200]).map(nested),
    json_values(),
)


# --- mutation of seed documents -----------------------------------------------------------------


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key / index path in a JSON document."""
    found = []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        found.append((*prefix, key))
        found.extend(paths(value, (*prefix, key)))
    return found


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        try:
            doc = doc[key]
        except (KeyError, IndexError, TypeError):
            return None
    return doc if isinstance(doc, dict | list) else None


@st.composite
def mutated(draw: st.DrawFn, seed: Any, hot: frozenset[str] = frozenset()) -> Any:
    """``seed`` with 1-4 mutations: replace a value, delete a key, add an extra key, or wrap."""
    doc = copy.deepcopy(seed)
    all_paths = paths(doc)
    hot_paths = [p for p in all_paths if any(k in hot for k in p)] or all_paths
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(hot_paths) | st.sampled_from(all_paths))
        parent = _parent(doc, path)
        if parent is None:
            continue
        key = path[-1]
        if isinstance(parent, dict) and key not in parent:
            continue
        if isinstance(parent, list) and key >= len(parent):
            continue
        action = draw(st.sampled_from(["replace", "replace", "replace", "delete", "extra", "wrap"]))
        if action == "replace":
            parent[key] = draw(HOSTILE)
        elif action == "delete":
            del parent[key]
        elif action == "extra" and isinstance(parent, dict):
            parent[draw(st.text(max_size=10))] = draw(HOSTILE)
        elif action == "extra":
            parent.append(draw(HOSTILE))
        elif action == "wrap":
            parent[key] = draw(st.sampled_from([[parent[key]], {"value": parent[key]}, str(parent[key])]))
    return doc


def whole_document() -> st.SearchStrategy[Any]:
    """Not the seed at all: a top-level value of the wrong shape."""
    return HOSTILE


# --- the property -------------------------------------------------------------------------------


def assert_clear(exc: BaseException) -> None:
    assert str(exc).strip(), f"{type(exc).__name__} without a message"


def assert_valid_order(order: Order, channel: str) -> None:
    assert isinstance(order, Order)
    assert order.channel == channel
    assert order.marketplace_order_id
    assert order.order_key == f"{channel}:{order.marketplace_order_id}"
    for money in (order.subtotal, order.shipping, order.tax_total, order.discount_total, order.total):
        assert isinstance(money.amount, Decimal) and money.amount.is_finite()
        assert money.currency == order.currency
    assert len(order.currency) == 3 and order.currency.isupper()
    assert order.lines
    for line in order.lines:
        assert isinstance(line.quantity, int) and line.quantity > 0
        assert line.sku and line.line_id
        for money in (line.unit_price, line.tax, line.discount):
            assert money.amount.is_finite() and money.currency == order.currency
    for moment in (order.created_at, order.updated_at):
        assert moment.utcoffset() is not None and moment.utcoffset().total_seconds() == 0
    # the event it becomes must survive the wire (the Faust codec validates on the way in)
    event = OrderReceived(order_key=order.order_key, order=order, delivery_id="d",
                          received_at=datetime.now(UTC))
    assert faust_codecs.loads("rs.order_event", faust_codecs.dumps("rs.order_event", event)) == event


def map_or_reject(mapper: Any, payload: Any, channel: str) -> Order | None:
    try:
        order = mapper(payload)
    except MappingError as exc:
        assert_clear(exc)
        return None
    assert_valid_order(order, channel)
    return order


SWEEP_VALUES: list[Any] = [
    None, True, 0, -1, 10**40, 1.5, float("nan"), float("inf"), "", "NaN", "-Infinity", "9E+999999",
    "1e-30", "²", "0001-01-01T00:00:00+01:00", "\x00\u202e", HUGE, [], [1], ["x"], {}, {"a": 1},
    nested(200),
]
DELETE = object()


def sweep(seed: Any, run: Any) -> int:
    """Every path of ``seed`` deleted or set to every SWEEP_VALUE, one at a time; ``run`` each."""
    count = 0
    for path in paths(seed):
        for value in [DELETE, *SWEEP_VALUES]:
            doc = copy.deepcopy(seed)
            parent = _parent(doc, path)
            if value is DELETE:
                del parent[path[-1]]
            else:
                parent[path[-1]] = value
            try:
                run(doc)
            except AssertionError as exc:
                raise AssertionError(f"at {path!r} = {str(value)[:60]!r}: {exc}") from exc
            count += 1
    return count


# --- Shopify ------------------------------------------------------------------------------------

SHOPIFY_HOT = frozenset({
    "id", "name", "created_at", "updated_at", "currency", "line_items", "sku", "variant_id",
    "quantity", "price", "tax_lines", "total_discount", "shipping_lines", "subtotal_price",
    "total_tax", "total_discounts", "total_price", "cancelled_at", "customer", "email",
    "shipping_address", "country_code", "first_name", "last_name", "financial_status",
    "fulfillment_status", "taxes_included",
})


def test_seeds_map() -> None:
    """The unmutated seeds are valid orders (else the fuzzing would only test rejection)."""
    assert_valid_order(shopify.map_order(SHOPIFY_ORDER), "shopify")
    assert_valid_order(_amazon(AMAZON_DELIVERY), "amazon")
    assert_valid_order(walmart.map_order(WALMART_ORDER), "walmart")
    assert_valid_order(regional_mapper.map_order({"file": "f.csv", "rows": REGIONAL_ROWS}), "regional")
    assert shopify.map_refund(SHOPIFY_REFUND, datetime.now(UTC))[0] == "shopify:450789469"
    assert wms.wms_event(WMS_SHIPMENT) is not None and wms.wms_event(WMS_RETURN) is not None
    assert erp_stock.stock_level(ERP_BIN).reserved_qty == 3


@FUZZ
@given(mutated(SHOPIFY_ORDER, SHOPIFY_HOT) | mutated({"order": SHOPIFY_ORDER}, SHOPIFY_HOT)
       | whole_document())
def test_shopify_order(payload: Any) -> None:
    map_or_reject(shopify.map_order, payload, "shopify")


@FUZZ
@given(mutated(SHOPIFY_REFUND, frozenset(SHOPIFY_REFUND) | {"quantity", "amount", "kind"})
       | whole_document())
def test_shopify_refund(payload: Any) -> None:
    try:
        key, refund = shopify.map_refund(payload, datetime.now(UTC))
    except MappingError as exc:
        assert_clear(exc)
        return
    assert key == f"shopify:{payload['order_id']}"
    assert isinstance(refund, RefundRecord)
    assert refund.amount.is_finite()
    assert refund.lines and all(isinstance(q, int) and q > 0 for q in refund.lines.values())


# --- Amazon -------------------------------------------------------------------------------------

AMAZON_HOT = frozenset({
    "order", "items", "AmazonOrderId", "PurchaseDate", "LastUpdateDate", "OrderStatus", "OrderTotal",
    "CurrencyCode", "Amount", "SellerOrderId", "BuyerInfo", "ShippingAddress", "OrderItemId",
    "QuantityOrdered", "SellerSKU", "ASIN", "Title", "ItemPrice", "ItemTax", "PromotionDiscount",
    "ShippingPrice", "ShippingDiscount", "ShippingTax",
})


@FUZZ
@given(mutated(AMAZON_DELIVERY, AMAZON_HOT) | whole_document())
def test_amazon_delivery(payload: Any) -> None:
    map_or_reject(_amazon, payload, "amazon")


# --- Walmart ------------------------------------------------------------------------------------

WALMART_HOT = frozenset({
    "purchaseOrderId", "customerOrderId", "customerEmailId", "orderDate", "statusDate", "orderLines",
    "orderLine", "lineNumber", "item", "sku", "productName", "charges", "charge", "chargeType",
    "chargeAmount", "amount", "currency", "tax", "taxAmount", "orderLineQuantity",
    "orderLineStatuses", "orderLineStatus", "status", "shippingInfo", "postalAddress", "country",
    "buyerId",
})


@FUZZ
@given(mutated(WALMART_ORDER, WALMART_HOT) | mutated({"order": WALMART_ORDER}, WALMART_HOT)
       | whole_document())
def test_walmart_order(payload: Any) -> None:
    map_or_reject(walmart.map_order, payload, "walmart")


# --- regional: mapper, then the whole file path ---------------------------------------------------

REGIONAL_DELIVERY = {"file": "orders_20261127101500_1.csv", "rows": REGIONAL_ROWS}


@FUZZ
@given(mutated(REGIONAL_DELIVERY, frozenset(REGIONAL_COLUMNS) | {"rows", "_row"}) | whole_document())
def test_regional_mapper(payload: Any) -> None:
    map_or_reject(regional_mapper.map_order, payload, "regional")


def _cell() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(WEIRD_STRINGS[:-25]),  # the CSV module's field limit is another test
        st.text(max_size=15),
        st.sampled_from(["R1", "R2", "NEW", "PAID", "CXL", "2", "0", "-3", "12,50", "EUR", "SKU-1",
                         "2026-11-27 10:15:00+01:00", "27/11/2026 10:15"]),
    )


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    """An order CSV, then damaged: cells, truncated rows, delimiter, BOM, line ends, junk."""
    delimiter = draw(st.sampled_from([",", ",", ",", ";", "\t", "|"]))
    header = list(REGIONAL_COLUMNS)
    if draw(st.booleans()):
        header = draw(st.permutations(header))[: draw(st.integers(1, len(header)))]
    lines = [delimiter.join(header)]
    for row in REGIONAL_ROWS * draw(st.integers(0, 3)):
        cells = [str(row[c]) for c in header] if set(header) <= set(row) else []
        for i in range(len(cells)):
            if draw(st.integers(0, 4)) == 0:
                cells[i] = draw(_cell())
        if cells and draw(st.integers(0, 5)) == 0:
            cells = cells[: draw(st.integers(0, len(cells) - 1))]  # truncated row
        if draw(st.integers(0, 6)) == 0:
            cells.append("extra")
        lines.append(delimiter.join(cells))
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    data = newline.join(lines).encode(draw(st.sampled_from(["utf-8", "utf-8", "utf-16", "latin-1"])),
                                      errors="replace")
    if draw(st.booleans()):
        data = "\ufeff".encode() + data
    if draw(st.integers(0, 4)) == 0:
        cut = draw(st.integers(0, len(data)))
        data = data[:cut]
    if draw(st.integers(0, 4)) == 0:
        data += draw(st.binary(max_size=64))
    if draw(st.integers(0, 9)) == 0:
        data = draw(st.binary(max_size=256))
    return data


def _regional_file_path(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "orders_20261127101500_1.csv"
        path.write_bytes(content)
        try:
            rows = regional.read_rows(path)
        except PermanentError as exc:
            assert_clear(exc)
            return
    assert all(isinstance(r[regional.ROW_KEY], int) for r in rows)
    polled = regional.group_orders(path.name, rows)
    assert sum(len(orjson.loads(p.body)["rows"]) for p in polled) == len(rows)
    for order in polled:
        mapped = map_or_reject(regional_mapper.map_order, orjson.loads(order.body), "regional")
        if mapped is not None:
            assert mapped.marketplace_order_id == order.marketplace_order_id
        # and the same body through the ingest step (what the poller puts on orders-raw)
        _ingest(RawOrderMessage(channel="regional", topic="poll", delivery_id=order.delivery_id,
                                received_at=datetime.now(UTC), body=order.body))


@FUZZ
@given(csv_files())
def test_regional_csv_file(content: bytes) -> None:
    _regional_file_path(content)


def test_regional_csv_oversized_field_is_a_permanent_error() -> None:
    header = ",".join(REGIONAL_COLUMNS)
    _regional_file_path(f"{header}\nR1,{'x' * 200_000},NEW,S,1,1,EUR,,1\n".encode())


@pytest.mark.parametrize("name", ["shopify", "shopify_refund", "amazon", "walmart", "regional", "wms",
                                  "erp_stock"])
def test_sweep_every_field_with_every_hostile_value(name: str) -> None:
    """Systematic complement to the random mutations: each field alone, each hostile value."""
    now = datetime.now(UTC)
    cases: dict[str, tuple[Any, Any]] = {
        "shopify": (SHOPIFY_ORDER, lambda d: map_or_reject(shopify.map_order, d, "shopify")),
        "shopify_refund": (SHOPIFY_REFUND, lambda d: test_shopify_refund.hypothesis.inner_test(d)),
        "amazon": (AMAZON_DELIVERY, lambda d: map_or_reject(_amazon, d, "amazon")),
        "walmart": (WALMART_ORDER, lambda d: map_or_reject(walmart.map_order, d, "walmart")),
        "regional": (REGIONAL_DELIVERY, lambda d: map_or_reject(regional_mapper.map_order, d, "regional")),
        "wms": ({"s": WMS_SHIPMENT, "r": WMS_RETURN},
                lambda d: [test_wms_event.hypothesis.inner_test(d[k]) for k in d if isinstance(d[k], dict)]),
        "erp_stock": (ERP_BIN, lambda d: test_erp_stock_level.hypothesis.inner_test(d)),
    }
    seed, run = cases[name]
    assert now and sweep(seed, run) > 0


# --- the ingest step ----------------------------------------------------------------------------

MAPPERS = {plugin.channel: plugin.mapper for plugin in BUILTIN}
TOPIC_EVENTS = topic_events({plugin.channel: plugin for plugin in BUILTIN})  # Shopify's refunds


def _ingest(raw: RawOrderMessage) -> None:
    """to_event may only raise MappingError: anything else is recorded as an ``internal`` error."""
    try:
        event = to_event(raw, MAPPERS, TOPIC_EVENTS)
    except MappingError as exc:
        assert_clear(exc)
        return
    if isinstance(event, OrderReceived):
        assert_valid_order(event.order, raw.channel)
        assert event.order_key == event.order.order_key
    else:
        assert isinstance(event, ReturnRequested)
        assert event.order_key.startswith("shopify:")


def _bodies(seed: Any, hot: frozenset[str]) -> st.SearchStrategy[str]:
    as_json = mutated(seed, hot).map(lambda d: json.dumps(d, allow_nan=True))
    return st.one_of(
        as_json,
        as_json.flatmap(lambda s: st.integers(0, len(s)).map(lambda n: s[:n])),  # truncated
        st.binary(max_size=64).map(lambda b: b.decode("utf-8", "replace")),
        st.text(max_size=64),
        st.sampled_from(["", "null", "[]", "{}", "NaN", "1e999999", "\"x\"", "[" * 2000 + "]" * 2000,
                         "{\"a\":" * 2000 + "1" + "}" * 2000, "{\"id\": 18446744073709551616}"]),
    )


@FUZZ
@given(channel=st.sampled_from(["shopify", "amazon", "walmart", "regional", "ebay", ""]),
       topic=st.sampled_from(["orders/create", "refunds/create", "poll"]),
       body=st.one_of(_bodies(SHOPIFY_ORDER, SHOPIFY_HOT), _bodies(SHOPIFY_REFUND, frozenset(SHOPIFY_REFUND)),
                      _bodies(AMAZON_DELIVERY, AMAZON_HOT), _bodies(WALMART_ORDER, WALMART_HOT),
                      _bodies(REGIONAL_DELIVERY, frozenset(REGIONAL_COLUMNS))))
def test_ingest_to_event(channel: str, topic: str, body: str) -> None:
    _ingest(RawOrderMessage(channel=channel, topic=topic, delivery_id="d-1",
                            received_at=datetime.now(UTC), body=body))


# --- Faust codecs -------------------------------------------------------------------------------


def _valid_event_bytes() -> bytes:
    order = shopify.map_order(SHOPIFY_ORDER)
    event = OrderReceived(order_key=order.order_key, order=order, delivery_id="d",
                          received_at=datetime.now(UTC))
    return faust_codecs.dumps("rs.order_event", event)


VALID_EVENT = _valid_event_bytes()


@FUZZ
@given(name=st.sampled_from(sorted(rs_codecs.CODECS)),
       data=st.one_of(
           st.binary(max_size=256),
           mutated(json.loads(VALID_EVENT), frozenset({"order", "lines", "amount", "quantity", "kind"}))
           .map(lambda d: json.dumps(d, allow_nan=True).encode()),
           st.integers(0, len(VALID_EVENT)).map(lambda n: VALID_EVENT[:n]),
           st.sampled_from([b"", b"null", b"\xff\xfe\x00", b"NaN", b"[" * 5000, b"{\"kind\":" * 3000,
                            b"\xef\xbb\xbf{}", ("\"" + "x" * 100_000 + "\"").encode()])))
def test_codecs_reject_garbage_with_validation_error(name: str, data: bytes) -> None:
    try:
        value = faust_codecs.loads(name, data)
    except ValidationError as exc:
        assert_clear(exc)
        return
    # it decoded: then it is the record it claims to be, and encodes back to the same value
    assert faust_codecs.loads(name, faust_codecs.dumps(name, value)) == value


# --- webhook HMAC -------------------------------------------------------------------------------


@FUZZ
@given(body=st.binary(max_size=512), secret=st.text(max_size=40),
       received=st.one_of(st.none(), st.text(max_size=80), st.sampled_from(["", " ", "\x00", "==", HUGE])))
def test_verify_hmac_never_raises_and_only_accepts_the_signature(body: bytes, secret: str,
                                                                  received: str | None) -> None:
    good = compute_hmac(body, secret)
    assert verify_hmac(body, good, secret) is True
    assert verify_hmac(body, f"  {good}\n", secret) is True
    assert verify_hmac(body, received, secret) is (received is not None and received.strip() == good)
    assert verify_hmac(body + b"x", good, secret) is False


@LIGHT
@given(body=st.binary(max_size=64), received=st.text(alphabet=string.printable + "é€💩\x00", max_size=60))
def test_verify_hmac_non_ascii_signature(body: bytes, received: str) -> None:
    assert verify_hmac(body, received, "secret") is (received.strip() == compute_hmac(body, "secret"))


# --- WMS and ERP stock feeds ----------------------------------------------------------------------

WMS_HOT = frozenset({"kind", "data", "id", "reference", "carrier", "tracking_number", "shipped_at",
                     "lines", "line_id", "sku", "quantity", "return_id", "received_at"})


@FUZZ
@given(mutated(WMS_SHIPMENT, WMS_HOT) | mutated(WMS_RETURN, WMS_HOT) | whole_document())
def test_wms_event(raw: Any) -> None:
    try:
        event = wms.wms_event(raw)
    except DecodeError as exc:
        assert_clear(exc)
        return
    if event is None:
        assert raw.get("kind") not in ("shipment", "return_received")
        return
    assert event.order_key and isinstance(event.order_key, str) and event.at
    lines = event.shipment.lines if event.shipment else event.lines
    assert lines is not None
    assert all(ln.quantity > 0 and ln.line_id and ln.sku for ln in lines)
    if event.kind == "shipment":
        assert event.shipment.carrier in {"UPS", "USPS", "FEDEX", "DHL", "OTHER"}


@FUZZ
@given(body=st.one_of(
    mutated(WMS_SHIPMENT, WMS_HOT).map(lambda d: json.dumps(d, allow_nan=True)),
    st.text(max_size=64),
    st.sampled_from(["", "[]", "NaN", "\ufeff{}", "deep-list", "deep-object"])))
def test_wms_json_object(body: str) -> None:
    body = {"deep-list": "[" * 100_000, "deep-object": "{\"a\":" * 100_000}.get(body, body)
    try:
        doc = wms.json_object(body, "events")
    except DecodeError as exc:
        assert_clear(exc)
        return
    assert isinstance(doc, dict)


@FUZZ
@given(mutated(ERP_BIN, frozenset(ERP_BIN)) | whole_document())
def test_erp_stock_level(row: Any) -> None:
    try:
        level = erp_stock.stock_level(row)
    except DecodeError as exc:
        assert_clear(exc)
        return
    assert level.sku and level.warehouse and level.modified
    assert isinstance(level.actual_qty, int) and isinstance(level.reserved_qty, int)


@pytest.mark.parametrize("qty", ["NaN", "Infinity", "-inf", "1e999999", float("nan"), float("inf")])
def test_erp_stock_non_finite_quantities_are_decode_errors(qty: Any) -> None:
    with pytest.raises(DecodeError):
        erp_stock.stock_level({**ERP_BIN, "actual_qty": qty})


# --- regressions: the minimal inputs the fuzzing found (each crashed with another type) ---------


def _with(seed: Any, path: tuple[Any, ...], value: Any) -> Any:
    doc = copy.deepcopy(seed)
    _parent(doc, path)[path[-1]] = value
    return doc


@pytest.mark.parametrize(("mapper", "seed", "path", "value"), [
    (shopify.map_order, SHOPIFY_ORDER, ("shipping_lines",), [1]),  # AttributeError
    (shopify.map_order, SHOPIFY_ORDER, ("line_items", 0, "tax_lines"), 5),  # TypeError
    (shopify.map_order, SHOPIFY_ORDER, ("created_at",), "0001-01-01T00:00:00+01:00"),  # OverflowError
    (_amazon, AMAZON_DELIVERY, ("order", "OrderStatus"), []),  # TypeError: unhashable
    (_amazon, AMAZON_DELIVERY, ("order", "OrderTotal", "Amount"), "1" + "0" * 40),  # ValidationError
    (walmart.map_order, WALMART_ORDER, ("orderDate",), 10**30),  # OverflowError
    (walmart.map_order, WALMART_ORDER, ("orderDate",), float("nan")),  # ValueError
    (walmart.map_order, WALMART_ORDER, ("orderDate",), "²"),  # ValueError from int()
    (walmart.map_order, WALMART_ORDER, ("orderDate",), "0001-01-01T00:00:00+01:00"),  # OverflowError
    (walmart.map_order, WALMART_ORDER, ("orderLines", "orderLine", 0, "orderLineQuantity", "amount"), "²"),
    (walmart.map_order, WALMART_ORDER,
     ("orderLines", "orderLine", 0, "orderLineStatuses", "orderLineStatus", 0, "status"), []),
    (regional_mapper.map_order, REGIONAL_DELIVERY, ("rows", 0, "qty"), "²"),  # ValueError from int()
    (regional_mapper.map_order, REGIONAL_DELIVERY, ("rows", 0, "order_date"), "01/01/0001 00:00"),
])
def test_regression_hostile_field_is_a_mapping_error(mapper: Any, seed: Any, path: tuple[Any, ...],
                                                     value: Any) -> None:
    with pytest.raises(MappingError):
        mapper(_with(seed, path, value))


@pytest.mark.parametrize(("path", "value"), [
    (("refund_line_items",), True),  # TypeError: not iterable
    (("transactions",), 3),  # TypeError
    (("refund_line_items", 0, "quantity"), -1),  # was accepted as a refund of -1 units
    (("refund_line_items", 0, "quantity"), True),  # was accepted as 1 unit
    (("transactions", 0, "amount"), "1e40"),  # pydantic ValidationError escaped
    (("transactions", 0, "amount"), "NaN"),  # pydantic ValidationError escaped
])
def test_regression_hostile_refund_is_a_mapping_error(path: tuple[Any, ...], value: Any) -> None:
    with pytest.raises(MappingError):
        shopify.map_refund(_with(SHOPIFY_REFUND, path, value), datetime.now(UTC))


@pytest.mark.parametrize(("column", "value"), [("buyer_email", True), ("line_no", 7)])
def test_regression_regional_non_text_optional_cell_is_ignored(column: str, value: Any) -> None:
    """Was AttributeError (``.strip()`` on a non-string); an optional cell that is not text is absent."""
    order = regional_mapper.map_order(_with(REGIONAL_DELIVERY, ("rows", 0, column), value))
    assert_valid_order(order, "regional")


def test_regression_deep_wms_json_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        wms.json_object("[" * 100_000, "events")
