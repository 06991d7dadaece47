"""Regional marketplace: the CSV batch-file simulator, the file-drop source and the mapper."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from retail_sync.connectors.errors import PermanentError
from retail_sync.connectors.regional.inbound import RegionalFileSource
from retail_sync.connectors.regional.mapper import STATUS_CODES, make_mapper, map_order
from retail_sync.connectors.shopify.mapper import MappingError
from retail_sync.simulators.regional.simulator import COLUMNS, RegionalSimConfig, RegionalSimulator

FILE = "orders_20261127101500_0001.csv"


def _row(n: int = 1, **changes: str) -> dict:
    row = {"order_ref": "R1", "order_date": "2026-11-27 10:15:00+01:00", "status": "NEW",
           "sku": "RG-0001", "qty": "2", "unit_price": "12.50", "currency": "EUR",
           "buyer_email": "a@example.de", "line_no": str(n), "_row": n}
    row.update(changes)
    return row


def _payload(*rows: dict) -> dict:
    return {"file": FILE, "rows": list(rows) or [_row()]}


# --- simulator ----------------------------------------------------------------------------------


def test_simulator_writes_named_csv_batches_atomically(tmp_path: Path) -> None:
    sim = RegionalSimulator(tmp_path, seed=4)
    first = sim.write_batch(12, unknown_rate=0.3, malformed_rate=0.3)
    second = sim.write_batch(5)
    assert first.name < second.name and first.name.startswith("orders_") and first.suffix == ".csv"
    assert not list(tmp_path.glob("*.tmp"))
    with first.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == COLUMNS
    assert {r["order_ref"] for r in rows} == set(sim.good_refs[:-5] + sim.bad_refs)
    stats = sim.stats()
    assert stats["files"] == 2 and stats["orders"] == 17 and stats["good_orders"] + stats["bad_orders"] == 17
    assert RegionalSimulator(tmp_path, seed=4).write_batch(1).name > second.name  # seq continues


def test_simulator_is_deterministic(tmp_path: Path) -> None:
    a = RegionalSimulator(tmp_path / "a", seed=9).write_batch(8, 0.2, 0.2).read_text()
    b = RegionalSimulator(tmp_path / "b", seed=9).write_batch(8, 0.2, 0.2).read_text()
    assert a == b


async def test_simulated_batches_map_as_the_simulator_says(tmp_path: Path) -> None:
    sim = RegionalSimulator(tmp_path, seed=2)
    for _ in range(3):
        sim.write_batch(20, unknown_rate=0.15, malformed_rate=0.15)
    source, cursor, good, bad = RegionalFileSource(tmp_path), None, set(), set()
    while (result := await source.poll(cursor)).cursor is not None:
        cursor = result.cursor
        for polled in result.orders:
            try:
                good.add(map_order(json.loads(polled.body)).marketplace_order_id)
            except MappingError:
                bad.add(polled.marketplace_order_id)
    assert good == set(sim.good_refs) and bad == set(sim.bad_refs) and bad


async def test_buyer_cancellation_comes_again_in_the_next_file_as_cancelled(tmp_path: Path) -> None:
    sim = RegionalSimulator(tmp_path, seed=5)
    first = sim.write_batch(12)
    open_refs = [ref for ref in sim.good_refs if sim.orders[ref].state() in ("pending", "accepted")]
    shipped_ref = next(ref for ref in sim.good_refs if sim.orders[ref].state() == "shipped")
    ref = open_refs[0]
    assert sim.cancel_by_buyer(ref) and not sim.cancel_by_buyer(ref)
    with pytest.raises(ValueError, match="shipped"):
        sim.cancel_by_buyer(shipped_ref)
    second = sim.write_batch(2)
    source = RegionalFileSource(tmp_path)
    polled = (await source.poll(first.name)).orders
    [again] = [o for o in polled if o.marketplace_order_id == ref]
    assert len(polled) == 3 and again.delivery_id == f"{second.name}#{ref}"
    original = next(o for o in (await source.poll(None)).orders if o.marketplace_order_id == ref)
    before, after = map_order(json.loads(original.body)), map_order(json.loads(again.body))
    assert before.fulfillment_status in ("pending", "accepted") and after.fulfillment_status == "cancelled"
    assert [(ln.line_id, ln.sku, ln.quantity) for ln in after.lines] == [
        (ln.line_id, ln.sku, ln.quantity) for ln in before.lines]
    assert {r["status"] for r in json.loads(again.body)["rows"]} <= {"CXL", "CANCELLED"}
    assert sim.stats()["buyer_cancellations"] == 1 and sim.buyer_cancellations == [ref]
    third = sim.write_batch(0)  # re-sent once
    assert third.read_text().count(ref) == 0


# --- mapper -------------------------------------------------------------------------------------


def test_maps_an_order_with_lines_and_money() -> None:
    order = map_order(_payload(_row(1), _row(2, sku="RG-0002", qty="1", unit_price="3,25")))
    assert order.channel == "regional" and order.marketplace_order_id == "R1"
    assert order.order_key == "regional:R1"
    assert [(ln.sku, ln.quantity, ln.unit_price.amount) for ln in order.lines] == [
        ("RG-0001", 2, Decimal("12.50")), ("RG-0002", 1, Decimal("3.25"))]
    assert order.total.amount == Decimal("28.25") and order.currency == "EUR"
    assert order.fulfillment_status == "pending" and order.customer.email == "a@example.de"


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-27 10:15:00+01:00", datetime(2026, 11, 27, 9, 15, tzinfo=UTC)),
    ("27/11/2026 10:15", datetime(2026, 11, 27, 9, 15, tzinfo=UTC)),  # CET, UTC+1
    ("27/07/2026 10:15", datetime(2026, 7, 27, 8, 15, tzinfo=UTC)),  # CEST, UTC+2
    ("2026-07-27 10:15:00", datetime(2026, 7, 27, 8, 15, tzinfo=UTC)),  # naive ISO: Berlin too
])
def test_dates_become_utc(text: str, expected: datetime) -> None:
    assert map_order(_payload(_row(order_date=text))).created_at == expected


@pytest.mark.parametrize(("text", "expected"), [("12,50", "12.50"), ("1.234,50", "1234.50"),
                                                ("7", "7"), (" 0.99 ", "0.99")])
def test_decimal_comma(text: str, expected: str) -> None:
    assert map_order(_payload(_row(unit_price=text))).lines[0].unit_price.amount == Decimal(expected)


@pytest.mark.parametrize(("code", "canonical"), sorted(STATUS_CODES.items()))
def test_every_known_code_in_any_case(code: str, canonical: str) -> None:
    for spelling in (code, code.lower(), f"  {code} "):
        assert map_order(_payload(_row(status=spelling))).fulfillment_status == canonical


def test_unknown_code_names_file_row_and_setting() -> None:
    with pytest.raises(MappingError) as err:
        map_order(_payload(_row(1), _row(2, status="HOLD?")))
    message = str(err.value)
    assert "'HOLD?'" in message and f"{FILE} row 2" in message
    assert "RETAIL_SYNC_REGIONAL_STATUS_CODES" in message


@pytest.mark.parametrize("qty", ["", "abc", "0", "-1", "1.5"])
def test_malformed_qty_names_file_row_and_field(qty: str) -> None:
    with pytest.raises(MappingError, match=rf"{FILE} row 3: field qty"):
        map_order(_payload(_row(3, qty=qty)))


@pytest.mark.parametrize(("field", "value"), [("unit_price", "x"), ("order_date", "yesterday"),
                                              ("currency", "EURO"), ("sku", "")])
def test_other_malformed_fields(field: str, value: str) -> None:
    with pytest.raises(MappingError, match=rf"{FILE} row 1: field {field}"):
        map_order(_payload(_row(**{field: value})))


def test_rows_that_disagree_and_bad_payloads() -> None:
    with pytest.raises(MappingError, match="disagree on status"):
        map_order(_payload(_row(1), _row(2, status="SHP")))
    for bad in (None, [], {"file": FILE, "rows": []}, {"file": FILE, "rows": ["x"]}):
        with pytest.raises(MappingError):
            map_order(bad)


def test_extra_codes_extend_and_override_the_table() -> None:
    mapper = make_mapper({"hold?": "pending", "X9": "Shipped", "P": "pending"})
    assert mapper(_payload(_row(status="HOLD?"))).fulfillment_status == "pending"
    assert mapper(_payload(_row(status="x9"))).fulfillment_status == "shipped"
    assert mapper(_payload(_row(status="P"))).fulfillment_status == "pending"
    assert map_order(_payload(_row(status="P"))).fulfillment_status == "accepted"  # default untouched
    with pytest.raises(ValueError, match="RETAIL_SYNC_REGIONAL_STATUS_CODES"):
        make_mapper({"Z": "lost"})


def test_settings_codes_reach_the_channel_registry(monkeypatch) -> None:
    from retail_sync.channels import channels
    from retail_sync.settings import Settings

    monkeypatch.setenv("RETAIL_SYNC_REGIONAL_STATUS_CODES", '{"X9": "accepted"}')
    monkeypatch.setenv("RETAIL_SYNC_REGIONAL_DROP_DIR", "/tmp/regional-drop")
    settings = Settings()
    assert settings.regional_drop_dir == Path("/tmp/regional-drop")
    plugin = channels(settings)["regional"]
    assert plugin.mapper(_payload(_row(status="X9"))).fulfillment_status == "accepted"
    assert isinstance(plugin.source(settings), RegionalFileSource)
    monkeypatch.delenv("RETAIL_SYNC_REGIONAL_DROP_DIR")
    assert RegionalFileSource.from_settings(Settings()) is None


# --- source -------------------------------------------------------------------------------------


async def test_source_reads_one_file_per_poll_and_resumes_from_the_cursor(tmp_path: Path) -> None:
    sim = RegionalSimulator(tmp_path, seed=1)
    files = [sim.write_batch(n) for n in (3, 4, 2)]
    source = RegionalFileSource(tmp_path)
    first = await source.poll(None)
    assert first.cursor == files[0].name and len(first.orders) == 3
    order = first.orders[0]
    body = json.loads(order.body)
    assert body["file"] == files[0].name
    assert order.delivery_id == f"{files[0].name}#{order.marketplace_order_id}"
    assert [r["_row"] for r in body["rows"]] == list(range(1, len(body["rows"]) + 1))
    assert all(r["order_ref"] == order.marketplace_order_id for r in body["rows"])

    second = await source.poll(first.cursor)
    assert second.cursor == files[1].name and len(second.orders) == 4
    again = await RegionalFileSource(tmp_path).poll(first.cursor)  # a restarted worker, same cursor
    assert again == second
    third = await source.poll(second.cursor)
    assert third.cursor == files[2].name and len(third.orders) == 2
    done = await source.poll(third.cursor)
    assert done.orders == [] and done.cursor is None
    (tmp_path / "orders_20990101000000_9999.csv.tmp").write_text("half a file")  # not yet renamed
    assert (await source.poll(third.cursor)).cursor is None
    await source.after_persist(third.orders)
    await source.close()


async def test_empty_or_missing_drop_dir(tmp_path: Path) -> None:
    assert (await RegionalFileSource(tmp_path / "nope").poll(None)).cursor is None
    (tmp_path / "orders_1.csv").write_text(",".join(COLUMNS) + "\n")
    result = await RegionalFileSource(tmp_path).poll(None)
    assert result.orders == [] and result.cursor == "orders_1.csv"  # header only: done with it


@pytest.mark.parametrize("content", [b"\xff\xfe\x00garbage\xff", b'order_ref,status,qty\nR1,"N"x,1\n',
                                     b"just some text\nnot a csv\n"])
async def test_unparsable_file_is_a_permanent_error_naming_it(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "orders_20261127000000_0001.csv").write_bytes(content)
    with pytest.raises(PermanentError, match="orders_20261127000000_0001.csv"):
        await RegionalFileSource(tmp_path).poll(None)


# --- stock: listings, generator SKUs and the outbox ----------------------------------------------

def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _sold_lines(file: Path) -> list[tuple[str, int]]:
    with file.open(newline="") as fh:
        return [(r["sku"], int(r["qty"])) for r in csv.DictReader(fh)]


def test_orders_buy_configured_skus_and_refused_sales_are_skipped(tmp_path: Path) -> None:
    sim = RegionalSimulator(tmp_path / "drop", seed=3,
                            config=RegionalSimConfig(skus=["S1", "S2", "S3"], max_quantity=2))
    for sku in ("S1", "S2", "S3"):
        sim.listings.set(sku, 3)
    lines = _sold_lines(sim.write_batch(20))
    assert {s for s, _ in lines} <= {"S1", "S2", "S3"} and max(q for _, q in lines) <= 2
    assert sum(q for _, q in lines) <= 9 and sim.stats()["orders_refused"] > 0
    assert sim.stats()["orders"] + sim.stats()["orders_refused"] == 20
    totals = sim.listings.snapshot()["totals"]
    assert totals["sold_units"] == sum(q for _, q in lines) and totals["oversold_units"] == 0
    sim.configure({"listing_mode": "allow"})
    sim.write_batch(10)
    assert sim.listings.snapshot()["totals"]["oversold_units"] > 0
    with pytest.raises(ValueError):
        sim.configure({"listing_mode": "maybe"})


def test_inventory_files_are_applied_once_and_bad_rows_rejected(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    sim = RegionalSimulator(tmp_path / "drop", seed=1, outbox_dir=outbox)
    _write(outbox / "inventory_20261127T100000000000Z_000001_aaaaaa.csv",
           "sku,quantity\nS1,5\nS2,abc\n,3\nS3,-1\nS4,0\n")
    _write(outbox / "inventory_20261127T100000000001Z_000002_bbbbbb.csv.tmp", "sku,quantity\nS1,99\n")
    [result] = sim.process_outbox()
    assert result.kind == "inventory" and result.applied == 2
    assert [r["row"] for r in result.rejected] == [2, 3, 4]
    assert "quantity" in result.rejected[0]["reason"] and result.rejected[0]["values"]["sku"] == "S2"
    assert (sim.listings.quantity("S1"), sim.listings.quantity("S4")) == (5, 0)
    assert (outbox / "processed" / result.file).exists() and not (outbox / result.file).exists()
    sim.listings.set("S1", 1)
    assert sim.process_outbox() == [] and sim.listings.quantity("S1") == 1  # applied once
    _write(outbox / "inventory_20261127T100000000002Z_000003_cccccc.csv", "sku;quantity\nS9;4\n")
    sim.write_batch(1)  # each generator tick picks the outbox up first
    assert sim.listings.quantity("S9") == 4 and len(sim.outbox_results) == 2


def test_an_unreadable_outbox_file_is_rejected_whole(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    sim = RegionalSimulator(tmp_path / "drop", outbox_dir=outbox)
    (outbox / "inventory_1.csv").parent.mkdir(parents=True)
    (outbox / "inventory_1.csv").write_bytes(b"\xff\xfe\x00garbage")
    _write(outbox / "inventory_2.csv", "item,qty\nS1,1\n")
    results = sim.process_outbox()
    assert [(r.applied, r.rejected[0]["row"]) for r in results] == [(0, 0), (0, 0)]
    assert "lacks sku" in results[1].rejected[0]["reason"]
    assert len(list((outbox / "processed").iterdir())) == 2


def test_cancellation_files_cancel_lines_idempotently(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    sim = RegionalSimulator(tmp_path / "drop", seed=6, outbox_dir=outbox,
                            config=RegionalSimConfig(skus=["S1", "S2"], max_quantity=3))
    sim.listings.set("S1", 100)
    sim.write_batch(4)
    ref, order = next((r, o) for r, o in sim.orders.items() if len(o.lines) >= 2)
    (line_id, (sku, qty, _)), (other_id, _) = list(order.lines.items())[:2]
    header = "order_id,line_id,sku,quantity,reason\n"
    rows = (f"{ref},{line_id},{sku},1,NoInventory\n"
            f"NOPE,1,S1,1,NoInventory\n{ref},99,S1,1,x\n{ref},{line_id},WRONG,1,x\n{ref},{line_id},{sku},0,x\n")
    _write(outbox / "cancellations_20261127T100000000000Z_000001_aaaaaa.csv", header + rows)
    [result] = sim.process_outbox()
    assert result.applied == 1 and [r["row"] for r in result.rejected] == [2, 3, 4, 5]
    _write(outbox / "cancellations_20261127T100000000001Z_000002_bbbbbb.csv",
           header + f"{ref},{line_id},{sku},1,NoInventory\n")  # the same again: nothing new
    sim.process_outbox()
    assert [(c["order_id"], c["line_id"], c["quantity"]) for c in sim.cancellations] == [(ref, line_id, 1)]
    assert order.status != "cancelled"
    _write(outbox / "cancellations_20261127T100000000002Z_000003_cccccc.csv",
           header + f"{ref},*,,,NoInventory\n")
    sim.process_outbox()
    assert order.status == "cancelled"
    cancelled = {(c["line_id"], c["quantity"]) for c in sim.cancellations}
    assert (line_id, qty - 1) in cancelled or qty == 1
    assert other_id in {c["line_id"] for c in sim.cancellations}
    assert sum(c["quantity"] for c in sim.cancellations) == sum(q for _, q, _ in order.lines.values())
    assert sim.listings.snapshot()["totals"]["seller_cancelled_units"] == sum(
        c["quantity"] for c in sim.cancellations if c["sku"] == "S1")
