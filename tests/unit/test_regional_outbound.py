"""RegionalOutbound: inventory and cancellation files in the outbox, applied by the regional sim."""

from __future__ import annotations

import asyncio
import csv
import os
from pathlib import Path

import pytest

from connectors.base import CancelLine, QuantityUpdate
from connectors.errors import RetryableError
from connectors.regional_outbound import RegionalOutbound, outbox_name
from simulators.regional import RegionalSimConfig, RegionalSimulator


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


async def test_push_writes_one_inventory_file_the_marketplace_applies(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    report = await RegionalOutbound(outbox).push_inventory(
        [QuantityUpdate("S1", 5), QuantityUpdate("S,2", 0), QuantityUpdate("S3", -1)])
    assert report.mechanism == "file" and list(report.applied) == ["S1", "S,2"]
    assert set(report.failed) == {"S3"} and report.reference
    [written] = list(outbox.iterdir())
    assert written.name == report.reference and written.name.startswith("inventory_")
    assert _rows(written) == [{"sku": "S1", "quantity": "5"}, {"sku": "S,2", "quantity": "0"}]
    sim = RegionalSimulator(tmp_path / "drop", outbox_dir=outbox)
    [result] = sim.process_outbox()
    assert result.rejected == [] and (sim.listings.quantity("S1"), sim.listings.quantity("S,2")) == (5, 0)


async def test_file_names_are_unique_and_in_writing_order(tmp_path: Path) -> None:
    outbound = RegionalOutbound(tmp_path)
    names = [(await outbound.push_inventory([QuantityUpdate("S", n)])).reference for n in range(30)]
    await asyncio.gather(*(outbound.push_inventory([QuantityUpdate("S", n)]) for n in range(30)))
    written = sorted(os.listdir(tmp_path))
    assert len(written) == 60 and not [n for n in written if n.endswith(".tmp")]
    assert written[:30] == names[:30]
    same_instant = [outbox_name("inventory") for _ in range(100)]
    assert len(set(same_instant)) == 100 and same_instant == sorted(same_instant)


async def test_cancellations_reach_the_marketplace(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    sim = RegionalSimulator(tmp_path / "drop", seed=2, outbox_dir=outbox,
                            config=RegionalSimConfig(skus=["S1", "S2", "S3"]))
    sim.write_batch(3)
    (first, order), (second, other) = list(sim.orders.items())[:2]
    line_id, (sku, _qty, _) = next(iter(order.lines.items()))
    outbound = RegionalOutbound(outbox)
    await outbound.cancel_lines(first, [CancelLine(line_id, sku, 1)], whole_order=False, reason="NoInventory")
    await outbound.cancel_lines(first, [CancelLine(line_id, sku, 1)], whole_order=False, reason="NoInventory")
    await outbound.cancel_lines(second, [], whole_order=True, reason="NoInventory")
    results = sim.process_outbox()
    assert [r.kind for r in results] == ["cancellations"] * 3 and all(not r.rejected for r in results)
    assert [(c["order_id"], c["line_id"], c["quantity"]) for c in sim.cancellations][0] == (first, line_id, 1)
    assert sum(c["quantity"] for c in sim.cancellations if c["order_id"] == first) == 1
    assert other.status == "cancelled"
    assert all(line[2] == line[1] for line in other.lines.values()) and order.lines[line_id][2] == 1
    await outbound.close()


async def test_an_unwritable_outbox_is_retryable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(RetryableError, match="cannot write"):
        await RegionalOutbound(blocker / "outbox").push_inventory([QuantityUpdate("S", 1)])


def test_from_settings(monkeypatch, tmp_path: Path) -> None:
    from retail_sync.settings import Settings

    monkeypatch.delenv("RETAIL_SYNC_REGIONAL_OUTBOX_DIR", raising=False)
    assert RegionalOutbound.from_settings(Settings()) is None
    monkeypatch.setenv("RETAIL_SYNC_REGIONAL_OUTBOX_DIR", str(tmp_path))
    outbound = RegionalOutbound.from_settings(Settings())
    assert outbound is not None and outbound.outbox_dir == tmp_path and outbound.channel == "regional"
