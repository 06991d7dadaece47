"""RegionalOutbound: inventory, cancellation, shipment and refund files in the outbox, applied by the
regional sim."""

from __future__ import annotations

import asyncio
import csv
import os
from pathlib import Path

import pytest

from retail_sync.connectors.contracts import QuantityUpdate, Refund, Shipment
from retail_sync.connectors.errors import RetryableError
from retail_sync.connectors.regional.outbound import (
    REFUND_COLUMNS,
    REGIONAL_CARRIERS,
    SHIPMENT_COLUMNS,
    RegionalOutbound,
    outbox_name,
    regional_carrier,
    render_csv,
    write_atomically,
)
from retail_sync.simulators.regional.simulator import (
    CARRIERS,
    RegionalOrder,
    RegionalSimConfig,
    RegionalSimulator,
)
from retail_sync.streams.models import LineUnits


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
    await outbound.cancel_lines(first, [LineUnits(line_id=line_id, sku=sku, quantity=1)], whole_order=False,
                                reason="NoInventory")
    await outbound.cancel_lines(first, [LineUnits(line_id=line_id, sku=sku, quantity=1)], whole_order=False,
                                reason="NoInventory")
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


# --- shipments and refunds ---------------------------------------------------------------------

CANONICAL_CARRIERS = ("UPS", "USPS", "FEDEX", "DHL", "OTHER")


def _sim_with_orders(tmp_path: Path) -> tuple[RegionalSimulator, Path, list[tuple[str, RegionalOrder]]]:
    outbox = tmp_path / "outbox"
    sim = RegionalSimulator(tmp_path / "drop", seed=3, outbox_dir=outbox,
                            config=RegionalSimConfig(skus=["S1", "S2"], max_quantity=3))
    sim.write_batch(10)
    open_orders = [(ref, order) for ref, order in sim.orders.items()
                   if order.state() in ("pending", "accepted")]
    assert len(open_orders) >= 2
    return sim, outbox, open_orders


def _shipment(shipment_id: str, lines: list[LineUnits], carrier: str = "DHL") -> Shipment:
    return Shipment(shipment_id=shipment_id, order_key="regional:x", lines=lines, carrier=carrier,
                    tracking_number="JJD000390007", shipped_at="2026-11-28T08:00:00+00:00")


def test_every_canonical_carrier_has_a_name_the_marketplace_knows() -> None:
    assert set(REGIONAL_CARRIERS) == set(CANONICAL_CARRIERS)
    assert all(name in CARRIERS for name in REGIONAL_CARRIERS.values())
    assert regional_carrier("dhl") == "DHL Paket" and regional_carrier("Pigeon Post") == "Sonstige"


async def test_partial_then_full_shipment_is_applied_once(tmp_path: Path) -> None:
    sim, outbox, [(ref, order), *_] = _sim_with_orders(tmp_path)
    lines = [LineUnits(line_id=n, sku=sku, quantity=qty) for n, (sku, qty, _) in order.lines.items()]
    first, *rest = lines
    outbound = RegionalOutbound(outbox)
    await outbound.confirm_shipment(ref, _shipment("WMS-1", [LineUnits(line_id=first.line_id, sku=first.sku,
                                                                       quantity=1)]))
    await outbound.confirm_shipment(ref, _shipment("WMS-1", [LineUnits(line_id=first.line_id, sku=first.sku,
                                                                       quantity=1)]))
    [written, _] = sorted(outbox.glob("shipments_*.csv"))
    assert tuple(_rows(written)[0]) == SHIPMENT_COLUMNS and _rows(written)[0]["carrier"] == "DHL Paket"
    results = sim.process_outbox()
    assert [(r.kind, r.applied, r.rejected) for r in results] == [("shipments", 1, [])] * 2
    assert [(s["shipment_id"], s["line_id"], s["quantity"]) for s in sim.shipments] == [
        ("WMS-1", first.line_id, 1)]
    left = first.quantity - 1  # a line of 0 units is no line (LineUnits refuses it)
    remaining = [LineUnits(line_id=first.line_id, sku=first.sku, quantity=left)] if left else []
    remaining += rest
    await outbound.confirm_shipment(ref, _shipment("WMS-2", remaining, carrier="FEDEX"))
    assert sim.process_outbox() and sim.process_outbox() == []  # applied, moved to processed/
    assert order.state() == "shipped" and sum(s["quantity"] for s in sim.shipments) == sum(
        ln.quantity for ln in lines)
    assert {s["carrier"] for s in sim.shipments} == {"DHL Paket", "FedEx"}
    assert (outbox / "processed" / written.name).is_file()


