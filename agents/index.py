"""Index agent: the single writer of the order-index table (external id -> order_keys).

Reads order-index-updates keyed by the external id (a record of one entry, or ``IndexEntries``:
several ids of one partition, keyed by the first), so the table's changelog partition matches
the stream's and any worker routes a lookup by id to the owner. Re-applying an entry changes
nothing.
"""

from __future__ import annotations

from typing import Any

from retail_sync.agents.deps import AgentDeps
from retail_sync.agents.guard import Record, guard, topic_name
from retail_sync.agents.outbox import misplaced
from retail_sync.streams.commands import IndexEntries, IndexEntry

MAX_KEYS_PER_ID = 50  # an id shared by more orders than this is not an id worth indexing


def register(ctx: AgentDeps) -> None:
    @ctx.app.agent(ctx.topics.index_updates, name=f"{ctx.settings.app_id}.index")
    async def index(stream: Any) -> None:
        async for event in stream.events():
            await index_record(ctx, event.value, event.message.partition)


async def index_record(ctx: AgentDeps, record: IndexEntry | IndexEntries,
                       partition: int | None) -> None:
    """One record of order-index-updates: an entry, or a batch of them (the order agent sends
    one per partition per batch), applied in order, each only if its id is on the record's
    partition."""
    if isinstance(record, IndexEntry):
        await index_one(ctx, record)
        return
    for entry in record.entries:
        if not await misplaced(ctx, entry.external_id, entry, partition, ctx.topics.index_updates):
            await index_one(ctx, entry)


@guard(lambda ctx, entry: Record(payload=entry.model_dump_json(), order_key=entry.order_key,
                                 source_topic=topic_name(ctx.topics.index_updates)))
async def index_one(ctx: AgentDeps, entry: IndexEntry) -> None:
    apply_entry(ctx, entry)


def apply_entry(ctx: AgentDeps, entry: IndexEntry) -> None:
    table = ctx.tables.index
    keys = table.get(entry.external_id) or []
    if entry.remove:  # the order was retired (tables/retention.py)
        if entry.order_key in keys:
            rest = [k for k in keys if k != entry.order_key]
            if rest:
                table[entry.external_id] = rest
            else:
                del table[entry.external_id]
        return
    if entry.order_key not in keys:
        table[entry.external_id] = [*keys, entry.order_key][-MAX_KEYS_PER_ID:]
