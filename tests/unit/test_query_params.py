"""Query parameters of the worker's views are read strictly (issue 11, item 6): every bad value
is a BadParam with a message for the client, never a Python error or an unbounded number."""

from __future__ import annotations

import pytest

from retail_sync import query_params as qp


@pytest.mark.parametrize("raw", ["nan", "NaN", "inf", "-inf", "1e308", "abc", "", "  ", "-1", "0"])
def test_days_must_be_a_finite_positive_bounded_number(raw):
    query = {"days": raw}
    if raw.strip() == "":
        assert qp.number(query, "days", 7.0, minimum=0, above_minimum=True, maximum=3650) == 7.0
        return
    with pytest.raises(qp.BadParam, match=r"days must be a number above 0 to 3650 days"):
        qp.number(query, "days", 7.0, minimum=0, above_minimum=True, maximum=3650, unit="days")


def test_good_numbers_pass():
    assert qp.number({"days": "0.5"}, "days", 7.0, minimum=0, above_minimum=True,
                     maximum=3650) == 0.5
    assert qp.number({}, "older_than_s", None, minimum=0, maximum=10) is None
    assert qp.number({"older_than_s": "0"}, "older_than_s", None, minimum=0, maximum=10) == 0


@pytest.mark.parametrize("raw", ["abc", "1.5", "-1", "10001", "1e3", "nan"])
def test_limit_must_be_a_whole_number_in_range(raw):
    with pytest.raises(qp.BadParam) as info:
        qp.integer({"limit": raw}, "limit", 200, minimum=0, maximum=10_000)
    assert str(info.value).startswith("limit must be a whole number from 0 to 10000")
    assert "invalid literal" not in str(info.value)  # not Python's own error text


def test_required_text_and_choice():
    with pytest.raises(qp.BadParam, match="'id' is required"):
        qp.required_text({}, "id", "an order id")
    with pytest.raises(qp.BadParam, match="'id' is required"):
        qp.required_text({"id": " "}, "id", "an order id")
    assert qp.required_text({"id": "1001"}, "id", "x") == "1001"
    assert qp.choice({"kind": "mapping"}, "kind", ["decode", "mapping"]) == "mapping"
    assert qp.choice({}, "kind", ["decode"]) is None
    with pytest.raises(qp.BadParam, match="kind must be one of decode, mapping, not 'x'"):
        qp.choice({"kind": "x"}, "kind", ["decode", "mapping"])