async def test_refunds_are_applied_once_per_refund_id(tmp_path: Path) -> None:
    sim, outbox, [(ref, order), (other, _), *_] = _sim_with_orders(tmp_path)
    line_id, (sku, _qty, _) = next(iter(order.lines.items()))
    outbound = RegionalOutbound(outbox)
    money_back = Refund(refund_id="RMA-1", lines=[LineUnits(line_id=line_id, sku=sku, quantity=1)],
                        amount="1.50",
                        currency="EUR", reason="damaged", restock=True)
    await outbound.refund(ref, money_back)
    await outbound.refund(ref, money_back)
    await outbound.refund(other, Refund(refund_id="GW-1", lines=[], amount="0.50", currency="EUR",
                                        reason="late", restock=False))
    results = sim.process_outbox()
    assert [r.kind for r in results] == ["refunds"] * 3 and all(not r.rejected for r in results)
    assert [(r["refund_id"], r["order_id"], r["amount"], r["lines"]) for r in sim.refunds] == [
        ("RMA-1", ref, "1.50", [{"line_id": line_id, "sku": sku, "quantity": 1}]),
        ("GW-1", other, "0.50", [])]


async def test_malformed_shipment_and_refund_rows_are_rejected(tmp_path: Path) -> None:
    sim, outbox, [(ref, order), *_] = _sim_with_orders(tmp_path)
    line_id, (sku, qty, _) = next(iter(order.lines.items()))
    good = ["S-1", ref, line_id, sku, "1", "DPD", "T1", "2026-11-28T08:00:00+01:00"]
    bad_shipments = [
        ["", *good[1:]], ["S-2", "RG-NOPE", *good[2:]], ["S-3", ref, "99", *good[3:]],
        ["S-4", ref, line_id, "OTHER-SKU", *good[4:]], ["S-5", ref, line_id, sku, "x", *good[5:]],
        ["S-6", ref, line_id, sku, str(qty + 1), *good[5:]], ["S-7", *good[1:5], "Pigeon", *good[6:]],
        ["S-8", *good[1:6], "", good[7]], ["S-9", *good[1:7], "28/11/2026 08:00"]]
    write_atomically(outbox, "shipments_1.csv", render_csv(SHIPMENT_COLUMNS, [good, *bad_shipments]))
    refund = ["R-1", ref, line_id, sku, "1", "9999", "EUR", "x"]
    bad_refunds = [refund, ["R-2", ref, line_id, sku, "1", "1,00", "USD", "x"],
                   ["R-3", ref, line_id, sku, "1", "-1", "EUR", "x"],
                   ["R-4", ref, line_id, sku, str(qty + 1), "1", "EUR", "x"], ["", *refund[1:]]]
    write_atomically(outbox, "refunds_2.csv", render_csv(REFUND_COLUMNS, bad_refunds))
    write_atomically(outbox, "refunds_3.csv", "refund_id,order_id\nR,1\n")
    shipments, refunds, headerless = sim.process_outbox()
    assert shipments.applied == 1 and [r["row"] for r in shipments.rejected] == list(range(2, 11))
    assert refunds.applied == 0 and len(refunds.rejected) == 5
    assert "exceed" in refunds.rejected[0]["reason"] and "USD" in refunds.rejected[1]["reason"]
    assert headerless.rejected[0]["row"] == 0 and "lacks" in headerless.rejected[0]["reason"]
    assert sim.refunds == [] and len(sim.shipments) == 1


async def test_shipping_a_cancelled_order_is_rejected(tmp_path: Path) -> None:
    sim, outbox, [(ref, order), *_] = _sim_with_orders(tmp_path)
    sim.cancel_by_buyer(ref)
    lines = [LineUnits(line_id=n, sku=sku, quantity=qty) for n, (sku, qty, _) in order.lines.items()]
    await RegionalOutbound(outbox).confirm_shipment(ref, _shipment("S", lines))
    [result] = sim.process_outbox()
    assert result.applied == 0 and "cancelled" in result.rejected[0]["reason"] and sim.shipments == []
