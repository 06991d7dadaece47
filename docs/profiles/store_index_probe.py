"""The order index's recovery cost (docs/BENCHMARKS.md, issue 16, fourth step): 4,000 order-state
changelog records applied to an empty store, with and without the index, CPU time. Run from the
repository root: ``.venv/bin/python docs/profiles/store_index_probe.py``."""

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, ".")  # run from the repository root
from retail_sync.streams.codecs import encode
from tests.unit.test_order_index import _Event, _shipped, _state, _store

N = 4000
events = []
for i in range(N):
    key = f"shopify:{i}"
    st = _shipped(_state(f"SAL-ORD-{i}", key=key), f"1Z{i}")
    events.append(_Event(i % 4, key.encode(), encode("rs.order_state", st), i))
for label, indexed in (("without index", False), ("with index", True)) * 2:
    store = _store(Path(tempfile.mkdtemp()), "r")
    if not indexed:
        store._index_of = None
    t = time.process_time()
    for s in range(0, N, 500):
        store.apply_changelog_batch(events[s:s + 500], to_key=None, to_value=None)
    dt = time.process_time() - t
    print(f"{label}: {N} records in {dt:.3f} s CPU = {dt / N * 1e6:.0f} us/record")
