"""Status translation tables: every canonical status walked for every channel, both directions."""

from __future__ import annotations

import pytest

from retail_sync.channels import status_tables
from retail_sync.connectors.amazon import mapper as amazon
from retail_sync.connectors.regional import mapper as regional
from retail_sync.connectors.walmart import mapper as walmart
from retail_sync.streams.status import CANONICAL_STATUSES, StatusTable

TABLES = status_tables()  # every built-in plugin's ``status``
CHANNELS = sorted(TABLES)
CASES = [(channel, word) for channel in CHANNELS for word in CANONICAL_STATUSES]


def test_every_channel_has_a_table() -> None:
    assert set(TABLES) == {"shopify", "amazon", "walmart", "regional"}
    assert all(isinstance(t, StatusTable) and t.channel == name for name, t in TABLES.items())
    assert len(set(CANONICAL_STATUSES)) == len(CANONICAL_STATUSES)


@pytest.mark.parametrize(("channel", "word"), CASES)
def test_every_canonical_status_is_expressed_or_declared_unsupported(channel: str, word: str) -> None:
    table = TABLES[channel]
    if word in table.unsupported:
        assert word not in table.from_canonical
        with pytest.raises(KeyError, match=f"{channel}: cannot express canonical status '{word}'"):
            table.channel_status(word)
    else:
        status = table.channel_status(word)
        assert status in table.to_canonical
        assert table.canonical(status) == word  # round trip canonical -> channel -> canonical


@pytest.mark.parametrize("channel", CHANNELS)
def test_table_covers_the_vocabulary_exactly(channel: str) -> None:
    table = TABLES[channel]
    assert set(table.from_canonical) | table.unsupported == set(CANONICAL_STATUSES)
    assert not set(table.from_canonical) & table.unsupported
    assert set(table.unsupported) <= set(CANONICAL_STATUSES)


@pytest.mark.parametrize(("channel", "status"), [(c, s) for c in CHANNELS for s in TABLES[c].to_canonical])
def test_every_channel_status_maps_into_the_vocabulary(channel: str, status: str) -> None:
    word = TABLES[channel].canonical(status)
    assert word in CANONICAL_STATUSES
    assert word not in TABLES[channel].unsupported  # anything we read, we can also write back


@pytest.mark.parametrize("channel", CHANNELS)
def test_unknown_channel_status_raises_key_error_naming_the_channel(channel: str) -> None:
    with pytest.raises(KeyError, match=f"{channel}: unknown channel status 'NoSuchStatus'"):
        TABLES[channel].canonical("NoSuchStatus")


def test_unknown_canonical_status_raises_key_error_naming_the_channel() -> None:
    with pytest.raises(KeyError, match="amazon: has no mapping for canonical status 'lost'"):
        TABLES["amazon"].channel_status("lost")


def test_tables_are_the_mappers_own_data_and_read_only() -> None:
    assert dict(TABLES["amazon"].to_canonical) == amazon.STATUS_TO_CANONICAL
    assert dict(TABLES["amazon"].from_canonical) == amazon.CANONICAL_TO_STATUS
    assert dict(TABLES["walmart"].to_canonical) == walmart.LINE_STATUS_TO_CANONICAL
    assert dict(TABLES["walmart"].from_canonical) == walmart.CANONICAL_TO_LINE_STATUS
    assert dict(TABLES["regional"].to_canonical) == regional.STATUS_CODES
    with pytest.raises(TypeError):
        TABLES["amazon"].to_canonical["Foo"] = "pending"  # type: ignore[index]


def test_every_status_a_mapper_emits_is_in_the_vocabulary() -> None:
    assert set(amazon.FINANCIAL_STATUS) <= set(CANONICAL_STATUSES)
    assert set(walmart.ORDER_STATUSES) <= set(CANONICAL_STATUSES)  # incl. derived partial states
    assert set(regional.CANONICAL_STATUSES) <= set(CANONICAL_STATUSES)
