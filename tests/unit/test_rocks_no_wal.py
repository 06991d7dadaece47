"""The table stores write without RocksDB's write-ahead log (tables/rocks.py, issue 16): after a
SIGKILL what survives is a prefix of the writes, so a partition's persisted changelog offset
never leads its data and recovery, reading the changelog again from that offset, misses
nothing. A real writer process is killed mid-stream; the survivor is read with the store the
worker opens."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from faust.types import TP

from tests.unit.test_order_index import _In, _state
from tests.unit.test_table_cache import _tables

ROOT = Path(__file__).resolve().parents[2]
WRITES = 4000  # ~3 KB each: more than one 4 MiB memtable, so some are flushed, some are not

WRITER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from faust.types import TP
    from retail_sync.tables import rocks
    from tests.unit.test_order_index import _In, _state
    from tests.unit.test_table_cache import _tables

    rocks.PERSIST_OFFSET_EVERY_S = 0.0  # every offset written: the strictest case
    orders, _ = _tables(Path(sys.argv[1]))
    store = orders.data
    tp = TP(orders.changelog_topic.get_topic_name(), 1)
    for i in range(int(sys.argv[2])):
        with _In(1):
            store[f"k{i}"] = _state(key=f"shopify:{i}")  # the value of changelog offset i ...
        store.set_persisted_offset(tp, i)  # ... then its offset, as Faust does after the send
    print("written", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # no close, no flush
""")


def test_after_a_sigkill_the_persisted_offset_never_leads_the_data(tmp_path: Path) -> None:
    done = subprocess.run(  # noqa: S603 - our own test writer
        [sys.executable, "-c", WRITER, str(tmp_path), str(WRITES)], cwd=ROOT,
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert "written" in done.stdout
    orders, _ = _tables(tmp_path)
    store = orders.data
    tp = TP(orders.changelog_topic.get_topic_name(), 1)
    offset = store.persisted_offset(tp)
    db = store._db_for_partition(1)
    present = [i for i in range(WRITES) if db.get(store._encode_key(f"k{i}")) is not None]
    # what survived is a prefix of the writes ...
    assert present == list(range(len(present)))
    # ... and the offset recovery starts after is within it (None: nothing to skip)
    if offset is not None:
        assert offset < len(present), (offset, len(present))
    with _In(1):
        for i in (0, len(present) // 2, len(present) - 1) if present else ():
            assert store[f"k{i}"] == _state(key=f"shopify:{i}")
