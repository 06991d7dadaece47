"""The stock agent's state: one small record per SKU, one per reserved order line (table
``stock``, codec ``rs.stock_record``). What moves on the stock-events topic is in
``streams.events`` (``StockEvent``) and ``streams.commands`` (reserve, release, commit, forget).

ERP times are ``ErpTime`` values (``streams.erp_time``): datetimes in Python, on the wire the
text ``YYYY-MM-DD HH:MM:SS.ffffff`` (UTC) they always were.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import orjson
from pydantic import Field, TypeAdapter, ValidationInfo, model_validator

from retail_sync.streams.erp_time import ErpTime, erp_time_text
from retail_sync.streams.models import VERSION_CONTEXT, Frozen, UtcDatetime

ReservationStatus = Literal["open", "committed", "consumed", "released", "untracked"]


#: an event's position on stock-events is ``offset * POSITION_SCALE + index`` (index: its place in
#: a ``StockBatch`` record, 0 for a record of one event), so a batch's items are ordered after
#: everything before the record and before everything after it
POSITION_SCALE = 1024


def position(offset: int, index: int = 0) -> int:
    """The position of item ``index`` of the stock-events record at ``offset``."""
    if not 0 <= index < POSITION_SCALE:
        raise ValueError(f"a stock batch holds at most {POSITION_SCALE} items, not {index + 1}")
    return offset * POSITION_SCALE + index


class Reservation(Frozen):
    """One order line's reservation (table ``stock``, key ``reservation_key``: ``SKU|order#line``,
    beside the SKU's own ``StockState``, so both go to one changelog partition in order).

    ``open`` and ``committed`` hold units; ``consumed`` (the ERP took it over), ``released``
    and ``untracked`` (accepted without stock) are final and stay as the record that makes a
    replayed reservation a no-op. The hand-over to the ERP is written in the SKU's record only
    (the line leaves ``StockState.pending``): a ``committed`` record whose key the SKU's record
    no longer has pending reads as ``consumed`` (``streams.rules.stock.read_lines``); records
    written before that change say ``consumed`` themselves. ``stock_seq``: the stock-events
    position of the event that wrote it; ``reserved_seq``: of the event that reserved it (0 in
    records written before it was kept).

    An open line lives inside its SKU's record (``StockState.open``) while there is room there,
    and gets a record of its own only when it leaves ``open`` (committed, released): one
    changelog record per line (issue 16)."""

    order_key: str
    channel: str
    line_id: str
    requested: int
    quantity: int  # units held (0 when nothing was available)
    status: ReservationStatus = "open"
    erp_sales_order: str | None = None
    erp_created: ErpTime | None = None  # covered once the ERP's bin is at least this new
    reserved_at: UtcDatetime
    stock_seq: int = 0
    reserved_seq: int = 0


class OpenLine(NamedTuple):
    """An open order line kept in its SKU's record (``StockState.open``): what its ``Reservation``
    would hold while open, as a JSON array (a SKU's record is encoded whole on every write; an
    array costs a third of the bytes and time of the record's object)."""

    order_key: str
    channel: str
    line_id: str
    requested: int
    quantity: int
    reserved_seq: int  # the position of the event that reserved it (it wrote nothing since)
    reserved_at: UtcDatetime

    def reservation(self) -> Reservation:
        return Reservation.model_construct(  # from a validated record: no second validation
            order_key=self.order_key, channel=self.channel, line_id=self.line_id,
            requested=self.requested, quantity=self.quantity, status="open",
            erp_sales_order=None, erp_created=None, reserved_at=self.reserved_at,
            stock_seq=self.reserved_seq, reserved_seq=self.reserved_seq)


class Pending(Frozen):
    """A committed reservation the ERP's position does not show yet: still held here."""

    quantity: int
    erp_created: ErpTime


class Backorder(Frozen):
    """Units of one order line accepted without stock, waiting for goods (``StockState``).

    The ERP counts them in its ``reserved_qty`` once it shows the sales order (its bin at least as
    new as ``erp_created``); from then on a receipt that covers them releases them, oldest first."""

    order_key: str
    line_id: str
    units: int
    erp_created: ErpTime
    since: UtcDatetime


class BackorderRelease(Frozen):
    """Backordered units the stock agent gave to their order (``StockState.released`` keeps the
    last few, to send them again when the event that released them is replayed)."""

    release_id: str  # SKU@stock-events offset: with the order key, the same on every replay
    order_key: str
    line_id: str
    units: int
    seq: int
    waited_s: float = 0.0


# The last ``streams.models.StockLevel`` of one warehouse as the SKU's state keeps it: without the
# SKU (the state's key) and with when it was observed. Its shape is in every stored stock record
# (rs.stock_record): giving it the SKU would be a required field the stored records lack.
class ErpBin(Frozen):
    warehouse: str
    actual_qty: int
    reserved_qty: int
    modified: ErpTime
    observed_at: UtcDatetime


class Told(Frozen):
    """What one channel was last told (or last failed to be told)."""

    quantity: int
    at: UtcDatetime
    ok: bool = True
    mechanism: str = ""
    reference: str | None = None
    error: str | None = None


class StockState(Frozen):
    """Table ``stock``, key SKU: bounded whatever the number of orders. Its open lines are kept
    here (``open``) up to ``StockRules.inline_lines``; past that, and once a line leaves
    ``open``, the line is a record of its own in the same table.

    ``seq`` is the stock-events position (``position``) of the last event applied here: an event
    at or below it is already in this record (a replay after a take-over). ``seq_unit``: records
    written before positions (issue 16) counted plain offsets and have 1 (``in_positions``
    converts them); every record written now has ``POSITION_SCALE``."""

    sku: str
    seq: int = 0
    seq_unit: int = POSITION_SCALE
    bins: dict[str, ErpBin] = Field(default_factory=dict)
    held: int = 0  # units of open reservations plus pending ones
    open_lines: int = 0  # open lines: those in ``open`` and those with a record of their own
    #: reservation key -> an open line kept here (at most ``StockRules.inline_lines``; past that
    #: an open line has a record of its own, as every line has once it leaves ``open``)
    open: dict[str, OpenLine] = Field(default_factory=dict)
    pending: dict[str, Pending] = Field(default_factory=dict)  # reservation key -> committed
    recent: list[str] = Field(default_factory=list)  # the last reservation keys, for the view
    offered: dict[str, int] = Field(default_factory=dict)  # channel -> last quantity sent out
    told: dict[str, Told] = Field(default_factory=dict)  # channel -> last push report
    #: reservation key -> units waiting for goods, in the order they were accepted
    backorders: dict[str, Backorder] = Field(default_factory=dict)
    released: list[BackorderRelease] = Field(default_factory=list)  # the last releases
    updated_at: UtcDatetime | None = None

    @model_validator(mode="before")
    @classmethod
    def _stored_before_positions(cls, data: Any, info: ValidationInfo) -> Any:
        # a record of rs.stock_record v1 (decoded by streams.codecs, which gives the record's
        # version as the validation context) counted plain offsets
        version = (info.context or {}).get(VERSION_CONTEXT)
        if isinstance(data, dict) and "seq_unit" not in data and version is not None \
                and version < 2:
            return {**data, "seq_unit": 1}
        return data

    def wire_json(self) -> bytes:
        """What ``model_dump_json`` writes (the codec's encoding of this record), with the open
        lines (each written once while it is open: ``_open_json``) and the pending commits
        encoded by orjson: on a busy SKU they are most of the record, which is written once per
        batch (issue 16: pydantic spent a Python call per pending commit on its ERP time)."""
        if not self.open and not self.pending:
            return self.model_dump_json().encode()
        head = self.model_dump_json(exclude=_BULK).encode()  # an object with ``sku`` at least
        return b"".join((
            head[:-1], b',"open":', _open_json(self.open), b',"pending":', orjson.dumps({
                key: {"quantity": p.quantity, "erp_created": erp_time_text(p.erp_created)}
                for key, p in self.pending.items()}), b"}"))

    def in_positions(self) -> StockState:
        """This record with ``seq`` as a position: one stored before positions counted plain
        offsets, and everything at its offset is applied (its releases' ``seq`` were offsets of
        single events, index 0). A line record of such a version keeps its plain ``stock_seq``,
        which reads as older than the SKU record: right, except for a line a crash left ahead of
        its SKU record in the very moment of the upgrade."""
        if self.seq_unit == POSITION_SCALE:
            return self
        return self.model_copy(update={
            "seq": self.seq * POSITION_SCALE + POSITION_SCALE - 1, "seq_unit": POSITION_SCALE,
            "released": [r.model_copy(update={"seq": r.seq * POSITION_SCALE}) for r in self.released]})


_BULK = {"open", "pending"}
#: reservation key -> (its open line, the line as a member of ``open`` in JSON): an open line
#: is written once, not again on every write of its SKU's record (an aware datetime costs orjson
#: a Python call); cleared when it holds ``_OPEN_JSON_MAX`` lines (then written afresh)
_OPEN_JSON: dict[str, tuple[OpenLine, bytes]] = {}
_OPEN_JSON_MAX = 1 << 16


def _open_json(lines: dict[str, OpenLine]) -> bytes:
    """``lines`` as the JSON object ``model_dump_json`` writes for ``StockState.open``."""
    if len(_OPEN_JSON) > _OPEN_JSON_MAX:
        _OPEN_JSON.clear()
    parts = []
    for key, line in lines.items():
        hit = _OPEN_JSON.get(key)
        if hit is None or hit[0] is not line:  # new, or another line object under the key
            hit = _OPEN_JSON[key] = (line, b"%b:%b" % (
                orjson.dumps(key), orjson.dumps(line, default=tuple, option=orjson.OPT_UTC_Z)))
        parts.append(hit[1])
    return b"{%b}" % b",".join(parts)


def reservation_key(sku: str, order_key: str, line_id: str) -> str:
    return f"{sku}|{order_key}#{line_id}"


#: a value of the ``stock`` table: a SKU's state, or one of its order lines (key with ``|``)
StockRecord = StockState | Reservation
STOCK_RECORD = TypeAdapter(StockRecord)
