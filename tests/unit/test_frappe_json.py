"""Request bodies to a Frappe site are written by orjson (connectors/erpnext/frappe.py
``json_text``) and read back as the stdlib encoder's were."""

from __future__ import annotations

import json

import pytest

from retail_sync.connectors.erpnext.frappe import json_text

DOC = {
    "doctype": "Sales Order", "customer": "Zoë Ångström", "po_no": "shopify:1",
    "docstatus": 1, "delivery_date": "2026-12-05", "grand_total": 199.5,
    "items": [{"item_code": "SKU-1", "qty": 2, "rate": 99.75, "description": "「tea」 ☕"}],
    "flags": {"ignore_permissions": False, "note": None},
}


def test_a_document_reads_back_as_the_stdlib_wrote_it() -> None:
    assert json.loads(json_text(DOC)) == json.loads(json.dumps(DOC)) == DOC
    assert json.loads(json_text([DOC, DOC])) == [DOC, DOC]  # insert_many's list


def test_keys_that_are_not_strings_are_written_as_strings() -> None:
    assert json.loads(json_text({1: "a"})) == json.loads(json.dumps({1: "a"})) == {"1": "a"}


def test_what_json_cannot_carry_is_refused() -> None:
    with pytest.raises(TypeError):
        json_text({"rate": object()})
