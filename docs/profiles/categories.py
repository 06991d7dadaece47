"""Share of py-spy samples per category in folded-stack profiles (issue 16).

    python docs/profiles/categories.py docs/profiles/issue16-before.folded.gz ...

A sample counts in every category one of whose frames is on its stack, so the shares overlap
(an agent's share includes the decoding it does).
"""

import collections
import gzip
import sys

RULES = [
    ("table figures scan (dashboard, /metrics)", ("table_figures", "TableFiguresCollector")),
    ("table reads: decode stored JSON", ("Store._decode_value",)),
    ("Kafka produce (aiokafka sender, socket writes)",
     ("Sender._send_produce_req", "SendProduceReqHandler")),
    ("Kafka fetch (aiokafka fetcher)", ("Fetcher._proc_fetch_request",)),
    ("consumed records: pydantic decode", ("PydanticCodec._loads",)),
    ("topic sends (Faust + encode)", ("Topic.send", "Channel._send_now")),
    ("table writes (RocksDB + changelog)", ("Table.on_key_set", "Store._set")),
    ("stock agent", ("agents/stock.py",)),
    ("order agent", ("agents/orders.py",)),
    ("ERP dispatch agent", ("agents/erp_dispatch.py",)),
    ("Kafka consumer thread (Faust's: fetches, record batches)", ("WorkerThread.run",)),
    ("Faust's per-record delivery (fetch loop, conductor, stream, batch taker)",
     ("Consumer._drain_messages", "_drain_messages (", "_compile_message_handler",
      "Stream._c_aiter", "take_batches (")),
]


def shares(path: str) -> tuple[int, collections.Counter[str]]:
    total, found = 0, collections.Counter[str]()
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as lines:
        for line in lines:
            stack, _, count = line.rstrip().rpartition(" ")
            total += int(count)
            for name, frames in RULES:
                if any(frame in stack for frame in frames):
                    found[name] += int(count)
    return total, found


if __name__ == "__main__":
    for path in sys.argv[1:]:
        total, found = shares(path)
        print(f"{path}: {total} samples")
        for name, count in found.most_common():
            print(f"  {100 * count / total:5.1f} %  {name}")
