"""Faust codecs for the canonical pydantic models.

Faust models are not pydantic models, so each record type gets a codec registered under its own
name; topics and tables name it as ``value_serializer`` (no ``value_type``). Decoding validates:
bytes that are not the record they claim to be raise, and the topic turns that into a
sync-exception record (see ``streams.topics.RecordingTopic``).

Every record carries its codec's schema version as its first key, ``{"schema_version": N, ...}``
(``streams.schemas``): absent means 1; a record newer than this reader has the fields this reader
does not know dropped instead of refused (a reader of version N reads N+1). Code that reads
these topics outside Faust uses ``decode(codec, bytes)``, never the models' own JSON parsing.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from typing import Any

import orjson
from faust.serializers import codecs
from pydantic import BaseModel, TypeAdapter, ValidationError

from retail_sync.streams import commands, events, models, state, stock
from retail_sync.streams.schemas import VERSION_KEY, version_of

_VERSION_PREFIX = re.compile(rb'^\s*\{\s*"schema_version"\s*:\s*(\d{1,9})\s*(,?)')


class PydanticCodec(codecs.Codec):
    """JSON on the wire with the schema version first, validated into ``adapter``'s type on
    the way in."""

    def __init__(self, adapter: TypeAdapter[Any], name: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.adapter = adapter
        self.name = name
        #: the records this process wrote, for its own reader (``Loopback``); None: off
        self.loopback: Loopback | None = None

    def _loads(self, s: bytes) -> Any:
        if self.loopback is not None:
            written = self.loopback.take(s)
            if written is not None:
                return written
        return _decode(self.adapter, version_of(self.name), s)

    def _dumps(self, obj: Any) -> bytes:
        model = isinstance(obj, BaseModel)
        body = models.record_json(obj) if model else self.adapter.dump_json(
            self.adapter.validate_python(obj))
        data = with_version(body, version_of(self.name))
        if model and self.loopback is not None:  # what a read of ``data`` would decode
            self.loopback.keep(data, obj)
        return data


class Loopback:
    """The records one codec wrote in this process, by their bytes, each taken once by the
    first read of the same bytes (issue 16): a worker reads most of what it writes on the hot
    path (its stock commands, stock answers, ERP and warehouse requests go to partitions it
    holds), and decoding them again cost ~10 % of its CPU (an ERP batch: ~70 us per order).

    Safe because a read of bytes this codec wrote is a pure function of those bytes: the
    frozen model that was encoded (``tests/unit/test_codec_loopback.py`` checks that decoding
    every record kind gives an equal object of the same type). Bounded by ``max_bytes`` of
    records (oldest dropped first: the records another worker reads are never taken here; a
    record over half of it is not kept); a record read twice (a redelivery) or after a
    restart is decoded as before."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[bytes, Any] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # the codec is Faust's, shared by any thread that encodes
        self.taken = 0

    def keep(self, data: bytes, obj: Any) -> None:
        if len(data) > self.max_bytes // 2:
            return  # it would drop nearly every other record: decoded again instead
        with self._lock:
            if self._items.pop(data, None) is not None:
                self._bytes -= len(data)
            self._items[data] = obj
            self._bytes += len(data)
            while self._bytes > self.max_bytes:
                old, _ = self._items.popitem(last=False)
                self._bytes -= len(old)

    def take(self, data: bytes) -> Any:
        """The object written as ``data`` (None: not written here, or already taken)."""
        with self._lock:
            obj = self._items.pop(data, None)
            if obj is not None:
                self._bytes -= len(data)
                self.taken += 1
        return obj

    def __len__(self) -> int:
        return len(self._items)


def with_version(body: bytes, version: int) -> bytes:
    """``{"schema_version": version, ...body's keys}`` (a JSON object body)."""
    if body[:1] != b"{":
        return body
    head = b'{"schema_version":%d' % version
    return head + (b"}" if body.strip() == b"{}" else b"," + body[1:])


def split_version(s: bytes) -> tuple[int, bytes]:
    """(the record's schema version, the record without it); 1 when it carries none."""
    m = _VERSION_PREFIX.match(s)
    if m is not None:
        rest = s[m.end():]
        return int(m[1]), (b"{" + rest) if m[2] else b"{" + rest.lstrip()
    if b'"schema_version"' in s:  # written elsewhere, not first: the slow way
        try:
            data = orjson.loads(s)
        except orjson.JSONDecodeError:
            return 1, s
        if isinstance(data, dict) and isinstance(data.get(VERSION_KEY), int):
            version = data.pop(VERSION_KEY)
            return version, orjson.dumps(data)
    return 1, s


def _decode(adapter: TypeAdapter[Any], reader_version: int, s: bytes) -> Any:
    version, body = split_version(s)
    context = {models.VERSION_CONTEXT: version}  # models that read older versions differently see it
    try:
        return adapter.validate_json(body, context=context)
    except ValidationError as exc:
        errors = exc.errors()
        if version <= reader_version or not all(e["type"] == "extra_forbidden" for e in errors):
            raise
        # a newer writer's record: drop the fields this reader does not know
        data = orjson.loads(body)
        for error in errors:
            _drop(data, error["loc"])
        return adapter.validate_json(orjson.dumps(data), context=context)


def _drop(data: Any, loc: tuple[Any, ...]) -> None:
    """Delete the field at pydantic's error location (union tags and class names in ``loc``,
    which are not keys of the data, are skipped)."""
    node = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, dict) and part in node:
            if last:
                del node[part]
                return
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        # else: a union tag or member name; stay on this node


def encode(codec: str, obj: Any) -> bytes:
    """``obj`` as codec ``codec`` writes it on its topic (schema version included)."""
    return codecs.get_codec(codec).dumps(obj)


def decode(codec: str, value: bytes) -> Any:
    """A record of codec ``codec`` read from its topic (any version up to this reader's own +
    later ones, whose unknown fields are dropped); raises pydantic's ValidationError."""
    return _decode(CODECS[codec], version_of(codec), value)


#: codec name -> the type it carries
CODECS: dict[str, TypeAdapter[Any]] = {
    "rs.raw_order": TypeAdapter(models.RawOrderMessage),
    "rs.order_event": events.ORDER_RECORD,
    "rs.erp_request": commands.ERP_RECORD,
    "rs.order_state": TypeAdapter(state.OrderState),
    "rs.poll_tick": TypeAdapter(commands.PollTick),
    "rs.sync_exception": TypeAdapter(models.SyncException),
    "rs.stock_event": events.STOCK_TOPIC_RECORD,
    "rs.stock_record": stock.STOCK_RECORD,
    "rs.inventory_update": TypeAdapter(commands.InventoryUpdate),
    "rs.channel_command": commands.CHANNEL_COMMAND,
    "rs.wms_command": commands.WMS_RECORD,
}


#: the codecs of the topics a worker mostly reads what it wrote itself (not the tables': their
#: changelogs are read only to recover)
LOOPBACK_CODECS = ("rs.order_event", "rs.erp_request", "rs.stock_event", "rs.wms_command")


def set_loopback(max_bytes: int) -> None:
    """Keep up to ``max_bytes`` of written records per codec of ``LOOPBACK_CODECS`` for this
    process's own reads (``Loopback``); 0: off."""
    for name in LOOPBACK_CODECS:
        codec = codecs.get_codec(name)
        assert isinstance(codec, PydanticCodec)
        codec.loopback = Loopback(max_bytes) if max_bytes > 0 else None


def register_codecs() -> None:
    """Make every codec known to Faust by name (idempotent)."""
    for name, adapter in CODECS.items():
        codecs.register(name, PydanticCodec(adapter, name))


register_codecs()
