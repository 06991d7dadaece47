"""Faust codecs for the canonical pydantic models.

Faust models are not pydantic models, so each record type gets a codec registered under its own
name; topics and tables name it as ``value_serializer`` (no ``value_type``). Decoding validates:
bytes that are not the record they claim to be raise, and the topic turns that into a
sync-exception record (see ``streams.topics.RecordingTopic``).
"""

from __future__ import annotations

from typing import Any

from faust.serializers import codecs
from pydantic import BaseModel, TypeAdapter

from streams import commands, models, stock


class PydanticCodec(codecs.Codec):
    """JSON on the wire, validated into ``adapter``'s type on the way in."""

    def __init__(self, adapter: TypeAdapter[Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.adapter = adapter

    def _loads(self, s: bytes) -> Any:
        return self.adapter.validate_json(s)

    def _dumps(self, obj: Any) -> bytes:
        if isinstance(obj, BaseModel):
            return obj.model_dump_json().encode()
        return self.adapter.dump_json(self.adapter.validate_python(obj))


#: codec name -> the type it carries
CODECS: dict[str, TypeAdapter[Any]] = {
    "rs.raw_order": TypeAdapter(models.RawOrderMessage),
    "rs.order_event": models.ORDER_EVENT,
    "rs.erp_request": commands.ERP_COMMAND,
    "rs.order_state": TypeAdapter(models.OrderState),
    "rs.index_entry": TypeAdapter(models.IndexEntry),
    "rs.poll_tick": TypeAdapter(models.PollTick),
    "rs.sync_exception": TypeAdapter(models.SyncException),
    "rs.stock_event": stock.STOCK_EVENT,
    "rs.stock_record": stock.STOCK_RECORD,
    "rs.inventory_update": TypeAdapter(stock.InventoryUpdate),
    "rs.channel_command": commands.CHANNEL_COMMAND,
    "rs.wms_command": commands.WMS_COMMAND,
}


def register_codecs() -> None:
    """Make every codec known to Faust by name (idempotent)."""
    for name, adapter in CODECS.items():
        codecs.register(name, PydanticCodec(adapter))


register_codecs()
